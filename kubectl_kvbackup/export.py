"""Export: the graph's objects, the export-time rules, guest freeze/thaw and snapshots, written as a bundle.

``plan_entries``, ``build_index`` and ``assess_consistency`` are pure; ``export`` sequences the I/O: freeze,
snapshot, wait for the cut, thaw, wait until ready, write.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from . import __version__, kinds, rules
from .bundle import (FORMAT, FORMAT_VERSION, RESOURCES, SHARED, BundleWriter, object_path, original_path,
                     yaml_stream)
from .clock import Progress, compact_time, go_duration, now_iso
from .cluster import ApiError, Connection, KubeError, collection_path
from .cluster import object_path as api_path
from .crypto import ALGORITHM, key_id
from .freeze import (FREEZABLE, FROZEN_BY_OTHER, VSS_FREEZE_LIMIT, VSS_WINDOW, FreezeRecord, GuestFreezer,
                     guest_state, signals_deferred)
from .graph.walk import Graph
from .refs import Ref, ref_of
from .snapshots import (SnapshotRecord, create_snapshots, cut, delete_snapshots, read_contents, wait_for,
                        wait_until_ready)
from .yamlout import dump_yaml

Obj = dict[str, Any]


@dataclass(frozen=True)
class ExportOptions:
    backup_name: str
    freeze: str = "auto"
    unfreeze_timeout: float = 300.0  # seconds
    parallel: int = 4
    snapshot: bool = False
    snapshot_class: str | None = None
    snapshot_timeout: float = 600.0
    cut_timeout: float = 150.0  # see cut_deadline
    key: bytes | None = None
    exclude_secrets: bool = False


@dataclass
class Entry:
    """One found (or synthesized) node of the graph as the bundle stores it."""

    ref: Ref
    original: Obj | None  # None: synthesized, never read from the cluster
    restore: Obj | None  # apply-ready object; None when it is not to be restored
    decision: rules.Decision
    secret: bool
    shared: bool = False
    data: str | None = None  # PVCs: what the bundle holds of their data, "snapshot" or "none"


#: the characters kube-apiserver's generateName appends (k8s.io/apimachinery/pkg/util/rand: no vowels, no digits that
#: read as letters), so a suffix never spells a word
NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def backup_name_from(timestamp: str, suffix: str) -> str:
    """``kvbackup-20261125t012233z-x7k2q``: a valid label value and name suffix, from the creation time and a random
    ``suffix`` (``name_suffix()``), so that two exports started in the same second never share snapshot names or
    labels."""
    return f"kvbackup-{compact_time(timestamp)}z-{suffix}"


def name_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(NAME_SUFFIX_ALPHABET) for _ in range(length))


def apply_ready(obj: Obj, backup_name: str, snapshot_name: str | None = None) -> Obj:
    """The object as ``kubectl apply`` may create it: server-set fields dropped, owner references set aside (their
    UIDs are the old cluster's), marked as being restored so the restore-rules webhook applies the remaining rules
    in the target cluster. A PVC binds anew: restored from the export's VolumeSnapshot when one was taken."""
    result = rules.set_aside_owner_references(rules.sanitize_metadata(obj))
    if ref_of(result).is_a(kinds.PVC):
        result = rules.pvc_from_snapshot(result, snapshot_name) if snapshot_name else rules.bindable_pvc(result)
    labels = result["metadata"].get("labels") or {}
    result["metadata"]["labels"] = {**labels, rules.RESTORE_LABEL: backup_name}
    return result


WORKLOAD_KINDS = frozenset((k.group, k.kind) for k in (kinds.VM, kinds.VMI, kinds.VMIRS, kinds.VMPOOL))


def plan_entries(graph: Graph, options: ExportOptions, snapshots: list[SnapshotRecord]) -> list[Entry]:
    """Every found node with the export-time rules applied and its restore decision, plus the DataVolumes
    synthesized for VMs whose template DataVolume is gone. ``snapshots`` are the export's VolumeSnapshots: a PVC
    with one is restored from it, a DataVolume's PVC without one is not restored."""
    snapshot_of = {record.pvc: record.name for record in snapshots if not record.error}
    synthesized: dict[Ref, Obj] = {}
    for ref, obj in graph.objects.items():
        if obj is not None and ref.is_a(kinds.VM):
            for dv in rules.synthesized_data_volumes(obj, graph.objects.get):
                synthesized.setdefault(ref_of(dv), dv)

    def lookup(ref: Ref) -> Obj | None:
        return graph.objects.get(ref) or synthesized.get(ref)

    workload_namespaces = {ref.namespace for ref, obj in graph.objects.items()
                           if obj is not None and (ref.group, ref.kind) in WORKLOAD_KINDS}
    found = [(ref, obj) for ref, obj in graph.objects.items() if obj is not None]
    entries = []
    for ref, obj in [*found, *synthesized.items()]:
        exported, decision = rules.export_object(obj, lookup, snapshot_of.__contains__)
        secret = ref.is_a(kinds.SECRET)
        restore = apply_ready(exported, options.backup_name, snapshot_of.get(ref)) if decision.restore else None
        entries.append(Entry(ref, None if ref in synthesized else obj, restore, decision, secret,
                             shared=rules.is_shared(ref, workload_namespaces),
                             data=("snapshot" if ref in snapshot_of else "none") if ref.is_a(kinds.PVC) else None))
    return entries


def excluded_nodes(graph: Graph) -> list[Obj]:
    """Index records of the nodes never read (``--exclude-secrets``): whether they exist is not known."""
    return [{**ref.to_dict(), "found": None, "restore": False, "rule": "secret-excluded",
             "reason": "left out with --exclude-secrets, never read: create it before restoring",
             "encrypted": False, "excluded": True} for ref in graph.unread]


def write_entries(writer: BundleWriter, entries: Iterable[Entry]) -> list[Obj]:
    """Write each entry's files; returns the index's node records."""
    nodes = []
    originals: dict[str, list[tuple[str, bytes]]] = {}  # path → (name, YAML) of each object as read
    for entry in entries:
        encrypt = entry.secret and writer.key is not None
        node: Obj = {**entry.ref.to_dict(), "found": True, "restore": entry.decision.restore,
                     "rule": entry.decision.rule or None, "reason": entry.decision.reason or None,
                     "encrypted": encrypt, "excluded": False}
        if entry.shared:
            node["shared"] = True
        if entry.original is None:
            node["synthesized"] = True
        if entry.data is not None:
            node["data"] = entry.data
        if entry.original is not None:
            node["original"] = original_path(entry.ref, encrypt)
            originals.setdefault(node["original"], []).append((entry.ref.name, dump_yaml(entry.original)))
        if entry.restore is not None:
            node["file"] = object_path(SHARED if entry.shared else RESOURCES, entry.ref, encrypt)
            writer.write(node["file"], dump_yaml(entry.restore), encrypt)
        nodes.append(node)
    for path, documents in originals.items():
        writer.write(path, yaml_stream([document for _, document in sorted(documents)]), path.endswith(".enc"))
    return nodes


def build_index(graph: Graph, nodes: list[Obj], options: ExportOptions, source: Obj,
                freeze_report: Obj, snapshots: list[SnapshotRecord]) -> Obj:
    written = {Ref(n["group"], n["kind"], n["namespace"], n["name"]) for n in nodes}
    missing = [{**ref.to_dict(), "found": False} for ref, obj in graph.objects.items()
               if obj is None and ref not in written]
    if options.exclude_secrets:
        secrets: Obj = {"handling": "excluded"}
    elif options.key is not None:
        secrets = {"handling": "encrypted", "algorithm": ALGORITHM, "keyId": key_id(options.key)}
    else:
        secrets = {"handling": "plaintext", "note": "files are mode 0600; pass --encrypt-key-file to encrypt"}
    return {
        "format": FORMAT, "formatVersion": FORMAT_VERSION,
        "tool": {"name": "kubectl-kvbackup", "version": __version__},
        "createdAt": now_iso(), "name": options.backup_name, "source": source,
        "roots": [r.to_dict() for r in graph.roots],
        "nodes": nodes + missing,
        "edges": [e.to_dict() for e in graph.edges],
        "dataNotCaptured": [n.to_dict() for n in graph.notes],
        "freeze": freeze_report,
        "snapshots": [s.to_dict() for s in snapshots],
        "secrets": secrets,
    }


def running_vmis(graph: Graph) -> list[Obj]:
    return [obj for ref, obj in graph.objects.items()
            if obj is not None and ref.is_a(kinds.VMI)]


def current_vmis(connection: Connection, vmis: list[Obj]) -> list[Obj]:
    """The graph's VMIs as they are now: whether someone else froze a guest (``status.fsFreezeStatus``) is read
    right before freezing, not when the graph was walked. One LIST per namespace, or one GET per VMI for a user
    who may get but not list them."""
    refs = [ref_of(v) for v in vmis]
    current: dict[Ref, Obj] = {}
    for namespace in sorted({r.namespace for r in refs}):
        try:
            for vmi in connection.list_pages(collection_path(kinds.VMI, kinds.VMI.version, namespace)):
                current[Ref.of(kinds.VMI, namespace, vmi["metadata"]["name"])] = vmi
        except ApiError as error:
            if error.status != 403:
                raise
            for ref in (r for r in refs if r.namespace == namespace):
                try:
                    current[ref] = connection.request("GET", api_path(kinds.VMI, kinds.VMI.version, namespace,
                                                                      ref.name))
                except ApiError as missing:
                    if missing.status != 404:
                        raise
    # a VMI gone since the walk keeps its old object: its freeze then answers 404 and is recorded
    return [current.get(ref, vmi) for ref, vmi in zip(refs, vmis)]


APPLICATION = "application-consistent"
CRASH = "crash-consistent"
NO_DATA = "no data captured"


def _guest_verdict(record: FreezeRecord, snapshot: SnapshotRecord, unfreeze_timeout: float) -> tuple[str, str]:
    """What one guest's state at the cut makes of one snapshot of its disks."""
    if record.result != "frozen":
        return CRASH, f"vmi {record.namespace}/{record.name}: {record.result}" + (
            f" ({record.reason})" if record.reason else "")
    if snapshot.cut_seen_at is None or record.thawed_at is None or snapshot.cut_seen_at > record.thawed_at:
        return CRASH, (f"vmi {record.namespace}/{record.name} was thawed before the snapshot was cut (no "
                       "status.creationTime in time)")
    # virt-launcher thaws the guest by itself once the freeze request's unfreezeTimeout has passed (KubeVirt
    # pkg/virt-launcher/virtwrap/manager.go, FreezeVMI → scheduleSafetyVMIUnfreeze): a cut seen after that may have
    # missed the freeze
    if record.freeze_requested_at is None or snapshot.cut_seen_at > record.freeze_requested_at + unfreeze_timeout:
        return CRASH, (f"vmi {record.namespace}/{record.name}: KubeVirt's unfreeze timeout ({unfreeze_timeout:.0f}s) "
                       "may have thawed the guest before the snapshot was cut: raise --unfreeze-timeout")
    if record.thawed_by_guest and (record.freeze_requested_at is None
                                   or snapshot.cut_seen_at > record.freeze_requested_at + VSS_WINDOW):
        return CRASH, (f"vmi {record.namespace}/{record.name}: Windows VSS thawed the guest by itself after about "
                       f"{VSS_WINDOW:.0f}s, before the cut ({VSS_FREEZE_LIMIT})")
    return APPLICATION, ""


def assess_consistency(graph: Graph, records: list[FreezeRecord], snapshots: list[SnapshotRecord],
                       unfreeze_timeout: float) -> list[Obj]:
    """What each PVC of the graph got — application-consistent (cut while every running guest using it was
    frozen), crash-consistent (and why), or no data captured — set on the snapshot and guest records too.
    Returns one row per PVC for the report."""
    by_vmi = {(r.namespace, r.name): r for r in records}
    users: dict[Ref, dict[tuple[str, str], FreezeRecord]] = {}  # PVC -> the running guests using it
    disks: dict[tuple[str, str], list[Ref]] = {}  # guest -> its PVCs
    for edge in graph.edges:
        if ((edge.source.group, edge.source.kind) == (kinds.VMI.group, kinds.VMI.kind)
                and (edge.target.group, edge.target.kind) == (kinds.PVC.group, kinds.PVC.kind)):
            key = (edge.source.namespace, edge.source.name)
            record = by_vmi.get(key)
            if record is not None and record.result != "not-running" and key not in users.get(edge.target, {}):
                users.setdefault(edge.target, {})[key] = record
                disks.setdefault(key, []).append(edge.target)
    by_pvc = {s.pvc: s for s in snapshots}
    rows = []
    for ref, obj in graph.objects.items():
        if obj is None or (ref.group, ref.kind) != (kinds.PVC.group, kinds.PVC.kind):
            continue
        snapshot = by_pvc.get(ref)
        if snapshot is None:
            verdict = (NO_DATA, "no --snapshot: the bundle holds the objects, not the disk data")
        elif not users.get(ref):
            verdict = (CRASH, "no running guest uses it: as consistent as its last shutdown left it")
        else:
            verdicts = [_guest_verdict(r, snapshot, unfreeze_timeout) for r in users[ref].values()]
            verdict = next((v for v in verdicts if v[0] != APPLICATION), (APPLICATION, ""))
        if snapshot is not None:
            snapshot.consistency, snapshot.consistency_reason = verdict
        rows.append({"namespace": ref.namespace, "name": ref.name,
                     "snapshot": snapshot.name if snapshot else None, "consistency": verdict[0],
                     "reason": verdict[1] or None})
    for key, record in by_vmi.items():
        mine = [by_pvc[pvc] for pvc in disks.get(key, []) if pvc in by_pvc]
        if not snapshots:
            record.consistency, record.consistency_reason = NO_DATA, "no --snapshot"
        elif not mine:
            record.consistency, record.consistency_reason = NO_DATA, "none of its disks is a PVC of the backup"
        else:
            worst = next((s for s in mine if s.consistency != APPLICATION), None)
            record.consistency = worst.consistency if worst else APPLICATION
            record.consistency_reason = worst.consistency_reason if worst else ""
    return rows


def freeze_report(mode: str, options: ExportOptions, records: list[FreezeRecord], window: float | None,
                  volumes: list[Obj], cut_wait: float | None = None, note: str = "") -> Obj:
    """The index's ``freeze``: per guest and per PVC what was done, and how long guests stayed frozen — the
    snapshot-cut latency plus kvbackup's own overhead."""
    for record in records:
        if record.frozen_for is not None and cut_wait is not None:
            record.overhead = max(0.0, record.frozen_for - cut_wait)
    overhead = None if window is None or cut_wait is None else max(0.0, window - cut_wait)
    return {"mode": mode, "unfreezeTimeout": go_duration(options.unfreeze_timeout), "parallel": options.parallel,
            "frozenWindowSeconds": None if window is None else round(window, 3),
            "snapshotCutSeconds": None if cut_wait is None else round(cut_wait, 3),
            "overheadSeconds": None if overhead is None else round(overhead, 3),
            "note": note or None, "vmis": [r.to_dict() for r in records], "volumes": volumes}


def unfrozen_records(vmis: list[Obj], reason: str, offline: bool = False) -> list[FreezeRecord]:
    """Records for guests left unfrozen on purpose; what their status says still shows (no agent, stopped)."""
    records = []
    for vmi in vmis:
        state, why = guest_state(vmi)
        meta = vmi.get("metadata") or {}
        result, detail = ("not-frozen", reason) if offline or state == FREEZABLE else (state, why)
        records.append(FreezeRecord(meta.get("namespace", ""), meta.get("name", ""), result, detail))
    return records


def check_required(records: list[FreezeRecord]) -> None:
    """``--freeze=required``: every running guest must be frozen by us (a paused one is already quiescent)."""
    failed = [r for r in records if r.result in ("no-agent", "failed", FROZEN_BY_OTHER)]
    if failed:
        details = "; ".join(f"{r.namespace}/{r.name}: {r.result} ({r.reason})" for r in failed)
        raise KubeError(f"error: --freeze=required and {len(failed)} running VMI(s) could not be frozen: {details}. "
                        "Install and start the QEMU guest agent, or use --freeze=auto for a crash-consistent backup")


def counted(entries: list[Entry], phase: str, progress: Progress) -> Iterator[Entry]:
    """The entries, reporting how many were consumed."""
    for done, entry in enumerate(entries, 1):
        yield entry
        progress(phase, done, len(entries))


def cut_deadline(unfreeze_timeout: float) -> float:
    """How long guests stay frozen waiting for the snapshot cut: well inside KubeVirt's own unfreeze timeout, so
    that kvbackup, not the timeout, thaws them and knows the snapshots were cut late."""
    return max(0.5, unfreeze_timeout / 2)


def export(graph: Graph, writer: BundleWriter, options: ExportOptions, source: Obj, connection: Connection | None,
           progress: Progress, warn: Callable[[str], None], stdout: BinaryIO | None = None) -> Obj:
    """Freeze, snapshot, wait for the cut, thaw, wait until ready, write.

    Guests are frozen only around a data step (``--snapshot``) and thawed once every snapshot is cut, or at the
    cut deadline (those snapshots are then crash-consistent). Snapshots of an export that fails are deleted; a
    guest that could not be thawed fails the export after the bundle is written (the bundle is good; the guest
    needs attention)."""
    vmis = running_vmis(graph)
    pvcs = [ref for ref, obj in graph.objects.items() if obj is not None and ref.is_a(kinds.PVC)]
    snapshots: list[SnapshotRecord] = []
    freezer: GuestFreezer | None = None
    window = cut_wait = None
    note = ""
    try:
        if connection is None:
            mode, records = "never", unfrozen_records(vmis, "offline export: no cluster", offline=True)
            note = "offline export from manifests: no guest was frozen"
        elif options.freeze == "never" or not options.snapshot or not pvcs:
            mode = options.freeze
            records = unfrozen_records(vmis, "--freeze=never" if options.freeze == "never" else
                                       "no --snapshot: a freeze protects nothing without a data step"
                                       if not options.snapshot else
                                       "no PVC to snapshot: a freeze protects nothing without a data step")
            if options.snapshot:
                create_snapshots(connection, pvcs, options.backup_name, options.snapshot_class, snapshots,
                                 options.parallel)
        else:
            mode = options.freeze
            if options.freeze == "required":  # fail before freezing anything when the status already says so
                check_required(unfrozen_records(vmis, ""))
            freezer = GuestFreezer(connection, options.unfreeze_timeout, options.parallel, progress, warn)
            records = freezer.freeze(current_vmis(connection, vmis))
            if options.freeze == "required":
                check_required(records)
            started = time.time()
            create_snapshots(connection, pvcs, options.backup_name, options.snapshot_class, snapshots,
                             options.parallel)
            # the deadline counts from the first freeze, not from the last: KubeVirt's unfreeze timeout runs per
            # guest from its own freeze, and the first guest frozen has waited longest
            freezes = [r.freeze_requested_at for r in records
                       if r.result == "frozen" and r.freeze_requested_at is not None]
            if freezes:  # with no guest frozen nothing depends on when the cut comes: the wait for readiness covers it
                late = wait_for(connection, snapshots, options.backup_name, cut,
                                max(0.0, options.cut_timeout - (time.time() - min(freezes))), "snapshots cut",
                                progress)
                cut_wait = time.time() - started
                if late:
                    warn(f"warning: {len(late)} snapshot(s) not cut within {options.cut_timeout:.0f}s of the first "
                         "freeze: guests thawed anyway, those snapshots are crash-consistent")
            freezer.thaw()
            window = freezer.frozen_window()
        if snapshots:
            wait_until_ready(connection, snapshots, options.backup_name, options.snapshot_timeout, progress)
            read_contents(connection, snapshots, options.parallel)
        report = freeze_report(mode, options, records, window,
                               assess_consistency(graph, records, snapshots, options.unfreeze_timeout), cut_wait, note)
        entries = plan_entries(graph, options, snapshots)
        nodes = write_entries(writer, counted(entries, "writing bundle", progress)) + excluded_nodes(graph)
        index = build_index(graph, nodes, options, source, report, snapshots)
        writer.commit(index, stdout)
    except BaseException:
        # the whole clean-up with Ctrl-C and SIGTERM held: a second one, or one that arrived during the thaw,
        # is acted on once the guests are thawed and the snapshots deleted
        with signals_deferred():
            if freezer is not None:
                freezer.thaw()
            if snapshots:
                delete_snapshots(connection, snapshots, warn)
        raise
    thaw_failures = freezer.thaw_failures() if freezer is not None else []
    if thaw_failures:
        names = ", ".join(f"{r.namespace}/{r.name}" for r in thaw_failures)
        raise KubeError(f"error: the bundle was written, but {len(thaw_failures)} guest(s) could not be thawed: "
                        f"{names} (see above)")
    return index

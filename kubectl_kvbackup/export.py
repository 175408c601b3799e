"""Export: the graph's objects, the export-time rules, guest freeze/thaw and snapshots, written as a bundle.

``plan_entries`` and ``build_index`` are pure; ``export`` sequences the I/O: freeze, snapshot, thaw, wait, write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from . import __version__, kinds, rules
from .bundle import FORMAT, FORMAT_VERSION, ORIGINAL, RESOURCES, SHARED, BundleWriter, dump_yaml, object_path
from .clock import now_iso
from .cluster import Connection, KubeError
from .crypto import ALGORITHM, key_id
from .freeze import FREEZABLE, FreezeRecord, GuestFreezer, guest_state
from .graph.walk import Graph
from .refs import Ref, ref_of
from .snapshots import SnapshotRecord, create_snapshots, delete_snapshots, wait_until_ready

Obj = dict[str, Any]


@dataclass(frozen=True)
class ExportOptions:
    backup_name: str
    freeze: str = "auto"
    unfreeze_timeout: str = "5m0s"
    parallel: int = 4
    snapshot: bool = False
    snapshot_class: str | None = None
    snapshot_timeout: float = 600.0
    key: bytes | None = None
    exclude_secrets: bool = False


@dataclass
class Entry:
    """One found (or synthesized) node of the graph as the bundle stores it."""

    ref: Ref
    original: Obj | None  # None: synthesized, never read from the cluster
    restore: Obj | None  # apply-ready object; None when it is not to be restored or is excluded
    decision: rules.Decision
    secret: bool
    excluded: bool = False
    shared: bool = False
    data: str | None = None  # PVCs: what the bundle holds of their data, "snapshot" or "none"


def backup_name_from(timestamp: str) -> str:
    """``kvbackup-20261125t012233z``: a valid label value and name suffix derived from the creation time."""
    return "kvbackup-" + re.sub(r"[^0-9a-z]", "", timestamp.lower().split(".")[0]) + "z"


def apply_ready(obj: Obj, backup_name: str, snapshot_name: str | None = None) -> Obj:
    """The object as ``kubectl apply`` may create it: server-set fields dropped, owner references set aside (their
    UIDs are the old cluster's), marked as being restored so the restore-rules webhook applies the remaining rules
    in the target cluster. A PVC binds anew: restored from the export's VolumeSnapshot when one was taken."""
    result = rules.set_aside_owner_references(rules.sanitize_metadata(obj))
    if is_pvc(ref_of(result)):
        result = rules.pvc_from_snapshot(result, snapshot_name) if snapshot_name else rules.bindable_pvc(result)
    labels = result["metadata"].get("labels") or {}
    result["metadata"]["labels"] = {**labels, rules.RESTORE_LABEL: backup_name}
    return result


WORKLOAD_KINDS = frozenset((k.group, k.kind) for k in (kinds.VM, kinds.VMI, kinds.VMIRS, kinds.VMPOOL))


def is_pvc(ref: Ref) -> bool:
    return (ref.group, ref.kind) == (kinds.PVC.group, kinds.PVC.kind)


def plan_entries(graph: Graph, options: ExportOptions, snapshots: list[SnapshotRecord]) -> list[Entry]:
    """Every found node with the export-time rules applied and its restore decision, plus the DataVolumes
    synthesized for VMs whose template DataVolume is gone. ``snapshots`` are the export's VolumeSnapshots: a PVC
    with one is restored from it, a DataVolume's PVC without one is not restored."""
    snapshot_of = {record.pvc: record.name for record in snapshots if not record.error}
    synthesized: dict[Ref, Obj] = {}
    for ref, obj in graph.objects.items():
        if obj is not None and (ref.group, ref.kind) == (kinds.VM.group, kinds.VM.kind):
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
        secret = (ref.group, ref.kind) == (kinds.SECRET.group, kinds.SECRET.kind)
        excluded = secret and options.exclude_secrets
        if excluded:
            decision = rules.Decision(False, "secret-excluded", "left out with --exclude-secrets: create it "
                                                                "before restoring")
        restore = apply_ready(exported, options.backup_name, snapshot_of.get(ref)) if decision.restore else None
        entries.append(Entry(ref, None if ref in synthesized else obj, restore, decision, secret, excluded,
                             shared=rules.is_shared(ref, workload_namespaces),
                             data=("snapshot" if ref in snapshot_of else "none") if is_pvc(ref) else None))
    return entries


def write_entries(writer: BundleWriter, entries: list[Entry]) -> list[Obj]:
    """Write each entry's files; returns the index's node records."""
    nodes = []
    for entry in entries:
        node: Obj = {**entry.ref.to_dict(), "found": True, "restore": entry.decision.restore,
                     "rule": entry.decision.rule or None, "reason": entry.decision.reason or None,
                     "encrypted": entry.secret and writer.key is not None and not entry.excluded,
                     "excluded": entry.excluded}
        if entry.shared:
            node["shared"] = True
        if entry.original is None:
            node["synthesized"] = True
        if entry.data is not None:
            node["data"] = entry.data
        if not entry.excluded:
            encrypt = node["encrypted"]
            if entry.original is not None:
                node["original"] = object_path(ORIGINAL, entry.ref, encrypt)
                writer.write(node["original"], dump_yaml(entry.original), encrypt)
            if entry.restore is not None:
                node["file"] = object_path(SHARED if entry.shared else RESOURCES, entry.ref, encrypt)
                writer.write(node["file"], dump_yaml(entry.restore), encrypt)
        nodes.append(node)
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
            if obj is not None and (ref.group, ref.kind) == (kinds.VMI.group, kinds.VMI.kind)]


def freeze_report(mode: str, options: ExportOptions, records: list[FreezeRecord], window: float | None,
                  note: str = "") -> Obj:
    return {"mode": mode, "unfreezeTimeout": options.unfreeze_timeout, "parallel": options.parallel,
            "frozenWindowSeconds": None if window is None else round(window, 3), "note": note or None,
            "vmis": [r.to_dict() for r in records]}


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
    """``--freeze=required``: every running guest must be frozen (a paused one is already quiescent)."""
    failed = [r for r in records if r.result in ("no-agent", "failed")]
    if failed:
        details = "; ".join(f"{r.namespace}/{r.name}: {r.result} ({r.reason})" for r in failed)
        raise KubeError(f"error: --freeze=required and {len(failed)} running VMI(s) could not be frozen: {details}. "
                        "Install and start the QEMU guest agent, or use --freeze=auto for a crash-consistent backup")


def export(graph: Graph, writer: BundleWriter, options: ExportOptions, source: Obj, connection: Connection | None,
           progress: Callable[[str], None], warn: Callable[[str], None], stdout: BinaryIO | None = None) -> Obj:
    """Freeze, snapshot, thaw, wait, write: the frozen window holds only the snapshot creations.

    Snapshots of an export that fails are deleted; a guest that could not be thawed fails the export after the
    bundle is written (the bundle is good; the guest needs attention)."""
    vmis = running_vmis(graph)
    pvcs = [ref for ref, obj in graph.objects.items() if obj is not None and is_pvc(ref)]
    snapshots: list[SnapshotRecord] = []
    thaw_failures: list[FreezeRecord] = []
    try:
        if connection is None:
            report = freeze_report("never", options, unfrozen_records(vmis, "offline export: no cluster",
                                                                      offline=True), None,
                                   "offline export from manifests: no guest was frozen")
        elif options.freeze == "never":
            report = freeze_report("never", options, unfrozen_records(vmis, "--freeze=never"), None)
            if options.snapshot:
                snapshots = create_snapshots(connection, pvcs, options.backup_name, options.snapshot_class,
                                             options.parallel)
        else:
            if options.freeze == "required":  # fail before freezing anything when the status already says so
                check_required(unfrozen_records(vmis, ""))
            with GuestFreezer(connection, options.unfreeze_timeout, options.parallel, progress, warn) as freezer:
                records = freezer.freeze(vmis)
                if options.freeze == "required":
                    check_required(records)
                if options.snapshot:
                    snapshots = create_snapshots(connection, pvcs, options.backup_name, options.snapshot_class,
                                                 options.parallel)
                    progress(f"created {len(snapshots)} VolumeSnapshot(s)")
                freezer.thaw()
            thaw_failures = freezer.thaw_failures()
            report = freeze_report(options.freeze, options, records, freezer.frozen_window())
        if snapshots:
            wait_until_ready(connection, snapshots, options.backup_name, options.snapshot_timeout, progress)
        nodes = write_entries(writer, plan_entries(graph, options, snapshots))
        progress(f"wrote {len(writer.files)} files")
        index = build_index(graph, nodes, options, source, report, snapshots)
        writer.commit(index, stdout)
    except BaseException:
        if snapshots:
            delete_snapshots(connection, snapshots, warn)
        raise
    if thaw_failures:
        names = ", ".join(f"{r.namespace}/{r.name}" for r in thaw_failures)
        raise KubeError(f"error: the bundle was written, but {len(thaw_failures)} guest(s) could not be thawed: "
                        f"{names} (see above)")
    return index

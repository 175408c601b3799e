"""Restore: a verified bundle back into a cluster, data included, nothing KubeVirt or CDI owns recreated.

``plan_restore`` is pure: from the objects as the export read them (``original/``), what the target cluster holds and
the user's choices, it decides every object's fate and its exact body, through the same rule functions export and the
webhook call. ``apply_plan`` is a thin sequence of API calls: missing namespaces, then the objects step by step in
dependency order (bounded parallel inside a step), then a final pass re-pointing set-aside ownerReferences at the
owners' new UIDs.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from . import kinds, rules
from .clock import Progress, compact_time
from .cluster import ApiError, Connection, KubeError, collection_path, object_path
from .export import apply_ready
from .kinds import Kind, group_of
from .refs import Ref, ref_of
from .rules.objects import is_kind, meta_of
from .rules.export import is_shared, populated_with_evidence
from .rules.restore import bindable_pvc, pvc_from_snapshot
from .sources import ClusterSource, ListForbidden

Obj = dict[str, Any]


#: creation order: what an object references exists before it, so nothing starts half-configured
STEPS: tuple[tuple[str, tuple[Kind, ...]], ...] = (
    ("service accounts", (kinds.SERVICE_ACCOUNT,)),
    ("secrets", (kinds.SECRET,)),
    ("config maps", (kinds.CONFIG_MAP,)),
    ("network attachment definitions", (kinds.NETWORK_ATTACHMENT_DEFINITION,)),
    ("instancetypes and preferences", (kinds.INSTANCETYPE, kinds.CLUSTER_INSTANCETYPE, kinds.PREFERENCE,
                                       kinds.CLUSTER_PREFERENCE)),
    ("priority classes", (kinds.PRIORITY_CLASS,)),
    ("controller revisions", (kinds.CONTROLLER_REVISION,)),
    ("data sources", (kinds.DATA_SOURCE,)),
    ("volume snapshot contents", (kinds.VOLUME_SNAPSHOT_CONTENT,)),
    ("volume snapshots", (kinds.VOLUME_SNAPSHOT,)),
    ("persistent volume claims", (kinds.PVC,)),
    ("data volumes", (kinds.DATA_VOLUME,)),
    ("virtual machines", (kinds.VM,)),
    ("virtual machine instances", (kinds.VMI,)),
    ("replica sets", (kinds.VMIRS,)),
    ("pools", (kinds.VMPOOL,)),
    ("pods", (kinds.POD,)),
)
_STEP_OF = {(k.group, k.kind): i for i, (_, ks) in enumerate(STEPS) for k in ks}

# what happens to an object
CREATE = "create"
CREATE_IF_ABSENT = "create-if-absent"  # shared with other workloads: never updated
UPDATE = "update"
ANNOTATE = "annotate"  # --volumes=existing: a PVC another tool restored is told it holds its DataVolume's data
KEEP = "keep"  # exists already and is left as it is
SKIP = "skip"  # not restored, with the reason
CONFLICT = "conflict"  # exists already and --existing was not given
WRITES = (CREATE, CREATE_IF_ABSENT, UPDATE, ANNOTATE)


class PlanError(KubeError):
    pass


@dataclass(frozen=True)
class RestoreOptions:
    name: str
    volumes: str
    namespace_mapping: dict[str, str] = field(default_factory=dict)
    existing: str = "fail"
    identity: rules.IdentityPolicies = rules.IdentityPolicies()
    run_strategy: str | None = None


@dataclass
class TargetState:
    """What the target cluster holds, read with one LIST per kind (and namespace)."""

    objects: dict[Ref, Obj] = field(default_factory=dict)
    namespaces: set[str] | None = field(default_factory=set)  # None: the user may not list them
    identities: rules.IdentitiesInUse = field(default_factory=rules.IdentitiesInUse)
    unserved: set[Kind] = field(default_factory=set)  # kinds the cluster has no API for


@dataclass
class Action:
    ref: Ref  # in the target cluster
    verb: str
    body: Obj | None = None  # what is sent (for ANNOTATE: the merge patch)
    notes: list[str] = field(default_factory=list)
    changes: list[rules.Change] = field(default_factory=list)
    source: Ref | None = None  # in the bundle


@dataclass
class Plan:
    name: str
    namespaces: list[str]  # to create first
    actions: list[Action]
    workloads: dict[Ref, set[Ref]]  # each restored root and the target refs of its graph

    def conflicts(self) -> list[Action]:
        return [a for a in self.actions if a.verb == CONFLICT]

    def steps(self) -> list[tuple[str, list[Action]]]:
        return [(name, [a for a in self.actions if a.verb in WRITES and _STEP_OF.get((a.ref.group, a.ref.kind))
                        == i]) for i, (name, _) in enumerate(STEPS)]


# --- the pure part ---------------------------------------------------------------------------------------------

def parse_namespace_mapping(text: str) -> dict[str, str]:
    """``OLD=NEW,OLD2=NEW2``."""
    mapping = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ValueError(f'"{pair}" is not OLD=NEW')
        mapping[old.strip()] = new.strip()
    return mapping


def following(edges: list[Obj]) -> dict[Ref, list[Ref]]:
    """The bundle's edges as each node's targets."""
    def ref(d: Obj) -> Ref:
        return Ref(d["group"], d["kind"], d["namespace"], d["name"])

    targets: dict[Ref, list[Ref]] = {}
    for edge in edges:
        targets.setdefault(ref(edge["from"]), []).append(ref(edge["to"]))
    return targets


def closure(roots: Iterable[Ref], targets: dict[Ref, list[Ref]]) -> set[Ref]:
    """Every node reachable from ``roots``."""
    seen = set(roots)
    queue = deque(seen)
    while queue:
        for target in targets.get(queue.popleft(), []):
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return seen


def _mapped(namespace: str, mapping: dict[str, str]) -> str:
    return mapping.get(namespace, namespace)


def target_ref(ref: Ref, mapping: dict[str, str]) -> Ref:
    return ref._replace(namespace=_mapped(ref.namespace, mapping)) if ref.namespace else ref


def _map_data_volume_spec(spec: Obj, mapping: dict[str, str]) -> None:
    for path in (("sourceRef",), ("source", "pvc"), ("source", "snapshot")):
        holder = spec
        for key in path:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and holder.get("namespace"):
            holder["namespace"] = _mapped(holder["namespace"], mapping)


def _map_vmi_spec(spec: Obj, mapping: dict[str, str]) -> None:
    for network in spec.get("networks") or []:
        multus = network.get("multus") or {}
        namespace, slash, name = (multus.get("networkName") or "").rpartition("/")
        if slash and namespace:
            multus["networkName"] = f"{_mapped(namespace, mapping)}/{name}"


def _map_vm_spec(spec: Obj, mapping: dict[str, str]) -> None:
    _map_vmi_spec((spec.get("template") or {}).get("spec") or {}, mapping)
    for template in spec.get("dataVolumeTemplates") or []:
        _map_data_volume_spec(template.get("spec") or {}, mapping)


def map_namespaces(obj: Obj, mapping: dict[str, str]) -> Obj:
    """The object moved to its target namespace. References that name a namespace follow it when that namespace is
    mapped too; references into other namespaces (a network in ``infra``, a DataSource in ``os-images``) stay."""
    result = copy.deepcopy(obj)
    meta = result.setdefault("metadata", {})
    if meta.get("namespace"):
        meta["namespace"] = _mapped(meta["namespace"], mapping)
    spec = result.get("spec") or {}
    if is_kind(result, kinds.DATA_VOLUME):
        _map_data_volume_spec(spec, mapping)
    elif is_kind(result, kinds.VM):
        _map_vm_spec(spec, mapping)
    elif is_kind(result, kinds.VMI):
        _map_vmi_spec(spec, mapping)
    elif is_kind(result, kinds.VMIRS):
        _map_vmi_spec((spec.get("template") or {}).get("spec") or {}, mapping)
    elif is_kind(result, kinds.VMPOOL):
        _map_vm_spec((spec.get("virtualMachineTemplate") or {}).get("spec") or {}, mapping)
    return result


def restore_context(identity: rules.IdentityPolicies, in_use: rules.IdentitiesInUse,
                    restored_pvc: Callable[[str, str], Obj | None]) -> rules.RestoreContext:
    """The rules' view of the target cluster for one restore: ``in_use`` holds the cluster's identities and takes
    each restored VM's and VMI's as the rules apply, so two restored VMs never share one."""
    return rules.RestoreContext(identity=identity, identities_in_use=in_use, restored_pvc=restored_pvc)


def data_comes_back(options: "RestoreOptions", index: Obj, target: "TargetState") -> Callable[[Ref], bool]:
    """Whether a claim's data comes back in this restore, by ``--volumes``: from the export's VolumeSnapshot, from
    the claim another tool already restored in the target, or not at all (CDI imports again). The export-time rules
    mark a DataVolume and its claim populated only then."""
    if options.volumes == "reimport":
        return lambda ref: False
    if options.volumes == "existing":
        return lambda ref: target_ref(ref, options.namespace_mapping) in target.objects
    snapshotted = {Ref(**s["pvc"]) for s in index.get("snapshots") or [] if s.get("pvc")}
    return snapshotted.__contains__


def snapshot_object_name(snapshot_name: str, restore_name: str, namespace: str) -> str:
    """One name for the pre-provisioned VolumeSnapshotContent and its VolumeSnapshot, stable across re-runs of the
    same restore (so ``--existing skip`` finds them) and distinct between restores, as Velero names them from the
    restore and the snapshot (velero pkg/restore/actions/csi/volumesnapshot_action.go)."""
    digest = hashlib.sha256(f"{restore_name}/{namespace}/{snapshot_name}".encode()).hexdigest()[:10]
    return f"{snapshot_name[:200]}-{digest}"


def preprovisioned_snapshot(record: Obj, name: str, namespace: str, restore_name: str) -> tuple[Obj, Obj]:
    """A VolumeSnapshotContent for a snapshot that already exists in the storage (its handle and driver, as export
    recorded them; ``Retain`` so deleting the restore never deletes the backup), and a VolumeSnapshot in the target
    namespace bound to it: a snapshot cannot be referenced across namespaces."""
    labels = {rules.RESTORE_LABEL: restore_name}
    content = {
        "apiVersion": kinds.VOLUME_SNAPSHOT_CONTENT.api_version, "kind": kinds.VOLUME_SNAPSHOT_CONTENT.kind,
        "metadata": {"name": name, "labels": labels},
        "spec": {"deletionPolicy": "Retain", "driver": record["driver"],
                 "source": {"snapshotHandle": record["snapshotHandle"]},
                 "volumeSnapshotRef": {"apiVersion": kinds.VOLUME_SNAPSHOT.api_version,
                                       "kind": kinds.VOLUME_SNAPSHOT.kind, "namespace": namespace, "name": name}},
    }
    if record.get("volumeSnapshotClassName"):
        content["spec"]["volumeSnapshotClassName"] = record["volumeSnapshotClassName"]
    snapshot = {
        "apiVersion": kinds.VOLUME_SNAPSHOT.api_version, "kind": kinds.VOLUME_SNAPSHOT.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"source": {"volumeSnapshotContentName": name}},
    }
    return content, snapshot


def with_run_strategy(vm: Obj, strategy: str) -> Obj:
    """``--run-strategy``: ``running`` is deprecated and may not be set together with ``runStrategy``."""
    result = copy.deepcopy(vm)
    spec = result.setdefault("spec", {})
    spec.pop("running", None)
    spec["runStrategy"] = strategy
    return result


def _without_status(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k != "status"}


def _owner_ref(owner: Obj, namespace: str) -> Ref:
    return Ref(group_of(owner.get("apiVersion", "")), owner.get("kind", ""), namespace, owner.get("name", ""))


@dataclass
class _Volumes:
    """How each PVC of the bundle gets its data back, decided before any other object is built."""

    pvc_bodies: dict[Ref, Obj]  # source PVC ref -> body to create (or to annotate in place)
    with_data: set[Ref]  # source PVC refs whose data comes back
    extra: list[Action]  # pre-provisioned snapshot objects
    skipped: dict[Ref, str]  # source PVC ref -> why it is not restored
    notes: dict[Ref, list[str]]
    captured: Callable[[Ref], bool]  # source PVC ref -> whether its data comes back


def plan_restore(objects: dict[Ref, Obj], index: Obj, options: RestoreOptions, target: TargetState,
                 roots: list[Ref] | None = None) -> Plan:
    """Every object's fate and body. ``objects`` are the bundle's objects as read; ``roots`` restricts the restore
    to those roots' graphs."""
    mapping = options.namespace_mapping
    chosen_roots = roots if roots is not None else [Ref(**r) for r in index.get("roots") or []]
    graph = following(index.get("edges") or [])
    selected = closure(chosen_roots, graph) if roots is not None else set(objects)
    refs = [ref for ref in objects if ref in selected]
    workload_namespaces = frozenset(r.namespace for r in chosen_roots)

    actions: dict[Ref, Action] = {}
    captured = data_comes_back(options, index, target)
    decisions = {ref: rules.export_object(objects[ref], objects.get, captured)[1] for ref in refs}
    volumes = _plan_volumes([r for r in refs if r.is_a(kinds.PVC)], objects, index, options, target, decisions,
                            captured)
    with_data = {target_ref(r, mapping): volumes.pvc_bodies[r] for r in volumes.with_data}
    synthesized = {Ref(n["group"], n["kind"], n["namespace"], n["name"]) for n in index.get("nodes") or []
                   if n.get("synthesized")}
    for ref in refs:
        decision = decisions[ref]
        if ref.is_a(kinds.PVC):
            decision = rules.Decision(False, "", volumes.skipped[ref]) if ref in volumes.skipped else rules.RESTORE
        elif ref in synthesized and target_ref(Ref.of(kinds.PVC, ref.namespace, ref.name), mapping) not in with_data:
            decision = rules.Decision(False, "", "made at export from its VM's template for a disk that does not "
                                                 "come back: the VM creates it again and CDI imports the disk")
        if not decision.restore:
            actions[ref] = Action(target_ref(ref, mapping), SKIP, notes=[decision.reason], source=ref)
    restored = {target_ref(r, mapping) for r in refs if r not in actions}
    in_use = copy.deepcopy(target.identities)

    def planned_pvc(namespace: str, name: str) -> Obj | None:
        return with_data.get(Ref.of(kinds.PVC, namespace, name))

    for ref in sorted((r for r in refs if r not in actions), key=lambda r: _STEP_OF.get((r.group, r.kind), 99)):
        actions[ref] = _plan_object(ref, objects, options, volumes, planned_pvc, restored, in_use,
                                    is_shared(ref, workload_namespaces))
    excluded = [Action(target_ref(r, mapping), SKIP, notes=[n.get("reason") or "left out at export"], source=r)
                for n in index.get("nodes") or [] if n.get("excluded")
                for r in [Ref(n["group"], n["kind"], n["namespace"], n["name"])] if r in selected or roots is None]
    ordered = [actions[r] for r in refs] + volumes.extra + excluded
    _resolve_existing(ordered, target, options.existing)
    unserved = sorted({a.ref.kind_info.resource for a in ordered if a.verb in WRITES
                       and a.ref.kind_info in target.unserved})
    if unserved:
        raise PlanError(f"error: the cluster does not serve {', '.join(unserved)}: install the operator that "
                        "provides them (KubeVirt, CDI, the CSI snapshot CRDs, Multus), or leave those objects out; "
                        "nothing was created")
    missing_ns = sorted({a.ref.namespace for a in ordered if a.verb in WRITES and a.ref.namespace}
                        - target.namespaces) if target.namespaces is not None else []
    workloads = {target_ref(root, mapping): {target_ref(r, mapping) for r in closure([root], graph) if r in objects}
                 for root in chosen_roots if root in objects}
    return Plan(options.name, missing_ns, ordered, workloads)


def _plan_object(ref: Ref, objects: dict[Ref, Obj], options: RestoreOptions, volumes: _Volumes,
                 planned_pvc: Callable[[str, str], Obj | None], restored: set[Ref], in_use: rules.IdentitiesInUse,
                 shared: bool) -> Action:
    """One object to restore: the export-time rules, apply-ready sanitizing and the restore-time rules, in that
    order, as the bundle's ``resources/`` and the webhook would have them."""
    target_at = target_ref(ref, options.namespace_mapping)
    if ref.is_a(kinds.PVC) and options.volumes == "existing":
        # the claim is another tool's: only what tells CDI it holds the data is added
        annotation = rules.POPULATED_FOR_ANNOTATION
        value = volumes.pvc_bodies[ref]["metadata"]["annotations"][annotation]
        patch = {"metadata": {"annotations": {annotation: value}, "labels": {rules.RESTORE_LABEL: options.name}}}
        return Action(target_at, ANNOTATE, patch, [f"{annotation} added in place"], source=ref)
    dv_without_data = ref.is_a(kinds.DATA_VOLUME) and (
        options.volumes == "reimport" or planned_pvc(target_at.namespace, target_at.name) is None)
    if ref.is_a(kinds.PVC):
        body = volumes.pvc_bodies[ref]
    else:
        # a DataVolume whose disk does not come back is restored as if its import never ran: CDI runs it again
        original = _without_status(objects[ref]) if dv_without_data else objects[ref]
        exported, _ = rules.export_object(original, objects.get, volumes.captured)
        body = apply_ready(map_namespaces(exported, options.namespace_mapping), options.name)
    body, owners = _owners_in_restore(body, restored)
    result = rules.restore_object(body, restore_context(options.identity, in_use, planned_pvc))
    body = _set_owners_aside(result.object, owners)
    if options.run_strategy and is_kind(body, kinds.VM):
        body = with_run_strategy(body, options.run_strategy)
    notes = list(volumes.notes.get(ref, []))
    if dv_without_data:
        notes.append("its disk is not restored: CDI imports or clones it again from its source")
    if owners:
        notes.append("ownerReferences re-pointed once " + ", ".join(f"{o.get('kind')} {o.get('name')}"
                                                                    for o in owners) + " exist")
    return Action(target_at, CREATE_IF_ABSENT if shared else CREATE, body, notes, list(result.changes), ref)


def _owners_in_restore(body: Obj, restored: set[Ref]) -> tuple[Obj, list[Obj]]:
    """The object without owner information, and its set-aside owners that are part of this restore (others are
    dropped: a reference to an owner that will never exist here only confuses the garbage collector)."""
    namespace = (body.get("metadata") or {}).get("namespace", "")
    owners = [o for o in rules.owner_references(body) if _owner_ref(o, namespace) in restored
              or _owner_ref(o, "") in restored]
    result = copy.deepcopy(body)
    meta = meta_of(result)
    meta.pop("ownerReferences", None)
    (meta.get("annotations") or {}).pop(rules.OWNER_REFERENCES_ANNOTATION, None)
    return result, owners


def _set_owners_aside(body: Obj, owners: list[Obj]) -> Obj:
    if not owners:
        return body
    result = copy.deepcopy(body)
    meta_of(result)["ownerReferences"] = owners
    return rules.set_aside_owner_references(result)


def _plan_volumes(pvcs: list[Ref], objects: dict[Ref, Obj], index: Obj, options: RestoreOptions,
                  target: TargetState, decisions: dict[Ref, rules.Decision], captured: Callable[[Ref], bool]
                  ) -> _Volumes:
    """Where each claim's data comes from under ``--volumes``. A DataVolume's claim comes back only with evidence it
    held the data (else its DataVolume is created unmarked and CDI fills it again); problems that would make the
    restore half-work (a claim missing in ``existing`` mode, a snapshot without its handle) stop it before any write."""
    mapping = options.namespace_mapping
    snapshots = {Ref(**s["pvc"]): s for s in index.get("snapshots") or [] if s.get("pvc")}
    result = _Volumes({}, set(), [], {}, {}, captured)
    problems: list[str] = []
    for ref in pvcs:
        original = objects[ref]
        dv_name = rules.data_volume_owner(original)
        dv = objects.get(Ref.of(kinds.DATA_VOLUME, ref.namespace, dv_name)) if dv_name else None
        has_data = not dv_name or (decisions[ref].restore and populated_with_evidence(original, dv))
        at = target_ref(ref, mapping)
        exported, _ = rules.export_object(original, objects.get, captured)
        ready = apply_ready(map_namespaces(exported, mapping), options.name)
        if options.volumes == "existing":
            live = target.objects.get(at)
            if live is None:
                problems.append(f"--volumes=existing but PersistentVolumeClaim {at.namespace}/{at.name} does not "
                                "exist: restore it first (or use --volumes=snapshots|reimport)")
                continue
            if dv_name and has_data:
                result.pvc_bodies[ref] = rules.mark_populated_for(live, dv_name)
                result.with_data.add(ref)
            else:
                result.skipped[ref] = "--volumes=existing: the PersistentVolumeClaim already there is used as it is"
            continue
        if dv_name and not has_data:
            result.skipped[ref] = decisions[ref].reason or (
                f"no evidence it held the data of DataVolume {dv_name}: CDI populates it again from the DataVolume")
            continue
        if options.volumes == "reimport":
            if dv_name:
                result.skipped[ref] = f"--volumes=reimport: CDI imports DataVolume {dv_name} again"
                continue
            result.pvc_bodies[ref] = bindable_pvc(ready)
            result.notes[ref] = ["created empty: it has no DataVolume to import it again"]
            continue
        record = snapshots.get(ref)
        if record is None:
            if dv_name:
                result.skipped[ref] = f"no snapshot of it in the bundle: CDI imports DataVolume {dv_name} again"
            else:
                result.pvc_bodies[ref] = bindable_pvc(ready)
                result.notes[ref] = ["created empty: the bundle holds no snapshot of it"]
            continue
        same = Ref.of(kinds.VOLUME_SNAPSHOT, at.namespace, record["name"])
        if at.namespace == ref.namespace and same in target.objects:
            snapshot_name = record["name"]
            result.notes[ref] = [f"data from VolumeSnapshot {record['name']}"]
        elif not (record.get("snapshotHandle") and record.get("driver")):
            problems.append(f"the bundle does not record the snapshot handle and driver of VolumeSnapshot "
                            f"{record['namespace']}/{record['name']}, needed to restore it into {at.namespace}: "
                            "export again with this release, or use --volumes=existing|reimport")
            continue
        else:
            snapshot_name = snapshot_object_name(record["name"], options.name, at.namespace)
            content, snapshot = preprovisioned_snapshot(record, snapshot_name, at.namespace, options.name)
            note = [f"pre-provisioned from snapshot handle of {record['namespace']}/{record['name']}"]
            result.extra += [Action(ref_of(content), CREATE, content, note),
                             Action(ref_of(snapshot), CREATE, snapshot, note)]
            result.notes[ref] = [f"data from VolumeSnapshot {snapshot_name} (pre-provisioned)"]
        result.pvc_bodies[ref] = pvc_from_snapshot(ready, snapshot_name)
        result.with_data.add(ref)
    if problems:
        raise PlanError("error: cannot restore: " + "; ".join(problems))
    return result


def _resolve_existing(actions: list[Action], target: TargetState, existing: str) -> None:
    """Objects already in the cluster: shared ones are kept; others per ``--existing``."""
    for action in actions:
        if action.verb not in (CREATE, CREATE_IF_ABSENT) or action.ref not in target.objects:
            continue
        if action.verb == CREATE_IF_ABSENT:
            action.verb, action.notes = KEEP, ["exists: shared with other workloads, never updated"]
        elif existing == "skip":
            action.verb, action.notes = KEEP, ["exists: skipped (--existing skip)"]
        elif existing == "update" and not action.ref.is_a(kinds.PVC):
            action.verb = UPDATE
        elif existing == "update":
            action.verb, action.notes = KEEP, ["exists: a claim's volume cannot be replaced in place; kept"]
        else:
            action.verb = CONFLICT


def target_scope(objects: Iterable[Ref], index: Obj, options: RestoreOptions) -> dict[Kind, set[str]]:
    """Which kinds to list in which target namespaces ("" = cluster-wide) to know every conflict."""
    scope: dict[Kind, set[str]] = {}
    for ref in objects:
        if kinds.known(ref.group, ref.kind):
            kind = kinds.kind_for(ref.group, ref.kind)
            scope.setdefault(kind, set()).add(target_ref(ref, options.namespace_mapping).namespace)
    if options.volumes == "snapshots" and index.get("snapshots"):
        namespaces = scope.get(kinds.PVC, set())
        scope[kinds.VOLUME_SNAPSHOT] = set(namespaces)
        scope[kinds.VOLUME_SNAPSHOT_CONTENT] = {""}
    for kind in (kinds.VM, kinds.VMI):  # identities are checked against the whole cluster, unless all are kept
        scope[kind] = {""} if options.identity.needs_cluster_identities else scope.get(kind, set())
    return scope


# --- the cluster side ------------------------------------------------------------------------------------------

def read_target(source: ClusterSource, scope: dict[Kind, set[str]], wanted: Iterable[Ref]) -> TargetState:
    """One LIST per kind and namespace (cluster-wide once for VMs, VMIs and cluster-scoped kinds). A kind the user may
    get but not list (cluster instancetypes, for a namespace admin) is read by name for the ``wanted`` objects; a
    user who may not list namespaces restores into namespaces that exist: none is created."""
    state = TargetState()
    try:
        state.namespaces = {o["metadata"]["name"] for o in source.list(kinds.NAMESPACE, "")}
    except ListForbidden:
        state.namespaces = None
    state.unserved = {kind for kind in scope if source.served(kind) is None}
    wanted = list(wanted)
    for kind, namespaces in scope.items():
        try:
            listed = source.list_all(kind) if "" in namespaces or not kind.namespaced else \
                [o for ns in sorted(namespaces) for o in source.list(kind, ns)]
        except ListForbidden as error:
            if kind in (kinds.VM, kinds.VMI):
                raise KubeError(f"{error}\nMAC addresses and firmware serials are checked against every VM and "
                                "VMI of the cluster: grant that, or pass --mac-policy keep --firmware-policy keep"
                                ) from None
            listed = [o for o in (source.get(r) for r in wanted if r.is_a(kind)) if o is not None]
        for obj in listed:
            state.objects[ref_of(obj)] = obj
            if is_kind(obj, kinds.VM) or is_kind(obj, kinds.VMI):
                state.identities.reserve(obj)
    return state


@dataclass
class Result:
    plan: Plan
    done: dict[Ref, str] = field(default_factory=dict)  # ref -> verb carried out
    failed: dict[Ref, str] = field(default_factory=dict)  # ref -> error
    not_attempted: list[Ref] = field(default_factory=list)
    uids: dict[Ref, str] = field(default_factory=dict)
    owners_repointed: list[Ref] = field(default_factory=list)
    done_ns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> Obj:
        by_ref = {a.ref: a for a in self.plan.actions}

        def summary(refs: Iterable[Ref]) -> Obj:
            chosen = [by_ref[r] for r in refs if r in by_ref]
            return {
                "created": [str(a.ref) for a in chosen if self.done.get(a.ref) in (CREATE, CREATE_IF_ABSENT)],
                "updated": [str(a.ref) for a in chosen if self.done.get(a.ref) in (UPDATE, ANNOTATE)],
                "kept": [str(a.ref) for a in chosen if a.verb == KEEP],
                "skipped": [{"object": str(a.ref), "reason": "; ".join(a.notes)} for a in chosen if a.verb == SKIP],
                "changed": [{"object": str(a.ref), "change": str(c)} for a in chosen for c in a.changes],
                "failed": [{"object": str(a.ref), "error": self.failed[a.ref]} for a in chosen
                           if a.ref in self.failed],
            }
        return {"apiVersion": "kvbackup.kubevirt.io/v1", "kind": "RestoreResult", "name": self.plan.name,
                "succeeded": self.ok, "namespacesCreated": [n for n in self.plan.namespaces if n in self.done_ns],
                "workloads": [{"workload": str(root), **summary(refs)} for root, refs in self.plan.workloads.items()],
                **summary(by_ref), "notAttempted": [str(r) for r in self.not_attempted],
                "ownerReferencesRepointed": [str(r) for r in self.owners_repointed]}


def _path(obj: Obj, name: str | None = None) -> str:
    group, _, version = obj["apiVersion"].rpartition("/")
    kind = kinds.kind_for(group, obj["kind"])
    namespace = (obj.get("metadata") or {}).get("namespace") if kind.namespaced else None
    return object_path(kind, version, namespace or "", name) if name else collection_path(kind, version, namespace)


def _dry(dry_run: bool) -> list[tuple[str, Any]]:
    return [("dryRun", "All")] if dry_run else []


def _write(connection: Connection, action: Action, existing: Obj | None, dry_run: bool) -> Obj:
    body = action.body
    assert body is not None
    if action.verb == ANNOTATE:
        return connection.request("PATCH", object_path(kinds.PVC, "v1", action.ref.namespace, action.ref.name),
                                  _dry(dry_run), body, "application/merge-patch+json")
    if action.verb == UPDATE:
        assert existing is not None
        replaced = copy.deepcopy(body)
        meta_of(replaced)["resourceVersion"] = existing["metadata"]["resourceVersion"]
        return connection.request("PUT", _path(body, action.ref.name), _dry(dry_run), replaced)
    return connection.request("POST", _path(body), _dry(dry_run), body)


def owner_patch(obj: Obj, owner_uid: Callable[[Obj, str], str | None]) -> Obj | None:
    """The merge patch that re-points an object's set-aside owners at their owners' current UIDs (None: nothing
    set aside, or no owner exists yet)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if rules.OWNER_REFERENCES_ANNOTATION not in annotations:
        return None
    aside = copy.deepcopy(obj)
    meta_of(aside).pop("ownerReferences", None)
    remapped = rules.remap_owner_references(aside, owner_uid)
    owners = meta_of(remapped).get("ownerReferences")
    if not owners:
        return None
    still_aside = (meta_of(remapped).get("annotations") or {}).get(rules.OWNER_REFERENCES_ANNOTATION)
    return {"metadata": {"ownerReferences": (obj["metadata"].get("ownerReferences") or []) + owners,
                         "annotations": {rules.OWNER_REFERENCES_ANNOTATION: still_aside}}}


def apply_plan(connection: Connection, plan: Plan, target: TargetState, parallel: int,
               progress: Progress, dry_run: bool = False) -> Result:
    """Create what the plan says, step by step; stop after a step in which something failed. With ``dry_run`` every
    write is sent with ``dryRun=All``: the cluster checks it and stores nothing."""
    result = Result(plan)
    for namespace in plan.namespaces:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        try:
            connection.request("POST", collection_path(kinds.NAMESPACE, "v1", None), _dry(dry_run), body)
            result.done_ns.append(namespace)
        except ApiError as error:
            if error.status != 409:
                result.failed[Ref("", "Namespace", "", namespace)] = str(error)
                result.not_attempted = [a.ref for a in plan.actions if a.verb in WRITES]
                return result
    live: dict[Ref, Obj] = {ref: obj for ref, obj in target.objects.items()}
    steps = plan.steps()
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="restore") as pool:
        for number, (name, actions) in enumerate(steps):
            if dry_run:  # objects in a namespace the dry run did not create cannot be checked
                result.not_attempted += [a.ref for a in actions if a.ref.namespace in plan.namespaces]
                actions = [a for a in actions if not a.ref.namespace or a.ref.namespace not in plan.namespaces]
            if not actions:
                continue

            def run(action: Action) -> tuple[Action, Obj | str]:
                try:
                    return action, _write(connection, action, live.get(action.ref), dry_run)
                except KubeError as error:
                    return action, str(error)

            progress(f"writing {name}", 0, len(actions))
            for count, (action, outcome) in enumerate(pool.map(run, actions), 1):
                if isinstance(outcome, str):
                    result.failed[action.ref] = outcome
                else:
                    result.done[action.ref] = action.verb
                    live[action.ref] = outcome
                progress(f"writing {name}", count, len(actions))
            if result.failed and not dry_run:
                result.not_attempted = [a.ref for _, later in steps[number + 1:] for a in later]
                break
        if not dry_run:
            _repoint_owners(connection, plan, live, result, pool)
    return result


def _repoint_owners(connection: Connection, plan: Plan, live: dict[Ref, Obj], result: Result,
                    pool: ThreadPoolExecutor) -> None:
    """The final pass: objects created before their owners (a PVC before its DataVolume, a DataVolume before its
    VM) get ownerReferences to the owners' new UIDs now that they exist."""
    def owner_uid(owner: Obj, namespace: str) -> str | None:
        for ref in (_owner_ref(owner, namespace), _owner_ref(owner, "")):
            found = live.get(ref)
            if found is not None and ref not in result.failed:
                return found["metadata"].get("uid")
        return None

    candidates = [live[a.ref] for a in plan.actions if a.verb in (*WRITES, KEEP) and a.ref in live]
    patches = [(obj, patch) for obj in candidates for patch in [owner_patch(obj, owner_uid)] if patch]
    for ref, error in _send_owner_patches(connection, pool, patches):
        if error:
            result.failed[ref] = f"could not re-point its ownerReferences: {error}"
        else:
            result.owners_repointed.append(ref)


def _send_owner_patches(connection: Connection, pool: ThreadPoolExecutor, patches: list[tuple[Obj, Obj]]
                        ) -> Iterable[tuple[Ref, str | None]]:
    """One merge patch per object (CRDs refuse strategic-merge patches); each with its error, if any."""
    def send(item: tuple[Obj, Obj]) -> tuple[Ref, str | None]:
        obj, patch = item
        try:
            connection.request("PATCH", _path(obj, obj["metadata"]["name"]), body=patch,
                               content_type="application/merge-patch+json")
            return ref_of(obj), None
        except KubeError as error:
            return ref_of(obj), str(error)

    return pool.map(send, patches)


def objects_to_print(plan: Plan) -> list[Obj]:
    """``--dry-run=client -o yaml|json``: the namespaces and the exact objects a restore would send."""
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in plan.namespaces]
    return namespaces + [a.body for _, actions in plan.steps() for a in actions if a.verb != ANNOTATE and a.body]


def plan_rows(plan: Plan) -> list[tuple[str, str, str]]:
    """(object, action, notes) for the plan table, in the order the restore writes."""
    rows = [(f"namespace/{n}", "create", "") for n in plan.namespaces]
    for _, actions in plan.steps():
        rows += [(str(a.ref), a.verb, "; ".join(a.notes + [str(c) for c in a.changes])) for a in actions]
    rows += [(str(a.ref), a.verb, "; ".join(a.notes)) for a in plan.actions if a.verb not in WRITES]
    return rows


def parse_roots(targets: tuple[tuple[Kind, str], ...], index: Obj) -> list[Ref]:
    """Named roots (``vm/db``) among the bundle's roots and found nodes, in whatever namespace they were."""
    nodes = [Ref(n["group"], n["kind"], n["namespace"], n["name"]) for n in index.get("nodes") or [] if n.get("found")]
    chosen = []
    for kind, name in targets:
        matches = [r for r in nodes if r.is_a(kind) and r.name == name]
        if not matches:
            raise PlanError(f'error: the bundle holds no {kind.resource} "{name}"')
        chosen += matches
    return chosen


def needs_from_outside(plan: Plan, index: Obj) -> list[tuple[Ref, str, str]]:
    """The bundle's data-not-captured notes (``dataNotCaptured``) of the objects this restore writes, by their refs in
    the target cluster, with what each says and advises: what the restored objects need that the bundle lacks."""
    written = {a.source: a.ref for a in plan.actions if a.verb in WRITES and a.source is not None}
    needs = []
    for note in index.get("dataNotCaptured") or []:
        target = written.get(Ref(**note["object"]))
        if target is not None:
            needs.append((target, note.get("what", ""), note.get("advice", "")))
    return needs


def restore_name_from(bundle_name: str, timestamp: str, suffix: str) -> str:
    """``<backup>-restore-<time>-<suffix>``, the backup's name cut so that it fits a label value's 63 characters.
    The random ``suffix`` (``name_suffix()``) keeps two restores of one bundle started in the same second apart: the
    restore-rules webhook treats objects of one restore name as one restore (MACs they may share, owners to wait
    for)."""
    tail = f"-restore-{compact_time(timestamp)}-{suffix}"
    return bundle_name[:63 - len(tail)].rstrip("-") + tail



def not_ready(obj: Obj) -> str | None:
    """Why a restored object is not ready yet (None: it is): PVCs bound, DataVolumes succeeded, VMs ready, or
    stopped when their run strategy says so."""
    status = obj.get("status") or {}
    if is_kind(obj, kinds.PVC):
        return None if status.get("phase") == "Bound" else f"phase {status.get('phase') or 'Pending'}"
    if is_kind(obj, kinds.DATA_VOLUME):
        return None if status.get("phase") == "Succeeded" else f"phase {status.get('phase') or 'Pending'}"
    if is_kind(obj, kinds.VM):
        spec = obj.get("spec") or {}
        if spec.get("runStrategy") == "Halted" or spec.get("running") is False:
            return None if status.get("printableStatus") == "Stopped" else \
                f"{status.get('printableStatus') or 'not yet'} stopped"
        return None if status.get("ready") else f"{status.get('printableStatus') or 'not yet'} ready"
    return None


WAITED_KINDS = (kinds.PVC, kinds.DATA_VOLUME, kinds.VM)


def wait_until_ready(connection: Connection, result: Result, timeout: float, progress: Progress,
                     poll: float = 1.0) -> None:
    """Poll what the restore wrote — one LIST per kind and namespace each round — until all of it is ready."""
    bodies = {a.ref: a.body for a in result.plan.actions if a.ref in result.done and a.verb != ANNOTATE}
    waiting = {ref for ref in bodies if any(ref.is_a(k) for k in WAITED_KINDS)}
    waiting |= {a.ref for a in result.plan.actions if a.verb == ANNOTATE and a.ref in result.done}
    deadline = time.monotonic() + timeout
    reasons: dict[Ref, str] = {}
    total = len(waiting)
    while waiting:
        for kind in WAITED_KINDS:
            for namespace in sorted({r.namespace for r in waiting if r.is_a(kind)}):
                body = next((bodies[r] for r in waiting if r.is_a(kind) and r in bodies), None)
                version = (body or {}).get("apiVersion", kind.api_version).rpartition("/")[2]
                for obj in connection.list_pages(collection_path(kind, version, namespace)):
                    obj.setdefault("apiVersion", kind.api_version)
                    obj.setdefault("kind", kind.kind)
                    ref = ref_of(obj)
                    if ref in waiting:
                        reason = not_ready(obj)
                        if reason is None:
                            waiting.discard(ref)
                            reasons.pop(ref, None)
                        else:
                            reasons[ref] = reason
        progress("objects ready", total - len(waiting), total)
        if waiting and time.monotonic() >= deadline:
            pending = ", ".join(f"{r} ({reasons.get(r, 'not found')})" for r in sorted(waiting))
            raise KubeError(f"error: timed out after {timeout:.0f}s waiting for {pending}: the restore itself is "
                            "complete; check those objects' events")
        if waiting:
            time.sleep(poll)


@dataclass
class Adoption:
    adopted: list[Ref] = field(default_factory=list)
    waiting: list[Ref] = field(default_factory=list)  # set-aside owners that do not exist (yet)
    failed: dict[Ref, str] = field(default_factory=dict)


def adopt(connection: Connection, source: ClusterSource, namespace: str | None, parallel: int) -> Adoption:
    """Restores other tools made (Velero, ``kubectl apply`` of a bundle) leave owners set aside when an object was
    created before its owner: re-point those whose owners exist now. One LIST per kind, one PATCH per object."""
    candidates = []
    for kind in (k for k in kinds.ALL_KINDS if k.namespaced):
        listed = source.list_all(kind) if namespace is None else source.list(kind, namespace)
        candidates += [o for o in listed
                       if rules.OWNER_REFERENCES_ANNOTATION in ((o.get("metadata") or {}).get("annotations") or {})]

    def owner_uid(owner: Obj, owner_namespace: str) -> str | None:
        group, kind_name = group_of(owner.get("apiVersion", "")), owner.get("kind", "")
        if not kinds.known(group, kind_name):
            return None
        found = source.get(Ref.of(kinds.kind_for(group, kind_name), owner_namespace, owner.get("name", "")))
        return (found or {}).get("metadata", {}).get("uid")

    outcome = Adoption()
    patches = []
    for obj in candidates:
        patch = owner_patch(obj, owner_uid)
        if patch:
            patches.append((obj, patch))
        else:
            outcome.waiting.append(ref_of(obj))
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="adopt") as pool:
        for ref, error in _send_owner_patches(connection, pool, patches):
            if error:
                outcome.failed[ref] = error
            else:
                outcome.adopted.append(ref)
    return outcome

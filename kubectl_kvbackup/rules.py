"""Every backup and restore rule, each in one function, called alike by export, restore and the webhook.

Functions take an object and return a changed copy (or a Decision): nothing here does I/O. What a rule needs to
know about the target cluster arrives through ``RestoreContext``.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from . import kinds
from .graph.edges import controller_of, is_hotplug_pod, revision_name
from .kinds import group_of
from .refs import Ref

Obj = dict[str, Any]

RESTORE_LABEL = "kvbackup.kubevirt.io/restore"
VELERO_RESTORE_LABEL = "velero.io/restore-name"
RESTORE_MODE_NAMESPACE_LABEL = "kvbackup.kubevirt.io/restore-mode"
PREPOPULATED_ANNOTATION = "cdi.kubevirt.io/storage.prePopulated"
POPULATED_FOR_ANNOTATION = "cdi.kubevirt.io/storage.populatedFor"
CREATED_FOR_DATA_VOLUME_ANNOTATION = "cdi.kubevirt.io/createdForDataVolume"
OWNER_REFERENCES_ANNOTATION = "kvbackup.kubevirt.io/owner-references"
POD_PHASE_ANNOTATION = "cdi.kubevirt.io/storage.pod.phase"
POPULATOR_PROGRESS_ANNOTATION = "cdi.kubevirt.io/storage.populator.progress"
VM_GENERATION_ANNOTATION = "kubevirt.io/vm-generation"
RESTRICTED_VMI_LABELS = (
    "kubevirt.io/created-by", "kubevirt.io/migrationJobUID", "kubevirt.io/nodeName",
    "kubevirt.io/migrationTargetNodeName", "kubevirt.io/schedulable", "kubevirt.io/install-strategy",
)
PVC_BINDING_ANNOTATIONS = (
    "volume.kubernetes.io/selected-node", "pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
)
SERVER_SET_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink")
#: Service accounts of KubeVirt and CDI (any install namespace): their own creates are never touched.
SYSTEM_SERVICE_ACCOUNT_NAMES = (
    "kubevirt-controller", "kubevirt-handler", "kubevirt-apiserver", "kubevirt-operator",
    "cdi-sa", "cdi-apiserver", "cdi-operator", "cdi-cronjob", "cdi-uploadproxy",
)
VM_OWNER_KINDS = ("VirtualMachine", "VirtualMachineInstanceReplicaSet", "VirtualMachinePool")


@dataclass(frozen=True)
class Decision:
    restore: bool
    rule: str
    reason: str


RESTORE = Decision(True, "", "")


def _meta(obj: Obj) -> Obj:
    return obj.setdefault("metadata", {})


def _annotations(obj: Obj) -> dict[str, str]:
    meta = _meta(obj)
    if meta.get("annotations") is None:
        meta["annotations"] = {}
    return meta["annotations"]


def owner_references(obj: Obj) -> list[Obj]:
    """The object's ownerReferences, or those an apply-ready bundle set aside in an annotation."""
    meta = obj.get("metadata") or {}
    if meta.get("ownerReferences"):
        return meta["ownerReferences"]
    stashed = (meta.get("annotations") or {}).get(OWNER_REFERENCES_ANNOTATION)
    try:
        owners = json.loads(stashed) if stashed else []
    except ValueError:
        return []
    return [o for o in owners if isinstance(o, dict)] if isinstance(owners, list) else []


def _is(obj: Obj, kind: kinds.Kind) -> bool:
    return group_of(obj.get("apiVersion", "")) == kind.group and obj.get("kind") == kind.kind


# --- export time -----------------------------------------------------------------------------------------------

def copy_revision_names(vm: Obj) -> Obj:
    """Status is dropped on restore, so the instancetype/preference revision it names must move into the spec."""
    result = copy.deepcopy(vm)
    spec = result.setdefault("spec", {})
    for field_name in ("instancetype", "preference"):
        matcher = spec.get(field_name)
        name = revision_name(vm, field_name)
        if matcher and name and not matcher.get("revisionName"):
            matcher["revisionName"] = name
    return result


def data_volume_succeeded(dv: Obj) -> bool:
    return (dv.get("status") or {}).get("phase") == "Succeeded"


def data_volume_data_restored(dv: Obj, restored_pvc: Obj | None) -> bool:
    """Whether a DataVolume being restored has its data already: its status says Succeeded, or — when a tool
    stripped the status — its PVC was restored first and shows a finished population. A status that says anything
    else (an import in progress) means CDI must run it again."""
    phase = (dv.get("status") or {}).get("phase")
    if phase:
        return phase == "Succeeded"
    if restored_pvc is None:
        return False
    annotations = (restored_pvc.get("metadata") or {}).get("annotations") or {}
    name = (dv.get("metadata") or {}).get("name")
    return annotations.get(POPULATED_FOR_ANNOTATION) == name or (
        annotations.get(POD_PHASE_ANNOTATION) == "Succeeded" and not import_unfinished(restored_pvc))


def mark_prepopulated(dv: Obj) -> Obj:
    """A DataVolume restored over existing data must say so, or CDI imports again over the restored disk."""
    result = copy.deepcopy(dv)
    _annotations(result)[PREPOPULATED_ANNOTATION] = _meta(result).get("name", "")
    return result


def data_volume_owner(pvc: Obj) -> str | None:
    """The DataVolume a PVC belongs to: its ownerReference, or CDI's annotation when a tool stripped owners
    (CDI names the PVC after its DataVolume)."""
    for owner in owner_references(pvc):
        if owner.get("kind") == kinds.DATA_VOLUME.kind and group_of(owner.get("apiVersion", "")) == \
                kinds.DATA_VOLUME.group:
            return owner.get("name")
    annotations = (pvc.get("metadata") or {}).get("annotations") or {}
    if CREATED_FOR_DATA_VOLUME_ANNOTATION in annotations:
        return (pvc.get("metadata") or {}).get("name")
    return None


def mark_populated_for(pvc: Obj, dv_name: str) -> Obj:
    """A DataVolume's PVC restored with its data must tell CDI it is already populated for that DataVolume."""
    result = copy.deepcopy(pvc)
    _annotations(result)[POPULATED_FOR_ANNOTATION] = dv_name
    return result


def _controller(owners: list[Obj]) -> Obj | None:
    return next((o for o in owners if o.get("controller")), None)


def import_unfinished(pvc: Obj) -> bool:
    """CDI's own record on the PVC says its import (or clone, upload) had not completed."""
    annotations = (pvc.get("metadata") or {}).get("annotations") or {}
    phase = annotations.get(POD_PHASE_ANNOTATION)
    progress = annotations.get(POPULATOR_PROGRESS_ANNOTATION)
    return (phase is not None and phase != "Succeeded") or (progress is not None and progress != "100.0%")


def restore_decision(obj: Obj) -> Decision:
    """Objects KubeVirt or CDI recreate themselves: restoring them collides with what their controllers create.

    Restore tools strip ownerReferences (Velero does), so the signals that survive are used too: owners an
    apply-ready bundle set aside, the VM generation annotation virt-controller puts on every VMI it creates, the
    virt-launcher label, and CDI's import phase on a DataVolume's PVC.
    """
    owners = owner_references(obj)
    meta = obj.get("metadata") or {}
    if _is(obj, kinds.VMI):
        owner = _controller(owners)
        if owner is not None and owner.get("kind") in VM_OWNER_KINDS:
            return Decision(False, "owned-vmi", f"owned by {owner['kind']} {owner.get('name')}: KubeVirt recreates "
                                                "it from its owner; restore the owner instead")
        if VM_GENERATION_ANNOTATION in (meta.get("annotations") or {}):
            return Decision(False, "owned-vmi", "created by VirtualMachine " + str(meta.get("name")) + " (annotation "
                                                f"{VM_GENERATION_ANNOTATION}): KubeVirt recreates it from the VM; "
                                                "restore the VM instead")
    if _is(obj, kinds.POD):
        if is_hotplug_pod(obj):
            return Decision(False, "hotplug-pod", "hotplug attachment pod: virt-controller recreates it when the "
                                                  "VMI runs; restore the VM or VMI instead")
        vmi_owner = next((o for o in owners if o.get("kind") == kinds.VMI.kind), None)
        labels = meta.get("labels") or {}
        launcher = vmi_owner is not None or labels.get("kubevirt.io") == "virt-launcher" or \
            "kubevirt.io/created-by" in labels
        if launcher and meta.get("name", "").startswith("virt-launcher-"):
            of = f" of VirtualMachineInstance {vmi_owner.get('name')}" if vmi_owner else ""
            return Decision(False, "launcher-pod", f"virt-launcher pod{of}: KubeVirt creates it when the VMI "
                                                   "starts; restore the VM or VMI instead")
    if _is(obj, kinds.PVC) and data_volume_owner(obj) and import_unfinished(obj):
        return Decision(False, "pvc-of-unfinished-datavolume",
                        f"CDI had not finished populating it for DataVolume {data_volume_owner(obj)}: CDI recreates "
                        "and populates it from the DataVolume; restore the DataVolume instead")
    return RESTORE


def export_object(obj: Obj, lookup: Callable[[Ref], Obj | None]) -> tuple[Obj, Decision]:
    """The object as the bundle stores it for restore, and whether it is to be restored."""
    decision = restore_decision(obj)
    if _is(obj, kinds.VM):
        return copy_revision_names(obj), decision
    if _is(obj, kinds.DATA_VOLUME):
        return (mark_prepopulated(obj) if data_volume_succeeded(obj) else copy.deepcopy(obj)), decision
    if _is(obj, kinds.PVC):
        dv_name = data_volume_owner(obj)
        if dv_name is None:
            return copy.deepcopy(obj), decision
        dv = lookup(Ref.of(kinds.DATA_VOLUME, (obj.get("metadata") or {}).get("namespace", ""), dv_name))
        if dv is not None and not data_volume_succeeded(dv):
            return copy.deepcopy(obj), Decision(
                False, "pvc-of-unfinished-datavolume",
                f"DataVolume {dv_name} had not succeeded: CDI recreates and populates this PVC from it")
        return mark_populated_for(obj, dv_name), decision
    return copy.deepcopy(obj), decision


# --- restore time ----------------------------------------------------------------------------------------------

class IdentityPolicy(str, Enum):
    """What to do with MAC addresses and firmware serial/uuid that a VM or VMI fixes explicitly."""

    KEEP = "keep"
    CLEAR_ON_COLLISION = "clear-on-collision"
    CLEAR = "clear"


@dataclass
class RestoreContext:
    identity_policy: IdentityPolicy = IdentityPolicy.CLEAR_ON_COLLISION
    macs_in_use: set[str] = field(default_factory=set)
    serials_in_use: set[str] = field(default_factory=set)
    uuids_in_use: set[str] = field(default_factory=set)
    #: the UID the owner has now in the target cluster (None: it does not exist)
    owner_uid: Callable[[Obj, str], str | None] = lambda owner, namespace: None
    #: a PVC already restored in the target cluster
    restored_pvc: Callable[[str, str], Obj | None] = lambda namespace, name: None


def sanitize_metadata(obj: Obj) -> Obj:
    """Drop what the API server sets: a restore carrying them is rejected or confuses controllers."""
    result = copy.deepcopy(obj)
    meta = _meta(result)
    for key in SERVER_SET_METADATA:
        meta.pop(key, None)
    result.pop("status", None)
    return result


def set_aside_owner_references(obj: Obj) -> Obj:
    """For objects restored by a plain ``kubectl apply``: the old owners' UIDs would make the garbage collector
    delete them, so their ownerReferences move into an annotation that the restore (or the webhook) turns back into
    references to the owners' new UIDs."""
    result = copy.deepcopy(obj)
    meta = _meta(result)
    owners = meta.pop("ownerReferences", None)
    if owners:
        _annotations(result)[OWNER_REFERENCES_ANNOTATION] = json.dumps(owners, separators=(",", ":"))
    return result


def remap_owner_references(obj: Obj, owner_uid: Callable[[Obj, str], str | None]) -> Obj:
    """An ownerReference with an old UID makes the garbage collector delete the object: re-point or drop it."""
    owners = owner_references(obj)
    result = copy.deepcopy(obj)
    meta = _meta(result)
    (meta.get("annotations") or {}).pop(OWNER_REFERENCES_ANNOTATION, None)
    if meta.get("annotations") == {}:
        del meta["annotations"]
    if not owners:
        return result
    kept = []
    for owner in owners:
        current = owner_uid(owner, meta.get("namespace", ""))
        if current:
            kept.append({**owner, "uid": current})
    if kept:
        meta["ownerReferences"] = kept
    else:
        meta.pop("ownerReferences", None)
    return result


def _without_metadata_keys(obj: Obj, field_name: str, keys: tuple[str, ...]) -> Obj:
    result = copy.deepcopy(obj)
    mapping = _meta(result).get(field_name)
    if mapping:
        for key in keys:
            mapping.pop(key, None)
    return result


def strip_restricted_vmi_labels(vmi: Obj) -> Obj:
    """KubeVirt rejects VMIs created with labels only its controllers may set."""
    return _without_metadata_keys(vmi, "labels", RESTRICTED_VMI_LABELS)


def drop_pvc_binding_annotations(pvc: Obj) -> Obj:
    """Binding annotations pin the claim to a node and volume of the old cluster; CDI's pod phase must stay."""
    return _without_metadata_keys(pvc, "annotations", PVC_BINDING_ANNOTATIONS)


def _vmi_spec(obj: Obj) -> Obj | None:
    if _is(obj, kinds.VM):
        return ((obj.get("spec") or {}).get("template") or {}).get("spec")
    if _is(obj, kinds.VMI):
        return obj.get("spec")
    return None


def identity_values(obj: Obj) -> tuple[set[str], set[str], set[str]]:
    """The MAC addresses, firmware serials and firmware UUIDs a VM or VMI fixes explicitly."""
    spec = _vmi_spec(obj) or {}
    domain = spec.get("domain") or {}
    macs = {normalize_mac(i["macAddress"]) for i in (domain.get("devices") or {}).get("interfaces") or []
            if i.get("macAddress")}
    firmware = domain.get("firmware") or {}
    serials = {firmware["serial"]} if firmware.get("serial") else set()
    uuids = {str(firmware["uuid"]).lower()} if firmware.get("uuid") else set()
    return macs, serials, uuids


def normalize_mac(mac: str) -> str:
    return mac.strip().lower().replace("-", ":")


def apply_identity_policy(obj: Obj, ctx: RestoreContext) -> Obj:
    """Two VMs with the same MAC break the network; the same firmware serial/uuid confuses guests and licences.

    ``clear`` removes MACs (KubeVirt's pool assigns new ones) and regenerates serial and uuid; ``clear-on-collision``
    does that only for values already in use in the target cluster; ``keep`` leaves them.
    """
    result = copy.deepcopy(obj)
    spec = _vmi_spec(result)
    if spec is None or ctx.identity_policy is IdentityPolicy.KEEP:
        return result
    clear_all = ctx.identity_policy is IdentityPolicy.CLEAR
    domain = spec.get("domain") or {}
    for interface in (domain.get("devices") or {}).get("interfaces") or []:
        mac = interface.get("macAddress")
        if mac and (clear_all or normalize_mac(mac) in ctx.macs_in_use):
            del interface["macAddress"]
    firmware = domain.get("firmware") or {}
    if firmware.get("serial") and (clear_all or firmware["serial"] in ctx.serials_in_use):
        firmware["serial"] = str(uuid.uuid4())
    if firmware.get("uuid") and (clear_all or str(firmware["uuid"]).lower() in ctx.uuids_in_use):
        firmware["uuid"] = str(uuid.uuid4())
    return result


def restore_object(obj: Obj, ctx: RestoreContext) -> Obj:
    """Every restore-time rule for the object's kind, applied to a copy. Server-set metadata is not touched here:
    the webhook sees objects the API server already owns; ``sanitize_metadata`` is for tools that create them."""
    result = remap_owner_references(obj, ctx.owner_uid)
    if _is(result, kinds.DATA_VOLUME):
        name, namespace = _meta(result).get("name", ""), _meta(result).get("namespace", "")
        if name and data_volume_data_restored(result, ctx.restored_pvc(namespace, name) if name else None):
            result = mark_prepopulated(result)
    elif _is(result, kinds.PVC):
        dv_name = data_volume_owner(obj)
        if dv_name:
            result = mark_populated_for(result, dv_name)
        result = drop_pvc_binding_annotations(result)
    elif _is(result, kinds.VMI):
        if controller_of(obj) is None:
            result = strip_restricted_vmi_labels(result)
        result = apply_identity_policy(result, ctx)
    elif _is(result, kinds.VM):
        result = apply_identity_policy(copy_revision_names(result), ctx)
    return result


# --- restore context -------------------------------------------------------------------------------------------

def in_restore_context(obj: Obj, namespace_labels: dict[str, str] | None) -> bool:
    """Only objects being restored are changed: labelled by kvbackup or Velero, or in a namespace opted in."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if RESTORE_LABEL in labels or VELERO_RESTORE_LABEL in labels:
        return True
    return (namespace_labels or {}).get(RESTORE_MODE_NAMESPACE_LABEL) == "enabled"


def is_system_request(username: str) -> bool:
    """KubeVirt's and CDI's own controllers: their creates are normal operation, never a restore."""
    prefix = "system:serviceaccount:"
    if not username.startswith(prefix):
        return False
    _, _, account = username[len(prefix):].partition(":")
    return account in SYSTEM_SERVICE_ACCOUNT_NAMES

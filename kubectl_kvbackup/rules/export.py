"""Export-time rules (the guide's "Backup Actions"): what the bundle stores so that a restore brings the VM back
whole, and which objects must not be restored because KubeVirt or CDI recreate them."""

from __future__ import annotations

import copy
from typing import Callable

from .. import kinds
from ..graph.edges import is_hotplug_pod, revision_name
from ..kinds import group_of
from ..refs import Ref
from .objects import (CREATED_FOR_DATA_VOLUME_ANNOTATION, POD_PHASE_ANNOTATION, POPULATED_FOR_ANNOTATION,
                      POPULATOR_PROGRESS_ANNOTATION, PREPOPULATED_ANNOTATION, RESTORE, VM_GENERATION_ANNOTATION,
                      VM_OWNER_KINDS, Decision, Obj, annotations_of, controller_reference, is_kind, meta_of,
                      owner_references)


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


def mark_prepopulated(dv: Obj) -> Obj:
    """A DataVolume restored over existing data must say so, or CDI imports again over the restored disk."""
    result = copy.deepcopy(dv)
    annotations_of(result)[PREPOPULATED_ANNOTATION] = meta_of(result).get("name", "")
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
    annotations_of(result)[POPULATED_FOR_ANNOTATION] = dv_name
    return result


def import_unfinished(pvc: Obj) -> bool:
    """CDI's own record on the PVC says its import (or clone, upload) had not completed."""
    annotations = (pvc.get("metadata") or {}).get("annotations") or {}
    phase = annotations.get(POD_PHASE_ANNOTATION)
    progress = annotations.get(POPULATOR_PROGRESS_ANNOTATION)
    return (phase is not None and phase != "Succeeded") or (progress is not None and progress != "100.0%")


def populated_with_evidence(pvc: Obj, dv: Obj | None) -> bool:
    """Whether a DataVolume's PVC is known to hold its data: CDI's importer pod phase Succeeded, populator progress
    100.0%, an existing populatedFor, or the DataVolume Succeeded. A PVC never populated (WaitForFirstConsumer, a VM
    never started) carries none of these.

    CDI names them in containerized-data-importer pkg/controller/common/util.go (AnnPodPhase, AnnPopulatorProgress,
    AnnPopulatedFor)."""
    annotations = (pvc.get("metadata") or {}).get("annotations") or {}
    return (annotations.get(POD_PHASE_ANNOTATION) == "Succeeded"
            or annotations.get(POPULATOR_PROGRESS_ANNOTATION) == "100.0%"
            or POPULATED_FOR_ANNOTATION in annotations
            or (dv is not None and data_volume_succeeded(dv)))


#: kinds shared across workloads wherever they live: cluster-wide instancetypes and preferences
_SHARED_CLUSTER_KINDS = {(k.group, k.kind) for k in (kinds.CLUSTER_INSTANCETYPE, kinds.CLUSTER_PREFERENCE)}
#: kinds shared when they live outside the workloads' namespaces (an image catalogue, an infrastructure network)
_SHARED_ELSEWHERE_KINDS = {(k.group, k.kind) for k in (kinds.DATA_SOURCE, kinds.NETWORK_ATTACHMENT_DEFINITION)}


def is_shared(ref: Ref, workload_namespaces: set[str] | frozenset[str]) -> bool:
    """Objects other workloads use too: restored only if absent, never updated."""
    key = (ref.group, ref.kind)
    return key in _SHARED_CLUSTER_KINDS or (key in _SHARED_ELSEWHERE_KINDS and ref.namespace not in workload_namespaces)


def restore_decision(obj: Obj) -> Decision:
    """Objects KubeVirt or CDI recreate themselves: restoring them collides with what their controllers create.

    Restore tools strip ownerReferences (Velero does), so the signals that survive are used too: owners an
    apply-ready bundle set aside, the VM generation annotation virt-controller puts on every VMI it creates, the
    virt-launcher label, and CDI's import phase on a DataVolume's PVC.
    """
    owners = owner_references(obj)
    meta = obj.get("metadata") or {}
    if is_kind(obj, kinds.VMI):
        owner = controller_reference(owners)
        if owner is not None and owner.get("kind") in VM_OWNER_KINDS:
            return Decision(False, "owned-vmi", f"owned by {owner['kind']} {owner.get('name')}: KubeVirt recreates "
                                                "it from its owner; restore the owner instead")
        if VM_GENERATION_ANNOTATION in (meta.get("annotations") or {}):
            return Decision(False, "owned-vmi", "created by VirtualMachine " + str(meta.get("name")) + " (annotation "
                                                f"{VM_GENERATION_ANNOTATION}): KubeVirt recreates it from the VM; "
                                                "restore the VM instead")
    if is_kind(obj, kinds.POD):
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
    if is_kind(obj, kinds.PVC) and data_volume_owner(obj) and import_unfinished(obj):
        return Decision(False, "pvc-of-unfinished-datavolume",
                        f"CDI had not finished populating it for DataVolume {data_volume_owner(obj)}: CDI recreates "
                        "and populates it from the DataVolume; restore the DataVolume instead")
    return RESTORE


def export_object(obj: Obj, lookup: Callable[[Ref], Obj | None]) -> tuple[Obj, Decision]:
    """The object as the bundle stores it for restore, and whether it is to be restored."""
    decision = restore_decision(obj)
    if is_kind(obj, kinds.VM):
        return copy_revision_names(obj), decision
    if is_kind(obj, kinds.DATA_VOLUME):
        return (mark_prepopulated(obj) if data_volume_succeeded(obj) else copy.deepcopy(obj)), decision
    if is_kind(obj, kinds.PVC):
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

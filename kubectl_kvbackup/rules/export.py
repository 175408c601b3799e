"""Export-time rules (the guide's "Backup Actions"): what the bundle stores so that a restore brings the VM back
whole, and which objects must not be restored because KubeVirt or CDI recreate them."""

from __future__ import annotations

from typing import Callable

from .. import kinds
from ..graph.edges import data_volume_succeeded, is_hotplug_pod, is_launcher_pod, revision_name
from ..kinds import group_of
from ..refs import Ref
from .objects import (ALLOW_CLAIM_ADOPTION_ANNOTATION, CHECKPOINT_CURRENT_ANNOTATION, CHECKPOINT_DONE_ANNOTATION,
                      CREATED_FOR_DATA_VOLUME_ANNOTATION, OWNER_REFERENCES_ANNOTATION, POD_PHASE_ANNOTATION, POPULATED_FOR_ANNOTATION, POPULATOR_PROGRESS_ANNOTATION,
                      POPULATOR_PROGRESS_DONE, PREPOPULATED_ANNOTATION, RESTORE, VELERO_DYNAMIC_PV_RESTORE_LABEL,
                      VM_GENERATION_ANNOTATION, VM_OWNER_KINDS, Decision, Obj, annotations_of, controller_reference, copy_object,
                      is_kind, meta_of, owner_references)


def copy_revision_names(vm: Obj) -> Obj:
    """Status is dropped on restore, so the instancetype/preference revision it names must move into the spec."""
    result = copy_object(vm)
    spec = result.setdefault("spec", {})
    for field_name in ("instancetype", "preference"):
        matcher = spec.get(field_name)
        name = revision_name(vm, field_name)
        if matcher and name and not matcher.get("revisionName"):
            matcher["revisionName"] = name
    return result


def mark_prepopulated(dv: Obj) -> Obj:
    """A DataVolume restored over existing data must say so, or CDI imports again over the restored disk."""
    result = copy_object(dv)
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
    result = copy_object(pvc)
    annotations_of(result)[POPULATED_FOR_ANNOTATION] = dv_name
    return result


def _without_annotation(obj: Obj, key: str) -> Obj:
    result = copy_object(obj)
    annotations = (result.get("metadata") or {}).get("annotations")
    if annotations:
        annotations.pop(key, None)
    return result


def unmark_prepopulated(dv: Obj) -> Obj:
    """A DataVolume whose PVC does not come back with its data must not claim it does: CDI then waits for a PVC
    that never comes instead of populating one (containerized-data-importer pkg/controller/datavolume/
    controller-base.go: a prePopulated DataVolume without its PVC stays Pending, and gets no PVC created)."""
    return _without_annotation(dv, PREPOPULATED_ANNOTATION)


def unmark_populated_for(pvc: Obj) -> Obj:
    """A PVC restored without its data must not claim it holds a DataVolume's: a DataVolume of that name created
    later (a VM's template) would adopt the empty volume as its disk (containerized-data-importer
    pkg/controller/datavolume/controller-base.go pvcRequiresWork)."""
    return _without_annotation(pvc, POPULATED_FOR_ANNOTATION)


def populated_with_evidence(pvc: Obj, dv: Obj | None) -> bool:
    """Whether the PVC is known to hold its DataVolume's data. A PVC marked populatedFor without it makes CDI hand
    a blank volume to the VM as its disk; a PVC never populated (WaitForFirstConsumer, a VM never started) carries
    no record at all.

    The records CDI keeps (containerized-data-importer pkg/controller/common/util.go names them): the import,
    upload or clone pod's phase ``Succeeded`` (import-controller.go, upload-controller.go; the populators copy it
    from the PVC' to the target PVC, populators/populator-base.go); populator progress ``100.0%``
    (populators/import-populator.go, clone-populator.go: ProgressDone); a ``populatedFor`` naming the PVC's
    DataVolume (datavolume/controller-base.go: CDI treats the PVC as populated); the DataVolume's own status
    ``Succeeded``. CDI names a DataVolume's PVC after it, so ``populatedFor`` must name the PVC itself.
    """
    if dv is not None and data_volume_succeeded(dv):
        return True
    annotations = (pvc.get("metadata") or {}).get("annotations") or {}
    dv_name = (dv.get("metadata") or {}).get("name") if dv is not None else (pvc.get("metadata") or {}).get("name")
    if CHECKPOINT_CURRENT_ANNOTATION in annotations and CHECKPOINT_DONE_ANNOTATION not in annotations:
        # a paused warm import shows pod phase Succeeded after each checkpoint; CDI treats it as in progress
        # (common/util.go IsMultiStageImportInProgress): marked populated, it would never import the rest
        return False
    return (annotations.get(POD_PHASE_ANNOTATION) == "Succeeded"
            or annotations.get(POPULATOR_PROGRESS_ANNOTATION) == POPULATOR_PROGRESS_DONE
            or bool(dv_name) and annotations.get(POPULATED_FOR_ANNOTATION) == dv_name)


_DATA_SOURCES = {("snapshot.storage.k8s.io", "VolumeSnapshot"), ("", "PersistentVolumeClaim")}


def claim_brings_its_data(pvc: Obj) -> bool:
    """Whether a claim being created comes with a volume that holds data: bound to a restored PersistentVolume
    (``spec.volumeName``, as Velero restores native snapshots: velero pkg/restore/restore.go), filled from a
    VolumeSnapshot or another claim (``spec.dataSource``/``dataSourceRef``, as Velero's CSI restore and kvbackup
    restore it: velero pkg/restore/actions/csi/pvc_action.go), or bound by Velero's data mover through its
    dynamic-PV-restore selector. Any other claim is provisioned empty, whatever CDI's records copied with it say."""
    spec = pvc.get("spec") or {}
    if spec.get("volumeName"):
        return True
    if VELERO_DYNAMIC_PV_RESTORE_LABEL in ((spec.get("selector") or {}).get("matchLabels") or {}):
        return True
    return any(isinstance(source, dict) and (source.get("apiGroup") or "", source.get("kind")) in _DATA_SOURCES
               for source in (spec.get("dataSource"), spec.get("dataSourceRef")))


def never_populated(pvc: Obj, dv_name: str, dv: Obj | None) -> Decision:
    """The decision for a DataVolume's PVC without evidence of its data, saying what CDI's records showed."""
    annotations = (pvc.get("metadata") or {}).get("annotations") or {}
    seen = [f"{label} {value}" for label, value in (
        ("CDI pod phase", annotations.get(POD_PHASE_ANNOTATION)),
        ("populator progress", annotations.get(POPULATOR_PROGRESS_ANNOTATION)),
        ("DataVolume phase", ((dv or {}).get("status") or {}).get("phase"))) if value]
    return Decision(False, "pvc-never-populated",
                    f"no evidence that CDI populated it for DataVolume {dv_name} "
                    f"({', '.join(seen) or 'no population recorded'}): marking it populated would give the VM a blank "
                    "disk; CDI populates it again from its DataVolume: restore the DataVolume instead")


def data_not_captured(dv_name: str) -> Decision:
    return Decision(False, "pvc-data-not-captured",
                    f"the bundle holds no snapshot of its data: CDI populates it again from DataVolume {dv_name}; "
                    "`kubectl kvbackup restore --volumes existing` can use a PVC that another tool restored")


def restore_decision(obj: Obj) -> Decision:
    """Objects KubeVirt or CDI recreate themselves: restoring them collides with what their controllers create.

    Restore tools strip ownerReferences (Velero does), so the signals that survive are used too: owners an
    apply-ready bundle set aside, the VM generation annotation virt-controller puts on every VMI it creates, the
    virt-launcher label, and CDI's records on a DataVolume's PVC.
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
        if (vmi_owner is not None or is_launcher_pod(obj)) and meta.get("name", "").startswith("virt-launcher-"):
            of = f" of VirtualMachineInstance {vmi_owner.get('name')}" if vmi_owner else ""
            return Decision(False, "launcher-pod", f"virt-launcher pod{of}: KubeVirt creates it when the VMI "
                                                   "starts; restore the VM or VMI instead")
    if is_kind(obj, kinds.PVC):
        dv_name = data_volume_owner(obj)
        if dv_name and not populated_with_evidence(obj, None):
            return never_populated(obj, dv_name, None)
        if dv_name and not claim_brings_its_data(obj):
            return Decision(False, "pvc-data-not-captured",
                            f"it would be provisioned empty (no spec.volumeName, no VolumeSnapshot or claim as data "
                            f"source) while CDI's records on it say it holds DataVolume {dv_name}'s data: marked "
                            "populated it would give the VM a blank disk; restore it with its data (a CSI snapshot or "
                            "its PersistentVolume), or leave it out so CDI populates it again from its DataVolume")
    return RESTORE


def _export_pvc(pvc: Obj, lookup: Callable[[Ref], Obj | None], data_captured: Callable[[Ref], bool]
                ) -> tuple[Obj, Decision]:
    """A DataVolume's PVC is restored only with its data, and then marked populated for its DataVolume."""
    meta = pvc.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    dv_name = data_volume_owner(pvc)
    dv = lookup(Ref.of(kinds.DATA_VOLUME, namespace, dv_name or name))
    captured = data_captured(Ref.of(kinds.PVC, namespace, name))
    if dv_name is None:
        if dv is None:
            return (copy_object(pvc) if captured else unmark_populated_for(pvc)), RESTORE
        # CDI names a DataVolume's PVC after it; once CDI garbage-collected a completed DataVolume its PVC is
        # owned by the VM (containerized-data-importer pkg/controller/datavolume/garbagecollect.go, CDI < 1.62)
        dv_name = name
    if not populated_with_evidence(pvc, dv):
        return copy_object(pvc), never_populated(pvc, dv_name, dv)
    if not captured:
        return copy_object(pvc), data_not_captured(dv_name)
    result = mark_populated_for(pvc, dv_name)
    if not any(o.get("kind") == kinds.DATA_VOLUME.kind for o in owner_references(pvc)):
        # the DataVolume takes ownership, as KubeVirt's VirtualMachineRestore lets it (kubevirt
        # pkg/storage/snapshot/restore.go updatePVCPopulatedForAnnotation): CDI cannot adopt a PVC another
        # controller owns
        result = _without_annotation(result, OWNER_REFERENCES_ANNOTATION)
        meta_of(result).pop("ownerReferences", None)
    return result, RESTORE


def export_object(obj: Obj, lookup: Callable[[Ref], Obj | None], data_captured: Callable[[Ref], bool]
                  ) -> tuple[Obj, Decision]:
    """The object as the bundle stores it for restore, and whether it is to be restored. ``data_captured`` says
    whether the bundle holds a PVC's data (a snapshot): only then are a DataVolume and its PVC marked populated."""
    if is_kind(obj, kinds.VM):
        return copy_revision_names(obj), restore_decision(obj)
    if is_kind(obj, kinds.DATA_VOLUME):
        meta = obj.get("metadata") or {}
        pvc_ref = Ref.of(kinds.PVC, meta.get("namespace", ""), meta.get("name", ""))
        pvc = lookup(pvc_ref)
        restored_with_data = pvc is not None and data_captured(pvc_ref) and populated_with_evidence(pvc, obj)
        return (mark_prepopulated(obj) if restored_with_data else unmark_prepopulated(obj)), restore_decision(obj)
    if is_kind(obj, kinds.PVC):
        return _export_pvc(obj, lookup, data_captured)
    return copy_object(obj), restore_decision(obj)


def data_volume_from_template(vm: Obj, template: Obj) -> Obj:
    """The DataVolume virt-controller creates from one of a VM's ``dataVolumeTemplates`` (kubevirt
    pkg/storage/types/dv.go GenerateDataVolumeFromTemplate, pkg/virt-controller/watch/util/util.go
    CreateDataVolumeManifest): the template's metadata and spec, claim adoption allowed, the VM's priority class,
    owned by the VM. The ``sourceRef`` stays unresolved: a prePopulated DataVolume never reads its source."""
    vm_meta = vm.get("metadata") or {}
    template_meta = template.get("metadata") or {}
    metadata: Obj = {
        "name": template_meta.get("name", ""), "namespace": vm_meta.get("namespace", ""),
        "labels": dict(template_meta.get("labels") or {}),
        "annotations": {**(template_meta.get("annotations") or {}), ALLOW_CLAIM_ADOPTION_ANNOTATION: "true"},
    }
    owner = {"apiVersion": vm.get("apiVersion", f"{kinds.VM.group}/{kinds.VM.version}"), "kind": kinds.VM.kind,
             "name": vm_meta.get("name", ""), "controller": True, "blockOwnerDeletion": True}
    if vm_meta.get("uid"):
        owner["uid"] = vm_meta["uid"]
    metadata["ownerReferences"] = [owner]
    spec = copy_object(template.get("spec") or {})
    priority_class = ((((vm.get("spec") or {}).get("template") or {}).get("spec")) or {}).get("priorityClassName")
    if priority_class and not spec.get("priorityClassName"):
        spec["priorityClassName"] = priority_class
    return {"apiVersion": f"{kinds.DATA_VOLUME.group}/{kinds.DATA_VOLUME.version}", "kind": kinds.DATA_VOLUME.kind,
            "metadata": metadata, "spec": spec}


def synthesized_data_volumes(vm: Obj, lookup: Callable[[Ref], Obj | None]) -> list[Obj]:
    """DataVolumes of the VM's ``dataVolumeTemplates`` that no longer exist while their PVC holds the data: CDI
    before 1.62 garbage-collects completed DataVolumes, and one deleted with orphan propagation leaves its PVC.
    Without one the VM controller creates the DataVolume from its template and CDI imports or clones again over
    the disk, or fails when the source is gone; KubeVirt's VirtualMachineRestore creates them the same way, marked
    prePopulated (kubevirt pkg/storage/snapshot/restore.go createDataVolume).

    Only the VM's own templates: a pool renames its templates per VM (kubevirt
    pkg/virt-controller/watch/pool/pool.go indexVMSpec), so each of its VMs carries its own names."""
    namespace = (vm.get("metadata") or {}).get("namespace", "")
    synthesized = []
    for template in (vm.get("spec") or {}).get("dataVolumeTemplates") or []:
        name = (template.get("metadata") or {}).get("name")
        if not name or lookup(Ref.of(kinds.DATA_VOLUME, namespace, name)) is not None:
            continue
        pvc = lookup(Ref.of(kinds.PVC, namespace, name))
        if pvc is not None and populated_with_evidence(pvc, None):
            synthesized.append(mark_prepopulated(data_volume_from_template(vm, template)))
    return synthesized


#: shared with other workloads wherever they live (cluster-scoped)
_SHARED_KINDS = frozenset((k.group, k.kind) for k in (kinds.CLUSTER_INSTANCETYPE, kinds.CLUSTER_PREFERENCE,
                                                       kinds.PRIORITY_CLASS))
#: shared with other workloads when they live outside the workloads' namespaces: a DataSource that golden images
#: publish (CDI's DataImportCron keeps them in their own namespace), a network definition a namespace offers others
_SHARED_ELSEWHERE_KINDS = frozenset((k.group, k.kind) for k in (kinds.DATA_SOURCE,
                                                                  kinds.NETWORK_ATTACHMENT_DEFINITION))


def is_shared(ref: Ref, workload_namespaces: set[str]) -> bool:
    """Objects other workloads share: a restore creates them if absent and never overwrites them."""
    key = (ref.group, ref.kind)
    return key in _SHARED_KINDS or (key in _SHARED_ELSEWHERE_KINDS and ref.namespace not in workload_namespaces)

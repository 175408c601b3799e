"""Restore-time rules (the guide's "Restore Actions"): each object as it must be created in the target cluster.

What a rule needs to know about the target cluster arrives through ``RestoreContext``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from .. import kinds
from ..graph.edges import controller_of
from ..kinds import group_of
from .export import (copy_revision_names, data_volume_owner, mark_populated_for, mark_prepopulated,
                     populated_with_evidence)
from .identity import IdentitiesInUse, IdentityPolicies, apply_identity_policy
from .objects import (OWNER_REFERENCES_ANNOTATION, Change, Obj, annotations_of, copy_object, is_kind, meta_of,
                      set_aside_owners)

RESTRICTED_VMI_LABELS = (
    "kubevirt.io/created-by", "kubevirt.io/migrationJobUID", "kubevirt.io/nodeName",
    "kubevirt.io/migrationTargetNodeName", "kubevirt.io/schedulable", "kubevirt.io/install-strategy",
)
#: what binds a claim to a node and a volume of the old cluster: Velero drops these itself (velero
#: pkg/restore/restore.go resetVolumeBindingInfo; pkg/restore/actions/pvc_action.go for the selected node)
PVC_BINDING_ANNOTATIONS = (
    "volume.kubernetes.io/selected-node", "pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
)
#: the provisioner the old cluster's PV controller picked for the claim (kubernetes pkg/controller/volume/
#: persistentvolume: AnnStorageProvisioner, AnnBetaStorageProvisioner)
PVC_PROVISIONER_ANNOTATIONS = (
    "volume.beta.kubernetes.io/storage-provisioner", "volume.kubernetes.io/storage-provisioner",
)
#: CDI's volume populators: a claim naming one is filled by CDI from a source object its DataVolume created in the
#: old cluster (containerized-data-importer staging/src/kubevirt.io/containerized-data-importer-api/pkg/apis/core/
#: v1beta1/types.go VolumeImportSourceRef, VolumeUploadSourceRef, VolumeCloneSourceRef; pkg/controller/populators/
#: forklift-populator.go for the forklift kinds)
CDI_POPULATOR_SOURCES = frozenset({
    ("cdi.kubevirt.io", "VolumeImportSource"), ("cdi.kubevirt.io", "VolumeUploadSource"),
    ("cdi.kubevirt.io", "VolumeCloneSource"),
    ("forklift.cdi.kubevirt.io", "OvirtVolumePopulator"), ("forklift.cdi.kubevirt.io", "OpenstackVolumePopulator"),
})
SERVER_SET_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink")


@dataclass
class RestoreContext:
    identity: IdentityPolicies = field(default_factory=IdentityPolicies)
    #: MACs, serials and UUIDs taken in the target cluster; ``restore_object`` adds each VM's and VMI's own, so one
    #: context serves one pass over a restore's objects
    identities_in_use: IdentitiesInUse = field(default_factory=IdentitiesInUse)
    #: the UID the owner has now in the target cluster (None: it does not exist)
    owner_uid: Callable[[Obj, str], str | None] = lambda owner, namespace: None
    #: a PVC already restored in the target cluster
    restored_pvc: Callable[[str, str], Obj | None] = lambda namespace, name: None


class Restored(NamedTuple):
    """An object as it is to be created, and the changes the user must be told of."""

    object: Obj
    changes: list[Change]


def data_volume_data_restored(dv: Obj, restored_pvc: Obj | None) -> bool:
    """Whether a DataVolume being restored has its data already: its status says Succeeded, or — when a tool
    stripped the status — its PVC was restored first with evidence of its data. A status that says anything
    else (an import in progress) means CDI must run it again."""
    phase = (dv.get("status") or {}).get("phase")
    if phase:
        return phase == "Succeeded"
    return restored_pvc is not None and populated_with_evidence(restored_pvc, None)


def sanitize_metadata(obj: Obj) -> Obj:
    """Drop what the API server sets: a restore carrying them is rejected or confuses controllers."""
    result = copy_object(obj)
    meta = meta_of(result)
    for key in SERVER_SET_METADATA:
        meta.pop(key, None)
    result.pop("status", None)
    return result


def set_aside_owner_references(obj: Obj) -> Obj:
    """For objects restored by a plain ``kubectl apply``: the old owners' UIDs would make the garbage collector
    delete them, so their ownerReferences move into an annotation that the restore (or the webhook) turns back into
    references to the owners' new UIDs."""
    result = copy_object(obj)
    meta = meta_of(result)
    owners = meta.pop("ownerReferences", None)
    if owners:
        annotations_of(result)[OWNER_REFERENCES_ANNOTATION] = json.dumps(owners, separators=(",", ":"))
    return result


def _owner_key(owner: Obj) -> tuple[str, str, str]:
    return group_of(str(owner.get("apiVersion", ""))), str(owner.get("kind", "")), str(owner.get("name", ""))


def remap_owner_references(obj: Obj, owner_uid: Callable[[Obj, str], str | None]) -> Obj:
    """Set-aside owners become ownerReferences carrying the owner's UID in this cluster, once ``owner_uid`` knows
    it. An ownerReference with an old UID makes the garbage collector delete the object, so an owner not (yet)
    found stays set aside for a later pass to re-point; references already live are the creator's and are kept
    as they are."""
    result = copy_object(obj)
    set_aside = set_aside_owners(obj)
    if not set_aside:
        return result
    meta = meta_of(result)
    live = meta.get("ownerReferences") or []
    live_keys = {_owner_key(owner) for owner in live}
    written, waiting = [], []
    for owner in set_aside:
        if _owner_key(owner) in live_keys:
            continue
        uid = owner_uid(owner, meta.get("namespace", ""))
        if uid:
            written.append({**owner, "uid": uid})
        else:
            waiting.append(owner)
    if waiting == set_aside:
        return result
    if written:
        meta["ownerReferences"] = [*live, *written]
    annotations = annotations_of(result)
    if waiting:
        annotations[OWNER_REFERENCES_ANNOTATION] = json.dumps(waiting, separators=(",", ":"))
    else:
        del annotations[OWNER_REFERENCES_ANNOTATION]
        if not annotations:
            del meta["annotations"]
    return result


def _without_metadata_keys(obj: Obj, field_name: str, keys: tuple[str, ...]) -> Obj:
    result = copy_object(obj)
    mapping = meta_of(result).get(field_name)
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


def bindable_pvc(pvc: Obj) -> Obj:
    """A claim that can bind in another cluster: no volume, node or provisioner of the old one, and no CDI
    populator source (its source object is the old cluster's; a restored claim naming it never binds). CDI's pod
    phase stays: it is the evidence that the data was there.

    Not for the webhook: Velero binds the PVCs it restores to the PVs it restored through ``spec.volumeName`` and
    points them at its own VolumeSnapshots through ``spec.dataSource`` (velero pkg/restore/restore.go,
    pkg/restore/actions/csi/pvc_action.go)."""
    result = _without_metadata_keys(pvc, "annotations", PVC_BINDING_ANNOTATIONS + PVC_PROVISIONER_ANNOTATIONS)
    spec = result.get("spec") or {}
    spec.pop("volumeName", None)
    for field_name in ("dataSource", "dataSourceRef"):
        source = spec.get(field_name)
        if isinstance(source, dict) and (source.get("apiGroup"), source.get("kind")) in CDI_POPULATOR_SOURCES:
            del spec[field_name]
    return result


def pvc_from_snapshot(pvc: Obj, snapshot_name: str) -> Obj:
    """A bindable claim whose data comes from the export's VolumeSnapshot in its namespace. ``dataSource`` and
    ``dataSourceRef`` must agree when both are set (kubernetes pkg/apis/core/validation), so both name it."""
    result = bindable_pvc(pvc)
    source = {"apiGroup": kinds.VOLUME_SNAPSHOT.group, "kind": kinds.VOLUME_SNAPSHOT.kind, "name": snapshot_name}
    spec = result.setdefault("spec", {})
    spec["dataSource"], spec["dataSourceRef"] = dict(source), dict(source)
    return result


def restore_object(obj: Obj, ctx: RestoreContext) -> Restored:
    """Every restore-time rule for the object's kind, applied to a copy. Server-set metadata is not touched here:
    the webhook sees objects the API server already owns; ``sanitize_metadata`` is for tools that create them."""
    result = remap_owner_references(obj, ctx.owner_uid)
    changes: list[Change] = []
    if is_kind(result, kinds.DATA_VOLUME):
        name, namespace = meta_of(result).get("name", ""), meta_of(result).get("namespace", "")
        if name and data_volume_data_restored(result, ctx.restored_pvc(namespace, name) if name else None):
            result = mark_prepopulated(result)
    elif is_kind(result, kinds.PVC):
        # binding and data source stay: Velero binds the claim to the PV or VolumeSnapshot it restored
        dv_name = data_volume_owner(obj)
        if dv_name and populated_with_evidence(obj, None):
            result = mark_populated_for(result, dv_name)
        result = drop_pvc_binding_annotations(result)
    elif is_kind(result, kinds.VMI):
        if controller_of(obj) is None:
            result = strip_restricted_vmi_labels(result)
        result, changes = apply_identity_policy(result, ctx.identity, ctx.identities_in_use)
        ctx.identities_in_use.reserve(result)
    elif is_kind(result, kinds.VM):
        result, changes = apply_identity_policy(copy_revision_names(result), ctx.identity, ctx.identities_in_use)
        ctx.identities_in_use.reserve(result)
    return Restored(result, changes)

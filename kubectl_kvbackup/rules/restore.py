"""Restore-time rules (the guide's "Restore Actions"): each object as it must be created in the target cluster.

What a rule needs to know about the target cluster arrives through ``RestoreContext``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from .. import kinds
from ..graph.edges import controller_of
from .export import copy_revision_names, data_volume_owner, import_unfinished, mark_populated_for, mark_prepopulated
from .identity import IdentitiesInUse, IdentityPolicy, apply_identity_policy
from .objects import (OWNER_REFERENCES_ANNOTATION, Change, POD_PHASE_ANNOTATION, POPULATED_FOR_ANNOTATION, Obj,
                      annotations_of, is_kind, meta_of, owner_references)

RESTRICTED_VMI_LABELS = (
    "kubevirt.io/created-by", "kubevirt.io/migrationJobUID", "kubevirt.io/nodeName",
    "kubevirt.io/migrationTargetNodeName", "kubevirt.io/schedulable", "kubevirt.io/install-strategy",
)
PVC_BINDING_ANNOTATIONS = (
    "volume.kubernetes.io/selected-node", "pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
)
STORAGE_PROVISIONER_ANNOTATIONS = ("volume.kubernetes.io/storage-provisioner",
                                   "volume.beta.kubernetes.io/storage-provisioner")
SERVER_SET_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink")


@dataclass
class RestoreContext:
    identity_policy: IdentityPolicy = IdentityPolicy.CLEAR_ON_COLLISION
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




def sanitize_metadata(obj: Obj) -> Obj:
    """Drop what the API server sets: a restore carrying them is rejected or confuses controllers."""
    result = copy.deepcopy(obj)
    meta = meta_of(result)
    for key in SERVER_SET_METADATA:
        meta.pop(key, None)
    result.pop("status", None)
    return result


def set_aside_owner_references(obj: Obj) -> Obj:
    """For objects restored by a plain ``kubectl apply``: the old owners' UIDs would make the garbage collector
    delete them, so their ownerReferences move into an annotation that the restore (or the webhook) turns back into
    references to the owners' new UIDs."""
    result = copy.deepcopy(obj)
    meta = meta_of(result)
    owners = meta.pop("ownerReferences", None)
    if owners:
        annotations_of(result)[OWNER_REFERENCES_ANNOTATION] = json.dumps(owners, separators=(",", ":"))
    return result


def remap_owner_references(obj: Obj, owner_uid: Callable[[Obj, str], str | None]) -> Obj:
    """An ownerReference with an old UID makes the garbage collector delete the object: re-point or drop it."""
    owners = owner_references(obj)
    result = copy.deepcopy(obj)
    meta = meta_of(result)
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
    """A PVC that can bind in another cluster: what pins it to the old volume and node is dropped, and CDI's
    populator source (its VolumeImportSource etc., CDI pkg/controller/populators) is not there to run again."""
    result = _without_metadata_keys(pvc, "annotations", PVC_BINDING_ANNOTATIONS + STORAGE_PROVISIONER_ANNOTATIONS)
    spec = result.setdefault("spec", {})
    spec.pop("volumeName", None)
    for key in ("dataSource", "dataSourceRef"):
        if (spec.get(key) or {}).get("apiGroup") == kinds.DATA_VOLUME.group:
            del spec[key]
    return result


def pvc_from_snapshot(pvc: Obj, snapshot_name: str) -> Obj:
    """A bindable PVC that the CSI provisioner fills from a VolumeSnapshot in its own namespace."""
    result = bindable_pvc(pvc)
    spec = result["spec"]
    spec.pop("dataSourceRef", None)  # the API server derives it from dataSource
    spec["dataSource"] = {"apiGroup": kinds.VOLUME_SNAPSHOT.group, "kind": kinds.VOLUME_SNAPSHOT.kind,
                          "name": snapshot_name}
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
        dv_name = data_volume_owner(obj)
        if dv_name:
            result = mark_populated_for(result, dv_name)
        result = drop_pvc_binding_annotations(result)
    elif is_kind(result, kinds.VMI):
        if controller_of(obj) is None:
            result = strip_restricted_vmi_labels(result)
        result, changes = apply_identity_policy(result, ctx.identity_policy, ctx.identities_in_use)
    elif is_kind(result, kinds.VM):
        result, changes = apply_identity_policy(copy_revision_names(result), ctx.identity_policy,
                                                ctx.identities_in_use)
    return Restored(result, changes)

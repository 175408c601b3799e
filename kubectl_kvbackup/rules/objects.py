"""What every rule reads: the annotations and labels KubeVirt, CDI and kvbackup put on objects, and small accessors.

Nothing here does I/O or changes its argument.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from .. import kinds
from ..kinds import group_of

Obj = dict[str, Any]

RESTORE_LABEL = "kvbackup.kubevirt.io/restore"
VELERO_RESTORE_LABEL = "velero.io/restore-name"
RESTORE_MODE_NAMESPACE_LABEL = "kvbackup.kubevirt.io/restore-mode"
OWNER_REFERENCES_ANNOTATION = "kvbackup.kubevirt.io/owner-references"
# CDI's PVC and DataVolume annotations: containerized-data-importer pkg/controller/common/util.go
PREPOPULATED_ANNOTATION = "cdi.kubevirt.io/storage.prePopulated"
POPULATED_FOR_ANNOTATION = "cdi.kubevirt.io/storage.populatedFor"
CREATED_FOR_DATA_VOLUME_ANNOTATION = "cdi.kubevirt.io/createdForDataVolume"
POD_PHASE_ANNOTATION = "cdi.kubevirt.io/storage.pod.phase"
POPULATOR_PROGRESS_ANNOTATION = "cdi.kubevirt.io/storage.populator.progress"
#: the value CDI's populators write once the data is in (ProgressDone)
POPULATOR_PROGRESS_DONE = "100.0%"
#: lets a new DataVolume adopt an existing PVC; KubeVirt sets it on every DataVolume it builds from a template
#: (kubevirt pkg/storage/types/dv.go GenerateDataVolumeFromTemplate)
ALLOW_CLAIM_ADOPTION_ANNOTATION = "cdi.kubevirt.io/allowClaimAdoption"
VM_GENERATION_ANNOTATION = "kubevirt.io/vm-generation"
#: a multi-stage (warm) import: set while checkpoints are being imported, "done" once the last one was
#: (containerized-data-importer pkg/controller/common/util.go: AnnCurrentCheckpoint, AnnMultiStageImportDone)
CHECKPOINT_CURRENT_ANNOTATION = "cdi.kubevirt.io/storage.checkpoint.current"
CHECKPOINT_DONE_ANNOTATION = "cdi.kubevirt.io/storage.checkpoint.done"
#: Velero's data-mover restore binds a claim to the volume it filled through this selector label
#: (velero pkg/apis/velero/v1/labels_annotations.go: DynamicPVRestoreLabel; pkg/restore/actions/csi/pvc_action.go)
VELERO_DYNAMIC_PV_RESTORE_LABEL = "velero.io/dynamic-pv-restore"
VM_OWNER_KINDS = ("VirtualMachine", "VirtualMachineInstanceReplicaSet", "VirtualMachinePool")


@dataclass(frozen=True)
class Decision:
    restore: bool
    rule: str
    reason: str


RESTORE = Decision(True, "", "")


@dataclass(frozen=True)
class Change:
    """A value a restore rule changed that the user must hear about (old -> new), where and why."""

    rule: str
    path: str
    old: str
    new: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.old} -> {self.new if self.new is not None else '(removed)'} ({self.reason})"


_SCALARS = frozenset((str, int, float, bool, type(None)))


def copy_object(value: Any) -> Any:
    """A deep copy of an object as the API server sends it (dicts, lists, scalars), several times faster than
    ``copy.deepcopy``, which an export pays for thousands of objects; anything else (a timestamp read from YAML, say)
    is deep-copied as usual."""
    kind = type(value)
    if kind is dict:
        return {key: item if type(item) in _SCALARS else copy_object(item) for key, item in value.items()}
    if kind is list:
        return [item if type(item) in _SCALARS else copy_object(item) for item in value]
    return value if kind in _SCALARS else copy.deepcopy(value)


def meta_of(obj: Obj) -> Obj:
    """The object's metadata, created empty when absent (for rules that change a copy)."""
    return obj.setdefault("metadata", {})


def annotations_of(obj: Obj) -> dict[str, str]:
    """The object's annotations, created empty when absent or null (for rules that change a copy)."""
    meta = meta_of(obj)
    if meta.get("annotations") is None:
        meta["annotations"] = {}
    return meta["annotations"]


def owner_references(obj: Obj) -> list[Obj]:
    """The object's ownerReferences, or those an apply-ready bundle set aside in an annotation."""
    meta = obj.get("metadata") or {}
    if meta.get("ownerReferences"):
        return meta["ownerReferences"]
    return set_aside_owners(obj)


def set_aside_owners(obj: Obj) -> list[Obj]:
    """The ownerReferences set aside in the annotation (old UIDs: not yet re-pointed at the owners' new ones)."""
    stashed = ((obj.get("metadata") or {}).get("annotations") or {}).get(OWNER_REFERENCES_ANNOTATION)
    try:
        owners = json.loads(stashed) if stashed else []
    except ValueError:
        return []
    return [o for o in owners if isinstance(o, dict)] if isinstance(owners, list) else []


def controller_reference(owners: list[Obj]) -> Obj | None:
    return next((o for o in owners if o.get("controller")), None)


def is_kind(obj: Obj, kind: kinds.Kind) -> bool:
    """Group and kind both match: a VM is not a VMI, a CDI object is not a core one."""
    return group_of(obj.get("apiVersion", "")) == kind.group and obj.get("kind") == kind.kind

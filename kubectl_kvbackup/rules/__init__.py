"""Every backup and restore rule, each in one function, called alike by export, restore and the webhook.

Split by the integration guide's sections: ``export`` (backup actions), ``restore`` (restore actions), ``identity``
(MAC and firmware collisions), ``context`` (which requests are restores). Rules take an object and return a changed
copy (or a ``Decision``); nothing here does I/O.
"""

from .context import DEFAULT_SYSTEM_NAMESPACES, SYSTEM_SERVICE_ACCOUNT_NAMES, in_restore_context, is_system_request
from .export import (copy_revision_names, data_volume_owner, data_volume_succeeded, export_object, import_unfinished,
                     mark_populated_for, mark_prepopulated, restore_decision)
from .identity import IdentitiesInUse, IdentityPolicy, apply_identity_policy, identity_values, normalize_mac
from .objects import (CREATED_FOR_DATA_VOLUME_ANNOTATION, OWNER_REFERENCES_ANNOTATION, POD_PHASE_ANNOTATION,
                      POPULATED_FOR_ANNOTATION, POPULATOR_PROGRESS_ANNOTATION, PREPOPULATED_ANNOTATION, RESTORE,
                      RESTORE_LABEL, RESTORE_MODE_NAMESPACE_LABEL, VELERO_RESTORE_LABEL, VM_GENERATION_ANNOTATION,
                      VM_OWNER_KINDS, Change, Decision, Obj, owner_references)
from .restore import (PVC_BINDING_ANNOTATIONS, RESTRICTED_VMI_LABELS, SERVER_SET_METADATA, RestoreContext, Restored,
                      data_volume_data_restored, drop_pvc_binding_annotations, remap_owner_references,
                      restore_object, sanitize_metadata, set_aside_owner_references, strip_restricted_vmi_labels)

__all__ = [
    "DEFAULT_SYSTEM_NAMESPACES", "SYSTEM_SERVICE_ACCOUNT_NAMES", "in_restore_context", "is_system_request",
    "copy_revision_names", "data_volume_owner", "data_volume_succeeded", "export_object", "import_unfinished",
    "mark_populated_for", "mark_prepopulated", "restore_decision",
    "IdentitiesInUse", "IdentityPolicy", "apply_identity_policy", "identity_values", "normalize_mac",
    "CREATED_FOR_DATA_VOLUME_ANNOTATION", "OWNER_REFERENCES_ANNOTATION", "POD_PHASE_ANNOTATION",
    "POPULATED_FOR_ANNOTATION", "POPULATOR_PROGRESS_ANNOTATION", "PREPOPULATED_ANNOTATION", "RESTORE",
    "RESTORE_LABEL", "RESTORE_MODE_NAMESPACE_LABEL", "VELERO_RESTORE_LABEL", "VM_GENERATION_ANNOTATION",
    "VM_OWNER_KINDS", "Change", "Decision", "Obj", "owner_references",
    "PVC_BINDING_ANNOTATIONS", "RESTRICTED_VMI_LABELS", "SERVER_SET_METADATA", "RestoreContext", "Restored",
    "data_volume_data_restored", "drop_pvc_binding_annotations", "remap_owner_references", "restore_object",
    "sanitize_metadata", "set_aside_owner_references", "strip_restricted_vmi_labels",
]

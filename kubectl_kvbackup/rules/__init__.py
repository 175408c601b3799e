"""Every backup and restore rule, each in one function, called alike by export, restore and the webhook.

Split by the integration guide's sections: ``export`` (backup actions), ``restore`` (restore actions), ``identity``
(MAC and firmware collisions), ``context`` (which requests are restores). Rules take an object and return a changed
copy (or a ``Decision``); nothing here does I/O. docs/rules.md lists every rule, why, and its upstream source.
"""

from .context import DEFAULT_SYSTEM_NAMESPACES, SYSTEM_SERVICE_ACCOUNT_NAMES, in_restore_context, is_system_request
from .export import (claim_brings_its_data, copy_revision_names, data_volume_from_template, data_volume_owner, data_volume_succeeded,
                     export_object, is_shared, mark_populated_for, mark_prepopulated, populated_with_evidence,
                     restore_decision, synthesized_data_volumes, unmark_populated_for, unmark_prepopulated)
from .identity import (FirmwarePolicy, IdentitiesInUse, IdentityPolicies, MacPolicy, TakenValues,
                       apply_identity_policy, identity_values, name_derived_firmware_uuid, needs_identities_in_use,
                       normalize_mac)
from .objects import (ALLOW_CLAIM_ADOPTION_ANNOTATION, CREATED_FOR_DATA_VOLUME_ANNOTATION, OWNER_REFERENCES_ANNOTATION,
                      POD_PHASE_ANNOTATION, POPULATED_FOR_ANNOTATION, POPULATOR_PROGRESS_ANNOTATION,
                      POPULATOR_PROGRESS_DONE, PREPOPULATED_ANNOTATION, RESTORE, RESTORE_LABEL,
                      RESTORE_MODE_NAMESPACE_LABEL, VELERO_RESTORE_LABEL, VM_GENERATION_ANNOTATION, VM_OWNER_KINDS,
                      Change, Decision, Obj, owner_references, set_aside_owners)
from .restore import (CDI_POPULATOR_SOURCES, PVC_BINDING_ANNOTATIONS, PVC_PROVISIONER_ANNOTATIONS,
                      RESTRICTED_VMI_LABELS, SERVER_SET_METADATA, RestoreContext, Restored, bindable_pvc,
                      data_volume_data_restored, drop_pvc_binding_annotations, pvc_from_snapshot,
                      remap_owner_references, restore_object, sanitize_metadata, set_aside_owner_references,
                      strip_restricted_vmi_labels)

__all__ = [
    "DEFAULT_SYSTEM_NAMESPACES", "SYSTEM_SERVICE_ACCOUNT_NAMES", "in_restore_context", "is_system_request",
    "claim_brings_its_data", "copy_revision_names", "data_volume_from_template", "data_volume_owner", "data_volume_succeeded",
    "export_object", "is_shared", "mark_populated_for", "mark_prepopulated", "populated_with_evidence",
    "restore_decision", "synthesized_data_volumes", "unmark_populated_for", "unmark_prepopulated",
    "FirmwarePolicy", "IdentitiesInUse", "IdentityPolicies", "MacPolicy", "TakenValues", "apply_identity_policy",
    "identity_values",
    "name_derived_firmware_uuid", "needs_identities_in_use", "normalize_mac",
    "ALLOW_CLAIM_ADOPTION_ANNOTATION", "CREATED_FOR_DATA_VOLUME_ANNOTATION", "OWNER_REFERENCES_ANNOTATION",
    "POD_PHASE_ANNOTATION", "POPULATED_FOR_ANNOTATION", "POPULATOR_PROGRESS_ANNOTATION", "POPULATOR_PROGRESS_DONE",
    "PREPOPULATED_ANNOTATION", "RESTORE", "RESTORE_LABEL", "RESTORE_MODE_NAMESPACE_LABEL", "VELERO_RESTORE_LABEL",
    "VM_GENERATION_ANNOTATION", "VM_OWNER_KINDS", "Change", "Decision", "Obj", "owner_references",
    "set_aside_owners",
    "CDI_POPULATOR_SOURCES", "PVC_BINDING_ANNOTATIONS", "PVC_PROVISIONER_ANNOTATIONS", "RESTRICTED_VMI_LABELS",
    "SERVER_SET_METADATA", "RestoreContext", "Restored", "bindable_pvc", "data_volume_data_restored",
    "drop_pvc_binding_annotations", "pvc_from_snapshot", "remap_owner_references", "restore_object",
    "sanitize_metadata", "set_aside_owner_references", "strip_restricted_vmi_labels",
]

"""Every backup and restore rule, each in one function, called alike by export, restore and the webhook.

Split by the integration guide's sections: ``export`` (backup actions), ``restore`` (restore actions), ``identity``
(MAC and firmware collisions), ``context`` (which requests are restores). Rules take an object and return a changed
copy (or a ``Decision``); nothing here does I/O. docs/rules.md lists every rule, why, and its upstream source.

Names load their section on first use (PEP 562): the CLI's parser and ``--help`` need a constant or two, not every
rule and what the rules import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: each public name, by the section (submodule) that defines it
_SECTIONS: dict[str, tuple[str, ...]] = {
    "context": (
        "DEFAULT_SYSTEM_NAMESPACES", "SYSTEM_SERVICE_ACCOUNT_NAMES", "in_restore_context", "is_system_request",
    ),
    "export": (
        "claim_brings_its_data", "copy_revision_names", "data_volume_from_template", "data_volume_owner",
        "data_volume_succeeded", "export_object", "is_shared", "mark_populated_for", "mark_prepopulated",
        "populated_with_evidence", "restore_decision", "synthesized_data_volumes", "unmark_populated_for",
        "unmark_prepopulated",
    ),
    "identity": (
        "FirmwarePolicy", "IdentitiesInUse", "IdentityPolicies", "MacPolicy", "TakenValues",
        "apply_identity_policy", "identity_values", "name_derived_firmware_uuid", "needs_identities_in_use",
        "normalize_mac",
    ),
    "objects": (
        "ALLOW_CLAIM_ADOPTION_ANNOTATION", "CREATED_FOR_DATA_VOLUME_ANNOTATION",
        "OWNER_REFERENCES_ANNOTATION", "POD_PHASE_ANNOTATION", "POPULATED_FOR_ANNOTATION",
        "POPULATOR_PROGRESS_ANNOTATION", "POPULATOR_PROGRESS_DONE", "PREPOPULATED_ANNOTATION", "RESTORE",
        "RESTORE_LABEL", "RESTORE_MODE_NAMESPACE_LABEL", "VELERO_RESTORE_LABEL", "VM_GENERATION_ANNOTATION",
        "VM_OWNER_KINDS", "Change", "Decision", "Obj", "owner_references", "set_aside_owners",
    ),
    "restore": (
        "CDI_POPULATOR_SOURCES", "PVC_BINDING_ANNOTATIONS", "PVC_PROVISIONER_ANNOTATIONS",
        "RESTRICTED_VMI_LABELS", "SERVER_SET_METADATA", "RestoreContext", "Restored", "bindable_pvc",
        "data_volume_data_restored", "drop_pvc_binding_annotations", "pvc_from_snapshot",
        "remap_owner_references", "restore_object", "sanitize_metadata", "set_aside_owner_references",
        "strip_restricted_vmi_labels",
    ),
}
_SECTION_OF = {name: section for section, names in _SECTIONS.items() for name in names}
__all__ = list(_SECTION_OF)


def __getattr__(name: str) -> Any:
    section = _SECTION_OF.get(name)
    if section is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{section}", __name__), name)
    globals()[name] = value  # later uses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

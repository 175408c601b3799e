"""Restore context: which objects are being restored (and so get the restore rules) and whose creates are
KubeVirt's and CDI's own normal operation."""

from __future__ import annotations

from .objects import RESTORE_LABEL, RESTORE_MODE_NAMESPACE_LABEL, VELERO_RESTORE_LABEL, Obj

#: Service accounts of KubeVirt and CDI (any install namespace): their own creates are never touched.
SYSTEM_SERVICE_ACCOUNT_NAMES = (
    "kubevirt-controller", "kubevirt-handler", "kubevirt-apiserver", "kubevirt-operator",
    "cdi-sa", "cdi-apiserver", "cdi-operator", "cdi-cronjob", "cdi-uploadproxy",
)


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

"""Restore context: which objects are being restored (and so get the restore rules) and whose creates are
KubeVirt's and CDI's own normal operation."""

from __future__ import annotations

from typing import Collection

from .objects import RESTORE_LABEL, RESTORE_MODE_NAMESPACE_LABEL, VELERO_RESTORE_LABEL, Obj

#: Service accounts of KubeVirt and CDI: their own creates are never touched, when they come from a namespace where
#: KubeVirt or CDI is installed (anyone can create a ServiceAccount of that name in their own namespace).
SYSTEM_SERVICE_ACCOUNT_NAMES = (
    "kubevirt-controller", "kubevirt-handler", "kubevirt-apiserver", "kubevirt-operator",
    "cdi-sa", "cdi-apiserver", "cdi-operator", "cdi-cronjob", "cdi-uploadproxy",
)
#: where KubeVirt and CDI are installed: upstream manifests (kubevirt, cdi) and OpenShift Virtualization (openshift-cnv)
DEFAULT_SYSTEM_NAMESPACES = ("kubevirt", "cdi", "openshift-cnv")


def in_restore_context(obj: Obj, namespace_labels: dict[str, str] | None) -> bool:
    """Only objects being restored are changed: labelled by kvbackup or Velero, or in a namespace opted in."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if RESTORE_LABEL in labels or VELERO_RESTORE_LABEL in labels:
        return True
    return (namespace_labels or {}).get(RESTORE_MODE_NAMESPACE_LABEL) == "enabled"


def is_system_request(username: str, system_namespaces: Collection[str]) -> bool:
    """KubeVirt's and CDI's own controllers, in the namespaces they are installed in: their creates are normal
    operation, never a restore."""
    prefix = "system:serviceaccount:"
    if not username.startswith(prefix):
        return False
    namespace, _, account = username[len(prefix):].partition(":")
    return namespace in system_namespaces and account in SYSTEM_SERVICE_ACCOUNT_NAMES

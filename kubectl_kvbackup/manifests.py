"""The webhook's install manifests, from one source: ``webhook render``/``install`` and deploy/base agree (tested).

Choices that matter for the cluster (docs/webhook.md explains each):
- three webhooks, one per way an object enters the restore context, so each object is reviewed at most once;
- failurePolicy Fail: a restore that skips the rules silently corrupts disks (CDI re-imports over restored data),
  while only restore-context objects are ever sent here, and KubeVirt's and CDI's own requests are filtered out
  before the call (matchConditions), so an outage can delay a restore but never a normal VM start;
- timeoutSeconds 5: answers take milliseconds and cluster lookups are bounded at 2 s;
- the webhook's own namespace and kube-system are never reviewed, so it can always be repaired.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from . import __version__, rules
from .certs import TLSMaterial, service_dns_names
from .kinds import Kind

Obj = dict[str, Any]

NAME = "kvbackup-webhook"
CONFIGURATION_NAME = "kvbackup-restore-rules"
SECRET_NAME = "kvbackup-webhook-tls"
DEFAULT_NAMESPACE = "kvbackup-system"
DEFAULT_IMAGE = f"ghcr.io/kvbackup/kvbackup-webhook:{__version__}"
PORT = 8443
METRICS_PORT = 9443  # /metrics only, TLS with the serving certificate
CERT_DIR = "/etc/kvbackup-webhook/tls"
TIMEOUT_SECONDS = 5
#: namespaces the webhook must not take: it never reviews its own namespace
RESERVED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubectl-kvbackup"}
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "kvbackup"}
SELECTOR = {"app.kubernetes.io/name": NAME}
UID = 65532  # the image's non-root user

#: the REST resources of what is rendered, for install/uninstall
RESOURCES = {(k.api_version, k.kind): k for k in (
    Kind("", "v1", "Namespace", "namespaces", namespaced=False),
    Kind("", "v1", "ServiceAccount", "serviceaccounts"),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    Kind("", "v1", "Secret", "secrets"),
    Kind("", "v1", "Service", "services"),
    Kind("apps", "v1", "Deployment", "deployments"),
    Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations",
         namespaced=False),
)}


@dataclass(frozen=True)
class Settings:
    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_IMAGE
    identity_policy: str = rules.IdentityPolicy.CLEAR_ON_COLLISION.value


def _meta(name: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = {**LABELS, **(labels or {})}
    return meta


def _cluster_role() -> Obj:
    """Least privilege, read-only; each rule is a lookup the restore rules need (docs/webhook.md, RBAC)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(NAME),
        "rules": [
            # restore-mode label of the object's namespace
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
            # owner UIDs of restored objects, and a DataVolume's already restored PVC
            {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get"]},
            {"apiGroups": ["cdi.kubevirt.io"], "resources": ["datavolumes"], "verbs": ["get"]},
            {"apiGroups": ["kubevirt.io"], "resources": ["virtualmachineinstancereplicasets"], "verbs": ["get"]},
            {"apiGroups": ["pool.kubevirt.io"], "resources": ["virtualmachinepools"], "verbs": ["get"]},
            {"apiGroups": ["apps"], "resources": ["replicasets", "statefulsets", "daemonsets"], "verbs": ["get"]},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
            # owners, and the MAC addresses, serials and UUIDs in use (clear-on-collision)
            {"apiGroups": ["kubevirt.io"], "resources": ["virtualmachines", "virtualmachineinstances"],
             "verbs": ["get", "list"]},
        ],
    }


def _deployment(settings: Settings) -> Obj:
    container = {
        "name": "webhook", "image": settings.image, "imagePullPolicy": "IfNotPresent",
        "env": [
            {"name": "KVBACKUP_WEBHOOK_WORKERS", "value": "2"},
            {"name": "KVBACKUP_WEBHOOK_THREADS", "value": "4"},
            {"name": "KVBACKUP_WEBHOOK_IDENTITY_POLICY", "value": settings.identity_policy},
            {"name": "KVBACKUP_WEBHOOK_CERT_DIR", "value": CERT_DIR},
            {"name": "KVBACKUP_WEBHOOK_TMP_DIR", "value": "/tmp"},
        ],
        "ports": [{"name": "https", "containerPort": PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        # probes share the worker threads with admission calls, which may wait up to ~4.5 s on a slow API server:
        # a busy restore must not fail liveness and restart the webhook in the middle of it
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
                           "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "https", "scheme": "HTTPS"},
                          "initialDelaySeconds": 5, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
        # measured (benchmarks/bench_webhook.py): master 54 MiB, each worker 48 MiB idle and at most 143 MiB while
        # judging the largest bodies the API server sends, so 340 MiB at worst; the CPU limit leaves room for bursts
        # of a restore's admission calls
        "resources": {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tls", "mountPath": CERT_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME, settings.namespace),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": dict(SELECTOR)},
            # a new pod is ready before an old one goes: the webhook never has fewer than 2 replicas in a rollout
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": dict(SELECTOR)},
                                                            "topologyKey": "kubernetes.io/hostname"}}]}},
                    "containers": [container],
                    "volumes": [
                        # 0440 with fsGroup: readable by the webhook's group only, never world-readable
                        {"name": "tls", "secret": {"secretName": SECRET_NAME, "defaultMode": 0o440}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                    ],
                },
            },
        },
    }


def match_condition() -> Obj:
    """KubeVirt's and CDI's own service accounts never reach the webhook (the webhook re-checks anyway)."""
    accounts = "|".join(rules.SYSTEM_SERVICE_ACCOUNT_NAMES)
    return {"name": "not-kubevirt-or-cdi",
            "expression": f"!request.userInfo.username.matches('^system:serviceaccount:[^:]+:({accounts})$')"}


def _webhooks(settings: Settings) -> list[Obj]:
    not_excluded = {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": sorted({settings.namespace, "kube-system"})}
    restore_mode = {"key": rules.RESTORE_MODE_NAMESPACE_LABEL, "operator": "In", "values": ["enabled"]}

    def label(key: str, operator: str) -> Obj:
        return {"key": key, "operator": operator}

    # Each object is reviewed once: by its kvbackup label, else its Velero label, else its namespace's opt-in.
    selections = (
        ("restore-label", [label(rules.RESTORE_LABEL, "Exists")], [not_excluded]),
        ("velero-restore", [label(rules.VELERO_RESTORE_LABEL, "Exists"), label(rules.RESTORE_LABEL, "DoesNotExist")],
         [not_excluded]),
        ("restore-mode-namespace", [label(rules.RESTORE_LABEL, "DoesNotExist"),
                                    label(rules.VELERO_RESTORE_LABEL, "DoesNotExist")], [not_excluded, restore_mode]),
    )
    return [{
        "name": f"{name}.kvbackup.kubevirt.io",
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {"name": NAME, "namespace": settings.namespace, "path": "/mutate", "port": 443}},
        "rules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods", "persistentvolumeclaims"],
             "operations": ["CREATE"], "scope": "Namespaced"},
            {"apiGroups": ["kubevirt.io"], "apiVersions": ["*"],
             "resources": ["virtualmachines", "virtualmachineinstances"], "operations": ["CREATE"],
             "scope": "Namespaced"},
            {"apiGroups": ["cdi.kubevirt.io"], "apiVersions": ["*"], "resources": ["datavolumes"],
             "operations": ["CREATE"], "scope": "Namespaced"},
        ],
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": TIMEOUT_SECONDS,
        "reinvocationPolicy": "Never",
        "objectSelector": {"matchExpressions": object_expressions},
        "namespaceSelector": {"matchExpressions": namespace_expressions},
        "matchConditions": [match_condition()],
    } for name, object_expressions, namespace_expressions in selections]


def render(settings: Settings, tls: TLSMaterial | None = None) -> list[Obj]:
    """Every object of an install, in apply order (the webhook registration last, once its server exists).
    Without ``tls``, the Secret and caBundle are left out: cert-manager (or ``install``) provides them."""
    if settings.namespace in RESERVED_NAMESPACES:
        raise ValueError(f"the webhook never reviews its own namespace: install it in a namespace of its own, not "
                         f"{settings.namespace}")
    ns = settings.namespace
    objects: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns, labels=MANAGED_BY)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, ns)},
        _cluster_role(),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(NAME),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]},
    ]
    if tls is not None:
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": _meta(SECRET_NAME, ns),
                        "type": "kubernetes.io/tls",
                        "data": {key: base64.b64encode(value).decode() for key, value in
                                 (("tls.crt", tls.cert_pem), ("tls.key", tls.key_pem), ("ca.crt", tls.ca_pem))}})
    objects += [
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(NAME, ns),
         "spec": {"selector": dict(SELECTOR), "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}},
        _deployment(settings),
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(NAME, ns),
         "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(SELECTOR)}}},
    ]
    webhooks = _webhooks(settings)
    if tls is not None:
        for webhook in webhooks:
            webhook["clientConfig"]["caBundle"] = base64.b64encode(tls.ca_pem).decode()
    objects.append({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                    "metadata": _meta(CONFIGURATION_NAME), "webhooks": webhooks})
    return objects


def dns_names(settings: Settings) -> list[str]:
    return service_dns_names(NAME, settings.namespace)

"""The webhook's install manifests, from one source: ``webhook render``/``install`` and deploy/base agree (tested).

Choices that matter for the cluster (docs/webhook.md explains each):
- three webhooks, one per way an object enters the restore context, so each object is reviewed at most once;
- failurePolicy Fail: a restore that skips the rules silently corrupts disks (CDI re-imports over restored data),
  while only restore-context objects are ever sent here, and KubeVirt's and CDI's own requests are filtered out
  before the call (matchConditions), so an outage can delay a restore but never a normal VM start;
- timeoutSeconds 5: answers take milliseconds and cluster lookups are bounded at 2 s;
- the webhook's own namespace and kube-system are never reviewed, so it can always be repaired;
- the configuration's name sorts before every other mutating configuration that touches these kinds, and the
  webhooks are reinvoked when a later one changes the object (CONFIGURATION_NAME);
- a NetworkPolicy admits the API server to the webhook port and chosen namespaces to the metrics port, nothing else.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from . import __version__, rules
from .certs import TLSMaterial, service_dns_names
from .kinds import Kind

Obj = dict[str, Any]

NAME = "kvbackup-webhook"
#: kube-apiserver calls mutating configurations one after the other in the order of their names (sort by name in
#: kubernetes staging/src/k8s.io/apiserver/pkg/admission/configuration/mutating_webhook_manager.go). Ours must run
#: first: CDI's clone authorization (cdi-api-datavolume-mutate) must see prePopulated, KubeMacPool
#: (kubemacpool-mutator) the MAC address we chose. "00-" sorts before every letter, so before every configuration of
#: the ecosystem (tests/test_webhook_order.py lists them with their sources); reinvocationPolicy IfNeeded runs our
#: rules again should a later webhook change the object.
CONFIGURATION_NAME = "00-kvbackup-restore-rules"
#: names earlier releases used, removed by ``install`` when they are ours
LEGACY_CONFIGURATION_NAMES = ("kvbackup-restore-rules",)
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
DEFAULT_SYSTEM_NAMESPACES = rules.DEFAULT_SYSTEM_NAMESPACES
#: where Prometheus usually runs: kube-prometheus (monitoring) and OpenShift's cluster monitoring
DEFAULT_METRICS_NAMESPACES = ("monitoring", "openshift-monitoring")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

#: the REST resources of what is rendered, for install/uninstall
RESOURCES = {(k.api_version, k.kind): k for k in (
    Kind("", "v1", "Namespace", "namespaces", namespaced=False),
    Kind("", "v1", "ServiceAccount", "serviceaccounts"),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    Kind("", "v1", "Secret", "secrets"),
    Kind("", "v1", "Service", "services"),
    Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    Kind("apps", "v1", "Deployment", "deployments"),
    Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations",
         namespaced=False),
)}


@dataclass(frozen=True)
class Settings:
    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_IMAGE
    identity: rules.IdentityPolicies = field(default_factory=lambda: rules.IdentityPolicies())
    system_namespaces: tuple[str, ...] = DEFAULT_SYSTEM_NAMESPACES
    metrics_namespaces: tuple[str, ...] = DEFAULT_METRICS_NAMESPACES


def cluster_role_name(namespace: str) -> str:
    """The ClusterRole and its binding are named after the webhook's namespace: an install in another namespace
    has permissions of its own and never re-points the binding of the first."""
    return f"{NAME}-{namespace}"


def _meta(name: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = {**LABELS, **(labels or {})}
    return meta


def _cluster_role(settings: Settings) -> Obj:
    """Least privilege, read-only; each rule is a lookup the restore rules need (docs/webhook.md, RBAC)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": _meta(cluster_role_name(settings.namespace)),
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
            # owners, and the MAC addresses, serials and UUIDs in use cluster-wide when a collision policy needs them
            {"apiGroups": ["kubevirt.io"], "resources": ["virtualmachines", "virtualmachineinstances"],
             "verbs": ["get", "list", "watch"] if settings.identity.needs_cluster_identities else ["get"]},
        ],
    }


def _deployment(settings: Settings) -> Obj:
    container = {
        "name": "webhook", "image": settings.image, "imagePullPolicy": "IfNotPresent",
        "env": [
            {"name": "KVBACKUP_WEBHOOK_WORKERS", "value": "2"},
            {"name": "KVBACKUP_WEBHOOK_THREADS", "value": "16"},
            {"name": "KVBACKUP_WEBHOOK_MAC_POLICY", "value": settings.identity.mac.value},
            {"name": "KVBACKUP_WEBHOOK_FIRMWARE_POLICY", "value": settings.identity.firmware.value},
            {"name": "KVBACKUP_WEBHOOK_CERT_DIR", "value": CERT_DIR},
            {"name": "KVBACKUP_WEBHOOK_TMP_DIR", "value": "/tmp"},
            {"name": "KVBACKUP_WEBHOOK_METRICS_BIND", "value": f"0.0.0.0:{METRICS_PORT}"},
            {"name": "KVBACKUP_WEBHOOK_SYSTEM_NAMESPACES", "value": ",".join(settings.system_namespaces)},
        ],
        # /metrics only on its own port, which the NetworkPolicy opens to the monitoring namespaces alone
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


def match_condition(system_namespaces: tuple[str, ...]) -> Obj:
    """KubeVirt's and CDI's own service accounts never reach the webhook (the webhook re-checks anyway) — only those
    of the namespaces they are installed in: a same-named account in a tenant's namespace gets no pass."""
    accounts = "|".join(rules.SYSTEM_SERVICE_ACCOUNT_NAMES)
    namespaces = "|".join(system_namespaces)  # DNS labels: nothing to escape in the regular expression
    return {"name": "not-kubevirt-or-cdi",
            "expression": f"!request.userInfo.username.matches('^system:serviceaccount:({namespaces}):({accounts})$')"}


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
        "reinvocationPolicy": "IfNeeded",
        "objectSelector": {"matchExpressions": object_expressions},
        "namespaceSelector": {"matchExpressions": namespace_expressions},
        "matchConditions": [match_condition(settings.system_namespaces)],
    } for name, object_expressions, namespace_expressions in selections]


def _network_policy(settings: Settings) -> Obj:
    """Ingress to the webhook's pods: the webhook port from anywhere, since kube-apiserver calls it from addresses
    no pod or namespace selector matches (control-plane hosts, differing per cluster); the metrics port only from
    the monitoring namespaces (``kubernetes.io/metadata.name`` is set by the API server, so no tenant can claim one);
    every other port from nowhere. Egress stays open: the lookups go to the API server, whose address a policy
    cannot name portably either."""
    ingress: list[Obj] = [{"ports": [{"protocol": "TCP", "port": PORT}]}]
    if settings.metrics_namespaces:
        ingress.append({"from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(settings.metrics_namespaces)}]}}],
            "ports": [{"protocol": "TCP", "port": METRICS_PORT}]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(NAME, settings.namespace),
            "spec": {"podSelector": {"matchLabels": dict(SELECTOR)}, "policyTypes": ["Ingress"], "ingress": ingress}}


def _check(settings: Settings) -> None:
    if settings.namespace in RESERVED_NAMESPACES:
        raise ValueError(f"the webhook never reviews its own namespace: install it in a namespace of its own, not "
                         f"{settings.namespace}")
    for flag, names in (("--namespace", (settings.namespace,)), ("--system-namespaces", settings.system_namespaces),
                        ("--metrics-namespaces", settings.metrics_namespaces)):
        for name in names:
            if not _DNS_LABEL.fullmatch(name):
                raise ValueError(f"{flag}: {name!r} is not a namespace name (lower-case letters, digits and '-', "
                                 f"at most 63)")


def render(settings: Settings, tls: TLSMaterial | None = None) -> list[Obj]:
    """Every object of an install, in apply order (the webhook registration last, once its server exists).
    Without ``tls``, the Secret and caBundle are left out: cert-manager (or ``install``) provides them."""
    _check(settings)
    ns = settings.namespace
    objects: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns, labels=MANAGED_BY)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, ns)},
        _cluster_role(settings),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta(cluster_role_name(ns)),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role_name(ns)},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]},
    ]
    if tls is not None:
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": _meta(SECRET_NAME, ns),
                        "type": "kubernetes.io/tls",
                        "data": {key: base64.b64encode(value).decode() for key, value in
                                 (("tls.crt", tls.cert_pem), ("tls.key", tls.key_pem), ("ca.crt", tls.ca_pem))}})
    objects += [
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(NAME, ns),
         "spec": {"selector": dict(SELECTOR), "ports": [{"name": "https", "port": 443, "targetPort": "https"},
                                                        {"name": "metrics", "port": METRICS_PORT,
                                                         "targetPort": "metrics"}]}},
        _network_policy(settings),
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

"""``kubectl kvbackup webhook install|uninstall|render``: the restore-rules admission webhook in a cluster."""

from __future__ import annotations

import argparse
import base64
import re
import sys
import time
from typing import Any, Callable

from .. import certs, manifests, rules
from ..cluster import ApiError, Connection, KubeError, connect, object_path
from .common import (FIRMWARE_POLICIES, MAC_POLICIES, UsageError, add_connection_flags, connection_options,
                     parse_duration)

FIELD_MANAGER = "kubectl-kvbackup"
EXAMPLES = """examples:
  # everything a cluster admin needs
  kubectl kvbackup webhook render | kubectl apply -f -
  # or let the plugin apply it (keeps a still-valid certificate on re-install)
  kubectl kvbackup webhook install --image registry.example/kvbackup-webhook:0.1.0 -n kvbackup-system
  # manifests for GitOps with cert-manager providing the certificate (see deploy/overlays/cert-manager)
  kubectl kvbackup webhook render --without-tls
  kubectl kvbackup webhook uninstall
"""


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "webhook",
        description="The restore-rules admission webhook applies KubeVirt's restore rules to objects restored by any "
                    "tool (Velero, GitOps, kubectl apply), cluster-side.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", parser_class=type(parser))
    for name, run_action, help_text in (
            ("render", run_render, "print the manifests (with a new CA and certificate) for kubectl apply -f -"),
            ("install", run_install, "create or update the webhook in the cluster"),
            ("uninstall", run_uninstall, "remove the webhook from the cluster")):
        action = actions.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        action.add_argument("-n", "--namespace", default=manifests.DEFAULT_NAMESPACE,
                            help=f"the webhook's own namespace (default: {manifests.DEFAULT_NAMESPACE})")
        if name != "uninstall":
            action.add_argument("--system-namespaces", type=_namespaces, metavar="NS,NS",
                                default=manifests.DEFAULT_SYSTEM_NAMESPACES,
                                help="where KubeVirt and CDI are installed: their service accounts there are never "
                                     f"reviewed (default: {','.join(manifests.DEFAULT_SYSTEM_NAMESPACES)})")
            action.add_argument("--metrics-namespaces", type=_namespaces, metavar="NS,NS",
                                default=manifests.DEFAULT_METRICS_NAMESPACES,
                                help="namespaces the NetworkPolicy lets reach the metrics port; empty: none "
                                     f"(default: {','.join(manifests.DEFAULT_METRICS_NAMESPACES)})")
            action.add_argument("--image", default=manifests.DEFAULT_IMAGE,
                                help=f"the webhook image (default: {manifests.DEFAULT_IMAGE})")
            action.add_argument("--mac-policy", choices=MAC_POLICIES,
                                default="regenerate-on-collision",
                                help="restored MAC addresses: keep them, replace those already in use by new stable "
                                     "ones (default), replace all, or clear them")
            action.add_argument("--firmware-policy", choices=FIRMWARE_POLICIES,
                                default="regenerate-on-collision",
                                help="restored firmware serial and UUID: keep them, regenerate those already in use "
                                     "(default; a UUID KubeVirt derived from the VM name never counts), or always "
                                     "regenerate them")
        if name == "render":
            action.add_argument("--without-tls", action="store_true",
                                help="leave out the Secret and caBundle (cert-manager provides them)")
        else:
            add_connection_flags(action)
        if name == "install":
            action.add_argument("--timeout", default="5m", metavar="DURATION",
                                help="how long to wait for the webhook's Deployment to be available before the "
                                     "webhook is registered (e.g. 90s, 10m; 0: no limit; default 5m)")
        action.set_defaults(run=run_action)
    parser.set_defaults(run=lambda args: (parser.print_help(sys.stderr), 2)[1])


def _namespaces(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _settings(args: argparse.Namespace) -> manifests.Settings:
    identity = rules.IdentityPolicies.parse(getattr(args, "mac_policy", "regenerate-on-collision"),
                                            getattr(args, "firmware_policy", "regenerate-on-collision"))
    return manifests.Settings(namespace=args.namespace, image=getattr(args, "image", manifests.DEFAULT_IMAGE),
                              identity=identity,
                              system_namespaces=getattr(args, "system_namespaces",
                                                        manifests.DEFAULT_SYSTEM_NAMESPACES),
                              metrics_namespaces=getattr(args, "metrics_namespaces",
                                                         manifests.DEFAULT_METRICS_NAMESPACES))


def _render(settings: manifests.Settings, tls: certs.TLSMaterial | None) -> list[dict[str, Any]]:
    try:
        return manifests.render(settings, tls)
    except ValueError as error:
        raise UsageError(f"error: {error}") from None


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Objects that share a dict or list (one selector in three webhooks) are written out each time: anchors and
    aliases (``&id001``) are valid YAML, but many tools that read manifests do not resolve them."""
    import yaml

    class PlainDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump_all(objects, Dumper=PlainDumper, sort_keys=False, default_flow_style=False)


def run_render(args: argparse.Namespace) -> int:
    settings = _settings(args)
    tls = None if args.without_tls else certs.issue(manifests.dns_names(settings))
    sys.stdout.write(to_yaml(_render(settings, tls)))
    return 0


def _path(obj: dict[str, Any]) -> str:
    kind = manifests.RESOURCES[(obj["apiVersion"], obj["kind"])]
    meta = obj["metadata"]
    return object_path(kind, kind.version, meta.get("namespace", ""), meta["name"])


def _get(connection: Connection, path: str) -> dict[str, Any] | None:
    try:
        return connection.request("GET", path)
    except ApiError as error:
        if error.status == 404:
            return None
        raise


def _installed_tls(connection: Connection, settings: manifests.Settings) -> certs.TLSMaterial | None:
    """The certificate material in the cluster's Secret, if any."""
    secret = _get(connection, _path({"apiVersion": "v1", "kind": "Secret",
                                     "metadata": {"name": manifests.SECRET_NAME, "namespace": settings.namespace}}))
    data = (secret or {}).get("data") or {}
    try:
        return certs.TLSMaterial(*(base64.b64decode(data[key]) for key in ("ca.crt", "tls.crt", "tls.key")))
    except (KeyError, ValueError):
        return None


MINIMUM_VERSION = (1, 28)  # matchConditions, which keep KubeVirt's and CDI's own requests away from the webhook


def parse_server_version(info: dict[str, Any]) -> tuple[int, int] | None:
    """(major, minor) of a /version answer. ``gitVersion`` first: managed clusters suffix ``minor`` ("28+") and some
    builds leave ``major``/``minor`` empty, while gitVersion is always ``v1.30.2`` with at most a suffix
    (``-eks-…``, ``+k3s1``)."""
    found = re.match(r"v?(\d+)\.(\d+)", str(info.get("gitVersion") or ""))
    if found:
        return int(found.group(1)), int(found.group(2))
    major, minor = (re.match(r"\d+", str(info.get(key) or "")) for key in ("major", "minor"))
    return (int(major.group()), int(minor.group())) if major and minor else None


def require_match_conditions(connection: Connection) -> None:
    """On an older API server the configuration is refused (or, on some, matchConditions dropped silently and VM
    starts would reach the webhook): check before anything is created."""
    info = connection.request("GET", "/version")
    version = parse_server_version(info)
    wanted = ".".join(map(str, MINIMUM_VERSION))
    if version is None:
        raise KubeError(f"error: cannot tell which Kubernetes version the cluster runs (/version says gitVersion "
                        f"{info.get('gitVersion')!r}, major {info.get('major')!r}, minor {info.get('minor')!r}); "
                        f"the webhook needs {wanted} or newer (matchConditions): nothing was installed")
    if version < MINIMUM_VERSION:
        raise KubeError(f"error: the webhook needs Kubernetes {wanted} or newer (matchConditions); this cluster runs "
                        f"{info.get('gitVersion') or '.'.join(map(str, version))}: nothing was installed")


def _registered_namespace(configuration: dict[str, Any]) -> str:
    """The namespace whose Service a registration calls."""
    for webhook in configuration.get("webhooks") or []:
        return ((webhook.get("clientConfig") or {}).get("service") or {}).get("namespace") or ""
    return ""


def _require_installable(connection: Connection, settings: manifests.Settings) -> None:
    """What would make an install fail half way, or take the registration from another install, refused first."""
    require_match_conditions(connection)
    configuration = _get(connection, _path(_registration_ref(manifests.CONFIGURATION_NAME)))
    elsewhere = _registered_namespace(configuration or {})
    if elsewhere and elsewhere != settings.namespace:
        raise KubeError(f"error: the webhook is already installed in namespace {elsewhere}: one cluster has one "
                        f"registration; uninstall it there first (kubectl kvbackup webhook uninstall -n {elsewhere}), "
                        f"or install into {elsewhere}: nothing was installed")
    namespace = _get(connection, _path({"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": settings.namespace}}))
    if namespace is not None and (namespace.get("status") or {}).get("phase") == "Terminating":
        raise KubeError(f"error: namespace {settings.namespace} is being deleted: wait until it is gone (kubectl wait "
                        f"--for=delete namespace/{settings.namespace}) and install again: nothing was installed")


def _registration_ref(name: str) -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name}}


def deployment_available(deployment: dict[str, Any]) -> bool:
    """Rolled out as ``kubectl rollout status`` means it: the controller saw the current spec, every replica runs
    it, none of an older one is left, and all are available."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = spec.get("replicas", 1)
    return (status.get("observedGeneration", 0) >= (deployment.get("metadata") or {}).get("generation", 1)
            and status.get("updatedReplicas", 0) >= wanted
            and status.get("replicas", 0) <= status.get("updatedReplicas", 0)
            and status.get("availableReplicas", 0) >= status.get("updatedReplicas", 0) > 0)


POLL_SECONDS = 2.0


def wait_until_available(connection: Connection, deployment: dict[str, Any], timeout: float | None,
                         sleep: Callable[[float], None] = time.sleep) -> None:
    """Until the Deployment is rolled out; KubeError after ``timeout`` seconds (None: no limit)."""
    path = _path(deployment)
    name = f"{deployment['metadata']['namespace']}/{deployment['metadata']['name']}"
    deadline = None if timeout is None else time.monotonic() + timeout
    print(f"waiting for deployment {name} to be available", file=sys.stderr)
    while True:
        current = _get(connection, path)
        if current is not None and deployment_available(current):
            return
        if deadline is not None and time.monotonic() >= deadline:
            status = (current or {}).get("status") or {}
            raise KubeError(f"error: deployment {name} is not available after {timeout:g}s "
                            f"({status.get('availableReplicas', 0)} of {deployment['spec']['replicas']} replicas "
                            f"available): the webhook was not registered, so nothing in the cluster waits on it; "
                            f"see kubectl -n {deployment['metadata']['namespace']} get pods, then install again "
                            f"(--timeout to wait longer)")
        sleep(POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))


def _apply(connection: Connection, obj: dict[str, Any]) -> None:
    # server-side apply: creates or updates, and CRD-free kinds and webhooks alike accept it
    connection.request("PATCH", _path(obj), query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                       body=obj, content_type="application/apply-patch+yaml")
    print(f"{obj['kind'].lower()}/{obj['metadata']['name']} serverside-applied")


def _delete(connection: Connection, obj: dict[str, Any]) -> None:
    try:
        connection.request("DELETE", _path(obj))
        print(f"{obj['kind'].lower()}/{obj['metadata']['name']} deleted")
    except ApiError as error:
        if error.status != 404:
            raise


def _legacy_objects(connection: Connection, settings: manifests.Settings) -> list[dict[str, Any]]:
    """What an earlier release installed for this namespace under names since changed: the registration (now named
    to sort first) and the ClusterRole and binding (now named after the namespace)."""
    found = []
    for name in manifests.LEGACY_CONFIGURATION_NAMES:
        configuration = _get(connection, _path(_registration_ref(name)))
        if (configuration and _labelled(configuration, manifests.LABELS)
                and _registered_namespace(configuration) == settings.namespace):
            found.append(configuration)
    rbac = "rbac.authorization.k8s.io/v1"
    binding = _get(connection, _path({"apiVersion": rbac, "kind": "ClusterRoleBinding",
                                      "metadata": {"name": manifests.NAME}}))
    if binding and _labelled(binding, manifests.LABELS) and any(
            subject.get("namespace") == settings.namespace for subject in binding.get("subjects") or []):
        found += [binding, {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": manifests.NAME}}]
    return found


def _labelled(obj: dict[str, Any], wanted: dict[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in wanted.items())


def run_install(args: argparse.Namespace) -> int:
    settings = _settings(args)
    timeout = parse_duration(args.timeout)
    connection = connect(connection_options(args))
    _require_installable(connection, settings)
    installed = _installed_tls(connection, settings)
    # keep a certificate that is still good: re-installing then changes nothing a running webhook relies on
    if installed and certs.still_good(installed.ca_pem, installed.cert_pem, manifests.dns_names(settings)):
        tls, previous_ca = installed, b""
    else:
        tls, previous_ca = certs.issue(manifests.dns_names(settings)), installed.ca_pem if installed else b""
    *objects, registration = _render(settings, tls)
    for obj in objects:
        if obj["kind"] == "Namespace":
            existing = _get(connection, _path(obj))
            if existing is not None and not _labelled(existing, manifests.MANAGED_BY):
                print(f"namespace/{obj['metadata']['name']} exists, left as it is")
                continue
        _apply(connection, obj)
    # failurePolicy Fail with no ready endpoint would refuse every matching create in the cluster: register the
    # webhook only once its pods answer
    wait_until_available(connection, next(o for o in objects if o["kind"] == "Deployment"), timeout)
    if previous_ca:
        # until kubelet swaps the mounted Secret (up to a minute), the pods still serve the old certificate:
        # the API server trusts both CAs meanwhile; the next install drops the old one
        for webhook in registration["webhooks"]:
            webhook["clientConfig"]["caBundle"] = base64.b64encode(tls.ca_pem + previous_ca).decode()
    legacy = _legacy_objects(connection, settings)
    _apply(connection, registration)
    for obj in legacy:
        _delete(connection, obj)
    return 0


def run_uninstall(args: argparse.Namespace) -> int:
    settings = _settings(args)
    connection = connect(connection_options(args))
    # the registration goes first, so the API server stops calling a webhook that is going away
    for obj in [*_legacy_objects(connection, settings), *reversed(_render(settings, certs.TLSMaterial(b"", b"", b"")))]:
        if obj["kind"] in ("Namespace", "MutatingWebhookConfiguration"):
            existing = _get(connection, _path(obj))
            if existing is None:
                continue
            if obj["kind"] == "Namespace" and not _labelled(existing, manifests.MANAGED_BY):
                continue
            elsewhere = _registered_namespace(existing)
            if obj["kind"] == "MutatingWebhookConfiguration" and elsewhere != settings.namespace:
                print(f"mutatingwebhookconfiguration/{obj['metadata']['name']} belongs to the webhook in namespace "
                      f"{elsewhere}, left as it is")
                continue
        _delete(connection, obj)
    return 0

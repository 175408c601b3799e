"""``kubectl kvbackup webhook install|uninstall|render``: the restore-rules admission webhook in a cluster."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

from .. import certs, manifests, rules
from ..cluster import ApiError, Connection, KubeError, connect, object_path
from .common import UsageError, add_connection_flags, connection_options

FIELD_MANAGER = "kubectl-kvbackup"
EXAMPLES = """examples:
  # everything a cluster admin needs
  kubectl kvbackup webhook render | kubectl apply -f -
  # or let the plugin apply it (keeps a still-valid certificate on re-install)
  kubectl kvbackup webhook install --image registry.example/kvbackup-webhook:0.1.0
  # manifests for GitOps with cert-manager providing the certificate (see deploy/overlays/cert-manager)
  kubectl kvbackup webhook render --without-tls
  kubectl kvbackup webhook uninstall
"""


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "webhook", help="install, uninstall or render the restore-rules admission webhook",
        description="The restore-rules admission webhook applies KubeVirt's restore rules to objects restored by any "
                    "tool (Velero, GitOps, kubectl apply), cluster-side.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", parser_class=type(parser))
    for name, run_action, help_text in (
            ("render", run_render, "print the manifests (with a new CA and certificate) for kubectl apply -f -"),
            ("install", run_install, "create or update the webhook in the cluster"),
            ("uninstall", run_uninstall, "remove the webhook from the cluster")):
        action = actions.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        action.add_argument("--namespace", default=manifests.DEFAULT_NAMESPACE,
                            help=f"the webhook's own namespace (default: {manifests.DEFAULT_NAMESPACE})")
        if name != "uninstall":
            action.add_argument("--image", default=manifests.DEFAULT_IMAGE,
                                help=f"the webhook image (default: {manifests.DEFAULT_IMAGE})")
            action.add_argument("--mac-policy", choices=[p.value for p in rules.MacPolicy],
                                default=rules.MacPolicy.REGENERATE_ON_COLLISION.value,
                                help="restored MAC addresses: keep them, replace those already in use by new stable "
                                     "ones (default), replace all, or clear them")
            action.add_argument("--firmware-policy", choices=[p.value for p in rules.FirmwarePolicy],
                                default=rules.FirmwarePolicy.REGENERATE_ON_COLLISION.value,
                                help="restored firmware serial and UUID: keep them, regenerate those already in use "
                                     "(default; a UUID KubeVirt derived from the VM name never counts), or always "
                                     "regenerate them")
        if name == "render":
            action.add_argument("--without-tls", action="store_true",
                                help="leave out the Secret and caBundle (cert-manager provides them)")
        else:
            add_connection_flags(action)
        action.set_defaults(run=run_action)
    parser.set_defaults(run=lambda args: (parser.print_help(sys.stderr), 2)[1])


def _settings(args: argparse.Namespace) -> manifests.Settings:
    identity = rules.IdentityPolicies(
        rules.MacPolicy(getattr(args, "mac_policy", rules.MacPolicy.REGENERATE_ON_COLLISION.value)),
        rules.FirmwarePolicy(getattr(args, "firmware_policy", rules.FirmwarePolicy.REGENERATE_ON_COLLISION.value)))
    return manifests.Settings(namespace=args.namespace, image=getattr(args, "image", manifests.DEFAULT_IMAGE),
                              identity=identity)


def _render(settings: manifests.Settings, tls: certs.TLSMaterial | None) -> list[dict[str, Any]]:
    try:
        return manifests.render(settings, tls)
    except ValueError as error:
        raise UsageError(f"error: {error}") from None


def to_yaml(objects: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


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


MINIMUM_MINOR = 28  # matchConditions, which keep KubeVirt's and CDI's own requests away from the webhook


def require_match_conditions(connection: Connection) -> None:
    """On an older API server, matchConditions would be dropped silently and VM starts would reach the webhook."""
    version = connection.request("GET", "/version")
    major, minor = version.get("major", ""), "".join(ch for ch in str(version.get("minor", "")) if ch.isdigit())
    if major == "1" and minor and int(minor) < MINIMUM_MINOR:
        raise KubeError(f"error: the webhook needs Kubernetes 1.{MINIMUM_MINOR} or newer (matchConditions); this "
                        f"cluster runs {version.get('gitVersion', f'{major}.{minor}')}")


def run_install(args: argparse.Namespace) -> int:
    settings = _settings(args)
    connection = connect(connection_options(args))
    require_match_conditions(connection)
    installed = _installed_tls(connection, settings)
    # keep a certificate that is still good: re-installing then changes nothing a running webhook relies on
    if installed and certs.still_good(installed.ca_pem, installed.cert_pem, manifests.dns_names(settings)):
        tls, previous_ca = installed, b""
    else:
        tls, previous_ca = certs.issue(manifests.dns_names(settings)), installed.ca_pem if installed else b""
    for obj in _render(settings, tls):
        if obj["kind"] == "MutatingWebhookConfiguration" and previous_ca:
            # until kubelet swaps the mounted Secret (up to a minute), the pods still serve the old certificate:
            # the API server trusts both CAs meanwhile; the next install drops the old one
            for webhook in obj["webhooks"]:
                webhook["clientConfig"]["caBundle"] = base64.b64encode(tls.ca_pem + previous_ca).decode()
        if obj["kind"] == "Namespace":
            existing = _get(connection, _path(obj))
            if existing is not None and not _managed(existing):
                print(f"namespace/{obj['metadata']['name']} exists, left as it is")
                continue
        # server-side apply: creates or updates, and CRD-free kinds and webhooks alike accept it
        connection.request("PATCH", _path(obj), query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                           body=obj, content_type="application/apply-patch+yaml")
        print(f"{obj['kind'].lower()}/{obj['metadata']['name']} serverside-applied")
    return 0


def _managed(obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in manifests.MANAGED_BY.items())


def run_uninstall(args: argparse.Namespace) -> int:
    settings = _settings(args)
    connection = connect(connection_options(args))
    # the registration goes first, so the API server stops calling a webhook that is going away
    for obj in reversed(_render(settings, certs.TLSMaterial(b"", b"", b""))):
        path = _path(obj)
        if obj["kind"] == "Namespace":
            existing = _get(connection, path)
            if existing is None or not _managed(existing):
                continue
        try:
            connection.request("DELETE", path)
            print(f"{obj['kind'].lower()}/{obj['metadata']['name']} deleted")
        except ApiError as error:
            if error.status != 404:
                raise
    return 0

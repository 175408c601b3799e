"""Mutating admission call-outs, as kube-apiserver makes them to registered MutatingWebhookConfigurations."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import uuid
from dataclasses import dataclass
from http.client import HTTPSConnection
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kubectl_kvbackup.selectors import selector_from_label_selector

from . import jsonpatch

if TYPE_CHECKING:
    from .server import FakeKubeAPI
    from .types import ResourceType

Obj = dict[str, Any]


@dataclass(frozen=True)
class Call:
    webhook: str
    operation: str
    kind: str
    namespace: str
    name: str
    user: str
    review: Obj
    response: Obj | None
    error: str | None


def _matches_rule(rule: Obj, rt: "ResourceType", operation: str) -> bool:
    def has(values: list[str] | None, value: str) -> bool:
        return bool(values) and ("*" in values or value in values)

    scope = rule.get("scope", "*")
    scope_ok = scope == "*" or (scope == "Namespaced") == rt.namespaced
    return (has(rule.get("operations"), operation) and has(rule.get("apiGroups"), rt.group)
            and has(rule.get("apiVersions"), rt.version) and has(rule.get("resources"), rt.plural) and scope_ok)


def _selected(webhook: Obj, api: "FakeKubeAPI", obj: Obj, rt: "ResourceType") -> bool:
    if not any(_matches_rule(rule, rt, "CREATE") for rule in webhook.get("rules") or []):
        return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if not selector_from_label_selector(webhook.get("objectSelector") or {}).matches(labels):
        return False
    if rt.namespaced and webhook.get("namespaceSelector"):
        namespace = api.get_object("", "Namespace", "", obj["metadata"].get("namespace", ""))
        ns_labels = dict(((namespace or {}).get("metadata") or {}).get("labels") or {})
        ns_labels.setdefault("kubernetes.io/metadata.name", obj["metadata"].get("namespace", ""))
        if not selector_from_label_selector(webhook["namespaceSelector"]).matches(ns_labels):
            return False
    return True


def _post(url: str, ca_bundle: str | None, review: Obj, timeout: float) -> Obj:
    parts = urlsplit(url)
    if parts.scheme == "https":
        context = ssl.create_default_context()
        if ca_bundle:
            context.load_verify_locations(cadata=base64.b64decode(ca_bundle).decode())
        connection = HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout,
                                                     context=context)
    else:
        raise ValueError("webhook URLs must use https")
    try:
        body = json.dumps(review).encode()
        connection.request("POST", parts.path or "/", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise ValueError(f"the server responded with status {response.status}: {data[:200]!r}")
        return json.loads(data)
    finally:
        connection.close()


def admit(api: "FakeKubeAPI", rt: "ResourceType", operation: str, obj: Obj, old: Obj | None, user: str,
          dry_run: bool) -> Obj:
    """Run every matching mutating webhook in name order; return the admitted (possibly patched) object."""
    from .server import ApiStatus  # the server module imports this one

    configurations = api.objects("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
    for configuration in sorted(configurations, key=lambda c: c["metadata"]["name"]):
        for webhook in configuration.get("webhooks") or []:
            if not _selected(webhook, api, obj, rt):
                continue
            meta = obj.get("metadata") or {}
            groups = ["system:authenticated"] + (["system:serviceaccounts"] if user.startswith(
                "system:serviceaccount:") else [])
            request = {
                "uid": str(uuid.uuid4()),
                "kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                "resource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
                "requestKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                "requestResource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
                "name": meta.get("name", ""), "namespace": meta.get("namespace", ""), "operation": operation,
                "userInfo": {"username": user, "groups": groups}, "object": copy.deepcopy(obj),
                "oldObject": old, "dryRun": dry_run,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
            }
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
            config = webhook.get("clientConfig") or {}
            name = webhook.get("name", "")
            try:
                answer = _post(config.get("url", ""), config.get("caBundle"), review,
                               float(webhook.get("timeoutSeconds") or 10))
                response = answer.get("response") or {}
                if answer.get("apiVersion") != "admission.k8s.io/v1" or response.get("uid") != request["uid"]:
                    raise ValueError("the webhook answered with a different AdmissionReview version or uid")
            except (OSError, ValueError, ssl.SSLError) as error:
                api.admission_calls.append(Call(name, operation, rt.kind, meta.get("namespace", ""),
                                                meta.get("name", ""), user, review, None, str(error)))
                if webhook.get("failurePolicy", "Fail") == "Ignore":
                    continue
                raise ApiStatus(500, "InternalError", f'Internal error occurred: failed calling webhook "{name}": '
                                                      f"{error}") from None
            api.admission_calls.append(Call(name, operation, rt.kind, meta.get("namespace", ""),
                                            meta.get("name", ""), user, review, response, None))
            if not response.get("allowed"):
                status = response.get("status") or {}
                raise ApiStatus(int(status.get("code") or 403), status.get("reason") or "Forbidden",
                                f'admission webhook "{name}" denied the request: {status.get("message", "")}')
            if response.get("patch"):
                if response.get("patchType") != "JSONPatch":
                    raise ApiStatus(500, "InternalError", f'Internal error occurred: webhook "{name}" returned an '
                                                          "unsupported patchType")
                try:
                    obj = jsonpatch.apply(obj, json.loads(base64.b64decode(response["patch"])))
                except (jsonpatch.PatchError, ValueError) as error:
                    raise ApiStatus(500, "InternalError", f'Internal error occurred: webhook "{name}" returned an '
                                                          f"invalid patch: {error}") from None
    return obj

"""Mutating admission call-outs, as kube-apiserver makes them to the stored MutatingWebhookConfigurations."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import threading
import uuid
from dataclasses import dataclass
from http.client import HTTPSConnection
from typing import Any
from urllib.parse import urlsplit

import celpy

from kubectl_kvbackup.selectors import SelectorError, selector_from_label_selector

from . import cel, jsonpatch
from .status import ApiStatus, bad_request, internal_error
from .storage import Admit, Store
from .types import ResourceType

Obj = dict[str, Any]


@dataclass(frozen=True)
class UserInfo:
    """Who sent a request, as authentication tells admission (authentication/v1 UserInfo)."""

    username: str
    uid: str
    groups: tuple[str, ...]

    def as_admission(self) -> Obj:
        return {"username": self.username, "uid": self.uid, "groups": list(self.groups)}


@dataclass(frozen=True)
class Call:
    webhook: str
    operation: str
    kind: str
    namespace: str
    name: str
    user: str
    review: Obj
    response: Obj | None  # the AdmissionReview's response, None when the call failed
    error: str | None


class _CallFailed(Exception):
    pass


def _rule_matches(rule: Obj, rt: ResourceType, operation: str, sub: str | None) -> bool:
    def has(values: list[str] | None, value: str) -> bool:
        return bool(values) and ("*" in values or value in values)

    def resource_matches(pattern: str) -> bool:  # "*" is every resource, "x/*" x and its subresources
        resource, _, subresource = pattern.partition("/")
        return resource in ("*", rt.plural) and subresource in ("*", sub or "")

    scope = rule.get("scope") or "*"
    return (has(rule.get("operations"), operation) and has(rule.get("apiGroups"), rt.group)
            and has(rule.get("apiVersions"), rt.version)
            and any(resource_matches(p) for p in rule.get("resources") or ())
            and (scope == "*" or (scope == "Namespaced") == rt.namespaced))


class Admission:
    def __init__(self, store: Store):
        self._store = store
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def admitter(self, rt: ResourceType, user: UserInfo, namespace: str | None, options: Obj) -> Admit:
        """The admission chain of one request; ``options`` are the request's (dryRun, fieldManager)."""
        return lambda operation, obj, old, sub: self.admit(rt, operation, obj, old, sub, user, namespace or "",
                                                           options)

    def admit(self, rt: ResourceType, operation: str, obj: Obj, old: Obj | None, sub: str | None, user: UserInfo,
              namespace: str, options: Obj) -> Obj:
        """Run every matching webhook as mutating/dispatcher.go does: configurations in name order, webhooks in
        their order; then, once, the webhooks with ``reinvocationPolicy: IfNeeded`` that a later webhook's change
        followed (staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/mutating/dispatcher.go and
        reinvocationcontext.go; configuration order: configuration/mutating_webhook_manager.go)."""
        if rt.group == "admissionregistration.k8s.io":
            return obj  # kube never sends webhook configurations to webhooks, so none can lock a cluster out
        configurations = self._store.objects(self._store.registry.named("admissionregistration.k8s.io",
                                                                        "MutatingWebhookConfiguration"))
        webhooks = [(c["metadata"].get("uid", ""), w) for c in sorted(configurations, key=lambda c: c["metadata"]["name"])
                    for w in c.get("webhooks") or []]
        invoked_reinvocable: list[str] = []  # IfNeeded webhooks called so far, by configuration uid and name
        to_reinvoke: set[str] = set()
        for round_ in (0, 1):
            for configuration_uid, webhook in webhooks:
                identity = f"{configuration_uid}/{webhook.get('name', '')}"
                if round_ == 1 and identity not in to_reinvoke:
                    continue  # a reinvocation never calls a webhook for the first time
                if not self._selected(webhook, rt, operation, obj, old, sub, namespace):
                    continue
                before = obj
                obj = self._call(webhook, rt, operation, obj, old, sub, user, namespace, options)
                if obj != before:
                    to_reinvoke.update(invoked_reinvocable)
                if webhook.get("reinvocationPolicy") == "IfNeeded" and round_ == 0:
                    invoked_reinvocable.append(identity)
            if not to_reinvoke:
                break
        return obj

    def _selected(self, webhook: Obj, rt: ResourceType, operation: str, obj: Obj, old: Obj | None,
                  sub: str | None, name: str) -> bool:
        if not any(_rule_matches(rule, rt, operation, sub) for rule in webhook.get("rules") or []):
            return False
        try:
            objects = selector_from_label_selector(webhook.get("objectSelector") or {})
            namespaces = selector_from_label_selector(webhook.get("namespaceSelector") or {})
        except SelectorError as error:
            raise internal_error(f'webhook "{webhook.get("name")}" has an invalid selector: {error}') from None
        # on UPDATE the object selector matches if the old or the new object matches
        if not any(objects.matches(_labels(o)) for o in (obj, old) if o is not None):
            return False
        if rt.kind == "Namespace" and rt.group == "":
            return namespaces.matches(_labels(obj))  # a namespace is matched on its own labels
        if not rt.namespaced:
            return True
        namespace_type = self._store.registry.named("", "Namespace")
        namespace = self._store.stored(namespace_type, "", name) if namespace_type else None
        return namespaces.matches({**_labels(namespace or {}), "kubernetes.io/metadata.name": name})

    def _call(self, webhook: Obj, rt: ResourceType, operation: str, obj: Obj, old: Obj | None, sub: str | None,
              user: UserInfo, namespace: str, options: Obj) -> Obj:
        name = webhook.get("name", "")
        if options.get("dryRun") and webhook.get("sideEffects") not in ("None", "NoneOnDryRun"):
            raise bad_request(f'admission webhook "{name}" does not support dry run')
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        gvr = {"group": rt.group, "version": rt.version, "resource": rt.plural}
        # AdmissionRequest omits an empty name (generateName) and namespace (cluster scope): omitempty
        request: Obj = {
            "uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            **({"name": (obj.get("metadata") or {}).get("name")} if (obj.get("metadata") or {}).get("name") else {}),
            **({"namespace": namespace} if namespace else {}), "operation": operation,
            "userInfo": user.as_admission(), "object": copy.deepcopy(obj), "oldObject": copy.deepcopy(old),
            "dryRun": bool(options.get("dryRun")),
            "options": {"kind": "CreateOptions" if operation == "CREATE" else "UpdateOptions",
                        "apiVersion": "meta.k8s.io/v1", **options},
        }
        if sub:
            request["subResource"] = request["requestSubResource"] = sub
        try:
            if not cel.conditions_hold(webhook.get("matchConditions") or [], request):
                return obj  # kube-apiserver skips the call: the webhook never sees the request
        except (cel.ConditionError, celpy.CELEvalError) as error:
            if webhook.get("failurePolicy", "Fail") == "Ignore":
                return obj
            raise internal_error(f'failed to evaluate match conditions of webhook "{name}": {error}') from None
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
        try:
            response = self._post(webhook, review)
        except _CallFailed as error:
            self._record(Call(name, operation, rt.kind, namespace, request.get("name", ""), user.username, review,
                              None, str(error)))
            if webhook.get("failurePolicy", "Fail") == "Ignore":
                return obj
            raise internal_error(f'failed calling webhook "{name}": {error}') from None
        self._record(Call(name, operation, rt.kind, namespace, request.get("name", ""), user.username, review,
                          response, None))
        if not response.get("allowed"):
            raise _denial(name, response.get("status") or {})
        if not response.get("patch"):
            return obj
        if response.get("patchType") != "JSONPatch":
            raise internal_error(f'webhook "{name}" returned an unsupported patchType '
                                 f'{response.get("patchType")!r}')
        try:
            return jsonpatch.apply(obj, json.loads(base64.b64decode(response["patch"])))
        except (jsonpatch.PatchError, ValueError) as error:
            raise internal_error(f'webhook "{name}" returned an invalid patch: {error}') from None

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    @staticmethod
    def _post(webhook: Obj, review: Obj) -> Obj:
        config = webhook.get("clientConfig") or {}
        timeout = int(webhook.get("timeoutSeconds") or 10)
        url = config.get("url")
        if not url:
            raise _CallFailed("the fake API server calls webhooks by clientConfig.url only, not by service")
        target = f'{url}{"&" if "?" in url else "?"}timeout={timeout}s'
        parts = urlsplit(url)
        try:
            context = ssl.create_default_context()
            if config.get("caBundle"):
                context.load_verify_locations(cadata=base64.b64decode(config["caBundle"]).decode())
            connection = HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=timeout, context=context)
            try:
                connection.request("POST", target[len(f"{parts.scheme}://{parts.netloc}"):] or "/",
                                   body=json.dumps(review).encode(), headers={"Content-Type": "application/json"})
                reply = connection.getresponse()
                data = reply.read()
            finally:
                connection.close()
        except (OSError, ValueError) as error:  # refused, timed out, untrusted certificate, bad caBundle
            raise _CallFailed(f'failed to call webhook: Post "{target}": {error}') from None
        if reply.status != 200:
            raise _CallFailed(f"received invalid webhook response: the server responded with status "
                              f"{reply.status}: {data[:200]!r}")
        try:
            answer = json.loads(data)
        except ValueError as error:
            raise _CallFailed(f"received invalid webhook response: {error}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("response"), dict) or \
                (answer.get("apiVersion"), answer.get("kind")) != ("admission.k8s.io/v1", "AdmissionReview"):
            raise _CallFailed("received invalid webhook response: expected an admission.k8s.io/v1 AdmissionReview")
        response = answer["response"]
        if response.get("uid") != review["request"]["uid"]:
            raise _CallFailed(f'expected response.uid="{review["request"]["uid"]}", got "{response.get("uid")}"')
        return response


def _labels(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _denial(name: str, status: Obj) -> ApiStatus:
    """kube-apiserver's wording and codes for a webhook's refusal (its ToStatusErr)."""
    denied = f'admission webhook "{name}" denied the request'
    if status.get("message"):
        message = f"{denied}: {status['message']}"
    elif status.get("reason"):
        message = f"{denied}: {status['reason']}"
    else:
        message = f"{denied} without explanation"
    code = int(status.get("code") or 0)
    return ApiStatus(code if code >= 400 else 400, status.get("reason") or "", message, status.get("details"))

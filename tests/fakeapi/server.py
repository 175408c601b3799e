"""A fake Kubernetes API server over real HTTP on loopback, faithful where kvbackup depends on it.

It serves discovery, GET/LIST (label and field selectors, limit/continue pagination), CREATE, PUT, PATCH and
DELETE with kube-apiserver's Status errors, bearer-token users with programmable denials, fault injection,
KubeVirt's freeze/unfreeze subresources, and mutating admission call-outs to registered webhooks.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from kubectl_kvbackup.selectors import SelectorError, parse_selector

from . import admission, jsonpatch
from .types import DEFAULT_TYPES, SUBRESOURCE_GROUP, SUBRESOURCE_VERSION, VMI_SUBRESOURCES, ResourceType

Obj = dict[str, Any]
ADMIN = "admin"


class ApiStatus(Exception):
    """An error answered as a ``Status`` body, exactly as kube-apiserver words it."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> Obj:
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            status["details"] = self.details
        return status


def not_found(rt: ResourceType, name: str) -> ApiStatus:
    return ApiStatus(404, "NotFound", f'{rt.qualified} "{name}" not found',
                     {"name": name, "group": rt.group, "kind": rt.plural})


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    user: str


@dataclass(frozen=True)
class FreezeCall:
    namespace: str
    name: str
    op: str
    time: float
    body: Obj | None


@dataclass
class _Fault:
    method: str
    path: re.Pattern
    status: int | None
    delay: float
    times: int | None


@dataclass
class _FreezeBehaviour:
    outcome: str = "ok"
    delay: float = 0.0
    unfreeze_outcome: str = "ok"


@dataclass
class _Route:
    rt: ResourceType | None
    namespace: str | None  # None: all namespaces or cluster-scoped
    name: str | None
    subresource: str | None
    discovery: Obj | None = None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubeAPI:
    """Start with ``with FakeKubeAPI() as api:`` or ``start()``/``stop()``; seed with ``add``/``add_all``."""

    def __init__(self, types: Iterable[ResourceType] = DEFAULT_TYPES):
        self._lock = threading.RLock()
        self._types: dict[tuple[str, str], ResourceType] = {}
        self._hidden_groups: set[str] = set()
        self._store: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._resource_version = 1000
        self._tokens: dict[str, str] = {}
        self._denials: list[tuple[str, str, str, str, str | None]] = []
        self._faults: list[_Fault] = []
        self._freeze: dict[tuple[str, str], _FreezeBehaviour] = {}
        self._frozen: set[tuple[str, str]] = set()
        self.requests: list[Request] = []
        self.freeze_calls: list[FreezeCall] = []
        self.admission_calls: list[admission.Call] = []
        for rt in types:
            self.register(rt)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> "FakeKubeAPI":
        api = self

        class Handler(_Handler):
            fake = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-kube-api",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self) -> "FakeKubeAPI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake API server is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def token_for(self, user: str) -> str:
        with self._lock:
            token = f"token-{uuid.uuid5(uuid.NAMESPACE_OID, user).hex}"
            self._tokens[token] = user
            return token

    def write_kubeconfig(self, path: str, namespace: str = "default", user: str = ADMIN) -> str:
        """A kubeconfig with one context for ``user`` (bearer token) and ``namespace``."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": user, "user": {"token": self.token_for(user)}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": user, "namespace": namespace}}],
        }
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)
        return path

    # --- types ---------------------------------------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        with self._lock:
            self._types[(rt.group, rt.kind)] = rt
            self._store.setdefault((rt.group, rt.kind), {})

    def remove_group(self, group: str) -> None:
        """Stop serving an API group, as a cluster without that operator (CDI, say) would."""
        with self._lock:
            self._hidden_groups.add(group)

    def _served(self) -> list[ResourceType]:
        return [rt for rt in self._types.values() if rt.group not in self._hidden_groups]

    def _type_by_plural(self, group: str, version: str, plural: str) -> ResourceType | None:
        for rt in self._served():
            if (rt.group, rt.version, rt.plural) == (group, version, plural):
                return rt
        return None

    def _type_of(self, obj: Obj) -> ResourceType:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        group = api_version.rpartition("/")[0]
        rt = self._types.get((group, kind))
        if rt is None:
            raise ValueError(f"the fake API server does not know {api_version} {kind}")
        return rt

    # --- seeding and inspection ----------------------------------------------------------------------------

    def _next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def add(self, obj: Obj) -> Obj:
        """Store an object as if created earlier: server fields are filled in where absent."""
        rt = self._type_of(obj)
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        with self._lock:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = self._next_resource_version()
            if not rt.namespaced:
                meta.pop("namespace", None)
            self._store[(rt.group, rt.kind)][(meta.get("namespace", ""), meta["name"])] = stored
        return copy.deepcopy(stored)

    def add_all(self, objects: Iterable[Obj]) -> None:
        for obj in objects:
            self.add(obj)

    def get_object(self, group: str, kind: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            found = self._store.get((group, kind), {}).get((namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def objects(self, group: str, kind: str, namespace: str | None = None) -> list[Obj]:
        with self._lock:
            return [copy.deepcopy(o) for (ns, _), o in sorted(self._store.get((group, kind), {}).items())
                    if namespace is None or ns == namespace]

    def reset_requests(self) -> None:
        with self._lock:
            self.requests = []

    # --- authorization and faults --------------------------------------------------------------------------

    def deny(self, user: str, verb: str, group: str, resource: str, namespace: str | None = None) -> None:
        """Refuse ``verb`` on ``resource`` (plural) of ``group`` for ``user``; ``namespace=None``: everywhere."""
        with self._lock:
            self._denials.append((user, verb, group, resource, namespace))

    def inject(self, method: str, path_regex: str, status: int | None = None, delay: float = 0.0,
               times: int | None = None) -> None:
        """Delay and/or fail matching requests (``times=None``: every time) before they are handled."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), status, delay, times))

    def _fault_for(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method in (method, "*") and fault.path.search(path) and fault.times != 0:
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _authorize(self, user: str, verb: str, rt: ResourceType, namespace: str | None, name: str | None) -> None:
        for d_user, d_verb, d_group, d_resource, d_ns in self._denials:
            if (d_user, d_verb, d_group, d_resource) == (user, verb, rt.group, rt.plural) and \
                    (d_ns is None or d_ns == namespace):
                what = f'{rt.qualified} "{name}"' if name else rt.qualified
                where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
                raise ApiStatus(403, "Forbidden",
                                f'{what} is forbidden: User "{user}" cannot {verb} resource "{rt.plural}" in API '
                                f'group "{rt.group}"{where}', {"name": name or "", "group": rt.group,
                                                                "kind": rt.plural})

    # --- KubeVirt freeze ------------------------------------------------------------------------------------

    def set_freeze_behaviour(self, namespace: str, name: str, outcome: str = "ok", delay: float = 0.0,
                             unfreeze_outcome: str = "ok") -> None:
        """``outcome``: ok | not-running (409) | no-agent (500, as KubeVirt without a guest agent) | error (500)."""
        if outcome not in _FREEZE_OUTCOMES or unfreeze_outcome not in _FREEZE_OUTCOMES:
            raise ValueError(f"unknown freeze outcome; use one of {sorted(_FREEZE_OUTCOMES)}")
        with self._lock:
            self._freeze[(namespace, name)] = _FreezeBehaviour(outcome, delay, unfreeze_outcome)

    def frozen_vmis(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self._frozen)

    def _freeze_subresource(self, namespace: str, name: str, op: str, body: Obj | None) -> Obj:
        with self._lock:
            behaviour = self._freeze.get((namespace, name), _FreezeBehaviour())
            self.freeze_calls.append(FreezeCall(namespace, name, op, time.time(), body))
        if behaviour.delay:
            time.sleep(behaviour.delay)
        vmi_type = self._types[("kubevirt.io", "VirtualMachineInstance")]
        with self._lock:
            vmi = self._store[("kubevirt.io", "VirtualMachineInstance")].get((namespace, name))
            if vmi is None:
                raise not_found(vmi_type, name)
            outcome = behaviour.outcome if op == "freeze" else behaviour.unfreeze_outcome
            if outcome == "not-running":
                raise ApiStatus(409, "Conflict", f"Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io"
                                                 f' "{name}": VMI is not running')
            if outcome in ("no-agent", "error"):
                detail = "Guest agent is not connected" if outcome == "no-agent" else "virt-handler failed"
                raise ApiStatus(500, "InternalError", f"Internal error occurred: {detail}")
            status = vmi.setdefault("status", {})
            if op == "freeze":
                self._frozen.add((namespace, name))
                status["fsFreezeStatus"] = "frozen"
            else:
                self._frozen.discard((namespace, name))
                status.pop("fsFreezeStatus", None)
            vmi["metadata"]["resourceVersion"] = self._next_resource_version()
        return {}

    # --- request handling (called by the HTTP handler) ------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        split = urlsplit(raw_path)
        path, query = split.path.rstrip("/") or "/", dict(parse_qsl(split.query, keep_blank_values=True))
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        with self._lock:
            user = self._tokens.get(token)
            self.requests.append(Request(method, path, query, user or ""))
        try:
            if user is None:
                raise ApiStatus(401, "Unauthorized", "Unauthorized")
            fault = self._fault_for(method, path)
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.status:
                    raise ApiStatus(fault.status, _REASONS.get(fault.status, "InternalError"),
                                    f"injected failure for {method} {path}")
            result = self._dispatch(method, path, query, headers, body, user)
            # kube-apiserver answers a create with 201 Created; clients map only that code to the object
            return (201 if method == "POST" else 200), result
        except ApiStatus as status:
            return status.code, status.body()

    def _dispatch(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
                  user: str) -> Any:
        route = self._route(path)
        if route.discovery is not None:
            if method != "GET":
                raise ApiStatus(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return route.discovery
        rt, namespace, name, sub = route.rt, route.namespace, route.name, route.subresource
        assert rt is not None
        if rt.group == SUBRESOURCE_GROUP:
            if method != "PUT":
                raise ApiStatus(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return self._freeze_subresource(namespace or "", name or "", sub or "", _json(body) if body else None)
        if method == "GET" and name is None:
            self._authorize(user, "list", rt, namespace, None)
            return self._list(rt, namespace, query)
        if method == "GET":
            self._authorize(user, "get", rt, namespace, name)
            return self._get(rt, namespace, name)
        if method == "POST" and name is None:
            self._authorize(user, "create", rt, namespace, None)
            return self._create(rt, namespace, _json(body), user, dry_run=query.get("dryRun") == "All")
        if method == "PUT" and name is not None:
            self._authorize(user, "update", rt, namespace, name)
            return self._replace(rt, namespace, name, _json(body), sub)
        if method == "PATCH" and name is not None:
            self._authorize(user, "patch", rt, namespace, name)
            return self._patch(rt, namespace, name, headers.get("content-type", ""), body, sub, user)
        if method == "DELETE" and name is not None:
            self._authorize(user, "delete", rt, namespace, name)
            return self._delete(rt, namespace, name)
        raise ApiStatus(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # --- routing and discovery ------------------------------------------------------------------------------

    def _route(self, path: str) -> _Route:
        parts = [unquote(p) for p in path.strip("/").split("/")] if path != "/" else []
        if parts == ["version"]:
            return _Route(None, None, None, None, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake"})
        if parts == ["api"]:
            return _Route(None, None, None, None, {"kind": "APIVersions", "versions": ["v1"],
                                                   "serverAddressByClientCIDRs": []})
        if parts == ["apis"]:
            return _Route(None, None, None, None, self._group_list())
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 2 and parts[0] == "apis":
            group = parts[1]
            if len(parts) == 2:
                return _Route(None, None, None, None, self._group(group))
            version, rest = parts[2], parts[3:]
        else:
            raise _unknown_path(path)
        if group in self._hidden_groups:
            raise _unknown_path(path)
        if not rest:
            return _Route(None, None, None, None, self._resource_list(group, version, path))
        if group == SUBRESOURCE_GROUP:
            if version != SUBRESOURCE_VERSION or len(rest) != 5 or rest[0] != "namespaces" or \
                    rest[2] != "virtualmachineinstances" or rest[4] not in VMI_SUBRESOURCES:
                raise _unknown_path(path)
            return _Route(ResourceType(SUBRESOURCE_GROUP, "v1", "VirtualMachineInstance", "virtualmachineinstances"),
                          rest[1], rest[3], rest[4])
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and self._type_by_plural(group, version, rest[2]) is not None:
            namespace, rest = rest[1], rest[2:]
        rt = self._type_by_plural(group, version, rest[0])
        if rt is None or len(rest) > 3:
            raise _unknown_path(path)
        if namespace is not None and not rt.namespaced:
            raise _unknown_path(path)
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and sub not in rt.subresources:
            raise _unknown_path(path)
        return _Route(rt, namespace, name, sub)

    def _versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rt in self._served():
            if rt.group:
                versions = groups.setdefault(rt.group, [])
                if rt.version not in versions:
                    versions.append(rt.version)
        if SUBRESOURCE_GROUP not in self._hidden_groups and ("kubevirt.io", "VirtualMachineInstance") in self._types:
            groups[SUBRESOURCE_GROUP] = [SUBRESOURCE_VERSION]
        return groups

    def _group(self, name: str) -> Obj:
        versions = self._versions().get(name)
        if versions is None:
            raise _unknown_path(f"/apis/{name}")
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": entries,
                "preferredVersion": entries[0]}

    def _group_list(self) -> Obj:
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [self._group(name) for name in sorted(self._versions())]}

    def _resource_list(self, group: str, version: str, path: str) -> Obj:
        resources = []
        if group == SUBRESOURCE_GROUP:
            resources = [{"name": f"virtualmachineinstances/{sub}", "singularName": "", "namespaced": True,
                          "kind": "VirtualMachineInstance", "verbs": ["update"]} for sub in VMI_SUBRESOURCES]
        for rt in self._served():
            if (rt.group, rt.version) != (group, version):
                continue
            resources.append({"name": rt.plural, "singularName": rt.kind.lower(), "namespaced": rt.namespaced,
                              "kind": rt.kind, "verbs": list(rt.verbs), "shortNames": list(rt.short_names)})
            resources += [{"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                           "kind": rt.kind, "verbs": ["get", "patch", "update"]} for sub in rt.subresources]
        if not resources:
            raise _unknown_path(path)
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}".lstrip("/"),
                "resources": resources}

    # --- verbs ---------------------------------------------------------------------------------------------

    def _items(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        return self._store[(rt.group, rt.kind)]

    def _get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        with self._lock:
            found = self._items(rt).get((namespace or "", name))
            if found is None:
                raise not_found(rt, name)
            return _with_type(rt, found)

    def _list(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> Obj:
        try:
            selector = parse_selector(query.get("labelSelector", ""))
        except SelectorError as error:
            raise ApiStatus(400, "BadRequest", f"unable to parse requirement: {error}") from None
        field_filter = _field_selector(query.get("fieldSelector", ""))
        limit = int(query.get("limit") or 0)
        start = _decode_continue(query["continue"]) if query.get("continue") else None
        with self._lock:
            matching = [(key, obj) for key, obj in sorted(self._items(rt).items())
                        if (namespace is None or key[0] == namespace)
                        and (start is None or key > start)
                        and selector.matches((obj.get("metadata") or {}).get("labels") or {})
                        and field_filter(obj)]
            page = matching[:limit] if limit else matching
            metadata: Obj = {"resourceVersion": str(self._resource_version)}
            if limit and len(matching) > limit:
                metadata["continue"] = _encode_continue(page[-1][0])
                metadata["remainingItemCount"] = len(matching) - limit
            items = [_with_type(rt, obj) for _, obj in page]
        return {"kind": f"{rt.kind}List", "apiVersion": rt.group_version, "metadata": metadata, "items": items}

    def _create(self, rt: ResourceType, namespace: str | None, obj: Obj, user: str, dry_run: bool) -> Obj:
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            raise ApiStatus(400, "BadRequest", "the object provided is unrecognized")
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise ApiStatus(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                                                   "sent on the request")
            meta["namespace"] = namespace or body_ns or ""
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiStatus(422, "Invalid", f'{rt.kind} "" is invalid: metadata.name: Required value: name or '
                                                "generateName is required")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        obj["apiVersion"], obj["kind"] = rt.group_version, rt.kind
        key = (meta.get("namespace", "") if rt.namespaced else "", meta["name"])
        with self._lock:
            if key in self._items(rt):
                raise ApiStatus(409, "AlreadyExists", f'{rt.qualified} "{meta["name"]}" already exists',
                                {"name": meta["name"], "group": rt.group, "kind": rt.plural})
        obj = admission.admit(self, rt, "CREATE", obj, None, user, dry_run)
        meta = obj["metadata"]
        with self._lock:
            if key in self._items(rt):
                raise ApiStatus(409, "AlreadyExists", f'{rt.qualified} "{meta["name"]}" already exists')
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            meta["resourceVersion"] = str(self._resource_version + 1)
            if not dry_run:
                self._next_resource_version()
                self._items(rt)[key] = copy.deepcopy(obj)
        return obj

    def _replace(self, rt: ResourceType, namespace: str | None, name: str, obj: Obj, sub: str | None) -> Obj:
        with self._lock:
            current = self._items(rt).get((namespace or "", name))
            if current is None:
                raise not_found(rt, name)
            given = (obj.get("metadata") or {}).get("resourceVersion")
            if given and given != current["metadata"]["resourceVersion"]:
                raise ApiStatus(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{name}": the '
                                                 "object has been modified; please apply your changes to the latest "
                                                 "version and try again",
                                {"name": name, "group": rt.group, "kind": rt.plural})
            return self._store_update(rt, current, obj, sub)

    def _store_update(self, rt: ResourceType, current: Obj, new: Obj, sub: str | None) -> Obj:
        if sub == "status":
            updated = {**copy.deepcopy(current), "status": copy.deepcopy(new.get("status"))}
        else:
            updated = copy.deepcopy(new)
            updated["status"] = copy.deepcopy(current.get("status")) if "status" in current else updated.get("status")
            if updated.get("status") is None:
                updated.pop("status", None)
            meta = updated.setdefault("metadata", {})
            for kept in ("uid", "creationTimestamp", "namespace", "name"):
                if kept in current["metadata"]:
                    meta[kept] = current["metadata"][kept]
            if updated.get("spec") != current.get("spec"):
                meta["generation"] = current["metadata"].get("generation", 1) + 1
        updated["apiVersion"], updated["kind"] = rt.group_version, rt.kind
        updated["metadata"]["resourceVersion"] = self._next_resource_version()
        self._items(rt)[(current["metadata"].get("namespace", ""), current["metadata"]["name"])] = updated
        return copy.deepcopy(updated)

    def _patch(self, rt: ResourceType, namespace: str | None, name: str, content_type: str, body: bytes,
               sub: str | None, user: str) -> Obj:
        media = content_type.split(";")[0].strip()
        if media == "application/strategic-merge-patch+json" and not rt.builtin:
            raise ApiStatus(415, "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media types include: "
                            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
        with self._lock:
            current = self._items(rt).get((namespace or "", name))
            if current is None and media == "application/apply-patch+yaml":
                return self._create(rt, namespace, yaml.safe_load(body), user, dry_run=False)
            if current is None:
                raise not_found(rt, name)
            try:
                if media == "application/json-patch+json":
                    patched = jsonpatch.apply(copy.deepcopy(current), _json(body))
                elif media in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    patched = jsonpatch.merge(copy.deepcopy(current), _json(body))
                elif media == "application/apply-patch+yaml":
                    patched = jsonpatch.merge(copy.deepcopy(current), yaml.safe_load(body))
                else:
                    raise ApiStatus(415, "UnsupportedMediaType", f"the body of the request was in an unknown format "
                                                                 f"- accepted media types include: "
                                                                 "application/json-patch+json, "
                                                                 "application/merge-patch+json, "
                                                                 "application/apply-patch+yaml")
            except jsonpatch.PatchError as error:
                raise ApiStatus(422, "Invalid", f"the server rejected our request due to an error in our request: "
                                                f"{error}") from None
            return self._store_update(rt, current, patched, sub)

    def _delete(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        with self._lock:
            removed = self._items(rt).pop((namespace or "", name), None)
            if removed is None:
                raise not_found(rt, name)
            return _with_type(rt, removed)


_FREEZE_OUTCOMES = {"ok", "not-running", "no-agent", "error"}
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
            410: "Gone", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}


def _unknown_path(path: str) -> ApiStatus:
    return ApiStatus(404, "NotFound", "the server could not find the requested resource",
                     {"causes": [{"reason": "UnexpectedServerResponse", "message": f"404 page not found: {path}"}]})


def _with_type(rt: ResourceType, obj: Obj) -> Obj:
    result = copy.deepcopy(obj)
    result["apiVersion"], result["kind"] = rt.group_version, rt.kind
    return result


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as error:
        raise ApiStatus(400, "BadRequest", f"the object provided is unrecognized: {error}") from None


def _encode_continue(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(namespace), str(name)
    except (ValueError, TypeError):
        raise ApiStatus(400, "BadRequest", "continue key is not valid: illegal base64 data") from None


def _field_selector(text: str):
    checks = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        match = re.fullmatch(r"(metadata\.name|metadata\.namespace)\s*(!=|==|=)\s*(.*)", term)
        if match is None:
            raise ApiStatus(400, "BadRequest", f'"{term}" is not a known field selector: only "metadata.name", '
                                               '"metadata.namespace"')
        field_name, op, value = match.groups()
        checks.append((field_name.split(".")[1], op == "!=", value))

    def matches(obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        return all((meta.get(key, "") == value) != negate for key, negate, value in checks)

    return matches


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubeAPI
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        code, payload = self.fake.handle(self.command, self.path, headers, body)
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the request log instead
        pass

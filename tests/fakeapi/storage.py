"""Objects and the verbs on them, with the server-side behaviour clients and restores depend on.

Stored objects are never changed in place: every write stores a new dict. Readers can therefore hand a stored
object to the HTTP layer for serialisation without holding the lock or copying it.
"""

from __future__ import annotations

import base64
import bisect
import copy
import json
import random
import re
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

import yaml

from kubectl_kvbackup.selectors import SelectorError, label_key_problem, label_value_problem, parse_selector

from . import jsonpatch
from .status import (STALE, already_exists, bad_request, conflict, invalid, not_found,
                     unsupported_media_type)
from .types import Registry, ResourceType

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
#: (operation, object, old object or None, subresource or None) -> the object as admission leaves it
Admit = Callable[[str, Obj, Obj | None, str | None], Obj]

# the namespaces every cluster has, so that creating in "default" works as it does against a real cluster
SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
_SERVER_SET = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN_PROBLEM = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                      "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                      f"for validation is '{_SUBDOMAIN.pattern}')")
_LABEL_PROBLEM = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                  "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                  f"validation is '{_LABEL.pattern}')")
_MERGE_MEDIA = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_APPLY = "application/apply-patch+yaml"
_JSON_PATCH = "application/json-patch+json"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self, registry: Registry):
        self.registry = registry
        self.lock = threading.RLock()
        self._objects: dict[tuple[str, str], dict[Key, Obj]] = {}
        self._sorted_keys: dict[tuple[str, str], list[Key]] = {}  # cache for pagination, dropped on add/remove
        self._resource_version = 1000
        namespace_type = registry.named("", "Namespace")
        for name in SYSTEM_NAMESPACES if namespace_type else ():
            self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # --- direct access, for seeding and assertions ---------------------------------------------------------

    def _next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _table(self, rt: ResourceType) -> dict[Key, Obj]:
        return self._objects.setdefault((rt.group, rt.kind), {})

    def _put(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        table = self._table(rt)
        if key not in table:
            self._sorted_keys.pop((rt.group, rt.kind), None)
        table[key] = obj

    def add(self, obj: Obj) -> Obj:
        """Store ``obj`` as if created earlier: uid, resourceVersion and creationTimestamp only where absent.

        Its namespace is created too when missing, as kube-apiserver would have required."""
        rt = self.registry.of_object(obj)
        stored = _normalised(rt, copy.deepcopy(obj))
        meta = stored["metadata"]
        if rt.namespaced:
            meta.setdefault("namespace", "default")
        namespaces = self.registry.named("", "Namespace")
        if rt.namespaced and namespaces and self.stored(namespaces, "", meta["namespace"]) is None:
            # no cluster holds objects in a namespace that does not exist
            self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": meta["namespace"]}})
        if rt is namespaces:
            stored.setdefault("status", {"phase": "Active"})
        with self.lock:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now())
            given = str(meta.get("resourceVersion", ""))
            if given.isdigit():
                meta["resourceVersion"] = given
                self._resource_version = max(self._resource_version, int(given))
            else:
                meta["resourceVersion"] = self._next_resource_version()
            self._put(rt, stored)
        return copy.deepcopy(stored)

    def stored(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        with self.lock:
            return self._table(rt).get((namespace or "", name))

    def rewrite(self, rt: ResourceType, namespace: str, name: str, change: Callable[[Obj], None]) -> Obj:
        """Apply ``change`` to a copy of the object and store it under a new resourceVersion (as a controller)."""
        with self.lock:
            current = self.stored(rt, namespace, name)
            if current is None:
                raise not_found(rt, name)
            changed = copy.deepcopy(current)
            change(changed)
            changed["metadata"]["resourceVersion"] = self._next_resource_version()
            self._put(rt, changed)
            return changed

    def objects(self, rt: ResourceType, namespace: str | None = None) -> list[Obj]:
        with self.lock:
            return [copy.deepcopy(o) for (ns, _), o in sorted(self._table(rt).items())
                    if namespace is None or ns == namespace]

    # --- verbs ---------------------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        found = self.stored(rt, namespace, name)
        if found is None:
            raise not_found(rt, name)
        return found

    def list(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> Obj:
        try:
            selector = parse_selector(query.get("labelSelector", ""))
        except SelectorError as error:
            raise bad_request(f"unable to parse requirement: {error}") from None
        field_matches = _field_selector(query.get("fieldSelector", ""))
        limit = query.get("limit") or "0"
        if not limit.isdigit():
            raise bad_request(f'limit: Invalid value: "{limit}": must be a non-negative integer')
        start = _decode_continue(query["continue"]) if query.get("continue") else None
        with self.lock:
            table = self._table(rt)
            keys = self._sorted_keys.get((rt.group, rt.kind))
            if keys is None:
                keys = self._sorted_keys[(rt.group, rt.kind)] = sorted(table)
            matching = [table[key] for key in keys[bisect.bisect_right(keys, start) if start else 0:]
                        if (namespace is None or key[0] == namespace)
                        and selector.matches(table[key]["metadata"].get("labels"))
                        and field_matches(table[key])]
            metadata: Obj = {"resourceVersion": str(self._resource_version)}
        page = matching[:int(limit)] if int(limit) else matching
        if len(page) < len(matching):
            last = page[-1]["metadata"]
            metadata["continue"] = _encode_continue((last.get("namespace", ""), last["name"]))
            metadata["remainingItemCount"] = len(matching) - len(page)
        # kube-apiserver writes kind and apiVersion on the items of custom resource lists only
        items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in page] if rt.builtin \
            else page
        return {"kind": f"{rt.kind}List", "apiVersion": rt.group_version, "metadata": metadata, "items": items}

    def create(self, rt: ResourceType, namespace: str | None, obj: Any, admit: Admit, dry_run: bool) -> Obj:
        meta = _metadata_of(rt, obj)
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and not meta.get("generateName"):
            raise invalid(rt, "", "metadata.name", None, "Required value: name or generateName is required")
        for field in _SERVER_SET:
            meta.pop(field, None)
        namespaces = self.registry.named("", "Namespace")
        if rt.namespaced and namespaces and self.stored(namespaces, "", meta["namespace"]) is None:
            raise not_found(namespaces, meta["namespace"])  # kube's NamespaceLifecycle admission
        if meta.get("name") and self.stored(rt, meta.get("namespace"), meta["name"]) is not None:
            raise already_exists(rt, meta["name"])
        # kube-apiserver runs mutating admission before the storage strategy: webhooks see the status a client
        # sent and an empty name under generateName; only then is the name generated and the status reset
        obj = admit("CREATE", _normalised(rt, obj), None, None)
        meta = obj["metadata"]
        if not meta.get("name"):
            meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if rt.has_status:
            obj.pop("status", None)  # status is written through the status subresource only
        if rt.kind == "Namespace":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj["status"] = {"phase": "Active"}
        _validate(rt, obj)
        with self.lock:
            if self.stored(rt, meta.get("namespace"), meta["name"]) is not None:
                raise already_exists(rt, meta["name"])
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            if not dry_run:  # a dry-run create is never given a resourceVersion
                meta["resourceVersion"] = self._next_resource_version()
                self._put(rt, obj)
        return obj

    def update(self, rt: ResourceType, namespace: str | None, name: str, obj: Any, sub: str | None, admit: Admit,
               dry_run: bool) -> Obj:
        meta = _metadata_of(rt, obj)
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        current = self.get(rt, namespace, name)
        if meta.get("resourceVersion") and meta["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise conflict(rt, name, STALE)
        return self._commit(rt, current, obj, sub, admit, dry_run)

    def patch(self, rt: ResourceType, namespace: str | None, name: str, content_type: str, body: bytes,
              sub: str | None, admit: Admit, dry_run: bool) -> Obj:
        media = content_type.split(";")[0].strip()
        if media not in (_JSON_PATCH, _APPLY, *_MERGE_MEDIA) or (media == _MERGE_MEDIA[1] and not rt.builtin):
            raise unsupported_media_type(rt)
        current = self.stored(rt, namespace, name)
        if current is None and media == _APPLY:  # server-side apply creates what does not exist
            obj = _yaml(body)
            _metadata_of(rt, obj)["name"] = name
            return self.create(rt, namespace, obj, admit, dry_run)
        if current is None:
            raise not_found(rt, name)
        try:
            patched = (jsonpatch.apply(current, parse_json(body)) if media == _JSON_PATCH
                       else jsonpatch.merge(current, _yaml(body) if media == _APPLY else parse_json(body)))
        except jsonpatch.PatchError as error:
            raise invalid(rt, name, "patch", None, str(error)) from None
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise bad_request("the patch leaves no object")
        if patched["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise conflict(rt, name, STALE)  # a patch carrying a resourceVersion is a precondition on it
        return self._commit(rt, current, patched, sub, admit, dry_run)

    def _commit(self, rt: ResourceType, current: Obj, new: Obj, sub: str | None, admit: Admit,
                dry_run: bool) -> Obj:
        if sub == "status":
            updated = {**copy.deepcopy(current), "status": copy.deepcopy(new.get("status"))}
        else:
            updated = _normalised(rt, copy.deepcopy(new))
            if rt.has_status:
                updated["status"] = copy.deepcopy(current.get("status"))
            for field in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp"):
                if field in current["metadata"]:
                    updated["metadata"][field] = current["metadata"][field]
        if updated.get("status") is None:
            updated.pop("status", None)
        updated = admit("UPDATE", updated, current, sub)
        _validate(rt, updated)
        name = current["metadata"]["name"]
        with self.lock:
            latest = self.stored(rt, current["metadata"].get("namespace"), name)
            if latest is None:
                raise not_found(rt, name)
            if latest["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name, STALE)  # written by someone else while admission ran
            if _desired_state(updated) != _desired_state(current):
                updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            if not dry_run:
                updated["metadata"]["resourceVersion"] = self._next_resource_version()
                self._put(rt, updated)
        return updated

    def delete(self, rt: ResourceType, namespace: str | None, name: str, dry_run: bool) -> Obj:
        with self.lock:
            removed = self.get(rt, namespace, name)
            if not dry_run:
                del self._table(rt)[(namespace or "", name)]
                self._sorted_keys.pop((rt.group, rt.kind), None)
                if rt.kind == "Namespace" and rt.group == "":
                    self._drop_namespace(name)  # what the namespace controller does, at once
        return removed

    def _drop_namespace(self, namespace: str) -> None:
        for (group, kind), table in self._objects.items():
            for key in [key for key in table if key[0] == namespace]:
                del table[key]
            self._sorted_keys.pop((group, kind), None)


def _metadata_of(rt: ResourceType, obj: Any) -> Obj:
    if not isinstance(obj, dict) or not isinstance(obj.setdefault("metadata", {}), dict):
        raise bad_request("the object provided is unrecognized")
    if obj.get("kind") not in (None, "", rt.kind):
        raise bad_request(f"the kind of the object ({obj['kind']}) does not match the kind on the URL ({rt.kind})")
    return obj["metadata"]


def _normalised(rt: ResourceType, obj: Obj) -> Obj:
    obj["apiVersion"], obj["kind"] = rt.group_version, rt.kind
    obj.setdefault("metadata", {})
    return obj


def _desired_state(obj: Obj) -> Obj:
    # generation counts changes to everything but metadata and status, as for custom resources
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _validate(rt: ResourceType, obj: Obj) -> None:
    """The metadata checks every kube-apiserver type makes; restores that break them fail the same way here."""
    meta = obj["metadata"]
    name = meta.get("name", "")
    if rt.group == "rbac.authorization.k8s.io":
        problem = None if name not in (".", "..") and not set("/%") & set(name) else \
            "may not contain '/' or '%' and may not be '.' or '..'"
    elif rt.kind in ("Namespace", "Service"):
        problem = None if len(name) <= 63 and _LABEL.fullmatch(name) else _LABEL_PROBLEM
    else:
        problem = None if len(name) <= 253 and _SUBDOMAIN.fullmatch(name) else _SUBDOMAIN_PROBLEM
    if problem:
        raise invalid(rt, name, "metadata.name", name, problem)
    for key, value in (meta.get("labels") or {}).items():
        problem = label_key_problem(key)
        if problem:
            raise invalid(rt, name, "metadata.labels", key, problem)
        problem = label_value_problem(str(value))
        if problem or not isinstance(value, str):
            raise invalid(rt, name, "metadata.labels", value, f"a valid label {problem or 'must be a string'}")


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as error:
        raise bad_request(f"the object provided is unrecognized: {error}") from None


def _yaml(body: bytes) -> Any:
    try:
        return yaml.safe_load(body or b"")
    except yaml.YAMLError as error:
        raise bad_request(f"error decoding YAML: {error}") from None


def _encode_continue(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_continue(token: str) -> Key:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(namespace), str(name)
    except (ValueError, TypeError):
        raise bad_request("continue key is not valid: illegal base64 data") from None


def _field_selector(text: str) -> Callable[[Obj], bool]:
    checks = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        match = re.fullmatch(r"(metadata\.name|metadata\.namespace)\s*(!=|==|=)\s*(.*)", term)
        if match is None:
            raise bad_request(f'"{term}" is not a known field selector: only "metadata.name", "metadata.namespace"')
        field_name, op, value = match.groups()
        checks.append((field_name.split(".")[1], op == "!=", value))

    def matches(obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        return all((meta.get(key, "") == value) != negate for key, negate, value in checks)

    return matches

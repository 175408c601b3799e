"""Objects and the verbs on them, with the server-side behaviour clients and restores depend on.

Stored objects are never changed in place: every write stores a new dict. Readers can therefore hand a stored
object to the HTTP layer for serialisation without holding the lock or copying it. Every write is also kept as an
event, as etcd keeps revisions: lists continue on the snapshot of their first page and watches replay from a
resourceVersion, until ``compact`` drops the history as etcd's compaction does.

Sources (kubernetes/kubernetes): staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go (create,
update, delete, finalizers, preconditions), staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go (list
pagination, continue tokens, 410 Expired), staging/src/k8s.io/apiserver/pkg/endpoints/handlers/create.go,
update.go and patch.go (what admission sees, name and apiVersion checks), staging/src/k8s.io/apiserver/pkg/registry/
rest/create.go and update.go (BeforeCreate/BeforeUpdate: namespace and system fields filled after admission),
plugin/pkg/admission/namespace/lifecycle/admission.go (creates in a terminating namespace) and
pkg/registry/core/namespace/storage/storage.go (namespace deletion).
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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import yaml

from kubectl_kvbackup.selectors import SelectorError, parse_selector

from . import jsonpatch
from .status import (STALE, ApiStatus, FieldError, already_exists, bad_request, conflict, expired,
                     forbidden_because, internal_error, invalid, not_found, unsupported_media_type)
from .types import Registry, ResourceType
from .validation import validate

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
TypeKey = tuple[str, str]  # (group, kind)
#: (operation, object, old object or None, subresource or None) -> the object as admission leaves it
Admit = Callable[[str, Obj, Obj | None, str | None], Obj]

# the namespaces every cluster has, so that creating in "default" works as it does against a real cluster
SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
_SERVER_SET = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")
_MERGE_MEDIA = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_JSON_PATCH = "application/json-patch+json"
#: finalizers the garbage collector acts on (store.go deletionFinalizersForGarbageCollection)
ORPHAN, FOREGROUND = "orphan", "foregroundDeletion"
#: the namespace controller's finalizer, in spec.finalizers (pkg/registry/core/namespace/strategy.go)
NAMESPACE_FINALIZER = "kubernetes"
_HISTORY_LIMIT = 200_000
_INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of the "
    "results. Continuing with the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show up in the list.")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    """One write, as a watch streams it: ADDED, MODIFIED or DELETED, at resourceVersion ``rv``."""

    rv: int
    type_key: TypeKey
    type: str
    object: Obj  # the new object; for DELETED the last state, under the deletion's resourceVersion
    old: Obj | None


class Store:
    def __init__(self, registry: Registry):
        self.registry = registry
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # notified on every write, for watches
        self._objects: dict[TypeKey, dict[Key, Obj]] = {}
        self._sorted_keys: dict[TypeKey, list[Key]] = {}  # cache for pagination, dropped on add/remove
        self._resource_version = 1000
        self._history: list[Event] = []
        self._compacted = self._resource_version  # history before this resourceVersion is gone
        namespace_type = registry.named("", "Namespace")
        for name in SYSTEM_NAMESPACES if namespace_type else ():
            self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # --- direct access, for seeding and assertions ---------------------------------------------------------

    def _next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._resource_version

    def _table(self, rt: ResourceType) -> dict[Key, Obj]:
        return self._objects.setdefault((rt.group, rt.kind), {})

    def _record(self, event: Event) -> None:
        self._history.append(event)
        if len(self._history) > _HISTORY_LIMIT:  # etcd compacts on its own too; benchmarks write a lot
            dropped = len(self._history) // 2
            self._compacted = self._history[dropped - 1].rv  # later snapshots can still be rebuilt
            del self._history[:dropped]
        self.changed.notify_all()

    def _put(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        table = self._table(rt)
        old = table.get(key)
        if old is None:
            self._sorted_keys.pop((rt.group, rt.kind), None)
        table[key] = obj
        self._record(Event(self._resource_version, (rt.group, rt.kind), "ADDED" if old is None else "MODIFIED",
                           obj, old))

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        del self._table(rt)[(meta.get("namespace", ""), meta["name"])]
        self._sorted_keys.pop((rt.group, rt.kind), None)
        last = {**obj, "metadata": {**meta, "resourceVersion": self._next_resource_version()}}
        self._record(Event(self._resource_version, (rt.group, rt.kind), "DELETED", last, obj))
        return last

    def compact(self) -> None:
        """Forget the history before now, as etcd's compaction does (every 5 minutes on a real cluster)."""
        with self.lock:
            self._compacted = self._resource_version
            self._history.clear()

    def events_since(self, type_key: TypeKey, rv: int) -> list[Event] | None:
        """The events of one type after ``rv``; None when ``rv`` is older than the history kept."""
        with self.lock:
            if rv < self._compacted:
                return None
            return [e for e in self._history[self._first_after(rv):] if e.type_key == type_key]

    def _first_after(self, rv: int) -> int:
        return bisect.bisect_right(self._history, rv, key=lambda e: e.rv)

    @property
    def compacted(self) -> int:
        with self.lock:
            return self._compacted

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
            stored.setdefault("spec", {"finalizers": [NAMESPACE_FINALIZER]})
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
        """Apply ``change`` to a copy of the object and store it under a new resourceVersion (as a controller).

        An object being deleted whose last finalizer ``change`` removed is deleted, as on any update."""
        with self.lock:
            current = self.stored(rt, namespace, name)
            if current is None:
                raise not_found(rt, name)
            changed = copy.deepcopy(current)
            change(changed)
            if _finalized(changed):
                return self._remove(rt, current)
            changed["metadata"]["resourceVersion"] = self._next_resource_version()
            self._put(rt, changed)
            return changed

    def objects(self, rt: ResourceType, namespace: str | None = None) -> list[Obj]:
        with self.lock:
            return [copy.deepcopy(o) for (ns, _), o in sorted(self._table(rt).items())
                    if namespace is None or ns == namespace]

    def types_with_objects(self) -> list[ResourceType]:
        with self.lock:
            keys = [k for k, table in self._objects.items() if table]
        return [rt for rt in self.registry.all() if (rt.group, rt.kind) in keys]

    # --- verbs ---------------------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        found = self.stored(rt, namespace, name)
        if found is None:
            raise not_found(rt, name)
        return found

    def list(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> Obj:
        """A page of a LIST. Continue pages read the snapshot of the first page (etcd3/store.go GetList); a token
        older than the compacted history answers 410 Expired with a token that continues at the latest state."""
        try:
            selector = parse_selector(query.get("labelSelector", ""))
        except SelectorError as error:
            raise bad_request(f"unable to parse requirement: {error}") from None
        field_matches = field_selector(query.get("fieldSelector", ""))
        limit = query.get("limit") or "0"
        if not limit.isdigit():
            raise bad_request(f'limit: Invalid value: "{limit}": must be a non-negative integer')
        snapshot, start = _decode_continue(query["continue"]) if query.get("continue") else (None, None)
        with self.lock:
            if snapshot is not None and 0 < snapshot < self._compacted:
                raise expired(_INCONSISTENT_CONTINUE, _encode_continue(-1, start))
            if snapshot is None or snapshot < 0:
                snapshot = self._resource_version
            keys, value = self._view(rt, snapshot)
            matching = [value(key) for key in keys[bisect.bisect_right(keys, start) if start else 0:]
                        if (namespace is None or key[0] == namespace)]
            matching = [o for o in matching if o is not None and selector.matches(o["metadata"].get("labels"))
                        and field_matches(o)]
        metadata: Obj = {"resourceVersion": str(snapshot)}
        page = matching[:int(limit)] if int(limit) else matching
        if len(page) < len(matching):
            last = page[-1]["metadata"]
            metadata["continue"] = _encode_continue(snapshot, (last.get("namespace", ""), last["name"]))
            if not query.get("labelSelector") and not query.get("fieldSelector"):
                # the store counts what is left only when it need not filter (etcd3/store.go: pred.Empty())
                metadata["remainingItemCount"] = len(matching) - len(page)
        # kube-apiserver writes kind and apiVersion on the items of custom resource lists only
        items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in page] if rt.builtin \
            else page
        return {"kind": f"{rt.kind}List", "apiVersion": rt.group_version, "metadata": metadata, "items": items}

    def _view(self, rt: ResourceType, snapshot: int) -> tuple[list[Key], Callable[[Key], Obj | None]]:
        """The sorted keys of a type at resourceVersion ``snapshot`` and the object of each (None: absent then)."""
        table = self._table(rt)
        keys = self._sorted_keys.get((rt.group, rt.kind))
        if keys is None:
            keys = self._sorted_keys[(rt.group, rt.kind)] = sorted(table)
        before: dict[Key, Obj | None] = {}  # the state at the snapshot of what changed after it
        for event in reversed(self._history[self._first_after(snapshot):]):
            if event.type_key == (rt.group, rt.kind):
                meta = event.object["metadata"]
                before[(meta.get("namespace", ""), meta["name"])] = event.old
        if not before:
            return keys, table.get
        return sorted(set(keys) | set(before)), lambda key: before[key] if key in before else table.get(key)

    def create(self, rt: ResourceType, namespace: str | None, obj: Any, admit: Admit, dry_run: bool) -> Obj:
        meta = _metadata_of(rt, obj)
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and not meta.get("generateName"):
            raise invalid(rt, "", [FieldError("metadata.name", "FieldValueRequired",
                                              "name or generateName is required")])
        for field in _SERVER_SET:
            meta.pop(field, None)
        self._check_namespace_lifecycle(rt, namespace, meta.get("name", ""))
        if meta.get("name") and self.stored(rt, namespace, meta["name"]) is not None:
            raise already_exists(rt, meta["name"])
        # kube-apiserver runs mutating admission before the storage strategy (rest.BeforeCreate): webhooks see the
        # status a client sent, no namespace when the client sent none and an empty name under generateName; only
        # then are the namespace set, the name generated and the status reset
        obj = admit("CREATE", _normalised(rt, obj), None, None)
        meta = obj["metadata"]
        if rt.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        if meta.get("resourceVersion"):  # etcd3/store.go Create: a plain error, answered 500
            raise internal_error("resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if rt.has_status:
            obj.pop("status", None)  # status is written through the status subresource only
        if rt.kind == "Namespace" and rt.group == "":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj["spec"] = {"finalizers": [NAMESPACE_FINALIZER]}
            obj["status"] = {"phase": "Active"}
        validate(rt, obj)
        with self.lock:
            if self.stored(rt, meta.get("namespace"), meta["name"]) is not None:
                raise already_exists(rt, meta["name"])
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            if not dry_run:  # a dry-run create is never given a resourceVersion
                meta["resourceVersion"] = self._next_resource_version()
                self._put(rt, obj)
        return obj

    def _check_namespace_lifecycle(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        """kube's NamespaceLifecycle admission: no creates in a namespace that is missing or being deleted."""
        namespaces = self.registry.named("", "Namespace")
        if not rt.namespaced or namespaces is None:
            return
        found = self.stored(namespaces, "", namespace or "")
        if found is None:
            raise not_found(namespaces, namespace or "")
        if (found.get("status") or {}).get("phase") == "Terminating":
            raise forbidden_because(
                rt, name, f"unable to create new content in namespace {namespace} because it is being terminated",
                [{"reason": "NamespaceTerminating", "message": f"namespace {namespace} is being terminated",
                  "field": "metadata.namespace"}])

    def update(self, rt: ResourceType, namespace: str | None, name: str, obj: Any, sub: str | None, admit: Admit,
               dry_run: bool) -> Obj:
        meta = _metadata_of(rt, obj)
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        current = self.get(rt, namespace, name)
        if meta.get("resourceVersion") and meta["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise conflict(rt, name, STALE)
        return self.commit(rt, current, _normalised(rt, obj), sub, admit, dry_run, put=True)

    def patch(self, rt: ResourceType, namespace: str | None, name: str, content_type: str, body: bytes,
              sub: str | None, admit: Admit, dry_run: bool) -> Obj:
        """JSON and merge patches; server-side apply is the apply module's."""
        media = content_type.split(";")[0].strip()
        if media not in (_JSON_PATCH, *_MERGE_MEDIA) or (media == _MERGE_MEDIA[1] and not rt.builtin):
            raise unsupported_media_type(rt)
        current = self.stored(rt, namespace, name)
        if current is None:
            raise not_found(rt, name)
        try:
            patched = (jsonpatch.apply(current, parse_json(body)) if media == _JSON_PATCH
                       else jsonpatch.merge(current, parse_json(body)))
        except jsonpatch.PatchError as error:
            raise invalid(rt, name, [FieldError("patch", "FieldValueInvalid", str(error), media)]) from None
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise bad_request("the patch leaves no object")
        check_patched_identity(rt, current, patched)
        if patched["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise conflict(rt, name, STALE)  # a patch carrying a resourceVersion is a precondition on it
        return self.commit(rt, current, patched, sub, admit, dry_run)

    def commit(self, rt: ResourceType, current: Obj, new: Obj, sub: str | None, admit: Admit, dry_run: bool,
                put: bool = False) -> Obj:
        # admission sees the object as sent (a PUT's status and missing namespace included); the strategy's
        # PrepareForUpdate and rest.BeforeUpdate only run after it
        admitted = admit("UPDATE", copy.deepcopy(new), current, sub)
        name = current["metadata"]["name"]
        if put and not rt.builtin and not admitted["metadata"].get("resourceVersion"):
            # custom resources refuse unconditional updates (customresource strategy AllowUnconditionalUpdate)
            raise invalid(rt, name, [FieldError("metadata.resourceVersion", "FieldValueInvalid",
                                                "must be specified for an update", value_text="0x0")])
        if sub == "status":
            updated = {**copy.deepcopy(current), "status": copy.deepcopy(admitted.get("status"))}
        else:
            updated = _normalised(rt, copy.deepcopy(admitted))
            if rt.has_status:
                updated["status"] = copy.deepcopy(current.get("status"))
            for field in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp",
                          "deletionGracePeriodSeconds"):
                if field in current["metadata"]:
                    updated["metadata"][field] = current["metadata"][field]
            if rt.kind == "Namespace" and rt.group == "":  # spec.finalizers change through /finalize only
                updated["spec"] = copy.deepcopy(current.get("spec"))
        if updated.get("status") is None:
            updated.pop("status", None)
        validate(rt, updated, current)
        with self.lock:
            latest = self.stored(rt, current["metadata"].get("namespace"), name)
            if latest is None:
                raise not_found(rt, name)
            if latest["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name, STALE)  # written by someone else while admission ran
            if _desired_state(updated) != _desired_state(current):
                updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            if dry_run:
                return updated
            if _finalized(updated):  # the last finalizer of an object being deleted is gone: so is the object
                return self._remove(rt, latest)
            updated["metadata"]["resourceVersion"] = self._next_resource_version()
            self._put(rt, updated)
        return updated

    def delete(self, rt: ResourceType, namespace: str | None, name: str, options: Obj, dry_run: bool) -> Obj:
        """DELETE as store.go does it: preconditions, then either gone at once (a Status, or the object for
        types that return it) or marked with deletionTimestamp while finalizers remain (the object)."""
        with self.lock:
            current = self.get(rt, namespace, name)
            _check_preconditions(rt, current, options.get("preconditions") or {})
            if rt.kind == "Namespace" and rt.group == "":
                return self._delete_namespace(rt, current, dry_run)
            finalizers = list(current["metadata"].get("finalizers") or [])
            policy = _propagation(options)
            for finalizer, wanted in ((ORPHAN, policy == "Orphan"), (FOREGROUND, policy == "Foreground")):
                if wanted and finalizer not in finalizers:
                    finalizers.append(finalizer)
                elif not wanted and policy and finalizer in finalizers:
                    finalizers.remove(finalizer)  # a later delete may change the policy
            if not finalizers:
                if dry_run:
                    return _deleted_answer(rt, current)
                return _deleted_answer(rt, self._remove(rt, current))
            marked = copy.deepcopy(current)
            marked["metadata"]["finalizers"] = finalizers
            marked["metadata"].setdefault("deletionTimestamp", now())
            marked["metadata"].setdefault("deletionGracePeriodSeconds", 0)
            if dry_run or marked == current:
                return marked
            marked["metadata"]["resourceVersion"] = self._next_resource_version()
            self._put(rt, marked)
            return marked

    def _delete_namespace(self, rt: ResourceType, current: Obj, dry_run: bool) -> Obj:
        """A namespace is marked Terminating; the namespace controller (``settle``) empties it, then it goes. Asked
        again while it terminates: 409 (pkg/registry/core/namespace/storage/storage.go Delete)."""
        if current["metadata"].get("deletionTimestamp") and (current.get("spec") or {}).get("finalizers"):
            raise conflict(rt, current["metadata"]["name"], "The system is ensuring all content is removed from this "
                           "namespace.  Upon completion, this namespace will automatically be purged by the system.")
        marked = copy.deepcopy(current)
        marked["metadata"].setdefault("deletionTimestamp", now())
        marked["metadata"].setdefault("deletionGracePeriodSeconds", 0)
        marked["status"] = {**(marked.get("status") or {}), "phase": "Terminating"}
        if dry_run or marked == current:
            return marked
        if not (marked.get("spec") or {}).get("finalizers") and not marked["metadata"].get("finalizers"):
            return self._remove(rt, current)
        marked["metadata"]["resourceVersion"] = self._next_resource_version()
        self._put(rt, marked)
        return marked

    def finalize_namespace(self, name: str) -> None:
        """What the namespace controller does once a terminating namespace is empty: drop its finalizer."""
        namespaces = self.registry.named("", "Namespace")
        assert namespaces is not None

        def drop(namespace: Obj) -> None:
            finalizers = [f for f in (namespace.get("spec") or {}).get("finalizers") or [] if f != NAMESPACE_FINALIZER]
            namespace["spec"] = {**(namespace.get("spec") or {}), "finalizers": finalizers}

        self.rewrite(namespaces, "", name, drop)


def _finalized(obj: Obj) -> bool:
    """Being deleted with no finalizer left (a namespace counts its spec.finalizers too)."""
    meta = obj["metadata"]
    pending = list(meta.get("finalizers") or [])
    if (obj.get("apiVersion"), obj.get("kind")) == ("v1", "Namespace"):
        pending += (obj.get("spec") or {}).get("finalizers") or []
    return bool(meta.get("deletionTimestamp")) and not pending


def _propagation(options: Obj) -> str | None:
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    if policy not in (None, "Orphan", "Foreground", "Background"):
        raise ApiStatus(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                                        f'value: "{policy}": supported values: "Foreground", "Background", "Orphan"')
    return policy


def _check_preconditions(rt: ResourceType, current: Obj, preconditions: Obj) -> None:
    """storage.Preconditions.Check (staging/src/k8s.io/apiserver/pkg/storage/interfaces.go): a 409 Conflict."""
    meta = current["metadata"]
    for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        wanted = preconditions.get(field)
        if wanted is not None and wanted != meta.get(field):
            raise conflict(rt, meta["name"], f"Precondition failed: {label} in precondition: {wanted}, {label} in "
                                             f"object meta: {meta.get(field)}")


def _deleted_answer(rt: ResourceType, deleted: Obj) -> Obj:
    """What a DELETE that removed the object answers: the object for pods and custom resources (their stores set
    ReturnDeletedObject), a Success Status naming it for the other built-in types (store.go finalizeDelete)."""
    if not rt.builtin or (rt.group, rt.kind) == ("", "Pod"):
        return deleted
    details: Obj = {"name": deleted["metadata"]["name"], "kind": rt.plural, "uid": deleted["metadata"].get("uid")}
    if rt.group:
        details["group"] = rt.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def check_patched_identity(rt: ResourceType, current: Obj, patched: Obj) -> None:
    """patch.go checkName and the decoder: a patch may not rename, move or retype the object (400)."""
    name, new_name = current["metadata"]["name"], patched["metadata"].get("name")
    if new_name != name:
        raise bad_request(f"the name of the object ({new_name}) does not match the name on the URL ({name})")
    namespace, new_namespace = current["metadata"].get("namespace"), patched["metadata"].get("namespace")
    if new_namespace != namespace:
        raise bad_request(f"the namespace of the object ({new_namespace}) does not match the namespace on the "
                          f"request ({namespace})")
    if patched.get("apiVersion") != rt.group_version:
        raise bad_request(f"the API version in the data ({patched.get('apiVersion')}) does not match the expected "
                          f"API version ({rt.group_version})")


def _metadata_of(rt: ResourceType, obj: Any) -> Obj:
    if not isinstance(obj, dict) or not isinstance(obj.setdefault("metadata", {}), dict):
        raise bad_request("the object provided is unrecognized")
    if obj.get("kind") not in (None, "", rt.kind):
        raise bad_request(f"the kind of the object ({obj['kind']}) does not match the kind on the URL ({rt.kind})")
    if obj.get("apiVersion") not in (None, "", rt.group_version):  # create.go / update.go
        raise bad_request(f"the API version in the data ({obj['apiVersion']}) does not match the expected API "
                          f"version ({rt.group_version})")
    return obj["metadata"]


def _normalised(rt: ResourceType, obj: Obj) -> Obj:
    obj["apiVersion"], obj["kind"] = rt.group_version, rt.kind
    obj.setdefault("metadata", {})
    return obj


def _desired_state(obj: Obj) -> Obj:
    # generation counts changes to everything but metadata and status, as for custom resources
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as error:
        raise bad_request(f"the object provided is unrecognized: {error}") from None


def parse_yaml(body: bytes) -> Any:
    try:
        return yaml.safe_load(body or b"")
    except yaml.YAMLError as error:
        raise bad_request(f"error decoding YAML: {error}") from None


def _encode_continue(rv: int, key: Key | None) -> str:
    # etcd3's token: {"v": "meta.k8s.io/v1", "rv": <snapshot>, "start": <key to continue after>}; rv -1 means
    # "at the latest state"
    start = "/".join(key) if key else ""
    return base64.urlsafe_b64encode(json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).encode()).decode()


def _decode_continue(token: str) -> tuple[int, Key | None]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        namespace, _, name = str(decoded["start"]).rpartition("/")
        return int(decoded["rv"]), ((namespace, name) if decoded["start"] else None)
    except (ValueError, TypeError, KeyError):
        raise bad_request("continue key is not valid: illegal base64 data") from None


def field_selector(text: str) -> Callable[[Obj], bool]:
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

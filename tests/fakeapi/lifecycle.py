"""What kube-controller-manager does after a DELETE, run when a test asks (``FakeKubeAPI.settle``).

- The namespace controller deletes everything in a terminating namespace, waits for what has finalizers, then
  drops the namespace's ``kubernetes`` finalizer and the namespace goes (pkg/controller/namespace/deletion/
  namespaced_resources_deleter.go).
- The garbage collector (pkg/controller/garbagecollector/garbagecollector.go): an ``orphan`` finalizer removes the
  owner's references from its dependents; ``foregroundDeletion`` deletes the dependents first; an object all of
  whose owners are gone (no object of that kind and name with that uid) is deleted. Owners of kinds the server does
  not serve are never judged absent, as the collector cannot resolve them.

Real controllers act on their own a moment later; here nothing happens until ``settle`` so tests see the state
between the DELETE and the end of the deletion.
"""

from __future__ import annotations

from typing import Any

from .storage import FOREGROUND, ORPHAN, Store
from .types import ResourceType

Obj = dict[str, Any]
_ROUNDS = 20  # deletions cascade a few levels at most; bounded so that a cycle cannot hang a test


def settle(store: Store) -> None:
    for _ in range(_ROUNDS):
        if not (_collect_garbage(store) | _finish_namespaces(store)):
            return


def _everything(store: Store) -> list[tuple[ResourceType, Obj]]:
    return [(rt, obj) for rt in store.types_with_objects() for obj in store.objects(rt)]


def _key(obj: Obj) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _delete(store: Store, rt: ResourceType, obj: Obj, propagation: str = "Background") -> None:
    namespace, name = _key(obj)
    if store.stored(rt, namespace, name) is not None and not obj["metadata"].get("deletionTimestamp"):
        store.delete(rt, namespace or None, name, {"propagationPolicy": propagation}, dry_run=False)


def _drop_finalizer(store: Store, rt: ResourceType, obj: Obj, finalizer: str) -> None:
    def drop(changed: Obj) -> None:
        changed["metadata"]["finalizers"] = [f for f in changed["metadata"].get("finalizers") or []
                                             if f != finalizer]

    store.rewrite(rt, *_key(obj), drop)


def _collect_garbage(store: Store) -> bool:
    acted = False
    objects = _everything(store)
    uids = {obj["metadata"].get("uid") for _, obj in objects}
    dependents: dict[str, list[tuple[ResourceType, Obj]]] = {}
    for rt, obj in objects:
        for ref in obj["metadata"].get("ownerReferences") or []:
            dependents.setdefault(ref.get("uid", ""), []).append((rt, obj))
    for rt, obj in objects:
        meta = obj["metadata"]
        finalizers = meta.get("finalizers") or []
        mine = dependents.get(meta.get("uid", ""), [])
        if meta.get("deletionTimestamp") and ORPHAN in finalizers:
            for dependent_rt, dependent in mine:
                store.rewrite(dependent_rt, *_key(dependent), lambda d, uid=meta.get("uid"): d["metadata"].update(
                    ownerReferences=[r for r in d["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]))
            _drop_finalizer(store, rt, obj, ORPHAN)
            acted = True
        elif meta.get("deletionTimestamp") and FOREGROUND in finalizers:
            for dependent_rt, dependent in mine:
                _delete(store, dependent_rt, dependent, "Foreground")
            if not [d for _, d in mine if store.stored(_rt_of(store, d), *_key(d)) is not None]:
                _drop_finalizer(store, rt, obj, FOREGROUND)
            acted = True
        elif meta.get("ownerReferences") and not meta.get("deletionTimestamp") and \
                all(_owner_absent(store, obj, ref, uids) for ref in meta["ownerReferences"]):
            _delete(store, rt, obj)
            acted = True
    return acted


def _rt_of(store: Store, obj: Obj) -> ResourceType:
    return store.registry.of_object(obj)


def _owner_absent(store: Store, dependent: Obj, ref: Obj, uids: set[str]) -> bool:
    group = str(ref.get("apiVersion", "")).rpartition("/")[0]
    rt = store.registry.named(group, str(ref.get("kind", "")))
    if rt is None or rt.kind != ref.get("kind"):
        return False  # unresolvable owner kinds are left alone
    if ref.get("uid") not in uids:
        return True
    owner = store.stored(rt, dependent["metadata"].get("namespace", "") if rt.namespaced else "", ref.get("name", ""))
    return owner is None or owner["metadata"].get("uid") != ref.get("uid")


def _finish_namespaces(store: Store) -> bool:
    namespaces = store.registry.named("", "Namespace")
    if namespaces is None:
        return False
    acted = False
    for namespace in store.objects(namespaces):
        name = namespace["metadata"]["name"]
        if (namespace.get("status") or {}).get("phase") != "Terminating":
            continue
        contents = [(rt, obj) for rt in store.types_with_objects() if rt.namespaced for obj in store.objects(rt, name)]
        for rt, obj in contents:
            _delete(store, rt, obj)
        if not [1 for rt, obj in contents if store.stored(rt, name, obj["metadata"]["name"]) is not None]:
            store.finalize_namespace(name)
        acted = acted or bool(contents) or store.stored(namespaces, "", name) is None
    return acted

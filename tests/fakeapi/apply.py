"""Server-side apply (``application/apply-patch+yaml``), a faithful subset of kube-apiserver's field management.

Sources (kubernetes/kubernetes): staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go (applyPatcher: 422
without fieldManager, 201 when the apply created the object, name checks), staging/src/k8s.io/apiserver/pkg/
endpoints/handlers/fieldmanager and staging/src/k8s.io/apimachinery/pkg/util/managedfields (ownership, conflicts,
``force``, fields a manager stops applying are removed unless another manager owns them, managedFields).

What is modelled: ownership per manager of leaf fields — scalars, atomic lists, empty maps — at any depth of maps,
and of list entries keyed by ``name`` in built-in types (as their schemas make ``webhooks``, ``containers``, ``rules``
lists keyed by name); a conflict is a field another applier owns with a different value.
What is not: managers of ``Update`` operations (fields written by create, update or patch belong to no manager here,
so applying over them never conflicts), list keys other than ``name``, set-type lists, OpenAPI schemas
(custom resources' lists are atomic, as they are without x-kubernetes-list-type), apply to subresources.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .status import ApiStatus, FieldError, bad_request, conflict, invalid_all
from .storage import STALE, Admit, Store, check_patched_identity, now, parse_yaml
from .types import ResourceType

Obj = dict[str, Any]
Path = tuple[str, ...]
#: what no manager owns: identity and server-written fields
_UNOWNED_TOP = ("apiVersion", "kind", "status")
_UNOWNED_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                 "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")


def apply(store: Store, rt: ResourceType, namespace: str | None, name: str, body: bytes, sub: str | None,
          admit: Admit, dry_run: bool, manager: str | None, force: bool) -> tuple[bool, Obj]:
    """(created, object) for one apply request by ``manager``."""
    if not manager:
        raise invalid_all("PatchOptions", "meta.k8s.io", "", [FieldError(
            "fieldManager", "FieldValueRequired", "is required for apply patch")])
    config = parse_yaml(body)
    if not isinstance(config, dict) or not isinstance(config.get("metadata") or {}, dict):
        raise bad_request("the object provided is unrecognized")
    if config.get("apiVersion") != rt.group_version or config.get("kind") != rt.kind:
        raise bad_request(f"incorrect version specified in apply patch. Specified patch version: "
                          f"{config.get('apiVersion')}, expected: {rt.group_version}")
    config.setdefault("metadata", {})
    if config["metadata"].get("name", name) != name:
        raise bad_request(f"the name of the object ({config['metadata']['name']}) does not match the name on the "
                          f"URL ({name})")
    current = store.stored(rt, namespace, name)
    if current is None:
        created = copy.deepcopy(config)
        created["metadata"]["name"] = name
        created["metadata"]["managedFields"] = [_entry(rt, manager, _owned(rt, config))]
        return True, store.create(rt, namespace, created, admit, dry_run)
    wanted_version = config["metadata"].get("resourceVersion")
    if wanted_version and wanted_version != current["metadata"]["resourceVersion"]:
        raise conflict(rt, name, STALE)
    managers = _managers(current)
    applied = _owned(rt, config)
    taken: set[Path] = set()
    clashes = []
    for other, paths in managers.items():
        if other == manager:
            continue
        for path in sorted(applied & paths):
            if _value(current, path) != _value(config, path):
                clashes.append((other, path))
                taken.add(path)
    if clashes and not force:
        raise _conflicts(rt, name, clashes)
    result = copy.deepcopy(current)
    kept_by_others = set().union(*(paths - taken for other, paths in managers.items() if other != manager))
    for path in sorted(managers.get(manager, set()) - applied - kept_by_others, key=len, reverse=True):
        _remove(result, path)
    _merge(rt, result, {**config, "metadata": {k: v for k, v in config["metadata"].items()
                                               if k not in _UNOWNED_META}})
    managers = {other: paths - taken for other, paths in managers.items() if other != manager}
    managers[manager] = applied
    result["metadata"]["managedFields"] = [_entry(rt, m, paths) for m, paths in managers.items() if paths]
    check_patched_identity(rt, current, result)
    return False, store.commit(rt, current, result, sub, admit, dry_run)


def _conflicts(rt: ResourceType, name: str, clashes: list[tuple[str, Path]]) -> ApiStatus:
    """409 Conflict with one cause per field, as the field manager words them."""
    causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{other}": {_dotted(path)}',
               "field": _dotted(path)} for other, path in clashes]
    count = f"{len(causes)} conflict{'s' if len(causes) > 1 else ''}"
    error = conflict(rt, name, f"Apply failed with {count}: {'; '.join(c['message'] for c in causes)}")
    assert error.details is not None
    error.details["causes"] = causes
    return error


def _dotted(path: Path) -> str:
    return "." + ".".join(p[2:] if p.startswith("f:") else f"[{p[2:]}]" for p in path)


def _keyed(rt: ResourceType, items: Any) -> bool:
    return rt.builtin and isinstance(items, list) and bool(items) and \
        all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def _item_key(name: str) -> str:
    return "k:" + json.dumps({"name": name}, separators=(",", ":"))


def _owned(rt: ResourceType, obj: Obj) -> set[Path]:
    """The leaf paths an applied configuration sets."""
    top = {k: v for k, v in obj.items() if k not in _UNOWNED_TOP}
    top["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _UNOWNED_META}
    if not top["metadata"]:
        del top["metadata"]
    return _leaves(rt, top, ())


def _leaves(rt: ResourceType, value: Any, path: Path) -> set[Path]:
    if isinstance(value, dict) and value:
        return set().union(*(_leaves(rt, v, path + (f"f:{k}",)) for k, v in value.items()))
    if _keyed(rt, value):
        found: set[Path] = set()
        for item in value:
            key = path + (_item_key(item["name"]),)
            found |= {key + (".",)} | _leaves(rt, {k: v for k, v in item.items() if k != "name"}, key)
        return found
    return {path}


def _step(node: Any, segment: str) -> Any:
    if isinstance(node, dict) and segment.startswith("f:"):
        return node.get(segment[2:], _MISSING)
    if isinstance(node, list) and segment.startswith("k:"):
        name = json.loads(segment[2:])["name"]
        return next((i for i in node if isinstance(i, dict) and i.get("name") == name), _MISSING)
    if segment == ".":
        return node
    return _MISSING


_MISSING = object()


def _value(obj: Obj, path: Path) -> Any:
    node: Any = obj
    for segment in path:
        node = _step(node, segment)
        if node is _MISSING:
            return _MISSING
    return node


def _remove(obj: Obj, path: Path) -> None:
    """Remove a field a manager no longer applies, and the maps it leaves empty."""
    if path and path[-1] == ".":
        path = path[:-1]
    parents = [obj]
    for segment in path[:-1]:
        parents.append(_step(parents[-1], segment))
        if parents[-1] is _MISSING:
            return
    container, last = parents[-1], path[-1]
    if isinstance(container, dict) and last.startswith("f:"):
        container.pop(last[2:], None)
    elif isinstance(container, list) and last.startswith("k:"):
        item = _step(container, last)
        if item is not _MISSING:
            container.remove(item)
    for depth in range(len(path) - 2, -1, -1):  # maps the removal left empty go too, metadata itself excepted
        holder, child, segment = parents[depth], parents[depth + 1], path[depth]
        if child == {} and isinstance(holder, dict) and segment.startswith("f:") and path[:depth + 1] != ("f:metadata",):
            holder.pop(segment[2:], None)


def _merge(rt: ResourceType, live: Obj, config: Obj) -> None:
    for key, value in config.items():
        if key == "status" or (key == "metadata" and not isinstance(value, dict)):
            continue
        have = live.get(key)
        if isinstance(value, dict) and isinstance(have, dict):
            _merge(rt, have, value)
        elif _keyed(rt, value) and (_keyed(rt, have) or have == []):
            by_name = {i["name"]: i for i in have}
            for item in value:
                if item["name"] in by_name:
                    _merge(rt, by_name[item["name"]], item)
                else:
                    have.append(copy.deepcopy(item))
        else:
            live[key] = copy.deepcopy(value)


def _managers(obj: Obj) -> dict[str, set[Path]]:
    managers: dict[str, set[Path]] = {}
    for entry in obj["metadata"].get("managedFields") or []:
        if entry.get("operation") == "Apply":
            managers.setdefault(entry.get("manager", ""), set()).update(_from_fields(entry.get("fieldsV1") or {}))
    return managers


def _entry(rt: ResourceType, manager: str, paths: set[Path]) -> Obj:
    return {"manager": manager, "operation": "Apply", "apiVersion": rt.group_version, "time": now(),
            "fieldsType": "FieldsV1", "fieldsV1": _to_fields(paths)}


def _to_fields(paths: set[Path]) -> Obj:
    tree: Obj = {}
    for path in paths:
        node = tree
        for segment in path:
            node = node.setdefault(segment, {})
    return tree


def _from_fields(tree: Obj, path: Path = ()) -> set[Path]:
    if not tree:
        return {path}
    found: set[Path] = set()
    for segment, child in tree.items():
        found |= {path + (".",)} if segment == "." else _from_fields(child, path + (segment,))
    return found

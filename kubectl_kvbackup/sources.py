"""Where objects come from: a live cluster (each kind listed once, then answered from memory) or manifest files.

Both sources answer the graph's ``Index`` protocol, so the same walk runs online and offline.
"""

from __future__ import annotations

import json
import os
import sys
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator, Protocol

import yaml

from . import kinds
from .cluster import ApiError, Connection, KubeError, collection_path, object_path
from .graph.edges import Obj
from .kinds import Kind
from .refs import Ref, ref_of
from .selectors import Selector, parse_selector


class Source(Protocol):
    def get(self, ref: Ref) -> Obj | None: ...

    def list(self, kind: Kind, namespace: str) -> list[Obj]: ...

    def labelled(self, kind: Kind, namespace: str, key: str, value: str) -> list[Obj]: ...

    def owned_by(self, kind: Kind, namespace: str, uid: str) -> list[Obj]: ...

    def list_all(self, kind: Kind) -> list[Obj]: ...

    def not_found(self, kind: Kind, namespace: str, name: str) -> KubeError: ...


class Lookups(ABC):
    """The graph index's ``labelled`` and ``owned_by`` over a source's ``list``: each grouping of one kind and
    namespace (by one label key, or by owner UID) is made on first use and kept, as the listings themselves are."""

    def __init__(self) -> None:
        self._groupings: dict[tuple[str, str, str, str], dict[Hashable, list[Obj]]] = {}

    @abstractmethod
    def list(self, kind: Kind, namespace: str) -> list[Obj]: ...

    def _grouped(self, kind: Kind, namespace: str, by: str,
                 keys_of: Callable[[Obj], Iterable[Hashable]]) -> dict[Hashable, list[Obj]]:
        slot = (kind.group, kind.kind, namespace if kind.namespaced else "", by)
        if slot not in self._groupings:
            grouped: dict[Hashable, list[Obj]] = {}
            for obj in self.list(kind, namespace):
                for key in keys_of(obj):
                    grouped.setdefault(key, []).append(obj)
            self._groupings[slot] = grouped
        return self._groupings[slot]

    def labelled(self, kind: Kind, namespace: str, key: str, value: str) -> list[Obj]:
        def label_value(obj: Obj) -> list[Hashable]:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            return [labels[key]] if key in labels and isinstance(labels[key], Hashable) else []
        return list(self._grouped(kind, namespace, f"label {key}", label_value).get(value, ()))

    def owned_by(self, kind: Kind, namespace: str, uid: str) -> list[Obj]:
        def owner_uids(obj: Obj) -> Iterable[Hashable]:
            references = (obj.get("metadata") or {}).get("ownerReferences") or []
            uids = (r.get("uid") or "" for r in references if isinstance(r, dict))
            # once per UID, though an object may name the same owner twice
            return dict.fromkeys(u for u in uids if isinstance(u, Hashable))
        return list(self._grouped(kind, namespace, "owner uids", owner_uids).get(uid, ()))


# --- manifests -----------------------------------------------------------------------------------------------

class ManifestError(KubeError):
    pass


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _manifest_files(path: str) -> Iterator[str]:
    if path == "-" or os.path.isfile(path):
        yield path
    elif os.path.isdir(path):
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(MANIFEST_SUFFIXES):
                    yield os.path.join(folder, name)
    else:
        raise ManifestError(f'error: the path "{path}" does not exist')


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: about 10x faster


def _documents(path: str) -> Iterator[tuple[int, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"error: cannot read {path}: {error}") from None
    loaded = 0
    try:
        if path.endswith(".json") or text.lstrip().startswith(("{", "[")):
            yield 1, json.loads(text)
            return
        for document in yaml.load_all(text, Loader=_LOADER):
            loaded += 1
            yield loaded, document
    except ValueError as error:  # JSON
        raise ManifestError(f"error: error parsing {path}: {error}") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f", line {where.line + 1}" if where is not None else ""
        detail = str(getattr(error, "problem", None) or error)
        raise ManifestError(f"error: error parsing {path} (document {loaded + 1}){line}: {detail}") from None


def _objects_of(document: Any, path: str, number: int) -> Iterator[Obj]:
    if document is None:
        return
    where = f"{path} (document {number})"
    if isinstance(document, list):
        for item in document:
            yield from _objects_of(item, path, number)
        return
    if not isinstance(document, dict):
        raise ManifestError(f"error: error parsing {where}: expected a Kubernetes object, found {type(document).__name__}")
    kind = document.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(document.get("items"), list):
        for item in document["items"]:
            yield from _objects_of(item, path, number)
        return
    missing = [f for f in ("apiVersion", "kind") if not isinstance(document.get(f), str) or not document.get(f)]
    if not isinstance(document.get("metadata"), dict) or not (document.get("metadata") or {}).get("name"):
        missing.append("metadata.name")
    if missing:
        raise ManifestError(f"error: error validating {where}: missing {', '.join(missing)}: "
                            "each document must be a Kubernetes object or a List of them")
    yield document


def load_manifests(paths: Iterable[str], default_namespace: str) -> list[Obj]:
    """Every object in the given files, directories (recursively) and ``-`` (stdin); namespaces defaulted."""
    objects = []
    for given in paths:
        for path in _manifest_files(given):
            for number, document in _documents(path):
                for obj in _objects_of(document, path, number):
                    group, kind = kinds.group_of(obj["apiVersion"]), obj["kind"]
                    namespaced = not kinds.known(group, kind) or kinds.kind_for(group, kind).namespaced
                    if namespaced and not obj["metadata"].get("namespace"):
                        obj["metadata"]["namespace"] = default_namespace
                    objects.append(obj)
    return objects


class ManifestSource(Lookups):
    """Objects read from files: the same graph without a cluster."""

    def __init__(self, objects: Iterable[Obj]):
        super().__init__()
        self._by_ref: dict[Ref, Obj] = {}
        self._by_kind: dict[tuple[str, str, str], list[Obj]] = defaultdict(list)
        for obj in objects:
            ref = ref_of(obj)
            if ref in self._by_ref:  # a later document wins, as with kubectl apply
                self._by_kind[(ref.group, ref.kind, ref.namespace)].remove(self._by_ref[ref])
            self._by_ref[ref] = obj
            self._by_kind[(ref.group, ref.kind, ref.namespace)].append(obj)

    def get(self, ref: Ref) -> Obj | None:
        return self._by_ref.get(ref)

    def list(self, kind: Kind, namespace: str) -> list[Obj]:
        return list(self._by_kind.get((kind.group, kind.kind, namespace if kind.namespaced else ""), []))

    def list_all(self, kind: Kind) -> list[Obj]:
        return [o for (g, k, _), objs in sorted(self._by_kind.items()) if (g, k) == (kind.group, kind.kind)
                for o in objs]

    def not_found(self, kind: Kind, namespace: str, name: str) -> KubeError:
        where = f' in namespace "{namespace}"' if kind.namespaced else ""
        return KubeError(f'error: {kind.resource} "{name}" not found{where} in the manifests given with -f')


# --- cluster -------------------------------------------------------------------------------------------------

class ListForbidden(KubeError):
    """RBAC refused a LIST. Named lookups can still GET one object at a time, as a namespace user often may."""

@dataclass(frozen=True)
class Served:
    version: str
    plural: str
    namespaced: bool


class ClusterSource(Lookups):
    """A cluster, read with one paginated LIST per kind and namespace (per kind with ``all_namespaces``).

    Every later lookup is answered from that cache, so the number of requests grows with kinds, not objects.
    """

    def __init__(self, connection: Connection, all_namespaces: bool = False, warn=None):
        super().__init__()
        self.connection = connection
        self.all_namespaces = all_namespaces
        self._warn = warn or (lambda message: None)
        self._groups: dict[str, str] | None = None
        self._resources: dict[tuple[str, str], dict[str, Served]] = {}
        self._cache: dict[tuple[str, str, str], dict[str, Obj]] = {}
        self._listed_cluster_wide: set[tuple[str, str]] = set()
        self._forbidden: dict[tuple[str, str, str], ListForbidden] = {}
        self._fetched: dict[Ref, Obj | None] = {}

    # discovery: which version of each group the server prefers, and the kinds it serves there
    def served(self, kind: Kind) -> Served | None:
        if kind.group == "":
            version = "v1"
        else:
            if self._groups is None:
                listing = self.connection.request("GET", "/apis")
                self._groups = {g["name"]: (g.get("preferredVersion") or g["versions"][0])["version"]
                                for g in listing.get("groups") or []}
            version = self._groups.get(kind.group)
            if version is None:
                self._warn(f"warning: the server does not serve the API group {kind.group}: "
                           f"no {kind.kind} objects can be found")
                self._groups[kind.group] = ""
                return None
            if not version:
                return None
        key = (kind.group, version)
        if key not in self._resources:
            path = f"/apis/{kind.group}/{version}" if kind.group else "/api/v1"
            listing = self.connection.request("GET", path)
            self._resources[key] = {r["kind"]: Served(version, r["name"], bool(r.get("namespaced")))
                                    for r in listing.get("resources") or [] if "/" not in r["name"]}
        return self._resources[key].get(kind.kind)

    def _load(self, kind: Kind, namespace: str) -> dict[str, Obj]:
        scope = "" if (not kind.namespaced or self.all_namespaces) else namespace
        key = (kind.group, kind.kind, namespace if kind.namespaced else "")
        if key in self._cache:
            return self._cache[key]
        if key in self._forbidden:
            raise self._forbidden[key]
        if scope == "" and (kind.group, kind.kind) in self._listed_cluster_wide:
            return self._cache.setdefault(key, {})
        served = self.served(kind)
        if served is None:
            return self._cache.setdefault(key, {})
        path = collection_path(kind, served.version, scope or None)
        api_version = f"{kind.group}/{served.version}" if kind.group else served.version
        try:
            items = list(self.connection.list_pages(path))
        except ApiError as error:
            if error.status == 403:
                self._forbidden[key] = ListForbidden(
                    f"{error}; kvbackup needs permission to list {kind.resource}"
                    f"{' in namespace ' + namespace if scope else ' at the cluster scope'}: see README (RBAC)")
                raise self._forbidden[key] from None
            raise
        if scope == "":
            self._listed_cluster_wide.add((kind.group, kind.kind))
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind.kind)
            item_ns = (item.get("metadata") or {}).get("namespace", "") if kind.namespaced else ""
            self._cache.setdefault((kind.group, kind.kind, item_ns), {})[item["metadata"]["name"]] = item
        return self._cache.setdefault(key, {})

    def get(self, ref: Ref) -> Obj | None:
        if not kinds.known(ref.group, ref.kind):
            return None
        kind = kinds.kind_for(ref.group, ref.kind)
        try:
            return self._load(kind, ref.namespace).get(ref.name)
        except ListForbidden:
            return self._get_one(kind, ref)

    def _get_one(self, kind: Kind, ref: Ref) -> Obj | None:
        """One object by name, for a kind the user may get but not list (cluster instancetypes, say)."""
        if ref not in self._fetched:
            served = self.served(kind)
            try:
                found = self.connection.request("GET", object_path(kind, served.version, ref.namespace, ref.name)) \
                    if served else None
            except ApiError as error:
                if error.status == 404:
                    found = None
                elif error.status == 403:
                    raise KubeError(f"{error}; kvbackup needs permission to list or get {kind.resource}: see README "
                                    "(RBAC)") from None
                else:
                    raise
            self._fetched[ref] = found
        return self._fetched[ref]

    def list(self, kind: Kind, namespace: str) -> list[Obj]:
        return list(self._load(kind, namespace).values())

    def list_all(self, kind: Kind) -> list[Obj]:
        self._load(kind, "")
        return [o for (g, k, _), objs in sorted(self._cache.items()) if (g, k) == (kind.group, kind.kind)
                for o in objs.values()]

    def not_found(self, kind: Kind, namespace: str, name: str) -> KubeError:
        return KubeError(f'Error from server (NotFound): {kind.resource} "{name}" not found')


# --- roots ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """What the user asked for: named objects, a label selector, or everything, in a namespace or all of them."""

    targets: tuple[tuple[Kind, str], ...] = ()
    selector: str | None = None
    everything: bool = False
    namespace: str = "default"
    all_namespaces: bool = False


def _candidates(source: Source, kind: Kind, selection: Selection) -> list[Obj]:
    return source.list_all(kind) if selection.all_namespaces else source.list(kind, selection.namespace)


def select_roots(source: Source, selection: Selection) -> list[tuple[Ref, Obj]]:
    """The graph's roots: named objects, which must exist, or every VM, VMI, VMI replica set and pool matching."""
    if selection.targets:
        roots = []
        for kind, name in selection.targets:
            ref = Ref.of(kind, selection.namespace, name)
            obj = source.get(ref)
            if obj is None:
                raise source.not_found(kind, selection.namespace, name)
            roots.append((ref, obj))
        return roots
    selector: Selector = parse_selector(selection.selector or "")
    chosen = [(ref_of(obj), obj) for kind in kinds.ROOT_KINDS for obj in _candidates(source, kind, selection)
              if selector.matches((obj.get("metadata") or {}).get("labels") or {})]
    return sorted(chosen, key=lambda pair: (kinds.ROOT_KINDS.index(pair[0].kind_info), pair[0].namespace,
                                            pair[0].name))

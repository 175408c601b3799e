"""URL routing and the discovery documents (/api, /apis, group versions) clients read before anything else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from .status import unknown_path
from .types import SUBRESOURCE_GROUP, SUBRESOURCE_VERSION, VMI_SUBRESOURCES, Registry, ResourceType

Obj = dict[str, Any]

#: the release whose behaviour the fake claims (docs/testing.md): matchConditions are GA there (1.30)
VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.2", "gitCommit": "fake", "gitTreeState": "clean",
           "buildDate": "2024-06-11T20:20:00Z", "goVersion": "go1.22.4", "compiler": "gc", "platform": "linux/amd64"}
_SUBRESOURCE_VERBS = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"], "log": ["get"],
                      "finalize": ["update"], "freeze": ["update"], "unfreeze": ["update"]}
#: KubeVirt's aggregated API stores nothing; this type only names its resource in messages and RBAC
VMI_SUBRESOURCE_TYPE = ResourceType(SUBRESOURCE_GROUP, SUBRESOURCE_VERSION, "VirtualMachineInstance",
                                    "virtualmachineinstances", subresources=VMI_SUBRESOURCES)


class PageNotFound(Exception):
    """A path no API handler serves: kube-apiserver's last handler answers it with Go's text/plain
    ``404 page not found`` (staging/src/k8s.io/apiserver/pkg/server/handler.go, the NotFound delegate)."""


@dataclass(frozen=True)
class Route:
    rt: ResourceType | None = None
    namespace: str | None = None  # None: cluster-scoped, or every namespace
    name: str | None = None
    subresource: str | None = None
    document: Obj | None = None  # a discovery document, answered as is


def route(registry: Registry, path: str) -> Route:
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if parts == ["version"]:
        return Route(document=VERSION)
    if parts == ["api"]:
        return Route(document={"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
    if parts == ["apis"]:
        return Route(document={"kind": "APIGroupList", "apiVersion": "v1",
                               "groups": [_group(registry, g) for g in sorted(_versions(registry))]})
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == "apis":
        if len(parts) == 2:
            if parts[1] not in _versions(registry):
                raise PageNotFound(path)
            return Route(document=_group(registry, parts[1]))
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise PageNotFound(path)
    if version not in _versions(registry).get(group, ["v1"] if group == "" else []):
        raise PageNotFound(path)
    if not rest:
        return Route(document=_resource_list(registry, group, version))
    if group == SUBRESOURCE_GROUP:
        if len(rest) != 5 or rest[0] != "namespaces" or rest[2] != "virtualmachineinstances" or \
                rest[4] not in VMI_SUBRESOURCES:
            raise PageNotFound(path)
        return Route(VMI_SUBRESOURCE_TYPE, rest[1], rest[3], rest[4])
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        candidate = registry.by_plural(group, version, rest[2])
        if candidate is not None and candidate.namespaced:
            namespace, rest = rest[1], rest[2:]
    rt = registry.by_plural(group, version, rest[0])
    if rt is None or len(rest) > 3 or (namespace is None and rt.namespaced and len(rest) > 1):
        raise _not_served(registry, group, path)
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else None
    if sub is not None and sub not in rt.subresources:
        raise _not_served(registry, group, path)
    return Route(rt, namespace, name, sub)


def _not_served(registry: Registry, group: str, path: str) -> Exception:
    """Within a built-in group version, go-restful answers a Status; custom resource groups are served by the
    apiextensions handler, which hands unknown resources to the NotFound delegate."""
    if any(rt.builtin for rt in registry.served() if rt.group == group):
        return unknown_path(path)
    return PageNotFound(path)


def _versions(registry: Registry) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for rt in registry.served():
        versions = groups.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)
    if registry.serves_group(SUBRESOURCE_GROUP):
        groups[SUBRESOURCE_GROUP] = [SUBRESOURCE_VERSION]
    groups.pop("", None)  # the core group is discovered through /api, not /apis
    return groups


def _group(registry: Registry, name: str) -> Obj:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in _versions(registry)[name]]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": entries, "preferredVersion": entries[0]}


def _resource_list(registry: Registry, group: str, version: str) -> Obj:
    types = [VMI_SUBRESOURCE_TYPE] if group == SUBRESOURCE_GROUP else \
        [rt for rt in registry.served() if (rt.group, rt.version) == (group, version)]
    resources = []
    for rt in types:
        if rt is not VMI_SUBRESOURCE_TYPE:  # the aggregated API lists subresources only
            resources.append({"name": rt.plural, "singularName": rt.kind.lower(), "namespaced": rt.namespaced,
                              "kind": rt.kind, "verbs": list(rt.verbs), "shortNames": list(rt.short_names)})
        resources += [{"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                       "kind": rt.kind, "verbs": _SUBRESOURCE_VERBS.get(sub, ["create"])} for sub in rt.subresources]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}".lstrip("/"),
            "resources": resources}

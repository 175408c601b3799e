"""Authorization as RBAC decides it, programmed per user: denials, or an explicit list of allowed rules."""

from __future__ import annotations

import threading
from typing import Any, Iterable, Mapping

from .status import forbidden
from .types import ResourceType

Rule = Mapping[str, Any]  # an RBAC PolicyRule: verbs, apiGroups, resources; plus optional namespaces


def _has(values: Iterable[str], value: str) -> bool:
    values = list(values)
    return "*" in values or value in values


def _resource_matches(patterns: Iterable[str], resource: str) -> bool:
    base = resource.partition("/")[0]
    return any(p in ("*", resource) or p == f"{base}/*" for p in patterns)


def rule_matches(rule: Rule, verb: str, group: str, resource: str, namespace: str | None) -> bool:
    namespaces = rule.get("namespaces")  # absent: every namespace and the cluster scope
    return (_has(rule.get("verbs", ()), verb) and _has(rule.get("apiGroups", ()), group)
            and _resource_matches(rule.get("resources", ()), resource)
            and (namespaces is None or (namespace is not None and _has(namespaces, namespace))))


class Authorizer:
    """Everyone may do everything, except what ``deny`` forbids and what ``allow_only`` leaves out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._denied: dict[str, list[Rule]] = {}
        self._allowed: dict[str, list[Rule]] = {}

    def deny(self, user: str, verb: str, group: str, resource: str, namespace: str | None = None) -> None:
        rule = {"verbs": [verb], "apiGroups": [group], "resources": [resource]}
        with self._lock:
            self._denied.setdefault(user, []).append(rule if namespace is None else {**rule, "namespaces": [namespace]})

    def allow_only(self, user: str, rules: Iterable[Rule]) -> None:
        with self._lock:
            self._allowed[user] = list(rules)

    def check(self, user: str, verb: str, rt: ResourceType, resource: str, namespace: str | None,
              name: str | None) -> None:
        with self._lock:
            denied = any(rule_matches(r, verb, rt.group, resource, namespace) for r in self._denied.get(user, ()))
            allowed = self._allowed.get(user)
        if denied or (allowed is not None and
                      not any(rule_matches(r, verb, rt.group, resource, namespace) for r in allowed)):
            raise forbidden(user, verb, rt, resource, namespace, name)

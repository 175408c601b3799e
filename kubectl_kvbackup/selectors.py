"""Kubernetes label selectors: the string syntax of ``-l``/``labelSelector`` and ``metav1.LabelSelector`` objects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|[A-Za-z0-9_./-]+)")


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # in, notin, exists, !
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!":
            return self.key not in labels
        if self.operator == "in":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values

    def __str__(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return f"!{self.key}"
        if len(self.values) == 1:
            return f"{self.key}{'=' if self.operator == 'in' else '!='}{self.values[0]}"
        return f"{self.key} {self.operator} ({','.join(self.values)})"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()
    empty_matches_nothing: bool = False

    @classmethod
    def nothing(cls) -> "Selector":
        """A nil LabelSelector: Kubernetes selects no objects with it."""
        return cls((), True)

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.empty_matches_nothing and not self.requirements:
            return False
        return all(r.matches(labels or {}) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def _key(token: str, text: str) -> str:
    prefix, _, name = token.rpartition("/")
    if not _NAME.fullmatch(name) or (prefix and not _PREFIX.fullmatch(prefix)) or token.startswith("/"):
        raise SelectorError(f'invalid label key "{token}" in selector "{text}"')
    return token


def _value(token: str, text: str) -> str:
    if token and not _NAME.fullmatch(token):
        raise SelectorError(f'invalid label value "{token}" in selector "{text}"')
    return token


def parse_selector(text: str) -> Selector:
    """Parse the ``-l``/``labelSelector`` syntax: ``a=b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``."""
    spans = list(_TOKEN.finditer(text or ""))
    if sum(len(m.group(0)) for m in spans) != len((text or "").rstrip()):
        raise SelectorError(f'unable to parse label selector "{text}"')
    tokens = [m.group(1) for m in spans]
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal position
        token = peek()
        if token is None or (expected is not None and token != expected):
            wanted = f'"{expected}"' if expected else "more"
            raise SelectorError(f'expected {wanted} in label selector "{text}"')
        position += 1
        return token

    requirements: list[Requirement] = []
    while peek() is not None:
        if peek() == "!":
            take()
            requirements.append(Requirement(_key(take(), text), "!"))
        else:
            key = _key(take(), text)
            operator = peek()
            if operator in (None, ","):
                requirements.append(Requirement(key, "exists"))
            elif operator in ("=", "==", "!="):
                take()
                value = "" if peek() in (None, ",") else _value(take(), text)
                requirements.append(Requirement(key, "notin" if operator == "!=" else "in", (value,)))
            elif operator in ("in", "notin"):
                take()
                take("(")
                values = [] if peek() == ")" else [_value(take(), text)]
                while peek() == ",":
                    take()
                    values.append(_value(take(), text))
                take(")")
                requirements.append(Requirement(key, operator, tuple(values)))
            else:
                raise SelectorError(f'unexpected "{operator}" after "{key}" in label selector "{text}"')
        if peek() is not None:
            take(",")
            if peek() is None:
                raise SelectorError(f'label selector "{text}" ends with ","')
    return Selector(tuple(requirements))


def selector_from_label_selector(obj: dict[str, Any] | None) -> Selector:
    if obj is None:
        return Selector.nothing()
    requirements = [Requirement(k, "in", (v,)) for k, v in sorted((obj.get("matchLabels") or {}).items())]
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expression in obj.get("matchExpressions") or []:
        operator = operators.get(expression.get("operator"))
        if operator is None:
            raise SelectorError(f"unknown label selector operator {expression.get('operator')!r}")
        requirements.append(Requirement(expression["key"], operator, tuple(expression.get("values") or ())))
    return Selector(tuple(requirements))

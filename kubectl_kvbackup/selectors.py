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


def parse_selector(text: str) -> Selector:
    tokens = [t for t in _TOKEN.findall(text or "")]
    if "".join(tokens).replace(" ", "") != re.sub(r"\s+", "", text or ""):
        raise SelectorError(f'unable to parse requirement: invalid label selector "{text}"')
    requirements: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise SelectorError(f'unexpected end of label selector "{text}"')
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        token = take()
        if token == "!":
            requirements.append(Requirement(take(), "!"))
        else:
            key = token
            nxt = tokens[i] if i < len(tokens) else ","
            if nxt == ",":
                requirements.append(Requirement(key, "exists"))
            elif nxt in ("=", "==", "!="):
                take()
                value = tokens[i] if i < len(tokens) and tokens[i] != "," else ""
                if value:
                    take()
                requirements.append(Requirement(key, "in" if nxt != "!=" else "notin", (value,)))
            elif nxt in ("in", "notin"):
                take()
                if take() != "(":
                    raise SelectorError(f'expected "(" after {nxt} in label selector "{text}"')
                values = []
                while True:
                    value = take()
                    if value == ")":
                        break
                    if value != ",":
                        values.append(value)
                requirements.append(Requirement(key, nxt, tuple(values)))
            else:
                raise SelectorError(f'unexpected "{nxt}" in label selector "{text}"')
        if i < len(tokens):
            if take() != ",":
                raise SelectorError(f'expected "," in label selector "{text}"')
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

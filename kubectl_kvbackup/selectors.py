"""Kubernetes label selectors: the string syntax of ``-l``/``labelSelector`` and ``metav1.LabelSelector`` objects.

One implementation serves offline selection (manifests, bundles), graph edges (a replica set's ``spec.selector``)
and the test API server, so a selector means the same thing whether or not a cluster answers it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping

Operator = Literal["in", "notin", "exists", "!"]

# kube-apiserver's lexer: these characters end an identifier; anything else (but blanks) belongs to one
_SPECIAL = re.compile(r"!=|==|=|!|\(|\)|,")
_IDENTIFIER = re.compile(r"[^\s!=(),]+")
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class SelectorError(ValueError):
    """A selector Kubernetes would refuse; the message names the selector and the position of the fault."""


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``[prefix/]name``), or None: the API server refuses such labels."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "prefix part must be non-empty"
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "prefix part must be a lowercase DNS subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _NAME.fullmatch(name):
        return ("name part must be at most 63 characters, alphanumerics, '-', '_' or '.', "
                "starting and ending with an alphanumeric")
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value (empty, or a name of at most 63 characters), or None."""
    if value and (len(value) > 63 or not _NAME.fullmatch(value)):
        return "must be empty or at most 63 characters, alphanumerics, '-', '_' or '.', starting and ending with an " \
               "alphanumeric"
    return None


@dataclass(frozen=True)
class Requirement:
    """One term of a selector; ``=``/``!=`` are ``in``/``notin`` with a single value, as Kubernetes treats them."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!":
            return self.key not in labels
        if self.operator == "in":
            return self.key in labels and labels[self.key] in self.values
        # notin and != also select objects without the label, as Kubernetes does
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
    """All requirements must hold. No requirements selects everything, unless ``selects_nothing``.

    Kubernetes gives a *nil* ``LabelSelector`` the opposite meaning of an *empty* one: nil selects no objects
    (a replica set without a selector owns nothing), ``{}`` selects all. ``Selector.nothing()`` is the nil case.
    """

    requirements: tuple[Requirement, ...] = ()
    selects_nothing: bool = False

    @classmethod
    def nothing(cls) -> Selector:
        return cls((), True)

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.selects_nothing:
            return False
        return all(r.matches(labels or {}) for r in self.requirements)

    def __str__(self) -> str:
        """The canonical string (terms sorted by key, values sorted), fit for a ``labelSelector`` query.

        A nil selector renders as ``k,!k``, which no object satisfies: an empty string would select everything.
        """
        if self.selects_nothing:
            return "kvbackup.kubevirt.io/nothing,!kvbackup.kubevirt.io/nothing"
        return ",".join(str(r) for r in self.requirements)


def _requirement(key: str, operator: Operator, values: list[str] | tuple[str, ...]) -> Requirement:
    # sorted, duplicate-free values and key-sorted terms make equal selectors compare and render equal
    return Requirement(key, operator, tuple(sorted(set(values))))


def _selector(requirements: list[Requirement]) -> Selector:
    return Selector(tuple(sorted(requirements, key=lambda r: r.key)))


class _Parser:
    """Recursive descent over kube-apiserver's grammar, keeping each token's position for error messages."""

    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, int]] = []
        position = 0
        while True:
            while position < len(text) and text[position].isspace():
                position += 1
            if position == len(text):
                break
            match = _SPECIAL.match(text, position) or _IDENTIFIER.match(text, position)
            assert match is not None  # every non-blank character starts a special token or an identifier
            self.tokens.append((match.group(0), position))
            position = match.end()
        self.index = 0

    def fail(self, problem: str, position: int | None = None) -> SelectorError:
        if position is None:
            position = self.tokens[self.index][1] if self.index < len(self.tokens) else len(self.text)
        return SelectorError(f'invalid label selector "{self.text}" at position {position}: {problem}')

    def peek(self) -> str | None:
        return self.tokens[self.index][0] if self.index < len(self.tokens) else None

    def take(self, what: str) -> str:
        token = self.peek()
        if token is None:
            raise self.fail(f"expected {what}, found the end")
        self.index += 1
        return token

    def identifier(self, what: str) -> tuple[str, int]:
        token = self.peek()
        if token is None or _SPECIAL.fullmatch(token):
            raise self.fail(f"expected {what}, found {'the end' if token is None else repr(token)}")
        self.index += 1
        return token, self.tokens[self.index - 1][1]

    def key(self) -> str:
        key, position = self.identifier("a label key")
        problem = label_key_problem(key)
        if problem:
            raise self.fail(f"label key {key!r}: {problem}", position)
        return key

    def value(self) -> str:
        if self.peek() in (None, ",", ")"):
            return ""  # "a=" and "a in (x,)" name the empty value, as Kubernetes reads them
        value, position = self.identifier("a label value")
        problem = label_value_problem(value)
        if problem:
            raise self.fail(f"label value {value!r}: {problem}", position)
        return value

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.index += 1
            return _requirement(self.key(), "!", ())
        key = self.key()
        operator = self.peek()
        if operator in (None, ","):
            return _requirement(key, "exists", ())
        if operator in ("=", "==", "!="):
            self.index += 1
            return _requirement(key, "notin" if operator == "!=" else "in", (self.value(),))
        if operator in ("in", "notin"):
            self.index += 1
            if self.take("'('") != "(":
                raise self.fail("expected '(' after " + operator, self.tokens[self.index - 1][1])
            values = [self.value()]
            while self.peek() == ",":
                self.index += 1
                values.append(self.value())
            if self.take("')'") != ")":
                raise self.fail("expected ',' or ')'", self.tokens[self.index - 1][1])
            return _requirement(key, operator, values)
        raise self.fail(f"expected an operator (=, ==, !=, in, notin), ',' or the end after {key!r}, "
                        f"found {operator!r}")

    def selector(self) -> Selector:
        requirements: list[Requirement] = []
        while self.peek() is not None:
            requirements.append(self.requirement())
            if self.peek() is None:
                break
            if self.take("','") != ",":
                raise self.fail("expected ',' or the end", self.tokens[self.index - 1][1])
            if self.peek() is None:
                raise self.fail("expected a requirement after ','")
        return _selector(requirements)


def parse_selector(text: str) -> Selector:
    """Parse ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``, comma-separated.

    The empty string selects everything. Raises SelectorError for what kube-apiserver would refuse.
    """
    return _Parser(text or "").selector()


_OPERATORS: dict[str, Operator] = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def selector_from_label_selector(obj: Mapping[str, Any] | None) -> Selector:
    """The selector a ``metav1.LabelSelector`` stands for: None selects nothing, ``{}`` everything."""
    if obj is None:
        return Selector.nothing()
    requirements = []
    for key, value in (obj.get("matchLabels") or {}).items():
        _check_label(key, str(value), "matchLabels")
        requirements.append(_requirement(key, "in", (str(value),)))
    for i, expression in enumerate(obj.get("matchExpressions") or []):
        where = f"matchExpressions[{i}]"
        operator = _OPERATORS.get(expression.get("operator"))
        if operator is None:
            raise SelectorError(f"{where}.operator: {expression.get('operator')!r} is not one of "
                                f"{', '.join(_OPERATORS)}")
        key, values = str(expression.get("key", "")), [str(v) for v in expression.get("values") or ()]
        if operator in ("in", "notin") and not values:
            raise SelectorError(f"{where}.values: must be non-empty for operator {expression['operator']}")
        if operator in ("exists", "!") and values:
            raise SelectorError(f"{where}.values: must be empty for operator {expression['operator']}")
        for value in values or [""]:
            _check_label(key, value, where)
        requirements.append(_requirement(key, operator, values))
    return _selector(requirements)


def _check_label(key: str, value: str, where: str) -> None:
    problem = label_key_problem(key)
    if problem:
        raise SelectorError(f"{where}: label key {key!r}: {problem}")
    problem = label_value_problem(value)
    if problem:
        raise SelectorError(f"{where}: label value {value!r} of {key!r}: {problem}")

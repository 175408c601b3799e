"""``matchConditions`` as kube-apiserver evaluates them: CEL over ``request``, ``object`` and ``oldObject``.

cel-python is the maintained CEL implementation for Python; a hand-written evaluator would test our expression
against our own reading of CEL rather than against CEL.
"""

from __future__ import annotations

import functools
from typing import Any

import celpy

_ENVIRONMENT = celpy.Environment()


class ConditionError(Exception):
    pass


@functools.lru_cache(maxsize=256)
def _program(expression: str) -> Any:
    try:
        return _ENVIRONMENT.program(_ENVIRONMENT.compile(expression))
    except celpy.CELParseError as error:
        raise ConditionError(f"invalid expression {expression!r}: {error}") from None


def conditions_hold(conditions: list[dict[str, Any]], request: dict[str, Any]) -> bool:
    """True when every condition is true (an empty list holds); a condition that is not a bool is an error."""
    activation = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(request.get("object")),
                  "oldObject": celpy.json_to_cel(request.get("oldObject"))}
    for condition in conditions:
        result = _program(condition.get("expression", "")).evaluate(activation)
        if not isinstance(result, (bool, celpy.celtypes.BoolType)):
            raise ConditionError(f"match condition {condition.get('name')!r} gave {result!r}, not a bool")
        if not bool(result):
            return False
    return True

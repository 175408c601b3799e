"""RFC 6902 JSON Patch generation: the minimal operations that turn one JSON document into another.

The webhook never writes patches by hand: it runs the rules on a copy of the object and diffs the two, so the
patch always says exactly what the rules changed. Pointers are escaped per RFC 6901.
"""

from __future__ import annotations

from typing import Any

Patch = list[dict[str, Any]]


def escape(token: str) -> str:
    """RFC 6901: ``~`` becomes ``~0`` and ``/`` becomes ``~1`` (in that order, so ``~1`` in a key survives)."""
    return token.replace("~", "~0").replace("/", "~1")


def diff(before: Any, after: Any, path: str = "") -> Patch:
    """Operations that, applied to ``before``, yield ``after``.

    Mappings are compared key by key, so a new annotation is one ``add`` and a missing ``annotations`` map is added
    whole. Lists of equal length are compared item by item; a list that changed length is replaced whole, because
    index-shifting ``remove``/``add`` sequences are easy to get wrong and these lists (owner references, interfaces)
    are short.
    """
    if isinstance(before, dict) and isinstance(after, dict):
        operations: Patch = [{"op": "remove", "path": f"{path}/{escape(key)}"} for key in before if key not in after]
        for key, value in after.items():
            child = f"{path}/{escape(key)}"
            if key in before:
                operations += diff(before[key], value, child)
            else:
                operations.append({"op": "add", "path": child, "value": value})
        return operations
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [op for index, (old, new) in enumerate(zip(before, after)) for op in diff(old, new, f"{path}/{index}")]
    # type first: in Python 1 == True and 1 == 1.0, in JSON they differ
    if type(before) is type(after) and before == after:
        return []
    return [{"op": "replace", "path": path, "value": after}]

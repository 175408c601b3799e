"""RFC 6902 JSON Patch and RFC 7386 merge patch, applied as the API server applies them."""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f'invalid JSON pointer "{pointer}"')
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _parent(doc: Any, pointer: str) -> tuple[Any, str]:
    tokens = _tokens(pointer)
    if not tokens:
        raise PatchError("the root cannot be the target of this operation")
    target = doc
    for token in tokens[:-1]:
        target = _child(target, token, pointer)
    return target, tokens[-1]


def _child(container: Any, token: str, pointer: str) -> Any:
    if isinstance(container, dict):
        if token not in container:
            raise PatchError(f'path "{pointer}" does not exist')
        return container[token]
    if isinstance(container, list):
        return container[_index(container, token, pointer, allow_end=False)]
    raise PatchError(f'path "{pointer}" does not exist')


def _index(container: list, token: str, pointer: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f'invalid array index "{token}" in "{pointer}"')
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f'array index {index} out of bounds in "{pointer}"')
    return index


def _get(doc: Any, pointer: str) -> Any:
    target = doc
    for token in _tokens(pointer):
        target = _child(target, token, pointer)
    return target


def _add(doc: Any, pointer: str, value: Any) -> Any:
    if pointer == "":
        return value
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, pointer, allow_end=True), value)
    else:
        raise PatchError(f'path "{pointer}" does not exist')
    return doc


def _remove(doc: Any, pointer: str) -> Any:
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f'unable to remove nonexistent key "{token}"')
        return parent.pop(token)
    if isinstance(parent, list):
        return parent.pop(_index(parent, token, pointer, allow_end=False))
    raise PatchError(f'path "{pointer}" does not exist')


def apply(doc: Any, operations: Any) -> Any:
    """Apply a JSON Patch; all or nothing, as the API server does."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    result = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        name, path = op["op"], op["path"]
        if name == "add":
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif name == "remove":
            _remove(result, path)
        elif name == "replace":
            _get(result, path)
            if path == "":
                result = copy.deepcopy(op["value"])
            else:
                _remove(result, path)
                result = _add(result, path, copy.deepcopy(op["value"]))
        elif name == "move":
            value = _remove(result, op["from"])
            result = _add(result, path, value)
        elif name == "copy":
            result = _add(result, path, copy.deepcopy(_get(result, op["from"])))
        elif name == "test":
            if _get(result, path) != op.get("value"):
                raise PatchError(f'test operation failed at "{path}"')
        else:
            raise PatchError(f'unknown JSON patch operation "{name}"')
    return result


def merge(doc: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result

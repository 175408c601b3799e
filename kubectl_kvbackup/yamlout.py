"""YAML as bundles store it: PyYAML's block style through libyaml, without aliases, byte for byte — spelled out
directly for what API objects are made of, several times faster.

PyYAML builds a node for every value and libyaml calls back into Python twice for every scalar to resolve its tag:
for an export that writes a file per object, most of its time. ``emit`` writes a mapping of mappings, lists,
integers, booleans, nulls and printable-ASCII strings itself, deciding each distinct string's style (plain, or
single-quoted where plain would read back as something else) once, by libyaml's rules (emitter.c
``yaml_emitter_analyze_scalar``, ``yaml_emitter_select_scalar_style``); anything else — a float, a timestamp, a
string with a line break, a tab or non-ASCII text, a key libyaml writes as a complex key, a line it would fold at a
space — leaves the whole document to PyYAML.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import ScalarNode


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """libyaml's emitter when PyYAML has it (about 10x faster), and no anchors or aliases: a manifest spells each
    value out, as kubectl writes it — and skipping the alias bookkeeping makes dumping a third faster."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def pyyaml_dump(obj: Any) -> bytes:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False).encode()


class _Unsure(Exception):
    """A value whose YAML ``emit`` leaves to PyYAML."""


_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
_PRINTABLE = frozenset(map(chr, range(0x20, 0x7F)))
#: libyaml's best width: a scalar whose line runs past it is folded at a space
_WIDTH = 80
#: libyaml writes a longer key as a complex key (``? key``)
_SIMPLE_KEY_LENGTH = 128
_CACHED_STRINGS = 1 << 15

#: each string's text ("" when ``emit`` leaves it to PyYAML); keys and values repeat across thousands of objects
_texts: dict[str, str] = {}


def _string_text(text: str) -> str:
    """``text`` as libyaml writes it in block context: plain unless an indicator, a leading or trailing space or an
    implicit tag (``true``, ``1.5``, ``null``, a date…) forbids it, then single-quoted; "" for what needs more."""
    if not _PRINTABLE.issuperset(text):
        return ""
    if not text:
        return "''"
    plain = not (text.startswith(("---", "...")) or text[0] in "#,[]{}&*!|>'\"%@` "
                 or (text[0] in "?:-" and text[1:2] in ("", " ")) or text[-1] in " :" or ": " in text
                 or " #" in text) and _RESOLVER.resolve(ScalarNode, text, (True, False)) == _STR_TAG
    return text if plain else "'" + text.replace("'", "''") + "'"


def _text(value: Any) -> str:
    kind = type(value)
    if kind is str:
        text = _texts.get(value)
        if text is None:
            if len(_texts) >= _CACHED_STRINGS:
                _texts.clear()
            text = _texts[value] = _string_text(value)
        if not text:
            raise _Unsure
        return text
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    raise _Unsure


def _scalar_line(out: list[str], prefix: str, value: Any) -> None:
    text = (type(value) is str and _texts.get(value)) or _text(value)
    if " " in text and len(prefix) + len(text) > _WIDTH:
        raise _Unsure
    out.append(prefix + text + "\n")


def _mapping(out: list[str], mapping: dict[Any, Any], indent: int, first: str) -> None:
    """The entries at ``indent``, the first line starting with ``first`` (a sequence item's ``- ``)."""
    pad = " " * indent
    prefix = first
    for key, value in mapping.items():
        if type(key) is not str or len(key) >= _SIMPLE_KEY_LENGTH:
            raise _Unsure
        head = prefix + (_texts.get(key) or _text(key)) + ":"
        prefix = pad
        kind = type(value)
        if kind is dict:
            if value:
                out.append(head + "\n")
                _mapping(out, value, indent + 2, pad + "  ")
            else:
                out.append(head + " {}\n")
        elif kind is list:
            if value:
                out.append(head + "\n")
                _sequence(out, value, indent, pad)  # libyaml does not indent a sequence under a key
            else:
                out.append(head + " []\n")
        else:
            _scalar_line(out, head + " ", value)


def _sequence(out: list[str], sequence: list[Any], indent: int, first: str) -> None:
    """The items at ``indent``, the first line starting with ``first``."""
    pad = " " * indent
    prefix = first
    for item in sequence:
        head = prefix + "- "
        prefix = pad
        kind = type(item)
        if kind is dict:
            if item:
                _mapping(out, item, indent + 2, head)
            else:
                out.append(head + "{}\n")
        elif kind is list:
            if item:
                _sequence(out, item, indent + 2, head)
            else:
                out.append(head + "[]\n")
        else:
            _scalar_line(out, head, item)


def emit(obj: Any) -> bytes | None:
    """A non-empty mapping's YAML, byte for byte as ``pyyaml_dump`` writes it, or None when it holds what only
    PyYAML spells."""
    if type(obj) is not dict or not obj:
        return None
    out: list[str] = []
    try:
        _mapping(out, obj, 0, "")
    except _Unsure:
        return None
    return "".join(out).encode()


def dump_yaml(obj: Any) -> bytes:
    return emit(obj) or pyyaml_dump(obj)

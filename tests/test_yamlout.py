"""Bundle YAML is PyYAML's, byte for byte, whether kvbackup spells a document out itself or leaves it to PyYAML."""

from __future__ import annotations

import random

from benchmarks.fleet import fleet
from kubectl_kvbackup.yamlout import dump_yaml, emit, pyyaml_dump

from .helpers import example_objects

#: strings whose style turns on libyaml's rules: indicators, implicit tags, quotes, spaces, the document markers
TRICKY = ["true", "False", "null", "~", "yes", "Off", "y", "1e3", "0x1F", "017", "12:30", "190:20:30", "2024-01-01",
          "2024-01-01T00:00:00Z", "1_000", ".inf", "-.nan", "<<", "=", "-", "?", ":", "---", "...", "--- a", "1.5",
          "-5", "+5", "", " ", "a b", " a", "a ", "a: b", "a:b", "a #b", "a#b", "#a", "'a'", '"a"', "a'b", "@a",
          "`a", "%a", "!a", "&a", "*a", "|a", ">a", "[a]", "{a}", ",a", "a,b", "a?", "?a", "? a", "-a", "- a", "a:",
          "a\\b", "http://example.com/x?y=1", "kubevirt.io/created-by", "k" * 127, "k" * 128, "a\tb", "a\nb", "é"]


def generated_strings(count: int) -> list[str]:
    rnd = random.Random(7)
    printable = [chr(c) for c in range(0x20, 0x7F)]
    strings = []
    for _ in range(count):
        if rnd.random() < 0.5:
            strings.append("".join(rnd.choice(printable) for _ in range(rnd.randint(0, 6))))
        else:  # words around libyaml's 80-column fold
            strings.append(" ".join("abc1.:-"[rnd.randint(0, 6)] * rnd.randint(1, 7) for _ in range(rnd.randint(1, 16))))
    return strings


def contexts(value: str, depth: int) -> list[dict]:
    """``value`` as a value, a key, a list item, a list item's value and a nested list's item, ``depth`` deep."""
    documents = [{"key": value}, {value: 1}, {"a": [value]}, {"a": [{"b": value}]}, {"a": [[value, 2]], "c": {}}]
    for level in range(depth):
        documents = [{"x": d} if level % 2 else {"x": [d, []]} for d in documents]
    return documents


def test_api_objects_are_spelled_out_as_pyyaml_writes_them():
    objects = example_objects() + fleet(3)
    for obj in objects:
        assert dump_yaml(obj) == pyyaml_dump(obj), obj["metadata"]["name"]
    # all but the Secrets holding multi-line cloud-init scripts, which PyYAML spells
    assert [o["metadata"]["name"] for o in objects if emit(o) is None] == ["fedora-userdata", "fedora-networkdata"]


def test_every_string_in_every_place_comes_out_as_pyyaml_writes_it():
    for value in TRICKY + generated_strings(1500):
        for depth in (0, 3, 7):
            for document in contexts(value, depth):
                assert dump_yaml(document) == pyyaml_dump(document), document


def test_styles_are_spelled_out_and_what_needs_more_is_left_to_pyyaml():
    assert emit({"a": "true", "b": "", "c": "it's", "d": "'q'", "e": None, "f": [True, 7]}) == \
        b"a: 'true'\nb: ''\nc: it's\nd: '''q'''\ne: null\nf:\n- true\n- 7\n"
    folded = {"message": " ".join(["word"] * 20)}
    for document in ({"a": 1.5}, {"a": "x\ny"}, {"a": "\u00e9"}, {"k" * 128: 1}, {1: "a"}, folded, {}, [1]):
        assert emit(document) is None
        assert dump_yaml(document) == pyyaml_dump(document)
    assert b"\n  word" in dump_yaml(folded)  # libyaml folded it

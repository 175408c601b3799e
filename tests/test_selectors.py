"""Label selectors as Kubernetes parses and matches them."""

from __future__ import annotations

import pytest

from kubectl_kvbackup.selectors import SelectorError, parse_selector, selector_from_label_selector

LABELS = {"app": "web", "tier": "front", "env": "prod"}


@pytest.mark.parametrize("text,expected", [
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app!=web", False),
    ("app!=db", True),
    ("missing!=x", True),
    ("app in (web, db)", True),
    ("app in (db)", False),
    ("app notin (db,cache)", True),
    ("missing notin (x)", True),
    ("tier", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("app=web,tier=front", True),
    ("app=web, tier=back", False),
    ("  app = web ,env in (prod,staging) ", True),
    ("example.com/role=x", False),
])
def test_string_selectors_match_as_kubernetes_does(text, expected):
    assert parse_selector(text).matches(LABELS) is expected


@pytest.mark.parametrize("text", ["app in (web", "app in web", "=web", "app=web,,", "app=(x)", "a b"])
def test_malformed_selectors_are_rejected(text):
    with pytest.raises(SelectorError):
        parse_selector(text)


def test_selector_renders_back_to_an_equivalent_string():
    selector = parse_selector("app in (web,db),!gone,tier,env!=dev")
    again = parse_selector(str(selector))
    assert again == selector


def test_label_selector_objects():
    selector = selector_from_label_selector({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "env", "operator": "In", "values": ["prod"]},
        {"key": "gone", "operator": "DoesNotExist"},
        {"key": "tier", "operator": "Exists"},
        {"key": "zone", "operator": "NotIn", "values": ["a"]}]})
    assert selector.matches(LABELS)
    assert not selector.matches({**LABELS, "gone": "x"})


def test_nil_selector_matches_nothing_and_empty_selector_everything():
    assert not selector_from_label_selector(None).matches(LABELS)
    assert selector_from_label_selector({}).matches(LABELS)


def test_unknown_operator_is_an_error():
    with pytest.raises(SelectorError):
        selector_from_label_selector({"matchExpressions": [{"key": "a", "operator": "Near"}]})

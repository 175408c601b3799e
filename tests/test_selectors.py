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


@pytest.mark.parametrize("text,position,problem", [
    ("app in (web", 11, "expected ')'"),
    ("app=web,", 8, "expected a requirement after ','"),
    ("a b", 2, "expected an operator"),
    ("app=web, Bad_Prefix/x=1", 9, "prefix part"),
    ("app=" + "x" * 64, 4, "at most 63 characters"),
])
def test_errors_say_what_and_where(text, position, problem):
    with pytest.raises(SelectorError) as error:
        parse_selector(text)
    assert f'"{text}" at position {position}: ' in str(error.value) and problem in str(error.value)


def test_empty_values_as_kubernetes_reads_them():
    assert parse_selector("a=").matches({"a": ""}) and not parse_selector("a=").matches({})
    assert parse_selector("a in ()").matches({"a": ""})
    assert parse_selector("a in (x,)").matches({"a": ""})


def test_canonical_rendering_sorts_terms_and_values():
    assert str(parse_selector(" tier , app in (web,db) , !gone, env==prod")) == "app in (db,web),env=prod,!gone,tier"
    assert parse_selector("b=1,a=2") == parse_selector("a=2,b=1")


def test_nil_selector_renders_as_a_selector_that_selects_nothing():
    # sent as labelSelector, "" would select everything: the rendering must select nothing as well
    rendered = str(selector_from_label_selector(None))
    assert rendered and not parse_selector(rendered).matches({}) and not parse_selector(rendered).matches(LABELS)


@pytest.mark.parametrize("obj", [
    {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
    {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
    {"matchLabels": {"bad key": "x"}},
    {"matchLabels": {"a": "bad value"}},
])
def test_invalid_label_selector_objects_are_rejected(obj):
    with pytest.raises(SelectorError):
        selector_from_label_selector(obj)

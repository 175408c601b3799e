"""Server-side apply as kube-apiserver does it, in the subset the fake models (see tests/fakeapi/apply.py).

Sources: staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go (applyPatcher),
staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal (structuredmerge.go, conflicts, managedfields).
"""

from __future__ import annotations

from typing import Any

import yaml

from .test_fakeapi import client, raw  # noqa: F401 (client: a fixture)

CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
CONFIGMAP = "/api/v1/namespaces/default/configmaps/c"


def apply(client, path: str, obj: dict[str, Any], manager: str | None, force: bool = False) -> tuple[int, Any]:
    query = "&".join(([f"fieldManager={manager}"] if manager else []) + (["force=true"] if force else []))
    return raw(client, "PATCH", f"{path}?{query}", yaml.safe_dump(obj), "application/apply-patch+yaml")


def configmap(**data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}


def webhook(name: str, timeout: int = 10) -> dict[str, Any]:
    return {"name": name, "timeoutSeconds": timeout, "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": f"https://{name}/mutate"}}


def configuration(*webhooks: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "hooks"}, "webhooks": list(webhooks)}


def test_apply_needs_a_field_manager(client):
    status, body = apply(client, CONFIGMAP, configmap(a="1"), manager=None)
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"] == 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required ' \
                              "for apply patch"


def test_apply_creates_with_201_and_records_the_managers_fields(fake_api, client):
    status, body = apply(client, CONFIGMAP, {**configmap(a="1"), "metadata": {"name": "c", "labels": {"l": "x"}}},
                         "installer")
    assert status == 201 and body["data"] == {"a": "1"}
    [entry] = body["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["fieldsType"]) == ("installer", "Apply", "FieldsV1")
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:l": {}}}}
    assert apply(client, CONFIGMAP, configmap(a="1"), "installer")[0] == 200


def test_fields_a_manager_stops_applying_are_removed_and_others_fields_kept(fake_api, client):
    apply(client, CONFIGMAP, configmap(a="1", b="2"), "installer")
    apply(client, CONFIGMAP, configmap(c="3"), "operator")
    status, body = apply(client, CONFIGMAP, configmap(a="1"), "installer")
    assert status == 200 and body["data"] == {"a": "1", "c": "3"}
    assert {e["manager"] for e in body["metadata"]["managedFields"]} == {"installer", "operator"}


def test_a_field_another_manager_owns_conflicts_unless_forced(fake_api, client):
    apply(client, CONFIGMAP, configmap(a="1"), "installer")
    status, body = apply(client, CONFIGMAP, configmap(a="2"), "operator")
    assert (status, body["reason"]) == (409, "Conflict")
    assert body["message"] == 'Operation cannot be fulfilled on configmaps "c": Apply failed with 1 conflict: ' \
                              'conflict with "installer": .data.a'
    assert body["details"]["causes"] == [{"reason": "FieldManagerConflict", "message": 'conflict with "installer": '
                                          ".data.a", "field": ".data.a"}]
    assert apply(client, CONFIGMAP, configmap(a="1"), "operator")[0] == 200  # the same value: shared, no conflict
    status, body = apply(client, CONFIGMAP, configmap(a="2"), "operator", force=True)
    assert status == 200 and body["data"] == {"a": "2"}
    status, body = apply(client, CONFIGMAP, configmap(), "installer")  # it no longer owns a: a stays
    assert body["data"] == {"a": "2"}


def test_list_entries_keyed_by_name_belong_to_their_manager(fake_api, client):
    path = f"{CONFIGURATIONS}/hooks"
    apply(client, path, configuration(webhook("ours-a"), webhook("ours-b")), "installer")
    apply(client, path, configuration(webhook("theirs")), "operator")
    status, body = apply(client, path, configuration(webhook("ours-a", timeout=5)), "installer")
    assert status == 200
    assert [(w["name"], w["timeoutSeconds"]) for w in body["webhooks"]] == [("ours-a", 5), ("theirs", 10)]


def test_apply_refuses_another_name_or_api_version(client):
    for _ in ("to create", "to update"):
        status, body = apply(client, CONFIGMAP, {**configmap(), "metadata": {"name": "d"}}, "installer")
        assert (status, body["message"]) == (400, "the name of the object (d) does not match the name on the URL (c)")
        apply(client, CONFIGMAP, configmap(), "installer")
    status, body = apply(client, CONFIGMAP, {**configmap(), "apiVersion": "v2"}, "installer")
    assert (status, body["message"]) == (400, "incorrect version specified in apply patch. Specified patch version: "
                                              "v2, expected: v1")

"""Admission as kube-apiserver calls webhooks: order, reinvocation and the AdmissionReview it sends.

Sources: staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/mutating/dispatcher.go and
reinvocationcontext.go, configuration/mutating_webhook_manager.go (configurations sorted by name),
staging/src/k8s.io/api/admission/v1/types.go (AdmissionRequest fields, omitempty), staging/src/k8s.io/apiserver/pkg/
registry/rest/create.go (the namespace is set after admission).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from kubernetes.client import CoreV1Api, CustomObjectsApi

from .fakeapi import FakeKubeAPI
from .test_fakeapi import KV, client, client_as, cm, patched, vm, webhook_server  # noqa: F401 (client: a fixture)

#: a webhook's behaviour: the AdmissionRequest in, JSON patch operations out (None: allow unchanged)
Behaviour = Callable[[dict[str, Any]], list[dict[str, Any]] | None]


@pytest.fixture
def webhooks(tmp_path):
    """HTTPS webhooks on one server, one path each: ``serve(name, behaviour)`` returns its URL; ``seen`` lists
    (name, AdmissionRequest) in call order."""
    behaviours: dict[str, Behaviour] = {}
    seen: list[tuple[str, dict[str, Any]]] = []

    def respond(path: str, request: dict[str, Any]) -> dict[str, Any]:
        name = path.strip("/")
        seen.append((name, request))
        patch = behaviours[name](request)
        return patched(patch) if patch else {"allowed": True}

    with webhook_server(tmp_path, respond) as (url, ca_bundle):
        def serve(name: str, behaviour: Behaviour) -> str:
            behaviours[name] = behaviour
            return f"{url}/{name}"

        yield serve, ca_bundle, seen


def configure(fake_api: FakeKubeAPI, configuration: str, url: str, ca_bundle: str, resources: str = "configmaps",
              group: str = "", **extra: Any) -> None:
    fake_api.add({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                  "metadata": {"name": configuration}, "webhooks": [{
                      "name": f"{configuration}.example.com", "clientConfig": {"url": url, "caBundle": ca_bundle},
                      "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [group], "apiVersions": ["v1"],
                                 "resources": [resources]}],
                      "admissionReviewVersions": ["v1"], "sideEffects": "None", **extra}]})


def label(key: str, value: str) -> Behaviour:
    return lambda request: [{"op": "add", "path": "/metadata/labels", "value": {
        **((request["object"]["metadata"].get("labels")) or {}), key: value}}]


def test_configurations_are_called_in_the_order_of_their_names(fake_api, client, webhooks):
    serve, ca_bundle, seen = webhooks
    # created in the opposite order, so that only sorting by name puts them right
    configure(fake_api, "zz-late", serve("zz-late", label("late", "yes")), ca_bundle)
    configure(fake_api, "aa-early", serve("aa-early", label("early", "yes")), ca_bundle)
    created = CoreV1Api(client).create_namespaced_config_map("default", cm("x"))
    assert [name for name, _ in seen] == ["aa-early", "zz-late"]
    assert seen[1][1]["object"]["metadata"]["labels"] == {"early": "yes"}  # the later one sees the earlier's change
    assert created.metadata.labels == {"early": "yes", "late": "yes"}


@pytest.mark.parametrize("policy,calls", [("IfNeeded", ["first", "second", "first"]), ("Never", ["first", "second"])])
def test_a_webhook_that_asks_is_called_again_after_a_later_one_changed_the_object(fake_api, client, webhooks,
                                                                                  policy, calls):
    serve, ca_bundle, seen = webhooks
    configure(fake_api, "first", serve("first", lambda request: None), ca_bundle, reinvocationPolicy=policy)
    configure(fake_api, "second", serve("second", label("mac", "chosen")), ca_bundle)
    CoreV1Api(client).create_namespaced_config_map("default", cm("x"))
    assert [name for name, _ in seen] == calls
    if policy == "IfNeeded":  # the second call sees what the later webhook did
        assert seen[-1][1]["object"]["metadata"]["labels"] == {"mac": "chosen"}


def test_no_reinvocation_when_later_webhooks_change_nothing(fake_api, client, webhooks):
    serve, ca_bundle, seen = webhooks
    configure(fake_api, "first", serve("first", label("own", "change")), ca_bundle, reinvocationPolicy="IfNeeded")
    configure(fake_api, "second", serve("second", lambda request: None), ca_bundle)
    CoreV1Api(client).create_namespaced_config_map("default", cm("x"))
    assert [name for name, _ in seen] == ["first", "second"]  # its own change never calls a webhook again


def test_the_review_of_a_create_is_the_object_as_the_client_sent_it(fake_api, tmp_path, webhooks):
    serve, ca_bundle, seen = webhooks
    configure(fake_api, "look", serve("look", lambda request: None), ca_bundle)
    fake_api.add({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "restorer", "namespace": "ops"}})
    account = fake_api.get_object("", "ServiceAccount", "ops", "restorer")
    core = CoreV1Api(client_as(fake_api, tmp_path, "system:serviceaccount:ops:restorer"))
    core.create_namespaced_config_map("default", {"metadata": {"generateName": "gen-"}}, dry_run="All")
    request = seen[-1][1]
    # the namespace is the request's; the object keeps the client's omission (rest.BeforeCreate fills it later)
    assert request["namespace"] == "default" and "namespace" not in request["object"]["metadata"]
    assert "name" not in request and request["object"]["metadata"]["generateName"] == "gen-"
    assert request["userInfo"] == {"username": "system:serviceaccount:ops:restorer",
                                   "uid": account["metadata"]["uid"],
                                   "groups": ["system:serviceaccounts", "system:serviceaccounts:ops",
                                              "system:authenticated"]}
    assert request["dryRun"] is True
    assert request["options"] == {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "dryRun": ["All"]}


def test_the_admin_is_a_member_of_system_masters(fake_api, client, webhooks):
    serve, ca_bundle, seen = webhooks
    configure(fake_api, "look", serve("look", lambda request: None), ca_bundle)
    CoreV1Api(client).create_namespaced_config_map("default", cm("x"), field_manager="restore")
    user = seen[-1][1]["userInfo"]
    assert user["groups"] == ["system:masters", "system:authenticated"] and user["uid"]
    assert seen[-1][1]["options"]["fieldManager"] == "restore"


def test_an_update_is_reviewed_with_the_status_the_client_sent(fake_api, client, webhooks):
    serve, ca_bundle, seen = webhooks
    configure(fake_api, "look", serve("look", lambda request: None), ca_bundle, resources="virtualmachines",
              group="kubevirt.io")
    stored = fake_api.add(vm("v", spec={"running": False}, status={"ready": False}))
    sent = {**stored, "spec": {"running": True}, "status": {"ready": True}}
    del sent["metadata"]["namespace"]
    replaced = CustomObjectsApi(client).replace_namespaced_custom_object(*KV, "default", "virtualmachines", "v", sent)
    request = seen[-1][1]
    assert request["operation"] == "UPDATE" and request["options"]["kind"] == "UpdateOptions"
    assert request["object"]["status"] == {"ready": True} and "namespace" not in request["object"]["metadata"]
    assert request["oldObject"]["status"] == {"ready": False}
    assert replaced["status"] == {"ready": False} and replaced["metadata"]["namespace"] == "default"

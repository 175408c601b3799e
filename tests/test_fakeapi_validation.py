"""Validation a restore relies on, answered as kube-apiserver answers it: every cause listed.

Sources: staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go (ValidateOwnerReferences),
staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go (NewInvalid: one cause plain, several in brackets),
staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go (Update: AllowUnconditionalUpdate),
staging/src/k8s.io/apiserver/pkg/endpoints/handlers/create.go and patch.go (apiVersion and name checks),
staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go (ValidateDryRun).
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from .test_fakeapi import KV, client, cm, raw, status_of, vm  # noqa: F401 (client: a fixture)


def owner(name: str, uid: str | None = "u-1", controller: bool = False) -> dict[str, Any]:
    ref = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name, "controller": controller}
    return {**ref, "uid": uid} if uid else ref


def create_error(client, body: dict[str, Any]) -> dict[str, Any]:
    """The Status of a create the typed client would refuse to send (it checks required fields itself)."""
    status, status_body = raw(client, "POST", "/api/v1/namespaces/default/configmaps", body)
    assert status == status_body["code"] and status_body["status"] == "Failure"
    return status_body


def test_an_owner_reference_without_uid_is_invalid(client):
    body = create_error(client, {**cm("c"), "metadata": {"name": "c", "ownerReferences": [owner("vm", uid=None)]}})
    assert (body["code"], body["reason"]) == (422, "Invalid")
    assert body["message"] == 'ConfigMap "c" is invalid: metadata.ownerReferences.uid: Invalid value: "": uid must ' \
                              "not be empty"
    assert body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "metadata.ownerReferences.uid",
                                          "message": 'Invalid value: "": uid must not be empty'}]


def test_two_controller_references_are_invalid(client):
    body = create_error(client, {**cm("c"), "metadata": {"name": "c", "ownerReferences": [
        owner("a", controller=True), owner("b", uid="u-2", controller=True)]}})
    assert body["code"] == 422
    assert 'Only one reference can have Controller set to true. Found "true" in references for VirtualMachine/a ' \
           "and VirtualMachine/b" in body["details"]["causes"][0]["message"]


def test_every_cause_is_listed(client):
    body = create_error(client, {**cm("c"), "metadata": {"name": "c", "labels": {"bad key!": "x"},
                                                         "ownerReferences": [owner("", uid=None)]}})
    assert [c["field"] for c in body["details"]["causes"]] == [
        "metadata.labels", "metadata.ownerReferences.name", "metadata.ownerReferences.uid"]
    assert body["message"].startswith('ConfigMap "c" is invalid: [metadata.labels: Invalid value: "bad key!": ')


def test_a_custom_resource_is_replaced_only_with_a_resource_version(fake_api, client):
    stored = fake_api.add(vm("v"))
    unconditional = {**stored, "metadata": {k: v for k, v in stored["metadata"].items() if k != "resourceVersion"}}
    with pytest.raises(ApiException) as error:
        CustomObjectsApi(client).replace_namespaced_custom_object(*KV, "default", "virtualmachines", "v",
                                                                  unconditional)
    status, body = status_of(error)
    assert (status, body["message"]) == (422, 'VirtualMachine.kubevirt.io "v" is invalid: metadata.resourceVersion: '
                                              "Invalid value: 0x0: must be specified for an update")
    fake_api.add(cm("c"))  # built-in kinds allow it
    assert CoreV1Api(client).replace_namespaced_config_map("c", "default", cm("c")).metadata.name == "c"


def test_an_api_version_that_is_not_the_urls_is_a_bad_request(client):
    body = create_error(client, {**cm("c"), "apiVersion": "v2"})
    assert (body["code"], body["message"]) == (400, "the API version in the data (v2) does not match the expected API "
                                                    "version (v1)")


def test_a_patch_that_renames_is_a_bad_request(fake_api, client):
    fake_api.add(cm("c"))
    status, body = raw(client, "PATCH", "/api/v1/namespaces/default/configmaps/c", {"metadata": {"name": "d"}},
                       "application/merge-patch+json")
    assert (status, body["message"]) == (400, "the name of the object (d) does not match the name on the URL (c)")
    assert fake_api.get_object("", "ConfigMap", "default", "d") is None


def test_an_unknown_dry_run_value_is_invalid(client):
    status, body = raw(client, "POST", "/api/v1/namespaces/default/configmaps?dryRun=Bogus", cm("c"))
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"] == 'CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: ' \
                              '[]string{"Bogus"}: supported values: "All"'

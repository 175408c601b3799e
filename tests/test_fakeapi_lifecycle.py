"""Deletion as kube-apiserver and its controllers do it: namespaces terminate, finalizers hold objects, owners
propagate, preconditions guard, and what a completed DELETE answers.

Sources: staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go (Delete, finalizers, propagation,
finalizeDelete), pkg/registry/core/namespace/storage/storage.go, plugin/pkg/admission/namespace/lifecycle/
admission.go, staging/src/k8s.io/apiserver/pkg/storage/interfaces.go (Preconditions.Check),
pkg/controller/garbagecollector/garbagecollector.go.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from .test_fakeapi import KV, client, cm, raw, status_of, vm  # noqa: F401 (client: a fixture)

SNAPSHOTS = ("snapshot.storage.k8s.io", "v1")


def snapshot(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": "default", **meta}}


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    ref = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
           "uid": owner["metadata"]["uid"]}
    return {**obj, "metadata": {**obj["metadata"], "ownerReferences": [ref]}}


def test_a_deleted_namespace_terminates_until_its_contents_are_gone(fake_api, client):
    fake_api.add(cm("kept", "doomed"))
    core = CoreV1Api(client)
    status, body = raw(client, "DELETE", "/api/v1/namespaces/doomed")
    assert status == 200 and body["status"]["phase"] == "Terminating" and body["metadata"]["deletionTimestamp"]
    assert body["spec"]["finalizers"] == ["kubernetes"]
    status, body = raw(client, "DELETE", "/api/v1/namespaces/doomed")  # again, while it terminates
    assert (status, body["reason"]) == (409, "Conflict")
    assert body["message"] == ('Operation cannot be fulfilled on namespaces "doomed": The system is ensuring all '
                               "content is removed from this namespace.  Upon completion, this namespace will "
                               "automatically be purged by the system.")
    assert core.read_namespaced_config_map("kept", "doomed").metadata.name == "kept"
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map("doomed", cm("new", "doomed"))
    status, body = status_of(error)
    assert (status, body["reason"]) == (403, "Forbidden")
    assert body["message"] == ('configmaps "new" is forbidden: unable to create new content in namespace doomed '
                               "because it is being terminated")
    assert body["details"]["causes"] == [{"reason": "NamespaceTerminating", "message": "namespace doomed is being "
                                          "terminated", "field": "metadata.namespace"}]
    fake_api.settle()  # the namespace controller empties it, then it goes
    assert fake_api.get_object("", "Namespace", None, "doomed") is None
    assert fake_api.objects("", "ConfigMap", "doomed") == []
    core.create_namespace({"metadata": {"name": "doomed"}})
    assert core.create_namespaced_config_map("doomed", cm("new", "doomed")).metadata.name == "new"


def test_a_namespace_waits_for_contents_with_finalizers(fake_api, client):
    fake_api.add(snapshot("held", finalizers=["snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"]))
    raw(client, "DELETE", "/api/v1/namespaces/default")
    fake_api.settle()
    held = fake_api.get_object("snapshot.storage.k8s.io", "VolumeSnapshot", "default", "held")
    assert held["metadata"]["deletionTimestamp"]
    assert fake_api.get_object("", "Namespace", None, "default")["status"]["phase"] == "Terminating"
    CustomObjectsApi(client).patch_namespaced_custom_object(*SNAPSHOTS, "default", "volumesnapshots", "held",
                                                            {"metadata": {"finalizers": None}})
    fake_api.settle()
    assert fake_api.get_object("", "Namespace", None, "default") is None


def test_an_object_with_finalizers_stays_until_they_are_removed(fake_api, client):
    fake_api.add(snapshot("vs", finalizers=["snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"]))
    custom = CustomObjectsApi(client)
    answered = custom.delete_namespaced_custom_object(*SNAPSHOTS, "default", "volumesnapshots", "vs")
    assert answered["metadata"]["deletionTimestamp"] and answered["metadata"]["deletionGracePeriodSeconds"] == 0
    still = custom.get_namespaced_custom_object(*SNAPSHOTS, "default", "volumesnapshots", "vs")
    assert still["metadata"]["finalizers"] == ["snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"]
    with pytest.raises(ApiException) as error:  # no finalizer can be added to an object being deleted
        custom.patch_namespaced_custom_object(*SNAPSHOTS, "default", "volumesnapshots", "vs",
                                              {"metadata": {"finalizers": ["a/b", *still["metadata"]["finalizers"]]}})
    assert status_of(error)[1]["details"]["causes"][0]["field"] == "metadata.finalizers"
    custom.patch_namespaced_custom_object(*SNAPSHOTS, "default", "volumesnapshots", "vs",
                                          {"metadata": {"finalizers": []}})
    assert fake_api.get_object("snapshot.storage.k8s.io", "VolumeSnapshot", "default", "vs") is None


@pytest.mark.parametrize("policy,finalizer,dependent_left", [
    ("Foreground", "foregroundDeletion", False), ("Orphan", "orphan", True)])
def test_propagation_policies_hold_the_owner_until_the_garbage_collector_acts(fake_api, client, policy, finalizer,
                                                                            dependent_left):
    owner = fake_api.add(vm("owner"))
    fake_api.add(owned_by(cm("dependent"), owner))
    answered = CustomObjectsApi(client).delete_namespaced_custom_object(*KV, "default", "virtualmachines", "owner",
                                                                        propagation_policy=policy)
    assert answered["metadata"]["finalizers"] == [finalizer] and answered["metadata"]["deletionTimestamp"]
    assert fake_api.get_object("kubevirt.io", "VirtualMachine", "default", "owner") is not None
    fake_api.settle()
    assert fake_api.get_object("kubevirt.io", "VirtualMachine", "default", "owner") is None
    left = fake_api.get_object("", "ConfigMap", "default", "dependent")
    assert (left is not None) == dependent_left
    if left is not None:
        assert "ownerReferences" not in left["metadata"] or left["metadata"]["ownerReferences"] == []


def test_the_garbage_collector_deletes_objects_whose_owners_are_all_gone(fake_api):
    owner = fake_api.add(vm("owner"))
    fake_api.add(owned_by(cm("live-owner"), owner))
    fake_api.add(owned_by(cm("stale-owner"), {**owner, "metadata": {**owner["metadata"], "uid": "old-uid"}}))
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g", "uid": "u-9"}}
    fake_api.add(owned_by(cm("unresolvable-owner"), unknown))  # a kind the collector cannot look up: left alone
    fake_api.settle()
    assert [c["metadata"]["name"] for c in fake_api.objects("", "ConfigMap", "default")] == [
        "live-owner", "unresolvable-owner"]


@pytest.mark.parametrize("field,label", [("uid", "UID"), ("resourceVersion", "ResourceVersion")])
def test_delete_preconditions_that_do_not_match_conflict(fake_api, client, field, label):
    stored = fake_api.add(cm("c"))
    with pytest.raises(ApiException) as error:
        CoreV1Api(client).delete_namespaced_config_map("c", "default", body={"preconditions": {field: "other"}})
    status, body = status_of(error)
    assert (status, body["reason"]) == (409, "Conflict")
    assert body["message"] == (f'Operation cannot be fulfilled on configmaps "c": Precondition failed: {label} in '
                               f'precondition: other, {label} in object meta: {stored["metadata"][field]}')
    CoreV1Api(client).delete_namespaced_config_map("c", "default", body={"preconditions": {
        field: stored["metadata"][field]}})
    assert fake_api.get_object("", "ConfigMap", "default", "c") is None


def test_a_completed_delete_answers_a_status_for_built_in_kinds_and_the_object_for_custom_resources(fake_api,
                                                                                                 client):
    stored = fake_api.add(cm("c"))
    status, body = raw(client, "DELETE", "/api/v1/namespaces/default/configmaps/c")
    assert status == 200 and body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                      "details": {"name": "c", "kind": "configmaps", "uid": stored["metadata"]["uid"]}}
    fake_api.add(vm("v"))
    status, body = raw(client, "DELETE", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/v")
    assert status == 200 and body["kind"] == "VirtualMachine" and body["metadata"]["name"] == "v"

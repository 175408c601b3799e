"""The graph index's lookups (``labelled``, ``owned_by``) answer alike from manifests and from a cluster."""

from __future__ import annotations

import pytest

from kubectl_kvbackup import kinds
from kubectl_kvbackup.cluster import ConnectionOptions, connect
from kubectl_kvbackup.sources import ClusterSource, ManifestSource

from .helpers import obj

CREATED_BY = "kubevirt.io/created-by"


def owner(uid: str | None) -> dict:
    reference = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": "vmi", "controller": False}
    return {**reference, "uid": uid} if uid is not None else reference


def objects() -> list[dict]:
    return [
        # names in the API server's list order, so that both sources list them alike
        obj("v1", "Pod", "a", metadata={"labels": {CREATED_BY: "u1"}, "ownerReferences": [owner("o1"), owner("o1")]}),
        obj("v1", "Pod", "b", metadata={"labels": {CREATED_BY: "u2", "app": "x"}}),
        obj("v1", "Pod", "c", metadata={"labels": {CREATED_BY: "u1", "app": "x"},
                                        "ownerReferences": [owner("o2"), owner(None)]}),
        obj("v1", "Pod", "d", metadata={"ownerReferences": [owner("o1")]}),
        obj("v1", "Pod", "decoy", namespace="elsewhere", metadata={"labels": {CREATED_BY: "u1"},
                                                                   "ownerReferences": [owner("o1")]}),
        obj("kubevirt.io/v1", "VirtualMachineInstance", "vmi", metadata={"labels": {CREATED_BY: "u1"}}),
        obj("instancetype.kubevirt.io/v1beta1", "VirtualMachineClusterInstancetype", "u1.small", namespace="",
            metadata={"labels": {"size": "small"}}),
    ]


@pytest.fixture(params=["manifests", "cluster"])
def source(request, tmp_path):
    if request.param == "manifests":
        yield ManifestSource(objects())
        return
    api = request.getfixturevalue("fake_api")
    api.add_all(objects())
    kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"), namespace="demo")
    yield ClusterSource(connect(ConnectionOptions(kubeconfig=kubeconfig)))


def names(found: list[dict]) -> list[str]:
    return [o["metadata"]["name"] for o in found]


def test_labelled_finds_the_kind_namespace_and_label_value_asked_for_in_list_order(source):
    assert names(source.labelled(kinds.POD, "demo", CREATED_BY, "u1")) == ["a", "c"]
    assert names(source.labelled(kinds.POD, "demo", CREATED_BY, "u2")) == ["b"]
    assert names(source.labelled(kinds.POD, "demo", "app", "x")) == ["b", "c"]
    assert names(source.labelled(kinds.POD, "demo", CREATED_BY, "u3")) == []
    assert names(source.labelled(kinds.POD, "elsewhere", CREATED_BY, "u1")) == ["decoy"]
    assert names(source.labelled(kinds.VMI, "demo", CREATED_BY, "u1")) == ["vmi"]
    # a cluster-scoped kind is found whatever namespace is asked
    assert names(source.labelled(kinds.CLUSTER_INSTANCETYPE, "demo", "size", "small")) == ["u1.small"]


def test_owned_by_finds_each_object_once_and_references_without_a_uid_under_the_empty_one(source):
    assert names(source.owned_by(kinds.POD, "demo", "o1")) == ["a", "d"]
    assert names(source.owned_by(kinds.POD, "demo", "o2")) == ["c"]
    assert names(source.owned_by(kinds.POD, "demo", "")) == ["c"]
    assert names(source.owned_by(kinds.POD, "demo", "o3")) == []
    assert names(source.owned_by(kinds.POD, "elsewhere", "o1")) == ["decoy"]


def test_answers_are_the_callers_own(source):
    source.labelled(kinds.POD, "demo", CREATED_BY, "u1").clear()
    source.owned_by(kinds.POD, "demo", "o1").clear()
    assert names(source.labelled(kinds.POD, "demo", CREATED_BY, "u1")) == ["a", "c"]
    assert names(source.owned_by(kinds.POD, "demo", "o1")) == ["a", "d"]

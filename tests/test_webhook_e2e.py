"""End to end: the API server calls the webhook on create, as a real one does, and stores what it admits.

The fake API server holds the webhook's MutatingWebhookConfiguration (as rendered, with ``clientConfig.url`` and
``caBundle`` instead of a Service, since the webhook runs outside the cluster here). gunicorn serves the webhook
over TLS; its lookups go back to the same API server with the webhook's own service account.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any, Iterator

import pytest

from kubectl_kvbackup import kinds, manifests, rules
from kubectl_kvbackup.cluster import ApiError, Connection, ConnectionOptions, collection_path, connect

from kvbackup_webhook.admission import LookupFailed
from kvbackup_webhook.lookups import ClusterLookups

from .fakeapi import ResourceType
from .webhook_server import WebhookServer, write_tls

Obj = dict[str, Any]
VELERO = "system:serviceaccount:velero:velero"
KUBEVIRT = "system:serviceaccount:kubevirt:kubevirt-controller"
WEBHOOK_USER = "system:serviceaccount:kvbackup-system:kvbackup-webhook"
RESTORED = {rules.VELERO_RESTORE_LABEL: "nightly-1"}


@pytest.fixture
def cluster(fake_api, tmp_path) -> Iterator[Any]:
    """The fake API server with the webhook registered and serving; namespaces prod and dr (restore mode)."""
    fake_api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
    fake_api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "dr", "labels": {rules.RESTORE_MODE_NAMESPACE_LABEL: "enabled"}}})
    fake_api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(mode=0o700)
    material = write_tls(str(tls_dir))
    webhook_kubeconfig = fake_api.write_kubeconfig(str(tmp_path / "webhook-kubeconfig"), user=WEBHOOK_USER)
    with WebhookServer(str(tls_dir), material.ca_pem, env={"KVBACKUP_WEBHOOK_KUBECONFIG": webhook_kubeconfig}) \
            as server:
        configuration = next(o for o in manifests.render(manifests.Settings(), material)
                             if o["kind"] == "MutatingWebhookConfiguration")
        for webhook in configuration["webhooks"]:
            webhook["clientConfig"] = {"url": f"{server.url}/mutate",
                                       "caBundle": base64.b64encode(material.ca_pem).decode()}
        fake_api.add(configuration)
        yield fake_api


def as_user(api: Any, tmp_path: Any, user: str) -> Connection:
    path = api.write_kubeconfig(os.path.join(str(tmp_path), f"kubeconfig-{user.replace(':', '-')}"), user=user)
    return connect(ConnectionOptions(kubeconfig=path))


def create(connection: Connection, kind: kinds.Kind, obj: Obj, dry_run: bool = False) -> Obj:
    namespace = obj["metadata"]["namespace"]
    return connection.request("POST", collection_path(kind, kind.version, namespace), body=obj,
                              query=[("dryRun", "All")] if dry_run else None)


def data_volume(name: str, namespace: str = "prod", labels: dict[str, str] | None = None,
                phase: str | None = "Succeeded") -> Obj:
    obj: Obj = {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(RESTORED if labels is None
                                                                                  else labels)},
                "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}
    if phase:
        obj["status"] = {"phase": phase}
    return obj


def owned_vmi(namespace: str = "prod", labels: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "web", "namespace": namespace, "labels": dict(labels or {}),
                         "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "web",
                                              "uid": "1c0ffee0-0000-0000-0000-000000000001", "controller": True}]},
            "spec": {"domain": {"devices": {}}}}


def launcher_pod(namespace: str = "prod", labels: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "virt-launcher-web-abcde", "namespace": namespace,
                         "labels": {"kubevirt.io": "virt-launcher", **(labels or {})},
                         "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                                              "name": "web", "uid": "1c0ffee0-0000-0000-0000-000000000002",
                                              "controller": True}]},
            "spec": {"containers": [{"name": "compute", "image": "virt-launcher"}]}}


def annotations(obj: Obj | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def restored_pvc(name: str, dv_uid: str) -> Obj:
    """A DataVolume's PVC as Velero restores it with its PersistentVolume: owners, uid and status stripped, CDI's
    records and the binding to the restored volume kept."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "prod", "labels": dict(RESTORED),
                         "annotations": {"volume.kubernetes.io/selected-node": "old-node",
                                         rules.CREATED_FOR_DATA_VOLUME_ANNOTATION: dv_uid,
                                         rules.POD_PHASE_ANNOTATION: "Succeeded"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "volumeName": f"pvc-{dv_uid}"}}


def test_velero_restore_order_pvc_then_datavolume(cluster, tmp_path) -> None:
    """Velero restores PVCs before custom resources: the PVC, with evidence of its data, is marked populated for
    its DataVolume; the DataVolume that follows finds its restored PVC and is marked prePopulated, whether or not
    the API server still shows the webhook its status."""
    velero = as_user(cluster, tmp_path, VELERO)
    create(velero, kinds.PVC, restored_pvc("root", "0ld-uid"))
    stored = cluster.get_object("", "PersistentVolumeClaim", "prod", "root")
    assert annotations(stored) == {rules.CREATED_FOR_DATA_VOLUME_ANNOTATION: "0ld-uid",
                                   rules.POD_PHASE_ANNOTATION: "Succeeded", rules.POPULATED_FOR_ANNOTATION: "root"}
    assert "ownerReferences" not in stored["metadata"]
    create(velero, kinds.DATA_VOLUME, data_volume("root"))
    assert annotations(cluster.get_object("cdi.kubevirt.io", "DataVolume", "prod", "root")) == \
        {rules.PREPOPULATED_ANNOTATION: "root"}


def test_velero_restored_pvc_never_populated_is_denied(cluster, tmp_path) -> None:
    """A DataVolume's PVC that CDI never populated (WaitForFirstConsumer, VM never started) carries no record: it
    is refused, so CDI creates and populates it from the restored DataVolume instead of a blank disk."""
    blank = restored_pvc("blank", "0ld-uid")
    del blank["metadata"]["annotations"][rules.POD_PHASE_ANNOTATION]
    with pytest.raises(ApiError) as denied:
        create(as_user(cluster, tmp_path, VELERO), kinds.PVC, blank)
    assert "pvc-never-populated" in str(denied.value)
    assert cluster.get_object("", "PersistentVolumeClaim", "prod", "blank") is None


def test_pvc_restored_after_its_datavolume_is_owned_by_the_new_datavolume(cluster, tmp_path) -> None:
    current = cluster.add(data_volume("data", labels={}))
    pvc = restored_pvc("data", "0ld-uid")
    pvc = rules.set_aside_owner_references({**pvc, "metadata": {**pvc["metadata"], "ownerReferences": [
        {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": "data", "uid": "0ld-uid",
         "controller": True}]}})
    create(as_user(cluster, tmp_path, VELERO), kinds.PVC, pvc)
    stored = cluster.get_object("", "PersistentVolumeClaim", "prod", "data")
    assert stored["metadata"]["ownerReferences"][0]["uid"] == current["metadata"]["uid"] != "0ld-uid"
    assert annotations(stored)[rules.POPULATED_FOR_ANNOTATION] == "data"
    assert rules.OWNER_REFERENCES_ANNOTATION not in annotations(stored)


def test_datavolume_without_status_is_prepopulated_when_its_pvc_was_restored_first(cluster, tmp_path) -> None:
    cluster.add({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "spec": {},
                 "metadata": {"name": "data", "namespace": "dr",
                              "annotations": {"cdi.kubevirt.io/storage.pod.phase": "Succeeded"}}})
    create(as_user(cluster, tmp_path, "gitops"), kinds.DATA_VOLUME, data_volume("data", "dr", labels={}, phase=None))
    assert annotations(cluster.get_object("cdi.kubevirt.io", "DataVolume", "dr", "data")) == \
        {rules.PREPOPULATED_ANNOTATION: "data"}
    create(as_user(cluster, tmp_path, "gitops"), kinds.DATA_VOLUME, data_volume("fresh", "dr", labels={}, phase=None))
    assert annotations(cluster.get_object("cdi.kubevirt.io", "DataVolume", "dr", "fresh")) == {}


def test_restoring_kubevirt_owned_objects_is_denied_with_the_rule_and_what_to_do(cluster, tmp_path) -> None:
    velero = as_user(cluster, tmp_path, VELERO)
    with pytest.raises(ApiError) as denied:
        create(velero, kinds.VMI, owned_vmi(labels=RESTORED))
    assert denied.value.status == 403
    assert "VirtualMachineInstance prod/web" in str(denied.value) and "owned-vmi" in str(denied.value)
    assert "restore the owner instead" in str(denied.value)
    with pytest.raises(ApiError) as denied:
        create(velero, kinds.POD, launcher_pod(labels=RESTORED))
    assert denied.value.status == 403 and "launcher-pod" in str(denied.value)
    assert cluster.get_object("kubevirt.io", "VirtualMachineInstance", "prod", "web") is None
    assert cluster.get_object("", "Pod", "prod", "virt-launcher-web-abcde") is None


@pytest.mark.parametrize("namespace", ["prod", "dr"])
def test_a_normal_vm_start_is_never_denied_or_changed(cluster, tmp_path, namespace: str) -> None:
    """KubeVirt's controller creating a VMI and its launcher pod, in a plain namespace and in one being restored
    into, with labels copied from a restored VM's template: the registration's matchConditions keep the API server
    from calling the webhook at all (the app's own re-check is in the golden fixtures)."""
    kubevirt = as_user(cluster, tmp_path, KUBEVIRT)
    vmi, pod = owned_vmi(namespace, labels=RESTORED), launcher_pod(namespace, labels=RESTORED)
    created_vmi = create(kubevirt, kinds.VMI, vmi)
    created_pod = create(kubevirt, kinds.POD, pod)
    for created, sent in ((created_vmi, vmi), (created_pod, pod)):
        assert created["metadata"]["labels"] == sent["metadata"]["labels"]
        assert created["metadata"]["ownerReferences"] == sent["metadata"]["ownerReferences"]
        assert "annotations" not in created["metadata"]
    assert [call for call in cluster.admission_calls if call.user == KUBEVIRT] == []


def test_vm_restored_with_a_mac_in_use_gets_a_new_one_and_dry_run_stores_nothing(cluster, tmp_path) -> None:
    def vm(name: str, labels: dict[str, str]) -> Obj:
        return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": {"name": name, "namespace": "prod", "labels": labels},
                "spec": {"template": {"spec": {"domain": {"devices": {"interfaces": [
                    {"name": "default", "masquerade": {}, "macAddress": "02:aa:bb:cc:dd:ee"}]}}}}}}
    cluster.add(vm("original", {}))
    velero = as_user(cluster, tmp_path, VELERO)
    preview = create(velero, kinds.VM, vm("copy", dict(RESTORED)), dry_run=True)
    new_mac = preview["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"]
    assert new_mac != "02:aa:bb:cc:dd:ee"
    assert cluster.get_object("kubevirt.io", "VirtualMachine", "prod", "copy") is None
    create(velero, kinds.VM, vm("copy", dict(RESTORED)))
    stored = cluster.get_object("kubevirt.io", "VirtualMachine", "prod", "copy")
    # replaced, not removed, and the same address the preview showed
    assert stored["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == new_mac


def test_objects_outside_the_restore_context_and_in_kube_system_are_not_sent(cluster, tmp_path) -> None:
    admin = as_user(cluster, tmp_path, "admin")
    create(admin, kinds.DATA_VOLUME, data_volume("plain", labels={}))
    create(admin, kinds.DATA_VOLUME, data_volume("system", "kube-system"))
    assert annotations(cluster.get_object("cdi.kubevirt.io", "DataVolume", "prod", "plain")) == {}
    assert annotations(cluster.get_object("cdi.kubevirt.io", "DataVolume", "kube-system", "system")) == {}
    assert cluster.admission_calls == []


def test_an_object_with_both_restore_labels_is_reviewed_once(cluster, tmp_path) -> None:
    labels = {**RESTORED, rules.RESTORE_LABEL: "r1"}
    create(as_user(cluster, tmp_path, VELERO), kinds.DATA_VOLUME, data_volume("both", "dr", labels=labels))
    assert [call.webhook for call in cluster.admission_calls] == ["restore-label.kvbackup.kubevirt.io"]


def test_succeeded_datavolume_is_prepopulated_from_the_status_in_the_request(cluster, tmp_path) -> None:
    """The API server shows mutating webhooks the status a client sent, and resets it only afterwards."""
    create(as_user(cluster, tmp_path, VELERO), kinds.DATA_VOLUME, data_volume("seen"))
    stored = cluster.get_object("cdi.kubevirt.io", "DataVolume", "prod", "seen")
    assert annotations(stored) == {rules.PREPOPULATED_ANNOTATION: "seen"}
    assert "status" not in stored
    create(as_user(cluster, tmp_path, VELERO), kinds.DATA_VOLUME, data_volume("importing", phase="ImportScheduled"))
    assert annotations(cluster.get_object("cdi.kubevirt.io", "DataVolume", "prod", "importing")) == {}


def test_an_exported_bundle_applied_as_is_is_restored_by_the_rules(cluster, tmp_path, capsys) -> None:
    """``kubectl apply -R -f BUNDLE/resources`` into a cluster with the webhook: owners first, as kubectl's
    ordering by kind would not guarantee, so the set-aside owner references are re-pointed at the new UIDs."""
    import yaml

    from kubectl_kvbackup.cli.main import main

    from .helpers import EXAMPLES

    bundle = tmp_path / "bundle"
    assert main(["export", "-f", EXAMPLES, "-n", "demo", "vm/fedora", "--to", str(bundle), "-q"]) == 0
    cluster.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    cluster.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "net-system"}})
    cluster.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "os-images"}})
    gitops = as_user(cluster, tmp_path, "gitops")
    order = ["VirtualMachine", "DataVolume", "PersistentVolumeClaim"]
    files = sorted(bundle.glob("resources/**/*.yaml"),
                   key=lambda p: order.index(p.parent.name) if p.parent.name in order else len(order))
    for path in files:
        obj = yaml.safe_load(path.read_text())
        kind = kinds.kind_for(kinds.group_of(obj["apiVersion"]), obj["kind"])
        gitops.request("POST", collection_path(kind, kind.version, obj["metadata"].get("namespace")), body=obj)
    vm = cluster.get_object("kubevirt.io", "VirtualMachine", "demo", "fedora")
    dv = cluster.get_object("cdi.kubevirt.io", "DataVolume", "demo", "fedora-root")
    # an offline export holds no volume data: the DataVolume's PVC is left for CDI to populate again
    assert rules.PREPOPULATED_ANNOTATION not in annotations(dv)
    assert cluster.get_object("", "PersistentVolumeClaim", "demo", "fedora-root") is None
    assert dv["metadata"]["ownerReferences"][0]["uid"] == vm["metadata"]["uid"]
    assert rules.OWNER_REFERENCES_ANNOTATION not in annotations(dv)
    data = cluster.get_object("", "PersistentVolumeClaim", "demo", "fedora-data")
    assert "volumeName" not in data["spec"] and data["metadata"]["labels"][rules.RESTORE_LABEL]
    assert cluster.get_object("kubevirt.io", "VirtualMachineInstance", "demo", "fedora") is None  # never in resources/


def webhook_lookups(api: Any, tmp_path: Any, **settings: float) -> ClusterLookups:
    path = api.write_kubeconfig(str(tmp_path / "webhook"), user=WEBHOOK_USER)
    return ClusterLookups(lambda: connect(ConnectionOptions(kubeconfig=path)), **settings)


def later(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


def gets(api: Any, fragment: str) -> int:
    return sum(1 for r in api.requests if r.method == "GET" and fragment in r.path)


def test_owner_lookups_recheck_a_cached_uid_that_disagrees_and_never_answer_for_owners_they_may_not_read(
        fake_api, tmp_path) -> None:
    lookups = webhook_lookups(fake_api, tmp_path)
    vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "web", "namespace": "prod"}}
    first = fake_api.add(vm)["metadata"]["uid"]
    owner = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "web"}
    fake_api.reset_requests()
    assert lookups.owner_uid({**owner, "uid": "old-uid"}, "prod", later()) == first
    assert gets(fake_api, "/virtualmachines/web") == 1  # a cold owner costs one GET
    second = fake_api.add({**vm, "metadata": {**vm["metadata"], "uid": "recreated-uid"}})["metadata"]["uid"]
    assert second == "recreated-uid"
    # within the cache's lifetime, an object naming the recreated owner keeps its (correct) UID
    assert lookups.owner_uid({**owner, "uid": second}, "prod", later()) == second
    fake_api.deny(WEBHOOK_USER, "get", "tekton.dev", "taskruns")
    fake_api.register(ResourceType("tekton.dev", "v1", "TaskRun", "taskruns"))
    with pytest.raises(LookupFailed) as error:
        lookups.owner_uid({"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "t", "uid": "u"}, "prod", later())
    assert error.value.forbidden


def test_a_missing_owner_is_remembered_briefly_and_a_crd_installed_later_is_found(fake_api, tmp_path) -> None:
    lookups = webhook_lookups(fake_api, tmp_path, missing_ttl=0.0, discovery_ttl=0.0)
    cached = webhook_lookups(fake_api, tmp_path)
    owner = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w1", "uid": "old"}
    assert lookups.owner_uid(owner, "prod", later()) is None  # no such kind yet
    fake_api.register(ResourceType("example.com", "v1", "Widget", "widgets"))
    assert lookups.owner_uid(owner, "prod", later()) is None  # the kind now, but no such object
    widget = fake_api.add({"apiVersion": "example.com/v1", "kind": "Widget",
                           "metadata": {"name": "w1", "namespace": "prod"}})
    assert lookups.owner_uid(owner, "prod", later()) == widget["metadata"]["uid"]
    gone = {**owner, "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "gone"}
    fake_api.reset_requests()
    assert cached.owner_uid(gone, "prod", later()) is None
    assert cached.owner_uid(gone, "prod", later()) is None
    assert gets(fake_api, "/virtualmachines/gone") == 1  # "not found" is cached too


def test_owner_names_that_are_no_names_never_reach_the_api_server(fake_api, tmp_path) -> None:
    lookups = webhook_lookups(fake_api, tmp_path)
    fake_api.reset_requests()
    for name in ("..", "../../../api/v1/namespaces/kube-system/secrets/x", "a?b", ""):
        assert lookups.owner_uid({"apiVersion": "v1", "kind": "ConfigMap", "name": name}, "prod", later()) is None
    assert fake_api.requests == []


def test_owner_cache_is_bounded() -> None:
    from kvbackup_webhook.lookups import _TTLCache

    cache: _TTLCache[str] = _TTLCache(ttl=60.0, size=3)
    for i in range(10):
        cache.get(i, lambda: "uid")
    assert len(cache) == 3


@pytest.mark.parametrize("lookup", ["namespace", "owner", "discovery", "pvc"])
def test_each_api_call_times_out_with_the_time_left_before_the_deadline(fake_api, tmp_path, lookup: str) -> None:
    """The API server answers each of these after 5 s; with half a second left the call gives up in time."""
    lookups = webhook_lookups(fake_api, tmp_path)
    fake_api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
    fake_api.register(ResourceType("example.com", "v1", "Widget", "widgets"))
    paths = {"namespace": "/api/v1/namespaces/prod$", "owner": "/datavolumes/", "discovery": "^/apis/example.com/v1$",
             "pvc": "/persistentvolumeclaims/"}
    fake_api.inject("GET", paths[lookup], delay=5.0, times=1)
    calls = {"namespace": lambda d: lookups.namespace_labels("prod", d),
             "owner": lambda d: lookups.owner_uid({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                                                   "name": "dv"}, "prod", d),
             "discovery": lambda d: lookups.owner_uid({"apiVersion": "example.com/v1", "kind": "Widget",
                                                       "name": "w"}, "prod", d),
             "pvc": lambda d: lookups.pvc("prod", "p", d)}
    with pytest.raises(LookupFailed):
        calls[lookup](later(0.5))
    with pytest.raises(LookupFailed, match="time for lookups is spent"):  # none starts after the deadline
        calls[lookup](time.monotonic())

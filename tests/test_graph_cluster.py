"""`kubectl kvbackup graph` against the fake API server, through the real kubernetes client."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import yaml

from benchmarks.fleet import fleet
from kubectl_kvbackup.cli.main import main

from .helpers import EXAMPLES, example_objects


def graph_json(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(["graph", *argv, "-o", "json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out else {}), captured.err


@pytest.fixture
def demo_cluster(fake_api, tmp_path):
    fake_api.add_all(example_objects())
    path = tmp_path / "kubeconfig"
    fake_api.write_kubeconfig(str(path), namespace="demo")
    return fake_api, str(path)


def test_online_graph_equals_offline_graph(capsys, demo_cluster):
    _, kubeconfig = demo_cluster
    code, online, err = graph_json(capsys, "--all", "--kubeconfig", kubeconfig)
    assert code == 0, err
    code, offline, _ = graph_json(capsys, "--all", "-f", EXAMPLES, "-n", "demo")
    assert online == offline
    assert len(online["nodes"]) > 40


def test_namespace_defaults_to_the_contexts(capsys, demo_cluster):
    _, kubeconfig = demo_cluster
    code, data, err = graph_json(capsys, "vm/windows", "--kubeconfig", kubeconfig)
    assert code == 0, err
    assert data["roots"][0]["namespace"] == "demo"


def test_requests_grow_with_kinds_not_objects(capsys, fake_api, tmp_path):
    path = str(tmp_path / "kubeconfig")
    fake_api.write_kubeconfig(path, namespace="bench")
    small, large = fleet(5), fleet(60)
    counts = []
    for objects, size in ((small, 5), (large[len(small):], 60)):
        fake_api.add_all(objects)
        fake_api.reset_requests()
        code, data, err = graph_json(capsys, "--all", "--kubeconfig", path)
        assert code == 0, err
        assert len(data["roots"]) == size
        counts.append(len(fake_api.requests))
    assert counts[0] == counts[1]


def test_lists_are_paginated(capsys, fake_api, tmp_path):
    path = str(tmp_path / "kubeconfig")
    fake_api.write_kubeconfig(path, namespace="bench")
    fake_api.add_all(fleet(520))
    fake_api.reset_requests()
    code, data, err = graph_json(capsys, "--all", "--kubeconfig", path)
    assert code == 0, err
    assert len(data["roots"]) == 520
    vm_lists = [r for r in fake_api.requests if r.path.endswith("/virtualmachines")]
    assert len(vm_lists) == 2
    assert all(r.query.get("limit") == "500" for r in vm_lists)
    assert vm_lists[1].query.get("continue")


def test_all_namespaces_lists_each_kind_once(capsys, fake_api, tmp_path):
    path = str(tmp_path / "kubeconfig")
    fake_api.write_kubeconfig(path, namespace="default")
    fake_api.add_all(fleet(3, "team-a") + fleet(2, "team-b"))
    fake_api.reset_requests()
    code, data, err = graph_json(capsys, "--all", "-A", "--kubeconfig", path)
    assert code == 0, err
    assert sorted({r["namespace"] for r in data["roots"]}) == ["team-a", "team-b"]
    namespaced_lists = [r for r in fake_api.requests if "/namespaces/" in r.path]
    assert namespaced_lists == []


def test_context_cluster_and_user_flags_choose_the_connection(capsys, demo_cluster, tmp_path):
    fake, kubeconfig = demo_cluster
    config = yaml.safe_load(open(kubeconfig))
    context = config["contexts"][0]
    broken = {"name": "broken", "context": {**context["context"], "cluster": "nowhere", "namespace": "demo"}}
    config["contexts"].append(broken)
    config["clusters"].append({"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}})
    config["current-context"] = "broken"
    path = tmp_path / "multi"
    path.write_text(yaml.safe_dump(config))
    code, _, err = graph_json(capsys, "vm/windows", "--kubeconfig", str(path), "--request-timeout", "5s")
    assert code == 1 and "Unable to connect to the server" in err
    code, data, err = graph_json(capsys, "vm/windows", "--kubeconfig", str(path), "--context", context["name"])
    assert code == 0, err
    code, data, err = graph_json(capsys, "vm/windows", "--kubeconfig", str(path),
                                 "--cluster", context["context"]["cluster"])
    assert code == 0, err
    code, _, err = graph_json(capsys, "vm/windows", "--kubeconfig", str(path), "--context", "nope")
    assert code == 1 and 'context "nope" does not exist' in err


def test_kubeconfig_environment_variable_is_honoured(capsys, demo_cluster, monkeypatch):
    _, kubeconfig = demo_cluster
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    code, data, err = graph_json(capsys, "vmirs/web")
    assert code == 0, err
    assert {"group": "kubevirt.io", "kind": "VirtualMachineInstance", "namespace": "demo", "name": "webm2k9d",
            "found": True} in data["nodes"]


def test_not_found_is_reported_as_kubectl_does(capsys, demo_cluster):
    _, kubeconfig = demo_cluster
    code, _, err = graph_json(capsys, "vm/nope", "--kubeconfig", kubeconfig)
    assert code == 1
    assert err.strip() == 'Error from server (NotFound): virtualmachines.kubevirt.io "nope" not found'


def test_forbidden_names_the_verb_and_resource(capsys, demo_cluster, tmp_path):
    fake, _ = demo_cluster
    path = str(tmp_path / "alice")
    fake.write_kubeconfig(path, namespace="demo", user="alice")
    fake.deny("alice", "list", "", "pods", "demo")  # launcher pods are found by label: only a LIST can
    code, _, err = graph_json(capsys, "vm/fedora", "--kubeconfig", path)
    assert code == 1
    assert 'cannot list resource "pods"' in err and "kvbackup needs permission to list pods in namespace demo" in err
    assert "Traceback" not in err


def test_unreachable_server_gives_one_clear_line(capsys, tmp_path, fake_api):
    path = str(tmp_path / "kubeconfig")
    fake_api.write_kubeconfig(path, namespace="demo")
    config = yaml.safe_load(open(path))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    (tmp_path / "closed").write_text(yaml.safe_dump(config))
    code, _, err = graph_json(capsys, "--all", "--kubeconfig", str(tmp_path / "closed"))
    assert code == 1
    assert err.startswith(f"error: Unable to connect to the server http://127.0.0.1:{port}")
    assert len(err.strip().splitlines()) == 1


def test_silent_server_times_out_within_request_timeout(capsys, tmp_path, fake_api):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    stop = threading.Event()

    def accept_and_say_nothing():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    try:
        path = str(tmp_path / "kubeconfig")
        fake_api.write_kubeconfig(path, namespace="demo")
        config = yaml.safe_load(open(path))
        config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{listener.getsockname()[1]}"
        (tmp_path / "silent").write_text(yaml.safe_dump(config))
        code, _, err = graph_json(capsys, "--all", "--kubeconfig", str(tmp_path / "silent"),
                                  "--request-timeout", "1s")
        assert code == 1
        assert "Unable to connect to the server" in err and "timed out" in err
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_missing_kubeconfig_file_is_a_clear_error(capsys, tmp_path):
    code, _, err = graph_json(capsys, "--all", "--kubeconfig", str(tmp_path / "absent"))
    assert code == 1
    assert "absent: no such file or directory" in err


def test_api_group_not_served_is_a_warning_and_its_objects_absent(capsys, demo_cluster):
    fake, kubeconfig = demo_cluster
    fake.remove_group("cdi.kubevirt.io")
    code, data, err = graph_json(capsys, "vm/fedora", "--kubeconfig", kubeconfig)
    assert code == 0, err
    assert "does not serve the API group cdi.kubevirt.io" in err
    dv = {"group": "cdi.kubevirt.io", "kind": "DataVolume", "namespace": "demo", "name": "fedora-root",
          "found": False}
    assert dv in data["nodes"]


def test_objects_created_through_the_api_are_found(capsys, demo_cluster):
    """Objects created by POST (server-assigned uid) link up: the launcher pod label carries the new VMI UID."""
    fake, kubeconfig = demo_cluster
    from kubernetes import config as k8s_config
    from kubernetes.client import CustomObjectsApi, CoreV1Api
    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    vmi = CustomObjectsApi(api).create_namespaced_custom_object(
        "kubevirt.io", "v1", "demo", "virtualmachineinstances",
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "solo"},
         "spec": {"volumes": []}})
    CoreV1Api(api).create_namespaced_pod("demo", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "virt-launcher-solo-aaaaa", "labels": {"kubevirt.io/created-by": vmi["metadata"]["uid"]}},
        "spec": {"containers": [{"name": "compute", "image": "x"}]}})
    code, data, err = graph_json(capsys, "vmi/solo", "--kubeconfig", kubeconfig)
    assert code == 0, err
    assert {"group": "", "kind": "Pod", "namespace": "demo", "name": "virt-launcher-solo-aaaaa",
            "found": True} in data["nodes"]


def test_a_kind_that_may_be_got_but_not_listed_is_fetched_by_name(capsys, demo_cluster, tmp_path):
    fake, _ = demo_cluster
    path = str(tmp_path / "bob")
    fake.write_kubeconfig(path, namespace="demo", user="bob")
    fake.deny("bob", "list", "instancetype.kubevirt.io", "virtualmachineclusterinstancetypes")
    fake.reset_requests()
    code, data, err = graph_json(capsys, "vm/fedora", "--kubeconfig", path)
    assert code == 0, err
    assert {"group": "instancetype.kubevirt.io", "kind": "VirtualMachineClusterInstancetype", "namespace": "",
            "name": "u1.medium", "found": True} in data["nodes"]
    assert [r.path for r in fake.requests if r.method == "GET" and "clusterinstancetypes/" in r.path] == [
        "/apis/instancetype.kubevirt.io/v1beta1/virtualmachineclusterinstancetypes/u1.medium"]
    fake.deny("bob", "get", "instancetype.kubevirt.io", "virtualmachineclusterinstancetypes")
    code, _, err = graph_json(capsys, "vm/fedora", "--kubeconfig", path)
    assert code == 1 and "needs permission to list or get virtualmachineclusterinstancetypes" in err

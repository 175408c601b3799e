"""``kubectl kvbackup restore``: a bundle exported from the fake API server restored into it again, through the
real client: ordering, namespaces, Secrets, owners, the three volume modes, conflicts, dry runs, identities."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import yaml

from kubectl_kvbackup import crypto, rules
from kubectl_kvbackup.bundle import INDEX
from kubectl_kvbackup.cli.main import main

from .helpers import example_objects, obj

SNAPSHOT = ("snapshot.storage.k8s.io", "VolumeSnapshot")
CONTENT = ("snapshot.storage.k8s.io", "VolumeSnapshotContent")
VM = ("kubevirt.io", "VirtualMachine")
DV = ("cdi.kubevirt.io", "DataVolume")
PVC = ("", "PersistentVolumeClaim")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def play_snapshotter(fake, stop):
    """The CSI snapshotter: each new VolumeSnapshot gets a bound VolumeSnapshotContent and becomes ready."""
    while not stop.is_set():
        for snapshot in fake.objects(*SNAPSHOT):
            if not (snapshot.get("status") or {}).get("readyToUse"):
                name = "snapcontent-" + snapshot["metadata"]["uid"]
                fake.add({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
                          "metadata": {"name": name},
                          "spec": {"driver": "csi.example.com", "deletionPolicy": "Delete",
                                   "source": {"volumeHandle": "vol-" + snapshot["metadata"]["name"]},
                                   "volumeSnapshotRef": {"name": snapshot["metadata"]["name"],
                                                         "namespace": snapshot["metadata"]["namespace"]}},
                          "status": {"snapshotHandle": "handle-" + snapshot["metadata"]["name"],
                                     "readyToUse": True}})
                fake.add({**snapshot, "status": {"readyToUse": True, "restoreSize": "10Gi",
                                                 "boundVolumeSnapshotContentName": name}})
        time.sleep(0.05)


def record_snapshot_contents(fake, bundle_dir, key=None):
    """What the export records of each snapshot's content (handle, driver), as the fixture of a bundle."""
    path = os.path.join(bundle_dir, INDEX)
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    for record in index["snapshots"]:
        snapshot = fake.get_object(*SNAPSHOT, record["namespace"], record["name"])
        content = fake.get_object(*CONTENT, None, snapshot["status"]["boundVolumeSnapshotContentName"])
        record.update(contentName=content["metadata"]["name"], snapshotHandle=content["status"]["snapshotHandle"],
                      driver=content["spec"]["driver"])
    if key is not None:
        index["integrity"]["mac"] = crypto.index_mac(key, index)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(index, f)


@pytest.fixture
def cluster(fake_api, tmp_path):
    fake_api.add_all(example_objects())
    return fake_api, fake_api.write_kubeconfig(str(tmp_path / "kubeconfig"), namespace="demo")


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "backup.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return str(path)


def export_with_snapshots(capsys, fake, kubeconfig, target, *extra):
    stop = threading.Event()
    snapshotter = threading.Thread(target=play_snapshotter, args=(fake, stop), daemon=True)
    snapshotter.start()
    try:
        code, _, err = run(capsys, "export", "vm/fedora", "--snapshot", "--freeze=never", "--name", "nightly",
                           "--kubeconfig", kubeconfig, "--to", str(target), *extra)
    finally:
        stop.set()
        snapshotter.join()
    assert code == 0, err
    return str(target)


@pytest.fixture
def bundle(capsys, cluster, tmp_path, key_file):
    fake, kubeconfig = cluster
    path = export_with_snapshots(capsys, fake, kubeconfig, tmp_path / "b", "--encrypt-key-file", key_file)
    record_snapshot_contents(fake, path, crypto.load_key(key_file))
    return path


def restore(capsys, kubeconfig, bundle, *argv):
    return run(capsys, "restore", bundle, "--kubeconfig", kubeconfig, "-q", *argv)


def annotations(o):
    return (o.get("metadata") or {}).get("annotations") or {}


def test_restore_into_another_namespace_brings_data_secrets_and_owners(capsys, cluster, bundle, key_file):
    fake, kubeconfig = cluster
    code, out, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                             "--name", "r1", "-o", "json")
    assert code == 0, err
    assert fake.get_object("", "Namespace", None, "copy") is not None
    secret = fake.get_object("", "Secret", "copy", "fedora-userdata")
    assert secret is not None and secret["metadata"]["labels"][rules.RESTORE_LABEL] == "r1"
    vm = fake.get_object(*VM, "copy", "fedora")
    assert vm["metadata"]["labels"][rules.RESTORE_LABEL] == "r1"
    dv = fake.get_object(*DV, "copy", "fedora-root")
    assert annotations(dv)[rules.PREPOPULATED_ANNOTATION] == "fedora-root"
    assert dv["metadata"]["ownerReferences"][0]["uid"] == vm["metadata"]["uid"]
    assert rules.OWNER_REFERENCES_ANNOTATION not in annotations(dv)
    pvc = fake.get_object(*PVC, "copy", "fedora-root")
    assert annotations(pvc)[rules.POPULATED_FOR_ANNOTATION] == "fedora-root"
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == dv["metadata"]["uid"]
    assert "volumeName" not in pvc["spec"]
    # a snapshot cannot be used across namespaces: a pre-provisioned content and a snapshot in the target
    source = pvc["spec"]["dataSource"]
    assert source["kind"] == "VolumeSnapshot"
    snapshot = fake.get_object(*SNAPSHOT, "copy", source["name"])
    content = fake.get_object(*CONTENT, None, snapshot["spec"]["source"]["volumeSnapshotContentName"])
    assert content["spec"]["source"] == {"snapshotHandle": "handle-fedora-root-nightly"}
    assert content["spec"]["deletionPolicy"] == "Retain" and content["spec"]["driver"] == "csi.example.com"
    assert content["spec"]["volumeSnapshotRef"] == {"apiVersion": "snapshot.storage.k8s.io/v1",
                                                    "kind": "VolumeSnapshot", "namespace": "copy",
                                                    "name": source["name"]}
    # KubeVirt recreates these: never restored, each listed with its reason
    assert fake.objects("kubevirt.io", "VirtualMachineInstance", "copy") == []
    assert fake.objects("", "Pod", "copy") == []
    result = json.loads(out)
    skipped = {s["object"]: s["reason"] for s in result["skipped"]}
    assert "KubeVirt recreates" in skipped["virtualmachineinstance.kubevirt.io/copy/fedora"]
    assert result["succeeded"] and result["workloads"][0]["workload"] == "virtualmachine.kubevirt.io/copy/fedora"

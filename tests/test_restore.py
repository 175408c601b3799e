"""``kubectl kvbackup restore``: a bundle exported from the fake API server restored into it again, through the
real client: ordering, namespaces, Secrets, owners, the three volume modes, conflicts, dry runs, identities."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import pytest
import yaml

from kubectl_kvbackup import rules
from kubectl_kvbackup.bundle import INDEX, read_bundle
from kubectl_kvbackup.cli.main import main
from kubectl_kvbackup.refs import Ref
from kubectl_kvbackup.restore import (RestoreOptions, TargetState, map_namespaces, not_ready,
                                      plan_restore, restore_context, restore_name_from)

from .helpers import Snapshotter, example_objects, obj, on_terminal
from .test_export_cluster import plugin_process, wait_until

SNAPSHOT = ("snapshot.storage.k8s.io", "VolumeSnapshot")
CONTENT = ("snapshot.storage.k8s.io", "VolumeSnapshotContent")
VM = ("kubevirt.io", "VirtualMachine")
DV = ("cdi.kubevirt.io", "DataVolume")
PVC = ("", "PersistentVolumeClaim")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


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
    with Snapshotter(fake):
        code, _, err = run(capsys, "export", "vm/fedora", "--snapshot", "--freeze=never", "--name", "nightly",
                           "--kubeconfig", kubeconfig, "--to", str(target), *extra)
    assert code == 0, err
    return str(target)


@pytest.fixture
def bundle(capsys, cluster, tmp_path, key_file):
    fake, kubeconfig = cluster
    return export_with_snapshots(capsys, fake, kubeconfig, tmp_path / "b", "--encrypt-key-file", key_file)


def restore(capsys, kubeconfig, bundle, *argv):
    return run(capsys, "restore", bundle, "--kubeconfig", kubeconfig, "-q", *argv)


DEMO_CLAIMS = ("fedora-root", "fedora-data", "fedora-hotplug", "fedora-memdump", "persistent-state-for-fedora-8wq2n")


def delete(fake, path):
    status, body = fake.handle("DELETE", path, {"authorization": "Bearer " + fake.token_for("admin")}, b"")
    assert status == 200, body


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
    assert content["spec"]["deletionPolicy"] == "Retain" and content["spec"]["driver"] == "hostpath.csi.k8s.io"
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


def test_restore_refuses_encrypted_secrets_without_the_key(capsys, cluster, bundle):
    fake, kubeconfig = cluster
    code, _, err = restore(capsys, kubeconfig, bundle, "-n", "copy")
    assert code == 2 and "holds encrypted Secrets" in err and "--encrypt-key-file" in err
    assert fake.get_object("", "Namespace", None, "copy") is None


def test_restore_refuses_a_tampered_truncated_or_newer_bundle(capsys, cluster, bundle, key_file, tmp_path):
    fake, kubeconfig = cluster
    vm_file = os.path.join(bundle, "original", "demo", "kubevirt.io", "VirtualMachine.yaml")
    with open(vm_file, "a", encoding="utf-8") as f:
        f.write("# edited\n")
    code, _, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file)
    assert code == 1 and "failed verification" in err
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 20)
    code, _, err = restore(capsys, kubeconfig, str(truncated), "-n", "copy")
    assert code == 1 and "truncated" in err
    with open(os.path.join(bundle, INDEX), encoding="utf-8") as f:
        index = json.load(f)
    index["formatVersion"] = 99
    with open(os.path.join(bundle, INDEX), "w", encoding="utf-8") as f:
        json.dump(index, f)
    code, _, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file)
    assert code == 1 and "format version 99" in err
    assert fake.get_object("", "Namespace", None, "copy") is None and "Traceback" not in err


def test_conflicts_stop_before_anything_is_created_and_skip_completes(capsys, cluster, bundle, key_file):
    fake, kubeconfig = cluster
    fake.add(obj("v1", "ConfigMap", "fedora-app-config", namespace="copy", data={"mine": "yes"}))
    before = len(fake.objects(*VM, "copy"))
    code, _, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file)
    assert code == 1 and "1 object(s) already exist: configmap/copy/fedora-app-config" in err
    assert len(fake.objects(*VM, "copy")) == before == 0 and fake.objects("", "Secret", "copy") == []
    code, _, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                           "--existing", "skip")
    assert code == 0, err
    assert fake.get_object("", "ConfigMap", "copy", "fedora-app-config")["data"] == {"mine": "yes"}
    assert fake.get_object(*VM, "copy", "fedora") is not None


def test_existing_update_replaces_what_is_there(capsys, cluster, bundle, key_file):
    fake, kubeconfig = cluster
    fake.add(obj("v1", "ConfigMap", "fedora-app-config", namespace="copy", data={"mine": "yes"}))
    code, _, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                           "--existing", "update")
    assert code == 0, err
    restored = fake.get_object("", "ConfigMap", "copy", "fedora-app-config")
    assert restored["data"] != {"mine": "yes"} and restored["metadata"]["labels"][rules.RESTORE_LABEL]


def test_partial_failure_reports_and_a_rerun_with_skip_completes_it(capsys, cluster, bundle, key_file):
    fake, kubeconfig = cluster
    fake.inject("POST", r"/namespaces/copy/datavolumes$", status=500, times=1)
    code, out, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                             "--name", "r2", "-o", "json")
    assert code == 1 and "re-run with --existing skip --name r2" in err and "Traceback" not in err
    result = json.loads(out)
    assert not result["succeeded"]
    assert result["failed"][0]["object"] == "datavolume.cdi.kubevirt.io/copy/fedora-root"
    assert "virtualmachine.kubevirt.io/copy/fedora" in result["notAttempted"]
    assert fake.get_object(*VM, "copy", "fedora") is None
    pvc = fake.get_object(*PVC, "copy", "fedora-root")
    assert rules.OWNER_REFERENCES_ANNOTATION in annotations(pvc)  # its owner does not exist: kept aside
    assert "ownerReferences" not in pvc["metadata"]
    code, _, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                           "--name", "r2", "--existing", "skip")
    assert code == 0, err
    vm = fake.get_object(*VM, "copy", "fedora")
    dv = fake.get_object(*DV, "copy", "fedora-root")
    assert dv["metadata"]["ownerReferences"][0]["uid"] == vm["metadata"]["uid"]
    pvc = fake.get_object(*PVC, "copy", "fedora-root")  # kept from the first run, its owner re-pointed now
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == dv["metadata"]["uid"]
    assert len(fake.objects(*CONTENT)) == 2 * len(fake.objects(*SNAPSHOT, "copy"))  # the re-run made none twice


def test_dry_run_client_prints_the_exact_decrypted_objects(capsys, cluster, bundle, key_file):
    fake, kubeconfig = cluster
    fake.reset_requests()
    code, out, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                             "--name", "r3", "--dry-run=client", "-o", "yaml")
    assert code == 0, err
    items = yaml.safe_load(out)["items"]
    assert items[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "copy"}}
    secret = next(i for i in items if i["kind"] == "Secret" and i["metadata"]["name"] == "fedora-userdata")
    assert secret["metadata"]["namespace"] == "copy" and secret.get("stringData") or secret.get("data")
    assert all(i["metadata"].get("labels", {}).get(rules.RESTORE_LABEL) == "r3" for i in items[1:])
    assert [r.method for r in fake.requests if r.method != "GET"] == []
    kinds_in_order = [i["kind"] for i in items]
    assert kinds_in_order.index("Secret") < kinds_in_order.index("PersistentVolumeClaim") < \
        kinds_in_order.index("DataVolume") < kinds_in_order.index("VirtualMachine")
    code, out, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                             "--dry-run=client")
    assert code == 0, err
    assert "virtualmachineinstance.kubevirt.io/copy/fedora" in out and "skip" in out



def test_progress_is_a_line_per_phase_off_a_terminal_and_nothing_with_quiet(capsys, cluster, bundle, key_file):
    _, kubeconfig = cluster
    code, _, err = run(capsys, "restore", bundle, "--kubeconfig", kubeconfig, "-n", "copy", "--encrypt-key-file",
                       key_file)
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0].startswith("objects read: ") and "writing secrets: 0/6" in lines
    assert lines.index("writing persistent volume claims: 0/5") < lines.index("writing virtual machines: 0/1")
    code, _, err = run(capsys, "restore", bundle, "--kubeconfig", kubeconfig, "-n", "copy2", "--encrypt-key-file",
                       key_file, "-q")
    assert (code, err) == (0, "")


def test_on_a_terminal_the_plan_starts_on_a_line_of_its_own(cluster, bundle, key_file):
    _, kubeconfig = cluster
    code, text = on_terminal("restore", bundle, "-n", "copy", "--encrypt-key-file", key_file, "--dry-run=client",
                             "--kubeconfig", kubeconfig)
    assert code == 0, text
    progress, _, plan = text.partition("\x1b[K\r\n")  # the live line, ended before anything else is written
    assert progress.startswith("\robjects read: ") and plan.split()[:2] == ["OBJECT", "ACTION"], text


def test_what_restored_objects_need_from_outside_the_bundle_is_said(capsys, cluster, tmp_path):
    """A clone not finished is cloned again where it is restored: its source must be there."""
    fake, kubeconfig = cluster
    vm = obj("kubevirt.io/v1", "VirtualMachine", "cloner", spec={"runStrategy": "Halted", "template": {"spec": {
        "volumes": [{"name": "root", "dataVolume": {"name": "cloner-root"}}]}}})
    dv = obj("cdi.kubevirt.io/v1beta1", "DataVolume", "cloner-root",
             spec={"source": {"pvc": {"namespace": "os-images", "name": "golden"}}, "storage": {}},
             status={"phase": "CloneInProgress"})
    (tmp_path / "cloner.yaml").write_text(yaml.safe_dump_all([vm, dv]))
    code, _, err = run(capsys, "export", "-f", str(tmp_path / "cloner.yaml"), "-n", "demo", "vm/cloner", "--to",
                       str(tmp_path / "b"), "-q")
    assert code == 0, err
    code, _, err = run(capsys, "restore", str(tmp_path / "b"), "-n", "copy", "--volumes=reimport", "--kubeconfig",
                       kubeconfig)
    assert code == 0, err
    assert fake.get_object(*DV, "copy", "cloner-root") is not None
    assert ("  not in the bundle: datavolume.cdi.kubevirt.io/copy/cloner-root uses persistentvolumeclaim/os-images/"
            "golden, the source of a clone not finished: it must exist where the bundle is restored, for CDI to clone "
            "it again") in err.splitlines()

def test_default_restore_names_differ_between_restores_started_in_the_same_second(capsys, cluster, bundle, key_file):
    """One restore name is one restore to the webhook (MACs its VMs may share, owners to wait for)."""
    _, kubeconfig = cluster
    backup = read_bundle(bundle).index["name"]
    names = set()
    for _ in range(2):
        code, out, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                                 "--dry-run=client", "-o", "yaml")
        assert code == 0, err
        labels = {i["metadata"]["labels"][rules.RESTORE_LABEL] for i in yaml.safe_load(out)["items"][1:]}
        assert len(labels) == 1
        names |= labels
    assert len(names) == 2 and all(re.fullmatch(re.escape(backup) + r"-restore-\d{8}t\d{6}-[a-z2-9]{5}", name)
                                   for name in names), names


def test_a_default_restore_name_is_a_label_value_whatever_the_backup_name():
    name = restore_name_from("b" * 63, "2026-12-07T21:30:05.123Z", "x7k2q")
    assert name == "b" * 33 + "-restore-20261207t213005-x7k2q" and len(name) == 63
    assert restore_name_from("a" * 29 + "-" * 10, "2026-12-07T21:30:05Z", "x7k2q") == \
        "a" * 29 + "-restore-20261207t213005-x7k2q"


def test_dry_run_server_sends_every_write_with_dry_run_and_stores_nothing(capsys, cluster, bundle, key_file):
    fake, kubeconfig = cluster
    fake.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "copy"}})
    fake.inject("POST", r"/namespaces/copy/configmaps$", status=422, message="configmap rejected by policy")
    fake.reset_requests()
    code, out, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                             "--dry-run=server")
    writes = [r for r in fake.requests if r.method in ("POST", "PUT", "PATCH")]
    assert len(writes) > 10 and all(r.query.get("dryRun") == "All" for r in writes)
    assert code == 1 and "configmap/copy/fedora-app-config: would be rejected" in out
    assert "configmap rejected by policy" in out
    assert fake.objects(*VM, "copy") == [] and fake.objects("", "Secret", "copy") == []


@pytest.fixture
def plain_bundle(capsys, cluster, tmp_path):
    """An export without snapshots or key."""
    fake, kubeconfig = cluster
    code, _, err = run(capsys, "export", "vm/fedora", "--freeze=never", "--name", "plain", "-q",
                       "--kubeconfig", kubeconfig, "--to", str(tmp_path / "plain"))
    assert code == 0, err
    return str(tmp_path / "plain")


def test_without_snapshots_the_volume_choice_is_explained_before_anything_is_created(capsys, cluster, plain_bundle):
    fake, kubeconfig = cluster
    code, _, err = restore(capsys, kubeconfig, plain_bundle, "-n", "copy")
    assert code == 2 and "--volumes=existing" in err and "--volumes=reimport" in err
    assert fake.get_object("", "Namespace", None, "copy") is None


def test_volumes_existing_marks_claims_another_tool_restored_and_needs_them_all(capsys, cluster, plain_bundle):
    fake, kubeconfig = cluster
    code, _, err = restore(capsys, kubeconfig, plain_bundle, "-n", "copy", "--volumes=existing")
    assert code == 1 and "PersistentVolumeClaim copy/fedora-root does not exist" in err
    assert fake.get_object("", "Namespace", None, "copy") is None
    for name in DEMO_CLAIMS:
        fake.add(obj("v1", "PersistentVolumeClaim", name, namespace="copy", spec={"volumeName": f"pv-{name}"}))
    code, _, err = restore(capsys, kubeconfig, plain_bundle, "-n", "copy", "--volumes=existing", "--name", "r5")
    assert code == 0, err
    pvc = fake.get_object(*PVC, "copy", "fedora-root")
    assert annotations(pvc)[rules.POPULATED_FOR_ANNOTATION] == "fedora-root"
    assert pvc["spec"]["volumeName"] == "pv-fedora-root" and pvc["metadata"]["labels"][rules.RESTORE_LABEL] == "r5"
    assert annotations(fake.get_object(*DV, "copy", "fedora-root"))[rules.PREPOPULATED_ANNOTATION] == "fedora-root"


def test_volumes_reimport_restores_no_data_volume_claim_and_leaves_data_volumes_unmarked(capsys, cluster,
                                                                                          plain_bundle):
    fake, kubeconfig = cluster
    code, out, err = restore(capsys, kubeconfig, plain_bundle, "-n", "copy", "--volumes=reimport", "--dry-run")
    assert code == 0, err
    assert "CDI imports or clones it again" in out
    code, _, err = restore(capsys, kubeconfig, plain_bundle, "-n", "copy", "--volumes=reimport")
    assert code == 0, err
    assert fake.get_object(*PVC, "copy", "fedora-root") is None
    dv = fake.get_object(*DV, "copy", "fedora-root")
    assert rules.PREPOPULATED_ANNOTATION not in annotations(dv)
    data = fake.get_object(*PVC, "copy", "fedora-data")  # no DataVolume to import it: created empty, unmarked
    assert rules.POPULATED_FOR_ANNOTATION not in annotations(data) and "volumeName" not in data["spec"]


def test_same_namespace_restore_uses_the_exports_own_snapshots(capsys, cluster, bundle, key_file):
    fake, kubeconfig = cluster
    delete(fake, "/apis/kubevirt.io/v1/namespaces/demo/virtualmachines/fedora")
    delete(fake, "/apis/cdi.kubevirt.io/v1beta1/namespaces/demo/datavolumes/fedora-root")
    for name in DEMO_CLAIMS:
        delete(fake, f"/api/v1/namespaces/demo/persistentvolumeclaims/{name}")
    contents = len(fake.objects(*CONTENT))
    code, _, err = restore(capsys, kubeconfig, bundle, "--encrypt-key-file", key_file, "--existing", "skip")
    assert code == 0, err
    pvc = fake.get_object(*PVC, "demo", "fedora-root")
    assert pvc["spec"]["dataSource"]["name"] == "fedora-root-nightly"
    assert len(fake.objects(*CONTENT)) == contents  # nothing pre-provisioned: the snapshot is right there


def test_identity_collisions_with_the_cluster_and_within_the_restore_are_changed_and_reported(
        capsys, cluster, plain_bundle):
    fake, kubeconfig = cluster
    code, out, err = restore(capsys, kubeconfig, plain_bundle, "-n", "copy", "--volumes=reimport", "-o", "json")
    assert code == 0, err
    vm = fake.get_object(*VM, "copy", "fedora")
    interfaces = vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
    assert interfaces[1].get("macAddress") != "02:00:00:aa:bb:01"  # the source VM still uses it
    assert vm["spec"]["template"]["spec"]["domain"]["firmware"]["serial"] != "fedora-serial-0001"
    changes = [c["change"] for c in json.loads(out)["workloads"][0]["changed"]]
    assert any("macAddress: 02:00:00:aa:bb:01" in c for c in changes)
    code, _, err = restore(capsys, kubeconfig, plain_bundle, "-n", "copy2", "--volumes=reimport",
                           "--mac-policy", "keep", "--firmware-policy", "keep")
    assert code == 0, err
    kept = fake.get_object(*VM, "copy2", "fedora")["spec"]["template"]["spec"]["domain"]
    assert kept["devices"]["interfaces"][1]["macAddress"] == "02:00:00:aa:bb:01"


def test_two_restored_vms_never_share_a_mac(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    for name in ("a", "b"):
        fake.add(obj("kubevirt.io/v1", "VirtualMachine", name, namespace="twins", spec={"template": {"spec": {
            "domain": {"devices": {"interfaces": [{"name": "n", "macAddress": "02:00:00:00:00:77"}]}}}}}))
    code, _, err = run(capsys, "export", "--all", "-n", "twins", "--freeze=never", "-q", "--kubeconfig", kubeconfig,
                       "--to", str(tmp_path / "twins"))
    assert code == 0, err
    for name in ("a", "b"):
        delete(fake, f"/apis/kubevirt.io/v1/namespaces/twins/virtualmachines/{name}")
    code, _, err = restore(capsys, kubeconfig, str(tmp_path / "twins"), "-n", "twins2", "--volumes=reimport")
    assert code == 0, err
    macs = [fake.get_object(*VM, "twins2", n)["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]
            .get("macAddress") for n in ("a", "b")]
    assert "02:00:00:00:00:77" in macs and len(set(macs)) == 2


def test_run_strategy_overrides_and_clears_running(capsys, cluster, plain_bundle):
    fake, kubeconfig = cluster
    code, _, err = restore(capsys, kubeconfig, plain_bundle, "-n", "copy", "--volumes=reimport",
                           "--run-strategy", "Halted")
    assert code == 0, err
    spec = fake.get_object(*VM, "copy", "fedora")["spec"]
    assert spec["runStrategy"] == "Halted" and "running" not in spec


def test_shared_objects_are_created_only_when_absent(capsys, cluster, plain_bundle):
    fake, kubeconfig = cluster
    nad = ("k8s.cni.cncf.io", "NetworkAttachmentDefinition")
    shared = fake.get_object(*nad, "net-system", "vlan10")
    code, _, err = restore(capsys, kubeconfig, plain_bundle, "-n", "copy", "--volumes=reimport",
                           "--existing", "update")
    assert code == 0, err
    assert fake.get_object(*nad, "net-system", "vlan10")["metadata"]["resourceVersion"] == \
        shared["metadata"]["resourceVersion"]  # never updated, even with --existing update
    vm = fake.get_object(*VM, "copy", "fedora")
    assert vm["spec"]["template"]["spec"]["networks"][1]["multus"]["networkName"] == "net-system/vlan10"
    delete(fake, "/apis/k8s.cni.cncf.io/v1/namespaces/net-system/network-attachment-definitions/vlan10")
    code, _, err = restore(capsys, kubeconfig, plain_bundle, "-n", "copy3", "--volumes=reimport")
    assert code == 0, err
    assert fake.get_object(*nad, "net-system", "vlan10")["metadata"]["labels"][rules.RESTORE_LABEL]


def test_selective_restore_takes_only_the_named_roots_graph(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = run(capsys, "export", "--all", "-n", "demo", "--freeze=never", "-q", "--kubeconfig", kubeconfig,
                       "--to", str(tmp_path / "all"))
    assert code == 0, err
    code, _, err = run(capsys, "restore", str(tmp_path / "all"), "vmirs/web", "-n", "copy", "--volumes=reimport",
                       "--kubeconfig", kubeconfig)
    assert code == 0, err
    assert fake.get_object("kubevirt.io", "VirtualMachineInstanceReplicaSet", "copy", "web") is not None
    assert fake.objects(*VM, "copy") == []
    code, _, err = run(capsys, "restore", str(tmp_path / "all"), "vm/ghost", "-n", "copy", "--volumes=reimport",
                       "--kubeconfig", kubeconfig)
    assert code == 1 and 'no virtualmachines.kubevirt.io "ghost"' in err


def test_round_trip_export_restore_elsewhere_gives_the_same_graph_up_to_the_mapping(capsys, cluster, bundle,
                                                                                     key_file):
    fake, kubeconfig = cluster
    code, out, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file, "-o", "json")
    assert code == 0, err
    result = json.loads(out)
    restored = set(result["created"]) | set(result["kept"])
    with open(os.path.join(bundle, INDEX), encoding="utf-8") as f:
        index = json.load(f)

    def mapped(ref):
        namespace = "copy" if ref["namespace"] == "demo" else ref["namespace"]
        return (ref["group"], ref["kind"], namespace, ref["name"])

    def shown(ref):
        group, kind, namespace, name = ref
        return f"{kind.lower()}{'.' + group if group else ''}/{namespace + '/' if namespace else ''}{name}"

    before = {(mapped(e["from"]), mapped(e["to"]), e["path"]) for e in index["edges"]
              if shown(mapped(e["from"])) in restored and shown(mapped(e["to"])) in restored}
    code, out, err = run(capsys, "graph", "vm/fedora", "-n", "copy", "-o", "json", "--kubeconfig", kubeconfig)
    assert code == 0, err
    graph = json.loads(out)
    found = {mapped(n) for n in graph["nodes"] if n["found"]}
    after = {(mapped(e["from"]), mapped(e["to"]), e["path"]) for e in graph["edges"] if mapped(e["to"]) in found}
    # the revision names now come from the spec, where export copied them from the status
    moved = {"status.instancetypeRef.controllerRevisionRef.name": "spec.instancetype.revisionName",
             "status.preferenceRef.controllerRevisionRef.name": "spec.preference.revisionName"}
    assert after == {(a, b, moved.get(path, path)) for a, b, path in before} and len(after) > 10
    assert {shown(n) for n in found} <= restored


def test_what_restore_creates_is_a_fixed_point_of_the_webhooks_rules(capsys, cluster, bundle, key_file):
    """The webhook, when installed, sees each object restore creates: it must find nothing to change."""
    fake, kubeconfig = cluster
    code, out, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                             "--dry-run=client", "-o", "json")
    assert code == 0, err
    items = json.loads(out)["items"]
    claims = {i["metadata"]["name"]: i for i in items if i["kind"] == "PersistentVolumeClaim"}
    in_use = rules.IdentitiesInUse()
    for vm in fake.objects(*VM):
        in_use.reserve(vm)
    context = restore_context(rules.IdentityPolicies(), in_use, lambda namespace, name: claims.get(name))
    checked = 0
    for item in items:
        assert rules.in_restore_context(item, None) or item["kind"] == "Namespace"
        result = rules.restore_object(item, context)
        assert (result.object, result.changes) == (item, []), item["kind"]
        checked += 1
    assert checked > 10


def play_controllers(fake, namespace, stop):
    """The PVC binder, CDI and virt-controller: claims bind, DataVolumes succeed, VMs become ready."""
    while not stop.is_set():
        for kind, status in ((PVC, {"phase": "Bound"}), (DV, {"phase": "Succeeded"}),
                             (VM, {"ready": True, "printableStatus": "Running"})):
            for o in fake.objects(*kind, namespace):
                if o.get("status") != status:
                    fake.add({**o, "status": status})
        time.sleep(0.05)


def test_wait_returns_once_claims_bind_data_volumes_succeed_and_vms_are_ready(capsys, cluster, bundle, key_file):
    fake, kubeconfig = cluster
    code, _, err = restore(capsys, kubeconfig, bundle, "-n", "slow", "--encrypt-key-file", key_file, "--wait",
                           "--timeout", "1s")
    assert code == 1 and "timed out after 1s waiting for" in err
    assert "persistentvolumeclaim/slow/fedora-root (phase Pending)" in err and "the restore itself is complete" in err
    stop = threading.Event()
    controllers = threading.Thread(target=play_controllers, args=(fake, "copy", stop), daemon=True)
    controllers.start()
    try:
        code, _, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file, "--wait",
                               "--timeout", "60s")
    finally:
        stop.set()
        controllers.join()
    assert code == 0, err



def test_ctrl_c_during_the_wait_says_the_restore_is_complete(cluster, bundle, key_file):
    fake, kubeconfig = cluster
    process = plugin_process("restore", bundle, "-n", "waited", "--encrypt-key-file", key_file, "--wait", "--timeout",
                             "10m", "-q", "--kubeconfig", kubeconfig)

    def claim_lists() -> int:
        return sum(1 for r in fake.requests if r.method == "GET" and r.path.endswith("/waited/persistentvolumeclaims"))

    wait_until(lambda: fake.get_object(*VM, "waited", "fedora") is not None, "the VM restored", process)
    listed = claim_lists()
    wait_until(lambda: claim_lists() > listed, "the wait polling", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err.startswith("error: interrupted: restore ") and "is complete, only the wait for its objects to be " \
        "ready stopped" in err

def test_a_vm_asked_to_stay_halted_is_waited_for_until_stopped():
    halted = obj("kubevirt.io/v1", "VirtualMachine", "vm", spec={"runStrategy": "Halted"},
                 status={"printableStatus": "Stopped"})
    assert not_ready(halted) is None
    assert not_ready({**halted, "spec": {"runStrategy": "Always"}}) == "Stopped ready"
    assert not_ready({**halted, "status": {"printableStatus": "Stopping"}}) == "Stopping stopped"


def test_adopt_repoints_set_aside_owners_once_they_exist(capsys, cluster):
    fake, kubeconfig = cluster
    aside = json.dumps([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "late", "uid": "old",
                         "controller": True}])
    fake.add(obj("cdi.kubevirt.io/v1beta1", "DataVolume", "late-disk", namespace="velero-restored",
                 metadata={"annotations": {rules.OWNER_REFERENCES_ANNOTATION: aside, "keep": "me"}}))
    code, out, err = run(capsys, "adopt", "-n", "velero-restored", "--kubeconfig", kubeconfig)
    assert code == 0 and out == "" and "its owners do not exist yet" in err
    vm = fake.add(obj("kubevirt.io/v1", "VirtualMachine", "late", namespace="velero-restored"))
    fake.reset_requests()
    code, out, err = run(capsys, "adopt", "-A", "--kubeconfig", kubeconfig)
    assert code == 0, err
    assert out == "datavolume.cdi.kubevirt.io/velero-restored/late-disk adopted\n"
    dv = fake.get_object(*DV, "velero-restored", "late-disk")
    assert dv["metadata"]["ownerReferences"] == [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                                                  "name": "late", "uid": vm["metadata"]["uid"], "controller": True}]
    assert annotations(dv) == {"keep": "me"}
    assert [r.method for r in fake.requests].count("PATCH") == 1


def test_a_cluster_without_the_snapshot_api_is_refused_before_anything_is_created(capsys, cluster, bundle, key_file):
    fake, kubeconfig = cluster
    fake.remove_group("snapshot.storage.k8s.io")
    code, _, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file)
    assert code == 1 and "does not serve volumesnapshotcontents.snapshot.storage.k8s.io" in err
    assert "nothing was created" in err and fake.get_object("", "Namespace", None, "copy") is None
    code, out, err = restore(capsys, kubeconfig, bundle, "-n", "copy", "--encrypt-key-file", key_file,
                             "--volumes=reimport", "--dry-run", "-o", "name")
    assert code == 0, err
    assert "virtualmachine.kubevirt.io/fedora" in out.splitlines()


def test_namespace_mapping_moves_references_that_follow_and_writes_in_dependency_order(capsys, cluster, bundle,
                                                                                          key_file):
    fake, kubeconfig = cluster
    fake.reset_requests()
    code, _, err = restore(capsys, kubeconfig, bundle, "--namespace-mapping", "demo=copy,net-system=net-copy",
                           "--encrypt-key-file", key_file)
    assert code == 0, err
    vm = fake.get_object(*VM, "copy", "fedora")
    assert vm["spec"]["template"]["spec"]["networks"][1]["multus"]["networkName"] == "net-copy/vlan10"
    assert fake.get_object("k8s.cni.cncf.io", "NetworkAttachmentDefinition", "net-copy", "vlan10") is not None
    created = [r.path.rsplit("/", 1)[-1] for r in fake.requests if r.method == "POST"]
    order = ["namespaces", "secrets", "configmaps", "network-attachment-definitions", "controllerrevisions",
             "volumesnapshotcontents", "volumesnapshots", "persistentvolumeclaims", "datavolumes", "virtualmachines"]
    firsts = [created.index(plural) for plural in order]
    lasts = [len(created) - 1 - created[::-1].index(plural) for plural in order]
    assert all(last < first for last, first in zip(lasts, firsts[1:])), created


def test_owners_outside_the_restore_are_dropped_and_those_inside_set_aside():
    vm_ref = Ref("kubevirt.io", "VirtualMachine", "demo", "fedora")
    owner = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "uid": "old", "controller": True}
    objects = {
        vm_ref: obj("kubevirt.io/v1", "VirtualMachine", "fedora", spec={}),
        Ref("", "Secret", "demo", "mine"): obj("v1", "Secret", "mine", metadata={
            "ownerReferences": [{**owner, "name": "fedora"}]}),
        Ref("", "ConfigMap", "demo", "theirs"): obj("v1", "ConfigMap", "theirs", metadata={
            "ownerReferences": [{**owner, "name": "not-in-the-bundle"}]}),
    }
    index = {"roots": [vm_ref.to_dict()], "edges": [], "nodes": [], "snapshots": []}
    plan = plan_restore(objects, index, RestoreOptions(name="r", volumes="reimport",
                                                       namespace_mapping={"demo": "copy"}), TargetState())
    bodies = {a.ref.kind: a.body for a in plan.actions}
    assert json.loads(annotations(bodies["Secret"])[rules.OWNER_REFERENCES_ANNOTATION]) == [{**owner, "name": "fedora"}]
    assert "ownerReferences" not in bodies["Secret"]["metadata"]
    assert rules.OWNER_REFERENCES_ANNOTATION not in annotations(bodies["ConfigMap"])
    assert "ownerReferences" not in bodies["ConfigMap"]["metadata"]
    assert plan.namespaces == ["copy"] and bodies["ConfigMap"]["metadata"]["namespace"] == "copy"


def test_data_volume_sources_follow_a_mapped_namespace_only():
    dv = obj("cdi.kubevirt.io/v1beta1", "DataVolume", "d", spec={
        "sourceRef": {"kind": "DataSource", "name": "fedora", "namespace": "os-images"},
        "source": {"pvc": {"namespace": "demo", "name": "golden"}}})
    moved = map_namespaces(dv, {"demo": "copy"})
    assert moved["metadata"]["namespace"] == "copy"
    assert moved["spec"]["sourceRef"]["namespace"] == "os-images"
    assert moved["spec"]["source"]["pvc"]["namespace"] == "copy"
    assert dv["spec"]["source"]["pvc"]["namespace"] == "demo"


def test_a_claim_never_populated_is_not_restored_even_with_a_snapshot():
    dv_owner = {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": "disk", "uid": "old",
                "controller": True}
    claim = Ref("", "PersistentVolumeClaim", "demo", "disk")
    record = {"pvc": claim.to_dict(), "namespace": "demo", "name": "disk-nightly", "snapshotHandle": "h",
              "driver": "csi.example.com", "volumeSnapshotClassName": None}
    index = {"roots": [claim.to_dict()], "edges": [], "nodes": [], "snapshots": [record]}
    options = RestoreOptions(name="r", volumes="snapshots", namespace_mapping={"demo": "copy"})

    def plan_for(pvc_annotations):
        objects = {claim: obj("v1", "PersistentVolumeClaim", "disk", metadata={
            "ownerReferences": [dv_owner], "annotations": pvc_annotations}, spec={"volumeName": "pv-1"})}
        return {a.ref.kind: a for a in plan_restore(objects, index, options, TargetState()).actions}

    never = plan_for({})["PersistentVolumeClaim"]  # WaitForFirstConsumer, a VM never started: blank
    assert never.verb == "skip" and "CDI populates it again" in never.notes[0]
    populated = plan_for({rules.POD_PHASE_ANNOTATION: "Succeeded"})
    body = populated["PersistentVolumeClaim"].body
    assert annotations(body)[rules.POPULATED_FOR_ANNOTATION] == "disk" and "volumeName" not in body["spec"]
    assert body["spec"]["dataSource"]["name"] == populated["VolumeSnapshot"].ref.name
    assert populated["VolumeSnapshotContent"].body["spec"]["source"] == {"snapshotHandle": "h"}


def test_a_data_volume_made_at_export_is_left_to_the_vm_when_its_disk_does_not_come_back():
    dv_ref = Ref("cdi.kubevirt.io", "DataVolume", "demo", "disk")
    objects = {dv_ref: obj("cdi.kubevirt.io/v1beta1", "DataVolume", "disk",
                           metadata={"annotations": {rules.PREPOPULATED_ANNOTATION: "disk"}}, spec={})}
    index = {"roots": [], "edges": [], "snapshots": [],
             "nodes": [{**dv_ref.to_dict(), "found": True, "synthesized": True, "file": "resources/x.yaml"}]}
    action = plan_restore(objects, index, RestoreOptions(name="r", volumes="reimport"), TargetState()).actions[0]
    assert action.verb == "skip" and "the VM creates it again" in action.notes[0]


def test_a_namespace_admin_restores_into_an_existing_namespace(capsys, cluster, plain_bundle, tmp_path):
    fake, _ = cluster
    fake.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    shared_groups = ["instancetype.kubevirt.io", "k8s.cni.cncf.io", "cdi.kubevirt.io"]
    fake.allow_only("alice", [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["team"]},
                              {"verbs": ["get"], "apiGroups": shared_groups, "resources": ["*"]}])
    kubeconfig = fake.write_kubeconfig(str(tmp_path / "alice"), namespace="team", user="alice")
    code, _, err = restore(capsys, kubeconfig, plain_bundle, "-n", "team", "--volumes=reimport")
    assert code == 1 and "checked against every VM and VMI of the cluster" in err
    code, _, err = restore(capsys, kubeconfig, plain_bundle, "-n", "team", "--volumes=reimport",
                           "--mac-policy", "keep", "--firmware-policy", "keep")
    assert code == 0, err
    assert fake.get_object(*VM, "team", "fedora")["metadata"]["labels"][rules.RESTORE_LABEL]

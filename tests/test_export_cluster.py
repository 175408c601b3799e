"""Export from a cluster: freeze/thaw on every path, --freeze modes, snapshots while frozen, kill mid-export."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from kubectl_kvbackup.bundle import read_bundle
from kubectl_kvbackup.cli.common import ProgressPrinter
from kubectl_kvbackup.cli.main import main
from kubectl_kvbackup.export import assess_consistency
from kubectl_kvbackup.freeze import FreezeRecord
from kubectl_kvbackup.graph.walk import Graph, GraphEdge
from kubectl_kvbackup.refs import Ref
from kubectl_kvbackup.snapshots import SnapshotRecord

from .helpers import CONTENTS, REPO, SNAPSHOTS, Snapshotter, example_objects, obj

#: how long a test waits for something a subprocess must do; generous, for a loaded 2-core machine
PATIENCE = 180


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def agent_vmi(name, uid, phase="Running", **conditions):
    status = {"phase": phase, "conditions": [{"type": t, "status": s} for t, s in
                                             ({"AgentConnected": "True", **conditions}).items()]}
    return obj("kubevirt.io/v1", "VirtualMachineInstance", name, metadata={"uid": uid}, spec={"volumes": [
        {"name": "d", "persistentVolumeClaim": {"claimName": f"{name}-disk"}}]}, status=status)


@pytest.fixture
def cluster(fake_api, tmp_path):
    fake_api.add_all(example_objects())
    for name in ("db", "cache"):
        fake_api.add(agent_vmi(name, f"uid-{name}"))
        fake_api.add(obj("v1", "PersistentVolumeClaim", f"{name}-disk", spec={}))
    return fake_api, fake_api.write_kubeconfig(str(tmp_path / "kubeconfig"), namespace="demo")


def calls(fake_api):
    return [(c.name, c.op) for c in fake_api.freeze_calls]


def unfreezes(fake_api):
    return [c for c in fake_api.freeze_calls if c.op == "unfreeze"]


def wait_until(condition, what, process=None):
    """Wait for an observable event, not for a guessed time."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        assert process is None or process.poll() is None, \
            f"the export ended before {what}: {process.communicate()[1]}"
        time.sleep(0.02)


def export_snapshotted(capsys, kubeconfig, target, *argv, fake=None, cut_when=lambda: True):
    """``export ARGV --snapshot`` while a CSI snapshotter plays along."""
    with Snapshotter(fake, cut_when):
        return run(capsys, "export", *argv, "--snapshot", "--kubeconfig", kubeconfig, "--to", str(target))


def test_export_freezes_guests_with_an_agent_and_thaws_them(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vm/fedora", "vmi/db", fake=fake)
    assert code == 0, err
    assert sorted(calls(fake)) == [("db", "freeze"), ("db", "unfreeze"), ("fedora", "freeze"),
                                   ("fedora", "unfreeze")]
    assert fake.frozen_vmis() == set()
    assert next(c for c in fake.freeze_calls if c.op == "freeze").body == {"unfreezeTimeout": "5m0s"}
    index = read_bundle(str(tmp_path / "b")).index
    report = {v["name"]: v for v in index["freeze"]["vmis"]}
    assert report["fedora"]["result"] == "frozen" and report["fedora"]["consistency"] == "application-consistent"
    assert report["db"]["consistency"] == "application-consistent"
    assert report["fedora"]["frozenAt"] and report["fedora"]["thawedAt"]
    assert report["fedora"]["frozenForSeconds"] >= report["fedora"]["overheadSeconds"] >= 0
    freeze = index["freeze"]
    assert freeze["frozenWindowSeconds"] >= freeze["snapshotCutSeconds"] >= 0 and freeze["overheadSeconds"] >= 0
    volumes = {v["name"]: v for v in freeze["volumes"]}
    assert volumes["db-disk"]["consistency"] == "application-consistent"
    assert volumes["db-disk"]["snapshot"] == next(s["name"] for s in index["snapshots"]
                                                  if s["pvc"]["name"] == "db-disk")
    assert index["source"]["offline"] is False and index["source"]["server"] == fake.url
    assert "vmi demo/fedora: frozen" in err and "frozen window:" in err and "snapshot cut" in err
    assert "pvc demo/db-disk (snapshot db-disk-" in err and ": application-consistent" in err


def test_guests_that_cannot_be_frozen_are_recorded_never_silently(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.add(agent_vmi("paused", "uid-p", Paused="True"))
    fake.add(agent_vmi("stopped", "uid-s", phase="Succeeded"))
    fake.add(obj("v1", "PersistentVolumeClaim", "stopped-disk", spec={}))
    fake.set_freeze_behaviour("demo", "db", "no-agent")
    fake.set_freeze_behaviour("demo", "cache", "error")
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "vmi/cache", "vmi/paused",
                                      "vmi/stopped", "vmirs/web", fake=fake)
    assert code == 0, err
    index = read_bundle(str(tmp_path / "b")).index
    report = {v["name"]: v for v in index["freeze"]["vmis"]}
    assert report["db"]["result"] == "no-agent" and report["db"]["consistency"] == "crash-consistent"
    assert report["cache"]["result"] == "failed" and "InternalError" in report["cache"]["reason"]
    assert report["paused"]["result"] == "paused"
    assert report["stopped"]["result"] == "not-running"
    assert report["webzq7hx"]["result"] == "no-agent"  # no AgentConnected condition: never asked
    assert ("webzq7hx", "freeze") not in calls(fake)
    assert ("cache", "unfreeze") in calls(fake)  # a failed freeze may have half-happened: thawed anyway
    assert fake.frozen_vmis() == set()
    volumes = {v["name"]: v for v in index["freeze"]["volumes"]}
    assert volumes["db-disk"]["consistency"] == "crash-consistent" and "no-agent" in volumes["db-disk"]["reason"]
    assert volumes["stopped-disk"]["consistency"] == "crash-consistent"
    assert "no running guest" in volumes["stopped-disk"]["reason"]


def test_freeze_not_running_409_is_recorded(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.set_freeze_behaviour("demo", "db", "not-running")
    assert export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", fake=fake)[0] == 0
    assert read_bundle(str(tmp_path / "b")).index["freeze"]["vmis"][0]["result"] == "not-running"


def test_freeze_required_fails_without_a_bundle_and_thaws_everything(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.set_freeze_behaviour("demo", "cache", "no-agent")
    code, out, err = run(capsys, "export", "vmi/db", "vmi/cache", "--freeze=required", "--snapshot",
                         "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 1
    assert "--freeze=required" in err and "demo/cache: no-agent" in err
    assert ("db", "unfreeze") in calls(fake) and fake.frozen_vmis() == set()
    assert os.listdir(tmp_path) == ["kubeconfig"] and fake.objects(*SNAPSHOTS) == []


def test_freeze_never_does_not_call_kubevirt(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "--freeze=never", fake=fake)
    assert code == 0, err
    assert fake.freeze_calls == []
    index = read_bundle(str(tmp_path / "b")).index
    assert index["freeze"]["vmis"][0]["result"] == "not-frozen"
    assert index["freeze"]["volumes"][0]["consistency"] == "crash-consistent"
    assert index["snapshots"][0]["consistency"] == "crash-consistent"


def test_without_a_snapshot_no_guest_is_frozen(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = run(capsys, "export", "vmi/db", "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 0, err
    assert fake.freeze_calls == []
    freeze = read_bundle(str(tmp_path / "b")).index["freeze"]
    assert freeze["vmis"][0]["result"] == "not-frozen" and "no --snapshot" in freeze["vmis"][0]["reason"]
    assert freeze["vmis"][0]["consistency"] == "no data captured"
    assert [(v["name"], v["consistency"]) for v in freeze["volumes"]] == [("db-disk", "no data captured")]
    assert "pvc demo/db-disk: no data captured" in err


def test_freeze_required_without_a_snapshot_is_a_usage_error(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = run(capsys, "export", "vmi/db", "--freeze=required", "--kubeconfig", kubeconfig,
                       "--to", str(tmp_path / "b"))
    assert code == 2 and "--freeze=required needs --snapshot" in err
    assert fake.requests == [] and os.listdir(tmp_path) == ["kubeconfig"]


def test_api_error_while_frozen_thaws_and_writes_nothing(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.inject("POST", r"/volumesnapshots$", status=500)
    code, _, err = run(capsys, "export", "vmi/db", "--snapshot", "--kubeconfig", kubeconfig,
                       "--to", str(tmp_path / "b"))
    assert code == 1 and "Error from server (InternalError)" in err
    assert calls(fake) == [("db", "freeze"), ("db", "unfreeze")]
    assert os.listdir(tmp_path) == ["kubeconfig"]


def test_guests_are_thawed_once_every_snapshot_is_cut_not_when_requested(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    cut = threading.Event()
    seen_before_cut = []

    def cut_when_the_export_has_polled_uncut_snapshots():
        """Hold the cut until the export has created both snapshots and polled them at least once uncut."""
        if cut.is_set():
            return True
        polls = [r for r in fake.requests if r.method == "GET" and r.path.endswith("/volumesnapshots")]
        if len(fake.objects(*SNAPSHOTS)) == 2 and polls:
            seen_before_cut.extend(unfreezes(fake))
            cut.set()
        return cut.is_set()

    with Snapshotter(fake, cut_when_the_export_has_polled_uncut_snapshots) as snapshotter:
        code, _, err = run(capsys, "export", "vmi/db", "vmi/cache", "--snapshot", "--name", "nightly",
                           "--snapshot-class", "csi-snap", "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 0, err
    assert seen_before_cut == []  # polled while uncut, and still no guest thawed
    assert len(snapshotter.cut_at) == 2
    assert unfreezes(fake) and all(c.time >= max(snapshotter.cut_at.values()) for c in unfreezes(fake))
    log = [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake.requests]
    creates = [i for i, entry in enumerate(log) if entry == ("POST", "volumesnapshots")]
    freezes = [i for i, entry in enumerate(log) if entry[1] == "freeze"]
    assert len(creates) == 2 and max(freezes) < min(creates)
    polls = [r for r in fake.requests if r.method == "GET" and "volumesnapshots" in r.path]
    assert all(r.path.endswith("/volumesnapshots") for r in polls)  # labelled LISTs, no GET per snapshot
    assert all(r.query.get("labelSelector") == "kvbackup.kubevirt.io/backup=nightly" for r in polls)
    index = read_bundle(str(tmp_path / "b")).index
    assert {v["consistency"] for v in index["freeze"]["vmis"]} == {"application-consistent"}
    records = {r["name"]: r for r in index["snapshots"]}
    assert set(records) == {"db-disk-nightly", "cache-disk-nightly"}
    db = records["db-disk-nightly"]
    assert {k: db[k] for k in ("namespace", "name", "volumeSnapshotClassName", "restoreSize", "contentName",
                               "snapshotHandle", "driver", "readyToUse", "consistency")} == {
        "namespace": "demo", "name": "db-disk-nightly", "volumeSnapshotClassName": "csi-snap", "restoreSize": "1Gi",
        "contentName": "snapcontent-demo-db-disk-nightly", "snapshotHandle": "handle-db-disk-nightly",
        "driver": "hostpath.csi.k8s.io", "readyToUse": True, "consistency": "application-consistent"}
    assert db["pvc"] == {"group": "", "kind": "PersistentVolumeClaim", "namespace": "demo", "name": "db-disk"}
    assert db["creationTime"] and db["createdAt"] and db["readyAt"]
    assert fake.get_object(*SNAPSHOTS, "demo", "db-disk-nightly")["spec"] == {
        "source": {"persistentVolumeClaimName": "db-disk"}, "volumeSnapshotClassName": "csi-snap"}
    # the storage snapshot outlives its namespace: the backup's data survives the disaster it is for
    assert db["deletionPolicy"] == "Retain"
    assert fake.get_object(*CONTENTS, None, "snapcontent-demo-db-disk-nightly")["spec"]["deletionPolicy"] == "Retain"


def test_at_the_cut_deadline_guests_are_thawed_and_the_snapshots_called_crash_consistent(capsys, cluster,
                                                                                          tmp_path):
    fake, kubeconfig = cluster
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "--unfreeze-timeout", "2s",
                                      fake=fake, cut_when=lambda: bool(unfreezes(fake)))
    assert code == 0, err
    assert "not cut within 1s" in err and fake.frozen_vmis() == set()
    index = read_bundle(str(tmp_path / "b")).index
    snapshot = index["snapshots"][0]
    assert snapshot["consistency"] == "crash-consistent" and "thawed before the snapshot was cut" in \
        snapshot["consistencyReason"]
    assert index["freeze"]["vmis"][0]["consistency"] == "crash-consistent"
    assert snapshot["readyToUse"] and snapshot["snapshotHandle"] == f"handle-{snapshot['name']}"


def test_a_windows_guest_that_thawed_itself_is_not_a_failed_thaw(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.inject("PUT", r"/virtualmachineinstances/db/unfreeze$", status=500,
                message="Internal error occurred: unfreezing VMI: fsfreeze is limited up to 10 seconds: the guest "
                        "already thawed")
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "vmi/cache", fake=fake)
    assert code == 0, err
    assert "could not thaw" not in err and "kubectl kvbackup thaw" not in err
    assert [c.op for c in fake.freeze_calls if c.name == "db"] == ["freeze"]  # the fault answered the unfreeze
    report = {v["name"]: v for v in read_bundle(str(tmp_path / "b")).index["freeze"]["vmis"]}
    assert report["db"]["result"] == "frozen" and report["db"]["thawedByGuest"] is True
    assert report["db"]["thawedAt"] and report["db"]["thawError"] is None
    assert report["db"]["consistency"] == "application-consistent"  # cut well inside VSS's 10 s
    assert report["cache"]["thawedByGuest"] is False


def test_a_guest_someone_else_froze_is_neither_frozen_nor_thawed(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    vmi = fake.get_object("kubevirt.io", "VirtualMachineInstance", "demo", "db")
    fake.add({**vmi, "status": {**vmi["status"], "fsFreezeStatus": "frozen"}})  # a VirtualMachineSnapshot's freeze
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "vmi/cache", fake=fake)
    assert code == 0, err
    assert sorted(calls(fake)) == [("cache", "freeze"), ("cache", "unfreeze")]
    assert fake.frozen_vmis() == {("demo", "db")}  # still frozen: its owner thaws it
    index = read_bundle(str(tmp_path / "b")).index
    report = {v["name"]: v for v in index["freeze"]["vmis"]}
    assert report["db"]["result"] == "frozen-by-other" and "neither freezes nor thaws" in report["db"]["reason"]
    assert report["db"]["consistency"] == "crash-consistent"
    code, _, err = run(capsys, "freeze", "vmi/db", "--kubeconfig", kubeconfig)
    assert code == 1 and "frozen-by-other" in err and fake.frozen_vmis() == {("demo", "db")}


def test_whether_someone_else_froze_a_guest_is_read_right_before_freezing(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.inject("GET", r"/virtualmachineinstances$", times=1)  # the walk's LIST, answered at once
    fake.inject("GET", r"/virtualmachineinstances$", delay=5, times=1)  # the LIST right before freezing

    def snapshot_of_db_freezes_it_meanwhile():
        wait_until(lambda: len([r for r in fake.requests if r.path.endswith("/virtualmachineinstances")]) == 2,
                   "the export's second LIST of VMIs")
        vmi = fake.get_object("kubevirt.io", "VirtualMachineInstance", "demo", "db")
        fake.add({**vmi, "status": {**vmi["status"], "fsFreezeStatus": "frozen"}})

    other = threading.Thread(target=snapshot_of_db_freezes_it_meanwhile, daemon=True)
    other.start()
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "vmi/cache", fake=fake)
    other.join()
    assert code == 0, err
    assert sorted(calls(fake)) == [("cache", "freeze"), ("cache", "unfreeze")]
    assert fake.frozen_vmis() == {("demo", "db")}


def test_a_user_who_may_get_but_not_list_vmis_still_sees_who_froze_them(capsys, cluster, tmp_path):
    fake, _ = cluster
    kubeconfig = fake.write_kubeconfig(str(tmp_path / "carol.kubeconfig"), namespace="demo", user="carol")
    fake.deny("carol", "list", "kubevirt.io", "virtualmachineinstances")
    vmi = fake.get_object("kubevirt.io", "VirtualMachineInstance", "demo", "db")
    fake.add({**vmi, "status": {**vmi["status"], "fsFreezeStatus": "frozen"}})
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "vmi/cache", fake=fake)
    assert code == 0, err
    assert sorted(calls(fake)) == [("cache", "freeze"), ("cache", "unfreeze")]
    assert fake.frozen_vmis() == {("demo", "db")}


def test_a_guest_frozen_by_someone_else_fails_freeze_required_before_any_freeze(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    vmi = fake.get_object("kubevirt.io", "VirtualMachineInstance", "demo", "db")
    fake.add({**vmi, "status": {**vmi["status"], "fsFreezeStatus": "frozen"}})
    code, _, err = run(capsys, "export", "vmi/db", "vmi/cache", "--freeze=required", "--snapshot",
                       "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 1 and "demo/db: frozen-by-other" in err
    assert fake.freeze_calls == [] and fake.frozen_vmis() == {("demo", "db")}


def test_snapshot_timeout_fails_the_export(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = run(capsys, "export", "vmi/db", "--snapshot", "--snapshot-timeout", "1s",
                       "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 1 and "not ready after 1s" in err
    assert fake.frozen_vmis() == set() and not (tmp_path / "b").exists()


def plugin_process(*argv):
    """``kubectl kvbackup ARGV`` in a subprocess that Ctrl-C reaches as at a terminal: a test run started in the
    background of a script has SIGINT ignored, which its children would inherit (Python then never raises
    KeyboardInterrupt)."""
    return subprocess.Popen([sys.executable, "-m", "kubectl_kvbackup", *argv], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": REPO}, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def export_until_frozen(fake, kubeconfig, target, *extra):
    """An export in a subprocess, waiting for its snapshots to be cut (they never are) with both guests frozen."""
    process = plugin_process("export", "vmi/db", "vmi/cache", "--snapshot", *extra, "--kubeconfig", kubeconfig,
                             "--to", str(target))
    wait_until(lambda: len(fake.frozen_vmis()) == 2 and len(fake.objects(*SNAPSHOTS)) == 2,
               "both guests frozen and both snapshots created", process)
    return process


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_killed_mid_export_thaws_every_guest_and_leaves_no_bundle(cluster, tmp_path, sig, code):
    fake, kubeconfig = cluster
    process = export_until_frozen(fake, kubeconfig, tmp_path / "b.tar.gz")
    try:
        assert fake.frozen_vmis() == {("demo", "db"), ("demo", "cache")}
        process.send_signal(sig)
        _, err = process.communicate(timeout=PATIENCE)
    finally:
        process.kill()
    assert process.returncode == code, err
    assert "no bundle was written" in err and "could not thaw" not in err and "Traceback" not in err
    assert fake.frozen_vmis() == set()
    assert sorted(calls(fake)) == [("cache", "freeze"), ("cache", "unfreeze"), ("db", "freeze"), ("db", "unfreeze")]
    assert fake.objects(*SNAPSHOTS) == [], err  # the snapshots of the interrupted export are deleted
    assert os.listdir(tmp_path) == ["kubeconfig"]


def test_freeze_and_thaw_verbs(capsys, cluster):
    fake, kubeconfig = cluster
    code, out, err = run(capsys, "freeze", "vmi/db", "vm/cache", "--kubeconfig", kubeconfig)
    assert code == 0, err
    assert fake.frozen_vmis() == {("demo", "db"), ("demo", "cache")}
    assert "virtualmachineinstance.kubevirt.io/db frozen" in out
    code, out, err = run(capsys, "thaw", "vmi/db", "vmi/cache", "--kubeconfig", kubeconfig)
    assert code == 0 and fake.frozen_vmis() == set()


def test_freeze_verb_is_all_or_nothing(capsys, cluster):
    fake, kubeconfig = cluster
    fake.set_freeze_behaviour("demo", "cache", "error")
    code, _, err = run(capsys, "freeze", "vmi/db", "vmi/cache", "--kubeconfig", kubeconfig)
    assert code == 1 and "vmi demo/cache not frozen: failed" in err
    assert fake.frozen_vmis() == set() and ("db", "unfreeze") in calls(fake)


def test_freeze_verb_errors(capsys, cluster):
    _, kubeconfig = cluster
    code, _, err = run(capsys, "freeze", "vmi/ghost", "--kubeconfig", kubeconfig)
    assert code == 1 and 'virtualmachineinstances.kubevirt.io "ghost" not found' in err
    code, _, err = run(capsys, "freeze", "vmirs/web", "--kubeconfig", kubeconfig)
    assert code == 2 and "cannot be frozen" in err


def test_freeze_required_checks_status_before_freezing_anything(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = run(capsys, "export", "vmi/db", "vmirs/web", "--freeze=required", "--snapshot",
                       "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 1 and "demo/webzq7hx: no-agent" in err
    assert fake.freeze_calls == []


def test_a_guest_that_cannot_be_thawed_fails_the_export_loudly(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.set_freeze_behaviour("demo", "db", unfreeze_outcome="error")
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "-q", fake=fake)
    assert code == 1
    assert "could not thaw vmi demo/db" in err and "kubectl kvbackup thaw vmi/db -n demo" in err
    assert "by itself after the unfreeze timeout (5m0s)" in err
    assert "the bundle was written" in err and (tmp_path / "b" / "kvbackup.json").exists()


def test_snapshots_of_a_failed_export_are_deleted(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = run(capsys, "export", "vmi/db", "vmi/cache", "--snapshot", "--snapshot-timeout", "1s",
                       "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 1
    assert fake.objects(*SNAPSHOTS) == []
    assert [r.method for r in fake.requests if "volumesnapshots/" in r.path and r.method == "DELETE"] == ["DELETE"] * 2


def test_a_failed_export_gives_the_snapshot_contents_it_retained_back_to_deletion(capsys, cluster, tmp_path):
    """The db content is retained first; reading the cache content then fails: deleting the export's snapshots must
    not leave the db storage snapshot behind, retained and owned by nobody."""
    fake, kubeconfig = cluster
    fake.inject("GET", r"/volumesnapshotcontents/snapcontent-demo-cache-disk-nightly$", status=500, delay=0.5,
                message="etcd is unavailable")
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "vmi/cache", "--name", "nightly",
                                      fake=fake)
    assert code == 1 and "etcd is unavailable" in err
    db_content = "snapcontent-demo-db-disk-nightly"
    assert len([r for r in fake.requests if r.method == "PATCH" and r.path.endswith(db_content)]) == 2
    assert fake.get_object(*CONTENTS, None, db_content)["spec"]["deletionPolicy"] == "Delete"
    assert fake.objects(*SNAPSHOTS) == [] and not os.path.exists(tmp_path / "b")



def test_a_retained_content_that_cannot_be_given_back_is_in_the_command_that_deletes_the_snapshot(capsys, cluster,
                                                                                                  tmp_path):
    fake, kubeconfig = cluster
    fake.inject("GET", r"/volumesnapshotcontents/snapcontent-demo-cache-disk-nightly$", status=500, delay=1.5,
                message="etcd is unavailable")
    fake.inject("DELETE", r"/volumesnapshots/db-disk-nightly$", status=500)

    def refuse_giving_back() -> None:  # once the export has set the db content to Retain
        wait_until(lambda: any(r.method == "PATCH" and r.path.endswith("snapcontent-demo-db-disk-nightly")
                               for r in fake.requests), "the db content retained")
        fake.inject("PATCH", r"/volumesnapshotcontents/snapcontent-demo-db-disk-nightly$", status=500)

    thread = threading.Thread(target=refuse_giving_back)
    thread.start()
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "vmi/cache", "--name", "nightly",
                                      fake=fake)
    thread.join()
    assert code == 1 and "etcd is unavailable" in err
    assert ("run: kubectl patch volumesnapshotcontent snapcontent-demo-db-disk-nightly --type merge -p "
            "'{\"spec\":{\"deletionPolicy\":\"Delete\"}}' && kubectl delete volumesnapshot -n demo "
            "db-disk-nightly") in err


def test_unfreeze_timeout_below_a_second_is_refused(capsys, cluster, tmp_path):
    _, kubeconfig = cluster
    code, _, err = run(capsys, "export", "vmi/db", "--unfreeze-timeout", "500ms", "--kubeconfig", kubeconfig,
                       "--to", str(tmp_path / "b"))
    assert code == 2 and "must be at least 1s" in err


def test_a_second_interrupt_during_the_thaw_does_not_cut_it_short(cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.inject("PUT", r"/unfreeze$", delay=1.0)  # slow thaws: the second Ctrl-C lands in the middle
    process = export_until_frozen(fake, kubeconfig, tmp_path / "b", "--parallel", "1")
    try:
        process.send_signal(signal.SIGINT)
        # the first unfreeze request has arrived: the thaw is under way, held for a second by the fault
        wait_until(lambda: any(r.path.endswith("/unfreeze") for r in fake.requests), "the thaw to start", process)
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=PATIENCE)
    finally:
        process.kill()
    assert process.returncode in (130, 143), err
    assert fake.frozen_vmis() == set()
    assert sorted(calls(fake)) == [("cache", "freeze"), ("cache", "unfreeze"), ("db", "freeze"), ("db", "unfreeze")]
    assert fake.objects(*SNAPSHOTS) == [], err  # nor does it cut the snapshots' deletion short
    assert "Traceback" not in err



def test_an_interrupted_verb_says_only_what_it_leaves_behind(cluster):
    fake, kubeconfig = cluster
    fake.inject("GET", r"/virtualmachines$", delay=5.0)
    process = plugin_process("graph", "--all", "--kubeconfig", kubeconfig)
    try:
        wait_until(lambda: any(r.path.endswith("/virtualmachines") for r in fake.requests), "the list", process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=PATIENCE)
    finally:
        process.kill()
    # graph writes nothing and freezes nothing: an export's words about bundles and guests would mislead
    assert (process.returncode, err) == (130, "error: interrupted\n")


def test_exclude_secrets_needs_no_access_to_secrets(capsys, cluster, tmp_path):
    fake, _ = cluster
    kubeconfig = fake.write_kubeconfig(str(tmp_path / "alice.kubeconfig"), namespace="demo", user="alice")
    for verb in ("list", "get", "watch"):
        fake.deny("alice", verb, "", "secrets")
    code, _, err = run(capsys, "export", "vm/windows", "--kubeconfig", kubeconfig, "--to", str(tmp_path / "f"))
    assert code == 1 and "Forbidden" in err  # without the flag, Secrets are part of the backup
    fake.reset_requests()
    code, _, err = run(capsys, "export", "vm/windows", "--exclude-secrets", "--kubeconfig", kubeconfig,
                       "--to", str(tmp_path / "b"))
    assert code == 0, err
    assert not [r for r in fake.requests if "/secrets" in r.path]  # not even tried
    index = read_bundle(str(tmp_path / "b")).index
    secret = next(n for n in index["nodes"] if n["kind"] == "Secret")
    assert secret["excluded"] and secret["found"] is None and secret["rule"] == "secret-excluded"
    assert any(e["to"]["kind"] == "Secret" for e in index["edges"])  # still recorded as a dependency
    assert "missing" not in err  # an unread Secret is not reported as a missing one


def test_a_snapshot_that_cannot_be_deleted_is_named_with_the_command_that_deletes_it(capsys, cluster, tmp_path):
    fake, _ = cluster
    kubeconfig = fake.write_kubeconfig(str(tmp_path / "bob.kubeconfig"), namespace="demo", user="bob")
    fake.deny("bob", "delete", "snapshot.storage.k8s.io", "volumesnapshots")
    code, _, err = run(capsys, "export", "vmi/db", "--snapshot", "--snapshot-timeout", "1s",
                       "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 1 and "not ready after 1s" in err
    name = fake.objects(*SNAPSHOTS)[0]["metadata"]["name"]
    assert f"could not delete VolumeSnapshot demo/{name}" in err
    assert f"run: kubectl delete volumesnapshot -n demo {name}" in err


def test_progress_without_a_terminal_is_a_line_per_phase(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "vmi/cache", fake=fake)
    assert code == 0, err
    lines = err.splitlines()
    for phase in ("objects listed", "freezing guests", "snapshots cut", "thawing guests", "snapshots ready",
                  "writing bundle"):
        assert len([line for line in lines if line.startswith(phase + ":")]) == 1, (phase, err)
    assert "\r" not in err
    # a name of its own: the default one, from the time to the second, may be the first export's
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "q", "vmi/db", "-q", "--name", "quiet",
                                      fake=fake)
    assert (code, err) == (0, "")


def test_progress_printer_repeats_a_long_wait_once_a_minute_and_rewrites_a_terminal_line():
    now = [0.0]
    logged = io.StringIO()
    printer = ProgressPrinter(logged, live=False, clock=lambda: now[0])
    for moment, done in ((0, 0), (30, 1), (61, 1), (90, 2), (122, 2)):
        now[0] = moment
        printer("snapshots cut", done, 3)
    printer("writing bundle", 5, 5)
    assert logged.getvalue().splitlines() == ["snapshots cut: 0/3", "snapshots cut: 1/3 after 61s",
                                              "snapshots cut: 2/3 after 122s", "writing bundle: 5/5"]
    now[0] = 0.0
    terminal = io.StringIO()
    printer = ProgressPrinter(terminal, live=True, clock=lambda: now[0])
    for moment, done in ((0, 1), (0.01, 2), (5, 3), (7, 4)):
        now[0] = moment
        printer("freezing guests", done, 4)
    printer.close()
    assert terminal.getvalue() == ("\rfreezing guests: 1/4 (0s)\x1b[K\rfreezing guests: 3/4 (5s)\x1b[K"
                                   "\rfreezing guests: 4/4 (7s)\x1b[K\n")


def test_a_warning_during_progress_gets_a_line_of_its_own_and_the_count_comes_back():
    now = [0.0]
    terminal = io.StringIO()
    printer = ProgressPrinter(terminal, live=True, clock=lambda: now[0])
    printer("snapshots cut", 0, 2)
    printer.warn("warning: 1 snapshot(s) not cut")
    now[0] = 0.01  # sooner than a redraw would otherwise come
    printer("snapshots cut", 1, 2)
    printer.close()
    assert terminal.getvalue() == ("\rsnapshots cut: 0/2 (0s)\x1b[K\r\x1b[Kwarning: 1 snapshot(s) not cut\n"
                                   "\rsnapshots cut: 1/2 (0s)\x1b[K\n")
    logged = io.StringIO()
    printer = ProgressPrinter(logged, live=False)
    printer("snapshots cut", 0, 2)
    printer.warn("warning: late")
    assert logged.getvalue() == "snapshots cut: 0/2\nwarning: late\n"



def test_the_cut_deadline_counts_from_the_first_freeze(capsys, cluster, tmp_path):
    """Freezing one guest after another can use up the cut's time: the first guest's unfreeze timeout runs from
    its own freeze, so the wait for the cut is what is left, here one look."""
    fake, kubeconfig = cluster
    for name in ("db", "cache"):
        fake.set_freeze_behaviour("demo", name, delay=0.6)  # 1.2 s of freezing, more than the 1 s the cut may take
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "vmi/cache", "--parallel", "1",
                                      "--unfreeze-timeout", "2s", fake=fake, cut_when=lambda: bool(unfreezes(fake)))
    assert code == 0, err
    log = [(r.method, r.path, r.query) for r in fake.requests]
    last_create = max(i for i, (m, p, _) in enumerate(log) if m == "POST" and p.endswith("/volumesnapshots"))
    first_thaw = min(i for i, (m, p, _) in enumerate(log) if p.endswith("/unfreeze"))
    looks = [entry for entry in log[last_create:first_thaw]
             if entry[0] == "GET" and entry[1].endswith("/volumesnapshots")]
    assert len(looks) == 1, looks
    assert "not cut within 1s of the first freeze" in err


def test_a_leftover_error_on_a_ready_snapshot_is_no_failure(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    with Snapshotter(fake, error="Operation cannot be fulfilled on volumesnapshots: the object has been modified"):
        code, _, err = run(capsys, "export", "vmi/db", "--snapshot", "--kubeconfig", kubeconfig,
                           "--to", str(tmp_path / "b"))
    assert code == 0, err
    assert read_bundle(str(tmp_path / "b")).index["snapshots"][0]["consistency"] == "application-consistent"


def test_a_snapshot_in_error_fails_the_export_after_thawing_and_deleting(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    with Snapshotter(fake, error="failed to take snapshot of the volume: no space left", fail=True):
        code, _, err = run(capsys, "export", "vmi/db", "--snapshot", "--kubeconfig", kubeconfig,
                           "--to", str(tmp_path / "b"))
    assert code == 1
    assert "error: VolumeSnapshot demo/db-disk-" in err and "failed: failed to take snapshot" in err
    assert fake.frozen_vmis() == set() and [c.op for c in fake.freeze_calls] == ["freeze", "unfreeze"]
    assert fake.objects(*SNAPSHOTS) == [] and not (tmp_path / "b").exists()


def test_a_snapshot_a_failed_creation_leaves_behind_is_named_with_the_command_that_deletes_it(capsys, cluster,
                                                                                             tmp_path):
    fake, _ = cluster
    kubeconfig = fake.write_kubeconfig(str(tmp_path / "bob.kubeconfig"), namespace="demo", user="bob")
    fake.deny("bob", "delete", "snapshot.storage.k8s.io", "volumesnapshots")
    fake.inject("POST", r"/volumesnapshots$", status=500, times=1, delay=0.3)
    code, _, err = run(capsys, "export", "vmi/db", "vmi/cache", "--snapshot", "--kubeconfig", kubeconfig,
                       "--to", str(tmp_path / "b"))
    assert code == 1 and fake.frozen_vmis() == set()
    [left] = fake.objects(*SNAPSHOTS)
    name = left["metadata"]["name"]
    assert f"warning: could not delete VolumeSnapshot demo/{name}" in err
    assert f"run: kubectl delete volumesnapshot -n demo {name}" in err



def test_a_vmi_deleted_before_its_freeze_is_not_running_and_holds_up_no_required_export(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.inject("PUT", r"/virtualmachineinstances/cache/freeze$", status=404,
                message='virtualmachineinstances.kubevirt.io "cache" not found')
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "vmi/cache", "--freeze=required",
                                      fake=fake)
    assert code == 0, err
    records = {r["name"]: r for r in read_bundle(str(tmp_path / "b")).index["freeze"]["vmis"]}
    assert (records["cache"]["result"], records["cache"]["reason"]) == (
        "not-running", "the VMI is gone (404): deleted since it was read")
    assert records["db"]["consistency"] == "application-consistent"
    assert [c.name for c in unfreezes(fake)] == ["db"]  # nothing to thaw where nothing was frozen


def test_a_freeze_path_the_server_does_not_serve_is_a_failed_freeze_not_a_vmi_gone(capsys, cluster, tmp_path):
    """404 page not found (no KubeVirt subresource API) is not the VMI's NotFound: --freeze=required must fail."""
    fake, kubeconfig = cluster
    fake.inject("PUT", r"/virtualmachineinstances/db/freeze$", unserved=True)
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", "--freeze=required", fake=fake)
    assert code == 1 and "could not be frozen: demo/db: failed" in err


def test_with_no_guest_frozen_nothing_waits_for_the_cut(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.add(agent_vmi("db", "uid-db", AgentConnected="False"))
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", fake=fake)
    assert code == 0, err
    freeze = read_bundle(str(tmp_path / "b")).index["freeze"]
    assert fake.freeze_calls == [] and freeze["snapshotCutSeconds"] is None and "snapshots cut" not in err
    assert freeze["vmis"][0]["result"] == "no-agent"

def test_guests_without_a_pvc_to_snapshot_are_not_frozen(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.add(obj("kubevirt.io/v1", "VirtualMachineInstance", "ephemeral", metadata={"uid": "uid-e"},
                 spec={"volumes": [{"name": "root", "containerDisk": {"image": "quay.io/containerdisks/fedora"}}]},
                 status={"phase": "Running", "conditions": [{"type": "AgentConnected", "status": "True"}]}))
    with Snapshotter(fake):
        code, _, err = run(capsys, "export", "vmi/ephemeral", "--snapshot", "--freeze=required", "--kubeconfig",
                           kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 0, err
    assert fake.freeze_calls == []
    [record] = read_bundle(str(tmp_path / "b")).index["freeze"]["vmis"]
    assert record["result"] == "not-frozen" and record["reason"].startswith("no PVC to snapshot")

def test_a_cut_after_windows_vss_let_go_is_crash_consistent():
    pvc = Ref("", "PersistentVolumeClaim", "demo", "win-disk")
    vmi = Ref("kubevirt.io", "VirtualMachineInstance", "demo", "win")
    graph = Graph(roots=[vmi], objects={vmi: {}, pvc: {}},
                  edges=[GraphEdge(vmi, pvc, "spec.volumes[0].persistentVolumeClaim.claimName", False)])
    guest = FreezeRecord("demo", "win", "frozen", freeze_requested_at=100.0, frozen_at=100.5, thawed_at=120.0,
                         thawed_by_guest=True)
    late = SnapshotRecord(pvc, "win-disk-b", None, cut_seen_at=110.5)
    assert assess_consistency(graph, [guest], [late], 300)[0]["consistency"] == "crash-consistent"
    assert "Windows VSS thawed the guest by itself" in late.consistency_reason and guest.consistency == \
        "crash-consistent"
    early = SnapshotRecord(pvc, "win-disk-b", None, cut_seen_at=109.5)
    assert assess_consistency(graph, [guest], [early], 300)[0]["consistency"] == "application-consistent"


def test_a_cut_after_kubevirts_unfreeze_timeout_is_crash_consistent():
    """virt-launcher thaws a guest by itself unfreezeTimeout after the freeze, whatever kvbackup does."""
    pvc = Ref("", "PersistentVolumeClaim", "demo", "db-disk")
    vmi = Ref("kubevirt.io", "VirtualMachineInstance", "demo", "db")
    graph = Graph(roots=[vmi], objects={vmi: {}, pvc: {}},
                  edges=[GraphEdge(vmi, pvc, "spec.volumes[0].persistentVolumeClaim.claimName", False)])
    guest = FreezeRecord("demo", "db", "frozen", freeze_requested_at=100.0, frozen_at=100.5, thawed_at=200.0)
    late = SnapshotRecord(pvc, "db-disk-b", None, cut_seen_at=130.5)
    assert assess_consistency(graph, [guest], [late], 30)[0]["consistency"] == "crash-consistent"
    assert "KubeVirt's unfreeze timeout (30s) may have thawed the guest" in late.consistency_reason
    in_time = SnapshotRecord(pvc, "db-disk-b", None, cut_seen_at=129.5)
    assert assess_consistency(graph, [guest], [in_time], 30)[0]["consistency"] == "application-consistent"


def test_without_access_to_snapshot_contents_the_export_says_what_to_grant(capsys, cluster, tmp_path):
    fake, _ = cluster
    kubeconfig = fake.write_kubeconfig(str(tmp_path / "dave.kubeconfig"), namespace="demo", user="dave")
    fake.deny("dave", "get", "snapshot.storage.k8s.io", "volumesnapshotcontents")
    code, _, err = export_snapshotted(capsys, kubeconfig, tmp_path / "b", "vmi/db", fake=fake)
    assert code == 1 and "needs get on volumesnapshotcontents" in err and "Traceback" not in err
    assert fake.objects(*SNAPSHOTS) == [] and fake.frozen_vmis() == set()
    assert not (tmp_path / "b").exists()

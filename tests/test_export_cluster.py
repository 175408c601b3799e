"""Export from a cluster: freeze/thaw on every path, --freeze modes, snapshots while frozen, kill mid-export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from kubectl_kvbackup.bundle import read_bundle
from kubectl_kvbackup.cli.main import main

from .helpers import REPO, example_objects, obj

SNAPSHOTS = ("snapshot.storage.k8s.io", "VolumeSnapshot")


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


def test_export_freezes_guests_with_an_agent_and_thaws_them(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = run(capsys, "export", "vm/fedora", "vmi/db", "--kubeconfig", kubeconfig,
                       "--to", str(tmp_path / "b"))
    assert code == 0, err
    assert sorted(calls(fake)) == [("db", "freeze"), ("db", "unfreeze"), ("fedora", "freeze"),
                                   ("fedora", "unfreeze")]
    assert fake.frozen_vmis() == set()
    assert next(c for c in fake.freeze_calls if c.op == "freeze").body == {"unfreezeTimeout": "5m0s"}
    index = read_bundle(str(tmp_path / "b")).index
    report = {v["name"]: v for v in index["freeze"]["vmis"]}
    assert report["fedora"]["result"] == "frozen" and report["fedora"]["consistency"] == "filesystem"
    assert report["fedora"]["frozenAt"] and report["fedora"]["thawedAt"]
    assert report["fedora"]["frozenForSeconds"] >= 0
    assert index["freeze"]["frozenWindowSeconds"] >= 0
    assert index["source"]["offline"] is False and index["source"]["server"] == fake.url
    assert "vmi demo/fedora: frozen" in err


def test_guests_that_cannot_be_frozen_are_recorded_never_silently(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.add(agent_vmi("paused", "uid-p", Paused="True"))
    fake.add(agent_vmi("stopped", "uid-s", phase="Succeeded"))
    fake.set_freeze_behaviour("demo", "db", "no-agent")
    fake.set_freeze_behaviour("demo", "cache", "error")
    code, _, err = run(capsys, "export", "vmi/db", "vmi/cache", "vmi/paused", "vmi/stopped", "vmirs/web",
                       "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 0, err
    report = {v["name"]: v for v in read_bundle(str(tmp_path / "b")).index["freeze"]["vmis"]}
    assert report["db"]["result"] == "no-agent" and report["db"]["consistency"] == "crash"
    assert report["cache"]["result"] == "failed" and "InternalError" in report["cache"]["reason"]
    assert report["paused"]["result"] == "paused"
    assert report["stopped"]["result"] == "not-running"
    assert report["webzq7hx"]["result"] == "no-agent"  # no AgentConnected condition: never asked
    assert ("webzq7hx", "freeze") not in calls(fake)
    assert ("cache", "unfreeze") in calls(fake)  # a failed freeze may have half-happened: thawed anyway
    assert fake.frozen_vmis() == set()


def test_freeze_not_running_409_is_recorded(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.set_freeze_behaviour("demo", "db", "not-running")
    assert run(capsys, "export", "vmi/db", "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))[0] == 0
    assert read_bundle(str(tmp_path / "b")).index["freeze"]["vmis"][0]["result"] == "not-running"


def test_freeze_required_fails_without_a_bundle_and_thaws_everything(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.set_freeze_behaviour("demo", "cache", "no-agent")
    code, out, err = run(capsys, "export", "vmi/db", "vmi/cache", "--freeze=required", "--kubeconfig", kubeconfig,
                         "--to", str(tmp_path / "b"))
    assert code == 1
    assert "--freeze=required" in err and "demo/cache: no-agent" in err
    assert ("db", "unfreeze") in calls(fake) and fake.frozen_vmis() == set()
    assert os.listdir(tmp_path) == ["kubeconfig"]


def test_freeze_never_does_not_call_kubevirt(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    assert run(capsys, "export", "vmi/db", "--freeze=never", "--kubeconfig", kubeconfig,
               "--to", str(tmp_path / "b"))[0] == 0
    assert fake.freeze_calls == []
    assert read_bundle(str(tmp_path / "b")).index["freeze"]["vmis"][0]["result"] == "not-frozen"


def test_api_error_while_frozen_thaws_and_writes_nothing(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.inject("POST", r"/volumesnapshots$", status=500)
    code, _, err = run(capsys, "export", "vmi/db", "--snapshot", "--kubeconfig", kubeconfig,
                       "--to", str(tmp_path / "b"))
    assert code == 1 and "Error from server (InternalError)" in err
    assert calls(fake) == [("db", "freeze"), ("db", "unfreeze")]
    assert os.listdir(tmp_path) == ["kubeconfig"]


def mark_snapshots_ready(fake, stop):
    """Play the CSI snapshotter: mark each new VolumeSnapshot ready to use."""
    while not stop.is_set():
        for snapshot in fake.objects(*SNAPSHOTS):
            if not (snapshot.get("status") or {}).get("readyToUse"):
                fake.add({**snapshot, "status": {"readyToUse": True, "restoreSize": "1Gi"}})
        time.sleep(0.05)


def test_snapshots_are_created_while_frozen_and_awaited_after_thaw(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    stop = threading.Event()
    snapshotter = threading.Thread(target=mark_snapshots_ready, args=(fake, stop), daemon=True)
    snapshotter.start()
    try:
        code, _, err = run(capsys, "export", "vmi/db", "vmi/cache", "--snapshot", "--snapshot-class", "csi-snap",
                           "--name", "nightly", "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    finally:
        stop.set()
        snapshotter.join()
    assert code == 0, err
    log = [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake.requests]
    creates = [i for i, entry in enumerate(log) if entry == ("POST", "volumesnapshots")]
    freezes = [i for i, entry in enumerate(log) if entry[1] == "freeze"]
    thaws = [i for i, entry in enumerate(log) if entry[1] == "unfreeze"]
    assert len(creates) == 2
    assert max(freezes) < min(creates) and max(creates) < min(thaws)
    snapshots = {s["metadata"]["name"]: s for s in fake.objects(*SNAPSHOTS)}
    assert set(snapshots) == {"db-disk-nightly", "cache-disk-nightly"}
    assert snapshots["db-disk-nightly"]["spec"] == {"source": {"persistentVolumeClaimName": "db-disk"},
                                                    "volumeSnapshotClassName": "csi-snap"}
    recorded = read_bundle(str(tmp_path / "b")).index["snapshots"]
    assert {s["name"] for s in recorded if s["readyToUse"]} == set(snapshots)
    polls = [r for r in fake.requests if r.method == "GET" and "volumesnapshots" in r.path]
    assert polls and all(r.path.endswith("/volumesnapshots") for r in polls)  # labelled LISTs, no GET per snapshot
    assert all(r.query.get("labelSelector") == "kvbackup.kubevirt.io/backup=nightly" for r in polls)


def test_snapshot_timeout_fails_the_export(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = run(capsys, "export", "vmi/db", "--snapshot", "--snapshot-timeout", "1s",
                       "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 1 and "not ready after 1s" in err
    assert fake.frozen_vmis() == set() and not (tmp_path / "b").exists()


def export_until_frozen(fake, kubeconfig, target, *extra):
    """An export in a subprocess, hung on snapshot creation once both guests are frozen."""
    fake.inject("POST", r"/volumesnapshots$", delay=30)
    process = subprocess.Popen([sys.executable, "-m", "kubectl_kvbackup", "export", "vmi/db", "vmi/cache",
                                "--snapshot", *extra, "--kubeconfig", kubeconfig, "--to", str(target)],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(fake.frozen_vmis()) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    return process


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_killed_mid_export_thaws_every_guest_and_leaves_no_bundle(cluster, tmp_path, sig, code):
    fake, kubeconfig = cluster
    process = export_until_frozen(fake, kubeconfig, tmp_path / "b.tar.gz")
    try:
        assert fake.frozen_vmis() == {("demo", "db"), ("demo", "cache")}
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == code, err
    assert "no bundle was written" in err and "could not thaw" not in err and "Traceback" not in err
    assert fake.frozen_vmis() == set()
    assert sorted(calls(fake)) == [("cache", "freeze"), ("cache", "unfreeze"), ("db", "freeze"), ("db", "unfreeze")]
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
    code, _, err = run(capsys, "export", "vmi/db", "vmirs/web", "--freeze=required", "--kubeconfig", kubeconfig,
                       "--to", str(tmp_path / "b"))
    assert code == 1 and "demo/webzq7hx: no-agent" in err
    assert fake.freeze_calls == []


def test_a_guest_that_cannot_be_thawed_fails_the_export_loudly(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    fake.set_freeze_behaviour("demo", "db", unfreeze_outcome="error")
    code, _, err = run(capsys, "export", "vmi/db", "-q", "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 1
    assert "could not thaw vmi demo/db" in err and "kubectl kvbackup thaw vmi/db -n demo" in err
    assert "the bundle was written" in err and (tmp_path / "b" / "kvbackup.json").exists()


def test_snapshots_of_a_failed_export_are_deleted(capsys, cluster, tmp_path):
    fake, kubeconfig = cluster
    code, _, err = run(capsys, "export", "vmi/db", "vmi/cache", "--snapshot", "--snapshot-timeout", "1s",
                       "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"))
    assert code == 1
    assert fake.objects(*SNAPSHOTS) == []
    assert [r.method for r in fake.requests if "volumesnapshots/" in r.path and r.method == "DELETE"] == ["DELETE"] * 2


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
        deadline = time.monotonic() + 30
        while not any(r.path.endswith("/unfreeze") for r in fake.requests) and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode in (130, 143), err
    assert fake.frozen_vmis() == set()
    assert "Traceback" not in err

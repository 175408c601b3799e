"""Shared test helpers: the bundled example objects and small object builders."""

from __future__ import annotations

import copy
import os
import pty
import subprocess
import sys
import threading
import time
from typing import Any

from kubectl_kvbackup.cli.webhook import deployment_available
from kubectl_kvbackup.sources import load_manifests

SNAPSHOTS = ("snapshot.storage.k8s.io", "VolumeSnapshot")
CONTENTS = ("snapshot.storage.k8s.io", "VolumeSnapshotContent")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples", "demo")


def example_objects() -> list[dict[str, Any]]:
    """A fresh copy of every object in examples/demo (namespace demo)."""
    return copy.deepcopy(load_manifests([EXAMPLES], "demo"))


def obj(api_version: str, kind: str, name: str, namespace: str = "demo", **fields: Any) -> dict[str, Any]:
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta.update(fields.pop("metadata", {}))
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


class RolloutController:
    """Stands in for kube-controller-manager: reports each Deployment rolled out once it exists, and notes whether
    the webhook was already registered at that moment."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.registered_before_available: list[bool] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for deployment in self.api.objects("apps", "Deployment"):
                if deployment_available(deployment):
                    continue
                self.registered_before_available.append(bool(self.api.objects("admissionregistration.k8s.io",
                                                                               "MutatingWebhookConfiguration")))
                replicas = deployment["spec"]["replicas"]
                self.api.add({**deployment, "status": {
                    "observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
                    "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                    "conditions": [{"type": "Available", "status": "True"}]}})

    def __enter__(self) -> "RolloutController":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


def rfc3339(moment):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


class Snapshotter:
    """Plays the CSI external-snapshotter in a thread: binds a VolumeSnapshotContent to each new VolumeSnapshot,
    cuts it (``status.creationTime``) once ``cut_when()`` holds, and marks it ready to use. With ``error`` it writes
    that message in ``status.error`` too: left over from a retried step on a snapshot that still becomes ready, or,
    with ``fail=True``, the snapshot's failure (never ready, never cut)."""

    def __init__(self, fake, cut_when=lambda: True, error=None, fail=False):
        self.fake, self.cut_when, self.error, self.fail = fake, cut_when, error, fail
        self.cut_at = {}  # snapshot name -> when this thread set its creationTime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            for snapshot in self.fake.objects(*SNAPSHOTS):
                meta, status = snapshot["metadata"], snapshot.get("status") or {}
                if status.get("readyToUse") or (status and not self.cut_when()):
                    continue
                content = f"snapcontent-{meta['namespace']}-{meta['name']}"
                if self.fake.get_object(*CONTENTS, None, content) is None:
                    self.fake.add({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
                                   "metadata": {"name": content},
                                   "spec": {"driver": "hostpath.csi.k8s.io", "deletionPolicy": "Delete",
                                            "volumeSnapshotRef": {"namespace": meta["namespace"],
                                                                  "name": meta["name"]}},
                                   "status": {"snapshotHandle": f"handle-{meta['name']}", "readyToUse": True}})
                new = {"boundVolumeSnapshotContentName": content, "readyToUse": False}
                if self.error:
                    new["error"] = {"message": self.error, "time": rfc3339(time.time())}
                if self.fail:
                    if not status:
                        self.fake.add({**snapshot, "status": new})
                    continue
                if self.cut_when():
                    self.cut_at[meta["name"]] = time.time()
                    new.update(creationTime=rfc3339(time.time()), readyToUse=True, restoreSize="1Gi")
                self.fake.add({**snapshot, "status": new})
            self._stop.wait(0.02)


def on_terminal(*argv: str, cwd: str = REPO) -> tuple[int, str]:
    """``kubectl kvbackup ARGV`` with stdout and stderr on one pseudo-terminal, as a user sees them: the exit code
    and everything written, in order."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.run([sys.executable, "-m", "kubectl_kvbackup", *argv], stdout=follower, stderr=follower,
                                 stdin=subprocess.DEVNULL, cwd=cwd, env={**os.environ, "PYTHONPATH": REPO},
                                 timeout=120)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all of it was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        return process.returncode, b"".join(chunks).decode()
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)

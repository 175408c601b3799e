"""CSI VolumeSnapshots of the graph's PVCs: created while guests are frozen, watched until cut, then until ready.

Two moments matter. The *cut* — ``status.creationTime`` set by the CSI snapshotter — is the point in time the data
is taken: guests may be thawed from then on, as KubeVirt's VirtualMachineSnapshot controller does
(pkg/storage/snapshot/snapshot.go: it unfreezes once every VolumeSnapshot has a creationTime). *Ready*
(``status.readyToUse``) comes later, once the storage has finished; only then is the bound VolumeSnapshotContent's
handle known, which a restore into another namespace needs.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from . import kinds
from .clock import Progress, iso
from .cluster import ApiError, Connection, KubeError, collection_path, object_path
from .refs import Ref

Obj = dict[str, Any]
BACKUP_LABEL = "kvbackup.kubevirt.io/backup"
MAX_NAME = 253


def snapshot_name(pvc_name: str, backup_name: str) -> str:
    """``<pvc>-<backup>``, shortened from the PVC side to Kubernetes' 253-character limit."""
    suffix = f"-{backup_name}"
    return (pvc_name[: MAX_NAME - len(suffix)] + suffix).lower()


def volume_snapshot(pvc: Ref, backup_name: str, snapshot_class: str | None) -> Obj:
    spec: Obj = {"source": {"persistentVolumeClaimName": pvc.name}}
    if snapshot_class:
        spec["volumeSnapshotClassName"] = snapshot_class
    return {"apiVersion": f"{kinds.VOLUME_SNAPSHOT.group}/{kinds.VOLUME_SNAPSHOT.version}",
            "kind": kinds.VOLUME_SNAPSHOT.kind,
            "metadata": {"name": snapshot_name(pvc.name, backup_name), "namespace": pvc.namespace,
                         "labels": {BACKUP_LABEL: backup_name}},
            "spec": spec}


@dataclass
class SnapshotRecord:
    pvc: Ref
    name: str
    snapshot_class: str | None
    created_at: float | None = None
    creation_time: str | None = None  # status.creationTime, as the snapshotter wrote it: the cut
    cut_seen_at: float | None = None  # when kvbackup saw the cut: an upper bound of it on this machine's clock
    ready_at: float | None = None
    restore_size: str | None = None
    content_name: str | None = None
    snapshot_handle: str | None = None
    driver: str | None = None
    #: the content's deletionPolicy once read: kvbackup makes it Retain; "Delete" again when the export fails
    deletion_policy: str | None = None
    consistency: str = ""
    consistency_reason: str = ""
    error: str = ""

    def to_dict(self) -> Obj:
        return {"pvc": self.pvc.to_dict(), "namespace": self.pvc.namespace, "name": self.name,
                "volumeSnapshotClassName": self.snapshot_class, "createdAt": iso(self.created_at),
                "creationTime": self.creation_time, "readyToUse": self.ready_at is not None,
                "readyAt": iso(self.ready_at), "restoreSize": self.restore_size,
                "contentName": self.content_name, "snapshotHandle": self.snapshot_handle, "driver": self.driver,
                "deletionPolicy": self.deletion_policy,
                "consistency": self.consistency or None, "consistencyReason": self.consistency_reason or None,
                "error": self.error or None}


def create_snapshots(connection: Connection, pvcs: list[Ref], backup_name: str, snapshot_class: str | None,
                     created: list[SnapshotRecord], parallel: int = 4) -> None:
    """Create one VolumeSnapshot per PVC, ``parallel`` at a time, appending each to ``created`` as soon as the
    server has it — so that a caller interrupted meanwhile (Ctrl-C) still knows what to delete. Returns once all
    are created (not cut). When one fails, the first error is raised once the others are done, and ``created`` holds
    those to delete: the caller's one clean-up deletes them and names those it could not."""
    errors: list[KubeError] = []

    def create(pvc: Ref) -> None:
        body = volume_snapshot(pvc, backup_name, snapshot_class)
        try:
            connection.request("POST", collection_path(kinds.VOLUME_SNAPSHOT, kinds.VOLUME_SNAPSHOT.version,
                                                       pvc.namespace), body=body)
        except ApiError as error:
            errors.append(KubeError("error: --snapshot needs the CSI snapshot API (snapshot.storage.k8s.io/v1), "
                                    "which this cluster does not serve: install the external-snapshotter CRDs")
                          if error.status == 404 else error)
            return
        except KubeError as error:
            errors.append(error)
            return
        created.append(SnapshotRecord(pvc, body["metadata"]["name"], snapshot_class, created_at=time.time()))

    if not pvcs:
        return
    with ThreadPoolExecutor(max_workers=min(max(1, parallel), len(pvcs)), thread_name_prefix="snapshot") as pool:
        list(pool.map(create, pvcs))
    created.sort(key=lambda r: (r.pvc.namespace, r.pvc.name))  # the index's order, whatever finished first
    if errors:
        raise errors[0]


def delete_command(record: SnapshotRecord) -> str:
    """What deletes a snapshot and its storage: a content still set to Retain must be given back to Delete first."""
    delete = f"kubectl delete volumesnapshot -n {record.pvc.namespace} {record.name}"
    if record.content_name and record.deletion_policy == "Retain":
        return (f"kubectl patch volumesnapshotcontent {record.content_name} --type merge -p "
                f"'{{\"spec\":{{\"deletionPolicy\":\"Delete\"}}}}' && {delete}")
    return delete


def _set_deletion_policy(connection: Connection, content_name: str, policy: str) -> None:
    path = object_path(kinds.VOLUME_SNAPSHOT_CONTENT, kinds.VOLUME_SNAPSHOT_CONTENT.version, "", content_name)
    try:
        connection.request("PATCH", path, body={"spec": {"deletionPolicy": policy}},
                           content_type="application/merge-patch+json")
    except ApiError as error:
        if error.status == 403:
            raise KubeError(f"{error}\nexport --snapshot needs patch on volumesnapshotcontents "
                            "(snapshot.storage.k8s.io) to keep the snapshots when their namespace is deleted: see "
                            "README (RBAC)") from None
        raise


def delete_snapshots(connection: Connection, records: list[SnapshotRecord],
                     warn: Callable[[str], None] = lambda m: None) -> None:
    """Best effort: a failed export must not leave snapshots nobody will restore from; those that stay are named
    with the command that deletes them. A content this export set to Retain is set back to Delete first, or the
    storage snapshot would outlive its VolumeSnapshot."""
    for record in records:
        try:
            if record.content_name and record.deletion_policy == "Retain":
                _set_deletion_policy(connection, record.content_name, "Delete")
                record.deletion_policy = "Delete"
            connection.request("DELETE", object_path(kinds.VOLUME_SNAPSHOT, kinds.VOLUME_SNAPSHOT.version,
                                                     record.pvc.namespace, record.name))
        except ApiError as error:
            if error.status != 404:
                warn(f"warning: could not delete VolumeSnapshot {record.pvc.namespace}/{record.name} ({error}): "
                     f"run: {delete_command(record)}")
        except KubeError as error:
            warn(f"warning: could not delete VolumeSnapshot {record.pvc.namespace}/{record.name} ({error}): "
                 f"run: {delete_command(record)}")


def _observe(record: SnapshotRecord, status: Obj) -> None:
    # The snapshot controller leaves the last error of a retried step (an update conflict, a timeout) in
    # status.error after the snapshot went on to become ready; only an error on a snapshot not ready is a failure.
    if (status.get("error") or {}).get("message") and not status.get("readyToUse"):
        record.error = status["error"]["message"]
        raise KubeError(f"error: VolumeSnapshot {record.pvc.namespace}/{record.name} failed: {record.error}")
    record.content_name = status.get("boundVolumeSnapshotContentName") or record.content_name
    if status.get("creationTime") and record.cut_seen_at is None:
        record.creation_time, record.cut_seen_at = status["creationTime"], time.time()
    if status.get("readyToUse") and record.ready_at is None:
        record.ready_at, record.restore_size = time.time(), status.get("restoreSize")
        if record.cut_seen_at is None:  # a snapshotter that reports both at once
            record.creation_time, record.cut_seen_at = status.get("creationTime"), record.ready_at


def cut(record: SnapshotRecord) -> bool:
    return record.cut_seen_at is not None


def ready(record: SnapshotRecord) -> bool:
    return record.ready_at is not None


def wait_for(connection: Connection, records: list[SnapshotRecord], backup_name: str,
             done: Callable[[SnapshotRecord], bool], timeout: float, phase: str,
             progress: Progress = lambda phase, done, total: None, poll: float = 0.25) -> list[SnapshotRecord]:
    """Poll until ``done`` holds for every snapshot or ``timeout`` passes; returns those still waiting.

    One labelled LIST per namespace and round, not one GET per snapshot. A snapshot in error fails the export."""
    deadline = time.monotonic() + timeout
    by_key = {(r.pvc.namespace, r.name): r for r in records}
    waiting = [r for r in records if not done(r)]
    while waiting:
        for namespace in sorted({r.pvc.namespace for r in waiting}):
            path = collection_path(kinds.VOLUME_SNAPSHOT, kinds.VOLUME_SNAPSHOT.version, namespace)
            for snapshot in connection.list_pages(path, f"{BACKUP_LABEL}={backup_name}"):
                record = by_key.get((namespace, (snapshot.get("metadata") or {}).get("name")))
                if record is not None:
                    _observe(record, snapshot.get("status") or {})
        waiting = [r for r in records if not done(r)]
        if not waiting or time.monotonic() >= deadline:
            break
        progress(phase, len(records) - len(waiting), len(records))
        time.sleep(poll)
    progress(phase, len(records) - len(waiting), len(records))
    return waiting


def wait_until_ready(connection: Connection, records: list[SnapshotRecord], backup_name: str, timeout: float,
                     progress: Progress = lambda phase, done, total: None) -> None:
    """Every snapshot ready to use, or the export fails naming those that are not."""
    waiting = wait_for(connection, records, backup_name, ready, timeout, "snapshots ready", progress, poll=1.0)
    if waiting:
        names = ", ".join(f"{r.pvc.namespace}/{r.name}" for r in waiting)
        raise KubeError(f"error: VolumeSnapshots not ready after {timeout:.0f}s: {names}: check the CSI driver, "
                        "or raise --snapshot-timeout")


def read_contents(connection: Connection, records: list[SnapshotRecord], parallel: int = 4) -> None:
    """What a restore into another namespace needs, from each ready snapshot's bound VolumeSnapshotContent: the
    storage's snapshot handle and the CSI driver (Velero's CSI restore pre-provisions a content from these). Each
    content is then set to ``deletionPolicy: Retain``, as Velero's CSI backup does (velero
    pkg/util/csi/volume_snapshot.go): with a class's ``Delete``, deleting the namespace — the disaster a backup is
    for — would delete the storage snapshot with its VolumeSnapshot (external-snapshotter
    pkg/common-controller/snapshot_controller.go)."""
    def read(record: SnapshotRecord) -> None:
        if not record.content_name:
            raise KubeError(f"error: VolumeSnapshot {record.pvc.namespace}/{record.name} is ready but names no "
                            "VolumeSnapshotContent (status.boundVolumeSnapshotContentName)")
        try:
            content = connection.request("GET", object_path(kinds.VOLUME_SNAPSHOT_CONTENT,
                                                            kinds.VOLUME_SNAPSHOT_CONTENT.version, "",
                                                            record.content_name))
        except ApiError as error:
            if error.status == 403:
                raise KubeError(f"{error}\nexport --snapshot needs get on volumesnapshotcontents "
                                "(snapshot.storage.k8s.io): see README (RBAC)") from None
            raise
        record.snapshot_handle = (content.get("status") or {}).get("snapshotHandle")
        record.driver = (content.get("spec") or {}).get("driver")
        record.deletion_policy = (content.get("spec") or {}).get("deletionPolicy")
        if record.deletion_policy != "Retain":
            _set_deletion_policy(connection, record.content_name, "Retain")
            record.deletion_policy = "Retain"

    if records:
        with ThreadPoolExecutor(max_workers=min(max(1, parallel), len(records)), thread_name_prefix="content") as pool:
            list(pool.map(read, records))

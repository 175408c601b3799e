"""CSI VolumeSnapshots of the graph's PVCs, created while guests are frozen and awaited after they thaw."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from . import kinds
from .clock import iso
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
    ready_at: float | None = None
    restore_size: str | None = None
    error: str = ""

    def to_dict(self) -> Obj:
        return {"pvc": self.pvc.to_dict(), "namespace": self.pvc.namespace, "name": self.name,
                "volumeSnapshotClassName": self.snapshot_class, "createdAt": iso(self.created_at),
                "readyToUse": self.ready_at is not None, "readyAt": iso(self.ready_at),
                "restoreSize": self.restore_size, "error": self.error or None}


def create_snapshots(connection: Connection, pvcs: list[Ref], backup_name: str, snapshot_class: str | None,
                     parallel: int = 4) -> list[SnapshotRecord]:
    """Create one VolumeSnapshot per PVC, ``parallel`` at a time; returns as soon as all are created (not ready),
    so that guests can be thawed. All or nothing: when one fails, those created are deleted again."""
    def create(pvc: Ref) -> SnapshotRecord | KubeError:
        body = volume_snapshot(pvc, backup_name, snapshot_class)
        try:
            connection.request("POST", collection_path(kinds.VOLUME_SNAPSHOT, kinds.VOLUME_SNAPSHOT.version,
                                                       pvc.namespace), body=body)
        except ApiError as error:
            if error.status == 404:
                return KubeError("error: --snapshot needs the CSI snapshot API (snapshot.storage.k8s.io/v1), which "
                                 "this cluster does not serve: install the external-snapshotter CRDs")
            return error
        except KubeError as error:
            return error
        return SnapshotRecord(pvc, body["metadata"]["name"], snapshot_class, created_at=time.time())

    if not pvcs:
        return []
    with ThreadPoolExecutor(max_workers=min(max(1, parallel), len(pvcs)), thread_name_prefix="snapshot") as pool:
        results = list(pool.map(create, pvcs))
    created = [r for r in results if isinstance(r, SnapshotRecord)]
    errors = [r for r in results if isinstance(r, KubeError)]
    if errors:
        delete_snapshots(connection, created)
        raise errors[0]
    return created


def delete_snapshots(connection: Connection, records: list[SnapshotRecord],
                     warn: Callable[[str], None] = lambda m: None) -> None:
    """Best effort: a failed export must not leave snapshots nobody will restore from."""
    for record in records:
        try:
            connection.request("DELETE", object_path(kinds.VOLUME_SNAPSHOT, kinds.VOLUME_SNAPSHOT.version,
                                                     record.pvc.namespace, record.name))
        except KubeError as error:
            warn(f"warning: could not delete VolumeSnapshot {record.pvc.namespace}/{record.name} ({error}): "
                 f"kubectl delete volumesnapshot -n {record.pvc.namespace} {record.name}")


def wait_until_ready(connection: Connection, records: list[SnapshotRecord], backup_name: str, timeout: float,
                     progress: Callable[[str], None] = lambda m: None, poll: float = 1.0) -> None:
    """Poll until every snapshot reports ``status.readyToUse`` — one labelled LIST per namespace and round, not
    one GET per snapshot. A snapshot in error, or still unready at the deadline, fails the export."""
    deadline = time.monotonic() + timeout
    waiting = {(r.pvc.namespace, r.name): r for r in records}
    while waiting:
        for namespace in sorted({ns for ns, _ in waiting}):
            path = collection_path(kinds.VOLUME_SNAPSHOT, kinds.VOLUME_SNAPSHOT.version, namespace)
            for snapshot in connection.list_pages(path, f"{BACKUP_LABEL}={backup_name}"):
                record = waiting.get((namespace, (snapshot.get("metadata") or {}).get("name")))
                status = snapshot.get("status") or {}
                if record is None:
                    continue
                if (status.get("error") or {}).get("message"):
                    record.error = status["error"]["message"]
                    raise KubeError(f"error: VolumeSnapshot {namespace}/{record.name} failed: {record.error}")
                if status.get("readyToUse"):
                    record.ready_at, record.restore_size = time.time(), status.get("restoreSize")
                    del waiting[(namespace, record.name)]
                    progress(f"snapshot {namespace}/{record.name} ready")
        if waiting and time.monotonic() >= deadline:
            names = ", ".join(f"{ns}/{name}" for ns, name in sorted(waiting))
            raise KubeError(f"error: VolumeSnapshots not ready after {timeout:.0f}s: {names}: check the CSI driver, "
                            "or raise --snapshot-timeout")
        if waiting:
            time.sleep(poll)

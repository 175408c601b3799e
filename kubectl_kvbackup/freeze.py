"""Guest filesystem freeze and thaw through KubeVirt's ``subresources.kubevirt.io`` API.

A frozen guest stops writing, so a snapshot or copy taken meanwhile is filesystem-consistent. Every guest frozen is
thawed on every exit path: callers call ``GuestFreezer.thaw`` when done and again from their error path, with
``signals_deferred`` held; it thaws whatever a freeze was attempted on, after in-flight freezes finish, and only once.
KubeVirt's ``unfreezeTimeout`` thaws the guest server-side should this process die outright (SIGKILL, power loss).
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import quote

from .clock import Progress, go_duration, iso
from .cluster import ApiError, Connection, KubeError

Obj = dict[str, Any]
FREEZABLE = "freezable"
FROZEN_BY_OTHER = "frozen-by-other"
THAW_ATTEMPTS = 3
#: The error KubeVirt relays when a Windows guest's VSS already thawed by itself (it holds writes about 10 s):
#: kubevirt/kubevirt pkg/storage/snapshot/source.go, VSSFreezeLimitReached.
VSS_FREEZE_LIMIT = "fsfreeze is limited"
#: How long VSS holds a Windows guest's writes (qemu qga/vss-win32/requester.cpp: "VSS can only hold writes for
#: 10 seconds").
VSS_WINDOW = 10.0


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` (and so every thaw) runs."""


@contextmanager
def terminate_as_exception() -> Iterator[None]:
    """While active, SIGTERM raises ``Terminated`` in the main thread instead of killing the process."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while guests are being thawed: a second Ctrl-C must not cut a thaw short. The signal
    is delivered, and acted on, once the thaw is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def guest_state(vmi: Obj) -> tuple[str, str]:
    """Whether a VMI's guest can be frozen (``freezable``) or why not, from its status alone."""
    status = vmi.get("status") or {}
    phase = status.get("phase") or "Unknown"
    if phase != "Running":
        return "not-running", f"phase {phase}"
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conditions.get("Paused") == "True":
        return "paused", "the VMI is paused: its memory and disks are already quiescent"
    if status.get("fsFreezeStatus") == "frozen":  # kubevirt/kubevirt pkg/virt-launcher/virtwrap/api/schema.go FSFrozen
        return FROZEN_BY_OTHER, ("already frozen by someone else (a VirtualMachineSnapshot in progress?): kvbackup "
                                 "neither freezes nor thaws it")
    if conditions.get("AgentConnected") != "True":
        return "no-agent", "no guest agent connected: the backup is crash-consistent"
    return FREEZABLE, ""


@dataclass
class FreezeRecord:
    namespace: str
    name: str
    result: str = "pending"  # frozen | frozen-by-other | no-agent | paused | not-running | failed | not-frozen
    reason: str = ""
    freeze_requested_at: float | None = None
    frozen_at: float | None = None
    thawed_at: float | None = None
    thawed_by_guest: bool = False  # Windows VSS let go before the unfreeze: the guest thawed itself
    thaw_error: str = ""
    consistency: str = "crash-consistent"
    consistency_reason: str = ""
    overhead: float | None = None  # frozen time not spent waiting for the snapshot cut

    @property
    def frozen_for(self) -> float | None:
        if self.frozen_at is None or self.thawed_at is None:
            return None
        return self.thawed_at - self.frozen_at

    def to_dict(self) -> Obj:
        return {"namespace": self.namespace, "name": self.name, "result": self.result, "reason": self.reason,
                "consistency": self.consistency, "consistencyReason": self.consistency_reason or None,
                "frozenAt": iso(self.frozen_at), "thawedAt": iso(self.thawed_at),
                "frozenForSeconds": None if self.frozen_for is None else round(self.frozen_for, 3),
                "overheadSeconds": None if self.overhead is None else round(self.overhead, 3),
                "thawedByGuest": self.thawed_by_guest, "thawError": self.thaw_error or None}


def subresource_path(namespace: str, name: str, verb: str) -> str:
    return (f"/apis/subresources.kubevirt.io/v1/namespaces/{quote(namespace, safe='')}/virtualmachineinstances/"
            f"{quote(name, safe='')}/{verb}")


class GuestFreezer:
    """Freezes guests in bounded parallel and always thaws them.

    ``freezer.freeze(vmis); ...; freezer.thaw()``, and ``freezer.thaw()`` on every error path too: a thaw skips the
    guests already thawed, so calling it again is cheap.
    """

    def __init__(self, connection: Connection, unfreeze_timeout: float = 300.0, parallel: int = 4,
                 progress: Progress = lambda phase, done, total: None,
                 warn: Callable[[str], None] = lambda message: None):
        self.connection = connection
        self.unfreeze_timeout = unfreeze_timeout
        self.parallel = max(1, parallel)
        self.progress = progress
        self.warn = warn
        self.records: list[FreezeRecord] = []
        self._attempted: list[FreezeRecord] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _freeze_one(self, record: FreezeRecord) -> None:
        with self._lock:
            self._attempted.append(record)
        record.freeze_requested_at = time.time()
        try:
            self.connection.request("PUT", subresource_path(record.namespace, record.name, "freeze"),
                                    body={"unfreezeTimeout": go_duration(self.unfreeze_timeout)})
        except ApiError as error:
            if error.status == 409:
                record.result, record.reason = "not-running", "KubeVirt says the VMI is not running (409)"
            elif error.status == 404 and error.body.get("kind") == "Status":
                # virt-api's answer that the VMI is gone since it was read (a path no API serves is answered with
                # text, not a Status): no guest left to freeze, or to hold up a backup
                record.result, record.reason = "not-running", "the VMI is gone (404): deleted since it was read"
            elif "agent" in str(error).lower():
                record.result, record.reason = "no-agent", str(error)
            else:
                record.result, record.reason = "failed", str(error)
            return
        except KubeError as error:
            record.result, record.reason = "failed", str(error)
            return
        record.result, record.frozen_at = "frozen", time.time()

    def freeze(self, vmis: list[Obj]) -> list[FreezeRecord]:
        """Freeze every freezable VMI; record why each other one was not frozen."""
        to_freeze = []
        for vmi in vmis:
            meta = vmi.get("metadata") or {}
            record = FreezeRecord(meta.get("namespace", ""), meta.get("name", ""))
            state, reason = guest_state(vmi)
            if state == FREEZABLE:
                to_freeze.append(record)
            else:
                record.result, record.reason = state, reason
            self.records.append(record)
        if to_freeze:
            self._pool = ThreadPoolExecutor(max_workers=min(self.parallel, len(to_freeze)),
                                            thread_name_prefix="freeze")
            futures = [self._pool.submit(self._freeze_one, r) for r in to_freeze]
            for done, future in enumerate(futures, 1):
                future.result()
                self.progress("freezing guests", done, len(futures))
        return self.records

    def thaw(self) -> None:
        """Thaw every guest a freeze was attempted on (a freeze cut short may still have taken effect)."""
        with signals_deferred():
            self._thaw_attempted()

    def _thaw_attempted(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self._lock:
            pending = [r for r in self._attempted if r.thawed_at is None and r.result not in ("not-running",
                                                                                               "no-agent")]
        if not pending:
            return
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(pending)), thread_name_prefix="thaw") as pool:
            for done, _ in enumerate(pool.map(self._thaw_one, pending), 1):
                self.progress("thawing guests", done, len(pending))

    def _thaw_one(self, record: FreezeRecord) -> None:
        for attempt in range(THAW_ATTEMPTS):
            try:
                self.connection.request("PUT", subresource_path(record.namespace, record.name, "unfreeze"))
            except KubeError as error:
                if isinstance(error, ApiError) and error.status in (404, 409):
                    record.thawed_at = time.time()  # gone or stopped: nothing is frozen any more
                    return
                if VSS_FREEZE_LIMIT in str(error):
                    record.thawed_at, record.thawed_by_guest, record.thaw_error = time.time(), True, ""
                    return
                record.thaw_error = str(error)
                time.sleep(0.2 * (attempt + 1))
                continue
            record.thawed_at, record.thaw_error = time.time(), ""
            return
        self.warn(f"error: could not thaw vmi {record.namespace}/{record.name}: {record.thaw_error}; KubeVirt thaws it "
                  f"by itself after the unfreeze timeout ({go_duration(self.unfreeze_timeout)}), or run: "
                  f"kubectl kvbackup thaw vmi/{record.name} -n {record.namespace}")

    def thaw_failures(self) -> list[FreezeRecord]:
        return [r for r in self._attempted if r.thawed_at is None and r.thaw_error]

    def frozen_window(self) -> float | None:
        """From the first freeze to the last thaw: how long any guest of the backup was stopped."""
        frozen = [r for r in self.records if r.frozen_at is not None and r.thawed_at is not None]
        if not frozen:
            return None
        return max(r.thawed_at for r in frozen) - min(r.frozen_at for r in frozen)

"""Prometheus metrics of the webhook, counted per gunicorn worker and added up when scraped.

Each worker counts into its own slot of one block of shared memory that the gunicorn master creates before it forks
(``share_between_workers``) and hands out (``slot_for``): a worker never waits for another, so one killed in the
middle of counting cannot hang the rest, and a scrape, which reaches any one worker, adds up every slot. A worker
started in place of a dead one takes over its slot, so counters never go down.

A slot also says whether its worker is still waiting for its identity index (until when), so that readiness, which
a probe asks of any one worker, speaks for the whole pod: the master marks a slot as waiting before it forks the
worker (``expect_worker``) and clears it when the worker exits (``worker_gone``); the worker clears it once synced.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from typing import Any, Iterable

KINDS = ("DataVolume", "PersistentVolumeClaim", "VirtualMachineInstance", "Pod", "VirtualMachine", "other")
#: allowed: unchanged; patched: allowed with a JSONPatch; denied: a restore rule refused it; invalid: bad request
DECISIONS = ("allowed", "patched", "denied", "invalid")
#: identity-index: a restored VM/VMI checked against this restore only, the index not synced or stale
LOOKUPS = ("namespace", "owner", "pvc", "identities", "identity-index")
#: seconds; the webhook answers in about a millisecond, a cluster lookup takes longer, the timeout is 5 s
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_REQUESTS = 0
_BUCKETS = _REQUESTS + len(KINDS) * len(DECISIONS)
_SUM = _BUCKETS + len(BUCKETS) + 1  # + the +Inf bucket
_COUNT = _SUM + 1
_LOOKUP_FAILURES = _COUNT + 1
_INDEX_WAIT = _LOOKUP_FAILURES + len(LOOKUPS)  # 0: not waiting; else the monotonic time the worker waits until
_SIZE = _INDEX_WAIT + 1

_shared: Any = None
_slots = 1
_slot = 0


def share_between_workers(workers: int) -> None:
    """Called in the gunicorn master before it forks. Twice the workers: during a reload the new ones start before
    the old ones stop."""
    global _shared, _slots
    _slots = 2 * workers + 1
    _shared = multiprocessing.RawArray("d", _slots * _SIZE)
    for slot in range(workers):  # the first workers take these slots: none counts as ready before all have started
        expect_worker(slot)


def slot_for(taken: Iterable[int]) -> int:
    """In the master, for a worker about to be forked: the first slot no live worker holds."""
    used = set(taken)
    return next(slot for slot in range(_slots) if slot not in used)


def expect_worker(slot: int) -> None:
    """In the master, before it forks the worker that will count into ``slot``: until the worker says otherwise,
    it is waiting (a worker that never finishes starting is killed by gunicorn, and then ``worker_gone``)."""
    _shared[slot * _SIZE + _INDEX_WAIT] = math.inf


def worker_gone(slot: int) -> None:
    """In the master, after the worker of ``slot`` exited: it waits for nothing any more."""
    _shared[slot * _SIZE + _INDEX_WAIT] = 0.0


def use_slot(slot: int) -> None:
    """In a freshly forked worker: count into ``slot``."""
    global _slot
    _slot = slot


class Metrics:
    def __init__(self) -> None:
        self._values = _shared if _shared is not None else multiprocessing.RawArray("d", _SIZE)
        self._slots = _slots if _shared is not None else 1
        self._offset = _slot * _SIZE if _shared is not None else 0
        self._lock = threading.Lock()  # this worker's threads only

    def _add(self, index: int, amount: float = 1.0) -> None:
        self._values[self._offset + index] += amount

    def observe(self, kind: str, decision: str, seconds: float) -> None:
        kind_index = KINDS.index(kind) if kind in KINDS else KINDS.index("other")
        bucket = next((i for i, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))
        with self._lock:
            self._add(_REQUESTS + kind_index * len(DECISIONS) + DECISIONS.index(decision))
            self._add(_BUCKETS + bucket)
            self._add(_SUM, seconds)
            self._add(_COUNT)

    def lookup_failed(self, lookup: str) -> None:
        with self._lock:
            self._add(_LOOKUP_FAILURES + LOOKUPS.index(lookup))

    def index_waiting_until(self, deadline: float) -> None:
        """This worker's identity index has not synced; readiness waits for it until ``deadline`` (monotonic)."""
        self._values[self._offset + _INDEX_WAIT] = deadline

    def index_synced(self) -> None:
        """This worker needs no more waiting for: its identity index has synced, or it keeps none."""
        self._values[self._offset + _INDEX_WAIT] = 0.0

    def unsynced_workers(self, now: float) -> tuple[int, int]:
        """The pod's workers whose identity index has not synced: those still waited for (deadline after ``now``),
        and those serving without it."""
        waits = [self._values[slot * _SIZE + _INDEX_WAIT] for slot in range(self._slots)]
        waiting = sum(1 for until in waits if until > now)
        return waiting, sum(1 for until in waits if until) - waiting

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4), every worker's counts added up."""
        values = [sum(self._values[slot * _SIZE + i] for slot in range(self._slots)) for i in range(_SIZE)]
        lines = ["# HELP kvbackup_webhook_requests_total Admission requests by kind and decision.",
                 "# TYPE kvbackup_webhook_requests_total counter"]
        for k, kind in enumerate(KINDS):
            for d, decision in enumerate(DECISIONS):
                count = values[_REQUESTS + k * len(DECISIONS) + d]
                lines.append(f'kvbackup_webhook_requests_total{{kind="{kind}",decision="{decision}"}} {count:.0f}')
        lines += ["# HELP kvbackup_webhook_request_duration_seconds Time to answer an admission request.",
                  "# TYPE kvbackup_webhook_request_duration_seconds histogram"]
        cumulative = 0.0
        for i, bound in enumerate((*BUCKETS, float("inf"))):
            cumulative += values[_BUCKETS + i]
            label = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'kvbackup_webhook_request_duration_seconds_bucket{{le="{label}"}} {cumulative:.0f}')
        lines.append(f"kvbackup_webhook_request_duration_seconds_sum {values[_SUM]!r}")
        lines.append(f"kvbackup_webhook_request_duration_seconds_count {values[_COUNT]:.0f}")
        lines += ["# HELP kvbackup_webhook_lookup_failures_total Cluster lookups that failed; the webhook then "
                  "allowed the object without that rule's change (see docs/webhook.md).",
                  "# TYPE kvbackup_webhook_lookup_failures_total counter"]
        lines += [f'kvbackup_webhook_lookup_failures_total{{lookup="{name}"}} {values[_LOOKUP_FAILURES + i]:.0f}'
                  for i, name in enumerate(LOOKUPS)]
        lines += ["# HELP kvbackup_webhook_unsynced_workers Workers whose identity index has not finished its first "
                  "list: their collision checks miss VMs in the cluster.",
                  "# TYPE kvbackup_webhook_unsynced_workers gauge",
                  f"kvbackup_webhook_unsynced_workers {sum(self.unsynced_workers(time.monotonic()))}"]
        return "\n".join(lines) + "\n"

"""Prometheus metrics of the webhook, counted per gunicorn worker and added up when scraped.

Each worker counts into its own slot of one block of shared memory that the gunicorn master creates before it forks
(``share_between_workers``) and hands out (``slot_for``): a worker never waits for another, so one killed in the
middle of counting cannot hang the rest, and a scrape, which reaches any one worker, adds up every slot. A worker
started in place of a dead one takes over its slot, so counters never go down.
"""

from __future__ import annotations

import multiprocessing
import threading
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
_SIZE = _LOOKUP_FAILURES + len(LOOKUPS)

_shared: Any = None
_slots = 1
_slot = 0


def share_between_workers(workers: int) -> None:
    """Called in the gunicorn master before it forks. Twice the workers: during a reload the new ones start before
    the old ones stop."""
    global _shared, _slots
    _slots = 2 * workers + 1
    _shared = multiprocessing.RawArray("d", _slots * _SIZE)


def slot_for(taken: Iterable[int]) -> int:
    """In the master, for a worker about to be forked: the first slot no live worker holds."""
    used = set(taken)
    return next(slot for slot in range(_slots) if slot not in used)


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
        return "\n".join(lines) + "\n"

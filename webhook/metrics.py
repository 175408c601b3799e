"""Prometheus metrics of the webhook, shared by every gunicorn worker of a pod.

A scrape reaches one worker at random, so per-worker counters would jump around. The counters live in one block of
shared memory that the gunicorn master creates before it forks (``share_between_workers``): every worker adds to
the same numbers, and a restarted worker keeps them.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

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


def share_between_workers() -> None:
    """Called in the gunicorn master before it forks: workers then find this block through the module."""
    global _shared
    _shared = multiprocessing.Array("d", _SIZE, lock=True)


class Metrics:
    def __init__(self, values: Any = None):
        self._values = values if values is not None else (_shared or multiprocessing.Array("d", _SIZE, lock=True))

    def observe(self, kind: str, decision: str, seconds: float) -> None:
        kind_index = KINDS.index(kind) if kind in KINDS else KINDS.index("other")
        bucket = next((i for i, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))
        with self._values.get_lock():
            self._values[_REQUESTS + kind_index * len(DECISIONS) + DECISIONS.index(decision)] += 1
            self._values[_BUCKETS + bucket] += 1
            self._values[_SUM] += seconds
            self._values[_COUNT] += 1

    def lookup_failed(self, lookup: str) -> None:
        with self._values.get_lock():
            self._values[_LOOKUP_FAILURES + LOOKUPS.index(lookup)] += 1

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        with self._values.get_lock():
            values = list(self._values)
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

"""Timestamps as Kubernetes writes them (RFC 3339, UTC), and the callback long steps report progress through."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

#: progress(phase, done, total): a step of ``total`` items has finished ``done``; the CLI prints it
Progress = Callable[[str, int, int], None]


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(time.time()) or ""


def compact_time(timestamp: str) -> str:
    """``2026-11-25T01:22:33.123Z`` as ``20261125t012233``: to the second, in the characters a name or label allows."""
    return "".join(c for c in timestamp.lower() if c.isalnum())[:15]


def go_duration(seconds: float) -> str:
    """``5m0s`` as KubeVirt's unfreezeTimeout expects a Go duration."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"

"""KubeVirt's freeze and unfreeze subresources of VMIs, with an outcome each test chooses per VMI."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from .status import ApiStatus, bad_request, internal_error
from .storage import Store

Obj = dict[str, Any]
OUTCOMES = ("ok", "not-running", "no-agent", "error")
_DURATION = re.compile(r"0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+")
_VMI = ("kubevirt.io", "VirtualMachineInstance")


@dataclass(frozen=True)
class FreezeCall:
    namespace: str
    name: str
    op: str  # "freeze" or "unfreeze"
    time: float
    body: Obj | None


@dataclass(frozen=True)
class _Behaviour:
    outcome: str = "ok"
    delay: float = 0.0
    unfreeze_outcome: str = "ok"


class Freezer:
    """Answers as virt-api does: 404 without the VMI, 409 when it is not running, 500 when the guest fails."""

    def __init__(self, store: Store):
        self._store = store
        self._lock = threading.Lock()
        self._behaviour: dict[tuple[str, str], _Behaviour] = {}
        self._calls: list[FreezeCall] = []

    def set_behaviour(self, namespace: str, name: str, outcome: str = "ok", delay: float = 0.0,
                      unfreeze_outcome: str = "ok") -> None:
        if outcome not in OUTCOMES or unfreeze_outcome not in OUTCOMES:
            raise ValueError(f"unknown freeze outcome; use one of {', '.join(OUTCOMES)}")
        with self._lock:
            self._behaviour[(namespace, name)] = _Behaviour(outcome, delay, unfreeze_outcome)

    @property
    def calls(self) -> list[FreezeCall]:
        with self._lock:
            return list(self._calls)

    def frozen(self) -> set[tuple[str, str]]:
        """(namespace, name) of VMIs whose status says frozen: the VMI object is the only record, as in KubeVirt."""
        vmi_type = self._store.registry.named(*_VMI)
        return {(vmi["metadata"]["namespace"], vmi["metadata"]["name"]) for vmi in self._store.objects(vmi_type)
                if (vmi.get("status") or {}).get("fsFreezeStatus") == "frozen"} if vmi_type else set()

    def handle(self, namespace: str, name: str, op: str, raw_body: bytes) -> Obj:
        body = _parse(raw_body)
        with self._lock:
            behaviour = self._behaviour.get((namespace, name), _Behaviour())
            self._calls.append(FreezeCall(namespace, name, op, time.time(), body))
        if op == "freeze":
            timeout = (body or {}).get("unfreezeTimeout")
            if not isinstance(timeout, str) or not _DURATION.fullmatch(timeout):
                raise bad_request(f"unfreezeTimeout is required, as a duration such as 5m0s; got {timeout!r}")
        if behaviour.delay:
            time.sleep(behaviour.delay)  # a guest that takes its time to flush and freeze
        vmi_type = self._store.registry.named(*_VMI)
        vmi = self._store.stored(vmi_type, namespace, name) if vmi_type else None
        if vmi is None:
            # virt-api names the resource in the singular here
            raise ApiStatus(404, "NotFound", f'virtualmachineinstance.kubevirt.io "{name}" not found',
                            {"name": name, "group": "kubevirt.io", "kind": "virtualmachineinstance"})
        outcome = behaviour.outcome if op == "freeze" else behaviour.unfreeze_outcome
        phase = (vmi.get("status") or {}).get("phase")
        if outcome == "not-running" or (phase is not None and phase != "Running"):
            raise ApiStatus(409, "Conflict", f'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io '
                                             f'"{name}": VMI is not running',
                            {"name": name, "group": "kubevirt.io", "kind": "virtualmachineinstance"})
        if outcome == "no-agent":
            raise internal_error("Guest agent is not connected")
        if outcome == "error":
            raise internal_error("virt-handler failed")

        def reflect(obj: Obj) -> None:  # what virt-handler reports once the guest agent confirms
            status = obj.setdefault("status", {})
            if op == "freeze":
                status["fsFreezeStatus"] = "frozen"
            else:
                status.pop("fsFreezeStatus", None)

        self._store.rewrite(vmi_type, namespace, name, reflect)
        return {}


def _parse(raw: bytes) -> Obj | None:
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise bad_request("Can not unmarshal Request body to struct") from None
    if not isinstance(body, dict):
        raise bad_request("Can not unmarshal Request body to struct")
    return body

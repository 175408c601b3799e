"""Identity rules: MAC addresses and firmware serial/UUID that a restored VM or VMI fixes explicitly must not
collide with those in use in the target cluster."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from enum import Enum

from .. import kinds
from .objects import Change, Obj, is_kind


class IdentityPolicy(str, Enum):
    """What to do with MAC addresses and firmware serial/uuid that a VM or VMI fixes explicitly."""

    KEEP = "keep"
    CLEAR_ON_COLLISION = "clear-on-collision"
    CLEAR = "clear"


@dataclass
class IdentitiesInUse:
    macs: set[str] = field(default_factory=set)
    serials: set[str] = field(default_factory=set)
    uuids: set[str] = field(default_factory=set)


def _vmi_spec(obj: Obj) -> Obj | None:
    if is_kind(obj, kinds.VM):
        return ((obj.get("spec") or {}).get("template") or {}).get("spec")
    if is_kind(obj, kinds.VMI):
        return obj.get("spec")
    return None


def identity_values(obj: Obj) -> tuple[set[str], set[str], set[str]]:
    """The MAC addresses, firmware serials and firmware UUIDs a VM or VMI fixes explicitly."""
    spec = _vmi_spec(obj) or {}
    domain = spec.get("domain") or {}
    macs = {normalize_mac(i["macAddress"]) for i in (domain.get("devices") or {}).get("interfaces") or []
            if i.get("macAddress")}
    firmware = domain.get("firmware") or {}
    serials = {firmware["serial"]} if firmware.get("serial") else set()
    uuids = {str(firmware["uuid"]).lower()} if firmware.get("uuid") else set()
    return macs, serials, uuids


def normalize_mac(mac: str) -> str:
    return mac.strip().lower().replace("-", ":")


def apply_identity_policy(obj: Obj, policy: IdentityPolicy, in_use: IdentitiesInUse) -> tuple[Obj, list[Change]]:
    """Two VMs with the same MAC break the network; the same firmware serial/uuid confuses guests and licences.

    ``clear`` removes MACs (KubeVirt's pool assigns new ones) and regenerates serial and uuid; ``clear-on-collision``
    does that only for values already in use in the target cluster; ``keep`` leaves them.
    """
    result = copy.deepcopy(obj)
    spec = _vmi_spec(result)
    changes: list[Change] = []
    if spec is None or policy is IdentityPolicy.KEEP:
        return result, changes
    clear_all = policy is IdentityPolicy.CLEAR
    why = f"identity policy {policy.value}" if clear_all else "already in use in the cluster"
    prefix = "spec.template.spec" if is_kind(obj, kinds.VM) else "spec"
    domain = spec.get("domain") or {}
    for i, interface in enumerate((domain.get("devices") or {}).get("interfaces") or []):
        mac = interface.get("macAddress")
        if mac and (clear_all or normalize_mac(mac) in in_use.macs):
            del interface["macAddress"]
            changes.append(Change("identity", f"{prefix}.domain.devices.interfaces[{i}].macAddress", mac, None, why))
    firmware = domain.get("firmware") or {}
    for key, values in (("serial", in_use.serials), ("uuid", in_use.uuids)):
        old = firmware.get(key)
        if old and (clear_all or (str(old).lower() if key == "uuid" else old) in values):
            firmware[key] = str(uuid.uuid4())
            changes.append(Change("identity", f"{prefix}.domain.firmware.{key}", str(old), firmware[key], why))
    return result, changes

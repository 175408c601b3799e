"""Identity rules: MAC addresses and firmware serial/UUID that a restored VM or VMI fixes explicitly must not
collide with those in use in the target cluster or elsewhere in the same restore.

New values are derived from the object's namespace and name (and the interface or field), so the same restore run
again, or the webhook reinvoked on an object it already changed, gives the same values.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from dataclasses import dataclass, field
from enum import Enum
from collections.abc import Iterable, Iterator, MutableSet, Set
from typing import Callable, TypeVar

from .. import kinds
from .objects import Change, Obj, copy_object, is_kind

#: KubeVirt's namespace for the firmware UUID it derives from a VM's name (magicUUID in
#: kubevirt pkg/virt-controller/watch/vm/firmware.go: uuid.NewSHA1(namespace, name), i.e. a version 5 UUID).
#: Its FirmwareController persists that value into spec.template.spec.domain.firmware.uuid of every VM without one,
#: virt-controller (pkg/virt-controller/watch/vm/vm.go setupStableFirmwareUUID) sets it on the VMIs it starts, and
#: VirtualMachineRestore does the same (pkg/storage/snapshot/restore.go setLegacyFirmwareUUID).
KUBEVIRT_FIRMWARE_UUID_NAMESPACE = uuid.UUID("6a1a24a1-4061-4607-8bf4-a3963d0c5895")
#: the namespace of the UUIDs and serials kvbackup generates
_GENERATED_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "kvbackup.kubevirt.io")


class MacPolicy(str, Enum):
    """What a restore does with the MAC addresses a VM or VMI fixes explicitly."""

    KEEP = "keep"
    REGENERATE_ON_COLLISION = "regenerate-on-collision"
    REGENERATE = "regenerate"
    CLEAR = "clear"


class FirmwarePolicy(str, Enum):
    """What a restore does with an explicit firmware serial and UUID."""

    KEEP = "keep"
    REGENERATE_ON_COLLISION = "regenerate-on-collision"
    REGENERATE = "regenerate"


E = TypeVar("E", MacPolicy, FirmwarePolicy)


def _parse(enum: type[E], value: str, what: str) -> E:
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"unknown {what} policy {value!r}: use one of "
                         f"{', '.join(p.value for p in enum)}") from None


@dataclass(frozen=True)
class IdentityPolicies:
    mac: MacPolicy = MacPolicy.REGENERATE_ON_COLLISION
    firmware: FirmwarePolicy = FirmwarePolicy.REGENERATE_ON_COLLISION

    @classmethod
    def parse(cls, mac: str, firmware: str) -> IdentityPolicies:
        """From their names; ValueError names the bad one and the choices."""
        return cls(_parse(MacPolicy, mac, "MAC"), _parse(FirmwarePolicy, firmware, "firmware"))

    @property
    def needs_cluster_identities(self) -> bool:
        """Only a collision policy needs the values in use cluster-wide (and the right to list VMs and VMIs)."""
        return (self.mac is MacPolicy.REGENERATE_ON_COLLISION
                or self.firmware is FirmwarePolicy.REGENERATE_ON_COLLISION)


class TakenValues(MutableSet[str]):
    """Values taken: ``base``, read-only and possibly shared (a webhook's snapshot of the values in use in a large
    cluster, too big to copy per object), and those added since, which never change it."""

    def __init__(self, base: Set[str] = frozenset(), added: Iterable[str] = ()):
        self._base = base
        self._added = {value for value in added if value not in base}

    def __contains__(self, value: object) -> bool:
        return value in self._added or value in self._base

    def __iter__(self) -> Iterator[str]:
        yield from self._base
        yield from self._added

    def __len__(self) -> int:
        return len(self._base) + len(self._added)

    def add(self, value: str) -> None:
        if value not in self._base:
            self._added.add(value)

    def discard(self, value: str) -> None:
        if value in self._base:
            raise ValueError(f"{value} is in use outside this restore: it cannot be freed here")
        self._added.discard(value)

    def __or__(self, other: Iterable[str]) -> "TakenValues":  # type: ignore[override]
        return TakenValues(self._base, [*self._added, *other])


@dataclass
class IdentitiesInUse:
    """MAC addresses (normalized), firmware serials and firmware UUIDs (lower case) already taken."""

    macs: MutableSet[str] = field(default_factory=set)
    serials: MutableSet[str] = field(default_factory=set)
    uuids: MutableSet[str] = field(default_factory=set)

    def reserve(self, obj: Obj) -> None:
        """Take what a restored object now uses, so later objects of the same restore never collide with it."""
        macs, serials, uuids = identity_values(obj)
        self.macs |= macs
        self.serials |= serials
        self.uuids |= uuids


def _vmi_spec(obj: Obj) -> Obj | None:
    if is_kind(obj, kinds.VM):
        return ((obj.get("spec") or {}).get("template") or {}).get("spec")
    if is_kind(obj, kinds.VMI):
        return obj.get("spec")
    return None


def _interfaces(spec: Obj) -> list[Obj]:
    return ((spec.get("domain") or {}).get("devices") or {}).get("interfaces") or []


def _firmware(spec: Obj) -> Obj:
    return (spec.get("domain") or {}).get("firmware") or {}


def normalize_mac(mac: str) -> str:
    return mac.strip().lower().replace("-", ":")


def identity_values(obj: Obj) -> tuple[set[str], set[str], set[str]]:
    """The MAC addresses, firmware serials and firmware UUIDs a VM or VMI uses: those its spec fixes, and for a
    VMI the MACs its guest reports in ``status.interfaces[].mac`` (a running VM's MAC may come from KubeMacPool or
    the pod network, not from any spec)."""
    spec = _vmi_spec(obj) or {}
    macs = {normalize_mac(i["macAddress"]) for i in _interfaces(spec) if i.get("macAddress")}
    if is_kind(obj, kinds.VMI):
        macs |= {normalize_mac(i["mac"]) for i in (obj.get("status") or {}).get("interfaces") or []
                 if isinstance(i, dict) and i.get("mac")}
    firmware = _firmware(spec)
    serials = {str(firmware["serial"])} if firmware.get("serial") else set()
    uuids = {str(firmware["uuid"]).lower()} if firmware.get("uuid") else set()
    return macs, serials, uuids


def name_derived_firmware_uuid(name: str) -> str:
    """The firmware UUID KubeVirt gives a VM of this name that has none (same-named VMs in different namespaces
    share it by design, so it is never a collision)."""
    return str(uuid.uuid5(KUBEVIRT_FIRMWARE_UUID_NAMESPACE, name))


def _own_name(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or meta.get("generateName") or ""


def _foreign_uuid(obj: Obj, value: object) -> bool:
    return str(value).lower() != name_derived_firmware_uuid(_own_name(obj)[1])


def needs_identities_in_use(obj: Obj, policies: IdentityPolicies) -> bool:
    """Whether applying ``policies`` to ``obj`` depends on the values in use in the cluster: a collision policy
    and a value it governs. A name-derived firmware UUID never collides, so it alone needs no lookup."""
    spec = _vmi_spec(obj)
    if spec is None:
        return False
    if policies.mac is MacPolicy.REGENERATE_ON_COLLISION and any(i.get("macAddress") for i in _interfaces(spec)):
        return True
    firmware = _firmware(spec)
    return policies.firmware is FirmwarePolicy.REGENERATE_ON_COLLISION and bool(
        firmware.get("serial") or (firmware.get("uuid") and _foreign_uuid(obj, firmware["uuid"])))


def _first_free(candidate: Callable[[int], str], taken: Set[str]) -> str:
    """The first candidate in use nowhere: a value already regenerated, and still free, stays as it is."""
    return next(value for value in map(candidate, itertools.count()) if value not in taken)


def stable_mac(namespace: str, name: str, interface: str, attempt: int) -> str:
    """A locally administered unicast MAC address (first octet: bit 1 set, bit 0 clear), the same for the same
    interface of the same object. KubeMacPool takes a requested MAC outside its range as it is, only refusing
    duplicates (k8snetworkplumbingwg/kubemacpool pkg/pool-manager/virtualmachine_pool.go
    allocateRequestedVirtualMachineInterfaceMac), so the address need not come from its range."""
    digest = hashlib.sha256(f"{namespace}/{name}/{interface}/{attempt}".encode()).digest()
    return ":".join(f"{octet:02x}" for octet in bytes([(digest[0] & 0xFC) | 0x02]) + digest[1:6])


def stable_firmware_value(namespace: str, name: str, key: str, attempt: int) -> str:
    """A UUID (also used as serial), the same for the same field of the same object."""
    return str(uuid.uuid5(_GENERATED_NAMESPACE, f"{namespace}/{name}/{key}/{attempt}"))


def _mac_changes(obj: Obj, spec: Obj, policy: MacPolicy, in_use: IdentitiesInUse, prefix: str) -> list[Change]:
    namespace, name = _own_name(obj)
    interfaces = _interfaces(spec)
    changes = []
    for i, interface in enumerate(interfaces):
        mac = interface.get("macAddress")
        if not mac or policy is MacPolicy.KEEP:
            continue
        path = f"{prefix}.domain.devices.interfaces[{i}].macAddress"
        if policy is MacPolicy.CLEAR:
            del interface["macAddress"]
            changes.append(Change("identity", path, mac, None,
                                  "MAC policy clear: KubeMacPool or the network assigns one"))
            continue
        colliding = normalize_mac(mac) in in_use.macs
        if policy is MacPolicy.REGENERATE_ON_COLLISION and not colliding:
            continue
        elsewhere = {normalize_mac(other["macAddress"]) for j, other in enumerate(interfaces)
                     if j != i and other.get("macAddress")}
        interface_name = str(interface.get("name") or i)
        new = _first_free(lambda attempt: stable_mac(namespace, name, interface_name, attempt),
                          in_use.macs | elsewhere)
        if new != normalize_mac(mac):
            interface["macAddress"] = new
            changes.append(Change("identity", path, mac, new, "already in use in the cluster or this restore"
                                  if colliding else "MAC policy regenerate"))
    return changes


def _firmware_changes(obj: Obj, spec: Obj, policy: FirmwarePolicy, in_use: IdentitiesInUse, prefix: str
                      ) -> list[Change]:
    firmware = _firmware(spec)
    if policy is FirmwarePolicy.KEEP:
        return []
    namespace, name = _own_name(obj)
    changes = []
    for key, taken, normalize in (("serial", in_use.serials, str), ("uuid", in_use.uuids, lambda v: str(v).lower())):
        old = firmware.get(key)
        if not old:
            continue
        colliding = normalize(old) in taken and (key != "uuid" or _foreign_uuid(obj, old))
        if policy is FirmwarePolicy.REGENERATE_ON_COLLISION and not colliding:
            continue
        new = _first_free(lambda attempt: stable_firmware_value(namespace, name, key, attempt), taken)
        if new != normalize(old):
            firmware[key] = new
            changes.append(Change("identity", f"{prefix}.domain.firmware.{key}", str(old), new,
                                  "already in use in the cluster or this restore" if colliding
                                  else "firmware policy regenerate"))
    return changes


def apply_identity_policy(obj: Obj, policies: IdentityPolicies, in_use: IdentitiesInUse) -> tuple[Obj, list[Change]]:
    """Two VMs with one MAC break the network; one firmware serial or UUID twice confuses guests and licences.

    A colliding MAC is replaced by a new stable address rather than removed: without KubeMacPool a VM without a MAC
    gets a different one on every boot. A firmware UUID equal to the one KubeVirt derives from the object's name is
    shared by design and never a collision. Every change is returned for the user to see.
    """
    result = copy_object(obj)
    spec = _vmi_spec(result)
    if spec is None:
        return result, []
    prefix = "spec.template.spec" if is_kind(obj, kinds.VM) else "spec"
    return result, [*_mac_changes(result, spec, policies.mac, in_use, prefix),
                    *_firmware_changes(result, spec, policies.firmware, in_use, prefix)]

"""Graph edges: for each kind, a pure function from an object (and a read-only index) to its dependencies.

Each edge names the field that produced it, so a user can see why an object is in a backup. Edges whose target
may legitimately be absent (a garbage-collected DataVolume, a backend PVC of a VM never started) are optional;
a missing required target is a broken VM, reported by the walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from .. import kinds
from ..kinds import Kind
from ..refs import Ref
from ..selectors import selector_from_label_selector

Obj = dict[str, Any]

LAUNCHER_POD_LABEL = "kubevirt.io/created-by"
REPLICA_SET_LABEL = "kubevirt.io/vmReplicaSet"
HOTPLUG_POD_LABEL = ("kubevirt.io", "hotplug-disk")
LAUNCHER_POD_KIND_LABEL = ("kubevirt.io", "virt-launcher")
PERSISTENT_STATE_LABEL = "persistent-state-for"


class Index(Protocol):
    """What edge functions may read: objects already known, never a live call of their own."""

    def get(self, ref: Ref) -> Obj | None: ...

    def list(self, kind: Kind, namespace: str) -> list[Obj]: ...


@dataclass(frozen=True)
class Edge:
    target: Ref
    path: str
    optional: bool = False


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _labels(obj: Obj) -> dict[str, str]:
    return _meta(obj).get("labels") or {}


def controller_of(obj: Obj) -> Obj | None:
    """The ownerReference with ``controller: true``, if any."""
    for owner in _meta(obj).get("ownerReferences") or []:
        if owner.get("controller"):
            return owner
    return None


def is_controlled_by(obj: Obj, owner: Obj) -> bool:
    """True when ``obj``'s controller reference points at ``owner`` (by UID when both have one, else by kind/name)."""
    ref = controller_of(obj)
    if ref is None or ref.get("kind") != owner.get("kind"):
        return False
    owner_uid = _meta(owner).get("uid")
    if owner_uid and ref.get("uid"):
        return ref["uid"] == owner_uid
    return ref.get("name") == _meta(owner).get("name")


# --- instancetypes and preferences ---------------------------------------------------------------------------

def _matcher_kinds(field: str) -> tuple[Kind, Kind]:
    return ((kinds.INSTANCETYPE, kinds.CLUSTER_INSTANCETYPE) if field == "instancetype"
            else (kinds.PREFERENCE, kinds.CLUSTER_PREFERENCE))


def matcher_kind(field: str, kind_text: str | None) -> Kind:
    """The kind an instancetype/preference matcher points at.

    KubeVirt compares the kind case-insensitively, accepts singular and plural, and treats an empty kind as the
    cluster-wide kind.
    """
    namespaced, cluster = _matcher_kinds(field)
    text = (kind_text or "").lower()
    if text in ("", cluster.singular, cluster.plural):
        return cluster
    if text in (namespaced.singular, namespaced.plural):
        return namespaced
    raise ValueError(f"spec.{field}.kind {kind_text!r} is neither {namespaced.kind} nor {cluster.kind}")


def revision_name(vm: Obj, field: str) -> str | None:
    """The ControllerRevision holding the VM's expanded instancetype/preference.

    ``spec.*.revisionName`` is what older KubeVirt writes; from KubeVirt 1.4 the name only appears in
    ``status.{instancetype,preference}Ref.controllerRevisionRef.name``.
    """
    spec_name = ((vm.get("spec") or {}).get(field) or {}).get("revisionName")
    status_ref = ((vm.get("status") or {}).get(f"{field}Ref") or {}).get("controllerRevisionRef") or {}
    return spec_name or status_ref.get("name")


def _matcher_edges(spec: Obj, status: Obj, namespace: str, prefix: str) -> Iterator[Edge]:
    for field in ("instancetype", "preference"):
        matcher = spec.get(field)
        if not matcher or not matcher.get("name"):
            continue
        try:
            k = matcher_kind(field, matcher.get("kind"))
        except ValueError:
            continue
        yield Edge(Ref.of(k, namespace, matcher["name"]), f"{prefix}.{field}.name")
        if matcher.get("revisionName"):
            yield Edge(Ref.of(kinds.CONTROLLER_REVISION, namespace, matcher["revisionName"]),
                       f"{prefix}.{field}.revisionName")
        status_name = ((status.get(f"{field}Ref") or {}).get("controllerRevisionRef") or {}).get("name")
        if status_name and status_name != matcher.get("revisionName"):
            yield Edge(Ref.of(kinds.CONTROLLER_REVISION, namespace, status_name),
                       f"status.{field}Ref.controllerRevisionRef.name")


# --- what a VMI spec references --------------------------------------------------------------------------------

# (field path below a volume, kind, whether it may be absent)
_VOLUME_REFERENCES: tuple[tuple[tuple[str, ...], Kind], ...] = (
    (("configMap", "name"), kinds.CONFIG_MAP),
    (("secret", "secretName"), kinds.SECRET),
    (("serviceAccount", "serviceAccountName"), kinds.SERVICE_ACCOUNT),
    (("memoryDump", "claimName"), kinds.PVC),
    (("ephemeral", "persistentVolumeClaim", "claimName"), kinds.PVC),
    (("containerDisk", "imagePullSecret"), kinds.SECRET),
    (("cloudInitNoCloud", "secretRef", "name"), kinds.SECRET),
    (("cloudInitNoCloud", "networkDataSecretRef", "name"), kinds.SECRET),
    (("cloudInitConfigDrive", "secretRef", "name"), kinds.SECRET),
    (("cloudInitConfigDrive", "networkDataSecretRef", "name"), kinds.SECRET),
    (("sysprep", "secret", "name"), kinds.SECRET),
    (("sysprep", "configMap", "name"), kinds.CONFIG_MAP),
)

_CREDENTIAL_SECRETS = (("sshPublicKey", "source", "secret", "secretName"),
                       ("userPassword", "source", "secret", "secretName"))


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def volume_edges(volume: Obj, namespace: str, prefix: str, templated_dvs: frozenset[str] = frozenset()
                 ) -> Iterator[Edge]:
    """Edges of one ``spec.volumes[i]`` entry. ``templated_dvs`` are names a pool rewrites per VM: no edge."""
    claim = _dig(volume, ("persistentVolumeClaim", "claimName"))
    if claim:
        path = f"{prefix}.persistentVolumeClaim.claimName"
        yield Edge(Ref.of(kinds.PVC, namespace, claim), path)
        yield Edge(Ref.of(kinds.DATA_VOLUME, namespace, claim), path, optional=True)
    dv_name = _dig(volume, ("dataVolume", "name"))
    if dv_name and dv_name not in templated_dvs:
        path = f"{prefix}.dataVolume.name"
        yield Edge(Ref.of(kinds.DATA_VOLUME, namespace, dv_name), path, optional=True)
        yield Edge(Ref.of(kinds.PVC, namespace, dv_name), path)
    for fields, k in _VOLUME_REFERENCES:
        name = _dig(volume, fields)
        if name:
            # a ConfigMap or Secret volume marked optional lets the VM start without it
            optional = _dig(volume, (fields[0], "optional")) is True
            yield Edge(Ref.of(k, namespace, name), f"{prefix}.{'.'.join(fields)}", optional)


def network_attachment_ref(network_name: str, namespace: str) -> Ref:
    """Multus ``networkName`` is ``name`` (same namespace) or ``namespace/name``."""
    target_ns, _, name = network_name.rpartition("/")
    return Ref.of(kinds.NETWORK_ATTACHMENT_DEFINITION, target_ns or namespace, name)


def vmi_spec_edges(spec: Obj, namespace: str, prefix: str, templated_dvs: frozenset[str] = frozenset()
                   ) -> Iterator[Edge]:
    """Everything a VMI spec (or a VM/replica-set/pool template of one) references."""
    for i, volume in enumerate(spec.get("volumes") or []):
        yield from volume_edges(volume, namespace, f"{prefix}.volumes[{i}]", templated_dvs)
    for i, credential in enumerate(spec.get("accessCredentials") or []):
        for fields in _CREDENTIAL_SECRETS:
            name = _dig(credential, fields)
            if name:
                yield Edge(Ref.of(kinds.SECRET, namespace, name),
                           f"{prefix}.accessCredentials[{i}].{'.'.join(fields)}")
    for i, network in enumerate(spec.get("networks") or []):
        name = _dig(network, ("multus", "networkName"))
        if name:
            yield Edge(network_attachment_ref(name, namespace), f"{prefix}.networks[{i}].multus.networkName")


# --- per kind ------------------------------------------------------------------------------------------------

def _owned_vmi_edge(vm: Obj, index: Index) -> Iterator[Edge]:
    meta = _meta(vm)
    ref = Ref.of(kinds.VMI, meta.get("namespace", ""), meta.get("name", ""))
    if (vm.get("status") or {}).get("created"):
        yield Edge(ref, "status.created", optional=True)
        return
    vmi = index.get(ref)
    if vmi is not None and is_controlled_by(vmi, vm):
        yield Edge(ref, "metadata.ownerReferences (VirtualMachineInstance owned by this VM)")


def _persistent_state_edges(vm: Obj, index: Index, prefix: str) -> Iterator[Edge]:
    """The backend PVC holding a persistent TPM or EFI state.

    KubeVirt labels it ``persistent-state-for=<vm>``; releases before that named it ``persistent-state-for-<vm>``.
    The PVC appears only once the VM has started, so the edge is optional.
    """
    spec = ((vm.get("spec") or {}).get("template") or {}).get("spec") or {}
    domain = spec.get("domain") or {}
    users = [path for path, value in (
        (f"{prefix}.domain.devices.tpm.persistent", _dig(domain, ("devices", "tpm", "persistent"))),
        (f"{prefix}.domain.firmware.bootloader.efi.persistent",
         _dig(domain, ("firmware", "bootloader", "efi", "persistent"))),
    ) if value]
    if not users:
        return
    meta = _meta(vm)
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    labelled = sorted(_meta(p).get("name", "") for p in index.list(kinds.PVC, namespace)
                      if _labels(p).get(PERSISTENT_STATE_LABEL) == name)
    for path in users:
        if labelled:
            for pvc_name in labelled:
                yield Edge(Ref.of(kinds.PVC, namespace, pvc_name), f"{path} (label {PERSISTENT_STATE_LABEL})")
        else:
            yield Edge(Ref.of(kinds.PVC, namespace, f"{PERSISTENT_STATE_LABEL}-{name}"), path, optional=True)


def data_volume_template_edges(spec: Obj, namespace: str, prefix: str, templated: bool = False) -> Iterator[Edge]:
    """``spec.dataVolumeTemplates``: the DataVolumes the VM creates, their PVCs, and their DataSources."""
    for i, template in enumerate(spec.get("dataVolumeTemplates") or []):
        path = f"{prefix}.dataVolumeTemplates[{i}]"
        name = _meta(template).get("name")
        if name and not templated:
            yield Edge(Ref.of(kinds.DATA_VOLUME, namespace, name), f"{path}.metadata.name", optional=True)
            yield Edge(Ref.of(kinds.PVC, namespace, name), f"{path}.metadata.name", optional=True)
        yield from _source_ref_edges(template.get("spec") or {}, namespace, f"{path}.spec")


def _source_ref_edges(dv_spec: Obj, namespace: str, prefix: str) -> Iterator[Edge]:
    source_ref = dv_spec.get("sourceRef") or {}
    if source_ref.get("kind") == "DataSource" and source_ref.get("name"):
        yield Edge(Ref.of(kinds.DATA_SOURCE, source_ref.get("namespace") or namespace, source_ref["name"]),
                   f"{prefix}.sourceRef.name", optional=True)


def vm_edges(vm: Obj, index: Index) -> list[Edge]:
    spec, status = vm.get("spec") or {}, vm.get("status") or {}
    namespace = _meta(vm).get("namespace", "")
    template_spec = (spec.get("template") or {}).get("spec") or {}
    return [
        *_matcher_edges(spec, status, namespace, "spec"),
        *vmi_spec_edges(template_spec, namespace, "spec.template.spec"),
        *data_volume_template_edges(spec, namespace, "spec"),
        *_persistent_state_edges(vm, index, "spec.template.spec"),
        *_owned_vmi_edge(vm, index),
    ]


def launcher_pods_of(vmi: Obj, index: Index) -> list[Obj]:
    """virt-launcher pods of this VMI: labelled with its UID, so a stale pod of an earlier same-named VMI is not."""
    uid = _meta(vmi).get("uid")
    if not uid:
        return []
    return [p for p in index.list(kinds.POD, _meta(vmi).get("namespace", ""))
            if _labels(p).get(LAUNCHER_POD_LABEL) == uid]


def vmi_edges(vmi: Obj, index: Index) -> list[Edge]:
    namespace = _meta(vmi).get("namespace", "")
    pods = [Edge(Ref.of(kinds.POD, namespace, _meta(p)["name"]), f"metadata.uid (label {LAUNCHER_POD_LABEL})")
            for p in launcher_pods_of(vmi, index)]
    return [*vmi_spec_edges(vmi.get("spec") or {}, namespace, "spec"), *sorted(pods, key=lambda e: e.target)]


def is_launcher_pod(pod: Obj) -> bool:
    key, value = LAUNCHER_POD_KIND_LABEL
    return _labels(pod).get(key) == value or LAUNCHER_POD_LABEL in _labels(pod)


def is_hotplug_pod(pod: Obj) -> bool:
    key, value = HOTPLUG_POD_LABEL
    return _labels(pod).get(key) == value


def pod_edges(pod: Obj, index: Index) -> list[Edge]:
    """A launcher pod's hotplug attachment pods, which it owns."""
    if not is_launcher_pod(pod):
        return []
    namespace = _meta(pod).get("namespace", "")
    uid = _meta(pod).get("uid")
    return sorted((Edge(Ref.of(kinds.POD, namespace, _meta(p)["name"]),
                        "metadata.uid (ownerReference of hotplug attachment pod)")
                   for p in index.list(kinds.POD, namespace)
                   if is_hotplug_pod(p) and any(o.get("uid") == uid for o in _meta(p).get("ownerReferences") or [])),
                  key=lambda e: e.target)


def replica_set_vmis(rs: Obj, index: Index) -> list[tuple[Obj, str]]:
    """VMIs of a VMI replica set, with how each was found.

    The guide's label ``kubevirt.io/vmReplicaSet`` is not set by KubeVirt, which adopts VMIs matching
    ``spec.selector`` and marks them with a controller ownerReference: take all three, but never a VMI that another
    controller owns.
    """
    meta = _meta(rs)
    selector = selector_from_label_selector((rs.get("spec") or {}).get("selector"))
    found: list[tuple[Obj, str]] = []
    for vmi in index.list(kinds.VMI, meta.get("namespace", "")):
        controller = controller_of(vmi)
        if is_controlled_by(vmi, rs):
            found.append((vmi, "metadata.uid (controller ownerReference)"))
        elif controller is not None:
            continue
        elif _labels(vmi).get(REPLICA_SET_LABEL) == meta.get("name"):
            found.append((vmi, f"metadata.name (label {REPLICA_SET_LABEL})"))
        elif selector.matches(_labels(vmi)):
            found.append((vmi, "spec.selector"))
    return found


def vmirs_edges(rs: Obj, index: Index) -> list[Edge]:
    namespace = _meta(rs).get("namespace", "")
    template_spec = ((rs.get("spec") or {}).get("template") or {}).get("spec") or {}
    members = [Edge(Ref.of(kinds.VMI, namespace, _meta(v)["name"]), how) for v, how in replica_set_vmis(rs, index)]
    return [*vmi_spec_edges(template_spec, namespace, "spec.template.spec"), *sorted(members, key=lambda e: e.target)]


def pool_edges(pool: Obj, index: Index) -> list[Edge]:
    """A pool's VMs (it controls them) and what its VM template references.

    The pool suffixes each ``dataVolumeTemplates`` name per VM, so template volumes naming one are not real objects:
    those are reached through the VMs.
    """
    namespace = _meta(pool).get("namespace", "")
    vm_spec = (((pool.get("spec") or {}).get("virtualMachineTemplate") or {}).get("spec")) or {}
    prefix = "spec.virtualMachineTemplate.spec"
    templated = frozenset(_meta(t).get("name") for t in vm_spec.get("dataVolumeTemplates") or [])
    vms = sorted((Edge(Ref.of(kinds.VM, namespace, _meta(vm)["name"]), "metadata.uid (controller ownerReference)")
                  for vm in index.list(kinds.VM, namespace) if is_controlled_by(vm, pool)), key=lambda e: e.target)
    return [
        *_matcher_edges(vm_spec, {}, namespace, prefix),
        *vmi_spec_edges((vm_spec.get("template") or {}).get("spec") or {}, namespace, f"{prefix}.template.spec",
                        templated),
        *data_volume_template_edges(vm_spec, namespace, prefix, templated=True),
        *vms,
    ]


def data_volume_edges(dv: Obj, index: Index) -> list[Edge]:
    namespace = _meta(dv).get("namespace", "")
    return [Edge(Ref.of(kinds.PVC, namespace, _meta(dv).get("name", "")), "metadata.name", optional=True),
            *_source_ref_edges(dv.get("spec") or {}, namespace, "spec")]


EDGE_FUNCTIONS: dict[tuple[str, str], Callable[[Obj, Index], list[Edge]]] = {
    (kinds.VM.group, kinds.VM.kind): vm_edges,
    (kinds.VMI.group, kinds.VMI.kind): vmi_edges,
    (kinds.VMIRS.group, kinds.VMIRS.kind): vmirs_edges,
    (kinds.VMPOOL.group, kinds.VMPOOL.kind): pool_edges,
    (kinds.POD.group, kinds.POD.kind): pod_edges,
    (kinds.DATA_VOLUME.group, kinds.DATA_VOLUME.kind): data_volume_edges,
}


def edges_of(obj: Obj, index: Index) -> list[Edge]:
    """All dependencies of one object; kinds without dependencies have none."""
    group = (obj.get("apiVersion") or "").rpartition("/")[0]
    function = EDGE_FUNCTIONS.get((group, obj.get("kind", "")))
    if function is None:
        return []
    edges: list[Edge] = []
    for edge in function(obj, index):  # the same field may name the same object twice: keep the first
        if not any(e.target == edge.target and e.path == edge.path for e in edges):
            edges.append(edge)
    return edges

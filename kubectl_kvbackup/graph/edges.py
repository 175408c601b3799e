"""Graph edges: for each kind, a pure function from an object (and a read-only index) to its dependencies.

Each edge names the field that produced it, so a user can see why an object is in a backup. Edges whose target
may legitimately be absent (a garbage-collected DataVolume, a backend PVC of a VM never started) are optional;
a missing required target is a broken VM, reported by the walk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

from .. import kinds
from ..kinds import Kind
from ..refs import Ref
from ..selectors import Selector, selector_from_label_selector

Obj = dict[str, Any]

LAUNCHER_POD_LABEL = "kubevirt.io/created-by"
REPLICA_SET_LABEL = "kubevirt.io/vmReplicaSet"
HOTPLUG_POD_LABEL = ("kubevirt.io", "hotplug-disk")
LAUNCHER_POD_KIND_LABEL = ("kubevirt.io", "virt-launcher")
PERSISTENT_STATE_LABEL = "persistent-state-for"
#: the pool revision a pool's VM was made from (kubevirt staging/src/kubevirt.io/api/core/v1/types.go
#: VirtualMachinePoolRevisionName, set by pkg/virt-controller/watch/pool/pool.go injectPoolRevisionLabelsIntoVM)
POOL_REVISION_LABEL = "kubevirt.io/vm-pool-revision-name"
#: changed-block-tracking states in which KubeVirt (>= 1.7) keeps the tracking state on the backend PVC
#: (pkg/storage/backend-storage/backend-storage.go IsBackendStorageNeeded, pkg/storage/cbt/cbt.go HasCBTStateEnabled)
CBT_STATES_WITH_BACKEND_STATE = ("Initializing", "Enabled")


class Index(Protocol):
    """What edge functions may read: objects already known, never a live call of their own.

    ``labelled`` and ``owned_by`` answer what a scan of ``list`` would, in ``list`` order, from groupings built once
    per kind and namespace: edges asked for each of thousands of objects then cost a lookup, not a scan each.
    """

    def get(self, ref: Ref) -> Obj | None: ...

    def list(self, kind: Kind, namespace: str) -> list[Obj]: ...

    def labelled(self, kind: Kind, namespace: str, key: str, value: str) -> list[Obj]:
        """Objects of ``kind`` in ``namespace`` whose label ``key`` is ``value``."""
        ...

    def owned_by(self, kind: Kind, namespace: str, uid: str) -> list[Obj]:
        """Objects of ``kind`` in ``namespace`` with an ownerReference of UID ``uid``; ``""`` gives those with an
        ownerReference without a UID (written by hand: the API server requires one)."""
        ...


@dataclass(frozen=True)
class Edge:
    target: Ref
    path: str
    optional: bool = False


@dataclass(frozen=True)
class Uncaptured:
    """Data an object uses that no object of its graph holds, so no backup of it carries that data; ``advice`` says
    what to do about it."""

    path: str
    what: str
    advice: str


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


def _unique(objects: Iterable[Obj]) -> list[Obj]:
    """Each object once, in the order first seen (the same object may come from two lookups)."""
    seen: set[int] = set()
    result = []
    for obj in objects:
        if id(obj) not in seen:
            seen.add(id(obj))
            result.append(obj)
    return result


def controlled_by(kind: Kind, owner: Obj, index: Index) -> list[Obj]:
    """Objects of ``kind`` in ``owner``'s namespace whose controller is ``owner`` (``is_controlled_by``)."""
    meta = _meta(owner)
    namespace, uid = meta.get("namespace", ""), meta.get("uid")
    # is_controlled_by compares a reference without a UID, or any reference to an owner without one, by name
    candidates = (_unique([*index.owned_by(kind, namespace, uid), *index.owned_by(kind, namespace, "")]) if uid
                  else index.list(kind, namespace))
    return [obj for obj in candidates if is_controlled_by(obj, owner)]


def selector_candidates(selector: Selector, kind: Kind, namespace: str, index: Index) -> list[Obj]:
    """Objects of ``kind`` in ``namespace`` that ``selector`` may match: every match has one of the values of its
    first ``in`` (or ``=``) requirement, when it has one."""
    if selector.selects_nothing:
        return []
    for requirement in selector.requirements:
        if requirement.operator == "in":
            return [obj for value in requirement.values
                    for obj in index.labelled(kind, namespace, requirement.key, value)]
    return index.list(kind, namespace)


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


@dataclass(frozen=True)
class PerVMNames:
    """Names a VM pool rewrites for each of its VMs (kubevirt pkg/virt-controller/watch/pool/pool.go indexVMSpec):
    its template's references to them name no real object; each VM's own references are reached through the VM."""

    #: ``dataVolumeTemplates`` names, suffixed ``-<index>`` in the templates and in volumes naming them
    data_volumes: frozenset[str] = frozenset()
    #: ``nameGeneration.appendIndexToConfigMapRefs``: configMap volumes are suffixed too
    config_maps: bool = False
    #: ``nameGeneration.appendIndexToSecretRefs``: secret and cloud-init secret volumes are suffixed too
    secrets: bool = False

    def rewrites(self, volume_source: str) -> bool:
        if volume_source == "configMap":
            return self.config_maps
        return self.secrets and volume_source in ("secret", "cloudInitNoCloud", "cloudInitConfigDrive")


def volume_edges(volume: Obj, namespace: str, prefix: str, per_vm: PerVMNames = PerVMNames()) -> Iterator[Edge]:
    """Edges of one ``spec.volumes[i]`` entry; a pool template's ``per_vm`` names give none."""
    claim = _dig(volume, ("persistentVolumeClaim", "claimName"))
    if claim and claim not in per_vm.data_volumes:
        path = f"{prefix}.persistentVolumeClaim.claimName"
        yield Edge(Ref.of(kinds.PVC, namespace, claim), path)
        yield Edge(Ref.of(kinds.DATA_VOLUME, namespace, claim), path, optional=True)
    dv_name = _dig(volume, ("dataVolume", "name"))
    if dv_name and dv_name not in per_vm.data_volumes:
        path = f"{prefix}.dataVolume.name"
        yield Edge(Ref.of(kinds.DATA_VOLUME, namespace, dv_name), path, optional=True)
        yield Edge(Ref.of(kinds.PVC, namespace, dv_name), path)
    for fields, k in _VOLUME_REFERENCES:
        name = _dig(volume, fields)
        if name and not per_vm.rewrites(fields[0]):
            # a ConfigMap or Secret volume marked optional lets the VM start without it
            optional = _dig(volume, (fields[0], "optional")) is True
            yield Edge(Ref.of(k, namespace, name), f"{prefix}.{'.'.join(fields)}", optional)


def uncaptured_volume_data(spec: Obj, prefix: str) -> list[Uncaptured]:
    """``hostDisk`` volumes: a disk image in a node's file system, which no backup of Kubernetes objects holds."""
    return [Uncaptured(f"{prefix}.volumes[{i}].hostDisk.path",
                       f"hostDisk {_dig(volume, ('hostDisk', 'path')) or '(no path)'} on the node: data not captured",
                       "back it up on the node")
            for i, volume in enumerate(spec.get("volumes") or []) if isinstance(volume, dict) and "hostDisk" in volume]


def network_attachment_ref(network_name: str, namespace: str) -> Ref:
    """Multus ``networkName`` is ``name`` (same namespace) or ``namespace/name``."""
    target_ns, _, name = network_name.rpartition("/")
    return Ref.of(kinds.NETWORK_ATTACHMENT_DEFINITION, target_ns or namespace, name)


def vmi_spec_edges(spec: Obj, namespace: str, prefix: str, per_vm: PerVMNames = PerVMNames()) -> Iterator[Edge]:
    """Everything a VMI spec (or a VM/replica-set/pool template of one) references."""
    for i, volume in enumerate(spec.get("volumes") or []):
        yield from volume_edges(volume, namespace, f"{prefix}.volumes[{i}]", per_vm)
    kernel_pull_secret = _dig(spec, ("domain", "firmware", "kernelBoot", "container", "imagePullSecret"))
    if kernel_pull_secret:
        yield Edge(Ref.of(kinds.SECRET, namespace, kernel_pull_secret),
                   f"{prefix}.domain.firmware.kernelBoot.container.imagePullSecret")
    for i, credential in enumerate(spec.get("accessCredentials") or []):
        for fields in _CREDENTIAL_SECRETS:
            name = _dig(credential, fields)
            if name:
                yield Edge(Ref.of(kinds.SECRET, namespace, name),
                           f"{prefix}.accessCredentials[{i}].{'.'.join(fields)}")
    if spec.get("priorityClassName"):
        # virt-controller copies it onto the virt-launcher pod, which the API server refuses while the class is
        # missing: the VM never starts (kubevirt pkg/virt-controller/services/template.go)
        yield Edge(Ref.of(kinds.PRIORITY_CLASS, "", spec["priorityClassName"]), f"{prefix}.priorityClassName")
    for i, network in enumerate(spec.get("networks") or []):
        name = _dig(network, ("multus", "networkName"))
        if name:
            yield Edge(network_attachment_ref(name, namespace), f"{prefix}.networks[{i}].multus.networkName")


#: KubeVirt's hook sidecars, a JSON list in a VMI's annotations (kubevirt pkg/hooks/hooks.go HookSidecar): an entry
#: may name a ConfigMap holding the hook's script and a PVC mounted into the sidecar, both mounted into the launcher
#: pod by virt-controller (pkg/virt-controller/services/template.go), which does not start without them
HOOK_SIDECARS_ANNOTATION = "hooks.kubevirt.io/hookSidecars"


def hook_sidecar_edges(metadata: Obj, namespace: str, prefix: str) -> Iterator[Edge]:
    """The ConfigMaps and PVCs the hook sidecars of a VMI (or a template of one) mount. An annotation that is not
    such a list gives none: virt-controller refuses to start that VMI anyway."""
    text = ((metadata.get("annotations") or {}) if isinstance(metadata, dict) else {}).get(HOOK_SIDECARS_ANNOTATION)
    try:
        sidecars = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return
    path = f"{prefix}.annotations[{HOOK_SIDECARS_ANNOTATION}]"
    for i, sidecar in enumerate(sidecars if isinstance(sidecars, list) else []):
        config_map, claim = _dig(sidecar, ("configMap", "name")), _dig(sidecar, ("pvc", "name"))
        if isinstance(config_map, str) and config_map:
            yield Edge(Ref.of(kinds.CONFIG_MAP, namespace, config_map), f"{path}[{i}].configMap.name")
        if isinstance(claim, str) and claim:
            yield Edge(Ref.of(kinds.PVC, namespace, claim), f"{path}[{i}].pvc.name")
            yield Edge(Ref.of(kinds.DATA_VOLUME, namespace, claim), f"{path}[{i}].pvc.name", optional=True)


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


def _persistent_state_edges(obj: Obj, spec: Obj, index: Index, prefix: str) -> Iterator[Edge]:
    """The backend PVC of a VM or VMI: persistent TPM or EFI state, and from KubeVirt 1.7 the changed-block-tracking
    state (while ``status.changedBlockTracking.state`` is Initializing or Enabled; KubeVirt's own snapshots leave
    that alone out, but the tracking bitmaps a backup tool relies on live there).

    KubeVirt labels it ``persistent-state-for=<vm>``; releases before that named it ``persistent-state-for-<vm>``
    (pkg/storage/backend-storage/backend-storage.go PVCForVMI). The PVC appears only once the VM has started, so the
    edge is optional.
    """
    domain = spec.get("domain") or {}
    users = [path for path, value in (
        (f"{prefix}.domain.devices.tpm.persistent", _dig(domain, ("devices", "tpm", "persistent"))),
        (f"{prefix}.domain.firmware.bootloader.efi.persistent",
         _dig(domain, ("firmware", "bootloader", "efi", "persistent"))),
        ("status.changedBlockTracking.state",
         _dig(obj, ("status", "changedBlockTracking", "state")) in CBT_STATES_WITH_BACKEND_STATE),
    ) if value]
    if not users:
        return
    meta = _meta(obj)
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    labelled = sorted(_meta(p).get("name", "") for p in index.labelled(kinds.PVC, namespace, PERSISTENT_STATE_LABEL,
                                                                        name))
    for path in users:
        if labelled:
            for pvc_name in labelled:
                yield Edge(Ref.of(kinds.PVC, namespace, pvc_name), f"{path} (label {PERSISTENT_STATE_LABEL})")
        else:
            yield Edge(Ref.of(kinds.PVC, namespace, f"{PERSISTENT_STATE_LABEL}-{name}"), path, optional=True)


def _pool_revision_edge(vm: Obj) -> Iterator[Edge]:
    """The ControllerRevision holding the pool spec a pool's VM was made from: the pool controller compares VMs with
    it to decide which are outdated (pkg/virt-controller/watch/pool/pool.go isOutdatedVM)."""
    revision = _labels(vm).get(POOL_REVISION_LABEL)
    if revision:
        yield Edge(Ref.of(kinds.CONTROLLER_REVISION, _meta(vm).get("namespace", ""), revision),
                   f"metadata.labels[{POOL_REVISION_LABEL}]")


def data_volume_template_edges(spec: Obj, namespace: str, prefix: str, templated: bool = False) -> Iterator[Edge]:
    """``spec.dataVolumeTemplates``: the DataVolumes the VM creates, their PVCs, and what their sources need. Those
    needs are optional here: the DataVolume, once it exists, decides (``data_volume_edges``)."""
    for i, template in enumerate(spec.get("dataVolumeTemplates") or []):
        path = f"{prefix}.dataVolumeTemplates[{i}]"
        name = _meta(template).get("name")
        if name and not templated:
            yield Edge(Ref.of(kinds.DATA_VOLUME, namespace, name), f"{path}.metadata.name", optional=True)
            yield Edge(Ref.of(kinds.PVC, namespace, name), f"{path}.metadata.name", optional=True)
        yield from data_volume_spec_edges(template.get("spec") or {}, namespace, f"{path}.spec", optional=True)


#: (source, field, kind): the credentials and CA certificates a DataVolume source names, needed whenever CDI imports
#: again (CDI staging/src/kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1/types.go,
#: DataVolumeSourceHTTP/S3/GCS/Registry/ImageIO/VDDK)
_DATA_VOLUME_SOURCE_REFERENCES: tuple[tuple[str, str, Kind], ...] = (
    ("http", "secretRef", kinds.SECRET), ("http", "certConfigMap", kinds.CONFIG_MAP),
    ("s3", "secretRef", kinds.SECRET), ("s3", "certConfigMap", kinds.CONFIG_MAP),
    ("gcs", "secretRef", kinds.SECRET),
    ("registry", "secretRef", kinds.SECRET), ("registry", "certConfigMap", kinds.CONFIG_MAP),
    ("imageio", "secretRef", kinds.SECRET), ("imageio", "certConfigMap", kinds.CONFIG_MAP),
    ("vddk", "secretRef", kinds.SECRET), ("vddk", "certConfigMap", kinds.CONFIG_MAP),
    ("vddk", "extraArgs", kinds.CONFIG_MAP),
)


def data_volume_spec_edges(dv_spec: Obj, namespace: str, prefix: str, optional: bool) -> Iterator[Edge]:
    """A DataVolume spec's DataSource (optional: it may be gone once imported) and what its source needs."""
    source_ref = dv_spec.get("sourceRef") or {}
    if source_ref.get("kind") == "DataSource" and source_ref.get("name"):
        yield Edge(Ref.of(kinds.DATA_SOURCE, source_ref.get("namespace") or namespace, source_ref["name"]),
                   f"{prefix}.sourceRef.name", optional=True)
    source = dv_spec.get("source") or {}
    for kind_of_source, field, k in _DATA_VOLUME_SOURCE_REFERENCES:
        name = _dig(source, (kind_of_source, field))
        if name:
            yield Edge(Ref.of(k, namespace, name), f"{prefix}.source.{kind_of_source}.{field}", optional)
    for j, name in enumerate(_dig(source, ("http", "secretExtraHeaders")) or []):
        yield Edge(Ref.of(kinds.SECRET, namespace, name), f"{prefix}.source.http.secretExtraHeaders[{j}]", optional)


def vm_edges(vm: Obj, index: Index) -> list[Edge]:
    spec, status = vm.get("spec") or {}, vm.get("status") or {}
    namespace = _meta(vm).get("namespace", "")
    template_spec = (spec.get("template") or {}).get("spec") or {}
    return [
        *_matcher_edges(spec, status, namespace, "spec"),
        *vmi_spec_edges(template_spec, namespace, "spec.template.spec"),
        *hook_sidecar_edges((spec.get("template") or {}).get("metadata") or {}, namespace, "spec.template.metadata"),
        *data_volume_template_edges(spec, namespace, "spec"),
        *_persistent_state_edges(vm, template_spec, index, "spec.template.spec"),
        *_pool_revision_edge(vm),
        *_owned_vmi_edge(vm, index),
    ]


def launcher_pods_of(vmi: Obj, index: Index) -> list[Obj]:
    """virt-launcher pods of this VMI: labelled with its UID, so a stale pod of an earlier same-named VMI is not."""
    uid = _meta(vmi).get("uid")
    if not uid:
        return []
    return index.labelled(kinds.POD, _meta(vmi).get("namespace", ""), LAUNCHER_POD_LABEL, uid)


def vmi_edges(vmi: Obj, index: Index) -> list[Edge]:
    namespace = _meta(vmi).get("namespace", "")
    pods = [Edge(Ref.of(kinds.POD, namespace, _meta(p)["name"]), f"metadata.uid (label {LAUNCHER_POD_LABEL})")
            for p in launcher_pods_of(vmi, index)]
    spec = vmi.get("spec") or {}
    return [*vmi_spec_edges(spec, namespace, "spec"), *hook_sidecar_edges(_meta(vmi), namespace, "metadata"),
            *_persistent_state_edges(vmi, spec, index, "spec"), *sorted(pods, key=lambda e: e.target)]


def is_launcher_pod(pod: Obj) -> bool:
    key, value = LAUNCHER_POD_KIND_LABEL
    return _labels(pod).get(key) == value or LAUNCHER_POD_LABEL in _labels(pod)


def is_hotplug_pod(pod: Obj) -> bool:
    key, value = HOTPLUG_POD_LABEL
    return _labels(pod).get(key) == value


def pod_edges(pod: Obj, index: Index) -> list[Edge]:
    """A launcher pod's hotplug attachment pods, which it owns (by UID: a pod without one owns nothing we can tell)."""
    uid = _meta(pod).get("uid")
    if not is_launcher_pod(pod) or not uid:
        return []
    namespace = _meta(pod).get("namespace", "")
    return sorted((Edge(Ref.of(kinds.POD, namespace, _meta(p)["name"]),
                        "metadata.uid (ownerReference of hotplug attachment pod)")
                   for p in index.owned_by(kinds.POD, namespace, uid) if is_hotplug_pod(p)),
                  key=lambda e: e.target)


def replica_set_vmis(rs: Obj, index: Index) -> list[tuple[Obj, str]]:
    """VMIs of a VMI replica set, with how each was found.

    The guide's label ``kubevirt.io/vmReplicaSet`` is not set by KubeVirt, which adopts VMIs matching
    ``spec.selector`` and marks them with a controller ownerReference: take all three, but never a VMI that another
    controller owns.
    """
    meta = _meta(rs)
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    selector = selector_from_label_selector((rs.get("spec") or {}).get("selector"))
    found = [(vmi, "metadata.uid (controller ownerReference)") for vmi in controlled_by(kinds.VMI, rs, index)]
    for vmi in _unique([*index.labelled(kinds.VMI, namespace, REPLICA_SET_LABEL, name),
                        *selector_candidates(selector, kinds.VMI, namespace, index)]):
        if controller_of(vmi) is not None:
            continue  # another controller's VMI is never taken, even one the selector matches
        if _labels(vmi).get(REPLICA_SET_LABEL) == name:
            found.append((vmi, f"metadata.name (label {REPLICA_SET_LABEL})"))
        elif selector.matches(_labels(vmi)):
            found.append((vmi, "spec.selector"))
    return found


def vmirs_edges(rs: Obj, index: Index) -> list[Edge]:
    namespace = _meta(rs).get("namespace", "")
    template = (rs.get("spec") or {}).get("template") or {}
    members = [Edge(Ref.of(kinds.VMI, namespace, _meta(v)["name"]), how) for v, how in replica_set_vmis(rs, index)]
    return [*vmi_spec_edges(template.get("spec") or {}, namespace, "spec.template.spec"),
            *hook_sidecar_edges(template.get("metadata") or {}, namespace, "spec.template.metadata"),
            *sorted(members, key=lambda e: e.target)]


def pool_per_vm_names(pool: Obj) -> PerVMNames:
    """The names ``pool`` rewrites for each VM it creates."""
    spec = pool.get("spec") or {}
    vm_spec = (spec.get("virtualMachineTemplate") or {}).get("spec") or {}
    name_generation = spec.get("nameGeneration") or {}
    return PerVMNames(frozenset(_meta(t).get("name") for t in vm_spec.get("dataVolumeTemplates") or []),
                      name_generation.get("appendIndexToConfigMapRefs") is True,
                      name_generation.get("appendIndexToSecretRefs") is True)


def pool_edges(pool: Obj, index: Index) -> list[Edge]:
    """A pool's VMs (it controls them) and what its VM template references.

    Names the pool rewrites per VM (``pool_per_vm_names``) are no real objects in the template: each VM's own are
    reached through the VM.
    """
    namespace = _meta(pool).get("namespace", "")
    vm_spec = (((pool.get("spec") or {}).get("virtualMachineTemplate") or {}).get("spec")) or {}
    prefix = "spec.virtualMachineTemplate.spec"
    vms = sorted((Edge(Ref.of(kinds.VM, namespace, _meta(vm)["name"]), "metadata.uid (controller ownerReference)")
                  for vm in controlled_by(kinds.VM, pool, index)), key=lambda e: e.target)
    return [
        *_matcher_edges(vm_spec, {}, namespace, prefix),
        *vmi_spec_edges((vm_spec.get("template") or {}).get("spec") or {}, namespace, f"{prefix}.template.spec",
                        pool_per_vm_names(pool)),
        *hook_sidecar_edges((vm_spec.get("template") or {}).get("metadata") or {}, namespace,
                            f"{prefix}.template.metadata"),
        *data_volume_template_edges(vm_spec, namespace, prefix, templated=True),
        *vms,
    ]


def data_volume_succeeded(dv: Obj) -> bool:
    """CDI finished populating the DataVolume's claim (import, clone or upload)."""
    return (dv.get("status") or {}).get("phase") == "Succeeded"


def data_volume_edges(dv: Obj, index: Index) -> list[Edge]:
    namespace = _meta(dv).get("namespace", "")
    # once imported, CDI needs the source's credentials only to import again: their absence breaks nothing
    return [Edge(Ref.of(kinds.PVC, namespace, _meta(dv).get("name", "")), "metadata.name", optional=True),
            *data_volume_spec_edges(dv.get("spec") or {}, namespace, "spec", optional=data_volume_succeeded(dv))]


EDGE_FUNCTIONS: dict[tuple[str, str], Callable[[Obj, Index], list[Edge]]] = {
    (kinds.VM.group, kinds.VM.kind): vm_edges,
    (kinds.VMI.group, kinds.VMI.kind): vmi_edges,
    (kinds.VMIRS.group, kinds.VMIRS.kind): vmirs_edges,
    (kinds.VMPOOL.group, kinds.VMPOOL.kind): pool_edges,
    (kinds.POD.group, kinds.POD.kind): pod_edges,
    (kinds.DATA_VOLUME.group, kinds.DATA_VOLUME.kind): data_volume_edges,
}


#: (source, kind): a DataVolume cloned from another claim or from a VolumeSnapshot, perhaps in another namespace
#: (CDI staging/src/kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1/types.go, DataVolumeSourcePVC,
#: DataVolumeSourceSnapshot)
_CLONE_SOURCES: tuple[tuple[str, Kind], ...] = (("pvc", kinds.PVC), ("snapshot", kinds.VOLUME_SNAPSHOT))


def unfinished_clone_sources(dv: Obj) -> list[Uncaptured]:
    """The source of a clone that has not finished. A restore clones again (the claim holds no data yet, so it is
    not restored), from a source the graph does not follow: golden images shared by many VMs, which a backup must
    neither copy nor snapshot each time. Once the clone succeeded its source no longer matters."""
    if data_volume_succeeded(dv):
        return []
    source = (dv.get("spec") or {}).get("source") or {}
    notes = []
    for field, kind in _CLONE_SOURCES:
        name = _dig(source, (field, "name"))
        if name:
            namespace = _dig(source, (field, "namespace")) or _meta(dv).get("namespace", "")
            notes.append(Uncaptured(f"spec.source.{field}.name",
                                    f"{Ref.of(kind, namespace, name)}, the source of a clone not finished",
                                    "it must exist where the bundle is restored, for CDI to clone it again"))
    return notes


def uncaptured_data(obj: Obj) -> list[Uncaptured]:
    """What a VM or VMI uses that no backup of objects carries (a VM's own VMI uses the VM's: the VM reports it), and
    the sources of a DataVolume's unfinished clone."""
    kind = ((obj.get("apiVersion") or "").rpartition("/")[0], obj.get("kind", ""))
    if kind == (kinds.DATA_VOLUME.group, kinds.DATA_VOLUME.kind):
        return unfinished_clone_sources(obj)
    if kind == (kinds.VM.group, kinds.VM.kind):
        return uncaptured_volume_data(((obj.get("spec") or {}).get("template") or {}).get("spec") or {},
                                      "spec.template.spec")
    if kind == (kinds.VMI.group, kinds.VMI.kind) and (controller_of(obj) or {}).get("kind") != kinds.VM.kind:
        return uncaptured_volume_data(obj.get("spec") or {}, "spec")
    return []


def edges_of(obj: Obj, index: Index) -> list[Edge]:
    """All dependencies of one object; kinds without dependencies have none."""
    group = (obj.get("apiVersion") or "").rpartition("/")[0]
    function = EDGE_FUNCTIONS.get((group, obj.get("kind", "")))
    if function is None:
        return []
    edges: list[Edge] = []
    seen: set[tuple[Ref, str]] = set()
    for edge in function(obj, index):  # the same field may name the same object twice: keep the first
        if (edge.target, edge.path) not in seen:
            seen.add((edge.target, edge.path))
            edges.append(edge)
    return edges

"""Every kind kvbackup knows, and how users may name it on the command line.

The table gives the version used when no cluster is there to ask (offline manifests, rendering);
against a cluster, discovery decides the served version (see ``sources.ClusterSource``).
"""

from __future__ import annotations

from typing import NamedTuple


class Kind(NamedTuple):
    """A REST resource and its kind. A named tuple rather than a dataclass: the parser and TAB completion load this
    module, and ``dataclasses`` alone (with ``inspect``) takes longer to import than the rest of completion."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def resource(self) -> str:
        """``plural.group`` as kubectl prints it (``virtualmachines.kubevirt.io``, ``pods``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


VM = Kind("kubevirt.io", "v1", "VirtualMachine", "virtualmachines", short_names=("vm", "vms"))
VMI = Kind("kubevirt.io", "v1", "VirtualMachineInstance", "virtualmachineinstances", short_names=("vmi", "vmis"))
VMIRS = Kind("kubevirt.io", "v1", "VirtualMachineInstanceReplicaSet", "virtualmachineinstancereplicasets",
             short_names=("vmirs", "vmirss"))
VMPOOL = Kind("pool.kubevirt.io", "v1alpha1", "VirtualMachinePool", "virtualmachinepools",
              short_names=("vmpool", "vmpools"))
INSTANCETYPE = Kind("instancetype.kubevirt.io", "v1beta1", "VirtualMachineInstancetype",
                    "virtualmachineinstancetypes", short_names=("vminstancetype", "vminstancetypes", "vmf", "vmfs"))
CLUSTER_INSTANCETYPE = Kind("instancetype.kubevirt.io", "v1beta1", "VirtualMachineClusterInstancetype",
                            "virtualmachineclusterinstancetypes", namespaced=False,
                            short_names=("vmclusterinstancetype", "vmclusterinstancetypes", "vmcf", "vmcfs"))
PREFERENCE = Kind("instancetype.kubevirt.io", "v1beta1", "VirtualMachinePreference", "virtualmachinepreferences",
                  short_names=("vmpref", "vmprefs", "vmp", "vmps"))
CLUSTER_PREFERENCE = Kind("instancetype.kubevirt.io", "v1beta1", "VirtualMachineClusterPreference",
                          "virtualmachineclusterpreferences", namespaced=False,
                          short_names=("vmcpref", "vmcprefs", "vmcp", "vmcps"))
CONTROLLER_REVISION = Kind("apps", "v1", "ControllerRevision", "controllerrevisions")
POD = Kind("", "v1", "Pod", "pods", short_names=("po",))
PVC = Kind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short_names=("pvc",))
CONFIG_MAP = Kind("", "v1", "ConfigMap", "configmaps", short_names=("cm",))
SECRET = Kind("", "v1", "Secret", "secrets")
SERVICE_ACCOUNT = Kind("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",))
NAMESPACE = Kind("", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",))
DATA_VOLUME = Kind("cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes", short_names=("dv", "dvs"))
DATA_SOURCE = Kind("cdi.kubevirt.io", "v1beta1", "DataSource", "datasources", short_names=("das",))
NETWORK_ATTACHMENT_DEFINITION = Kind("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition",
                                     "network-attachment-definitions", short_names=("net-attach-def",))
VOLUME_SNAPSHOT = Kind("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots",
                       short_names=("vs",))
PRIORITY_CLASS = Kind("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", namespaced=False,
                      short_names=("pc",))
VOLUME_SNAPSHOT_CONTENT = Kind("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent", "volumesnapshotcontents",
                               namespaced=False, short_names=("vsc", "vscs"))

ALL_KINDS: tuple[Kind, ...] = (
    VM, VMI, VMIRS, VMPOOL, INSTANCETYPE, CLUSTER_INSTANCETYPE, PREFERENCE, CLUSTER_PREFERENCE,
    CONTROLLER_REVISION, POD, PVC, CONFIG_MAP, SECRET, SERVICE_ACCOUNT, NAMESPACE, DATA_VOLUME, DATA_SOURCE,
    NETWORK_ATTACHMENT_DEFINITION, VOLUME_SNAPSHOT, VOLUME_SNAPSHOT_CONTENT, PRIORITY_CLASS,
)

#: Kinds a graph may start from: the things KubeVirt runs.
ROOT_KINDS: tuple[Kind, ...] = (VM, VMI, VMIRS, VMPOOL)

_BY_GROUP_KIND = {(k.group, k.kind): k for k in ALL_KINDS}


class UnknownKindError(LookupError):
    pass


def kind_for(group: str, kind: str) -> Kind:
    """The Kind for a (group, Kind) pair, as found in an object's apiVersion/kind."""
    try:
        return _BY_GROUP_KIND[(group, kind)]
    except KeyError:
        raise UnknownKindError(f'the server doesn\'t have a resource type "{kind}" in group "{group}"') from None


def known(group: str, kind: str) -> bool:
    return (group, kind) in _BY_GROUP_KIND


def _names_of(k: Kind) -> set[str]:
    names = {k.singular, k.plural, *k.short_names}
    if k.group:
        names |= {f"{n}.{k.group}" for n in (k.singular, k.plural)}
    return names


def resolve_type(text: str, among: tuple[Kind, ...] = ALL_KINDS) -> Kind:
    """Resolve a kubectl-style TYPE (``vm``, ``virtualmachines.kubevirt.io``, ``VirtualMachine``) to a Kind."""
    wanted = text.strip().lower()
    for k in among:
        if wanted in _names_of(k):
            return k
    choices = ", ".join(sorted(k.short_names[0] if k.short_names else k.singular for k in among))
    raise UnknownKindError(f'the server doesn\'t have a resource type "{text}" (kvbackup knows: {choices})')


def group_of(api_version: str) -> str:
    """``kubevirt.io/v1`` -> ``kubevirt.io``; ``v1`` -> ``""`` (the core group)."""
    return api_version.rpartition("/")[0]

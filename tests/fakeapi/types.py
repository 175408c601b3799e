"""The resource types the fake API server serves, as discovery shows them, and the registry tests can change."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable

Obj = dict[str, Any]


#: what kube-apiserver takes for true in a query (Go's strconv.ParseBool, through apimachinery's
#: runtime/conversion.go): the Python client before 37 sends "True"
GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    # "status" makes the main resource ignore status writes and the subresource ignore everything else
    subresources: tuple[str, ...] = ()
    builtin: bool = False  # built-in kinds accept strategic-merge patches; custom resources do not
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group``, as kube-apiserver names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def _core(kind: str, plural: str, namespaced: bool = True, short: tuple[str, ...] = (),
          sub: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType("", "v1", kind, plural, namespaced, short, sub, builtin=True)


def _builtin(group: str, kind: str, plural: str, namespaced: bool = True, short: tuple[str, ...] = (),
             sub: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType(group, "v1", kind, plural, namespaced, short, sub, builtin=True)


def _crd(group: str, version: str, kind: str, plural: str, short: tuple[str, ...], namespaced: bool = True,
         sub: tuple[str, ...] = ("status",)) -> ResourceType:
    return ResourceType(group, version, kind, plural, namespaced, short, sub)


STATUS = ("status",)
RBAC = "rbac.authorization.k8s.io"
INSTANCETYPE = "instancetype.kubevirt.io"

DEFAULT_TYPES: tuple[ResourceType, ...] = (
    _core("Namespace", "namespaces", False, ("ns",), ("finalize", "status")),
    _core("Pod", "pods", short=("po",), sub=("binding", "eviction", "log", "status")),
    _core("PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), sub=STATUS),
    _core("PersistentVolume", "persistentvolumes", False, ("pv",), STATUS),
    _core("ConfigMap", "configmaps", short=("cm",)),
    _core("Secret", "secrets"),
    _core("ServiceAccount", "serviceaccounts", short=("sa",), sub=("token",)),
    _core("Service", "services", short=("svc",), sub=STATUS),
    _core("Event", "events", short=("ev",)),
    _builtin("apps", "ControllerRevision", "controllerrevisions"),
    _builtin("apps", "Deployment", "deployments", short=("deploy",), sub=("scale", "status")),
    _builtin(RBAC, "Role", "roles"),
    _builtin(RBAC, "RoleBinding", "rolebindings"),
    _builtin(RBAC, "ClusterRole", "clusterroles", False),
    _builtin(RBAC, "ClusterRoleBinding", "clusterrolebindings", False),
    _builtin("admissionregistration.k8s.io", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", False),
    _builtin("scheduling.k8s.io", "PriorityClass", "priorityclasses", False, ("pc",)),
    _builtin("networking.k8s.io", "NetworkPolicy", "networkpolicies", short=("netpol",), sub=()),
    _builtin("policy", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",), sub=STATUS),
    _builtin("apiextensions.k8s.io", "CustomResourceDefinition", "customresourcedefinitions", False,
             ("crd", "crds"), STATUS),
    _crd("kubevirt.io", "v1", "VirtualMachine", "virtualmachines", ("vm", "vms")),
    # KubeVirt's VMI CRD has no status subresource: virt-handler writes status through the main resource
    _crd("kubevirt.io", "v1", "VirtualMachineInstance", "virtualmachineinstances", ("vmi", "vmis"), sub=()),
    _crd("kubevirt.io", "v1", "VirtualMachineInstanceReplicaSet", "virtualmachineinstancereplicasets",
              ("vmirs", "vmirss"), sub=("scale", "status")),
    _crd("kubevirt.io", "v1", "VirtualMachineInstanceMigration", "virtualmachineinstancemigrations",
              ("vmim", "vmims")),
    _crd("pool.kubevirt.io", "v1alpha1", "VirtualMachinePool", "virtualmachinepools", ("vmpool", "vmpools"),
              sub=("scale", "status")),
    _crd(INSTANCETYPE, "v1beta1", "VirtualMachineInstancetype", "virtualmachineinstancetypes",
              ("vminstancetype", "vminstancetypes", "vmf", "vmfs"), sub=()),
    _crd(INSTANCETYPE, "v1beta1", "VirtualMachineClusterInstancetype", "virtualmachineclusterinstancetypes",
              ("vmclusterinstancetype", "vmclusterinstancetypes", "vmcf", "vmcfs"), False, ()),
    _crd(INSTANCETYPE, "v1beta1", "VirtualMachinePreference", "virtualmachinepreferences",
              ("vmpref", "vmprefs", "vmp", "vmps"), sub=()),
    _crd(INSTANCETYPE, "v1beta1", "VirtualMachineClusterPreference", "virtualmachineclusterpreferences",
              ("vmcpref", "vmcprefs", "vmcp", "vmcps"), False, ()),
    _crd("cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes", ("dv", "dvs")),
    _crd("cdi.kubevirt.io", "v1beta1", "DataSource", "datasources", ("das",)),
    _crd("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots", ("vs",)),
    _crd("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent", "volumesnapshotcontents", ("vsc", "vscs"), False),
    _crd("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass", "volumesnapshotclasses", ("vsclass", "vsclasses"),
              False, ()),
    _crd("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition", "network-attachment-definitions",
              ("net-attach-def",), sub=()),
)

#: KubeVirt's aggregated API: only subresources of VMIs, no storage of its own.
SUBRESOURCE_GROUP = "subresources.kubevirt.io"
SUBRESOURCE_VERSION = "v1"
VMI_SUBRESOURCES = ("freeze", "unfreeze")


class Registry:
    """Which types exist (to store objects) and which the server serves (tests hide groups to mimic clusters)."""

    def __init__(self, types: Iterable[ResourceType]):
        self._lock = threading.Lock()
        self._types: dict[tuple[str, str], ResourceType] = {}
        self._hidden: set[str] = set()
        for rt in types:
            self.register(rt)

    def register(self, rt: ResourceType) -> None:
        with self._lock:
            self._types[(rt.group, rt.kind)] = rt
            self._hidden.discard(rt.group)

    def remove_group(self, group: str) -> None:
        with self._lock:
            self._hidden.add(group)

    def all(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types.values())

    def served(self) -> list[ResourceType]:
        with self._lock:
            return [rt for rt in self._types.values() if rt.group not in self._hidden]

    def serves_group(self, group: str) -> bool:
        if group == SUBRESOURCE_GROUP:
            vmi = self.named("kubevirt.io", "VirtualMachineInstance")
            with self._lock:
                return vmi is not None and not {group, "kubevirt.io"} & self._hidden
        return any(rt.group == group for rt in self.served())

    def by_plural(self, group: str, version: str, plural: str) -> ResourceType | None:
        for rt in self.served():
            if (rt.group, rt.version, rt.plural) == (group, version, plural):
                return rt
        return None

    def named(self, group: str, kind_or_plural: str) -> ResourceType | None:
        """The type of ``group`` whose kind, plural or singular is ``kind_or_plural`` (served or not)."""
        wanted = kind_or_plural.lower()
        for rt in self.all():
            if rt.group == group and wanted in (rt.kind.lower(), rt.plural):
                return rt
        return None

    def of_object(self, obj: Obj) -> ResourceType:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        rt = self.named(api_version.rpartition("/")[0], kind)
        if rt is None or rt.kind != kind:
            raise ValueError(f"the fake API server does not know {api_version} {kind}")
        return rt

"""The resource types the fake API server serves, as discovery shows them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ("status",)
    builtin: bool = False  # built-in kinds accept strategic-merge patches; custom resources do not
    verbs: tuple[str, ...] = field(default=("create", "delete", "get", "list", "patch", "update", "watch"))

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group``, as kube-apiserver names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _core(kind: str, plural: str, namespaced: bool = True, short: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType("", "v1", kind, plural, namespaced, short, builtin=True)


def _builtin(group: str, version: str, kind: str, plural: str, namespaced: bool = True,
             short: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType(group, version, kind, plural, namespaced, short, builtin=True)


DEFAULT_TYPES: tuple[ResourceType, ...] = (
    _core("Namespace", "namespaces", False, ("ns",)),
    _core("Pod", "pods", short=("po",)),
    _core("PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",)),
    _core("PersistentVolume", "persistentvolumes", False, ("pv",)),
    _core("ConfigMap", "configmaps", short=("cm",)),
    _core("Secret", "secrets"),
    _core("ServiceAccount", "serviceaccounts", short=("sa",)),
    _core("Service", "services", short=("svc",)),
    _core("Event", "events", short=("ev",)),
    _builtin("apps", "v1", "ControllerRevision", "controllerrevisions"),
    _builtin("apps", "v1", "Deployment", "deployments", short=("deploy",)),
    _builtin("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    _builtin("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration",
             "mutatingwebhookconfigurations", False),
    _builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",)),
    _builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False,
             ("crd", "crds")),
    ResourceType("kubevirt.io", "v1", "VirtualMachine", "virtualmachines", short_names=("vm", "vms")),
    ResourceType("kubevirt.io", "v1", "VirtualMachineInstance", "virtualmachineinstances",
                 short_names=("vmi", "vmis")),
    ResourceType("kubevirt.io", "v1", "VirtualMachineInstanceReplicaSet", "virtualmachineinstancereplicasets",
                 short_names=("vmirs", "vmirss")),
    ResourceType("kubevirt.io", "v1", "VirtualMachineInstanceMigration", "virtualmachineinstancemigrations",
                 short_names=("vmim",)),
    ResourceType("pool.kubevirt.io", "v1alpha1", "VirtualMachinePool", "virtualmachinepools",
                 short_names=("vmpool", "vmpools")),
    ResourceType("instancetype.kubevirt.io", "v1beta1", "VirtualMachineInstancetype",
                 "virtualmachineinstancetypes", short_names=("vminstancetype", "vmf")),
    ResourceType("instancetype.kubevirt.io", "v1beta1", "VirtualMachineClusterInstancetype",
                 "virtualmachineclusterinstancetypes", False, ("vmclusterinstancetype", "vmcf")),
    ResourceType("instancetype.kubevirt.io", "v1beta1", "VirtualMachinePreference", "virtualmachinepreferences",
                 short_names=("vmpref", "vmp")),
    ResourceType("instancetype.kubevirt.io", "v1beta1", "VirtualMachineClusterPreference",
                 "virtualmachineclusterpreferences", False, ("vmcpref", "vmcp")),
    ResourceType("cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes", short_names=("dv", "dvs")),
    ResourceType("cdi.kubevirt.io", "v1beta1", "DataSource", "datasources", short_names=("das",)),
    ResourceType("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots", short_names=("vs",)),
    ResourceType("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass", "volumesnapshotclasses", False,
                 ("vsclass",)),
    ResourceType("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition", "network-attachment-definitions",
                 short_names=("net-attach-def",), subresources=()),
)

#: KubeVirt's aggregated API: only subresources of VMIs, no storage of its own.
SUBRESOURCE_GROUP = "subresources.kubevirt.io"
SUBRESOURCE_VERSION = "v1"
VMI_SUBRESOURCES = ("freeze", "unfreeze")

"""One test per graph edge: each fails if its edge is removed. Decoys must stay out."""

from __future__ import annotations

import pytest
import yaml

from kubectl_kvbackup import kinds
from kubectl_kvbackup.bundle import read_bundle
from kubectl_kvbackup.cli.main import main
from kubectl_kvbackup.graph.walk import walk
from kubectl_kvbackup.refs import Ref
from kubectl_kvbackup.sources import ManifestSource

from .helpers import example_objects, obj


def graph_of(kind: kinds.Kind, name: str, objects=None, namespace: str = "demo"):
    source = ManifestSource(objects if objects is not None else example_objects())
    ref = Ref.of(kind, namespace, name)
    return walk([(ref, source.get(ref))], source)


def edge_set(graph):
    return {(e.source, e.target, e.path, e.optional) for e in graph.edges}


VM = Ref.of(kinds.VM, "demo", "fedora")
VMI = Ref.of(kinds.VMI, "demo", "fedora")
T = "spec.template.spec"

FEDORA_EDGES = [
    # (source, target kind, target namespace, target name, path, optional)
    (VM, kinds.CLUSTER_INSTANCETYPE, "", "u1.medium", "spec.instancetype.name", False),
    (VM, kinds.CONTROLLER_REVISION, "demo", "fedora-u1.medium-v1beta1-3c1d5f-1",
     "status.instancetypeRef.controllerRevisionRef.name", False),
    (VM, kinds.PREFERENCE, "demo", "fedora-pref", "spec.preference.name", False),
    (VM, kinds.CONTROLLER_REVISION, "demo", "fedora-fedora-pref-v1beta1-9a8b7c-1",
     "status.preferenceRef.controllerRevisionRef.name", False),
    (VM, kinds.DATA_VOLUME, "demo", "fedora-root", f"{T}.volumes[0].dataVolume.name", True),
    (VM, kinds.PVC, "demo", "fedora-root", f"{T}.volumes[0].dataVolume.name", False),
    (VM, kinds.PVC, "demo", "fedora-data", f"{T}.volumes[1].persistentVolumeClaim.claimName", False),
    (VM, kinds.DATA_VOLUME, "demo", "fedora-data", f"{T}.volumes[1].persistentVolumeClaim.claimName", True),
    (VM, kinds.SECRET, "demo", "fedora-userdata", f"{T}.volumes[2].cloudInitNoCloud.secretRef.name", False),
    (VM, kinds.SECRET, "demo", "fedora-networkdata", f"{T}.volumes[2].cloudInitNoCloud.networkDataSecretRef.name",
     False),
    (VM, kinds.CONFIG_MAP, "demo", "fedora-app-config", f"{T}.volumes[3].configMap.name", False),
    (VM, kinds.SECRET, "demo", "fedora-app-secret", f"{T}.volumes[4].secret.secretName", False),
    (VM, kinds.SERVICE_ACCOUNT, "demo", "fedora-sa", f"{T}.volumes[5].serviceAccount.serviceAccountName", False),
    (VM, kinds.PVC, "demo", "fedora-memdump", f"{T}.volumes[6].memoryDump.claimName", False),
    (VM, kinds.SECRET, "demo", "registry-pull", f"{T}.volumes[7].containerDisk.imagePullSecret", False),
    (VM, kinds.SECRET, "demo", "fedora-ssh-keys",
     f"{T}.accessCredentials[0].sshPublicKey.source.secret.secretName", False),
    (VM, kinds.SECRET, "demo", "fedora-passwords",
     f"{T}.accessCredentials[1].userPassword.source.secret.secretName", False),
    (VM, kinds.NETWORK_ATTACHMENT_DEFINITION, "net-system", "vlan10", f"{T}.networks[1].multus.networkName", False),
    (VM, kinds.DATA_VOLUME, "demo", "fedora-root", "spec.dataVolumeTemplates[0].metadata.name", True),
    (VM, kinds.DATA_SOURCE, "os-images", "fedora", "spec.dataVolumeTemplates[0].spec.sourceRef.name", True),
    (VM, kinds.PVC, "demo", "persistent-state-for-fedora-8wq2n",
     f"{T}.domain.devices.tpm.persistent (label persistent-state-for)", False),
    (VM, kinds.PVC, "demo", "persistent-state-for-fedora-8wq2n",
     f"{T}.domain.firmware.bootloader.efi.persistent (label persistent-state-for)", False),
    (VM, kinds.VMI, "demo", "fedora", "status.created", True),
    (VMI, kinds.POD, "demo", "virt-launcher-fedora-x7k2p", "metadata.uid (label kubevirt.io/created-by)", False),
    (VMI, kinds.PVC, "demo", "fedora-hotplug", "spec.volumes[2].persistentVolumeClaim.claimName", False),
    (Ref.of(kinds.POD, "demo", "virt-launcher-fedora-x7k2p"), kinds.POD, "demo", "hp-volume-fedora-4xk9s",
     "metadata.uid (ownerReference of hotplug attachment pod)", False),
]


@pytest.mark.parametrize("source,kind,namespace,name,path,optional", FEDORA_EDGES,
                         ids=[e[4] + "->" + e[3] for e in FEDORA_EDGES])
def test_fedora_vm_edge(source, kind, namespace, name, path, optional):
    graph = graph_of(kinds.VM, "fedora")
    assert (source, Ref.of(kind, namespace, name), path, optional) in edge_set(graph)
    assert graph.found(Ref.of(kind, namespace, name)) or optional


WINDOWS = Ref.of(kinds.VM, "demo", "windows")
WINDOWS_EDGES = [
    (kinds.INSTANCETYPE, "demo", "win-large", "spec.instancetype.name"),
    (kinds.CONTROLLER_REVISION, "demo", "windows-win-large-v1beta1-77aa1-1", "spec.instancetype.revisionName"),
    (kinds.PVC, "demo", "win-base", f"{T}.volumes[0].ephemeral.persistentVolumeClaim.claimName"),
    (kinds.SECRET, "demo", "win-unattend", f"{T}.volumes[1].sysprep.secret.name"),
    (kinds.CONFIG_MAP, "demo", "win-sysprep-extra", f"{T}.volumes[2].sysprep.configMap.name"),
    (kinds.NETWORK_ATTACHMENT_DEFINITION, "demo", "lan", f"{T}.networks[0].multus.networkName"),
]


@pytest.mark.parametrize("kind,namespace,name,path", WINDOWS_EDGES, ids=[e[3] for e in WINDOWS_EDGES])
def test_windows_vm_edge(kind, namespace, name, path):
    graph = graph_of(kinds.VM, "windows")
    assert (WINDOWS, Ref.of(kind, namespace, name), path, False) in edge_set(graph)
    assert graph.found(Ref.of(kind, namespace, name))


def test_stopped_vm_has_no_vmi_edge_and_optional_backend_pvc():
    vm = obj("kubevirt.io/v1", "VirtualMachine", "tpm-vm", metadata={"uid": "u-tpm"},
             spec={"template": {"spec": {"domain": {"devices": {"tpm": {"persistent": True}}}}}})
    graph = graph_of(kinds.VM, "tpm-vm", [vm])
    legacy = Ref.of(kinds.PVC, "demo", "persistent-state-for-tpm-vm")
    assert (Ref.of(kinds.VM, "demo", "tpm-vm"), legacy, f"{T}.domain.devices.tpm.persistent", True) in edge_set(graph)
    assert not any(e.target.kind == "VirtualMachineInstance" for e in graph.edges)
    assert graph.missing_required() == []


def test_vm_without_status_created_finds_its_owned_vmi_but_not_a_foreign_one():
    vm = obj("kubevirt.io/v1", "VirtualMachine", "a", metadata={"uid": "vm-a"}, spec={"template": {"spec": {}}})
    owned = obj("kubevirt.io/v1", "VirtualMachineInstance", "a", metadata={
        "uid": "vmi-a", "ownerReferences": [{"kind": "VirtualMachine", "name": "a", "uid": "vm-a", "controller": True}]})
    assert Ref.of(kinds.VMI, "demo", "a") in graph_of(kinds.VM, "a", [vm, owned]).objects
    foreign = obj("kubevirt.io/v1", "VirtualMachineInstance", "a", metadata={"uid": "vmi-b"})
    assert Ref.of(kinds.VMI, "demo", "a") not in graph_of(kinds.VM, "a", [vm, foreign]).objects


def test_lowercase_and_plural_matcher_kinds_are_accepted_as_kubevirt_does():
    vm = obj("kubevirt.io/v1", "VirtualMachine", "a", spec={
        "instancetype": {"kind": "virtualmachineinstancetypes", "name": "it"},
        "preference": {"kind": "VirtualMachineClusterPreference", "name": "cp"}, "template": {"spec": {}}})
    graph = graph_of(kinds.VM, "a", [vm])
    assert Ref.of(kinds.INSTANCETYPE, "demo", "it") in graph.objects
    assert Ref.of(kinds.CLUSTER_PREFERENCE, "", "cp") in graph.objects


def test_fedora_graph_excludes_decoys():
    graph = graph_of(kinds.VM, "fedora")
    for decoy in (Ref.of(kinds.POD, "demo", "virt-launcher-fedora-old9q"),
                  Ref.of(kinds.CONFIG_MAP, "demo", "unrelated-config"),
                  Ref.of(kinds.SECRET, "demo", "unrelated-secret"),
                  Ref.of(kinds.VM, "demo", "windows")):
        assert decoy not in graph.objects


RS = Ref.of(kinds.VMIRS, "demo", "web")


def test_replica_set_vmis_by_owner_reference_and_selector():
    graph = graph_of(kinds.VMIRS, "web")
    edges = edge_set(graph)
    assert (RS, Ref.of(kinds.VMI, "demo", "webzq7hx"), "metadata.uid (controller ownerReference)", False) in edges
    assert (RS, Ref.of(kinds.VMI, "demo", "webm2k9d"), "spec.selector", False) in edges
    assert (RS, Ref.of(kinds.CONFIG_MAP, "demo", "web-config"), f"{T}.volumes[1].configMap.name", False) in edges


def test_replica_set_vmis_by_the_guides_label_and_never_another_replica_sets():
    objects = example_objects() + [
        obj("kubevirt.io/v1", "VirtualMachineInstance", "labelled", metadata={
            "labels": {"kubevirt.io/vmReplicaSet": "web"}}),
        obj("kubevirt.io/v1", "VirtualMachineInstance", "other-rs-vmi", metadata={
            "labels": {"app": "web"},
            "ownerReferences": [{"kind": "VirtualMachineInstanceReplicaSet", "name": "other", "uid": "x",
                                 "controller": True}]}),
    ]
    graph = graph_of(kinds.VMIRS, "web", objects)
    assert (RS, Ref.of(kinds.VMI, "demo", "labelled"), "metadata.name (label kubevirt.io/vmReplicaSet)",
            False) in edge_set(graph)
    assert Ref.of(kinds.VMI, "demo", "other-rs-vmi") not in graph.objects


@pytest.mark.parametrize("selector, members", [
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]}, {"front", "back"}),
    ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"front", "back", "other"}),
    ({"matchLabels": {"app": "shop"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["back"]}]},
     {"front", "other", "plain"}),
    (None, set()),
])
def test_replica_set_selector_takes_every_orphan_it_matches_and_only_those(selector, members):
    rs = obj("kubevirt.io/v1", "VirtualMachineInstanceReplicaSet", "shop", metadata={"uid": "shop-uid"},
             spec={"selector": selector} if selector is not None else {})
    vmis = [obj("kubevirt.io/v1", "VirtualMachineInstance", name, metadata={"labels": labels}) for name, labels in (
        ("front", {"app": "shop", "tier": "front"}), ("back", {"app": "shop", "tier": "back"}),
        ("other", {"app": "shop", "tier": "other"}), ("plain", {"app": "shop"}), ("bare", {}))]
    graph = graph_of(kinds.VMIRS, "shop", [rs, *vmis])
    assert {e.target.name for e in graph.edges if e.path == "spec.selector"} == members


POOL = Ref.of(kinds.VMPOOL, "demo", "workers")


def test_pool_edges_reach_its_vms_and_template_references_but_not_templated_volumes():
    graph = graph_of(kinds.VMPOOL, "workers")
    edges = edge_set(graph)
    assert (POOL, Ref.of(kinds.VM, "demo", "workers-0"), "metadata.uid (controller ownerReference)", False) in edges
    assert (POOL, Ref.of(kinds.CONFIG_MAP, "demo", "workers-config"),
            "spec.virtualMachineTemplate.spec.template.spec.volumes[1].configMap.name", False) in edges
    assert (POOL, Ref.of(kinds.DATA_SOURCE, "os-images", "fedora"),
            "spec.virtualMachineTemplate.spec.dataVolumeTemplates[0].spec.sourceRef.name", True) in edges
    assert Ref.of(kinds.DATA_VOLUME, "demo", "worker-root") not in graph.objects
    # the pool's VM is expanded in turn
    assert graph.found(Ref.of(kinds.DATA_VOLUME, "demo", "worker-root-0"))
    assert graph.missing_required() == []


def test_pool_and_replica_set_members_whose_controller_reference_has_no_uid_are_matched_by_name():
    """Hand-written manifests may leave out UIDs: ``is_controlled_by`` then compares names, and so do the edges."""
    def member(kind: str, name: str, owner_kind: str, owner_name: str, uid: str | None = None) -> dict:
        reference = {"kind": owner_kind, "name": owner_name, "controller": True, **({"uid": uid} if uid else {})}
        return obj("kubevirt.io/v1", kind, name, metadata={"ownerReferences": [reference]})

    objects = [obj("pool.kubevirt.io/v1alpha1", "VirtualMachinePool", "web", metadata={"uid": "pool-uid"}, spec={}),
               obj("kubevirt.io/v1", "VirtualMachineInstanceReplicaSet", "web", metadata={"uid": "rs-uid"}, spec={})]
    for kind, owner_kind, uid in (("VirtualMachine", "VirtualMachinePool", "pool-uid"),
                                  ("VirtualMachineInstance", "VirtualMachineInstanceReplicaSet", "rs-uid")):
        objects += [member(kind, "by-uid", owner_kind, "web", uid), member(kind, "by-name", owner_kind, "web"),
                    member(kind, "of-a-former-web", owner_kind, "web", "old-uid"),
                    member(kind, "of-another", owner_kind, "other")]
    for kind, member_kind in ((kinds.VMPOOL, kinds.VM), (kinds.VMIRS, kinds.VMI)):
        graph = graph_of(kind, "web", objects)
        assert {e.target.name for e in graph.edges if e.target.is_a(member_kind)} == {"by-uid", "by-name"}


def test_data_volume_reaches_its_pvc():
    graph = graph_of(kinds.VMPOOL, "workers")
    assert (Ref.of(kinds.DATA_VOLUME, "demo", "worker-root-0"), Ref.of(kinds.PVC, "demo", "worker-root-0"),
            "metadata.name", True) in edge_set(graph)


def test_missing_required_target_is_reported_not_fatal():
    vm = obj("kubevirt.io/v1", "VirtualMachine", "broken", spec={"template": {"spec": {"volumes": [
        {"name": "c", "configMap": {"name": "gone"}}]}}})
    graph = graph_of(kinds.VM, "broken", [vm])
    missing = graph.missing_required()
    assert [e.target for e in missing] == [Ref.of(kinds.CONFIG_MAP, "demo", "gone")]
    assert graph.to_dict()["nodes"][1] == {"group": "", "kind": "ConfigMap", "namespace": "demo", "name": "gone",
                                           "found": False}


def test_every_example_vm_graph_is_complete():
    for kind, name in ((kinds.VM, "fedora"), (kinds.VM, "windows"), (kinds.VMIRS, "web"), (kinds.VMPOOL, "workers")):
        assert graph_of(kind, name).missing_required() == [], name


def test_configmap_or_secret_volume_marked_optional_gives_an_optional_edge():
    vm = obj("kubevirt.io/v1", "VirtualMachine", "opt", spec={"template": {"spec": {"volumes": [
        {"name": "c", "configMap": {"name": "maybe-cm", "optional": True}},
        {"name": "s", "secret": {"secretName": "maybe-secret", "optional": True}},
        {"name": "r", "secret": {"secretName": "must-secret"}}]}}})
    graph = graph_of(kinds.VM, "opt", [vm])
    assert [e.target.name for e in graph.missing_required()] == ["must-secret"]
    assert {e.target.name for e in graph.edges if e.optional} == {"maybe-cm", "maybe-secret"}


# --- references real VMs have beyond the guide's table ---

def test_kernel_boot_container_pull_secret():
    vm = obj("kubevirt.io/v1", "VirtualMachine", "kb", spec={"template": {"spec": {"domain": {"firmware": {
        "kernelBoot": {"container": {"image": "registry.example/kernel:1", "imagePullSecret": "kernel-pull"}}}}}}})
    graph = graph_of(kinds.VM, "kb", [vm, obj("v1", "Secret", "kernel-pull")])
    assert (Ref.of(kinds.VM, "demo", "kb"), Ref.of(kinds.SECRET, "demo", "kernel-pull"),
            f"{T}.domain.firmware.kernelBoot.container.imagePullSecret", False) in edge_set(graph)


def test_priority_class_is_a_required_cluster_scoped_edge():
    """virt-controller copies priorityClassName onto the launcher pod (kubevirt pkg/virt-controller/services/
    template.go): without the class the VM never starts, so it is required, and cluster-scoped."""
    vm = obj("kubevirt.io/v1", "VirtualMachine", "urgent", spec={"template": {"spec": {
        "priorityClassName": "vm-critical"}}})
    graph = graph_of(kinds.VM, "urgent", [vm, obj("scheduling.k8s.io/v1", "PriorityClass", "vm-critical",
                                                  namespace="")])
    assert (Ref.of(kinds.VM, "demo", "urgent"), Ref("scheduling.k8s.io", "PriorityClass", "", "vm-critical"),
            f"{T}.priorityClassName", False) in edge_set(graph)
    assert graph.objects[Ref("scheduling.k8s.io", "PriorityClass", "", "vm-critical")] is not None


# every Secret and ConfigMap a CDI DataVolume source names (CDI core/v1beta1 types.go, DataVolumeSource*)
SOURCE_FIELDS = {"http": ("secretRef", "certConfigMap"), "s3": ("secretRef", "certConfigMap"), "gcs": ("secretRef",),
                 "registry": ("secretRef", "certConfigMap"), "imageio": ("secretRef", "certConfigMap"),
                 "vddk": ("secretRef", "certConfigMap", "extraArgs")}
DV_SOURCE_REFERENCES = [(source, field, kinds.SECRET if field == "secretRef" else kinds.CONFIG_MAP)
                        for source, fields in SOURCE_FIELDS.items() for field in fields]


def dv_with_source(name: str, source: dict, phase: str | None) -> dict:
    return obj("cdi.kubevirt.io/v1beta1", "DataVolume", name, spec={"source": source},
               **({"status": {"phase": phase}} if phase else {}))


@pytest.mark.parametrize("source,field,kind", DV_SOURCE_REFERENCES, ids=[f"{s}.{f}" for s, f, _ in DV_SOURCE_REFERENCES])
def test_data_volume_source_credentials_and_certificates(source, field, kind):
    importing = dv_with_source("disk", {source: {"url": "x", field: "needed"}}, "ImportInProgress")
    dv_ref = Ref.of(kinds.DATA_VOLUME, "demo", "disk")
    path = f"spec.source.{source}.{field}"
    graph = graph_of(kinds.DATA_VOLUME, "disk", [importing])
    assert (dv_ref, Ref.of(kind, "demo", "needed"), path, False) in edge_set(graph)
    # once imported, CDI needs them only to import again: a deleted one is no broken VM
    imported = dv_with_source("disk", {source: {"url": "x", field: "needed"}}, "Succeeded")
    assert (dv_ref, Ref.of(kind, "demo", "needed"), path, True) in edge_set(
        graph_of(kinds.DATA_VOLUME, "disk", [imported]))
    vm = obj("kubevirt.io/v1", "VirtualMachine", "v", spec={"template": {"spec": {}}, "dataVolumeTemplates": [
        {"metadata": {"name": "disk"}, "spec": {"source": {source: {"url": "x", field: "needed"}}}}]})
    assert (Ref.of(kinds.VM, "demo", "v"), Ref.of(kind, "demo", "needed"),
            f"spec.dataVolumeTemplates[0].{path}", True) in edge_set(graph_of(kinds.VM, "v", [vm]))


def test_data_volume_http_secret_extra_headers():
    dv = dv_with_source("disk", {"http": {"url": "x", "secretExtraHeaders": ["token-a", "token-b"]}}, None)
    edges = edge_set(graph_of(kinds.DATA_VOLUME, "disk", [dv]))
    for j, name in enumerate(("token-a", "token-b")):
        assert (Ref.of(kinds.DATA_VOLUME, "demo", "disk"), Ref.of(kinds.SECRET, "demo", name),
                f"spec.source.http.secretExtraHeaders[{j}]", False) in edges


def test_changed_block_tracking_state_lives_on_the_backend_pvc():
    backend = obj("v1", "PersistentVolumeClaim", "persistent-state-for-cbt-x1",
                  metadata={"labels": {"persistent-state-for": "cbt"}})
    for state, tracked in (("Enabled", True), ("Initializing", True), ("PendingRestart", False),
                           ("Disabled", False)):
        vm = obj("kubevirt.io/v1", "VirtualMachine", "cbt", spec={"template": {"spec": {}}},
                 status={"changedBlockTracking": {"state": state}})
        edge = (Ref.of(kinds.VM, "demo", "cbt"), Ref.of(kinds.PVC, "demo", "persistent-state-for-cbt-x1"),
                "status.changedBlockTracking.state (label persistent-state-for)", False)
        assert (edge in edge_set(graph_of(kinds.VM, "cbt", [vm, backend]))) is tracked, state
    vmi = obj("kubevirt.io/v1", "VirtualMachineInstance", "cbt", spec={},
              status={"changedBlockTracking": {"state": "Enabled"}})
    assert (Ref.of(kinds.VMI, "demo", "cbt"), Ref.of(kinds.PVC, "demo", "persistent-state-for-cbt-x1"),
            "status.changedBlockTracking.state (label persistent-state-for)", False) in edge_set(
        graph_of(kinds.VMI, "cbt", [vmi, backend]))


def pool_objects(name_generation: dict | None = None) -> list[dict]:
    """A pool as KubeVirt's pool controller leaves it (pkg/virt-controller/watch/pool/pool.go): VM ``web-0`` with
    its template's DataVolume names suffixed ``-0``, and the pool revision label."""
    volumes = [{"name": "root", "persistentVolumeClaim": {"claimName": "root"}},
               {"name": "cfg", "configMap": {"name": "cfg"}},
               {"name": "ci", "cloudInitNoCloud": {"secretRef": {"name": "userdata"}}}]
    template = {"dataVolumeTemplates": [{"metadata": {"name": "root"}, "spec": {"source": {"blank": {}}}}],
                "template": {"spec": {"volumes": volumes}}}
    suffix = "-0" if name_generation else ""
    vm_volumes = [{"name": "root", "persistentVolumeClaim": {"claimName": "root-0"}},
                  {"name": "cfg", "configMap": {"name": f"cfg{suffix}"}},
                  {"name": "ci", "cloudInitNoCloud": {"secretRef": {"name": f"userdata{suffix}"}}}]
    pool = obj("pool.kubevirt.io/v1alpha1", "VirtualMachinePool", "web", metadata={"uid": "pool-uid"},
               spec={"virtualMachineTemplate": {"spec": template}, **(
                   {"nameGeneration": name_generation} if name_generation else {})})
    vm = obj("kubevirt.io/v1", "VirtualMachine", "web-0", metadata={
        "uid": "vm-uid", "labels": {"kubevirt.io/vm-pool-revision-name": "web-1"},
        "ownerReferences": [{"kind": "VirtualMachinePool", "name": "web", "uid": "pool-uid", "controller": True}]},
        spec={"dataVolumeTemplates": [{"metadata": {"name": "root-0"}, "spec": {"source": {"blank": {}}}}],
              "template": {"spec": {"volumes": vm_volumes}}})
    owned = [obj(api, kind, name) for api, kind, name in (
        ("cdi.kubevirt.io/v1beta1", "DataVolume", "root-0"), ("v1", "PersistentVolumeClaim", "root-0"),
        ("v1", "ConfigMap", f"cfg{suffix}"), ("v1", "Secret", f"userdata{suffix}"),
        ("apps/v1", "ControllerRevision", "web-1"))]
    return [pool, vm, *owned]


def test_pool_per_vm_volume_names_are_no_missing_nodes():
    graph = graph_of(kinds.VMPOOL, "web", pool_objects())
    assert graph.missing_required() == []
    assert Ref.of(kinds.PVC, "demo", "root") not in graph.objects
    assert Ref.of(kinds.DATA_VOLUME, "demo", "root") not in graph.objects
    assert graph.found(Ref.of(kinds.PVC, "demo", "root-0")) and graph.found(Ref.of(kinds.DATA_VOLUME, "demo", "root-0"))
    # without nameGeneration the pool's VMs share its ConfigMap and Secret: the template names real objects
    assert (Ref.of(kinds.VMPOOL, "demo", "web"), Ref.of(kinds.CONFIG_MAP, "demo", "cfg"),
            "spec.virtualMachineTemplate.spec.template.spec.volumes[1].configMap.name", False) in edge_set(graph)


def test_pool_name_generation_suffixes_config_map_and_secret_references():
    graph = graph_of(kinds.VMPOOL, "web", pool_objects({"appendIndexToConfigMapRefs": True,
                                                        "appendIndexToSecretRefs": True}))
    assert graph.missing_required() == []
    assert Ref.of(kinds.CONFIG_MAP, "demo", "cfg") not in graph.objects
    assert Ref.of(kinds.SECRET, "demo", "userdata") not in graph.objects
    assert graph.found(Ref.of(kinds.CONFIG_MAP, "demo", "cfg-0")) and graph.found(Ref.of(kinds.SECRET, "demo",
                                                                                          "userdata-0"))
    only_config_maps = pool_objects({"appendIndexToConfigMapRefs": True})
    only_config_maps[1]["spec"]["template"]["spec"]["volumes"][2]["cloudInitNoCloud"]["secretRef"]["name"] = "userdata"
    only_config_maps.append(obj("v1", "Secret", "userdata"))
    graph = graph_of(kinds.VMPOOL, "web", only_config_maps)
    assert Ref.of(kinds.CONFIG_MAP, "demo", "cfg") not in graph.objects
    assert (Ref.of(kinds.VMPOOL, "demo", "web"), Ref.of(kinds.SECRET, "demo", "userdata"),
            "spec.virtualMachineTemplate.spec.template.spec.volumes[2].cloudInitNoCloud.secretRef.name",
            False) in edge_set(graph)


def test_pool_vm_reaches_the_pool_revision_it_was_made_from():
    graph = graph_of(kinds.VMPOOL, "web", pool_objects())
    assert (Ref.of(kinds.VM, "demo", "web-0"), Ref.of(kinds.CONTROLLER_REVISION, "demo", "web-1"),
            "metadata.labels[kubevirt.io/vm-pool-revision-name]", False) in edge_set(graph)
    assert graph.found(Ref.of(kinds.CONTROLLER_REVISION, "demo", "web-1"))


def host_disk_vm() -> dict:
    return obj("kubevirt.io/v1", "VirtualMachine", "hd", metadata={"uid": "hd-uid"}, spec={"template": {"spec": {
        "volumes": [{"name": "cfg", "configMap": {"name": "hd-config"}},
                    {"name": "local", "hostDisk": {"path": "/var/lib/disks/hd.img", "type": "DiskOrCreate"}}]}}})


def test_host_disk_data_is_reported_as_not_captured():
    vmi = obj("kubevirt.io/v1", "VirtualMachineInstance", "hd", spec=host_disk_vm()["spec"]["template"]["spec"],
              metadata={"ownerReferences": [{"kind": "VirtualMachine", "name": "hd", "uid": "hd-uid",
                                             "controller": True}]})
    graph = graph_of(kinds.VM, "hd", [host_disk_vm(), vmi, obj("v1", "ConfigMap", "hd-config")])
    note = {"object": Ref.of(kinds.VM, "demo", "hd").to_dict(), "path": f"{T}.volumes[1].hostDisk.path",
            "what": "hostDisk /var/lib/disks/hd.img on the node: data not captured", "advice": "back it up on the node"}
    assert graph.to_dict()["notes"] == [note]  # the VM's own VMI uses the same disk: reported once
    standalone = obj("kubevirt.io/v1", "VirtualMachineInstance", "solo", spec=host_disk_vm()["spec"]["template"]["spec"])
    assert [n.path for n in graph_of(kinds.VMI, "solo", [standalone]).notes] == ["spec.volumes[1].hostDisk.path"]


def test_host_disk_shows_in_graph_output_warnings_and_the_export_index(capsys, tmp_path):
    manifest = tmp_path / "hd.yaml"
    manifest.write_text(yaml.safe_dump_all([host_disk_vm(), obj("v1", "ConfigMap", "hd-config")]))
    assert main(["graph", "-f", str(manifest), "-n", "demo", "vm/hd"]) == 0
    out, err = capsys.readouterr()
    assert f"└── ! hostDisk /var/lib/disks/hd.img on the node: data not captured  ({T}.volumes[1].hostDisk.path)" \
        in out.splitlines()
    assert "uses hostDisk /var/lib/disks/hd.img on the node: data not captured (" in err and \
        "): back it up on the node" in err
    assert main(["export", "-f", str(manifest), "-n", "demo", "vm/hd", "--to", str(tmp_path / "b")]) == 0
    assert read_bundle(str(tmp_path / "b")).index["dataNotCaptured"] == [
        {"object": Ref.of(kinds.VM, "demo", "hd").to_dict(), "path": f"{T}.volumes[1].hostDisk.path",
         "what": "hostDisk /var/lib/disks/hd.img on the node: data not captured", "advice": "back it up on the node"}]


@pytest.mark.parametrize("field,kind,namespace", [("pvc", kinds.PVC, "os-images"), ("pvc", kinds.PVC, None),
                                                  ("snapshot", kinds.VOLUME_SNAPSHOT, "os-images")])
def test_the_source_of_an_unfinished_clone_is_named_and_never_followed(field, kind, namespace):
    """Golden images are shared by many VMs: a backup neither copies nor snapshots them, but a clone that has not
    finished is cloned again on restore, from a source that must be there."""
    source = {"name": "fedora-golden", **({"namespace": namespace} if namespace else {})}
    dv = obj("cdi.kubevirt.io/v1beta1", "DataVolume", "root", spec={"source": {field: source}},
             status={"phase": "CloneInProgress"})
    golden = obj(kind.api_version, kind.kind, "fedora-golden", namespace=namespace or "demo")
    graph = graph_of(kinds.DATA_VOLUME, "root", [dv, golden])
    expected = Ref.of(kind, namespace or "demo", "fedora-golden")
    assert [(n.path, n.what, n.advice) for n in graph.notes] == [
        (f"spec.source.{field}.name", f"{expected}, the source of a clone not finished",
         "it must exist where the bundle is restored, for CDI to clone it again")]
    assert expected not in graph.objects and all(e.target != expected for e in graph.edges)
    finished = graph_of(kinds.DATA_VOLUME, "root", [{**dv, "status": {"phase": "Succeeded"}}, golden])
    assert finished.notes == []


HOOKS = "hooks.kubevirt.io/hookSidecars"
SIDECARS = ('[{"image": "quay.io/kubevirt/sidecar-shim", "args": ["--version", "v1alpha2"], '
            '"configMap": {"name": "smbios-hook", "key": "hook.sh", "hookPath": "/usr/bin/onDefineDomain"}}, '
            '{"image": "quay.io/kubevirt/sidecar-shim", "pvc": {"name": "debug-tools", "volumePath": "/debug", '
            '"sharedComputePath": "/var/run/debug"}}]')


@pytest.mark.parametrize("kind,template_path", [
    (kinds.VM, ("spec", "template", "metadata")),
    (kinds.VMI, ("metadata",)),
    (kinds.VMIRS, ("spec", "template", "metadata")),
    (kinds.VMPOOL, ("spec", "virtualMachineTemplate", "spec", "template", "metadata")),
])
def test_hook_sidecars_reach_the_config_map_and_pvc_they_mount(kind, template_path):
    """virt-controller mounts a hook sidecar's ConfigMap and PVC into the launcher pod (kubevirt pkg/hooks/hooks.go,
    pkg/virt-controller/services/template.go): the VMI does not start without them."""
    root = obj(kind.api_version, kind.kind, "hooked")
    node = root
    for key in template_path:
        node = node.setdefault(key, {})
    node["annotations"] = {HOOKS: SIDECARS}
    decoys = [obj("v1", "ConfigMap", "hook"), obj("v1", "PersistentVolumeClaim", "debug")]
    graph = graph_of(kind, "hooked", [root, obj("v1", "ConfigMap", "smbios-hook"),
                                      obj("v1", "PersistentVolumeClaim", "debug-tools"), *decoys])
    path = ".".join(template_path) + f".annotations[{HOOKS}]"
    source = Ref.of(kind, "demo", "hooked")
    assert {e for e in edge_set(graph) if e[0] == source and HOOKS in e[2]} == {
        (source, Ref.of(kinds.CONFIG_MAP, "demo", "smbios-hook"), f"{path}[0].configMap.name", False),
        (source, Ref.of(kinds.PVC, "demo", "debug-tools"), f"{path}[1].pvc.name", False),
        (source, Ref.of(kinds.DATA_VOLUME, "demo", "debug-tools"), f"{path}[1].pvc.name", True)}
    assert not {Ref.of(kinds.CONFIG_MAP, "demo", "hook"), Ref.of(kinds.PVC, "demo", "debug")} & set(graph.objects)


@pytest.mark.parametrize("annotation", ["not json", '{"configMap": {"name": "x"}}', '[{"configMap": "x"}, 3]',
                                        '[{"pvc": {"name": 7}}]', '[{"configMap": {"name": ""}}]'])
def test_a_hook_sidecars_annotation_kubevirt_cannot_read_gives_no_edge_and_no_error(annotation):
    vmi = obj("kubevirt.io/v1", "VirtualMachineInstance", "odd", metadata={"annotations": {HOOKS: annotation}})
    graph = graph_of(kinds.VMI, "odd", [vmi])
    assert not [e for e in graph.edges if HOOKS in e.path]


def test_a_secret_left_unread_is_listed_once_however_often_it_is_reached():
    vm = obj("kubevirt.io/v1", "VirtualMachine", "twice", spec={"template": {"spec": {"volumes": [
        {"name": "a", "secret": {"secretName": "shared"}},
        {"name": "b", "cloudInitNoCloud": {"secretRef": {"name": "shared"}}},
        {"name": "c", "sysprep": {"secret": {"name": "other"}}}]}}})
    source = ManifestSource([vm])
    ref = Ref.of(kinds.VM, "demo", "twice")
    graph = walk([(ref, vm)], source, unread_kinds={(kinds.SECRET.group, kinds.SECRET.kind)})
    assert graph.unread == [Ref.of(kinds.SECRET, "demo", "shared"), Ref.of(kinds.SECRET, "demo", "other")]
    assert len([e for e in graph.edges if e.target.name == "shared"]) == 2

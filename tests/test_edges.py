"""One test per graph edge: each fails if its edge is removed. Decoys must stay out."""

from __future__ import annotations

import pytest

from kubectl_kvbackup import kinds
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

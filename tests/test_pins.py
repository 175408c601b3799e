"""Rules and edges that exist and that a mutation run over rules and graph/edges.py found unguarded: each test
fails when its rule is weakened (a condition flipped, ``and``/``or`` swapped, a statement removed)."""

from __future__ import annotations

from kubectl_kvbackup import kinds
from kubectl_kvbackup.graph.edges import is_controlled_by, is_launcher_pod
from kubectl_kvbackup.refs import Ref
from kubectl_kvbackup.rules.objects import is_kind

from .helpers import obj
from .test_edges import edge_set, graph_of

VMI_API = "kubevirt.io/v1"


def test_is_kind_needs_group_and_kind_both():
    vm = obj(VMI_API, "VirtualMachine", "a")
    assert is_kind(vm, kinds.VM)
    assert not is_kind(vm, kinds.VMI)  # same group, other kind
    assert not is_kind(obj("v1", "Pod", "p"), kinds.PVC)  # same (core) group, other kind
    assert not is_kind(obj("example.com/v1", "VirtualMachine", "a"), kinds.VM)  # same kind, other group


def test_a_replica_set_never_adopts_another_controllers_vmi_its_selector_matches():
    rs = obj(VMI_API, "VirtualMachineInstanceReplicaSet", "web", metadata={"uid": "rs-uid"},
             spec={"selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {}}})
    mine = obj(VMI_API, "VirtualMachineInstance", "web-a", metadata={"labels": {"app": "web"}, "ownerReferences": [
        {"kind": "VirtualMachineInstanceReplicaSet", "name": "web", "uid": "rs-uid", "controller": True}]})
    a_vms = obj(VMI_API, "VirtualMachineInstance", "frontend", metadata={"labels": {"app": "web"}, "ownerReferences": [
        {"kind": "VirtualMachine", "name": "frontend", "uid": "vm-uid", "controller": True}]})
    orphan = obj(VMI_API, "VirtualMachineInstance", "stray", metadata={"labels": {"app": "web"}})
    graph = graph_of(kinds.VMIRS, "web", [rs, mine, a_vms, orphan])
    members = [e for e in graph.edges if e.source == Ref.of(kinds.VMIRS, "demo", "web")
               and e.target.kind == kinds.VMI.kind]
    # each member once, with how it was found; the VM's VMI is not a member
    assert sorted((e.target.name, e.path) for e in members) == [
        ("stray", "spec.selector"), ("web-a", "metadata.uid (controller ownerReference)")]


def launcher(name: str, uid: str, labels: dict) -> dict:
    return obj("v1", "Pod", name, metadata={"uid": uid, "labels": labels})


def hotplug(name: str, owner_uid: str | None, labels: dict | None = None) -> dict:
    owners = [{"kind": "Pod", "name": "x", "uid": owner_uid}] if owner_uid else []
    return obj("v1", "Pod", name, metadata={"labels": labels if labels is not None else {"kubevirt.io": "hotplug-disk"},
                                            "ownerReferences": owners})


def test_a_launcher_pod_owns_only_its_own_hotplug_pods():
    objects = [launcher("virt-launcher-a", "uid-a", {"kubevirt.io": "virt-launcher"}),
               launcher("virt-launcher-b", "uid-b", {"kubevirt.io": "virt-launcher"}),
               hotplug("hp-a", "uid-a"), hotplug("hp-b", "uid-b"), hotplug("hp-orphan", None),
               hotplug("sidecar-a", "uid-a", labels={"app": "other"})]
    graph = graph_of(kinds.POD, "virt-launcher-a", objects)
    assert {e.target.name for e in graph.edges} == {"hp-a"}
    # a launcher pod without UID (Velero-shaped) cannot be told to own anything
    no_uid = obj("v1", "Pod", "virt-launcher-c", metadata={"labels": {"kubevirt.io": "virt-launcher"}})
    stripped = obj("v1", "Pod", "hp-c", metadata={"labels": {"kubevirt.io": "hotplug-disk"},
                                                  "ownerReferences": [{"kind": "Pod", "name": "virt-launcher-a"}]})
    assert graph_of(kinds.POD, "virt-launcher-c", [no_uid, stripped]).edges == []


def test_either_launcher_label_makes_a_launcher_pod():
    assert is_launcher_pod(launcher("p", "u", {"kubevirt.io": "virt-launcher"}))
    assert is_launcher_pod(launcher("p", "u", {"kubevirt.io/created-by": "vmi-uid"}))
    assert not is_launcher_pod(launcher("p", "u", {"kubevirt.io": "hotplug-disk"}))
    assert not is_launcher_pod(launcher("p", "u", {"app": "web"}))
    for labels in ({"kubevirt.io": "virt-launcher"}, {"kubevirt.io/created-by": "vmi-uid"}):
        graph = graph_of(kinds.POD, "virt-launcher-a", [launcher("virt-launcher-a", "uid-a", labels),
                                                        hotplug("hp-a", "uid-a")])
        assert {e.target.name for e in graph.edges} == {"hp-a"}, labels


def test_a_source_ref_of_another_kind_gives_no_data_source_edge():
    for kind, expected in (("DataSource", True), ("VolumeSnapshot", False), ("", False)):
        dv = obj("cdi.kubevirt.io/v1beta1", "DataVolume", "disk", spec={"sourceRef": {"kind": kind, "name": "fedora"}})
        graph = graph_of(kinds.DATA_VOLUME, "disk", [dv])
        assert (Ref.of(kinds.DATA_SOURCE, "demo", "fedora") in graph.objects) is expected, kind


def test_ownership_by_name_when_uids_were_stripped():
    """Velero-shaped objects: no uids anywhere, so the controller reference's kind and name decide."""
    vm = obj(VMI_API, "VirtualMachine", "db")
    owned = obj(VMI_API, "VirtualMachineInstance", "db", metadata={"ownerReferences": [
        {"kind": "VirtualMachine", "name": "db", "controller": True}]})
    assert is_controlled_by(owned, vm)
    assert not is_controlled_by(owned, obj(VMI_API, "VirtualMachine", "other"))
    assert not is_controlled_by(owned, obj(VMI_API, "VirtualMachineInstanceReplicaSet", "db"))
    assert Ref.of(kinds.VMI, "demo", "db") in graph_of(kinds.VM, "db", [vm, owned]).objects
    # a uid on one side only: still by name
    assert is_controlled_by(owned, obj(VMI_API, "VirtualMachine", "db", metadata={"uid": "live"}))
    by_uid = obj(VMI_API, "VirtualMachineInstance", "db", metadata={"ownerReferences": [
        {"kind": "VirtualMachine", "name": "db", "uid": "old", "controller": True}]})
    assert is_controlled_by(by_uid, vm)
    # uids on both sides decide: a same-named owner recreated since is not the owner
    assert not is_controlled_by(by_uid, obj(VMI_API, "VirtualMachine", "db", metadata={"uid": "new"}))


def test_cloud_init_config_drive_secrets():
    vm = obj(VMI_API, "VirtualMachine", "cd", spec={"template": {"spec": {"volumes": [
        {"name": "ci", "cloudInitConfigDrive": {"secretRef": {"name": "cd-userdata"},
                                                "networkDataSecretRef": {"name": "cd-network"}}}]}}})
    edges = edge_set(graph_of(kinds.VM, "cd", [vm]))
    for field, name in (("secretRef", "cd-userdata"), ("networkDataSecretRef", "cd-network")):
        assert (Ref.of(kinds.VM, "demo", "cd"), Ref.of(kinds.SECRET, "demo", name),
                f"spec.template.spec.volumes[0].cloudInitConfigDrive.{field}.name", False) in edges


def test_a_data_volume_templates_pvc_is_optional_until_cdi_creates_it():
    vm = obj(VMI_API, "VirtualMachine", "new", spec={"template": {"spec": {}},
                                                      "dataVolumeTemplates": [{"metadata": {"name": "new-root"}}]})
    graph = graph_of(kinds.VM, "new", [vm])
    assert (Ref.of(kinds.VM, "demo", "new"), Ref.of(kinds.PVC, "demo", "new-root"),
            "spec.dataVolumeTemplates[0].metadata.name", True) in edge_set(graph)
    assert graph.missing_required() == []


def test_an_empty_uid_matches_no_launcher_or_hotplug_pod():
    """Hand-written manifests may carry ``uid: ""``: an empty UID is no UID, and links nothing."""
    vmi = obj(VMI_API, "VirtualMachineInstance", "typed", metadata={"uid": ""})
    unlabelled_launcher = launcher("virt-launcher-typed", "", {"kubevirt.io/created-by": ""})
    assert not [e for e in graph_of(kinds.VMI, "typed", [vmi, unlabelled_launcher]).edges if e.target.kind == "Pod"]
    stray = obj("v1", "Pod", "hp-stray", metadata={"labels": {"kubevirt.io": "hotplug-disk"},
                                                   "ownerReferences": [{"kind": "Pod", "name": "elsewhere"}]})
    pod = launcher("virt-launcher-typed", "", {"kubevirt.io": "virt-launcher"})
    assert graph_of(kinds.POD, "virt-launcher-typed", [pod, stray]).edges == []

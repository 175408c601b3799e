"""Export-time volume, owner and sharing rules: evidence of data, bindable PVCs, snapshots as data sources, shared
objects kept apart, DataVolumes synthesized for templates CDI removed. Each test fails if its rule is removed."""

from __future__ import annotations


import pytest
import yaml

from kubectl_kvbackup import kinds, rules
from kubectl_kvbackup.bundle import objects_as_read, read_bundle
from kubectl_kvbackup.cli.main import main
from kubectl_kvbackup.refs import Ref
from kubectl_kvbackup.rules import RestoreContext

from .helpers import Snapshotter, example_objects, obj

DV_OWNER = {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": "root", "uid": "old-dv",
            "controller": True, "blockOwnerDeletion": True}
VELERO = {rules.VELERO_RESTORE_LABEL: "nightly-1"}


def pvc(name: str = "root", annotations: dict | None = None, **metadata) -> dict:
    return obj("v1", "PersistentVolumeClaim", name, metadata={"annotations": dict(annotations or {}), **metadata},
               spec={"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}})


def dv(name: str = "root", phase: str | None = None) -> dict:
    return obj("cdi.kubevirt.io/v1beta1", "DataVolume", name, spec={"source": {"blank": {}}},
               **({"status": {"phase": phase}} if phase else {}))


def velero_shaped(o: dict) -> dict:
    """What Velero restores: owners, uid and status stripped (velero pkg/restore/restore.go resetMetadata)."""
    meta = {k: v for k, v in o["metadata"].items() if k not in ("ownerReferences", "uid")}
    return {**{k: v for k, v in o.items() if k != "status"}, "metadata": {**meta, "labels": dict(VELERO)}}


# --- populated only with evidence ------------------------------------------------------------------------------

@pytest.mark.parametrize("annotations, data_volume", [
    ({rules.POD_PHASE_ANNOTATION: "Succeeded"}, None),
    ({rules.POPULATOR_PROGRESS_ANNOTATION: "100.0%"}, None),
    ({rules.POPULATED_FOR_ANNOTATION: "root"}, None),
    ({}, dv(phase="Succeeded")),
])
def test_each_record_cdi_keeps_is_evidence(annotations, data_volume):
    assert rules.populated_with_evidence(pvc(annotations=annotations), data_volume)


@pytest.mark.parametrize("annotations, data_volume", [
    ({}, None),  # never started: WaitForFirstConsumer, or a populator waiting for its consumer
    ({}, dv(phase="WaitForFirstConsumer")),
    ({}, dv(phase="PendingPopulation")),
    ({rules.POD_PHASE_ANNOTATION: "Running"}, dv(phase="ImportInProgress")),
    ({rules.POPULATOR_PROGRESS_ANNOTATION: "42.00%"}, None),
    ({rules.POPULATED_FOR_ANNOTATION: "another-dv"}, None),
])
def test_no_record_or_an_unfinished_one_is_no_evidence(annotations, data_volume):
    assert not rules.populated_with_evidence(pvc(annotations=annotations), data_volume)


def test_velero_restored_pvc_without_evidence_is_denied_and_never_marked():
    never_started = velero_shaped(pvc(annotations={rules.CREATED_FOR_DATA_VOLUME_ANNOTATION: "old-dv"},
                                      ownerReferences=[DV_OWNER], uid="old-pvc"))
    decision = rules.restore_decision(never_started)
    assert (decision.restore, decision.rule) == (False, "pvc-never-populated")
    assert "no population recorded" in decision.reason
    marked = rules.restore_object(never_started, RestoreContext()).object
    assert rules.POPULATED_FOR_ANNOTATION not in marked["metadata"]["annotations"]
    imported = velero_shaped(pvc(annotations={rules.CREATED_FOR_DATA_VOLUME_ANNOTATION: "old-dv",
                                              rules.POPULATOR_PROGRESS_ANNOTATION: "100.0%"}))
    imported["spec"]["volumeName"] = "pvc-restored"
    assert rules.restore_decision(imported).restore
    assert rules.restore_object(imported, RestoreContext()).object["metadata"]["annotations"][
        rules.POPULATED_FOR_ANNOTATION] == "root"


def test_data_volume_is_prepopulated_only_when_its_restored_pvc_shows_evidence():
    stripped = velero_shaped(dv())
    blank = RestoreContext(restored_pvc=lambda ns, name: pvc())
    assert rules.PREPOPULATED_ANNOTATION not in (
        rules.restore_object(stripped, blank).object["metadata"].get("annotations") or {})
    finished = pvc(annotations={rules.POPULATOR_PROGRESS_ANNOTATION: "100.0%"})
    done = RestoreContext(restored_pvc=lambda ns, name: finished)
    assert rules.restore_object(stripped, done).object["metadata"]["annotations"][rules.PREPOPULATED_ANNOTATION] == \
        "root"


# --- bindable PVCs -----------------------------------------------------------------------------------------------

PINNED = {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
          "volume.kubernetes.io/selected-node": "node-7", "volume.beta.kubernetes.io/storage-provisioner": "csi.old",
          "volume.kubernetes.io/storage-provisioner": "csi.old", rules.POD_PHASE_ANNOTATION: "Succeeded"}
IMPORT_SOURCE = {"apiGroup": "cdi.kubevirt.io", "kind": "VolumeImportSource", "name": "volume-import-source-x"}


def pinned_pvc() -> dict:
    result = pvc(annotations=PINNED, ownerReferences=[DV_OWNER])
    result["spec"].update(volumeName="pvc-0a1b", dataSource=dict(IMPORT_SOURCE), dataSourceRef=dict(IMPORT_SOURCE))
    return result


def test_bindable_pvc_drops_what_pins_it_to_the_old_cluster_and_keeps_cdi_evidence():
    result = rules.bindable_pvc(pinned_pvc())
    assert result["metadata"]["annotations"] == {rules.POD_PHASE_ANNOTATION: "Succeeded"}
    assert not {"volumeName", "dataSource", "dataSourceRef"} & set(result["spec"])
    assert pinned_pvc()["spec"]["volumeName"] == "pvc-0a1b"  # the input is not changed


@pytest.mark.parametrize("kind", ["VolumeImportSource", "VolumeUploadSource", "VolumeCloneSource"])
def test_every_cdi_populator_source_is_dropped_but_other_data_sources_stay(kind):
    source = {"apiGroup": "cdi.kubevirt.io", "kind": kind, "name": "x"}
    assert "dataSourceRef" not in rules.bindable_pvc({**pvc(), "spec": {"dataSourceRef": source}})["spec"]
    own = {"apiGroup": "example.com", "kind": "Populator", "name": "p"}
    assert rules.bindable_pvc({**pvc(), "spec": {"dataSourceRef": own}})["spec"]["dataSourceRef"] == own


def test_pvc_from_snapshot_names_the_volume_snapshot_consistently():
    result = rules.pvc_from_snapshot(pinned_pvc(), "root-nightly")
    snapshot = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "root-nightly"}
    assert result["spec"]["dataSource"] == result["spec"]["dataSourceRef"] == snapshot
    assert "volumeName" not in result["spec"]
    assert "volume.kubernetes.io/selected-node" not in result["metadata"]["annotations"]


def test_webhook_leaves_velero_its_volume_binding():
    """Velero binds a restored PVC to the PV it restored (volumeName) or to its VolumeSnapshot (dataSource)."""
    snapshot = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "velero-vs-1"}
    restored = velero_shaped(pinned_pvc())
    restored["spec"].update(dataSource=snapshot, dataSourceRef=snapshot)
    result = rules.restore_object(restored, RestoreContext()).object
    assert result["spec"] == restored["spec"]
    assert "volume.kubernetes.io/selected-node" not in result["metadata"]["annotations"]


# --- shared objects ----------------------------------------------------------------------------------------------

def test_shared_objects():
    workloads = {"demo"}
    assert rules.is_shared(Ref.of(kinds.DATA_SOURCE, "os-images", "fedora"), workloads)
    assert not rules.is_shared(Ref.of(kinds.DATA_SOURCE, "demo", "fedora"), workloads)
    assert rules.is_shared(Ref.of(kinds.NETWORK_ATTACHMENT_DEFINITION, "net-system", "vlan10"), workloads)
    assert not rules.is_shared(Ref.of(kinds.NETWORK_ATTACHMENT_DEFINITION, "demo", "lan"), workloads)
    assert rules.is_shared(Ref.of(kinds.CLUSTER_INSTANCETYPE, "", "u1.medium"), workloads)
    assert rules.is_shared(Ref.of(kinds.CLUSTER_PREFERENCE, "", "fedora"), workloads)
    assert rules.is_shared(Ref.of(kinds.PRIORITY_CLASS, "", "vm-critical"), workloads)
    assert not rules.is_shared(Ref.of(kinds.INSTANCETYPE, "demo", "win-large"), workloads)
    assert not rules.is_shared(Ref.of(kinds.CONFIG_MAP, "other", "c"), workloads)


# --- DataVolumes synthesized for templates CDI removed -----------------------------------------------------------

def gc_vm(name: str = "gc", template: str = "gc-root") -> dict:
    return obj("kubevirt.io/v1", "VirtualMachine", name, metadata={"uid": f"uid-{name}"}, spec={
        "dataVolumeTemplates": [{"metadata": {"name": template, "labels": {"app": "gc"}},
                                 "spec": {"sourceRef": {"kind": "DataSource", "name": "fedora",
                                                        "namespace": "os-images"},
                                          "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}],
        "template": {"spec": {"priorityClassName": "gold",
                              "volumes": [{"name": "root", "dataVolume": {"name": template}}]}}})


def collected_pvc(name: str = "gc-root", vm: str = "gc", **annotations) -> dict:
    """A PVC whose DataVolume CDI garbage-collected: owned by the VM now (CDI < 1.62 garbagecollect.go)."""
    return pvc(name, annotations={rules.CREATED_FOR_DATA_VOLUME_ANNOTATION: "old-dv",
                                  "cdi.kubevirt.io/garbageCollected": "true", **annotations},
               ownerReferences=[{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": vm,
                                 "uid": f"uid-{vm}", "controller": True}])


def test_data_volume_synthesized_from_the_template_like_kubevirts_restore():
    objects = {Ref.of(kinds.PVC, "demo", "gc-root"): collected_pvc(**{rules.POD_PHASE_ANNOTATION: "Succeeded"})}
    [synthesized] = rules.synthesized_data_volumes(gc_vm(), objects.get)
    meta = synthesized["metadata"]
    assert (synthesized["apiVersion"], synthesized["kind"]) == ("cdi.kubevirt.io/v1beta1", "DataVolume")
    assert (meta["name"], meta["namespace"], meta["labels"]) == ("gc-root", "demo", {"app": "gc"})
    assert meta["annotations"] == {rules.PREPOPULATED_ANNOTATION: "gc-root",
                                   rules.ALLOW_CLAIM_ADOPTION_ANNOTATION: "true"}
    assert meta["ownerReferences"] == [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "gc",
                                        "uid": "uid-gc", "controller": True, "blockOwnerDeletion": True}]
    assert synthesized["spec"]["priorityClassName"] == "gold"
    assert synthesized["spec"]["sourceRef"]["name"] == "fedora"


def test_pvc_of_a_synthesized_data_volume_is_released_to_it_also_when_its_owners_were_set_aside():
    aside = rules.set_aside_owner_references(collected_pvc(**{rules.POD_PHASE_ANNOTATION: "Succeeded"}))
    objects = {Ref.of(kinds.PVC, "demo", "gc-root"): aside}
    [synthesized] = rules.synthesized_data_volumes(gc_vm(), objects.get)
    exported, decision = rules.export_object(aside, lambda ref: synthesized, lambda ref: True)
    assert decision.restore and "ownerReferences" not in exported["metadata"]
    assert rules.OWNER_REFERENCES_ANNOTATION not in exported["metadata"]["annotations"]
    assert exported["metadata"]["annotations"][rules.POPULATED_FOR_ANNOTATION] == "gc-root"


def test_no_data_volume_synthesized_while_it_exists_or_without_evidence():
    with_dv = {Ref.of(kinds.PVC, "demo", "gc-root"): collected_pvc(**{rules.POD_PHASE_ANNOTATION: "Succeeded"}),
               Ref.of(kinds.DATA_VOLUME, "demo", "gc-root"): dv("gc-root", "Succeeded")}
    assert rules.synthesized_data_volumes(gc_vm(), with_dv.get) == []
    blank = {Ref.of(kinds.PVC, "demo", "gc-root"): collected_pvc()}
    assert rules.synthesized_data_volumes(gc_vm(), blank.get) == []
    assert rules.synthesized_data_volumes(gc_vm(), {}.get) == []


def test_a_pool_vm_gets_only_its_own_renamed_templates():
    """The pool renames ``root`` to ``root-0`` for its VM workers-0: the VM's own name is the DataVolume's."""
    objects = {Ref.of(kinds.PVC, "demo", "root-0"): collected_pvc("root-0", "workers-0",
                                                                  **{rules.POD_PHASE_ANNOTATION: "Succeeded"}),
               Ref.of(kinds.PVC, "demo", "root"): collected_pvc("root", "workers-0",
                                                                **{rules.POD_PHASE_ANNOTATION: "Succeeded"})}
    names = [d["metadata"]["name"] for d in rules.synthesized_data_volumes(gc_vm("workers-0", "root-0"), objects.get)]
    assert names == ["root-0"]


# --- the bundle: export from a cluster with snapshots ------------------------------------------------------------

@pytest.fixture
def exported(fake_api, tmp_path, capsys):
    """``vm/fedora`` (its DataVolume succeeded), ``vm/gc`` (its template DataVolume gone, the PVC holds the data)
    and ``vm/fresh`` (its DataVolume waits for a first consumer) exported with snapshots."""
    fake_api.add_all(example_objects())
    fake_api.add(gc_vm())
    fake_api.add(collected_pvc(**{rules.POD_PHASE_ANNOTATION: "Succeeded"}))
    fake_api.add(obj("kubevirt.io/v1", "VirtualMachine", "fresh", spec={"template": {"spec": {
        "volumes": [{"name": "root", "dataVolume": {"name": "fresh-root"}}]}}}))
    fake_api.add(dv("fresh-root", "PendingPopulation"))
    fake_api.add(pvc("fresh-root", annotations={rules.CREATED_FOR_DATA_VOLUME_ANNOTATION: "u"},
                     ownerReferences=[{**DV_OWNER, "name": "fresh-root"}]))
    kubeconfig = fake_api.write_kubeconfig(str(tmp_path / "kubeconfig"), namespace="demo")
    with Snapshotter(fake_api):
        code = main(["export", "vm/fedora", "vm/gc", "vm/fresh", "--snapshot", "--freeze=never", "--name", "nightly",
                     "--kubeconfig", kubeconfig, "--to", str(tmp_path / "b"), "-q"])
    assert code == 0, capsys.readouterr().err
    return read_bundle(str(tmp_path / "b"))


def node(bundle, kind: str, name: str) -> dict:
    return next(n for n in bundle.index["nodes"] if n["kind"] == kind and n["name"] == name and n.get("found"))


def content(bundle, path: str) -> dict:
    return yaml.safe_load(bundle.contents[path])


def test_snapshotted_pvc_is_restored_from_its_snapshot_and_marked_populated(exported):
    entry = node(exported, "PersistentVolumeClaim", "fedora-root")
    assert (entry["restore"], entry["data"]) == (True, "snapshot")
    restored = content(exported, entry["file"])
    assert restored["spec"]["dataSource"] == restored["spec"]["dataSourceRef"] == {
        "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "fedora-root-nightly"}
    assert "volumeName" not in restored["spec"]
    assert restored["metadata"]["annotations"][rules.POPULATED_FOR_ANNOTATION] == "fedora-root"
    assert not {"pv.kubernetes.io/bind-completed", "volume.kubernetes.io/selected-node"} & \
        set(restored["metadata"]["annotations"])
    as_read = objects_as_read(exported, None)[Ref("", "PersistentVolumeClaim", entry["namespace"], "fedora-root")]
    assert as_read["spec"]["volumeName"] == "pvc-0a1b2c3d"  # original/ as read
    data_volume = content(exported, node(exported, "DataVolume", "fedora-root")["file"])
    assert data_volume["metadata"]["annotations"][rules.PREPOPULATED_ANNOTATION] == "fedora-root"


def test_never_populated_pvc_is_left_to_cdi_and_its_data_volume_unmarked(exported):
    entry = node(exported, "PersistentVolumeClaim", "fresh-root")
    assert (entry["restore"], entry["rule"]) == (False, "pvc-never-populated")
    assert "file" not in entry
    data_volume = content(exported, node(exported, "DataVolume", "fresh-root")["file"])
    assert rules.PREPOPULATED_ANNOTATION not in (data_volume["metadata"].get("annotations") or {})


def test_synthesized_data_volume_is_a_node_with_a_file_and_its_pvc_is_released_to_it(exported):
    entry = node(exported, "DataVolume", "gc-root")
    assert entry["synthesized"] is True and entry["restore"] is True and "original" not in entry
    assert not any(n["kind"] == "DataVolume" and n["name"] == "gc-root" and not n["found"]
                   for n in exported.index["nodes"])
    data_volume = content(exported, entry["file"])
    assert entry["file"].startswith("resources/")
    assert data_volume["metadata"]["annotations"][rules.PREPOPULATED_ANNOTATION] == "gc-root"
    claim = content(exported, node(exported, "PersistentVolumeClaim", "gc-root")["file"])
    assert claim["metadata"]["annotations"][rules.POPULATED_FOR_ANNOTATION] == "gc-root"
    # CDI cannot adopt a PVC the VM controls: it is released to the DataVolume, as KubeVirt's restore does
    assert "ownerReferences" not in claim["metadata"]
    assert rules.OWNER_REFERENCES_ANNOTATION not in claim["metadata"]["annotations"]


def test_pvc_without_a_snapshot_is_bindable_in_resources_and_recorded_as_holding_no_data(tmp_path, capsys):
    # a populatedFor left from an earlier restore: a template DataVolume of that name would adopt the empty volume
    claim = pvc("plain-disk", annotations={**PINNED, rules.POPULATED_FOR_ANNOTATION: "plain-disk"})
    claim["spec"]["volumeName"] = "pvc-0ld"
    machine = obj("kubevirt.io/v1", "VirtualMachine", "plain", spec={"template": {"spec": {
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "plain-disk"}}]}}})
    (tmp_path / "objects.yaml").write_text(yaml.safe_dump_all([machine, claim]))
    assert main(["export", "-f", str(tmp_path / "objects.yaml"), "-n", "demo", "vm/plain",
                 "--to", str(tmp_path / "b"), "-q"]) == 0, capsys.readouterr().err
    bundle = read_bundle(str(tmp_path / "b"))
    entry = node(bundle, "PersistentVolumeClaim", "plain-disk")
    assert (entry["restore"], entry["data"]) == (True, "none")
    restored = content(bundle, entry["file"])
    assert "volumeName" not in restored["spec"]
    assert restored["metadata"]["annotations"] == {rules.POD_PHASE_ANNOTATION: "Succeeded"}


def test_shared_objects_live_apart_from_resources(exported):
    for kind, name in (("DataSource", "fedora"), ("NetworkAttachmentDefinition", "vlan10"),
                       ("VirtualMachineClusterInstancetype", "u1.medium")):
        entry = node(exported, kind, name)
        assert entry["shared"] is True and entry["file"].startswith("shared/"), kind
    assert not any(path.startswith("resources/os-images/") for path in exported.contents)
    assert "shared" not in node(exported, "ConfigMap", "fedora-app-config")


def test_inspect_marks_shared_synthesized_and_volume_data(exported, capsys):
    assert main(["inspect", exported.path]) == 0
    out = capsys.readouterr().out
    assert "DataSource/os-images/fedora" in out and "[shared: created only if absent]" in out
    assert "[synthesized]" in out and "[data: from snapshot]" in out


def test_paused_warm_import_is_not_evidence():
    """CDI pkg/controller/common/util.go IsMultiStageImportInProgress: a checkpoint imported, the last one not yet."""
    paused = pvc(annotations={rules.POD_PHASE_ANNOTATION: "Succeeded",
                              "cdi.kubevirt.io/storage.checkpoint.current": "snap-2"})
    assert not rules.populated_with_evidence(paused, None)
    done = pvc(annotations={**paused["metadata"]["annotations"], "cdi.kubevirt.io/storage.checkpoint.done": "true"})
    assert rules.populated_with_evidence(done, None)


@pytest.mark.parametrize("spec, brings_data", [
    ({}, False),
    ({"volumeName": "pvc-restored"}, True),
    ({"dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s"}}, True),
    ({"dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s"}}, True),
    ({"dataSource": {"kind": "PersistentVolumeClaim", "name": "other"}}, True),
    ({"selector": {"matchLabels": {"velero.io/dynamic-pv-restore": "prod.root.abcde"}}}, True),
    # CDI's populator source names the old DataVolume's UID: nothing fills the claim from it after a restore
    ({"dataSourceRef": {"apiGroup": "cdi.kubevirt.io", "kind": "VolumeImportSource", "name": "volume-import-source-1"}},
     False),
])
def test_a_restored_pvc_of_a_data_volume_is_marked_only_when_it_brings_its_data(spec, brings_data):
    """Velero restores a claim with no snapshot or PV of its own as an empty dynamically provisioned one (velero
    pkg/restore/restore.go, pvsToProvision), keeping CDI's records: marked populated, that is a blank disk."""
    claim = velero_shaped(pvc(annotations={rules.CREATED_FOR_DATA_VOLUME_ANNOTATION: "old-dv",
                                           rules.POD_PHASE_ANNOTATION: "Succeeded"}))
    claim["spec"].update(spec)
    assert rules.claim_brings_its_data(claim) is brings_data
    decision = rules.restore_decision(claim)
    assert decision.restore is brings_data
    if not brings_data:
        assert decision.rule == "pvc-data-not-captured" and "blank disk" in decision.reason

"""Every backup/restore rule: each test fails if its rule is removed."""

from __future__ import annotations

import json

from kubectl_kvbackup import rules
from kubectl_kvbackup.rules import RestoreContext

from .helpers import obj

VM_OWNER = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm1", "uid": "old-vm",
            "controller": True}


def vm(**spec):
    return obj("kubevirt.io/v1", "VirtualMachine", "vm1", spec={"template": {"spec": spec}})


def dv(phase=None, **metadata):
    return obj("cdi.kubevirt.io/v1beta1", "DataVolume", "dv1", metadata=metadata,
               **({"status": {"phase": phase}} if phase else {}))


def pvc(**metadata):
    return obj("v1", "PersistentVolumeClaim", "dv1", metadata=metadata)


DV_OWNER = {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": "dv1", "uid": "old-dv",
            "controller": True}


# --- export time ---

def restored(obj: dict, ctx: RestoreContext) -> dict:
    return rules.restore_object(obj, ctx).object


def test_revision_names_move_from_status_into_spec():
    source = obj("kubevirt.io/v1", "VirtualMachine", "vm1",
                 spec={"instancetype": {"name": "u1"}, "preference": {"name": "p", "revisionName": "keep-me"}},
                 status={"instancetypeRef": {"controllerRevisionRef": {"name": "vm1-u1-1"}},
                         "preferenceRef": {"controllerRevisionRef": {"name": "vm1-p-2"}}})
    result = rules.copy_revision_names(source)
    assert result["spec"]["instancetype"]["revisionName"] == "vm1-u1-1"
    assert result["spec"]["preference"]["revisionName"] == "keep-me"  # an explicit one wins
    assert "revisionName" not in source["spec"]["instancetype"]  # the input is not changed


def captured(ref) -> bool:
    return True


def not_captured(ref) -> bool:
    return False


def test_succeeded_data_volume_is_marked_prepopulated_at_export_when_its_pvc_data_is_captured():
    its_pvc = pvc(ownerReferences=[DV_OWNER])
    exported, decision = rules.export_object(dv("Succeeded"), lambda ref: its_pvc, captured)
    assert exported["metadata"]["annotations"][rules.PREPOPULATED_ANNOTATION] == "dv1"
    assert decision.restore
    exported, _ = rules.export_object(dv("ImportInProgress"), lambda ref: its_pvc, captured)
    assert rules.PREPOPULATED_ANNOTATION not in (exported["metadata"].get("annotations") or {})
    # no snapshot of its PVC: CDI must populate the PVC again, so the DataVolume must not claim it is populated,
    # even when it carries the mark from an earlier restore
    marked = dv("Succeeded", annotations={rules.PREPOPULATED_ANNOTATION: "dv1"})
    exported, decision = rules.export_object(marked, lambda ref: its_pvc, not_captured)
    assert rules.PREPOPULATED_ANNOTATION not in exported["metadata"]["annotations"] and decision.restore
    exported, _ = rules.export_object(dv("Succeeded"), lambda ref: None, captured)
    assert rules.PREPOPULATED_ANNOTATION not in (exported["metadata"].get("annotations") or {})


def test_pvc_of_succeeded_data_volume_is_marked_populated_for():
    exported, decision = rules.export_object(pvc(ownerReferences=[DV_OWNER]), lambda ref: dv("Succeeded"), captured)
    assert exported["metadata"]["annotations"][rules.POPULATED_FOR_ANNOTATION] == "dv1"
    assert exported["metadata"]["ownerReferences"] == [DV_OWNER]
    assert decision.restore


def test_pvc_of_unfinished_data_volume_is_not_restored():
    _, decision = rules.export_object(pvc(ownerReferences=[DV_OWNER]), lambda ref: dv("ImportInProgress"), captured)
    assert not decision.restore
    assert decision.rule == "pvc-never-populated" and "DataVolume phase ImportInProgress" in decision.reason


def test_pvc_whose_data_the_bundle_lacks_is_not_restored():
    exported, decision = rules.export_object(pvc(ownerReferences=[DV_OWNER]), lambda ref: dv("Succeeded"),
                                             not_captured)
    assert (decision.restore, decision.rule) == (False, "pvc-data-not-captured")
    assert "--volumes existing" in decision.reason
    assert rules.POPULATED_FOR_ANNOTATION not in (exported["metadata"].get("annotations") or {})


def test_data_volume_owner_seen_through_cdi_annotation_when_owners_were_stripped():
    assert rules.data_volume_owner(pvc(annotations={rules.CREATED_FOR_DATA_VOLUME_ANNOTATION: "some-uid"})) == "dv1"
    assert rules.data_volume_owner(pvc()) is None


def test_owned_vmi_launcher_pod_and_hotplug_pod_are_not_restored():
    owned_vmi = obj("kubevirt.io/v1", "VirtualMachineInstance", "vm1", metadata={"ownerReferences": [VM_OWNER]})
    assert rules.restore_decision(owned_vmi).rule == "owned-vmi"
    rs_vmi = obj("kubevirt.io/v1", "VirtualMachineInstance", "rs-x", metadata={"ownerReferences": [
        {**VM_OWNER, "kind": "VirtualMachineInstanceReplicaSet"}]})
    assert not rules.restore_decision(rs_vmi).restore
    standalone = obj("kubevirt.io/v1", "VirtualMachineInstance", "solo")
    assert rules.restore_decision(standalone).restore
    launcher = obj("v1", "Pod", "virt-launcher-vm1-abcde", metadata={"ownerReferences": [
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": "vm1", "uid": "x",
         "controller": True}]})
    assert rules.restore_decision(launcher).rule == "launcher-pod"
    hotplug = obj("v1", "Pod", "hp-volume-x", metadata={"labels": {"kubevirt.io": "hotplug-disk"}})
    assert rules.restore_decision(hotplug).rule == "hotplug-pod"
    plain_pod = obj("v1", "Pod", "virt-launcher-lookalike")
    assert rules.restore_decision(plain_pod).restore


# --- restore time ---

def test_sanitize_metadata_drops_server_set_fields_and_status():
    source = obj("v1", "ConfigMap", "c", metadata={"uid": "u", "resourceVersion": "1", "generation": 2,
                                                  "creationTimestamp": "t", "managedFields": [], "selfLink": "s",
                                                  "labels": {"a": "b"}}, status={"x": 1})
    result = rules.sanitize_metadata(source)
    assert result["metadata"] == {"name": "c", "namespace": "demo", "labels": {"a": "b"}}
    assert "status" not in result


def test_set_aside_owners_are_written_only_with_a_uid_from_this_cluster():
    vm_owner = {**VM_OWNER, "controller": False}
    source = rules.set_aside_owner_references(pvc(ownerReferences=[DV_OWNER, vm_owner]))
    result = rules.remap_owner_references(source, lambda owner, ns: "new-dv" if owner["kind"] == "DataVolume" else None)
    assert result["metadata"]["ownerReferences"] == [{**DV_OWNER, "uid": "new-dv"}]
    # the owner not found stays set aside for a later pass: never written with its old UID, never lost
    assert rules.set_aside_owners(result) == [vm_owner]
    untouched = rules.remap_owner_references(source, lambda owner, ns: None)
    assert untouched == source
    done = rules.remap_owner_references(result, lambda owner, ns: "new-vm")
    assert done["metadata"]["ownerReferences"] == [{**DV_OWNER, "uid": "new-dv"}, {**vm_owner, "uid": "new-vm"}]
    assert "annotations" not in done["metadata"]


def test_an_object_with_no_owner_to_re_point_comes_back_exactly_as_it_was():
    # the annotation as a person or another tool may have written it: kept byte for byte while no owner is found
    spaced = pvc(annotations={rules.OWNER_REFERENCES_ANNOTATION: f"[{json.dumps(DV_OWNER)}]"})
    assert rules.remap_owner_references(spaced, lambda owner, ns: None) == spaced
    bare = {"apiVersion": "v1", "kind": "ConfigMap"}  # nothing set aside: no metadata made up either
    assert rules.remap_owner_references(bare, lambda owner, ns: "uid") == bare
    unreadable = pvc(annotations={rules.OWNER_REFERENCES_ANNOTATION: "[not json"})
    assert rules.set_aside_owners(unreadable) == []
    assert rules.remap_owner_references(unreadable, lambda owner, ns: "uid") == unreadable


def test_live_owner_references_are_kept_as_they_are():
    asked = []
    live = pvc(ownerReferences=[DV_OWNER])
    assert rules.remap_owner_references(live, lambda owner, ns: asked.append(owner) or "other") == live
    assert asked == []
    # a set-aside entry for an owner already live is not written twice (two controllers are rejected)
    both = {**live, "metadata": {**live["metadata"], "annotations": {
        rules.OWNER_REFERENCES_ANNOTATION: '[{"apiVersion":"cdi.kubevirt.io/v1beta1","kind":"DataVolume",'
                                           '"name":"dv1","uid":"old-dv","controller":true}]'}}}
    result = rules.remap_owner_references(both, lambda owner, ns: "new-dv")
    assert result["metadata"]["ownerReferences"] == [DV_OWNER]


def test_restricted_vmi_labels_are_stripped_from_standalone_vmis():
    labels = {label: "x" for label in rules.RESTRICTED_VMI_LABELS} | {"app": "db"}
    standalone = obj("kubevirt.io/v1", "VirtualMachineInstance", "solo", metadata={"labels": labels})
    result = restored(standalone, RestoreContext())
    assert result["metadata"]["labels"] == {"app": "db"}


def test_pvc_binding_annotations_dropped_but_cdi_phase_kept():
    annotations = {key: "x" for key in rules.PVC_BINDING_ANNOTATIONS} | {"cdi.kubevirt.io/storage.pod.phase":
                                                                          "Succeeded"}
    result = restored(obj("v1", "PersistentVolumeClaim", "data", metadata={"annotations": annotations}),
                                  RestoreContext())
    assert result["metadata"]["annotations"] == {"cdi.kubevirt.io/storage.pod.phase": "Succeeded"}


def test_restore_marks_pvc_of_data_volume_populated_for_only_with_evidence():
    with_evidence = pvc(ownerReferences=[DV_OWNER], annotations={rules.POD_PHASE_ANNOTATION: "Succeeded"})
    result = restored(with_evidence, RestoreContext(owner_uid=lambda o, ns: "new"))
    assert result["metadata"]["annotations"][rules.POPULATED_FOR_ANNOTATION] == "dv1"
    blank = restored(pvc(ownerReferences=[DV_OWNER]), RestoreContext())
    assert rules.POPULATED_FOR_ANNOTATION not in (blank["metadata"].get("annotations") or {})


def test_restore_marks_data_volume_prepopulated_from_status_or_restored_pvc():
    assert rules.PREPOPULATED_ANNOTATION in restored(dv("Succeeded"), RestoreContext())["metadata"][
        "annotations"]
    stripped = dv()
    assert rules.PREPOPULATED_ANNOTATION not in (restored(stripped, RestoreContext())["metadata"].get(
        "annotations") or {})
    populated = pvc(annotations={rules.POPULATED_FOR_ANNOTATION: "dv1"})
    with_pvc = RestoreContext(restored_pvc=lambda ns, name: populated if name == "dv1" else None)
    assert restored(stripped, with_pvc)["metadata"]["annotations"][rules.PREPOPULATED_ANNOTATION] == "dv1"


def test_an_unfinished_import_is_never_marked_populated():
    importing = RestoreContext(restored_pvc=lambda ns, name: pvc(annotations={rules.POD_PHASE_ANNOTATION: "Running"}))
    assert rules.PREPOPULATED_ANNOTATION not in (restored(dv(), importing)["metadata"].get(
        "annotations") or {})
    bare = RestoreContext(restored_pvc=lambda ns, name: pvc())  # a PVC that says nothing of its data
    assert rules.PREPOPULATED_ANNOTATION not in (restored(dv(), bare)["metadata"].get(
        "annotations") or {})
    done = RestoreContext(restored_pvc=lambda ns, name: pvc(annotations={rules.POD_PHASE_ANNOTATION: "Succeeded"}))
    # the request's own status wins over the PVC
    assert rules.PREPOPULATED_ANNOTATION not in (restored(dv("ImportInProgress"), done)["metadata"].get(
        "annotations") or {})
    unfinished = pvc(ownerReferences=[DV_OWNER], annotations={rules.POD_PHASE_ANNOTATION: "Pending"})
    assert rules.restore_decision(unfinished).rule == "pvc-never-populated"
    populating = pvc(annotations={rules.CREATED_FOR_DATA_VOLUME_ANNOTATION: "u",
                                  rules.POPULATOR_PROGRESS_ANNOTATION: "42.0%"})
    assert not rules.restore_decision(populating).restore


def test_objects_kubevirt_recreates_are_recognised_after_a_tool_stripped_their_owners():
    vmi_of_vm = obj("kubevirt.io/v1", "VirtualMachineInstance", "vm1",
                    metadata={"annotations": {rules.VM_GENERATION_ANNOTATION: "2"}})
    assert rules.restore_decision(vmi_of_vm).rule == "owned-vmi"
    launcher = obj("v1", "Pod", "virt-launcher-vm1-abcde", metadata={"labels": {"kubevirt.io": "virt-launcher"}})
    assert rules.restore_decision(launcher).rule == "launcher-pod"
    aside = rules.set_aside_owner_references(obj("kubevirt.io/v1", "VirtualMachineInstance", "vm1",
                                                 metadata={"ownerReferences": [VM_OWNER]}))
    assert rules.restore_decision(aside).rule == "owned-vmi"


def test_restore_context_and_system_requests():
    assert rules.in_restore_context(obj("v1", "Pod", "p", metadata={"labels": {rules.RESTORE_LABEL: "r1"}}), None)
    assert rules.in_restore_context(obj("v1", "Pod", "p", metadata={"labels": {rules.VELERO_RESTORE_LABEL: "r"}}),
                                    None)
    assert rules.in_restore_context(obj("v1", "Pod", "p"), {rules.RESTORE_MODE_NAMESPACE_LABEL: "enabled"})
    assert not rules.in_restore_context(obj("v1", "Pod", "p"), {"other": "x"})
    system = rules.DEFAULT_SYSTEM_NAMESPACES
    assert rules.is_system_request("system:serviceaccount:kubevirt:kubevirt-controller", system)
    assert rules.is_system_request("system:serviceaccount:openshift-cnv:cdi-sa", system)
    assert not rules.is_system_request("system:serviceaccount:velero:velero", system)
    assert not rules.is_system_request("kubevirt-controller", system)
    assert not rules.is_system_request("system:serviceaccounX:kubevirt:kubevirt-controller", system)
    # the same account name in a tenant's namespace is anyone's
    assert not rules.is_system_request("system:serviceaccount:tenant:kubevirt-controller", system)
    assert rules.is_system_request("system:serviceaccount:virt:cdi-sa", ("virt",))


def test_owner_references_set_aside_for_apply_and_restored_with_new_uids():
    source = pvc(ownerReferences=[DV_OWNER])
    aside = rules.set_aside_owner_references(source)
    assert "ownerReferences" not in aside["metadata"]
    assert rules.owner_references(aside) == [DV_OWNER]
    assert rules.data_volume_owner(aside) == "dv1"
    repointed = restored(aside, RestoreContext(owner_uid=lambda owner, ns: "new-dv"))
    assert repointed["metadata"]["ownerReferences"] == [{**DV_OWNER, "uid": "new-dv"}]
    assert rules.OWNER_REFERENCES_ANNOTATION not in (repointed["metadata"].get("annotations") or {})
    waiting = restored(aside, RestoreContext())
    assert "ownerReferences" not in waiting["metadata"] and rules.owner_references(waiting) == [DV_OWNER]


def test_data_volume_with_a_generated_name_is_not_marked():
    generated = obj("cdi.kubevirt.io/v1beta1", "DataVolume", "", metadata={"generateName": "dv-"},
                    status={"phase": "Succeeded"})
    result = restored(generated, RestoreContext())
    assert rules.PREPOPULATED_ANNOTATION not in (result["metadata"].get("annotations") or {})


def test_rules_copy_objects_at_every_level_and_values_of_other_types_too():
    from datetime import datetime, timezone

    from kubectl_kvbackup.rules.objects import copy_object

    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)  # an unquoted timestamp in a YAML manifest
    original = {"metadata": {"name": "vm", "labels": {"a": "b"}, "created": created, "ids": {1, 2}},
                "spec": {"volumes": [{"name": "root", "sizes": [1, 2.5, True, None]}, ["nested"]]}}
    copied = copy_object(original)
    assert copied == original
    copied["metadata"]["labels"]["a"] = "changed"
    copied["metadata"]["ids"].add(3)
    copied["spec"]["volumes"][0]["sizes"].append(4)
    copied["spec"]["volumes"][1].append("more")
    copied["spec"]["volumes"].append({})
    assert original == {"metadata": {"name": "vm", "labels": {"a": "b"}, "created": created, "ids": {1, 2}},
                        "spec": {"volumes": [{"name": "root", "sizes": [1, 2.5, True, None]}, ["nested"]]}}

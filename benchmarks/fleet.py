"""A synthetic fleet of running VMs, each with the dependents a real one has, for benchmarks."""

from __future__ import annotations

from typing import Any


def vm_with_dependents(i: int, namespace: str = "bench") -> list[dict[str, Any]]:
    """A running VM with 6 dependents: DataVolume, PVC, cloud-init Secret, ConfigMap, VMI, launcher pod."""
    name = f"vm-{i:05d}"
    vm_uid, vmi_uid, dv_uid = (f"{i:08d}-0000-4000-8000-{n:012d}" for n in (1, 2, 3))
    meta = {"name": name, "namespace": namespace}

    def owned_by(kind: str, api_version: str, owner: str, uid: str) -> dict[str, Any]:
        return {"ownerReferences": [{"apiVersion": api_version, "kind": kind, "name": owner, "uid": uid,
                                     "controller": True}]}

    return [
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {**meta, "uid": vm_uid,
                                                                                "labels": {"fleet": "bench"}},
         "spec": {"runStrategy": "Always",
                  "dataVolumeTemplates": [{"metadata": {"name": f"{name}-root"}, "spec": {}}],
                  "template": {"spec": {"domain": {"devices": {}}, "volumes": [
                      {"name": "root", "dataVolume": {"name": f"{name}-root"}},
                      {"name": "ci", "cloudInitNoCloud": {"secretRef": {"name": f"{name}-userdata"}}},
                      {"name": "cfg", "configMap": {"name": f"{name}-config"}}]}}},
         "status": {"created": True}},
        {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
         "metadata": {**meta, "name": f"{name}-root", "uid": dv_uid,
                      **owned_by("VirtualMachine", "kubevirt.io/v1", name, vm_uid)},
         "spec": {}, "status": {"phase": "Succeeded"}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {**meta, "name": f"{name}-root",
                      **owned_by("DataVolume", "cdi.kubevirt.io/v1beta1", f"{name}-root", dv_uid)},
         "spec": {"accessModes": ["ReadWriteOnce"]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {**meta, "name": f"{name}-userdata"},
         "stringData": {"userdata": "#cloud-config"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {**meta, "name": f"{name}-config"}, "data": {}},
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
         "metadata": {**meta, "uid": vmi_uid, **owned_by("VirtualMachine", "kubevirt.io/v1", name, vm_uid)},
         "spec": {"volumes": [{"name": "root", "dataVolume": {"name": f"{name}-root"}}]},
         "status": {"phase": "Running", "conditions": [{"type": "AgentConnected", "status": "True"}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {**meta, "name": f"virt-launcher-{name}-abcde",
                      "labels": {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": vmi_uid},
                      **owned_by("VirtualMachineInstance", "kubevirt.io/v1", name, vmi_uid)},
         "spec": {"containers": [{"name": "compute", "image": "virt-launcher"}]}},
    ]


def fleet(count: int, namespace: str = "bench") -> list[dict[str, Any]]:
    return [o for i in range(count) for o in vm_with_dependents(i, namespace)]

"""The webhook's registration runs before every other mutating webhook of the ecosystem that touches what it reviews.

kube-apiserver calls mutating configurations one after the other, sorted by name (kubernetes,
staging/src/k8s.io/apiserver/pkg/admission/configuration/mutating_webhook_manager.go: ``sort.SliceStable`` with
``MutatingWebhookConfigurationSorter.ByName``). CDI's clone authorization must see ``prePopulated`` already set and
KubeMacPool the MAC address the restore rules chose, so ours must come first; reinvocation runs our rules again when a
later webhook changes the object.
"""

from __future__ import annotations

import pytest

from kubectl_kvbackup import kinds, manifests, rules

from .test_webhook_e2e import VELERO, as_user, cluster, create, data_volume  # noqa: F401 (cluster: a fixture)

#: Mutating configurations that act on PVCs, DataVolumes, VMs, VMIs or pods, as their projects name them.
ECOSYSTEM = {
    # CDI: pkg/operator/resources/cluster/apiserver.go (DataVolumes, clone authorization) and
    # pkg/operator/controller/callbacks.go (PVC rendering)
    "cdi-api-datavolume-mutate": "kubevirt/containerized-data-importer",
    "cdi-api-pvc-mutate": "kubevirt/containerized-data-importer",
    # KubeMacPool: pkg/names/names.go MUTATE_WEBHOOK_CONFIG, config/release/kubemacpool.yaml (VM and pod MACs)
    "kubemacpool-mutator": "k8snetworkplumbingwg/kubemacpool",
    # KubeVirt: pkg/virt-operator/resource/generate/components/webhooks.go VirtAPIMutatingWebhookName (VMs, VMIs,
    # migrations) and VirtLauncherPodMutatingWebhookName (launcher pods)
    "virt-api-mutator": "kubevirt/kubevirt",
    "virt-launcher-pod-mutator": "kubevirt/kubevirt",
    # KubeVirt IPAM extensions: config/default/kustomization.yaml namePrefix + mutating-webhook-configuration (pods)
    "kubevirt-ipam-controller-mutating-webhook-configuration": "kubevirt/ipam-extensions",
    # HCO / OpenShift Virtualization: controllers/handlers/aie/common.go (pods); OLM names the CSV's webhooks
    # (deploy/index-image/.../kubevirt-hyperconverged-operator.*.clusterserviceversion.yaml generateName) with a
    # suffix after these prefixes (namespaces, HyperConverged)
    "kubevirt-aie-webhook": "kubevirt/hyperconverged-cluster-operator",
    "mutate-ns-hco.kubevirt.io": "kubevirt/hyperconverged-cluster-operator",
    "mutate-hyperconverged-hco.kubevirt.io": "kubevirt/hyperconverged-cluster-operator",
    "mutate-hyperconverged-hco-v1beta1.kubevirt.io": "kubevirt/hyperconverged-cluster-operator",
    # cert-manager: deploy/charts/cert-manager/templates/webhook-mutating-webhook.yaml ("webhook.fullname")
    "cert-manager-webhook": "cert-manager/cert-manager",
    # istio: manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml (pods; with a revision
    # or namespace suffix when not the default)
    "istio-sidecar-injector": "istio/istio",
    # linkerd: charts/linkerd-control-plane/templates/proxy-injector-rbac.yaml (pods)
    "linkerd-proxy-injector-webhook-config": "linkerd/linkerd2",
    # Velero registers no admission webhook of its own (vmware-tanzu/velero: only a restore item action for
    # webhook configurations, pkg/restore/actions/admissionwebhook_config_action.go)
}


@pytest.mark.parametrize("other", sorted(ECOSYSTEM))
def test_our_registration_is_called_before(other: str) -> None:
    assert manifests.CONFIGURATION_NAME < other
    # and before the names OLM, istio revisions and Helm release prefixes derive from them
    assert manifests.CONFIGURATION_NAME < other[:1]


def test_every_webhook_is_reinvoked_when_a_later_one_changes_the_object() -> None:
    configuration = next(o for o in manifests.render(manifests.Settings())
                         if o["kind"] == "MutatingWebhookConfiguration")
    assert configuration["metadata"]["name"] == manifests.CONFIGURATION_NAME
    assert {w["reinvocationPolicy"] for w in configuration["webhooks"]} == {"IfNeeded"}


def test_cdi_is_sent_the_datavolume_as_the_restore_rules_left_it(cluster, tmp_path) -> None:
    ours = cluster.get_object("admissionregistration.k8s.io", "MutatingWebhookConfiguration", "",
                              manifests.CONFIGURATION_NAME)
    # a registration named as CDI's, served by the same webhook process: only the names decide the order, and what
    # it is sent shows what CDI would see
    cluster.add({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                 "metadata": {"name": "cdi-api-datavolume-mutate"},
                 "webhooks": [{"name": "datavolume-mutate.cdi.kubevirt.io", "admissionReviewVersions": ["v1"],
                               "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 5,
                               "clientConfig": ours["webhooks"][0]["clientConfig"],
                               "rules": [{"apiGroups": ["cdi.kubevirt.io"], "apiVersions": ["*"],
                                          "operations": ["CREATE"], "resources": ["datavolumes"],
                                          "scope": "Namespaced"}]}]})
    create(as_user(cluster, tmp_path, VELERO), kinds.DATA_VOLUME, data_volume("root"))
    calls = [call for call in cluster.admission_calls if call.kind == "DataVolume"]
    assert [call.webhook for call in calls][:2] == ["velero-restore.kvbackup.kubevirt.io",
                                                    "datavolume-mutate.cdi.kubevirt.io"]
    seen_by_cdi = calls[1].review["request"]["object"]["metadata"].get("annotations") or {}
    assert seen_by_cdi.get(rules.PREPOPULATED_ANNOTATION) == "root"

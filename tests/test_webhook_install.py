"""``kubectl kvbackup webhook render|install|uninstall``, deploy/ agreeing with them, the Dockerfile, packaging."""

from __future__ import annotations

import base64
import io
import os
import re
import tomllib
from contextlib import redirect_stdout
from typing import Any, Iterator

import pytest
import yaml
from cryptography import x509

from kubectl_kvbackup import certs, manifests, rules
from kubectl_kvbackup.cli.main import main
from kubectl_kvbackup.cli.webhook import deployment_available, parse_server_version

from .fakeapi import cel, discovery
from .helpers import REPO, RolloutController

DEPLOY = os.path.join(REPO, "deploy")
REGISTRATION = ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")


@pytest.fixture
def cluster(fake_api) -> Iterator[Any]:
    """The fake API server with Deployments rolling out as in a cluster."""
    with RolloutController(fake_api) as controller:
        fake_api.rollouts = controller
        yield fake_api


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {obj["kind"]: obj for obj in objects}


def test_deploy_base_is_exactly_the_rendered_manifests() -> None:
    with open(os.path.join(DEPLOY, "base", "kustomization.yaml"), encoding="utf-8") as f:
        resources = yaml.safe_load(f)["resources"]
    objects = []
    for resource in resources:
        with open(os.path.join(DEPLOY, "base", resource), encoding="utf-8") as f:
            objects += [doc for doc in yaml.safe_load_all(f) if doc]
    assert objects == manifests.render(manifests.Settings()), \
        "deploy/base is stale: regenerate it with kubectl kvbackup webhook render --without-tls"


def test_cert_manager_overlay_issues_the_certificate_the_base_mounts_and_injects_its_ca() -> None:
    overlay = os.path.join(DEPLOY, "overlays", "cert-manager")
    with open(os.path.join(overlay, "kustomization.yaml"), encoding="utf-8") as f:
        kustomization = yaml.safe_load(f)
    with open(os.path.join(overlay, "certificates.yaml"), encoding="utf-8") as f:
        issued = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(f) if doc["kind"] == "Certificate"}
    settings = manifests.Settings()
    serving = issued["kvbackup-webhook-serving"]
    assert serving["spec"]["secretName"] == manifests.SECRET_NAME
    assert serving["spec"]["dnsNames"] == manifests.dns_names(settings)
    assert issued["kvbackup-webhook-ca"]["spec"]["isCA"] is True
    assert "../../base" in kustomization["resources"]
    patch = yaml.safe_load(kustomization["patches"][0]["patch"])
    assert kustomization["patches"][0]["target"]["name"] == manifests.CONFIGURATION_NAME
    assert patch[0]["value"] == {"cert-manager.io/inject-ca-from": f"{settings.namespace}/kvbackup-webhook-serving"}


def test_render_prints_a_complete_install_with_a_verifiable_certificate() -> None:
    code, out = run("webhook", "render", "-n", "backup-ops", "--image", "registry.example/w:1")
    assert code == 0
    objects = list(yaml.safe_load_all(out))
    kinds = by_kind(objects)
    assert [o["kind"] for o in objects][-1] == "MutatingWebhookConfiguration"
    secret = kinds["Secret"]
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sans == ["kvbackup-webhook.backup-ops.svc", "kvbackup-webhook.backup-ops.svc.cluster.local"]
    for webhook in kinds["MutatingWebhookConfiguration"]["webhooks"]:
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca_pem
        assert webhook["clientConfig"]["service"] == {"name": "kvbackup-webhook", "namespace": "backup-ops",
                                                      "path": "/mutate", "port": 443}
        assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == ["backup-ops", "kube-system"]
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/w:1"


def test_render_refuses_a_shared_namespace() -> None:
    assert run("webhook", "render", "--namespace", "kube-system")[0] == 2


def test_webhooks_select_each_restore_context_once_and_never_kubevirt_or_cdi() -> None:
    webhooks = by_kind(manifests.render(manifests.Settings()))["MutatingWebhookConfiguration"]["webhooks"]
    assert [w["name"] for w in webhooks] == ["restore-label.kvbackup.kubevirt.io",
                                             "velero-restore.kvbackup.kubevirt.io",
                                             "restore-mode-namespace.kvbackup.kubevirt.io"]
    for webhook in webhooks:
        assert (webhook["failurePolicy"], webhook["timeoutSeconds"], webhook["sideEffects"]) == ("Fail", 5, "None")
        assert webhook["admissionReviewVersions"] == ["v1"]
        pattern = re.search(r"matches\('(.*)'\)", webhook["matchConditions"][0]["expression"]).group(1)
        for account in rules.SYSTEM_SERVICE_ACCOUNT_NAMES:  # the CEL regex (RE2) means what Python's means here
            assert re.search(pattern, f"system:serviceaccount:kubevirt:{account}")
        assert not re.search(pattern, "system:serviceaccount:velero:velero")
        assert webhook["matchConditions"][0]["expression"].startswith("!")
    # objects with both labels, or a label in an opted-in namespace, match exactly one webhook
    restore_label, velero, namespace = (w["objectSelector"]["matchExpressions"] for w in webhooks)
    assert {"key": rules.RESTORE_LABEL, "operator": "DoesNotExist"} in velero
    assert {"key": rules.RESTORE_LABEL, "operator": "DoesNotExist"} in namespace
    assert {"key": rules.VELERO_RESTORE_LABEL, "operator": "DoesNotExist"} in namespace


def test_deployment_is_highly_available_non_root_and_read_only() -> None:
    kinds = by_kind(manifests.render(manifests.Settings()))
    deployment = kinds["Deployment"]["spec"]
    pod = deployment["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["replicas"] == 2
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)["secret"]
    assert secret_volume["secretName"] == manifests.SECRET_NAME
    assert secret_volume["defaultMode"] & 0o007 == 0  # never world-readable


def test_cluster_role_is_read_only() -> None:
    role = by_kind(manifests.render(manifests.Settings()))["ClusterRole"]
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}
    assert all("secrets" not in rule["resources"] and "*" not in rule["resources"] for rule in role["rules"])


def test_install_creates_everything_keeps_a_valid_certificate_and_uninstall_removes_it(cluster, kubeconfig) -> None:
    fake_api = cluster
    code, out = run("webhook", "install", "--kubeconfig", kubeconfig)
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "mutatingwebhookconfiguration/00-kvbackup-restore-rules serverside-applied"
    assert fake_api.get_object("networking.k8s.io", "NetworkPolicy", "kvbackup-system", "kvbackup-webhook")
    secret = fake_api.get_object("", "Secret", "kvbackup-system", manifests.SECRET_NAME)
    configuration = fake_api.get_object("admissionregistration.k8s.io", "MutatingWebhookConfiguration", "",
                                        manifests.CONFIGURATION_NAME)
    assert fake_api.get_object("apps", "Deployment", "kvbackup-system", "kvbackup-webhook") is not None
    assert configuration["webhooks"][0]["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]

    assert run("webhook", "install", "--kubeconfig", kubeconfig)[0] == 0  # again: the certificate is kept
    assert fake_api.get_object("", "Secret", "kvbackup-system", manifests.SECRET_NAME)["data"] == secret["data"]

    code, out = run("webhook", "uninstall", "--kubeconfig", kubeconfig)
    assert code == 0
    assert fake_api.get_object("admissionregistration.k8s.io", "MutatingWebhookConfiguration", "",
                               manifests.CONFIGURATION_NAME) is None
    # a deleted namespace terminates first; the namespace controller removes it once it is empty
    assert fake_api.get_object("", "Namespace", "", "kvbackup-system")["status"]["phase"] == "Terminating"
    fake_api.settle()
    assert fake_api.get_object("", "Namespace", "", "kvbackup-system") is None
    assert fake_api.objects("rbac.authorization.k8s.io", "ClusterRole") == []


def test_install_renews_a_certificate_close_to_expiry_and_leaves_a_foreign_namespace(cluster, kubeconfig) -> None:
    fake_api = cluster
    fake_api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops", "labels": {"team": "a"}}})
    old = certs.issue(manifests.dns_names(manifests.Settings(namespace="ops")), serving_days=10)
    fake_api.add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": manifests.SECRET_NAME, "namespace": "ops"},
                  "data": {"ca.crt": base64.b64encode(old.ca_pem).decode(),
                           "tls.crt": base64.b64encode(old.cert_pem).decode(),
                           "tls.key": base64.b64encode(old.key_pem).decode()}})
    code, out = run("webhook", "install", "--namespace", "ops", "--kubeconfig", kubeconfig)
    assert code == 0 and "namespace/ops exists, left as it is" in out
    renewed = fake_api.get_object("", "Secret", "ops", manifests.SECRET_NAME)["data"]
    assert base64.b64decode(renewed["tls.crt"]) != old.cert_pem
    # during the switch the API server trusts the new CA and the old one, which the pods still serve with
    registration = fake_api.objects("admissionregistration.k8s.io", "MutatingWebhookConfiguration")[0]
    assert {base64.b64decode(w["clientConfig"]["caBundle"]) for w in registration["webhooks"]} == {
        base64.b64decode(renewed["ca.crt"]) + old.ca_pem}
    run("webhook", "install", "--namespace", "ops", "--kubeconfig", kubeconfig)
    registration = fake_api.objects("admissionregistration.k8s.io", "MutatingWebhookConfiguration")[0]
    assert {base64.b64decode(w["clientConfig"]["caBundle"]) for w in registration["webhooks"]} == {
        base64.b64decode(renewed["ca.crt"])}
    assert fake_api.get_object("", "Namespace", "", "ops")["metadata"]["labels"] == {"team": "a"}
    assert run("webhook", "uninstall", "--namespace", "ops", "--kubeconfig", kubeconfig)[0] == 0
    assert fake_api.get_object("", "Namespace", "", "ops") is not None


def test_install_against_an_unreachable_cluster_is_one_clear_error(tmp_path, capsys) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    assert run("webhook", "install", "--kubeconfig", str(config), "--request-timeout", "2s")[0] == 1
    err = capsys.readouterr().err
    assert "Unable to connect to the server" in err and "Traceback" not in err


def test_dockerfile_is_pinned_non_root_and_built_from_project_files_only() -> None:
    with open(os.path.join(REPO, "Dockerfile"), encoding="utf-8") as f:
        dockerfile = f.read()
    with open(os.path.join(REPO, ".dockerignore"), encoding="utf-8") as f:
        ignore = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base)
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)[-1]
    assert user.split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["kvbackup-webhook", "--no-control-socket"]' in dockerfile
    assert ignore[0] == "*"
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for path in source.split():
            assert os.path.exists(os.path.join(REPO, path)), path
            assert f"!{path.rstrip('/')}/" in ignore or f"!{path}" in ignore, path


def test_every_package_is_packaged() -> None:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    packages = set(setuptools["packages"])
    assert setuptools["package-dir"]["kvbackup_webhook"] == "webhook" and "kvbackup_webhook" in packages
    for folder, _, files in os.walk(os.path.join(REPO, "kubectl_kvbackup")):
        if "__init__.py" in files:
            assert os.path.relpath(folder, REPO).replace(os.sep, ".") in packages


@pytest.mark.parametrize("action", ["render", "install", "uninstall"])
def test_help_for_every_action(action: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["webhook", action, "--help"])
    assert exit_.value.code == 0
    assert "-n NAMESPACE, --namespace NAMESPACE" in capsys.readouterr().out


def test_render_writes_no_yaml_anchors_or_aliases() -> None:
    code, out = run("webhook", "render")
    assert code == 0
    # the three webhooks share selector and rule objects in memory; each must be written out in full
    events = list(yaml.parse(out))
    assert [e for e in events if isinstance(e, yaml.AliasEvent)] == []
    assert [e for e in events if getattr(e, "anchor", None)] == []
    webhooks = by_kind(list(yaml.safe_load_all(out)))["MutatingWebhookConfiguration"]["webhooks"]
    assert webhooks[0]["rules"] == webhooks[1]["rules"] and len(webhooks[0]["rules"]) == 3


def _review_by(username: str) -> dict:
    return {"userInfo": {"username": username, "groups": ["system:serviceaccounts"]}, "operation": "CREATE"}


def test_system_namespaces_alone_exempt_kubevirt_and_cdi_accounts() -> None:
    code, out = run("webhook", "render", "--system-namespaces", "virt-prod,cdi-prod")
    assert code == 0
    kinds = by_kind(list(yaml.safe_load_all(out)))
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "KVBACKUP_WEBHOOK_SYSTEM_NAMESPACES", "value": "virt-prod,cdi-prod"} in container["env"]
    for webhook in kinds["MutatingWebhookConfiguration"]["webhooks"]:
        conditions = webhook["matchConditions"]
        # evaluated as CEL, as kube-apiserver does: a condition that holds sends the request to the webhook
        for namespace in ("virt-prod", "cdi-prod"):
            for account in rules.SYSTEM_SERVICE_ACCOUNT_NAMES:
                assert not cel.conditions_hold(conditions, _review_by(f"system:serviceaccount:{namespace}:{account}"))
        for username in ("system:serviceaccount:tenant:kubevirt-controller", "system:serviceaccount:kubevirt:cdi-sa",
                         "system:serviceaccount:virt-prod:velero", "system:serviceaccount:virt-prod-x:cdi-sa",
                         "kubevirt-controller"):
            assert cel.conditions_hold(conditions, _review_by(username)), username


def test_default_system_namespaces_are_kubevirt_cdi_and_openshift_virtualization() -> None:
    configuration = by_kind(manifests.render(manifests.Settings()))["MutatingWebhookConfiguration"]
    conditions = configuration["webhooks"][0]["matchConditions"]
    for namespace in ("kubevirt", "cdi", "openshift-cnv"):
        assert not cel.conditions_hold(conditions, _review_by(f"system:serviceaccount:{namespace}:cdi-sa"))
    assert cel.conditions_hold(conditions, _review_by("system:serviceaccount:default:cdi-sa"))


@pytest.mark.parametrize("flag", ["--system-namespaces", "--metrics-namespaces", "--namespace"])
def test_a_namespace_flag_with_a_bad_name_is_a_usage_error(flag: str, capsys) -> None:
    assert run("webhook", "render", flag, "kubevirt,Bad|(.*)")[0] == 2
    assert "is not a namespace name" in capsys.readouterr().err


def test_network_policy_admits_the_webhook_port_and_metrics_only_from_monitoring() -> None:
    kinds = by_kind(manifests.render(manifests.Settings(metrics_namespaces=("prometheus",))))
    policy = kinds["NetworkPolicy"]["spec"]
    pod = kinds["Deployment"]["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports == {"https": manifests.PORT, "metrics": manifests.METRICS_PORT}
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    webhook_rule, metrics_rule = policy["ingress"]
    # kube-apiserver's address is no pod's: the webhook port is open to every source, and only that port
    assert webhook_rule == {"ports": [{"protocol": "TCP", "port": 8443}]}
    assert metrics_rule["ports"] == [{"protocol": "TCP", "port": 9443}]
    assert metrics_rule["from"] == [{"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["prometheus"]}]}}]
    without_metrics = by_kind(manifests.render(manifests.Settings(metrics_namespaces=())))["NetworkPolicy"]
    assert without_metrics["spec"]["ingress"] == [webhook_rule]


def test_metrics_are_served_on_their_own_port_and_probes_over_https_on_the_webhook_port() -> None:
    kinds = by_kind(manifests.render(manifests.Settings()))
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "KVBACKUP_WEBHOOK_METRICS_BIND", "value": "0.0.0.0:9443"} in container["env"]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in kinds["Service"]["spec"]["ports"]}
    assert service_ports == {"https": (443, "https"), "metrics": (9443, "metrics")}
    assert all(w["clientConfig"]["service"]["port"] == 443 for w in kinds["MutatingWebhookConfiguration"]["webhooks"])


def test_cluster_role_and_binding_are_named_after_the_namespace() -> None:
    first, second = (by_kind(manifests.render(manifests.Settings(namespace=ns))) for ns in ("ops-a", "ops-b"))
    assert first["ClusterRole"]["metadata"]["name"] == "kvbackup-webhook-ops-a"
    assert second["ClusterRole"]["metadata"]["name"] == "kvbackup-webhook-ops-b"
    binding = first["ClusterRoleBinding"]
    assert binding["metadata"]["name"] == binding["roleRef"]["name"] == "kvbackup-webhook-ops-a"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kvbackup-webhook", "namespace": "ops-a"}]


def test_a_second_install_in_another_namespace_is_refused_and_takes_nothing_from_the_first(cluster, kubeconfig,
                                                                                           capsys) -> None:
    assert run("webhook", "install", "-n", "ops-a", "--kubeconfig", kubeconfig)[0] == 0
    before = {kind: cluster.objects(*kind) for kind in (REGISTRATION, ("rbac.authorization.k8s.io", "ClusterRole"),
                                                        ("rbac.authorization.k8s.io", "ClusterRoleBinding"))}
    code, _ = run("webhook", "install", "-n", "ops-b", "--kubeconfig", kubeconfig)
    err = capsys.readouterr().err
    assert code == 1 and "already installed in namespace ops-a" in err and "uninstall -n ops-a" in err
    assert cluster.get_object("", "Namespace", "", "ops-b") is None
    assert {kind: cluster.objects(*kind) for kind in before} == before
    # nor does an uninstall aimed at the other namespace take the registration away
    code, out = run("webhook", "uninstall", "-n", "ops-b", "--kubeconfig", kubeconfig)
    assert code == 0 and "belongs to the webhook in namespace ops-a, left as it is" in out
    assert cluster.objects(*REGISTRATION) == before[REGISTRATION]


@pytest.mark.parametrize("version, expected", [
    ({"major": "1", "minor": "31", "gitVersion": "v1.31.0"}, (1, 31)),
    ({"major": "", "minor": "", "gitVersion": "v1.23.17"}, (1, 23)),  # some builds leave major and minor empty
    ({"major": "1", "minor": "28+", "gitVersion": "v1.28.15-gke.1159000"}, (1, 28)),
    ({"major": "1", "minor": "30+", "gitVersion": "v1.30.2-eks-1de2ab1"}, (1, 30)),
    ({"major": "1", "minor": "29", "gitVersion": "v1.29.4+k3s1"}, (1, 29)),
    ({"major": "1", "minor": "27+", "gitVersion": ""}, (1, 27)),
    ({"major": "", "minor": "", "gitVersion": ""}, None),
    ({}, None),
])
def test_server_version_is_read_from_git_version_first(version: dict, expected) -> None:
    assert parse_server_version(version) == expected


@pytest.mark.parametrize("major, minor, git_version", [
    ("", "", "v1.23.17"),                     # the real v1.23 build that once got a half install
    ("1", "27+", "v1.27.16-eks-2f008fe"),
    ("", "", ""),                             # no version at all: refused rather than guessed
])
def test_install_refuses_an_api_server_without_match_conditions_before_creating_anything(
        cluster, kubeconfig, capsys, monkeypatch, major: str, minor: str, git_version: str) -> None:
    monkeypatch.setitem(discovery.VERSION, "major", major)
    monkeypatch.setitem(discovery.VERSION, "minor", minor)
    monkeypatch.setitem(discovery.VERSION, "gitVersion", git_version)
    code = main(["webhook", "install", "--kubeconfig", kubeconfig])
    err = capsys.readouterr().err
    assert code == 1 and "1.28 or newer" in err and "nothing was installed" in err and git_version in err
    assert [r.method for r in cluster.requests if r.method != "GET"] == []
    assert cluster.get_object("", "Namespace", "", manifests.DEFAULT_NAMESPACE) is None


def test_install_accepts_a_managed_cluster_with_a_suffixed_version(cluster, kubeconfig, monkeypatch) -> None:
    monkeypatch.setitem(discovery.VERSION, "minor", "30+")
    monkeypatch.setitem(discovery.VERSION, "gitVersion", "v1.30.2-eks-1de2ab1")
    assert run("webhook", "install", "--kubeconfig", kubeconfig)[0] == 0
    assert cluster.objects(*REGISTRATION)


def test_install_registers_the_webhook_only_once_its_deployment_is_available(cluster, kubeconfig) -> None:
    code, out = run("webhook", "install", "--kubeconfig", kubeconfig)
    assert code == 0, out
    assert cluster.rollouts.registered_before_available == [False]
    assert cluster.objects(*REGISTRATION)


def test_install_gives_up_unregistered_when_the_deployment_never_becomes_available(fake_api, kubeconfig,
                                                                                     capsys) -> None:
    # no RolloutController: the pods never start
    code, _ = run("webhook", "install", "--timeout", "1s", "--kubeconfig", kubeconfig)
    err = capsys.readouterr().err
    assert code == 1 and "deployment kvbackup-system/kvbackup-webhook is not available after 1s" in err
    assert "the webhook was not registered" in err and "Traceback" not in err
    assert fake_api.get_object("apps", "Deployment", "kvbackup-system", "kvbackup-webhook") is not None
    assert fake_api.objects(*REGISTRATION) == []


def test_install_timeout_is_checked_as_a_duration(kubeconfig) -> None:
    assert run("webhook", "install", "--timeout", "soon", "--kubeconfig", kubeconfig)[0] == 2


def test_install_refuses_a_namespace_being_deleted(cluster, kubeconfig, capsys) -> None:
    cluster.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops", "labels": manifests.MANAGED_BY},
                 "status": {"phase": "Terminating"}})
    code = main(["webhook", "install", "-n", "ops", "--kubeconfig", kubeconfig])
    err = capsys.readouterr().err
    assert code == 1 and "namespace ops is being deleted" in err and "nothing was installed" in err
    assert [r.method for r in cluster.requests if r.method != "GET"] == []


@pytest.mark.parametrize("rollout", [
    ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, True),
    ({"observedGeneration": 0, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, False),  # old spec
    ({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}, False),  # old pod left
    ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}, False),
    ({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}, False),  # 1 of 2
    ({}, False),
])
def test_a_deployment_is_available_when_rolled_out(rollout: tuple[dict, bool]) -> None:
    status, expected = rollout
    deployment = {"metadata": {"generation": 1}, "spec": {"replicas": 2}, "status": status}
    assert deployment_available(deployment) is expected


def test_install_replaces_what_an_earlier_release_named_differently(cluster, kubeconfig) -> None:
    legacy = manifests.render(manifests.Settings())
    registration = by_kind(legacy)["MutatingWebhookConfiguration"]
    registration["metadata"]["name"] = "kvbackup-restore-rules"
    role, binding = by_kind(legacy)["ClusterRole"], by_kind(legacy)["ClusterRoleBinding"]
    role["metadata"]["name"] = binding["metadata"]["name"] = binding["roleRef"]["name"] = "kvbackup-webhook"
    cluster.add_all([registration, role, binding])
    assert run("webhook", "install", "--kubeconfig", kubeconfig)[0] == 0
    assert [c["metadata"]["name"] for c in cluster.objects(*REGISTRATION)] == [manifests.CONFIGURATION_NAME]
    assert [r["metadata"]["name"] for r in cluster.objects("rbac.authorization.k8s.io", "ClusterRole")] == [
        "kvbackup-webhook-kvbackup-system"]
    assert [r["metadata"]["name"] for r in cluster.objects("rbac.authorization.k8s.io", "ClusterRoleBinding")] == [
        "kvbackup-webhook-kvbackup-system"]


def test_install_leaves_an_earlier_release_of_another_namespace(cluster, kubeconfig) -> None:
    legacy = by_kind(manifests.render(manifests.Settings(namespace="ops-old")))
    role, binding = legacy["ClusterRole"], legacy["ClusterRoleBinding"]
    role["metadata"]["name"] = binding["metadata"]["name"] = binding["roleRef"]["name"] = "kvbackup-webhook"
    cluster.add_all([role, binding])
    assert run("webhook", "install", "--kubeconfig", kubeconfig)[0] == 0
    assert cluster.get_object("rbac.authorization.k8s.io", "ClusterRoleBinding", "", "kvbackup-webhook") is not None


def _pins(path: str) -> dict[str, list[str]]:
    """name -> hashes of a pip-compile lock file."""
    pins: dict[str, list[str]] = {}
    name = ""
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        for line in f:
            pinned = re.match(r"^([A-Za-z0-9._-]+)==\S+", line)
            if pinned:
                name = re.sub(r"[-_.]+", "-", pinned.group(1)).lower()
                pins[name] = []
            hashed = re.search(r"--hash=sha256:([0-9a-f]{64})", line)
            if hashed and name:
                pins[name].append(hashed.group(1))
    return pins


def test_the_image_installs_only_hash_pinned_dependencies() -> None:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    runtime, build = _pins("deploy/image/requirements.txt"), _pins("deploy/image/build-requirements.txt")
    for requirement in project["project"]["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()
        assert name in runtime, f"{name} is not in deploy/image/requirements.txt: run deploy/image/lock.sh"
    assert all(runtime.values()) and all(build.values())  # every pin carries its hashes
    assert "setuptools" in build
    with open(os.path.join(REPO, "Dockerfile"), encoding="utf-8") as f:
        dockerfile = f.read()
    installs = re.findall(r"pip install [^&\n]*-r (\S+)", dockerfile)
    assert sorted(installs) == ["build-requirements.txt", "requirements.txt"]
    assert len(re.findall(r"pip install --require-hashes --no-deps -r", dockerfile)) == 2
    assert "--no-build-isolation --no-index" in dockerfile  # the project's own wheel fetches nothing unpinned


def test_ci_smoke_tests_the_image_after_the_readme_tests() -> None:
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    assert ci.index('eval "$test_command"') < ci.index("deploy/image/build-and-smoke.sh")
    assert os.access(os.path.join(REPO, "deploy", "image", "build-and-smoke.sh"), os.X_OK)

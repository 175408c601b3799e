"""``kubectl kvbackup webhook render|install|uninstall``, deploy/ agreeing with them, the Dockerfile, packaging."""

from __future__ import annotations

import base64
import io
import os
import re
import tomllib
from contextlib import redirect_stdout

import pytest
import yaml
from cryptography import x509

from kubectl_kvbackup import certs, manifests, rules
from kubectl_kvbackup.cli.main import main

from .helpers import REPO

DEPLOY = os.path.join(REPO, "deploy")


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
    code, out = run("webhook", "render", "--namespace", "backup-ops", "--image", "registry.example/w:1")
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


def test_install_creates_everything_keeps_a_valid_certificate_and_uninstall_removes_it(fake_api, kubeconfig) -> None:
    code, out = run("webhook", "install", "--kubeconfig", kubeconfig)
    assert code == 0, out
    assert "mutatingwebhookconfiguration/kvbackup-restore-rules serverside-applied" in out
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


def test_install_renews_a_certificate_close_to_expiry_and_leaves_a_foreign_namespace(fake_api, kubeconfig) -> None:
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
    assert 'ENTRYPOINT ["kvbackup-webhook"]' in dockerfile
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
    assert "--namespace" in capsys.readouterr().out


def test_install_refuses_a_cluster_without_match_conditions(fake_api, kubeconfig, capsys, monkeypatch) -> None:
    from .fakeapi import discovery

    monkeypatch.setitem(discovery.VERSION, "minor", "27")
    monkeypatch.setitem(discovery.VERSION, "gitVersion", "v1.27.9")
    code = main(["webhook", "install", "--kubeconfig", kubeconfig])
    err = capsys.readouterr().err
    assert code == 1 and "needs Kubernetes 1.28 or newer" in err and "v1.27.9" in err
    assert fake_api.objects("admissionregistration.k8s.io", "MutatingWebhookConfiguration") == []

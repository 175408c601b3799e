"""The fake API server answers the real kubernetes client as kube-apiserver would, where kvbackup depends on it."""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import config as k8s_config
from kubernetes.client import CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient


@pytest.fixture
def client(fake_api, kubeconfig):
    return k8s_config.new_client_from_config(config_file=kubeconfig)


def cm(name, namespace="default", **labels):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace,
                                                                  "labels": labels}}


def test_dynamic_client_discovers_kinds_and_short_names(client):
    dynamic = DynamicClient(client)
    vm = dynamic.resources.get(api_version="kubevirt.io/v1", kind="VirtualMachine")
    assert vm.name == "virtualmachines" and vm.namespaced
    assert dynamic.resources.get(api_version="cdi.kubevirt.io/v1beta1", kind="DataVolume").short_names == ["dv", "dvs"]
    pool = dynamic.resources.get(kind="VirtualMachinePool")
    assert pool.group_version == "pool.kubevirt.io/v1alpha1"


def test_list_with_equality_and_set_based_selectors(fake_api, client):
    fake_api.add_all([cm("a", app="web", tier="front"), cm("b", app="db"), cm("c", app="web", tier="back")])
    core = CoreV1Api(client)
    names = lambda **kw: [i.metadata.name for i in core.list_namespaced_config_map("default", **kw).items]
    assert names(label_selector="app=web") == ["a", "c"]
    assert names(label_selector="app in (db,cache)") == ["b"]
    assert names(label_selector="app=web,tier notin (back)") == ["a"]
    assert names(label_selector="!tier") == ["b"]
    assert names(field_selector="metadata.name!=a") == ["b", "c"]
    with pytest.raises(ApiException) as error:
        names(label_selector="app in (web")
    assert error.value.status == 400 and json.loads(error.value.body)["reason"] == "BadRequest"


def test_pagination_returns_every_object_exactly_once(fake_api, client):
    fake_api.add_all([cm(f"cm-{i:02d}") for i in range(25)])
    core = CoreV1Api(client)
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map("default", limit=10, _continue=token)
        pages += 1
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3 and seen == [f"cm-{i:02d}" for i in range(25)]
    with pytest.raises(ApiException) as error:
        core.list_namespaced_config_map("default", limit=10, _continue="not-a-token")
    assert error.value.status == 400


def test_create_assigns_server_fields_and_conflicts(client, fake_api):
    core = CoreV1Api(client)
    created = core.create_namespaced_config_map("default", cm("x"))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    generated = core.create_namespaced_config_map("default", {"metadata": {"generateName": "gen-"}})
    assert generated.metadata.name.startswith("gen-") and len(generated.metadata.name) == 9
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map("default", cm("x"))
    body = json.loads(error.value.body)
    assert (error.value.status, body["reason"], body["message"]) == (409, "AlreadyExists",
                                                                      'configmaps "x" already exists')
    dry = CustomObjectsApi(client).create_namespaced_custom_object(
        "kubevirt.io", "v1", "default", "virtualmachines",
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "dry"}}, dry_run="All")
    assert dry["metadata"]["name"] == "dry"
    assert fake_api.get_object("kubevirt.io", "VirtualMachine", "default", "dry") is None


def test_not_found_status_is_kube_apiservers(client):
    with pytest.raises(ApiException) as error:
        CustomObjectsApi(client).get_namespaced_custom_object("kubevirt.io", "v1", "ns1", "virtualmachines", "vm1")
    body = json.loads(error.value.body)
    assert body["kind"] == "Status" and body["code"] == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'virtualmachines.kubevirt.io "vm1" not found'
    assert body["details"] == {"name": "vm1", "group": "kubevirt.io", "kind": "virtualmachines"}


def test_forbidden_and_unauthorized(fake_api, tmp_path):
    fake_api.deny("alice", "list", "kubevirt.io", "virtualmachines", "ns1")
    alice = k8s_config.new_client_from_config(config_file=fake_api.write_kubeconfig(str(tmp_path / "a"),
                                                                                  user="alice"))
    with pytest.raises(ApiException) as error:
        CustomObjectsApi(alice).list_namespaced_custom_object("kubevirt.io", "v1", "ns1", "virtualmachines")
    body = json.loads(error.value.body)
    assert error.value.status == 403
    assert body["message"] == ('virtualmachines.kubevirt.io is forbidden: User "alice" cannot list resource '
                               '"virtualmachines" in API group "kubevirt.io" in the namespace "ns1"')
    CustomObjectsApi(alice).list_namespaced_custom_object("kubevirt.io", "v1", "ns2", "virtualmachines")
    config = open(tmp_path / "a").read().replace(fake_api.token_for("alice"), "wrong")
    (tmp_path / "b").write_text(config)
    stranger = k8s_config.new_client_from_config(config_file=str(tmp_path / "b"))
    with pytest.raises(ApiException) as error:
        CoreV1Api(stranger).list_namespaced_config_map("default")
    assert error.value.status == 401


def _raw(client, method, path, body=None, content_type="application/json"):
    response = client.call_api(*client.param_serialize(method, path, body=body, auth_settings=["BearerToken"],
                                                       header_params={"Content-Type": content_type}))
    response.read()
    return response.status, json.loads(response.data or b"{}")


def test_custom_resources_reject_strategic_merge_patch(fake_api, client):
    fake_api.add({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm",
                                                                                       "namespace": "default"}})
    fake_api.add(cm("c"))
    smp = "application/strategic-merge-patch+json"
    status, body = _raw(client, "PATCH", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm",
                        {"spec": {"a": 1}}, smp)
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    status, body = _raw(client, "PATCH", "/api/v1/namespaces/default/configmaps/c", {"data": {"a": "1"}}, smp)
    assert status == 200 and body["data"] == {"a": "1"}


def test_merge_and_json_patches(fake_api, client):
    fake_api.add({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm",
                                                                                       "namespace": "default"},
                  "spec": {"runStrategy": "Halted"}})
    custom = CustomObjectsApi(client)
    patched = custom.patch_namespaced_custom_object("kubevirt.io", "v1", "default", "virtualmachines", "vm",
                                                    {"metadata": {"labels": {"a": "b"}}})
    assert patched["metadata"]["labels"] == {"a": "b"} and patched["spec"] == {"runStrategy": "Halted"}
    core = CoreV1Api(client)
    fake_api.add(cm("j"))
    result = core.patch_namespaced_config_map("j", "default", [{"op": "add", "path": "/data", "value": {"k": "v"}}])
    assert result.data == {"k": "v"}


def test_fault_injection_fails_then_recovers(fake_api, client):
    fake_api.inject("GET", r"/configmaps$", status=503, times=1)
    core = CoreV1Api(client)
    with pytest.raises(ApiException) as error:
        core.list_namespaced_config_map("default")
    assert error.value.status == 503
    assert core.list_namespaced_config_map("default").items == []


def test_requests_are_logged_with_their_user(fake_api, client):
    fake_api.reset_requests()
    CoreV1Api(client).list_namespaced_config_map("default", label_selector="a=b")
    assert [(r.method, r.path, r.query.get("labelSelector"), r.user) for r in fake_api.requests] == [
        ("GET", "/api/v1/namespaces/default/configmaps", "a=b", "admin")]


def test_removed_group_disappears_from_discovery(fake_api, client):
    fake_api.remove_group("cdi.kubevirt.io")
    groups = client.call_api(*client.param_serialize("GET", "/apis", auth_settings=["BearerToken"]))
    groups.read()
    assert "cdi.kubevirt.io" not in [g["name"] for g in json.loads(groups.data)["groups"]]


# --- KubeVirt freeze subresources ---

def _vmi(fake_api, name):
    fake_api.add({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                  "metadata": {"name": name, "namespace": "default"}, "status": {"phase": "Running"}})


def _put(client, path, body=None):
    return _raw(client, "PUT", path, body)


FREEZE = "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{}/{}"


def test_freeze_and_unfreeze_are_recorded_and_reflected(fake_api, client):
    _vmi(fake_api, "a")
    assert _put(client, FREEZE.format("a", "freeze"), {"unfreezeTimeout": "5m0s"})[0] == 200
    assert fake_api.frozen_vmis() == {("default", "a")}
    assert fake_api.get_object("kubevirt.io", "VirtualMachineInstance", "default", "a")["status"][
        "fsFreezeStatus"] == "frozen"
    assert _put(client, FREEZE.format("a", "unfreeze"))[0] == 200
    assert fake_api.frozen_vmis() == set()
    assert [(c.name, c.op, c.body) for c in fake_api.freeze_calls] == [
        ("a", "freeze", {"unfreezeTimeout": "5m0s"}), ("a", "unfreeze", None)]


@pytest.mark.parametrize("outcome,code,text", [("not-running", 409, "VMI is not running"),
                                               ("no-agent", 500, "Guest agent is not connected"),
                                               ("error", 500, "Internal error occurred")])
def test_freeze_outcomes(fake_api, client, outcome, code, text):
    _vmi(fake_api, "b")
    fake_api.set_freeze_behaviour("default", "b", outcome)
    status, body = _put(client, FREEZE.format("b", "freeze"), {"unfreezeTimeout": "5m0s"})
    assert status == code and text in body["message"]
    assert fake_api.frozen_vmis() == set()


def test_freeze_of_missing_vmi_is_not_found(client):
    assert _put(client, FREEZE.format("ghost", "freeze"), {"unfreezeTimeout": "5m0s"})[0] == 404


# --- admission call-outs ---

def _certificate(common_name, issuer_key=None, issuer_name=None, ca=False, san=None):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress")
                                                                                    .ip_address(san))]), False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


@pytest.fixture
def tls_webhook(tmp_path):
    """A tiny HTTPS admission webhook on loopback: labels ConfigMaps, denies names starting with 'deny'."""
    ca_key, ca_cert = _certificate("test-ca", ca=True)
    key, cert = _certificate("127.0.0.1", ca_key, ca_cert.subject, san="127.0.0.1")
    (tmp_path / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    reviews = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reviews.append(review)
            request = review["request"]
            response = {"uid": request["uid"], "allowed": True}
            if request["name"].startswith("deny"):
                response = {"uid": request["uid"], "allowed": False,
                            "status": {"code": 403, "message": "not on my watch"}}
            else:
                patch = [{"op": "add", "path": "/metadata/annotations", "value": {"seen/by": "webhook"}}]
                response.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(patch).encode()).decode())
            data = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                               "response": response}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    ca_bundle = base64.b64encode(ca_cert.public_bytes(serialization.Encoding.PEM)).decode()
    yield f"https://127.0.0.1:{server.server_address[1]}/mutate", ca_bundle, reviews
    server.shutdown()
    server.server_close()


def _register(fake_api, url, ca_bundle, **extra):
    fake_api.add({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                  "metadata": {"name": "test"}, "webhooks": [{
                      "name": "test.example.com", "clientConfig": {"url": url, "caBundle": ca_bundle},
                      "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["configmaps"]}],
                      "admissionReviewVersions": ["v1"], "sideEffects": "None", "timeoutSeconds": 5, **extra}]})


def test_admission_webhook_patches_and_denies(fake_api, client, tls_webhook):
    url, ca_bundle, reviews = tls_webhook
    _register(fake_api, url, ca_bundle)
    core = CoreV1Api(client)
    created = core.create_namespaced_config_map("default", cm("ok"))
    assert created.metadata.annotations == {"seen/by": "webhook"}
    request = reviews[-1]["request"]
    assert request["operation"] == "CREATE" and request["userInfo"]["username"] == "admin"
    assert request["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map("default", cm("deny-me"))
    assert error.value.status == 403
    assert json.loads(error.value.body)["message"] == \
        'admission webhook "test.example.com" denied the request: not on my watch'
    # resources the rules do not name are not sent
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    assert len(reviews) == 2


def test_object_and_namespace_selectors_limit_call_outs(fake_api, client, tls_webhook):
    url, ca_bundle, reviews = tls_webhook
    _register(fake_api, url, ca_bundle, objectSelector={"matchLabels": {"restore": "yes"}},
              namespaceSelector={"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                                       "values": ["kube-system"]}]})
    core = CoreV1Api(client)
    assert core.create_namespaced_config_map("default", cm("plain")).metadata.annotations is None
    assert core.create_namespaced_config_map("default", cm("labelled", restore="yes")).metadata.annotations
    assert core.create_namespaced_config_map("kube-system", cm("system", "kube-system", restore="yes")
                                             ).metadata.annotations is None
    assert len(reviews) == 1


@pytest.mark.parametrize("policy,expect_error", [("Fail", True), ("Ignore", False)])
def test_failure_policy_when_the_webhook_is_unreachable(fake_api, client, tls_webhook, policy, expect_error):
    _, ca_bundle, _ = tls_webhook
    _register(fake_api, "https://127.0.0.1:9/mutate", ca_bundle, failurePolicy=policy)
    core = CoreV1Api(client)
    if expect_error:
        with pytest.raises(ApiException) as error:
            core.create_namespaced_config_map("default", cm("x"))
        assert error.value.status == 500
        assert 'failed calling webhook "test.example.com"' in json.loads(error.value.body)["message"]
    else:
        assert core.create_namespaced_config_map("default", cm("x")).metadata.name == "x"
    assert fake_api.admission_calls[-1].error


def test_webhook_with_an_untrusted_certificate_is_a_failure(fake_api, client, tls_webhook):
    url, _, _ = tls_webhook
    _, other_ca = _certificate("other-ca", ca=True)
    _register(fake_api, url, base64.b64encode(other_ca.public_bytes(serialization.Encoding.PEM)).decode())
    with pytest.raises(ApiException) as error:
        CoreV1Api(client).create_namespaced_config_map("default", cm("x"))
    assert error.value.status == 500 and "CERTIFICATE_VERIFY_FAILED" in json.loads(error.value.body)["message"]

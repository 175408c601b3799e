"""The fake API server answers the real kubernetes client as kube-apiserver would, where kvbackup depends on it."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import config as k8s_config
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from .fakeapi import FakeKubeAPI, ResourceType
from .fakeapi.jsonpatch import PatchError, apply

KV = ("kubevirt.io", "v1")


@pytest.fixture
def client(fake_api: FakeKubeAPI, kubeconfig: str) -> ApiClient:
    return k8s_config.new_client_from_config(config_file=kubeconfig)


def client_as(fake_api: FakeKubeAPI, tmp_path, user: str) -> ApiClient:
    return k8s_config.new_client_from_config(config_file=fake_api.write_kubeconfig(
        str(tmp_path / user.replace(":", "_")), user=user))  # the loader splits paths at ":"


def cm(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace,
                                                                  "labels": labels}}


def vm(name: str, namespace: str = "default", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name,
                                                                                   "namespace": namespace}, **fields}


def status_of(error: pytest.ExceptionInfo[ApiException]) -> tuple[int, dict[str, Any]]:
    body = json.loads(error.value.body)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == error.value.status
    return error.value.status, body


def raw(client: ApiClient, method: str, path: str, body: Any = None,
        content_type: str = "application/json") -> tuple[int, Any]:
    """A request the typed APIs cannot make (a chosen patch type, a subresource of another group), through the
    client's connection pool and its token, whatever the client release (its call_api signature changed in 37); the
    body decoded, or as text when it is not JSON."""
    headers = {"Content-Type": content_type,
               "Authorization": client.configuration.get_api_key_with_prefix("BearerToken", alias="authorization")}
    data = body if body is None or isinstance(body, str) else json.dumps(body)
    response = client.rest_client.pool_manager.request(method, client.configuration.host + path, headers=headers,
                                                       body=data)
    if not (response.headers.get("Content-Type") or "").startswith("application/json"):
        return response.status, response.data.decode()
    return response.status, json.loads(response.data or b"{}")


# --- discovery ---

def test_dynamic_client_finds_kinds_by_kind_and_short_name(client):
    dynamic = DynamicClient(client)
    found = dynamic.resources.get(api_version="kubevirt.io/v1", kind="VirtualMachine")
    assert found.name == "virtualmachines" and found.namespaced
    assert dynamic.resources.get(kind="VirtualMachinePool").group_version == "pool.kubevirt.io/v1alpha1"
    assert not dynamic.resources.get(kind="VirtualMachineClusterInstancetype").namespaced
    by_short = {r.kind for r in dynamic.resources.search() if {"vm", "dv", "net-attach-def"} & set(r.short_names or ())}
    assert {"VirtualMachine", "DataVolume", "NetworkAttachmentDefinition"} <= by_short
    assert dynamic.resources.get(api_version="v1", kind="Namespace").namespaced is False


def test_discovery_documents(client):
    version = raw(client, "GET", "/version")[1]
    # the release whose behaviour the fake claims (docs/testing.md); matchConditions need 1.28 or later
    assert (version["major"], version["minor"]) == ("1", "30") and version["gitVersion"].startswith("v1.30.")
    groups = {g["name"]: g for g in raw(client, "GET", "/apis")[1]["groups"]}
    assert groups["pool.kubevirt.io"]["preferredVersion"]["groupVersion"] == "pool.kubevirt.io/v1alpha1"
    resources = {r["name"]: r for r in raw(client, "GET", "/apis/subresources.kubevirt.io/v1")[1]["resources"]}
    assert set(resources) == {"virtualmachineinstances/freeze", "virtualmachineinstances/unfreeze"}
    core = {r["name"]: r for r in raw(client, "GET", "/api/v1")[1]["resources"]}
    assert "pods/status" in core and "configmaps/status" not in core and not core["namespaces"]["namespaced"]
    # a group no handler serves: Go's plain-text NotFound, not a Status
    assert raw(client, "GET", "/apis/nothing.example.com/v1") == (404, "404 page not found\n")


def test_removed_and_registered_groups(fake_api, client):
    fake_api.remove_group("cdi.kubevirt.io")
    fake_api.remove_group("kubevirt.io")
    names = [g["name"] for g in raw(client, "GET", "/apis")[1]["groups"]]
    assert not {"cdi.kubevirt.io", "kubevirt.io", "subresources.kubevirt.io"} & set(names)
    assert raw(client, "GET", "/apis/cdi.kubevirt.io/v1beta1/namespaces/default/datavolumes")[0] == 404
    fake_api.register(ResourceType("example.com", "v1", "Widget", "widgets", short_names=("wd",)))
    fake_api.add({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    listed = CustomObjectsApi(client).list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w"]


# --- reading: selectors, pagination ---

def test_list_with_equality_set_based_and_field_selectors(fake_api, client):
    fake_api.add_all([cm("a", app="web", tier="front"), cm("b", app="db"), cm("c", app="web", tier="back"),
                      cm("d", "other", app="web")])
    core = CoreV1Api(client)
    names = lambda **kw: [i.metadata.name for i in core.list_namespaced_config_map("default", **kw).items]
    assert names(label_selector="app=web") == ["a", "c"]
    assert names(label_selector="app in (db,cache)") == ["b"]
    assert names(label_selector="app=web,tier notin (back)") == ["a"]
    assert names(label_selector="!tier") == ["b"]
    assert names(field_selector="metadata.name!=a") == ["b", "c"]
    everywhere = core.list_config_map_for_all_namespaces(label_selector="app==web")
    assert [(i.metadata.namespace, i.metadata.name) for i in everywhere.items] == [
        ("default", "a"), ("default", "c"), ("other", "d")]
    for bad in ({"label_selector": "app in (web"}, {"field_selector": "spec.x=1"}):
        with pytest.raises(ApiException) as error:
            names(**bad)
        assert status_of(error)[1]["reason"] == "BadRequest"


def test_list_items_carry_their_kind_only_for_custom_resources(fake_api, client):
    fake_api.add_all([cm("a"), vm("v")])
    _, configmaps = raw(client, "GET", "/api/v1/namespaces/default/configmaps")
    assert configmaps["kind"] == "ConfigMapList" and "kind" not in configmaps["items"][0]
    vms = CustomObjectsApi(client).list_namespaced_custom_object(*KV, "default", "virtualmachines")
    assert vms["items"][0]["kind"] == "VirtualMachine" and int(vms["metadata"]["resourceVersion"]) > 0


def test_pagination_returns_every_object_exactly_once(fake_api, client):
    fake_api.add_all([cm(f"cm-{i:02d}", f"ns-{i % 3}") for i in range(25)])
    core = CoreV1Api(client)
    seen, token, pages = [], None, 0
    while True:
        page = core.list_config_map_for_all_namespaces(limit=10, _continue=token)
        pages += 1
        seen += [(i.metadata.namespace, i.metadata.name) for i in page.items]
        token = page.metadata._continue
        assert (page.metadata.remaining_item_count is None) == (token is None)
        if not token:
            break
    assert pages == 3 and len(seen) == 25 and seen == sorted(set(seen))
    with pytest.raises(ApiException) as error:
        core.list_namespaced_config_map("default", limit=10, _continue="not-a-token")
    assert status_of(error)[0] == 400


def test_listing_ten_thousand_objects_in_pages_is_quick(fake_api, client):
    fake_api.add_all(vm(f"vm-{i:05d}", f"ns-{i % 10}") for i in range(10_000))
    custom, token, count, started = CustomObjectsApi(client), None, 0, time.perf_counter()
    while True:
        page = custom.list_cluster_custom_object(*KV, "virtualmachines", limit=500, _continue=token)
        count += len(page["items"])
        token = page["metadata"].get("continue")
        if not token:
            break
    assert count == 10_000 and time.perf_counter() - started < 10


# --- writing ---

def test_create_assigns_server_fields_and_honours_generate_name_and_dry_run(fake_api, client):
    core = CoreV1Api(client)
    created = core.create_namespaced_config_map("default", cm("x"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert int(created.metadata.resource_version) > int(fake_api.add(cm("y"))["metadata"]["resourceVersion"]) - 2
    generated = core.create_namespaced_config_map("default", {"metadata": {"generateName": "gen-"}})
    assert generated.metadata.name.startswith("gen-") and len(generated.metadata.name) == 9
    made = CustomObjectsApi(client).create_namespaced_custom_object(*KV, "default", "virtualmachines",
                                                                    vm("v", status={"ready": True}))
    assert made["metadata"]["generation"] == 1 and "status" not in made  # status is the subresource's
    dry = CustomObjectsApi(client).create_namespaced_custom_object(*KV, "default", "virtualmachines", vm("dry"),
                                                                   dry_run="All")
    assert dry["metadata"]["name"] == "dry" and fake_api.get_object("kubevirt.io", "VirtualMachine", "default",
                                                                    "dry") is None


def test_seeded_objects_keep_given_server_fields_and_imply_their_namespace(fake_api):
    seeded = fake_api.add({**cm("k", "team-a"), "metadata": {"name": "k", "namespace": "team-a", "uid": "u-1",
                                                             "resourceVersion": "77"}})
    assert (seeded["metadata"]["uid"], seeded["metadata"]["resourceVersion"]) == ("u-1", "77")
    assert fake_api.get_object("", "namespaces", None, "team-a")["status"] == {"phase": "Active"}
    assert [o["metadata"]["name"] for o in fake_api.objects("", "configmaps", "team-a")] == ["k"]


@pytest.mark.parametrize("namespace,body,code,reason,message", [
    ("default", cm("x"), 409, "AlreadyExists", 'configmaps "x" already exists'),
    ("default", cm("x", "other"), 400, "BadRequest",
     "the namespace of the provided object does not match the namespace sent on the request"),
    ("nowhere", cm("y", "nowhere"), 404, "NotFound", 'namespaces "nowhere" not found'),
    # etcd3/store.go Create answers a plain error, which kube-apiserver turns into a 500
    ("default", {**cm("z"), "metadata": {"name": "z", "resourceVersion": "5"}}, 500, "InternalError",
     "Internal error occurred: resourceVersion should not be set on objects to be created"),
    ("default", cm("Bad_Name"), 422, "Invalid", 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: '
                                                '"Bad_Name": a lowercase RFC 1123 subdomain must consist of'),
    ("default", cm("l", app="not ok"), 422, "Invalid", 'ConfigMap "l" is invalid: metadata.labels: Invalid value'),
])
def test_create_errors(fake_api, client, namespace, body, code, reason, message):
    fake_api.add(cm("x"))
    with pytest.raises(ApiException) as error:
        CoreV1Api(client).create_namespaced_config_map(namespace, body)
    status, status_body = status_of(error)
    assert (status, status_body["reason"]) == (code, reason) and status_body["message"].startswith(message)


def test_update_conflicts_on_a_stale_resource_version_and_keeps_status_apart(fake_api, client):
    stored = fake_api.add(vm("v", spec={"runStrategy": "Halted"}, status={"ready": False}))
    custom = CustomObjectsApi(client)
    replaced = custom.replace_namespaced_custom_object(*KV, "default", "virtualmachines", "v", {
        **stored, "spec": {"runStrategy": "Always"}, "status": {"ready": True}})
    assert replaced["status"] == {"ready": False} and replaced["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as error:
        custom.replace_namespaced_custom_object(*KV, "default", "virtualmachines", "v", stored)
    assert status_of(error)[1]["message"] == (
        'Operation cannot be fulfilled on virtualmachines.kubevirt.io "v": the object has been modified; please '
        "apply your changes to the latest version and try again")
    status = custom.patch_namespaced_custom_object_status(*KV, "default", "virtualmachines", "v",
                                                          {"status": {"ready": True}, "spec": {"x": 1}})
    assert status["status"] == {"ready": True} and status["spec"] == {"runStrategy": "Always"}


def test_custom_resources_reject_strategic_merge_patch(fake_api, client):
    fake_api.add_all([vm("v"), cm("c")])
    smp = "application/strategic-merge-patch+json"
    status, body = raw(client, "PATCH", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/v",
                       {"spec": {"a": 1}}, smp)
    assert (status, body["reason"], body["code"]) == (415, "UnsupportedMediaType", 415)
    status, body = raw(client, "PATCH", "/api/v1/namespaces/default/configmaps/c", {"data": {"a": "1"}}, smp)
    assert status == 200 and body["data"] == {"a": "1"}


def test_merge_json_and_apply_patches(fake_api, client):
    fake_api.add(vm("v", spec={"runStrategy": "Halted", "gone": 1}))
    custom = CustomObjectsApi(client)
    patched = custom.patch_namespaced_custom_object(*KV, "default", "virtualmachines", "v",
                                                    {"metadata": {"labels": {"a": "b"}}, "spec": {"gone": None}})
    assert patched["metadata"]["labels"] == {"a": "b"} and patched["spec"] == {"runStrategy": "Halted"}
    fake_api.add(cm("j"))
    result = CoreV1Api(client).patch_namespaced_config_map("j", "default",
                                                           [{"op": "add", "path": "/data", "value": {"k": "v"}}])
    assert result.data == {"k": "v"}
    stale = {"metadata": {"resourceVersion": "1"}, "data": {"k": "w"}}
    status, body = raw(client, "PATCH", "/api/v1/namespaces/default/configmaps/j", stale,
                       "application/merge-patch+json")
    assert (status, body["reason"]) == (409, "Conflict")
    status, body = raw(client, "PATCH", "/api/v1/namespaces/default/configmaps/new?fieldManager=t",
                       "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new}\ndata: {a: b}\n",
                       "application/apply-patch+yaml")
    assert status == 201 and fake_api.get_object("", "ConfigMap", "default", "new")["data"] == {"a": "b"}


def test_delete_returns_the_object_then_not_found(fake_api, client):
    fake_api.add(vm("v"))
    custom = CustomObjectsApi(client)
    assert custom.delete_namespaced_custom_object(*KV, "default", "virtualmachines", "v")["metadata"]["name"] == "v"
    with pytest.raises(ApiException) as error:
        custom.delete_namespaced_custom_object(*KV, "default", "virtualmachines", "v")
    assert status_of(error)[0] == 404


# --- errors, users, faults ---

def test_not_found_status_is_kube_apiservers(client):
    with pytest.raises(ApiException) as error:
        CustomObjectsApi(client).get_namespaced_custom_object(*KV, "ns1", "virtualmachines", "vm1")
    _, body = status_of(error)
    assert body["reason"] == "NotFound" and body["message"] == 'virtualmachines.kubevirt.io "vm1" not found'
    assert body["details"] == {"name": "vm1", "group": "kubevirt.io", "kind": "virtualmachines"}
    # an unknown resource of a built-in group version is go-restful's Status; of a custom resource group, the
    # apiextensions handler passes it on to the plain-text NotFound
    status, body = raw(client, "GET", "/api/v1/namespaces/ns1/gizmos")
    assert (status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    assert raw(client, "GET", "/apis/kubevirt.io/v1/namespaces/ns1/gizmos") == (404, "404 page not found\n")


def test_forbidden_in_a_namespace_and_at_the_cluster_scope(fake_api, tmp_path):
    fake_api.deny("alice", "list", "kubevirt.io", "virtualmachines", "ns1")
    fake_api.deny("alice", "list", "kubevirt.io", "virtualmachines", None)
    custom = CustomObjectsApi(client_as(fake_api, tmp_path, "alice"))
    with pytest.raises(ApiException) as error:
        custom.list_namespaced_custom_object(*KV, "ns1", "virtualmachines")
    status, body = status_of(error)
    assert (status, body["reason"]) == (403, "Forbidden")
    assert body["message"] == ('virtualmachines.kubevirt.io is forbidden: User "alice" cannot list resource '
                               '"virtualmachines" in API group "kubevirt.io" in the namespace "ns1"')
    with pytest.raises(ApiException) as error:
        custom.list_cluster_custom_object(*KV, "virtualmachines")
    assert status_of(error)[1]["message"].endswith('in API group "kubevirt.io" at the cluster scope')
    assert CustomObjectsApi(client_as(fake_api, tmp_path, "bob")).list_namespaced_custom_object(
        *KV, "ns1", "virtualmachines")["items"] == []


def test_allow_only_grants_just_the_rules(fake_api, tmp_path):
    fake_api.add(cm("c", "team-a"))
    fake_api.allow_only("viewer", [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"],
                                    "namespaces": ["team-a"]}])
    core = CoreV1Api(client_as(fake_api, tmp_path, "viewer"))
    assert core.read_namespaced_config_map("c", "team-a").metadata.name == "c"
    for call in (lambda: core.list_namespaced_config_map("default"), lambda: core.list_namespaced_secret("team-a"),
                 lambda: core.delete_namespaced_config_map("c", "team-a")):
        with pytest.raises(ApiException) as error:
            call()
        assert status_of(error)[0] == 403
    with pytest.raises(ApiException) as error:
        core.delete_namespaced_config_map("c", "team-a")
    assert status_of(error)[1]["message"] == ('configmaps "c" is forbidden: User "viewer" cannot delete resource '
                                              '"configmaps" in API group "" in the namespace "team-a"')


def test_an_unknown_token_is_unauthorized(fake_api, tmp_path):
    path = fake_api.write_kubeconfig(str(tmp_path / "a"), user="alice")
    assert fake_api.token_for("alice") != fake_api.token_for("bob")
    (tmp_path / "b").write_text(open(path).read().replace(fake_api.token_for("alice"), "wrong"))
    with pytest.raises(ApiException) as error:
        CoreV1Api(k8s_config.new_client_from_config(config_file=str(tmp_path / "b"))).list_namespaced_config_map(
            "default")
    assert status_of(error)[1]["reason"] == "Unauthorized"


def test_fault_injection_fails_then_recovers_and_delays(fake_api, client):
    fake_api.inject("GET", r"/configmaps$", status=503, times=1, message="etcd is away")
    core = CoreV1Api(client)
    with pytest.raises(ApiException) as error:
        core.list_namespaced_config_map("default")
    assert status_of(error)[1]["message"] == "etcd is away"
    assert core.list_namespaced_config_map("default").items == []
    fake_api.inject("*", r"/secrets", delay=0.3)
    started = time.perf_counter()
    core.list_namespaced_secret("default")
    assert time.perf_counter() - started >= 0.3


def test_requests_are_logged_with_their_user(fake_api, client):
    fake_api.reset_requests()
    CoreV1Api(client).list_namespaced_config_map("default", label_selector="a=b")
    assert [(r.method, r.path, r.query.get("labelSelector"), r.user) for r in fake_api.requests] == [
        ("GET", "/api/v1/namespaces/default/configmaps", "a=b", "admin")]


# --- KubeVirt freeze subresources ---

FREEZE = "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{}/{}"
TIMEOUT = {"unfreezeTimeout": "5m0s"}


def add_vmi(fake_api: FakeKubeAPI, name: str, phase: str = "Running") -> None:
    fake_api.add({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                  "metadata": {"name": name, "namespace": "default"}, "status": {"phase": phase}})


def test_freeze_and_unfreeze_are_recorded_and_reflected_in_the_vmi(fake_api, client):
    add_vmi(fake_api, "a")
    assert raw(client, "PUT", FREEZE.format("a", "freeze"), TIMEOUT)[0] == 200
    assert fake_api.frozen_vmis() == {("default", "a")}
    vmi = fake_api.get_object("kubevirt.io", "VirtualMachineInstance", "default", "a")
    assert vmi["status"]["fsFreezeStatus"] == "frozen"
    assert raw(client, "PUT", FREEZE.format("a", "unfreeze"))[0] == 200
    assert fake_api.frozen_vmis() == set()
    thawed = fake_api.get_object("kubevirt.io", "virtualmachineinstances", "default", "a")
    assert thawed["status"] == {"phase": "Running"}
    assert [(c.name, c.op, c.body) for c in fake_api.freeze_calls] == [("a", "freeze", TIMEOUT),
                                                                       ("a", "unfreeze", None)]


@pytest.mark.parametrize("outcome,phase,code,message", [
    ("not-running", "Running", 409, 'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "b": '
                                    "VMI is not running"),
    ("ok", "Succeeded", 409, "VMI is not running"),
    ("no-agent", "Running", 500, "Internal error occurred: Guest agent is not connected"),
    ("error", "Running", 500, "Internal error occurred: "),
])
def test_freeze_outcomes(fake_api, client, outcome, phase, code, message):
    add_vmi(fake_api, "b", phase)
    fake_api.set_freeze_behaviour("default", "b", outcome)
    status, body = raw(client, "PUT", FREEZE.format("b", "freeze"), TIMEOUT)
    assert (status, body["code"]) == (code, code) and message in body["message"]
    assert fake_api.frozen_vmis() == set() and len(fake_api.freeze_calls) == 1


def test_freeze_needs_a_vmi_a_timeout_and_may_be_slow(fake_api, client):
    assert raw(client, "PUT", FREEZE.format("ghost", "freeze"), TIMEOUT)[1]["message"] == \
        'virtualmachineinstance.kubevirt.io "ghost" not found'
    add_vmi(fake_api, "c")
    assert raw(client, "PUT", FREEZE.format("c", "freeze"))[0] == 400
    fake_api.set_freeze_behaviour("default", "c", delay=0.3)
    started = time.perf_counter()
    assert raw(client, "PUT", FREEZE.format("c", "freeze"), TIMEOUT)[0] == 200
    assert time.perf_counter() - started >= 0.3
    fake_api.deny("admin", "update", "subresources.kubevirt.io", "virtualmachineinstances/freeze")
    status, body = raw(client, "PUT", FREEZE.format("c", "freeze"), TIMEOUT)
    assert status == 403 and 'cannot update resource "virtualmachineinstances/freeze"' in body["message"]


# --- admission call-outs ---

def certificate(common_name: str, issuer: tuple[Any, x509.Certificate] | None = None):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).public_key(key.public_key())
               .issuer_name(issuer[1].subject if issuer else name).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if issuer:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(
            common_name))]), critical=False)
    return key, builder.sign(issuer[0] if issuer else key, hashes.SHA256())


def pem(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()


@contextlib.contextmanager
def webhook_server(tmp_path, respond: Callable[[str, dict[str, Any]], dict[str, Any]]):
    """An HTTPS admission webhook on 127.0.0.1 with a certificate of its own CA: ``respond(path, request)`` gives
    the AdmissionResponse without its uid. Yields the server's base URL and the CA bundle."""
    ca = certificate("test-ca")
    key, cert = certificate("127.0.0.1", ca)
    (tmp_path / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["request"]
            response = {**respond(self.path.split("?")[0], request), "uid": request["uid"]}
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
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", pem(ca[1])
    finally:
        server.shutdown()
        server.server_close()


def patched(patch: list[dict[str, Any]]) -> dict[str, Any]:
    """An AdmissionResponse that allows with a JSON patch."""
    return {"allowed": True, "patchType": "JSONPatch", "patch": base64.b64encode(json.dumps(patch).encode()).decode()}


@pytest.fixture
def tls_webhook(tmp_path):
    """A tiny HTTPS admission webhook: annotates what it admits, denies names starting with 'deny'."""
    reviews: list[dict[str, Any]] = []

    def respond(path: str, request: dict[str, Any]) -> dict[str, Any]:
        reviews.append({"request": request})
        if request.get("name", "").startswith("deny"):
            return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": "not on my watch"}}
        return patched([{"op": "add", "path": "/metadata/annotations", "value": {"seen~by": request["operation"]}}])

    with webhook_server(tmp_path, respond) as (url, ca_bundle):
        yield f"{url}/mutate", ca_bundle, reviews


def register_webhook(fake_api: FakeKubeAPI, url: str, ca_bundle: str, **extra: Any) -> None:
    fake_api.add({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                  "metadata": {"name": "test"}, "webhooks": [{
                      "name": "test.example.com", "clientConfig": {"url": url, "caBundle": ca_bundle},
                      "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["configmaps"]}],
                      "admissionReviewVersions": ["v1"], "sideEffects": "None", "timeoutSeconds": 5, **extra}]})


def test_admission_webhook_patches_and_denies(fake_api, client, tls_webhook, tmp_path):
    url, ca_bundle, reviews = tls_webhook
    register_webhook(fake_api, url, ca_bundle)
    core = CoreV1Api(client_as(fake_api, tmp_path, "system:serviceaccount:kubevirt:kubevirt-controller"))
    created = core.create_namespaced_config_map("default", cm("ok"))
    assert created.metadata.annotations == {"seen~by": "CREATE"}
    request = reviews[-1]["request"]
    assert request["operation"] == "CREATE" and request["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
    assert request["userInfo"]["username"] == "system:serviceaccount:kubevirt:kubevirt-controller"
    assert "system:serviceaccounts:kubevirt" in request["userInfo"]["groups"]
    updated = core.patch_namespaced_config_map("ok", "default", {"data": {"a": "b"}})
    assert updated.metadata.annotations == {"seen~by": "UPDATE"} and reviews[-1]["request"]["oldObject"]
    with pytest.raises(ApiException) as error:
        core.create_namespaced_config_map("default", cm("deny-me"))
    status, body = status_of(error)
    assert (status, body["message"]) == (403, 'admission webhook "test.example.com" denied the request: '
                                              "not on my watch")
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}})  # not named by the rules: not sent
    assert len(reviews) == 3 and [c.webhook for c in fake_api.admission_calls] == ["test.example.com"] * 3


def test_object_and_namespace_selectors_limit_call_outs(fake_api, client, tls_webhook):
    url, ca_bundle, reviews = tls_webhook
    fake_api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "restored",
                                                                        "labels": {"mode": "restore"}}})
    register_webhook(fake_api, url, ca_bundle, objectSelector={"matchLabels": {"restore": "yes"}},
                     namespaceSelector={"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                                              "operator": "NotIn", "values": ["kube-system"]}]})
    core = CoreV1Api(client)
    assert core.create_namespaced_config_map("default", cm("plain")).metadata.annotations is None
    assert core.create_namespaced_config_map("default", cm("labelled", restore="yes")).metadata.annotations
    assert core.create_namespaced_config_map("kube-system", cm("system", "kube-system", restore="yes")
                                             ).metadata.annotations is None
    assert len(reviews) == 1
    # the same configuration name: replaces the first
    register_webhook(fake_api, url, ca_bundle, namespaceSelector={"matchLabels": {"mode": "restore"}})
    assert core.create_namespaced_config_map("default", cm("elsewhere")).metadata.annotations is None
    assert core.create_namespaced_config_map("restored", cm("here", "restored")).metadata.annotations


@pytest.mark.parametrize("policy,expect_error", [("Fail", True), ("Ignore", False)])
def test_failure_policy_when_the_webhook_is_unreachable(fake_api, client, tls_webhook, policy, expect_error):
    _, ca_bundle, _ = tls_webhook
    register_webhook(fake_api, "https://127.0.0.1:9/mutate", ca_bundle, failurePolicy=policy, timeoutSeconds=1)
    core = CoreV1Api(client)
    if expect_error:
        with pytest.raises(ApiException) as error:
            core.create_namespaced_config_map("default", cm("x"))
        status, body = status_of(error)
        assert status == 500 and body["message"].startswith(
            'Internal error occurred: failed calling webhook "test.example.com": failed to call webhook: Post '
            '"https://127.0.0.1:9/mutate?timeout=1s"')
    else:
        assert core.create_namespaced_config_map("default", cm("x")).metadata.name == "x"
    assert fake_api.admission_calls[-1].error and fake_api.admission_calls[-1].response is None


def test_webhook_with_an_untrusted_certificate_is_a_failure(fake_api, client, tls_webhook):
    url, _, _ = tls_webhook
    register_webhook(fake_api, url, pem(certificate("other-ca")[1]))
    with pytest.raises(ApiException) as error:
        CoreV1Api(client).create_namespaced_config_map("default", cm("x"))
    status, body = status_of(error)
    assert status == 500 and "CERTIFICATE_VERIFY_FAILED" in body["message"]


def test_dry_run_skips_webhooks_with_side_effects(fake_api, client, tls_webhook):
    url, ca_bundle, reviews = tls_webhook
    register_webhook(fake_api, url, ca_bundle, sideEffects="Some")
    with pytest.raises(ApiException) as error:
        CoreV1Api(client).create_namespaced_config_map("default", cm("x"), dry_run="All")
    assert status_of(error)[1]["message"] == 'admission webhook "test.example.com" does not support dry run'
    assert reviews == []


# --- JSON patch, as webhooks send it ---

DOC = {"a/b": {"~c": 1}, "list": [1, 2], "keep": True}


@pytest.mark.parametrize("ops,expected", [
    ([{"op": "add", "path": "/a~1b/~0d", "value": 2}], {**DOC, "a/b": {"~c": 1, "~d": 2}}),
    ([{"op": "add", "path": "/list/-", "value": 3}], {**DOC, "list": [1, 2, 3]}),
    ([{"op": "add", "path": "/list/0", "value": 0}], {**DOC, "list": [0, 1, 2]}),
    ([{"op": "remove", "path": "/list/1"}], {**DOC, "list": [1]}),
    ([{"op": "replace", "path": "/keep", "value": False}], {**DOC, "keep": False}),
    ([{"op": "move", "from": "/keep", "path": "/moved"}], {"a/b": {"~c": 1}, "list": [1, 2], "moved": True}),
    ([{"op": "copy", "from": "/list", "path": "/copy"}], {**DOC, "copy": [1, 2]}),
    ([{"op": "test", "path": "/a~1b/~0c", "value": 1}], DOC),
])
def test_json_patch_operations(ops, expected):
    assert apply(DOC, ops) == expected and DOC == {"a/b": {"~c": 1}, "list": [1, 2], "keep": True}


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/keep", "value": False}],
    [{"op": "replace", "path": "/missing", "value": 1}],
    [{"op": "remove", "path": "/list/2"}],
    [{"op": "add", "path": "/list/01", "value": 1}],
    [{"op": "add", "path": "/no/parent", "value": 1}],
    [{"op": "jump", "path": "/keep"}],
])
def test_json_patch_errors(ops):
    with pytest.raises(PatchError):
        apply(DOC, ops)


def test_match_conditions_are_evaluated_as_cel(fake_api, client, tls_webhook):
    url, ca_bundle, reviews = tls_webhook
    register_webhook(fake_api, url, ca_bundle, matchConditions=[
        {"name": "not-robots", "expression": "!request.userInfo.username.startsWith('system:serviceaccount:')"},
        {"name": "labelled", "expression": "has(object.metadata.labels) && 'restore' in object.metadata.labels"}])
    core = CoreV1Api(client)
    assert core.create_namespaced_config_map("default", cm("plain")).metadata.annotations is None
    assert core.create_namespaced_config_map("default", cm("marked", restore="yes")).metadata.annotations
    assert len(reviews) == 1


def test_a_match_condition_that_cannot_be_evaluated_follows_the_failure_policy(fake_api, client, tls_webhook):
    url, ca_bundle, reviews = tls_webhook
    register_webhook(fake_api, url, ca_bundle, matchConditions=[{"name": "broken", "expression": "request.nope.deeper"}])
    with pytest.raises(ApiException) as error:
        CoreV1Api(client).create_namespaced_config_map("default", cm("x"))
    assert error.value.status == 500 and "match conditions" in json.loads(error.value.body)["message"]
    assert reviews == []


def test_serves_https_that_the_kubeconfig_it_writes_trusts(tmp_path):
    with FakeKubeAPI(tls=True) as api:
        api.add(cm("over-tls"))
        assert api.url.startswith("https://127.0.0.1:")
        client = k8s_config.new_client_from_config(config_file=api.write_kubeconfig(str(tmp_path / "kubeconfig")))
        assert [c.metadata.name for c in CoreV1Api(client).list_namespaced_config_map("default").items] == ["over-tls"]
        # nothing but the CA it wrote is trusted: a client without it is refused the handshake
        plain = ssl.create_default_context()
        with pytest.raises(ssl.SSLCertVerificationError):
            with socket.create_connection(("127.0.0.1", int(api.url.rsplit(":", 1)[1])), timeout=5) as raw_socket, \
                    plain.wrap_socket(raw_socket, server_hostname="127.0.0.1"):
                pass

"""The identity index kept by list + watch, the values held within a restore, and what the webhook says before the
index has synced: against the fake API server, over HTTP, through the real client."""

from __future__ import annotations

import base64
import json
import signal
import time
from typing import Any, Callable, Iterator

import pytest

from kubectl_kvbackup import kinds, rules
from kubectl_kvbackup.cluster import ConnectionOptions, connect, object_path
from kvbackup_webhook import create_app, identity_index, metrics
from kvbackup_webhook.admission import InUse
from kvbackup_webhook.identity_index import IdentityIndex, Reservations
from kvbackup_webhook.lookups import ClusterLookups

from .webhook_server import WebhookServer, post_review, write_tls

Obj = dict[str, Any]
WEBHOOK_USER = "system:serviceaccount:kvbackup-system:kvbackup-webhook"
#: a wait for the background threads, not a measurement
WAIT_LIMIT = 20.0


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def vm(name: str, mac: str | None = None, serial: str | None = None, namespace: str = "prod",
       kind: str = "VirtualMachine", status_mac: str | None = None, labels: dict[str, str] | None = None) -> Obj:
    spec: Obj = {"domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {},
                                                        **({"macAddress": mac} if mac else {})}]}}}
    if serial:
        spec["domain"]["firmware"] = {"serial": serial}
    obj: Obj = {"apiVersion": "kubevirt.io/v1", "kind": kind,
                "metadata": {"name": name, "namespace": namespace, **({"labels": labels} if labels else {})},
                "spec": spec if kind == "VirtualMachineInstance" else {"template": {"spec": spec}}}
    if status_mac:
        obj["status"] = {"interfaces": [{"name": "default", "mac": status_mac}]}
    return obj


def restore_review(obj: Obj, uid: str) -> Obj:
    """The AdmissionReview kube-apiserver sends when Velero restores ``obj``."""
    obj = {**obj, "metadata": {**obj["metadata"], "labels": {rules.VELERO_RESTORE_LABEL: "nightly-1"}}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "kubevirt.io", "version": "v1", "kind": obj["kind"]},
        "resource": {"group": "kubevirt.io", "version": "v1", "resource": "virtualmachines"},
        "name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"], "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:velero:velero", "groups": ["system:authenticated"]},
        "object": obj}}


def mac_after(response: Obj, original: str) -> str:
    """The MAC the restored VM ends up with: the patched one, else the one it asked for."""
    patch = json.loads(base64.b64decode(response["response"]["patch"])) if "patch" in response["response"] else []
    return next((op["value"] for op in patch if op["path"].endswith("/macAddress")), original)


@pytest.fixture
def webhook_kubeconfig(fake_api, tmp_path) -> str:
    return fake_api.write_kubeconfig(str(tmp_path / "webhook-kubeconfig"), user=WEBHOOK_USER)


@pytest.fixture
def index(webhook_kubeconfig) -> Iterator[IdentityIndex]:
    started = IdentityIndex(lambda: connect(ConnectionOptions(kubeconfig=webhook_kubeconfig, request_timeout=5)))
    yield started
    started.stop()


def test_the_index_lists_in_pages_then_is_synced_with_every_value_in_use(fake_api, index, monkeypatch) -> None:
    monkeypatch.setattr(identity_index, "PAGE_SIZE", 2)
    fake_api.add_all([vm("a", mac="02:00:00:00:00:0A"), vm("b", serial="serial-b"), vm("c"), vm("d"),
                      vm("e", mac="02-00-00-00-00-0e", namespace="dev"),
                      vm("a", kind="VirtualMachineInstance", status_mac="02:00:00:00:00:AA")])
    assert index.unchecked_reason() is not None and not index.synced
    index.start()
    wait_for(lambda: index.synced, "the first list")
    assert index.unchecked_reason() is None
    assert index.values() == ({"02:00:00:00:00:0a", "02:00:00:00:00:0e", "02:00:00:00:00:aa"}, {"serial-b"}, set())
    pages = [r for r in fake_api.requests if r.path.endswith("/virtualmachines") and "watch" not in r.query]
    assert len(pages) == 3 and all(r.query["limit"] == "2" for r in pages) and "continue" in pages[-1].query
    assert index.object_count() == 4  # VMs c and d use no value: nothing is kept of them

    def watches() -> list[dict[str, str]]:
        return [r.query for r in fake_api.requests if r.query.get("watch") == "1"]
    wait_for(lambda: len(watches()) == 2, "a watch of each kind")
    assert all(q["allowWatchBookmarks"] == "true" and q["resourceVersion"] for q in watches())


def test_updates_and_deletes_are_seen_and_a_shared_value_lives_while_any_object_uses_it(fake_api, index,
                                                                                         kubeconfig) -> None:
    fake_api.add(vm("web", mac="02:00:00:00:00:01", serial="s1"))
    fake_api.add(vm("web", kind="VirtualMachineInstance", mac="02:00:00:00:00:01"))
    wait_for(lambda: index.start().synced, "the first list")
    fake_api.add(vm("db", mac="02:00:00:00:00:02"))
    wait_for(lambda: "02:00:00:00:00:02" in index.values()[0], "an added VM")
    fake_api.add(vm("web", mac="02:00:00:00:00:03", serial="s1"))  # the VM's MAC changes; its VMI keeps the old
    wait_for(lambda: "02:00:00:00:00:03" in index.values()[0], "an updated VM")
    assert index.values()[0] == {"02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"}
    admin = connect(ConnectionOptions(kubeconfig=kubeconfig))
    admin.request("DELETE", object_path(kinds.VMI, "v1", "prod", "web"))
    wait_for(lambda: "02:00:00:00:00:01" not in index.values()[0], "a deleted VMI")
    admin.request("DELETE", object_path(kinds.VM, "v1", "prod", "web"))
    wait_for(lambda: index.values() == ({"02:00:00:00:00:02"}, set(), set()), "a deleted VM")


def test_a_compacted_watch_lists_again_and_a_failing_watch_makes_the_index_stale(fake_api, index,
                                                                                 monkeypatch) -> None:
    monkeypatch.setattr(identity_index, "BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(identity_index, "STALE_AFTER", 0.0)
    list_only = [{"verbs": ["list"], "apiGroups": ["kubevirt.io"],
                  "resources": ["virtualmachines", "virtualmachineinstances"]}]
    fake_api.allow_only(WEBHOOK_USER, list_only)  # the watches are refused, and retried
    fake_api.add(vm("old", mac="02:00:00:00:00:01"))
    wait_for(lambda: index.start().synced, "the first list")
    wait_for(lambda: "stale" in (index.unchecked_reason() or ""), "the index to report itself stale")
    fake_api.add(vm("new", mac="02:00:00:00:00:02"))
    fake_api.compact()  # the resourceVersion of the first list is gone
    assert "02:00:00:00:00:02" not in index.values()[0]
    fake_api.allow_only(WEBHOOK_USER, [{**list_only[0], "verbs": ["list", "watch"]}])
    wait_for(lambda: "02:00:00:00:00:02" in index.values()[0], "the list after the watch expired")
    # VMs and VMIs once, and each again after its watch answered 410
    wait_for(lambda: index.relists == 4, "the VMIs' list after their watch expired")
    wait_for(lambda: index.unchecked_reason() is None, "the index to be current again")


def test_a_watch_the_server_ends_at_once_is_retried_with_backoff_not_in_a_loop(fake_api, index, monkeypatch) -> None:
    monkeypatch.setattr(identity_index, "WATCH_SECONDS", (0, 0))  # every watch ends as soon as it starts
    index.start()
    wait_for(lambda: index.synced, "the first lists")
    time.sleep(2.0)
    watches = [r for r in fake_api.requests if r.query.get("watch") == "1"]
    # backoff of 0.8 s and more (with jitter) after each: a few per kind in 2 s, where a loop makes hundreds
    assert 2 <= len(watches) <= 6, len(watches)


def test_values_held_by_one_worker_are_seen_by_another_and_expire(tmp_path) -> None:
    path = str(tmp_path / "held.sqlite")
    now = [1000.0]
    first, second = Reservations(path, ttl=60, clock=lambda: now[0]), Reservations(path, ttl=60, clock=lambda: now[0])
    wanted = ({"02:00:00:00:00:01"}, {"s1"}, set())
    nothing: InUse = (set(), set(), set())
    assert first.claim("prod/a", wanted, nothing, hold=True) == nothing
    assert first.claim("prod/a", wanted, nothing, hold=True) == nothing  # its own values do not collide
    assert second.claim("prod/b", wanted, nothing, hold=True) == wanted
    second.hold("prod/b", ({"02:00:00:00:00:01", "02:00:00:00:00:77"}, set(), set()))  # 01 stays a's
    assert first.claim("prod/c", ({"02:00:00:00:00:77", "02:00:00:00:00:01"}, set(), set()), nothing, hold=False) \
        == ({"02:00:00:00:00:77", "02:00:00:00:00:01"}, set(), set())
    assert second.claim("prod/d", ({"02:00:00:00:00:99"}, set(), set()), nothing, hold=False) == nothing
    assert first.claim("prod/e", ({"02:00:00:00:00:99"}, set(), set()), nothing, hold=False) == nothing  # dry run
    now[0] += 61
    assert second.claim("prod/b", wanted, nothing, hold=True) == nothing  # a's never appeared: expired


def test_two_workers_never_let_one_mac_through_twice_within_a_restore(fake_api, webhook_kubeconfig,
                                                                       tmp_path) -> None:
    fake_api.add(vm("running", mac="02:00:00:00:00:01"))
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(mode=0o700)
    material = write_tls(str(tls_dir))
    with WebhookServer(str(tls_dir), material.ca_pem, workers=2,
                       env={"KVBACKUP_WEBHOOK_KUBECONFIG": webhook_kubeconfig}) as server:
        # the server is ready once /readyz said so: every worker of the pod has synced, whichever answered
        assert server.get("/metrics", server.metrics_port)[1].count("kvbackup_webhook_unsynced_workers 0\n") == 1
        # the VM in the cluster is caught by either worker
        connection = server.connection()
        _, answer = post_review(connection, restore_review(vm("copy", mac="02:00:00:00:00:01"), "uid-copy"))
        connection.close()
        assert mac_after(answer, "02:00:00:00:00:01") != "02:00:00:00:00:01"
        # pairs of VMs restored one after the other, each request on a new connection to whichever worker
        # accepts it; the first of a pair is never created, so no watch can have shown it
        for pair in range(8):
            mac = f"02:00:00:00:01:{pair:02x}"
            kept = []
            for member in ("a", "b"):
                connection = server.connection()
                status, answer = post_review(connection, restore_review(vm(f"vm-{pair}-{member}", mac=mac),
                                                                        f"uid-{pair}-{member}"))
                connection.close()
                assert status == 200 and answer["response"]["allowed"]
                kept.append(mac_after(answer, mac))
            assert kept[0] == mac and kept[1] != mac, kept
        _, text = server.get("/metrics", server.metrics_port)
        assert 'kvbackup_webhook_lookup_failures_total{lookup="identity-index"} 0' in text


def test_before_the_index_has_synced_reviews_warn_count_and_readiness_waits(fake_api, webhook_kubeconfig,
                                                                             tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(identity_index.RESERVATIONS_ENV, str(tmp_path / "held.sqlite"))
    fake_api.inject("GET", r"/virtualmachineinstances$", status=500)  # the index never finishes its first list
    lookups = ClusterLookups(lambda: connect(ConnectionOptions(kubeconfig=webhook_kubeconfig, request_timeout=5)))
    client = create_app({"LOOKUPS": lookups, "INDEX_SYNC_TIMEOUT": 3600}).test_client()
    try:
        response = client.get("/readyz")
        assert response.status_code == 503 and "has not finished listing" in response.text
        assert "VirtualMachineInstances yet" in response.text
        first = client.post("/mutate", json=restore_review(vm("a", mac="02:00:00:00:00:05"), "uid-a")).json
        second = client.post("/mutate", json=restore_review(vm("b", mac="02:00:00:00:00:05"), "uid-b")).json
        for answer in (first, second):
            assert answer["response"]["allowed"]
            assert any("checked only in part (the identity index has not finished listing" in w
                       for w in answer["response"]["warnings"])
        # what this restore holds is still checked
        assert mac_after(first, "02:00:00:00:00:05") == "02:00:00:00:00:05"
        assert mac_after(second, "02:00:00:00:00:05") != "02:00:00:00:00:05"
        assert 'kvbackup_webhook_lookup_failures_total{lookup="identity-index"} 2' in client.get("/metrics").text
        # a VM without a value a collision policy governs needs no identities: nothing to warn about
        plain = client.post("/mutate", json=restore_review(vm("c"), "uid-c")).json
        assert "warnings" not in plain["response"]
        late = create_app({"LOOKUPS": lookups, "INDEX_SYNC_TIMEOUT": 0}).test_client().get("/readyz")
        assert late.status_code == 200 and late.text.startswith("ok, but the identity index has not finished")
    finally:
        lookups.index.stop()


def test_keep_policies_start_no_index_and_are_ready_at_once(webhook_kubeconfig, fake_api) -> None:
    lookups = ClusterLookups(lambda: connect(ConnectionOptions(kubeconfig=webhook_kubeconfig)))
    client = create_app({"LOOKUPS": lookups, "MAC_POLICY": "keep", "FIRMWARE_POLICY": "keep"}).test_client()
    assert client.get("/readyz").text == "ok\n"
    assert not [r for r in fake_api.requests if "virtualmachine" in r.path]


def test_readiness_speaks_for_every_worker_of_the_pod(webhook_kubeconfig, monkeypatch) -> None:
    # what the gunicorn master does (gunicorn.conf.py): shared slots, the first workers expected before they fork
    for name in ("_shared", "_slots", "_slot"):
        monkeypatch.setattr(metrics, name, getattr(metrics, name))
    metrics.share_between_workers(2)
    metrics.use_slot(0)
    lookups = ClusterLookups(lambda: connect(ConnectionOptions(kubeconfig=webhook_kubeconfig)))
    client = create_app({"LOOKUPS": lookups, "MAC_POLICY": "keep", "FIRMWARE_POLICY": "keep"}).test_client()
    # this worker needs no index, but the second has not started: the pod must not get traffic yet
    response = client.get("/readyz")
    assert response.status_code == 503 and response.text == "waiting: 1 worker of this pod has not synced the " \
                                                            "identity index yet\n"
    assert "kvbackup_webhook_unsynced_workers 1\n" in client.get("/metrics").text
    metrics.worker_gone(1)  # it exited: nothing to wait for
    assert client.get("/readyz").text == "ok\n"
    assert "kvbackup_webhook_unsynced_workers 0\n" in client.get("/metrics").text
    metrics.expect_worker(1)  # its replacement starts, then gives up waiting for its index
    assert client.get("/readyz").status_code == 503
    metrics.use_slot(1)
    metrics.Metrics().index_waiting_until(time.monotonic() - 1)
    response = client.get("/readyz")
    assert response.status_code == 200 and response.text.startswith("ok, but 1 worker of this pod has not synced")
    metrics.Metrics().index_synced()
    assert client.get("/readyz").text == "ok\n"


def test_a_worker_that_leaves_the_pod_no_longer_counts_as_unsynced(fake_api, webhook_kubeconfig, tmp_path) -> None:
    fake_api.inject("GET", r"/virtualmachineinstances$", status=500)  # no worker's index ever syncs
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(mode=0o700)
    material = write_tls(str(tls_dir))
    with WebhookServer(str(tls_dir), material.ca_pem, workers=2,
                       env={"KVBACKUP_WEBHOOK_KUBECONFIG": webhook_kubeconfig,
                            "KVBACKUP_WEBHOOK_INDEX_SYNC_TIMEOUT": "0"}) as server:
        def unsynced() -> str:
            return next(line for line in server.get("/metrics", server.metrics_port)[1].splitlines()
                        if line.startswith("kvbackup_webhook_unsynced_workers "))

        assert unsynced() == "kvbackup_webhook_unsynced_workers 2"
        server.process.send_signal(signal.SIGTTOU)  # gunicorn: one worker fewer
        wait_for(lambda: len(server.worker_pids()) == 1, "a worker to leave")
        wait_for(lambda: unsynced() == "kvbackup_webhook_unsynced_workers 1", "the gone worker to be forgotten")

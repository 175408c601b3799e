"""Lists at scale and watches, as kube-apiserver serves them from etcd and its watch cache.

Sources: staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go (GetList: continue pages read the first page's
revision; remainingItemCount only when nothing is filtered; handleCompactedErrorForPaging: 410 Expired with a
fresh token), staging/src/k8s.io/apiserver/pkg/endpoints/handlers/watch.go (chunked JSON lines),
staging/src/k8s.io/apiserver/pkg/storage/cacher/cacher.go and watch_cache.go (initial ADDED events, 410 for a
resourceVersion older than the history, bookmarks), cache_watcher.go (leaving a selector is DELETED).
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from kubernetes import watch as k8s_watch
from kubernetes.client import CoreV1Api

from kubectl_kvbackup.cluster import LIST_PAGE_SIZE, ConnectionOptions, connect

from .fakeapi import FakeKubeAPI
from .test_fakeapi import client, cm, raw  # noqa: F401 (client: a fixture)

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def test_continue_pages_read_the_snapshot_of_the_first_page(fake_api, client):
    fake_api.add_all(cm(f"c{i}", app="x") for i in range(5))
    status, first = raw(client, "GET", f"{CONFIGMAPS}?limit=2")
    assert first["metadata"]["remainingItemCount"] == 3
    CoreV1Api(client).delete_namespaced_config_map("c3", "default")
    CoreV1Api(client).create_namespaced_config_map("default", cm("c9"))
    token = first["metadata"]["continue"]
    status, rest = raw(client, "GET", f"{CONFIGMAPS}?limit=10&continue={token}")
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c2", "c3", "c4"]  # c3 deleted since, c9 too new
    assert rest["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    _, selected = raw(client, "GET", f"{CONFIGMAPS}?limit=2&labelSelector=app%3Dx")
    assert selected["metadata"]["continue"] and "remainingItemCount" not in selected["metadata"]


def test_an_expired_continue_token_answers_410_with_a_fresh_token(fake_api, client):
    fake_api.add_all(cm(f"c{i}") for i in range(5))
    _, first = raw(client, "GET", f"{CONFIGMAPS}?limit=2")
    CoreV1Api(client).delete_namespaced_config_map("c4", "default")
    fake_api.compact()
    status, body = raw(client, "GET", f"{CONFIGMAPS}?limit=2&continue={first['metadata']['continue']}")
    assert (status, body["kind"], body["reason"], body["code"]) == (410, "Status", "Expired", 410)
    assert body["message"].startswith("The provided continue parameter is too old to display a consistent list")
    _, rest = raw(client, "GET", f"{CONFIGMAPS}?limit=10&continue={body['metadata']['continue']}")
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c2", "c3"]  # after c1, at the latest state


def test_list_pages_goes_on_after_its_continue_token_expired(fake_api, kubeconfig):
    count = LIST_PAGE_SIZE * 2 + 10
    fake_api.add_all(cm(f"c{i:05d}") for i in range(count))
    pages = connect(ConnectionOptions(kubeconfig=kubeconfig)).list_pages(CONFIGMAPS)
    seen = [next(pages)["metadata"]["name"] for _ in range(LIST_PAGE_SIZE)]
    fake_api.add(cm("elsewhere", "other"))  # the cluster moves on, and etcd compacts its history
    fake_api.compact()
    seen += [item["metadata"]["name"] for item in pages]
    assert seen == [f"c{i:05d}" for i in range(count)]
    continued = [r.query.get("continue") for r in fake_api.requests if r.path == CONFIGMAPS][1:]
    assert len(continued) == 3 and continued[1] != continued[0]  # expired, then the server's fresh token


# --- watch ---

def watch_events(fake_api: FakeKubeAPI, query: str) -> list[dict[str, Any]]:
    """Every line of a watch that ends by its timeoutSeconds, read off the wire."""
    url = urlsplit(fake_api.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("GET", f"{CONFIGMAPS}?watch=1&{query}",
                       headers={"Authorization": f"Bearer {fake_api.token_for('admin')}"})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
    lines = response.read().decode().splitlines()
    connection.close()
    return [json.loads(line) for line in lines]


def test_a_watch_replays_changes_after_a_resource_version_and_sends_bookmarks(fake_api, client):
    core = CoreV1Api(client)
    fake_api.add(cm("before"))
    since = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", cm("c"))
    core.patch_namespaced_config_map("c", "default", {"data": {"a": "b"}})
    core.delete_namespaced_config_map("c", "default")
    events = watch_events(fake_api, f"resourceVersion={since}&allowWatchBookmarks=true&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events[:3]] == [
        ("ADDED", "c"), ("MODIFIED", "c"), ("DELETED", "c")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(since)
    assert events[-1]["type"] == "BOOKMARK" and events[-1]["object"]["kind"] == "ConfigMap"
    assert all(e["type"] != "BOOKMARK" for e in watch_events(fake_api, f"resourceVersion={since}&timeoutSeconds=1"))


def test_a_watch_without_resource_version_starts_with_the_current_objects(fake_api, client):
    fake_api.add_all([cm("a", app="x"), cm("b")])
    events = watch_events(fake_api, "labelSelector=app%3Dx&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_an_object_leaving_a_watched_selection_is_deleted_for_the_watcher(fake_api, client):
    since = fake_api.add(cm("a", app="x"))["metadata"]["resourceVersion"]
    CoreV1Api(client).patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"app": "y"}}})
    events = watch_events(fake_api, f"labelSelector=app%3Dx&resourceVersion={since}&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["labels"]) for e in events] == [("DELETED", {"app": "y"})]


def test_a_watch_from_a_compacted_resource_version_is_gone(fake_api, client):
    since = fake_api.add(cm("a"))["metadata"]["resourceVersion"]
    fake_api.add(cm("b"))
    fake_api.compact()
    events = watch_events(fake_api, f"resourceVersion={since}&timeoutSeconds=1")
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["code"], status["reason"]) == (410, "Expired")
    assert status["message"].startswith(f"too old resource version: {since} (")


def test_the_kubernetes_client_watches_the_fake(fake_api, client):
    since = CoreV1Api(client).list_namespaced_config_map("default").metadata.resource_version
    fake_api.add(cm("seen"))
    stream = k8s_watch.Watch().stream(CoreV1Api(client).list_namespaced_config_map, "default",
                                      resource_version=since, timeout_seconds=1)
    assert [(e["type"], e["object"].metadata.name) for e in stream] == [("ADDED", "seen")]

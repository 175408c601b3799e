"""The webhook under gunicorn over TLS on loopback, driven by a client that verifies the serving certificate."""

from __future__ import annotations

import base64
import json
import os
import ssl
from typing import Iterator

import pytest

from .test_webhook import load
from .webhook_server import WebhookServer, post_review, write_tls

NO_CLUSTER = {"KVBACKUP_WEBHOOK_KUBECONFIG": "/nonexistent", "KVBACKUP_WEBHOOK_INDEX_SYNC_TIMEOUT": "0"}


@pytest.fixture
def tls_dir(tmp_path) -> str:
    folder = tmp_path / "tls"
    folder.mkdir(mode=0o700)
    return str(folder)


@pytest.fixture
def server(tls_dir: str) -> Iterator[WebhookServer]:
    material = write_tls(tls_dir)
    # no cluster for lookups: they fail safe, which the fixtures below do not need (nor the identity index, which
    # would hold up readiness for its start-up timeout)
    with WebhookServer(tls_dir, material.ca_pem, env=NO_CLUSTER) as running:
        yield running


def test_mutates_over_https_with_a_verified_certificate(server: WebhookServer) -> None:
    connection = server.connection()
    status, body = post_review(connection, load("dv-succeeded-velero")["review"])
    connection.close()
    assert status == 200
    assert json.loads(base64.b64decode(body["response"]["patch"])) == \
        load("dv-succeeded-velero")["expect"]["patch"]
    status, body = post_review(server.connection(), load("launcher-pod-denied")["review"])
    assert status == 200 and body["response"]["status"]["code"] == 403


def test_malformed_and_oversized_requests_get_clear_errors_and_the_server_lives_on(server: WebhookServer) -> None:
    connection = server.connection()
    connection.request("POST", "/mutate", body=b"{not json", headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 400 and "not JSON" in json.loads(response.read())["response"]["status"]["message"]
    huge = load("dv-succeeded-velero")["review"]
    huge["request"]["object"]["metadata"]["annotations"] = {"blob": "x" * (3 * 1024 * 1024)}
    status, body = post_review(server.connection(), huge)
    assert status == 413 and body["response"]["allowed"] is False
    chunked = server.connection()  # no Content-Length: the body is cut at the limit, and that is what is said
    chunked.request("POST", "/mutate", body=iter([json.dumps(huge).encode()]),
                    headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = chunked.getresponse()
    assert response.status == 413 and json.loads(response.read())["response"]["status"]["code"] == 413
    assert server.get("/healthz") == (200, "ok\n")


def test_a_client_that_does_not_trust_the_ca_is_refused(server: WebhookServer, tmp_path) -> None:
    other = write_tls(str(tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        post_review(server.connection(other.ca_pem), load("dv-succeeded-velero")["review"])


def test_rotated_certificate_is_served_without_restart_or_dropped_connections(server: WebhookServer,
                                                                             tls_dir: str) -> None:
    review = load("dv-succeeded-velero")["review"]
    kept_open = server.connection()
    assert post_review(kept_open, review)[0] == 200
    pids = server.worker_pids()

    rotated = write_tls(tls_dir)  # a new CA and certificate, swapped in as kubelet swaps a Secret volume

    # the connection opened before the rotation keeps working
    assert post_review(kept_open, review)[0] == 200
    kept_open.close()
    # new connections get the new certificate: verified by the new CA, refused by the old one
    for _ in range(4):  # several connections, so every worker has been asked
        assert post_review(server.connection(rotated.ca_pem), review)[0] == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        post_review(server.connection(), review)
    assert server.worker_pids() == pids  # no worker was restarted for it


def test_workers_come_from_the_environment(tls_dir: str) -> None:
    material = write_tls(tls_dir)
    with WebhookServer(tls_dir, material.ca_pem, workers=3,
                       env=NO_CLUSTER) as running:
        assert len(running.worker_pids()) == 3


def test_metrics_add_up_across_workers(server: WebhookServer) -> None:
    """Each request on a new connection may reach either worker; the counters are shared, so none is lost."""
    for _ in range(12):
        connection = server.connection()
        post_review(connection, load("dv-succeeded-velero")["review"])
        connection.close()
    status, text = server.get("/metrics")
    assert status == 200
    assert 'kvbackup_webhook_requests_total{kind="DataVolume",decision="patched"} 12' in text
    assert "kvbackup_webhook_request_duration_seconds_count 12" in text


def test_tls_files_are_private(tls_dir: str) -> None:
    write_tls(tls_dir)
    for name in ("tls.key", "tls.crt"):
        assert os.stat(os.path.join(tls_dir, name)).st_mode & 0o077 == 0

"""The webhook under gunicorn over TLS on loopback, driven by a client that verifies the serving certificate."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import time
from typing import Iterator

import pytest

from .test_webhook import load
from .webhook_server import WebhookServer, client_context, post_review, write_tls

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
    status, text = server.get("/metrics", server.metrics_port)
    assert status == 200
    assert 'kvbackup_webhook_requests_total{kind="DataVolume",decision="patched"} 12' in text
    assert "kvbackup_webhook_request_duration_seconds_count 12" in text


def test_tls_files_are_private(tls_dir: str) -> None:
    write_tls(tls_dir)
    for name in ("tls.key", "tls.crt"):
        assert os.stat(os.path.join(tls_dir, name)).st_mode & 0o077 == 0


def client_hello() -> bytes:
    """The first flight of a TLS client, made in memory: what a client that then goes quiet sends."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def closed_by_server(sock: socket.socket) -> bool:
    """Reads until the server ends the connection (True) or 60 s pass without it (False)."""
    sock.settimeout(60)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionError, ssl.SSLError):
        pass
    except TimeoutError:
        return False
    return True


def assert_still_serving(server: WebhookServer) -> None:
    # a probe with kubelet-like patience: the stalled clients hold the server for IO_TIMEOUT (5 s) each
    assert server.get("/healthz", timeout=3) == (200, "ok\n")
    connection = server.connection(timeout=3)
    assert post_review(connection, load("dv-succeeded-velero")["review"])[0] == 200
    connection.close()


def test_clients_that_stall_the_tls_handshake_cannot_starve_the_probes(server: WebhookServer) -> None:
    hello = client_hello()
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(12)]
    try:
        for sock in stalled:
            sock.sendall(hello)
        time.sleep(0.5)  # let the workers take them up
        assert_still_serving(server)
        assert all(closed_by_server(sock) for sock in stalled)  # cut off, not held for ever
    finally:
        for sock in stalled:
            sock.close()


def test_clients_that_send_less_body_than_announced_cannot_starve_the_probes(server: WebhookServer) -> None:
    stalled = []
    try:
        for _ in range(12):
            sock = client_context(server.ca_pem).wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                                                             server_hostname="127.0.0.1")
            sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n{\"apiVersion\":")
            stalled.append(sock)
        time.sleep(0.5)
        assert_still_serving(server)
        assert all(closed_by_server(sock) for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()


def test_metrics_are_served_on_their_own_port_only(server: WebhookServer) -> None:
    assert server.get("/metrics")[0] == 404
    assert server.get("/healthz") == (200, "ok\n") and server.get("/readyz")[0] == 200
    assert server.get("/metrics", server.metrics_port)[0] == 200
    assert server.get("/healthz", server.metrics_port)[0] == 404
    connection = server.connection(port=server.metrics_port)
    assert post_review(connection, load("dv-succeeded-velero")["review"])[0] == 404


def test_a_dangling_certificate_path_keeps_the_loaded_certificate(server: WebhookServer, tls_dir: str) -> None:
    assert server.get("/healthz")[0] == 200
    data = os.path.join(tls_dir, "..data")
    target = os.readlink(data)
    os.replace(_symlink_to("..missing", tls_dir), data)  # mid-swap: tls.crt -> ..data/tls.crt -> nothing
    try:
        for _ in range(4):  # every worker is asked
            assert server.get("/healthz") == (200, "ok\n")
    finally:
        os.replace(_symlink_to(target, tls_dir), data)


def _symlink_to(target: str, folder: str) -> str:
    link = os.path.join(folder, "..data_tmp")
    os.symlink(target, link)
    return link


def test_tls_1_2_offers_no_cbc_suites_and_tls_1_3_works(server: WebhookServer) -> None:
    cbc = client_context(server.ca_pem)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE+AES+SHA1:ECDHE+AES+SHA256:ECDHE+AES+SHA384:AES256-SHA:AES128-SHA")
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            cbc.wrap_socket(raw, server_hostname="127.0.0.1")
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = client_context(server.ca_pem)
        context.minimum_version = context.maximum_version = version
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() == ("TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
                assert "GCM" in tls.cipher()[0] or "CHACHA20" in tls.cipher()[0]


def test_a_worker_killed_mid_load_leaves_the_others_serving_and_its_counts_kept(server: WebhookServer) -> None:
    review = load("dv-succeeded-velero")["review"]
    for _ in range(8):
        connection = server.connection()
        post_review(connection, review)
        connection.close()
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    for _ in range(8):
        connection = server.connection()
        assert post_review(connection, review)[0] == 200
        connection.close()
    status, text = server.get("/metrics", server.metrics_port)
    assert status == 200
    assert 'kvbackup_webhook_requests_total{kind="DataVolume",decision="patched"} 16' in text


def million_interfaces_review() -> bytes:
    """The largest body the API server sends (3 MiB), made of as many JSON objects as fit: a restored VM with a
    million empty interfaces."""
    review = load("vm-mac-collision")["review"]
    devices = review["request"]["object"]["spec"]["template"]["spec"]["domain"]["devices"]
    devices["interfaces"] = []
    room = 3 * 1024 * 1024 - len(json.dumps(review, separators=(",", ":"))) - 16
    devices["interfaces"] = [{}] * (room // 3)
    return json.dumps(review, separators=(",", ":")).encode()


def test_the_largest_body_of_the_most_objects_is_refused_clearly(server: WebhookServer) -> None:
    """Judged as any other object, it took a worker past its memory limit and past the API server's timeout."""
    connection = server.connection(timeout=30)
    connection.request("POST", "/mutate", body=million_interfaces_review(), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 200 and body["response"]["uid"] == "0d6a1c2e-db"
    assert body["response"]["allowed"] is False and "more than 50000 JSON objects" in body["response"]["status"][
        "message"]

"""The webhook served for real: gunicorn as a subprocess, over TLS with a throwaway CA, on a loopback socket.

Used by the serving and end-to-end tests and by benchmarks/bench_webhook.py.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any

from kubectl_kvbackup import certs

STARTUP_LIMIT = 30.0  # seconds for gunicorn to answer /readyz; a wait for startup, not a measurement


def write_tls(folder: str) -> certs.TLSMaterial:
    """A CA and a serving certificate for 127.0.0.1/localhost, laid out as kubelet lays out a Secret volume:
    ``tls.crt -> ..data/tls.crt``, ``..data -> ..<generation>``, so a rotation is one atomic symlink flip."""
    material = certs.issue(["localhost"], ("127.0.0.1",))
    generation = tempfile.mkdtemp(prefix="..gen-", dir=folder)
    for name, data in (("tls.crt", material.cert_pem), ("tls.key", material.key_pem), ("ca.crt", material.ca_pem)):
        path = os.path.join(generation, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
    flip = os.path.join(folder, "..data_tmp")
    os.symlink(os.path.basename(generation), flip)
    os.replace(flip, os.path.join(folder, "..data"))
    for name in ("tls.crt", "tls.key", "ca.crt"):
        link = os.path.join(folder, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", name), link)
    return material


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    """A client that trusts only this CA and checks the host name, as kube-apiserver does with a caBundle."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.check_hostname = True
    return context


class WebhookServer:
    """``with WebhookServer(tls_dir, ca_pem, env={...}) as server:``; ``server.port`` (admission, probes),
    ``server.metrics_port``; stopped (SIGTERM) on exit."""

    def __init__(self, tls_dir: str, ca_pem: bytes, env: dict[str, str] | None = None, workers: int = 2,
                 startup_limit: float = STARTUP_LIMIT):
        self.tls_dir, self.ca_pem = tls_dir, ca_pem
        self.workers, self.startup_limit = workers, startup_limit
        self._extra_env = {"KVBACKUP_WEBHOOK_WORKERS": str(workers), **(env or {})}
        self._listeners: list[socket.socket] = []
        self.process: subprocess.Popen | None = None
        self.port = self.metrics_port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> "WebhookServer":
        # Sockets bound here and inherited by gunicorn (fd://): free ports with no race, as systemd does it.
        for _ in range(2):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
            listener.set_inheritable(True)
            self._listeners.append(listener)
        self.port, self.metrics_port = (listener.getsockname()[1] for listener in self._listeners)
        env = {**os.environ, "KVBACKUP_WEBHOOK_CERT_DIR": self.tls_dir,
               "KVBACKUP_WEBHOOK_BIND": f"fd://{self._listeners[0].fileno()}",
               "KVBACKUP_WEBHOOK_METRICS_BIND": f"fd://{self._listeners[1].fileno()}",
               "KVBACKUP_WEBHOOK_LOG_LEVEL": "warning", **self._extra_env}
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen([sys.executable, "-m", "kvbackup_webhook"], env=env,
                                        pass_fds=tuple(listener.fileno() for listener in self._listeners),
                                        stdout=subprocess.DEVNULL, stderr=self._stderr)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_limit
        while True:
            try:
                if self.get("/readyz")[0] == 200 and len(self.worker_pids()) >= self.workers:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the webhook did not start: {self.stderr()}")
            time.sleep(0.1)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def connection(self, ca_pem: bytes | None = None, port: int | None = None,
                   timeout: float = 10) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", port or self.port, timeout=timeout,
                                           context=client_context(ca_pem or self.ca_pem))

    def get(self, path: str, port: int | None = None, timeout: float = 10) -> tuple[int, str]:
        connection = self.connection(port=port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def worker_pids(self) -> list[int]:
        with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children", encoding="ascii") as f:
            return [int(pid) for pid in f.read().split()]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for listener in self._listeners:
            listener.close()
        self._listeners = []

    def __enter__(self) -> "WebhookServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def post_review(connection: http.client.HTTPSConnection, review: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = json.dumps(review).encode()
    connection.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())

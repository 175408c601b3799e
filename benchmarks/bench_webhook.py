"""Load on the webhook as kube-apiserver puts it: HTTPS with keep-alive to gunicorn (2 workers), a mix of reviews.

    python benchmarks/bench_webhook.py [--rate 500] [--seconds 10] [--connections 8]

An open-loop run sends at a fixed rate and measures each latency from the moment the request was due (so a stalled
server is not hidden by a client that waits for it); then a closed-loop run finds the most the server answers; then
the open loop again while 12 clients stall TLS handshakes (each renewed as soon as the server cuts it off). Last, the
peak resident memory of each worker (VmHWM) after the largest bodies the API server can send (3 MiB): a VM of a
million empty interfaces (refused), and the largest VM the rules still judge, one at a time and 12 at once.
The mix: restored DataVolumes (patched), PVCs of DataVolumes (owner lookup, cached), launcher pods (denied),
VMs with fixed MACs (identity lookup, cached), KubeVirt's own creates and objects outside the restore context.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.fakeapi import FakeKubeAPI  # noqa: E402
from tests.test_webhook import load  # noqa: E402
from tests.test_webhook_serving import client_hello, million_interfaces_review  # noqa: E402
from tests.webhook_server import WebhookServer, write_tls  # noqa: E402

MIX = ("dv-succeeded-velero", "pvc-of-datavolume-owner-restored", "launcher-pod-denied", "vm-mac-collision",
       "launcher-pod-from-kubevirt-controller", "dv-not-restore-context", "standalone-vmi-restricted-labels")


def bodies() -> list[bytes]:
    return [json.dumps(load(name)["review"]).encode() for name in MIX]


def seed(api: FakeKubeAPI) -> None:
    """What the lookups of the mix find: namespace prod, the PVCs' DataVolume, a VM holding a MAC."""
    api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
    api.add({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
             "metadata": {"name": "fedora-root", "namespace": "prod"}, "spec": {}})
    api.add({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "other", "namespace": "prod"},
             "spec": {"template": {"spec": {"domain": {"devices": {"interfaces": [
                 {"name": "default", "macAddress": "02:00:00:aa:bb:01"}]}}}}}})


def run(server: WebhookServer, payloads: list[bytes], rate: float | None, seconds: float,
        connections: int) -> tuple[list[float], float, int]:
    """Latencies (s), wall time, errors. ``rate=None``: closed loop, every connection sends as fast as answered."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    start = time.perf_counter() + 0.2
    total = int(rate * seconds) if rate else None
    stop_at = start + seconds

    def client() -> None:
        connection = server.connection()
        mine: list[float] = []
        while True:
            with lock:
                index = next(counter)
            if total is not None and index >= total:
                break
            due = start + index / rate if rate else time.perf_counter()
            if rate is None and due > stop_at:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            body = payloads[index % len(payloads)]
            connection.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - due)
            if response.status != 200:
                errors[0] += 1
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - start, errors[0]


def largest_judged_review() -> bytes:
    """3 MiB of VM that the rules still judge: as many interfaces as the node limit allows, with long names."""
    from kvbackup_webhook.admission import MAX_NODES

    review = load("vm-mac-collision")["review"]
    devices = review["request"]["object"]["spec"]["template"]["spec"]["domain"]["devices"]
    count = MAX_NODES - 100
    devices["interfaces"] = []
    room = 3 * 1024 * 1024 - len(json.dumps(review, separators=(",", ":"))) - 16
    width = room // count - len('{"name":""},')
    devices["interfaces"] = [{"name": f"{i:0{width}d}"} for i in range(count)]
    return json.dumps(review, separators=(",", ":")).encode()


class StalledHandshakes:
    """``count`` connections that send a ClientHello and nothing more, each replaced when the server cuts it."""

    def __init__(self, port: int, count: int):
        self._port, self._count, self._stop = port, count, threading.Event()
        self._threads = [threading.Thread(target=self._hold, daemon=True) for _ in range(count)]

    def _hold(self) -> None:
        hello = client_hello()
        while not self._stop.is_set():
            with socket.create_connection(("127.0.0.1", self._port)) as sock:
                sock.sendall(hello)
                sock.settimeout(0.5)
                while not self._stop.is_set():
                    try:
                        if not sock.recv(65536):
                            break
                    except socket.timeout:
                        continue
                    except OSError:
                        break

    def __enter__(self) -> "StalledHandshakes":
        for thread in self._threads:
            thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def send_large(server: WebhookServer, body: bytes, concurrent: int) -> list[int]:
    statuses: list[int] = []

    def one() -> None:
        connection = server.connection(timeout=60)
        connection.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        connection.close()

    threads = [threading.Thread(target=one) for _ in range(concurrent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def report_memory(server: WebhookServer) -> None:
    pids = server.worker_pids()
    print("peak RSS per worker (MiB), idle: " + ", ".join(f"{peak_rss_mib(pid):.0f}" for pid in pids) +
          f"; master {peak_rss_mib(server.process.pid):.0f}")
    for title, body in (("a million empty interfaces", million_interfaces_review()),
                        ("the largest VM judged", largest_judged_review())):
        for concurrent in (1, 12):
            statuses = send_large(server, body, concurrent)
            print(f"peak RSS per worker (MiB) after {title} ({len(body) / 2 ** 20:.1f} MiB) x {concurrent} at once: "
                  + ", ".join(f"{peak_rss_mib(pid):.0f}" for pid in pids) + f"; HTTP {sorted(set(statuses))}")


def report(title: str, latencies: list[float], wall: float, errors: int) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{title}: {len(ordered)} requests in {wall:.1f}s = {len(ordered) / wall:.0f} req/s; "
          f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, max {ordered[-1] * 1000:.2f} ms; {errors} errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second of the open-loop run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections, as the API servers'")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with FakeKubeAPI() as api, tempfile.TemporaryDirectory() as tmp:
        seed(api)
        tls_dir = os.path.join(tmp, "tls")
        os.mkdir(tls_dir, 0o700)
        material = write_tls(tls_dir)
        kubeconfig = api.write_kubeconfig(os.path.join(tmp, "kubeconfig"),
                                          user="system:serviceaccount:kvbackup-system:kvbackup-webhook")
        with WebhookServer(tls_dir, material.ca_pem, env={"KVBACKUP_WEBHOOK_KUBECONFIG": kubeconfig},
                           workers=args.workers) as server:
            payloads = bodies()
            run(server, payloads, None, 1.0, args.connections)  # warm up: connections, caches, imports
            print(f"{os.cpu_count()} CPUs, {args.workers} gunicorn workers, {args.connections} keep-alive "
                  f"connections, TLS; mix of {len(MIX)} kinds of review")
            report(f"open loop at {args.rate:.0f}/s", *run(server, payloads, args.rate, args.seconds,
                                                            args.connections))
            report("closed loop (most the server answers)", *run(server, payloads, None, args.seconds,
                                                                 args.connections))
            with StalledHandshakes(server.port, 12):
                report(f"open loop at {args.rate:.0f}/s with 12 clients stalling handshakes",
                       *run(server, payloads, args.rate, args.seconds, args.connections))
            failures = [line for line in server.get("/metrics", server.metrics_port)[1].splitlines()
                        if line.startswith("kvbackup_webhook_lookup_failures_total") and not line.endswith(" 0")]
            print("lookup failures:", ", ".join(failures) or "none")
            report_memory(server)


if __name__ == "__main__":
    main()

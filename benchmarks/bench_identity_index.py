"""The identity index at cluster scale: VMs (and running VMIs) in the fake API server, the webhook under gunicorn.

    python benchmarks/bench_identity_index.py [--vms 20000] [--rate 500] [--seconds 10] [--workers 2] [--index-only]

Prints: the memory the index keeps (its structures, measured in this process; then per gunicorn worker as resident
memory, against workers that keep no index), the time from start to ready (the index synced), the latency of an
open-loop run at ``--rate`` where every request is a restored VM with a fixed MAC (so every one is checked for
collisions), and whether a VM created 100 ms before a review is caught. All traffic stays on loopback; the run is bounded by
``--rate * --seconds`` requests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_webhook import bodies, report, run  # noqa: E402
from kubectl_kvbackup import kinds  # noqa: E402
from kubectl_kvbackup.cluster import ConnectionOptions, collection_path, connect  # noqa: E402
from kvbackup_webhook.identity_index import IdentityIndex  # noqa: E402
from tests.fakeapi import FakeKubeAPI  # noqa: E402
from tests.test_identity_index import mac_after, restore_review, vm  # noqa: E402
from tests.webhook_server import WebhookServer, post_review, write_tls  # noqa: E402

WEBHOOK_USER = "system:serviceaccount:kvbackup-system:kvbackup-webhook"
PROBES = 20  # VMs created 100 ms before their review


def mac(i: int, prefix: str = "02:00") -> str:
    return f"{prefix}:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


def fleet(count: int) -> list[dict[str, Any]]:
    """``count`` VMs, each with a fixed MAC, serial and UUID and a few volumes; every other one running (a VMI
    whose guest reports the MAC)."""
    objects = []
    for i in range(count):
        name, namespace = f"vm-{i:06d}", f"team-{i % 200:03d}"
        obj = vm(name, mac=mac(i), serial=f"serial-{i:06d}", namespace=namespace)
        spec = obj["spec"]["template"]["spec"]
        spec["domain"]["firmware"]["uuid"] = f"{i:08x}-0000-4000-8000-000000000000"
        spec["domain"]["resources"] = {"requests": {"memory": "2Gi"}}
        spec["volumes"] = [{"name": "root", "dataVolume": {"name": f"{name}-root"}},
                           {"name": "ci", "cloudInitNoCloud": {"secretRef": {"name": f"{name}-userdata"}}}]
        objects.append(obj)
        if i % 2 == 0:
            objects.append(vm(name, namespace=namespace, kind="VirtualMachineInstance", mac=mac(i),
                              status_mac=mac(i)))
    return objects


def deep_size(*roots: Any) -> int:
    """Bytes of every object reachable through containers from ``roots``, each counted once."""
    seen: set[int] = set()
    stack, total = list(roots), 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (tuple, list, set, frozenset)):
            stack.extend(obj)
    return total


def index_memory(kubeconfig: str) -> None:
    index = IdentityIndex(lambda: connect(ConnectionOptions(kubeconfig=kubeconfig, request_timeout=30))).start()
    started = time.perf_counter()
    while not index.synced:
        time.sleep(0.05)
    synced = time.perf_counter() - started
    index.stop()
    # what the index keeps: per-object entries and the counted values
    held = deep_size(index._objects, index._counts)
    objects = index.object_count()
    print(f"index in this process: {objects} objects, {sum(len(found) for found in index.values())} distinct "
          f"values, synced in {synced:.1f}s; it keeps {held / 2**20:.1f} MiB = {held / objects:.0f} B per object "
          f"-> {held / objects * 150_000 / 2**20:.0f} MiB for 100,000 VMs of which 50,000 run")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def serve(tls_dir: str, ca_pem: bytes, kubeconfig: str, workers: int, **env: str) -> WebhookServer:
    """The webhook under gunicorn, returned once /readyz says every worker's index has synced (the fake API server
    lists 100,000 VMs to each worker in about a minute on 2 cores)."""
    return WebhookServer(tls_dir, ca_pem, workers=workers, startup_limit=900,
                         env={"KVBACKUP_WEBHOOK_KUBECONFIG": kubeconfig, "KVBACKUP_WEBHOOK_INDEX_SYNC_TIMEOUT": "900",
                              **env})


def probe_fresh_collisions(api: FakeKubeAPI, server: WebhookServer, admin: Any, base: int) -> int:
    caught = 0
    for n in range(PROBES):
        taken = mac(base + n, prefix="02:aa")
        admin.request("POST", collection_path(kinds.VM, "v1", "probe"), body=vm(f"existing-{n}", mac=taken,
                                                                                 namespace="probe"))
        time.sleep(0.1)
        connection = server.connection()
        _, answer = post_review(connection, restore_review(vm(f"restored-{n}", mac=taken, namespace="probe"),
                                                           f"probe-{n}"))
        connection.close()
        caught += mac_after(answer, taken) != taken
    return caught


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second of the open-loop run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--index-only", action="store_true",
                        help="measure the index in this process only")
    args = parser.parse_args()
    with FakeKubeAPI() as api, tempfile.TemporaryDirectory() as tmp:
        api.add_all(fleet(args.vms))
        api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "probe"}})
        kubeconfig = api.write_kubeconfig(os.path.join(tmp, "kubeconfig"), user=WEBHOOK_USER)
        admin = connect(ConnectionOptions(kubeconfig=api.write_kubeconfig(os.path.join(tmp, "admin"))))
        print(f"{os.cpu_count()} CPUs; {args.vms} VMs, {(args.vms + 1) // 2} VMIs in the fake API server")
        index_memory(kubeconfig)
        if args.index_only:
            return
        tls_dir = os.path.join(tmp, "tls")
        os.mkdir(tls_dir, 0o700)
        material = write_tls(tls_dir)

        # every review a restored VM with a fixed MAC: half collide with a VM in the cluster, half are new
        payloads = [json.dumps(restore_review(vm(f"restored-{i:05d}", namespace="restored",
                                                 mac=mac(i * 2) if i % 2 else mac(i, prefix="02:bb")),
                                              f"bench-{i}")).encode() for i in range(2000)]
        # resident memory after the same warm-up on both sides: restored VMs, and the other kinds' reviews, whose
        # owner lookups load the kubernetes client (about 40 MiB) as the index does; the difference is the index's
        warm_up = payloads[:400] + bodies() * 20
        with serve(tls_dir, material.ca_pem, kubeconfig, args.workers, KVBACKUP_WEBHOOK_MAC_POLICY="keep",
                   KVBACKUP_WEBHOOK_FIRMWARE_POLICY="keep") as plain:
            run(plain, warm_up, None, 1.0, args.connections)
            baseline = [rss_kib(pid) for pid in plain.worker_pids()]
        started = time.perf_counter()
        with serve(tls_dir, material.ca_pem, kubeconfig, args.workers) as server:
            print(f"ready (every worker's index synced) {time.perf_counter() - started:.1f}s after start")
            run(server, warm_up, None, 1.0, args.connections)
            rss = [rss_kib(pid) for pid in server.worker_pids()]
            print(f"resident memory per worker after a warm-up: {', '.join(f'{kib / 1024:.0f} MiB' for kib in rss)} "
                  f"with the index; {', '.join(f'{kib / 1024:.0f} MiB' for kib in baseline)} without (policies keep): "
                  f"the index adds {(max(rss) - min(baseline)) / 1024:.0f} MiB at most")
            report(f"open loop at {args.rate:.0f}/s, a collision check in every review",
                   *run(server, payloads, args.rate, args.seconds, args.connections))
            caught = probe_fresh_collisions(api, server, admin, args.vms)
            print(f"VMs created 100 ms before the review of a restored VM with their MAC: {caught} of {PROBES} "
                  "caught")
            unchecked = [line for line in server.get("/metrics", server.metrics_port)[1].splitlines()
                         if line.startswith("kvbackup_webhook_lookup_failures_total") and not line.endswith(" 0")]
            print("lookup failures:", ", ".join(unchecked) or "none")


if __name__ == "__main__":
    main()

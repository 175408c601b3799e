"""`graph --all` over N VMs (each with 6 dependents) in the test API server: requests, objects/s, wall time (best
of 3, modules already imported), peak traced memory.

    python benchmarks/bench_graph.py [N ...]      (default: 100 1000)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.fleet import fleet  # noqa: E402
from kubectl_kvbackup.cli.main import main  # noqa: E402
from tests.fakeapi import FakeKubeAPI  # noqa: E402


ROUNDS = 3


def graph_all(api: FakeKubeAPI, kubeconfig: str) -> tuple[float, int]:
    """One ``graph --all -o json``: wall seconds and the number of nodes it printed."""
    api.reset_requests()
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(["graph", "--all", "-o", "json", "--kubeconfig", kubeconfig])
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"graph failed with exit code {code}")
    return wall, len(json.loads(out.getvalue())["nodes"])


def measure(count: int) -> dict[str, float]:
    """Wall time is the best of a few rounds without tracemalloc, which slows Python several times over; peak
    memory is traced in one more round. The modules are imported before either (see ``run``)."""
    with FakeKubeAPI() as api, tempfile.TemporaryDirectory() as tmp:
        api.add_all(fleet(count))
        kubeconfig = os.path.join(tmp, "kubeconfig")
        api.write_kubeconfig(kubeconfig, namespace="bench")
        wall, nodes = min(graph_all(api, kubeconfig) for _ in range(ROUNDS))
        requests = len(api.requests)
        tracemalloc.start()
        graph_all(api, kubeconfig)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"vms": count, "nodes": nodes, "requests": requests, "wall_s": wall,
                "objects_per_s": nodes / wall, "peak_mib": peak / 2**20}


def run() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [100, 1000]
    measure(1)  # imports the client and the verb's modules, which the first count would otherwise pay for
    print(f"{'VMs':>6} {'nodes':>7} {'requests':>9} {'wall s':>8} {'objects/s':>10} {'peak MiB':>9}")
    for count in counts:
        r = measure(count)
        print(f"{r['vms']:>6} {r['nodes']:>7} {r['requests']:>9} {r['wall_s']:>8.2f} {r['objects_per_s']:>10.0f} "
              f"{r['peak_mib']:>9.1f}")


if __name__ == "__main__":
    run()

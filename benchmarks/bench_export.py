"""Export benchmarks in the test API server.

    python benchmarks/bench_export.py [N]     (default N=1000 VMs, each with 6 dependents)

1. `export --all` of N VMs to a directory and to a .tar.gz, each beside a kubectl-equivalent baseline measured in the
   same run: the same LISTs the export made, through the same kubernetes client, each written as one YAML List file
   per kind — what `kubectl get KIND -o yaml > file` does. Each runs as its own process (start-up included on both
   sides); the best of a few rounds counts, and the figures are wall time, the ratio to the baseline, and the
   process's peak memory (max RSS).
2. The frozen window of 50 running VMIs whose freeze and thaw each take 20 ms (a guest agent's round trip),
   frozen sequentially (--parallel 1) and in parallel (--parallel 8), with --snapshot.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.fleet import fleet  # noqa: E402
from kubectl_kvbackup.bundle import read_bundle  # noqa: E402
from kubectl_kvbackup.cli.main import main  # noqa: E402
from tests.fakeapi import FakeKubeAPI  # noqa: E402

ROUNDS = 3
#: The baseline: `kubectl get` of each listed collection, as YAML, one file per collection.
#: The same serialiser as the export, so that the ratio measures what export adds.
BASELINE = """
import os, sys
from kubectl_kvbackup.yamlout import dump_yaml
from kubectl_kvbackup.cluster import ConnectionOptions, connect
kubeconfig, folder, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
connection = connect(ConnectionOptions(kubeconfig=kubeconfig))
os.mkdir(folder)
for number, path in enumerate(paths):
    items = list(connection.list_pages(path))
    with open(os.path.join(folder, f"{number}.yaml"), "wb") as f:
        f.write(dump_yaml({"apiVersion": "v1", "kind": "List", "items": items}))
"""


def timed(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system: steadier than wall time on a shared machine) and peak RSS in MiB
    of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {argv}\n{stderr}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def listed_paths(api: FakeKubeAPI) -> list[str]:
    """The collections the export listed (its first pages: kvbackup lists with ``limit``), each once."""
    paths = []
    for request in api.requests:
        if request.method == "GET" and "limit" in request.query and "continue" not in request.query \
                and request.path not in paths:
            paths.append(request.path)
    return paths


def bench_export(count: int) -> None:
    with FakeKubeAPI() as api, tempfile.TemporaryDirectory() as tmp:
        api.add_all(fleet(count))
        kubeconfig = api.write_kubeconfig(os.path.join(tmp, "kubeconfig"), namespace="bench")
        export = [sys.executable, "-m", "kubectl_kvbackup", "export", "--all", "--freeze=never", "--kubeconfig",
                  kubeconfig, "-q", "--to"]
        api.reset_requests()
        timed(export + [os.path.join(tmp, "warm-up")])
        requests = len(api.requests)
        paths = listed_paths(api)
        files = len(read_bundle(os.path.join(tmp, "warm-up")).index["files"])
        print(f"export --all of {count} VMs: {requests} API requests ({len(paths)} LISTs), {files} files")
        results: dict[str, list[tuple[float, float, float]]] = {"baseline": [], "directory": [], ".tar.gz": []}
        for round_ in range(ROUNDS):
            results["baseline"].append(timed([sys.executable, "-c", BASELINE, kubeconfig,
                                              os.path.join(tmp, f"kubectl-{round_}"), *paths]))
            results["directory"].append(timed(export + [os.path.join(tmp, f"dir-{round_}")]))
            results[".tar.gz"].append(timed(export + [os.path.join(tmp, f"tar-{round_}.tar.gz")]))
        baseline = min(wall for wall, _, _ in results["baseline"])
        baseline_cpu = min(cpu for _, cpu, _ in results["baseline"])
        for what, runs in results.items():
            wall = min(w for w, _, _ in runs)
            cpu = min(c for _, c, _ in runs)
            memory = max(m for _, _, m in runs)
            ratio = "" if what == "baseline" else \
                f" ({wall / baseline:.2f}x the baseline; CPU {cpu / baseline_cpu:.2f}x)"
            print(f"  {what:10} best of {ROUNDS}: {wall:.2f} s, CPU {cpu:.2f} s{ratio}, peak memory {memory:.0f} MiB")


def quiet_main(argv: list[str]) -> None:
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"export failed with exit code {code}: {argv}")


def snapshotter(api: FakeKubeAPI, stop: threading.Event) -> None:
    """The CSI snapshotter: a content bound, the cut and readiness at once."""
    while not stop.is_set():
        for snapshot in api.objects("snapshot.storage.k8s.io", "VolumeSnapshot"):
            if not (snapshot.get("status") or {}).get("readyToUse"):
                content = f"snapcontent-{snapshot['metadata']['name']}"
                api.add({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
                         "metadata": {"name": content}, "spec": {"driver": "bench.csi"},
                         "status": {"snapshotHandle": content}})
                api.add({**snapshot, "status": {"readyToUse": True, "boundVolumeSnapshotContentName": content,
                                                "creationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})
        stop.wait(0.05)


def bench_frozen_window(vmis: int = 50, latency: float = 0.02) -> None:
    for parallel in (1, 8):
        with FakeKubeAPI() as api, tempfile.TemporaryDirectory() as tmp:
            api.add_all(fleet(vmis))
            for i in range(vmis):
                api.set_freeze_behaviour("bench", f"vm-{i:05d}", delay=latency)
            kubeconfig = api.write_kubeconfig(os.path.join(tmp, "kubeconfig"), namespace="bench")
            stop = threading.Event()
            thread = threading.Thread(target=snapshotter, args=(api, stop), daemon=True)
            thread.start()
            try:
                target = os.path.join(tmp, "bundle")
                quiet_main(["export", "--all", "--snapshot", "--parallel", str(parallel), "--kubeconfig", kubeconfig,
                            "--to", target, "-q"])
            finally:
                stop.set()
                thread.join()
            freeze = read_bundle(target).index["freeze"]
            longest = max(v["frozenForSeconds"] for v in freeze["vmis"])
            print(f"{vmis} VMIs, --parallel {parallel}: frozen window {freeze['frozenWindowSeconds']:.2f} s "
                  f"(snapshot cut {freeze['snapshotCutSeconds']:.2f} s + overhead {freeze['overheadSeconds']:.2f} s), "
                  f"longest single guest frozen {longest:.2f} s")


if __name__ == "__main__":
    bench_export(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    bench_frozen_window()

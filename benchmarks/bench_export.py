"""Export benchmarks in the test API server.

    python benchmarks/bench_export.py [N]     (default N=1000 VMs, each with 6 dependents)

1. `export --all` of N VMs to a directory and to a .tar.gz, over TLS as on a real API server, each beside two
   baselines measured in the same run:
   - `kubectl`: `kubectl get KIND,KIND,… -n NAMESPACE -o yaml > file` of the same kinds, when a kubectl is on PATH
     (its discovery cache warm, as on an admin's machine) — the comparison the export's speed target names;
   - `python`: the same LISTs through the same kubernetes client, each written as one YAML List file per kind with
     the export's own serialiser — what the export adds to merely reading and writing, kubectl's language aside.
   Each runs as its own process (start-up included on every side); the best of a few rounds counts, and the figures
   are wall time, CPU time, the ratios to each baseline, and the process's peak memory (max RSS).
2. The frozen window of 50 running VMIs whose freeze and thaw each take 20 ms (a guest agent's round trip),
   frozen sequentially (--parallel 1) and in parallel (--parallel 8), with --snapshot.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.fleet import fleet  # noqa: E402
from kubectl_kvbackup.bundle import read_bundle  # noqa: E402
from kubectl_kvbackup.cli.main import main  # noqa: E402
from tests.fakeapi import FakeKubeAPI  # noqa: E402
from tests.helpers import Snapshotter  # noqa: E402

ROUNDS = 3
BASELINES = ("kubectl", "python")
#: The python baseline: each listed collection as YAML, one file per collection, with the export's serialiser.
PYTHON_BASELINE = """
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


def timed(argv: list[str], stdout: str | None = None, home: str | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system: steadier than wall time on a shared machine) and peak RSS in MiB
    of one process; its output goes to the file ``stdout``, or nowhere."""
    env = {**os.environ, "PYTHONPATH": REPO, **({"HOME": home} if home else {})}
    started = time.perf_counter()
    with open(stdout or os.devnull, "wb") as out:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.PIPE)
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


def kubectl_gets(paths: list[str]) -> list[list[str]]:
    """The ``kubectl get`` arguments that list the same collections: one command per namespace, each kind by its
    fully qualified resource name (``virtualmachines.v1.kubevirt.io``)."""
    by_namespace: dict[str, list[str]] = {}
    for path in paths:
        parts = path.strip("/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        namespace, resource = (rest[1], rest[2]) if rest[0] == "namespaces" else ("", rest[0])
        by_namespace.setdefault(namespace, []).append(f"{resource}.{version}.{group}" if group else resource)
    return [["get", ",".join(kinds), "-o", "yaml", *(["-n", namespace] if namespace else [])]
            for namespace, kinds in by_namespace.items()]


def kubectl_baseline(kubectl: str, kubeconfig: str, gets: list[list[str]], home: str, folder: str
                     ) -> tuple[float, float, float]:
    """The ``kubectl get`` commands one after another, each into its own file: summed wall and CPU, peak memory."""
    os.makedirs(folder)
    runs = [timed([kubectl, "--kubeconfig", kubeconfig, *get], stdout=os.path.join(folder, f"{number}.yaml"),
                  home=home) for number, get in enumerate(gets)]
    return sum(r[0] for r in runs), sum(r[1] for r in runs), max(r[2] for r in runs)


def bench_export(count: int) -> None:
    with FakeKubeAPI(tls=True) as api, tempfile.TemporaryDirectory() as tmp:
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
        kubectl = shutil.which("kubectl")
        gets = kubectl_gets(paths)
        home = os.path.join(tmp, "home")
        if kubectl:
            kubectl_baseline(kubectl, kubeconfig, gets, home, os.path.join(tmp, "kubectl-warm-up"))
            print(f"  kubectl baseline: {'; '.join('kubectl ' + ' '.join(get) for get in gets)}")
        else:
            print("  no kubectl on PATH: the kubectl baseline is left out")
        results: dict[str, list[tuple[float, float, float]]] = {**{base: [] for base in BASELINES},
                                                                 "directory": [], ".tar.gz": []}
        for round_ in range(ROUNDS):
            if kubectl:
                results["kubectl"].append(kubectl_baseline(kubectl, kubeconfig, gets, home,
                                                           os.path.join(tmp, f"kubectl-{round_}")))
            results["python"].append(timed([sys.executable, "-c", PYTHON_BASELINE, kubeconfig,
                                            os.path.join(tmp, f"python-{round_}"), *paths]))
            results["directory"].append(timed(export + [os.path.join(tmp, f"dir-{round_}")]))
            results[".tar.gz"].append(timed(export + [os.path.join(tmp, f"tar-{round_}.tar.gz")]))
        best = {what: (min(w for w, _, _ in runs), min(c for _, c, _ in runs), max(m for _, _, m in runs))
                for what, runs in results.items() if runs}
        for what, (wall, cpu, memory) in best.items():
            ratios = "; ".join(f"{wall / best[base][0]:.2f}x {base} (CPU {cpu / best[base][1]:.2f}x)"
                               for base in BASELINES if base in best and what not in BASELINES)
            print(f"  {what:10} best of {ROUNDS}: {wall:.2f} s, CPU {cpu:.2f} s{', ' + ratios if ratios else ''}, "
                  f"peak memory {memory:.0f} MiB")


def quiet_main(argv: list[str]) -> None:
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"export failed with exit code {code}: {argv}")


def bench_frozen_window(vmis: int = 50, latency: float = 0.02) -> None:
    for parallel in (1, 8):
        with FakeKubeAPI() as api, tempfile.TemporaryDirectory() as tmp:
            api.add_all(fleet(vmis))
            for i in range(vmis):
                api.set_freeze_behaviour("bench", f"vm-{i:05d}", delay=latency)
            kubeconfig = api.write_kubeconfig(os.path.join(tmp, "kubeconfig"), namespace="bench")
            target = os.path.join(tmp, "bundle")
            with Snapshotter(api):  # the CSI snapshotter: a content bound, the cut and readiness at once
                quiet_main(["export", "--all", "--snapshot", "--parallel", str(parallel), "--kubeconfig", kubeconfig,
                            "--to", target, "-q"])
            freeze = read_bundle(target).index["freeze"]
            longest = max(v["frozenForSeconds"] for v in freeze["vmis"])
            print(f"{vmis} VMIs, --parallel {parallel}: frozen window {freeze['frozenWindowSeconds']:.2f} s "
                  f"(snapshot cut {freeze['snapshotCutSeconds']:.2f} s + overhead {freeze['overheadSeconds']:.2f} s), "
                  f"longest single guest frozen {longest:.2f} s")


if __name__ == "__main__":
    bench_export(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    bench_frozen_window()

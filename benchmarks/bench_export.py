"""Export benchmarks in the test API server.

    python benchmarks/bench_export.py [N]     (default N=1000 VMs, each with 6 dependents)

1. `export --all` of N VMs: API requests (stay O(kinds)), wall time, bundle files and MB written per second.
2. The frozen window of 50 running VMIs whose freeze and thaw each take 20 ms (a guest agent's round trip),
   frozen sequentially (--parallel 1) and in parallel (--parallel 8), with --snapshot.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.fleet import fleet  # noqa: E402
from kubectl_kvbackup.bundle import read_bundle  # noqa: E402
from kubectl_kvbackup.cli.main import main  # noqa: E402
from tests.fakeapi import FakeKubeAPI  # noqa: E402


def quiet_main(argv: list[str]) -> None:
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"export failed with exit code {code}: {argv}")


def bundle_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def bench_export(count: int) -> None:
    with FakeKubeAPI() as api, tempfile.TemporaryDirectory() as tmp:
        api.add_all(fleet(count))
        kubeconfig = api.write_kubeconfig(os.path.join(tmp, "kubeconfig"), namespace="bench")
        api.reset_requests()
        target = os.path.join(tmp, "bundle")
        started = time.perf_counter()
        quiet_main(["export", "--all", "--freeze=never", "--kubeconfig", kubeconfig, "--to", target, "-q"])
        wall = time.perf_counter() - started
        files = len(read_bundle(target).index["files"])
        size = bundle_size(target) / 2**20
        print(f"export of {count} VMs: {len(api.requests)} API requests, {wall:.2f} s, {files} files "
              f"({files / wall:.0f} files/s), {size:.1f} MiB ({size / wall:.1f} MiB/s)")


def snapshotter(api: FakeKubeAPI, stop: threading.Event) -> None:
    while not stop.is_set():
        for snapshot in api.objects("snapshot.storage.k8s.io", "VolumeSnapshot"):
            if not (snapshot.get("status") or {}).get("readyToUse"):
                api.add({**snapshot, "status": {"readyToUse": True}})
        time.sleep(0.05)


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
            print(f"{vmis} VMIs, --parallel {parallel}: frozen window {freeze['frozenWindowSeconds']:.2f} s, "
                  f"longest single guest frozen {longest:.2f} s")


if __name__ == "__main__":
    bench_export(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    bench_frozen_window()

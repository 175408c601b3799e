"""Restore benchmark in the test API server.

    python benchmarks/bench_restore.py [N]     (default N=1000 VMs, each with 6 dependents)

A bundle of N running VMs exported with --snapshot is restored into a new namespace: API requests (one create per
object, one owner patch per object created before its owner, plus O(kinds) lists), wall time and objects/s — next to
creating the same ``resources/`` the way ``kubectl apply -R -f`` does (a GET then a POST per object, one at a time).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.fleet import fleet  # noqa: E402
from kubectl_kvbackup import kinds  # noqa: E402
from kubectl_kvbackup.cli.main import main  # noqa: E402
from kubectl_kvbackup.cluster import ApiError, ConnectionOptions, collection_path, connect, object_path  # noqa: E402
from tests.fakeapi import FakeKubeAPI  # noqa: E402
from tests.helpers import Snapshotter  # noqa: E402


def quiet_main(argv: list[str]) -> None:
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"command failed with exit code {code}: {argv}")


def export_fleet(api: FakeKubeAPI, kubeconfig: str, target: str) -> None:
    with Snapshotter(api):
        quiet_main(["export", "--all", "--snapshot", "--freeze=never", "--kubeconfig", kubeconfig, "--to", target,
                    "-q"])


def apply_like_kubectl(kubeconfig: str, resources: str) -> int:
    """What ``kubectl apply -R -f resources/`` sends: per object a GET (absent) then a POST, in file order."""
    connection = connect(ConnectionOptions(kubeconfig=kubeconfig))
    count = 0
    for folder, _, files in sorted(os.walk(resources)):
        for name in sorted(files):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                obj = yaml.safe_load(f)
            kind = kinds.kind_for(kinds.group_of(obj["apiVersion"]), obj["kind"])
            namespace = obj["metadata"].get("namespace", "")
            try:
                connection.request("GET", object_path(kind, kind.version, namespace, obj["metadata"]["name"]))
            except ApiError:
                pass
            connection.request("POST", collection_path(kind, kind.version, namespace or None), body=obj)
            count += 1
    return count


def bench_restore(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = os.path.join(tmp, "bundle")
        with FakeKubeAPI() as api:
            api.add_all(fleet(count))
            kubeconfig = api.write_kubeconfig(os.path.join(tmp, "kubeconfig"), namespace="bench")
            export_fleet(api, kubeconfig, bundle)
            api.reset_requests()
            started = time.perf_counter()
            quiet_main(["restore", bundle, "-n", "restored", "--kubeconfig", kubeconfig, "-q"])
            wall = time.perf_counter() - started
            requests = api.requests
        creates = sum(1 for r in requests if r.method == "POST")
        patches = sum(1 for r in requests if r.method == "PATCH")
        reads = sum(1 for r in requests if r.method == "GET")
        print(f"restore of {count} VMs into a new namespace: {len(requests)} API requests ({creates} creates, "
              f"{patches} owner patches, {reads} lists and discovery), {wall:.2f} s, {creates / wall:.0f} objects/s")
        with FakeKubeAPI() as api:
            api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
            kubeconfig = api.write_kubeconfig(os.path.join(tmp, "kubeconfig-apply"), namespace="bench")
            started = time.perf_counter()
            objects = apply_like_kubectl(kubeconfig, os.path.join(bundle, "resources"))
            wall = time.perf_counter() - started
            print(f"the same resources/ created as kubectl apply -R -f does: {len(api.requests)} API requests, "
                  f"{wall:.2f} s, {objects / wall:.0f} objects/s")


if __name__ == "__main__":
    bench_restore(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)

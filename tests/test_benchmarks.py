"""The benchmark scripts stay runnable: each imports (what it uses from the package and the tests still exists) and
the export benchmark's kubectl baseline lists what the export listed. Their figures are printed, never asserted."""

from __future__ import annotations

import importlib
import pathlib

import pytest

from benchmarks.bench_export import kubectl_gets

from .helpers import REPO

SCRIPTS = sorted(p.stem for p in pathlib.Path(REPO, "benchmarks").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_benchmark_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.__doc__, f"benchmarks/{name}.py says what it measures"


def test_the_kubectl_baseline_gets_the_collections_the_export_listed():
    paths = ["/apis/kubevirt.io/v1/namespaces/bench/virtualmachines", "/api/v1/namespaces/bench/pods",
             "/apis/pool.kubevirt.io/v1alpha1/namespaces/other/virtualmachinepools",
             "/apis/instancetype.kubevirt.io/v1beta1/virtualmachineclusterinstancetypes", "/api/v1/persistentvolumes"]
    assert kubectl_gets(paths) == [
        ["get", "virtualmachines.v1.kubevirt.io,pods", "-o", "yaml", "-n", "bench"],
        ["get", "virtualmachinepools.v1alpha1.pool.kubevirt.io", "-o", "yaml", "-n", "other"],
        ["get", "virtualmachineclusterinstancetypes.v1beta1.instancetype.kubevirt.io,persistentvolumes", "-o", "yaml"],
    ]

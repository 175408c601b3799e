"""Every command README.md shows in its ``sh`` blocks runs, in order, against the test API server: docs cannot rot.

Commands are found in the README itself, so a command added later is run too. ``kubectl kvbackup ARGS`` is run as
``kubectl-kvbackup ARGS``, which is exactly what kubectl executes for a plugin. A command that cannot run here is
skipped only when SKIPPED names it, with the reason; any other failure fails the test. Blocks fenced as plain ```
are synopses (TYPE/NAME placeholders), not commands.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Iterator

import pytest

from .fakeapi import FakeKubeAPI
from .helpers import REPO, RolloutController, Snapshotter, example_objects, obj

README = os.path.join(REPO, "README.md")
BIN = os.path.dirname(sys.executable)
KUBECTL_OTHER = re.compile(r"(^|[|;&(]\s*)kubectl (?!kvbackup\b)")
SKIPPED: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^python3 -m pip install\b"),
     "installs packages; .ci/run installs the project in a fresh venv and runs the first block's second line"),
    (re.compile(r"^python3 -m pytest\b"), "the test suite itself, run by .ci/run"),
    (re.compile(r"^kubectl krew\b"), "needs krew and a published GitHub release"),
    (re.compile(r"^ln -s kubectl-kvbackup \"\$\{KREW_ROOT"), "needs a krew installation"),
    (re.compile(r"^velero\b"), "needs Velero and a backup in its object storage"),
    (KUBECTL_OTHER, "kubectl itself (apply, label): the test API server serves kvbackup's requests, not kubectl's "
                    "OpenAPI-driven ones"),
]


def readme_commands(text: str) -> list[str]:
    """The command lines of the ``sh`` blocks, in order: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def plan(command: str) -> tuple[str | None, list[str]]:
    """What of ``command`` runs here (its ``&&`` parts not skipped), and why the rest does not."""
    runnable, reasons = [], []
    for part in (p.strip() for p in command.split(" && ")):
        reason = next((why for pattern, why in SKIPPED if pattern.search(part)), None)
        if reason is None and re.search(r"\|\s*dot\b", part) and shutil.which("dot") is None:
            reason = "Graphviz is not installed here"
        if reason:
            reasons.append(f"{part}: {reason}")
        else:
            runnable.append(re.sub(r"\bkubectl kvbackup\b", "kubectl-kvbackup", part))
    return (" && ".join(runnable) or None), reasons


@pytest.fixture
def demo_cluster(tmp_path) -> Iterator[tuple[FakeKubeAPI, str]]:
    """The example workloads in namespace demo, a CSI snapshotter that marks new snapshots ready, and Deployments
    that roll out."""
    with FakeKubeAPI() as fake:
        fake.add_all(example_objects())
        for name in ("demo", "os-images", "net-system"):
            fake.add(obj("v1", "Namespace", name, namespace=""))
        with Snapshotter(fake), RolloutController(fake):
            yield fake, fake.write_kubeconfig(str(tmp_path / "kubeconfig"), namespace="demo")


def test_the_first_block_holds_the_two_setup_commands():
    first = readme_commands(open(README, encoding="utf-8").read())[:2]
    assert first[0].startswith("python3 -m pip install . && kubectl-kvbackup export -f examples/demo")
    assert first[1] == "python3 -m pip install '.[test]' && python3 -m pytest -q"
    if shutil.which("awk"):  # the line .ci/run extracts and runs
        script = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
        awk = re.search(r"awk '([^']+)' README.md", script).group(1)
        extracted = subprocess.run(["awk", awk, README], capture_output=True, text=True, timeout=60).stdout.strip()
        assert extracted == first[1]


def test_every_readme_command_runs_against_the_test_api_server(demo_cluster, tmp_path):
    _, kubeconfig = demo_cluster
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "home").mkdir()
    for folder in ("examples", "deploy"):
        os.symlink(os.path.join(REPO, folder), work / folder)
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "KUBECONFIG": kubeconfig,
           "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    ran, skipped = [], []
    for command in readme_commands(open(README, encoding="utf-8").read()):
        runnable, reasons = plan(command)
        skipped += reasons
        if runnable is None:
            continue
        result = subprocess.run(["bash", "-c", f"set -euo pipefail\n{runnable}"], capture_output=True, text=True,
                                cwd=work, env=env, timeout=300)
        assert result.returncode == 0, f"README command failed: {command}\n{result.stderr}"
        assert "Traceback" not in result.stderr, f"{command}\n{result.stderr}"
        ran.append(command)
    print("skipped:\n  " + "\n  ".join(skipped))
    walkthrough = ("graph vm/fedora -n demo -o wide", "export vm/fedora -n demo --snapshot", "verify fedora.tar.gz",
                   "inspect fedora.tar.gz", "webhook install", "freeze vmi/fedora", "completion bash")
    assert all(any(step in command for command in ran) for step in walkthrough), ran
    assert (work / "fedora" / "kvbackup.json").exists()


@pytest.mark.parametrize("command,runs,skipped", [
    ("kubectl kvbackup graph vm/a -n b", "kubectl-kvbackup graph vm/a -n b", 0),
    ("kubectl apply -R -f fedora/resources", None, 1),
    ("kubectl kvbackup webhook render | kubectl apply -f -", None, 1),
    ("python3 -m pip install . && kubectl-kvbackup version", "kubectl-kvbackup version", 1),
])
def test_commands_are_run_or_skipped_with_a_reason(command, runs, skipped):
    runnable, reasons = plan(command)
    assert runnable == runs and len(reasons) == skipped

"""Fast start: the heavy libraries load only in the verbs that use them.

A verb's module is imported when its verb is parsed; the last tests build every verb listed in cli/main.py VERBS, so
this covers verbs added later too. Times are measured by benchmarks/bench_startup.py, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kubectl_kvbackup.cli.main import VERBS

from .helpers import EXAMPLES, REPO

HEAVY = ("kubernetes", "urllib3", "cryptography", "flask", "werkzeug", "gunicorn")

PROBE = """
import json, sys
from kubectl_kvbackup.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(HEAVY)))
sys.__stderr__.write("HEAVY=" + json.dumps(heavy) + "\\n")
"""


def heavy_modules_loaded(*argv: str, env: dict[str, str] | None = None) -> list[str]:
    script = PROBE.replace("json.loads(HEAVY)", repr(list(HEAVY)))
    result = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": REPO, "KUBECONFIG": os.devnull, **(env or {})},
                            timeout=120)
    line = next(line for line in result.stderr.splitlines() if line.startswith("HEAVY="))
    return json.loads(line.removeprefix("HEAVY="))


@pytest.mark.parametrize("argv", [
    ["--help"],
    *([verb, "--help"] for verb in ("graph", "export", "verify", "inspect", "freeze", "thaw", "webhook", "version")),
    ["version"],
    ["graph", "-f", EXAMPLES, "-n", "demo", "--all", "-o", "name"],
    ["completion", "bash"],
])
def test_help_version_completion_and_offline_graph_load_nothing_heavy(argv):
    assert heavy_modules_loaded(*argv) == []


def test_argcomplete_protocol_loads_nothing_heavy(tmp_path):
    # argcomplete ends the process with os._exit: -X importtime tells what was imported before
    answer = tmp_path / "answer"
    env = {**os.environ, "PYTHONPATH": REPO, "_ARGCOMPLETE": "1", "COMP_LINE": "kubectl-kvbackup gr",
           "COMP_POINT": "19", "_ARGCOMPLETE_STDOUT_FILENAME": str(answer)}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "kubectl_kvbackup"], capture_output=True,
                            text=True, cwd=REPO, env=env, timeout=120)
    assert answer.read_text().split() == ["graph"]
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    assert imported & set(HEAVY) == set()


def test_every_verb_module_registers_without_heavy_imports():
    script = ("import argparse, sys; from kubectl_kvbackup.cli.main import VERBS, build_parser; "
              "verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices; "
              "assert [verbs[verb].prog for verb in VERBS] == [f'kubectl kvbackup {verb}' for verb in VERBS]; "
              f"print(sorted({{n.split('.')[0] for n in sys.modules}} & {set(HEAVY)!r}))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"verbs {list(VERBS)} import {result.stdout.strip()} at registration"


@pytest.mark.parametrize("argv,modules", [
    (["--help"], set()),
    # cli.common, which every verb uses, imports completion for its completers
    (["graph", "--help"], {"graph", "completion"}),
    (["thaw", "--help"], {"freeze", "export", "graph", "completion"}),  # freeze shares export's duration flags
    (["adopt", "--help"], {"restore", "completion"}),
])
def test_a_verb_module_loads_only_when_its_verb_is_used(argv, modules):
    """--help lists every verb without importing one; a verb loads its own module (and what that imports)."""
    script = ("import json, sys; from kubectl_kvbackup.cli.main import VERBS, main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
              "print(json.dumps(sorted({module for module, _ in VERBS.values()} & "
              "{n.rpartition('.')[2] for n in sys.modules if n.startswith('kubectl_kvbackup.cli.')})))")
    result = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert loaded == modules, result.stderr


def test_the_client_loads_when_a_cluster_is_used(fake_api, kubeconfig):
    assert "kubernetes" in heavy_modules_loaded("graph", "--all", "--kubeconfig", kubeconfig)

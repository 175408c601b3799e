"""Output for people: -o wide tables for graph and inspect, -o dot with real line breaks and restore decisions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from kubectl_kvbackup.cli.main import main

from .helpers import EXAMPLES


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table(out: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]


def test_graph_wide_is_a_table_with_the_export_rules_decision(capsys):
    code, out, err = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "vm/fedora", "-o", "wide")
    assert code == 0, err
    rows = table(out)
    assert rows[0] == ["KIND", "NAME", "NAMESPACE", "FOUND", "RESTORE"]
    by_object = {(r[0], r[1]): r for r in rows[1:]}
    assert by_object[("VirtualMachine", "fedora")] == ["VirtualMachine", "fedora", "demo", "yes", "yes"]
    assert by_object[("VirtualMachineInstance", "fedora")][4] == "no (owned-vmi)"
    assert by_object[("Pod", "virt-launcher-fedora-x7k2p")][4] == "no (launcher-pod)"
    assert by_object[("DataVolume", "fedora-data")][3:] == ["no", "-"]
    assert by_object[("VirtualMachineClusterInstancetype", "u1.medium")][2] == "<cluster>"
    _, as_json, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "vm/fedora", "-o", "json")
    assert len(rows) - 1 == len(json.loads(as_json)["nodes"])


def test_dot_labels_have_real_line_breaks(capsys):
    code, out, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "vm/windows", "-o", "dot")
    assert code == 0
    assert '[label="VirtualMachine\\ndemo/windows", penwidth=2]' in out
    assert "\\\\n" not in out  # an escaped backslash draws a literal \\n in the box


def test_graph_dot_marks_what_the_rules_would_not_restore(capsys):
    _, out, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "vm/fedora", "-o", "dot")
    launcher = next(line for line in out.splitlines() if "/Pod/demo/virt-launcher-fedora-x7k2p\" [" in line)
    assert "not restored: launcher-pod" in launcher and "fillcolor=lightgrey" in launcher


def test_inspect_wide_and_dot_show_the_bundles_decisions(capsys, tmp_path):
    bundle = str(tmp_path / "b")
    assert run_cli(capsys, "export", "-f", EXAMPLES, "-n", "demo", "--all", "--to", bundle, "-q")[0] == 0
    code, out, err = run_cli(capsys, "inspect", bundle, "-o", "wide")
    assert code == 0, err
    rows = {(r[0], r[1]): r for r in table(out)[1:]}
    assert rows[("Pod", "virt-launcher-fedora-x7k2p")][4] == "no (launcher-pod)"
    assert rows[("VirtualMachine", "windows")][4] == "yes"
    _, out, _ = run_cli(capsys, "inspect", bundle, "-o", "dot")
    marked = [line for line in out.splitlines() if "not restored: " in line]
    assert any("virt-launcher-fedora-x7k2p" in line for line in marked)
    assert not any("/VirtualMachine/demo/windows\" [" in line for line in marked)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_renders_the_labels_on_two_lines(capsys):
    _, out, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "vm/windows", "-o", "dot")
    svg = subprocess.run(["dot", "-Tsvg"], input=out, capture_output=True, text=True, timeout=60, check=True).stdout
    node = svg[svg.index("<title>kubevirt.io/VirtualMachine/demo/windows</title>"):]
    node = node[:node.index("</g>")]
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", node)
    assert texts == ["VirtualMachine", "demo/windows"]

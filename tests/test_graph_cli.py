"""`kubectl kvbackup graph` end to end: output formats, offline equals online, and every error users can meet."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from kubectl_kvbackup.cli.main import main

from .helpers import EXAMPLES, REPO, example_objects


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_output_has_the_documented_schema(capsys):
    code, out, err = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "vm/fedora", "-o", "json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"roots", "nodes", "edges", "notes"}
    assert data["roots"] == [{"group": "kubevirt.io", "kind": "VirtualMachine", "namespace": "demo",
                              "name": "fedora"}]
    assert all(set(n) == {"group", "kind", "namespace", "name", "found"} for n in data["nodes"])
    assert all(set(e) == {"from", "to", "path", "optional"} for e in data["edges"])
    nad = {"group": "k8s.cni.cncf.io", "kind": "NetworkAttachmentDefinition", "namespace": "net-system",
           "name": "vlan10", "found": True}
    assert nad in data["nodes"]
    cluster_it = {"group": "instancetype.kubevirt.io", "kind": "VirtualMachineClusterInstancetype",
                  "namespace": "", "name": "u1.medium", "found": True}
    assert cluster_it in data["nodes"]


def test_yaml_output_equals_json_output(capsys):
    _, as_json, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "--all", "-o", "json")
    _, as_yaml, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "--all", "-o", "yaml")
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


def test_all_selects_top_level_workloads_once(capsys):
    _, out, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "--all", "-o", "json")
    roots = [(r["kind"], r["name"]) for r in json.loads(out)["roots"]]
    # the pool's VM, the VM's VMI and the replica set's VMIs (the orphan it adopts too) appear under their owners
    assert sorted(roots) == [("VirtualMachine", "fedora"), ("VirtualMachine", "windows"),
                             ("VirtualMachineInstanceReplicaSet", "web"), ("VirtualMachinePool", "workers")]


def test_label_selector_chooses_roots(capsys):
    _, out, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "-l", "app=web", "-o", "json")
    roots = [(r["kind"], r["name"]) for r in json.loads(out)["roots"]]
    # the replica set itself carries no label: both its VMIs are roots
    assert roots == [("VirtualMachineInstance", "webm2k9d"), ("VirtualMachineInstance", "webzq7hx")]
    _, out, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "-l", "pool in (workers)", "-o", "json")
    assert [(r["kind"], r["name"]) for r in json.loads(out)["roots"]] == [("VirtualMachine", "workers-0")]


def test_name_output_prints_found_objects_as_kubectl_does(capsys):
    code, out, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "vm", "windows", "-o", "name")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "virtualmachine.kubevirt.io/windows"
    assert "configmap/win-sysprep-extra" in lines
    assert "virtualmachineinstancetype.instancetype.kubevirt.io/win-large" in lines
    assert "controllerrevision.apps/windows-win-large-v1beta1-77aa1-1" in lines


def test_tree_output_shows_paths_and_marks_absent_optional_nodes(capsys):
    code, out, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "vm/fedora")
    assert code == 0
    assert out.startswith("VirtualMachine/fedora (namespace demo)\n")
    assert "├── PersistentVolumeClaim/fedora-data  (spec.template.spec.volumes[1].persistentVolumeClaim.claimName)" in out
    assert ("DataVolume/fedora-data  [not found]  (spec.template.spec.volumes[1].persistentVolumeClaim.claimName, "
            "optional)") in out
    assert "NetworkAttachmentDefinition/net-system/vlan10" in out
    assert "Pod/hp-volume-fedora-4xk9s" in out


def test_dot_output_is_a_graphviz_digraph(capsys):
    code, out, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "vmpool/workers", "-o", "dot")
    assert code == 0
    assert out.startswith("digraph kvbackup {")
    assert out.rstrip().endswith("}")
    assert '"pool.kubevirt.io/VirtualMachinePool/demo/workers" -> "kubevirt.io/VirtualMachine/demo/workers-0"' in out


def test_stdin_and_v1_list_are_read(capsys, monkeypatch, tmp_path):
    listing = {"apiVersion": "v1", "kind": "List", "items": example_objects()}
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(yaml.safe_dump(listing)))
    code, out, err = run_cli(capsys, "graph", "-f", "-", "-n", "demo", "vm/windows", "-o", "name")
    assert code == 0, err
    assert "secret/win-unattend" in out.splitlines()


def test_json_manifest_file_is_read(capsys, tmp_path):
    path = tmp_path / "objs.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": example_objects()}))
    code, out, _ = run_cli(capsys, "graph", "-f", str(path), "-n", "demo", "vm/windows", "-o", "name")
    assert code == 0 and "persistentvolumeclaim/win-base" in out.splitlines()


def test_missing_required_object_warns_on_stderr(capsys, tmp_path):
    path = tmp_path / "vm.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                                    "metadata": {"name": "x", "namespace": "demo"},
                                    "spec": {"template": {"spec": {"volumes": [
                                        {"name": "s", "secret": {"secretName": "gone"}}]}}}}))
    code, out, err = run_cli(capsys, "graph", "-f", str(path), "-n", "demo", "vm/x", "-o", "json")
    assert code == 0
    assert "warning: secret/demo/gone not found (required by virtualmachine.kubevirt.io/demo/x" in err
    assert {"group": "", "kind": "Secret", "namespace": "demo", "name": "gone", "found": False} in \
        json.loads(out)["nodes"]


@pytest.mark.parametrize("argv,code,message", [
    (["graph", "-f", EXAMPLES, "pod/x"], 2, 'the server doesn\'t have a resource type "pod"'),
    (["graph", "-f", EXAMPLES, "frobnicators/x"], 2, 'resource type "frobnicators"'),
    (["graph", "-f", EXAMPLES, "-n", "demo", "vm/nope"], 1,
     'error: virtualmachines.kubevirt.io "nope" not found in namespace "demo"'),
    (["graph", "-f", EXAMPLES], 2, "use exactly one of -l SELECTOR or --all"),
    (["graph", "-f", EXAMPLES, "--all", "-l", "a=b"], 2, "use exactly one of"),
    (["graph", "-f", EXAMPLES, "-A", "vm/fedora"], 2, "cannot be retrieved by name across all namespaces"),
    (["graph", "-f", EXAMPLES, "-l", "a in (b"], 2, "error:"),
    (["graph", "-f", "/does/not/exist", "--all"], 1, 'the path "/does/not/exist" does not exist'),
    (["graph", "-o", "xml", "--all", "-f", EXAMPLES], 2, "invalid choice: 'xml'"),
])
def test_bad_input_gets_one_clear_message(capsys, argv, code, message):
    with pytest.raises(SystemExit) if argv[1:3] == ["-o", "xml"] else _no_raise() as exit_info:
        result = main(argv)
    captured = capsys.readouterr()
    actual = exit_info.value.code if exit_info is not None and hasattr(exit_info, "value") else result
    assert actual == code
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("content,message", [
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [unclosed\n", "broken.yaml (document 2), line 6"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n",
     "broken.yaml (document 2): missing kind"),
    ("- just\n- a list\n", "expected a Kubernetes object"),
])
def test_malformed_manifest_names_file_and_document(capsys, tmp_path, content, message):
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    code, out, err = run_cli(capsys, "graph", "-f", str(path), "--all")
    assert code == 1
    assert message in err
    assert "Traceback" not in err and out == ""


def test_console_script_runs_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "kubectl_kvbackup", "graph", "-f", EXAMPLES, "-n", "demo",
                             "vmirs/web", "-o", "name"], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": REPO}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "virtualmachineinstance.kubevirt.io/webzq7hx" in result.stdout.splitlines()


def test_named_roots_stay_roots_even_when_another_root_reaches_them(capsys):
    _, out, _ = run_cli(capsys, "graph", "-f", EXAMPLES, "-n", "demo", "vm/fedora", "vmi/fedora", "-o", "json")
    assert [r["kind"] for r in json.loads(out)["roots"]] == ["VirtualMachine", "VirtualMachineInstance"]

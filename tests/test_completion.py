"""TAB completion through the real entry points.

- kubectl (1.26+) runs ``kubectl_complete-kvbackup ARGS... PARTIAL`` and reads one candidate per line, then
  ``:<directive>`` (kubernetes/kubectl pkg/cmd/plugin/plugin_completion.go, getPluginCompletions); the directive bits
  are cobra's ShellCompDirective: 2 NoSpace, 4 NoFileComp, 8 FilterFileExt, 0 Default (file names).
- ``kubectl-kvbackup`` completes through argcomplete's environment protocol (``_ARGCOMPLETE``, ``COMP_LINE``,
  ``COMP_POINT``; candidates separated by ``\\v``), which ``kubectl kvbackup completion bash`` wires into bash.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from .helpers import EXAMPLES, REPO, example_objects, obj

BIN = os.path.dirname(sys.executable)
COMPLETE = os.path.join(BIN, "kubectl_complete-kvbackup")
PLUGIN = os.path.join(BIN, "kubectl-kvbackup")
NO_SPACE, NO_FILE, FILTER_EXT = 2, 4, 8

pytestmark = pytest.mark.skipif(not (os.path.exists(COMPLETE) and os.path.exists(PLUGIN)),
                                reason="the console scripts are installed by pip install")


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_ARGCOMPLETE", "COMP_"))}
    return {**env, "KUBECONFIG": os.devnull, "PATH": BIN + os.pathsep + env.get("PATH", ""), **extra}


def kubectl_protocol(*words: str) -> tuple[list[str], int]:
    """Run kubectl_complete-kvbackup as kubectl does; nothing may reach stderr (kubectl shows it to the user)."""
    result = subprocess.run([COMPLETE, *words], capture_output=True, text=True, cwd=REPO, env=environment(),
                            timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    *found, last = result.stdout.splitlines()
    assert last.startswith(":")
    return found, int(last[1:])


def argcomplete_protocol(line: str, tmp_path) -> list[str]:
    answer = tmp_path / "argcomplete-answer"
    result = subprocess.run([PLUGIN], capture_output=True, text=True, cwd=REPO, timeout=60, env=environment(
        _ARGCOMPLETE="1", COMP_LINE=line, COMP_POINT=str(len(line)), _ARGCOMPLETE_STDOUT_FILENAME=str(answer)))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [c.rstrip(" ") for c in answer.read_text().split("\v") if c]


@pytest.fixture
def cluster(fake_api, tmp_path) -> str:
    fake_api.add_all(example_objects())
    for name in ("demo", "default", "net-system"):
        fake_api.add(obj("v1", "Namespace", name, namespace=""))
    return fake_api.write_kubeconfig(str(tmp_path / "kubeconfig"), namespace="demo")


def test_verbs_flags_and_flag_values():
    assert kubectl_protocol("gr") == (["graph"], NO_FILE)
    assert kubectl_protocol("") [0] == ["adopt", "completion", "export", "freeze", "graph", "inspect", "restore",
                                        "thaw", "verify", "version", "webhook"]
    assert kubectl_protocol("graph", "--all-") == (["--all-namespaces"], NO_FILE)
    assert kubectl_protocol("graph", "-o", "") == (["dot", "json", "name", "tree", "wide", "yaml"], NO_FILE)
    assert kubectl_protocol("graph", "--output=j") == (["--output=json"], NO_FILE)
    assert kubectl_protocol("webhook", "") == (["install", "render", "uninstall"], NO_FILE)
    assert kubectl_protocol("completion", "") == (["bash", "fish", "zsh"], NO_FILE)


def test_types_complete_without_a_space_after_the_slash():
    assert kubectl_protocol("graph", "vm") == (["vm/", "vmi/", "vmirs/", "vmpool/"], NO_SPACE | NO_FILE)
    assert kubectl_protocol("export", "vmp") == (["vmpool/"], NO_SPACE | NO_FILE)


def test_freeze_and_thaw_offer_only_what_they_accept():
    assert kubectl_protocol("freeze", "")[0] == ["vm/", "vmi/"]
    assert kubectl_protocol("thaw", "vmir")[0] == []


def test_names_come_from_the_cluster_in_the_namespace_used(cluster, fake_api):
    found, directive = kubectl_protocol("graph", "--kubeconfig", cluster, "vm/")
    assert found == ["vm/fedora", "vm/windows", "vm/workers-0"] and directive == NO_FILE
    assert kubectl_protocol("graph", "--kubeconfig", cluster, "-n", "demo", "vmirs/w")[0] == ["vmirs/web"]
    assert kubectl_protocol("graph", "--kubeconfig", cluster, "-n", "default", "vm/")[0] == []
    # kubectl's other form, TYPE NAME NAME...: names already given are not offered again
    assert kubectl_protocol("export", "--kubeconfig", cluster, "vm", "fedora", "")[0] == ["windows", "workers-0"]
    assert kubectl_protocol("freeze", "--kubeconfig", cluster, "vmi/f")[0] == ["vmi/fedora"]


def test_namespaces_and_kubeconfig_names(cluster, fake_api):
    assert kubectl_protocol("graph", "--kubeconfig", cluster, "-n", "d") == (["default", "demo"], NO_FILE)
    assert kubectl_protocol("graph", "--kubeconfig", cluster, "--namespace=n")[0] == ["--namespace=net-system"]
    fake_api.reset_requests()
    assert kubectl_protocol("graph", "--kubeconfig", cluster, "--context", "") == (["fake"], NO_FILE)
    assert kubectl_protocol("graph", "--kubeconfig", cluster, "--cluster", "f")[0] == ["fake"]
    assert fake_api.requests == []  # contexts, clusters and users come from the kubeconfig alone


def test_names_offline_from_the_manifests_given():
    assert kubectl_protocol("graph", "-f", EXAMPLES, "-n", "demo", "vmi/")[0] == [
        "vmi/fedora", "vmi/webm2k9d", "vmi/webzq7hx"]


def test_an_unreachable_cluster_completes_nothing_and_says_nothing(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "c",
                                  "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                                  "users": [{"name": "u", "user": {}}],
                                  "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    assert kubectl_protocol("graph", "--kubeconfig", str(config), "vm/") == ([], NO_FILE)
    assert kubectl_protocol("graph", "--kubeconfig", str(config), "-n", "") == ([], NO_FILE)


def test_bundles_and_files_are_left_to_the_shell():
    assert kubectl_protocol("verify", "") == (["tar.gz", "tgz"], FILTER_EXT)
    assert kubectl_protocol("inspect", "--encrypt-key-file", "k", "") == (["tar.gz", "tgz"], FILTER_EXT)
    assert kubectl_protocol("graph", "-f", "") == ([], 0)
    assert kubectl_protocol("graph", "--kubeconfig", "") == ([], 0)
    assert kubectl_protocol("export", "--all", "--to", "") == ([], 0)
    assert kubectl_protocol("export", "--encrypt-key-file", "") == ([], 0)
    assert kubectl_protocol("export", "--name", "") == ([], NO_FILE)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_itself_completes_the_plugin():
    version = json.loads(subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True,
                                        text=True, timeout=60).stdout)["clientVersion"]
    if (int(version["major"]), int("".join(c for c in version["minor"] if c.isdigit()))) < (1, 26):
        pytest.skip("kubectl before 1.26 does not complete plugins")
    result = subprocess.run(["kubectl", "__complete", "kvbackup", "graph", "vm"], capture_output=True, text=True,
                            env=environment(), timeout=60)
    assert result.stdout.splitlines() == ["vm/", "vmi/", "vmirs/", "vmpool/", ":6"]


def test_argcomplete_protocol_offers_the_same_candidates(cluster, tmp_path):
    assert argcomplete_protocol("kubectl-kvbackup gr", tmp_path) == ["graph"]
    assert argcomplete_protocol("kubectl-kvbackup graph vmp", tmp_path) == ["vmpool/"]
    assert argcomplete_protocol(f"kubectl-kvbackup graph --kubeconfig {cluster} vm/w", tmp_path) == [
        "vm/windows", "vm/workers-0"]
    assert argcomplete_protocol(f"kubectl-kvbackup graph --kubeconfig {cluster} -n dem", tmp_path) == ["demo"]
    assert argcomplete_protocol("kubectl-kvbackup freeze v", tmp_path) == ["vm/", "vmi/"]
    (tmp_path / "b.tar.gz").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "dir").mkdir()
    # the answer file argcomplete writes is in tmp_path too: neither a directory nor a .tar.gz, so not offered
    assert argcomplete_protocol(f"kubectl-kvbackup verify {tmp_path}/", tmp_path) == [
        f"{tmp_path}/b.tar.gz", f"{tmp_path}/dir/"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_script_completes_types_without_a_space():
    script = ('source <(kubectl-kvbackup completion bash)\n'
              'COMP_LINE="kubectl-kvbackup graph vmpo"; COMP_POINT=${#COMP_LINE}\n'
              'COMP_WORDS=(kubectl-kvbackup graph vmpo); COMP_CWORD=2\n'
              '_python_argcomplete kubectl-kvbackup\n'
              'printf "<%s>\\n" "${COMPREPLY[@]}"\n')
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO, env=environment(),
                            timeout=60)
    assert result.stdout.splitlines() == ["<vmpool/>"], result.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completion_script_completes_verbs_and_types():
    script = ('kubectl-kvbackup completion fish | source\n'
              'complete -C "kubectl-kvbackup graph vmpo"\n'
              'complete -C "kubectl-kvbackup freeze v"\n'
              'complete -C "kubectl-kvbackup ver"\n')
    result = subprocess.run(["fish", "--no-config", "-c", script], capture_output=True, text=True, cwd=REPO,
                            env=environment(), timeout=60)
    # fish shows a verb with its help after a tab
    assert result.stdout.splitlines() == ["vmpool/", "vm/", "vmi/", "verify\tcheck a bundle's files against its index",
                                          "version\tprint the plugin, bundle format and Python versions"], result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_for_each_shell(shell):
    result = subprocess.run([PLUGIN, "completion", shell], capture_output=True, text=True, env=environment(),
                            timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    assert "kubectl-kvbackup" in result.stdout
    if shutil.which(shell):
        check = subprocess.run([shell, "-n"], input=result.stdout, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr

"""What users read when something goes wrong, and `version`: one `error:` line, kubectl's wording, nothing of Python."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Iterator

import pytest
import yaml

from kubectl_kvbackup.cli.main import main

from .fakeapi import FakeKubeAPI
from .helpers import EXAMPLES, REPO, example_objects


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_subprocess(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubectl_kvbackup", *argv], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": REPO, **(env or {})}, timeout=120)


def closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kubeconfig_for(tmp_path, server: str, namespace: str = "demo", **cluster: object) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": namespace}}]}))
    return str(path)


def test_unreachable_server_is_one_line_in_kubectls_words(capsys, tmp_path):
    port = closed_port()
    code, out, err = run_cli(capsys, "graph", "--all", "--kubeconfig", kubeconfig_for(tmp_path, f"http://127.0.0.1:{port}"))
    assert code == 1 and out == ""
    assert err == (f"error: Unable to connect to the server http://127.0.0.1:{port}: dial tcp 127.0.0.1:{port}: "
                   "connect: connection refused\n")


def test_unknown_host_is_named(capsys, tmp_path):
    code, _, err = run_cli(capsys, "graph", "--all", "--request-timeout", "5s",
                           "--kubeconfig", kubeconfig_for(tmp_path, "https://kvbackup-no-such-host.invalid:6443"))
    assert code == 1
    assert err.startswith("error: Unable to connect to the server https://kvbackup-no-such-host.invalid:6443: ")
    assert "no such host" in err or "Temporary failure" in err or "lookup" in err
    assert "Errno" not in err and "urllib3" not in err and "Error(" not in err


@pytest.fixture
def tls_api() -> Iterator[FakeKubeAPI]:
    """The fake API server over HTTPS with a certificate of its own CA, as many dev clusters have."""
    with FakeKubeAPI(tls=True) as api:
        yield api


def test_insecure_skip_tls_verify_prints_no_warning_as_kubectl(tls_api, tmp_path):
    tls_api.add_all(example_objects())
    config = kubeconfig_for(tmp_path, tls_api.url, **{"insecure-skip-tls-verify": True})
    config_text = yaml.safe_load(open(config))
    config_text["users"][0]["user"]["token"] = tls_api.token_for("admin")
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config_text))
    result = run_subprocess("graph", "vm/windows", "-o", "name", "--kubeconfig", config,
                            env={"PYTHONWARNINGS": "default"})
    assert result.returncode == 0, result.stderr
    assert "virtualmachine.kubevirt.io/windows" in result.stdout
    assert result.stderr == ""


def test_an_unverifiable_certificate_is_kubectls_x509_error(capsys, tls_api, tmp_path):
    code, _, err = run_cli(capsys, "graph", "--all", "--kubeconfig", kubeconfig_for(tmp_path, tls_api.url))
    assert code == 1
    assert err.startswith(f"error: Unable to connect to the server {tls_api.url}: tls: failed to verify certificate: "
                          "x509: ")
    assert len(err.splitlines()) == 1 and "SSL" not in err.split("x509: ", 1)[0]


def test_verbose_6_logs_each_request_once(capsys, fake_api, kubeconfig):
    fake_api.add_all(example_objects())
    fake_api.reset_requests()
    code, _, err = run_cli(capsys, "graph", "--all", "-n", "demo", "-o", "name", "--kubeconfig", kubeconfig, "-v=6")
    assert code == 0, err
    logged = [line for line in err.splitlines() if line.startswith("GET ")]
    served = fake_api.requests
    assert len(logged) == len(served) > 0
    assert all(" 200 in " in line and line.endswith(" ms") for line in logged)
    code, _, err = run_cli(capsys, "graph", "--all", "-n", "demo", "-o", "name", "--kubeconfig", kubeconfig)
    assert err == ""


@pytest.mark.parametrize("argv,verb", [
    (["graph", "-f", EXAMPLES], "graph"),
    (["export", "-f", EXAMPLES, "--all", "--to", "x", "--parallel", "0"], "export"),
    (["thaw"], "thaw"),
    (["graph", "-f", EXAMPLES, "-l", "a in (b"], "graph"),
    (["graph", "-o", "xml"], "graph"),
    (["webhook", "render", "--mac-policy", "sometimes"], "webhook render"),
    (["restore", "b", "--volumes", "somehow"], "restore"),
    (["export", "--all", "--to", "x", "--bogus=1"], "export"),
    (["webhook", "render", "--bogus"], "webhook render"),
    (["verify", "a", "b"], "verify"),
])
def test_usage_errors_point_at_the_verbs_own_help(capsys, argv, verb):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own checks
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    first, second = err.rstrip("\n").split("\n")
    assert first.startswith("error: ")
    assert second == f"See 'kubectl kvbackup {verb} --help' for usage."


@pytest.mark.parametrize("argv,message", [
    (["export", "--all", "--to", "x", "--bogus=1", "--other"], "error: unknown flag: --bogus"),
    (["--nope"], "error: unknown flag: --nope"),
    (["verify", "a", "b", "-"], "error: unrecognized arguments: b -"),
    (["verify", "a", "b", "-5"], "error: unrecognized arguments: b -5"),  # a negative number is no flag
    (["version", "--", "x"], "error: unrecognized arguments: -- x"),  # nor what follows "--"
])
def test_unknown_flags_are_named_as_kubectl_names_them(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and capsys.readouterr().err.split("\n")[0] == message


def test_manifests_without_namespace_go_to_the_contexts_namespace(capsys, fake_api, tmp_path):
    kubeconfig = fake_api.write_kubeconfig(str(tmp_path / "kubeconfig"), namespace="demo")
    code, out, err = run_cli(capsys, "graph", "-f", EXAMPLES, "--all", "-o", "json", "--kubeconfig", kubeconfig)
    assert code == 0, err
    assert {r["namespace"] for r in json.loads(out)["roots"]} == {"demo"}
    assert fake_api.requests == []  # offline: the kubeconfig is read, the server never asked
    (tmp_path / "vm.yaml").write_text(yaml.safe_dump({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                                                      "metadata": {"name": "bare"}, "spec": {}}))
    code, out, err = run_cli(capsys, "graph", "-f", str(tmp_path / "vm.yaml"), "vm/bare", "-o", "json",
                             "--kubeconfig", kubeconfig)
    assert code == 0, err
    assert json.loads(out)["roots"][0]["namespace"] == "demo"
    code, out, err = run_cli(capsys, "graph", "-f", EXAMPLES, "--all", "-o", "json", "--kubeconfig", kubeconfig,
                             "-n", "other")
    assert json.loads(out)["roots"] == [] and 'in namespace "other"' in err


def test_one_problem_is_one_problem(capsys, tmp_path):
    bundle = str(tmp_path / "b")
    assert run_cli(capsys, "export", "-f", EXAMPLES, "-n", "demo", "vm/windows", "--to", bundle, "-q")[0] == 0
    with open(os.path.join(bundle, "kvbackup.json"), encoding="utf-8") as f:
        index = json.load(f)
    changed = os.path.join(bundle, next(n["file"] for n in index["nodes"] if n.get("file")))
    with open(changed, "a", encoding="utf-8") as f:
        f.write("# edited\n")
    code, _, err = run_cli(capsys, "inspect", bundle)
    assert code == 1
    assert "(1 problem)" in err


def test_version_prints_plugin_bundle_format_and_python(capsys):
    from kubectl_kvbackup import __version__

    code, out, err = run_cli(capsys, "version")
    assert code == 0 and err == ""
    assert out.splitlines()[0] == f"Plugin Version: v{__version__}"
    assert "Bundle Format: kvbackup.kubevirt.io/bundle version 2 (reads 1, 2)\n" in out
    assert f"Python Version: {sys.version.split()[0]}" in out


def test_version_json_has_the_servers_version_when_reachable(capsys, fake_api, kubeconfig, tmp_path):
    code, out, err = run_cli(capsys, "version", "-o", "json", "--kubeconfig", kubeconfig)
    assert code == 0, err
    data = json.loads(out)
    assert data["bundleFormatVersion"] == 2 and data["bundleFormatVersionsRead"] == [1, 2]
    assert data["python"]["version"] == sys.version.split()[0]
    assert data["serverVersion"]["major"] == "1" and data["serverVersion"]["gitVersion"].startswith("v1.")
    code, out, err = run_cli(capsys, "version", "-o", "yaml", "--kubeconfig",
                             kubeconfig_for(tmp_path, f"http://127.0.0.1:{closed_port()}"))
    assert code == 0
    assert "serverVersion" not in yaml.safe_load(out)
    assert err.startswith("warning: no server version: Unable to connect to the server") and "connection refused" in err
    code, out, err = run_cli(capsys, "version", "-o", "json", "--client", "--kubeconfig", kubeconfig)
    assert code == 0 and "serverVersion" not in json.loads(out)

"""The krew manifest is valid by krew's own rules, and the archive it points at installs and runs on a bare python3.

krew's rules, as kubernetes-sigs/krew checks them:
- internal/index/validation/validate.go (ValidatePlugin, validatePlatform, validateFiles, validateSelector):
  apiVersion and kind, a safe plugin name (``^[\\w-]+$``, no Windows device name) equal to metadata.name, a
  shortDescription without line breaks, at least one platform, a version; per platform uri, sha256 matching
  ``^[a-f0-9]{64}$``, bin, files unset or each with from and to, a non-empty selector on ``os``/``arch`` only;
- pkg/constants/constants.go: apiVersion ``krew.googlecontainertools.github.com/v1alpha2``, kind ``Plugin``;
- internal/installation/semver/version.go: the version starts with ``v`` and parses as semantic version;
- cmd/validate-krew-manifest/main.go: every platform selects a supported os/arch, no two overlap, and the installed
  files include a license file (LICENSE, LICENSE.txt, COPYING...).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
import yaml

from .helpers import EXAMPLES, REPO

MANIFEST = os.path.join(REPO, "krew-manifest.yaml")
BUILD = os.path.join(REPO, "tools", "build_krew_archive.py")
WINDOWS_DEVICE_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                        *(f"LPT{i}" for i in range(1, 10))}
# k8s.io/apimachinery/pkg/util/version ParseSemantic: MAJOR.MINOR.PATCH[-pre][+build], after krew's leading "v"
SEMVER = re.compile(r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
KREW_PLATFORMS = {(os_, arch) for os_ in ("linux", "darwin", "windows") for arch in ("386", "amd64", "arm", "arm64")}
LICENSE_NAMES = {"license", "license.txt", "license.md", "licenses", "licenses.txt", "licenses.md", "copying",
                 "copying.txt"}


def extract(archive, folder) -> None:
    """As krew unpacks: regular files only, with their modes."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            assert member.isfile() and "/" not in member.name and not member.name.startswith(".")
            target = os.path.join(folder, member.name)
            with open(target, "wb") as f:
                f.write(tar.extractfile(member).read())
            os.chmod(target, member.mode)


def load_manifest(path: str = MANIFEST) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def selector_matches(selector: dict, os_: str, arch: str) -> bool:
    labels = {"os": os_, "arch": arch}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        value, operator, values = labels.get(expression["key"]), expression["operator"], expression.get("values", [])
        if (operator == "In") != (value in values):
            return False
    return True


def test_manifest_follows_krews_validation_rules():
    manifest = load_manifest()
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin"
    name = manifest["metadata"]["name"]
    assert name == "kvbackup" and re.fullmatch(r"[\w-]+", name) and name.upper() not in WINDOWS_DEVICE_NAMES
    spec = manifest["spec"]
    assert spec["shortDescription"] and not re.search(r"[\r\n]", spec["shortDescription"])
    assert SEMVER.fullmatch(spec["version"])
    assert spec["homepage"].startswith("https://") and spec["description"].strip()
    assert "python3" in spec["caveats"] and "3.10" in spec["caveats"]
    platforms = spec["platforms"]
    assert platforms
    for platform in platforms:
        assert platform["uri"].startswith("https://") and platform["bin"]
        assert re.fullmatch(r"[a-f0-9]{64}", platform["sha256"])
        assert platform["files"] and all(op.get("from") and op.get("to") for op in platform["files"])
        selector = platform["selector"]
        keys = set(selector.get("matchLabels") or {}) | {e["key"] for e in selector.get("matchExpressions") or []}
        assert keys and keys <= {"os", "arch"}
        assert any(selector_matches(selector, *pair) for pair in KREW_PLATFORMS)
    for pair in KREW_PLATFORMS:  # no os/arch selected twice
        assert sum(selector_matches(p["selector"], *pair) for p in platforms) <= 1
    selected = {pair for pair in KREW_PLATFORMS for p in platforms if selector_matches(p["selector"], *pair)}
    assert {("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")} <= selected


def test_manifest_version_is_the_packages():
    from kubectl_kvbackup import __version__

    manifest = load_manifest()
    assert manifest["spec"]["version"] == f"v{__version__}"
    assert all(f"/download/v{__version__}/" in p["uri"] for p in manifest["spec"]["platforms"])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """The archive built by the build script, with a copy of the manifest it updates."""
    folder = tmp_path_factory.mktemp("krew")
    manifest = folder / "krew-manifest.yaml"
    shutil.copy(MANIFEST, manifest)
    result = subprocess.run([sys.executable, BUILD, "--out", str(folder / "dist"), "--manifest", str(manifest),
                             "--version", "v9.8.7"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    return {"archive": folder / "dist" / "kubectl-kvbackup.tar.gz", "manifest": manifest, "folder": folder}


def test_build_writes_the_archives_sha256_and_version_into_the_manifest(built):
    digest = hashlib.sha256(built["archive"].read_bytes()).hexdigest()
    manifest = load_manifest(str(built["manifest"]))
    assert manifest["spec"]["version"] == "v9.8.7"
    assert {p["sha256"] for p in manifest["spec"]["platforms"]} == {digest}
    assert all("/download/v9.8.7/kubectl-kvbackup.tar.gz" in p["uri"] for p in manifest["spec"]["platforms"])
    original = open(MANIFEST, encoding="utf-8").read().splitlines()
    updated = built["manifest"].read_text(encoding="utf-8").splitlines()
    assert len(original) == len(updated) and original[0] == updated[0]  # comments and layout kept


def test_archive_holds_the_executable_and_the_license_krew_copies(built, tmp_path):
    with tarfile.open(built["archive"]) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"kubectl-kvbackup", "LICENSE"}
        assert members["kubectl-kvbackup"].mode == 0o755 and members["kubectl-kvbackup"].mtime == 0
    extract(built["archive"], tmp_path)
    manifest = load_manifest(str(built["manifest"]))
    for platform in manifest["spec"]["platforms"]:  # krew's install: files ops, then bin must exist
        copied = {op["from"] for op in platform["files"]}
        assert copied == {"kubectl-kvbackup", "LICENSE"} and platform["bin"] in copied
        assert any(name.lower() in LICENSE_NAMES for name in copied)
    assert "Apache License" in (tmp_path / "LICENSE").read_text() and "Version 2.0" in (tmp_path / "LICENSE").read_text()
    with zipfile.ZipFile(tmp_path / "kubectl-kvbackup") as app:
        names = app.namelist()
    assert (tmp_path / "kubectl-kvbackup").read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert "__main__.py" in names and "kubectl_kvbackup/cli/main.py" in names and "kubernetes/__init__.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib", ".pyc"))]
    assert not [n for n in names if n.split("/")[0] in ("flask", "cryptography", "kvbackup_webhook", "webhook",
                                                         "aiohttp", "pydantic", "pydantic_core")]


def test_build_is_reproducible(built, tmp_path):
    result = subprocess.run([sys.executable, BUILD, "--out", str(tmp_path), "--manifest", ""], capture_output=True,
                            text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kubectl-kvbackup.tar.gz").read_bytes() == built["archive"].read_bytes()


@pytest.fixture(scope="module")
def zipapp(built, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("installed")
    extract(built["archive"], folder)
    return str(folder / "kubectl-kvbackup")


def bare_python(*argv: str) -> subprocess.CompletedProcess:
    """The interpreter alone: -I (no environment, no user site) and -S (no site-packages at all)."""
    python = getattr(sys, "_base_executable", sys.executable)
    return subprocess.run([python, "-I", "-S", *argv], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")})


def test_zipapp_runs_help_version_and_an_offline_graph_on_a_bare_python(zipapp):
    result = bare_python(zipapp, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kubectl kvbackup")
    result = bare_python(zipapp, "version")
    assert result.returncode == 0 and result.stdout.startswith("Plugin Version: v"), result.stderr
    result = bare_python(zipapp, "graph", "-f", EXAMPLES, "-n", "demo", "--all", "-o", "name")
    assert result.returncode == 0, result.stderr
    assert "virtualmachinepool.pool.kubevirt.io/workers" in result.stdout.splitlines()


def test_zipapp_linked_as_kubectl_complete_answers_kubectls_protocol(zipapp, tmp_path):
    link = tmp_path / "kubectl_complete-kvbackup"
    link.symlink_to(zipapp)
    result = bare_python(str(link), "graph", "vmp")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines() == ["vmpool/", ":6"]


def test_zipapp_reaches_a_cluster_with_its_own_client(zipapp, fake_api, kubeconfig):
    from .helpers import example_objects

    fake_api.add_all(example_objects())
    result = bare_python(zipapp, "graph", "vm/windows", "-n", "demo", "-o", "name", "--kubeconfig", kubeconfig)
    assert result.returncode == 0, result.stderr
    assert "secret/win-unattend" in result.stdout.splitlines()


def test_release_workflow_builds_the_archive_and_the_image_on_a_tag():
    with open(os.path.join(REPO, ".github", "workflows", "release.yml"), encoding="utf-8") as f:
        workflow = yaml.safe_load(f)
    triggers = workflow.get("on") or workflow.get(True)  # YAML 1.1 reads a bare `on` as true
    assert triggers["push"]["tags"] == ["v*"]
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    commands = "\n".join(s.get("run", "") for s in steps)
    assert "tools/build_krew_archive.py" in commands and ".ci/run" in commands
    assert any(str(s.get("uses", "")).startswith("docker/build-push-action") for s in steps)
    assert any("kubectl-kvbackup.tar.gz" in str(s.get("with", {})) for s in steps
               if str(s.get("uses", "")).startswith("softprops/action-gh-release"))

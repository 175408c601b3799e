"""Offline export, verify and inspect: rules in the bundle, integrity, encryption, permissions, atomicity."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import tempfile

import pytest
import yaml

from kubectl_kvbackup import rules
from kubectl_kvbackup.bundle import Bundle, BundleError, objects_as_read, read_bundle
from kubectl_kvbackup.cli.main import main
from kubectl_kvbackup.refs import Ref
from kubectl_kvbackup.yamlout import dump_yaml

from .helpers import EXAMPLES, REPO, on_terminal


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def export_demo(capsys, target, *extra):
    code, out, err = run(capsys, "export", "-f", EXAMPLES, "-n", "demo", "--all", "--to", str(target), *extra)
    assert code == 0, err
    return read_bundle(str(target))


def resource(bundle, namespace, group, kind, name):
    return yaml.safe_load(bundle.contents[f"resources/{namespace}/{group}/{kind}/{name}.yaml"])


def node(bundle, kind, name):
    return next(n for n in bundle.index["nodes"] if n["kind"] == kind and n["name"] == name)


def test_export_applies_every_export_time_rule(capsys, tmp_path):
    bundle = export_demo(capsys, tmp_path / "b")
    vm = resource(bundle, "demo", "kubevirt.io", "VirtualMachine", "fedora")
    assert vm["spec"]["instancetype"]["revisionName"] == "fedora-u1.medium-v1beta1-3c1d5f-1"
    assert vm["spec"]["preference"]["revisionName"] == "fedora-fedora-pref-v1beta1-9a8b7c-1"
    # an offline export holds no volume data: a DataVolume's PVC is left to CDI, its DataVolume unmarked
    dv = resource(bundle, "demo", "cdi.kubevirt.io", "DataVolume", "fedora-root")
    assert rules.PREPOPULATED_ANNOTATION not in dv["metadata"]["annotations"]
    not_captured = node(bundle, "PersistentVolumeClaim", "fedora-root")
    assert (not_captured["restore"], not_captured["rule"], not_captured["data"]) == (
        False, "pvc-data-not-captured", "none")
    in_progress = resource(bundle, "demo", "cdi.kubevirt.io", "DataVolume", "worker-root-0")
    assert rules.PREPOPULATED_ANNOTATION not in (in_progress["metadata"].get("annotations") or {})
    unfinished = node(bundle, "PersistentVolumeClaim", "worker-root-0")
    assert (unfinished["restore"], unfinished["rule"]) == (False, "pvc-never-populated")
    assert "file" not in unfinished and unfinished["original"].startswith("original/")


def test_default_backup_names_are_the_time_and_a_random_suffix(capsys, tmp_path):
    """Two exports started in the same second must not share a name: it labels and names their snapshots."""
    names = [export_demo(capsys, tmp_path / f"b{i}").index["name"] for i in range(2)]
    assert all(re.fullmatch(r"kvbackup-\d{8}t\d{6}z-[bcdfghjklmnpqrstvwxz2456789]{5}", name) for name in names), names
    assert names[0] != names[1]


def test_objects_kubevirt_recreates_are_recorded_but_not_restorable(capsys, tmp_path):
    bundle = export_demo(capsys, tmp_path / "b")
    for kind, name, rule in (("VirtualMachineInstance", "fedora", "owned-vmi"),
                             ("VirtualMachineInstance", "webzq7hx", "owned-vmi"),
                             ("Pod", "virt-launcher-fedora-x7k2p", "launcher-pod"),
                             ("Pod", "hp-volume-fedora-4xk9s", "hotplug-pod")):
        entry = node(bundle, kind, name)
        assert (entry["restore"], entry["rule"]) == (False, rule), name
        assert entry["reason"] and "file" not in entry
        assert entry["original"] in bundle.contents
    assert node(bundle, "VirtualMachineInstance", "webm2k9d")["restore"]  # an orphan VMI is standalone


def test_resources_are_apply_ready(capsys, tmp_path):
    bundle = export_demo(capsys, tmp_path / "b", "--name", "nightly")
    for path, data in bundle.contents.items():
        if not path.startswith("resources/"):
            continue
        obj = yaml.safe_load(data)
        assert not set(obj["metadata"]) & set(rules.SERVER_SET_METADATA), path
        assert "status" not in obj, path
        assert obj["metadata"]["labels"][rules.RESTORE_LABEL] == "nightly", path
    original = objects_as_read(bundle, None)[Ref("cdi.kubevirt.io", "DataVolume", "demo", "fedora-root")]
    assert original["status"]["phase"] == "Succeeded"


def test_index_records_graph_sources_and_checksums(capsys, tmp_path):
    bundle = export_demo(capsys, tmp_path / "b")
    index = bundle.index
    assert index["format"] == "kvbackup.kubevirt.io/bundle" and index["formatVersion"] == 2
    assert index["source"] == {"offline": True, "manifests": [EXAMPLES]}
    assert index["freeze"]["note"].startswith("offline export")
    assert {v["result"] for v in index["freeze"]["vmis"]} == {"not-frozen"}
    assert any(e["path"] == "status.created" for e in index["edges"])
    assert set(index["files"]) == set(bundle.contents) - {"kvbackup.json"}
    assert {"group": "", "kind": "ConfigMap", "namespace": "demo", "name": "unrelated-config", "found": True} \
        not in index["nodes"]



def test_original_holds_every_object_as_read_in_one_file_per_kind_and_namespace(capsys, tmp_path):
    """A file per object in original/ doubled the files an export creates, the cost that dominates on a busy disk."""
    bundle = export_demo(capsys, tmp_path / "b")
    read = [n for n in bundle.index["nodes"] if n.get("found") and not n.get("synthesized")]
    for entry in read:
        assert entry["original"] == "/".join(("original", entry["namespace"] or "_cluster", entry["group"] or "core",
                                              entry["kind"] + ".yaml"))
    files = {entry["original"] for entry in read}
    assert files == {path for path in bundle.contents if path.startswith("original/")}
    assert len(files) < len(read)
    for path in files:  # each object once, ordered by name, nothing else
        names = [doc["metadata"]["name"] for doc in yaml.safe_load_all(bundle.contents[path])]
        assert names == sorted(n["name"] for n in read if n["original"] == path), path
    objects = objects_as_read(bundle, None)
    assert objects[Ref("kubevirt.io", "VirtualMachine", "demo", "fedora")]["status"]["printableStatus"]


def test_bundles_of_format_version_1_are_still_read(capsys, tmp_path):
    """Version 1 kept a file per object in original/: the same index fields, one document per file."""
    bundle = export_demo(capsys, tmp_path / "b")
    current = objects_as_read(bundle, None)
    contents = {path: data for path, data in bundle.contents.items() if not path.startswith("original/")}
    for entry in bundle.index["nodes"]:
        if entry.get("original"):
            entry["original"] = entry["original"].removesuffix(".yaml") + f"/{entry['name']}.yaml"
            ref = Ref(entry["group"], entry["kind"], entry["namespace"], entry["name"])
            contents[entry["original"]] = dump_yaml(current[ref])
    old = type(bundle)(bundle.path, {**bundle.index, "formatVersion": 1}, contents)
    assert objects_as_read(old, None) == current



def test_objects_made_at_export_are_read_from_their_restore_file_and_unread_ones_are_left_out(tmp_path):
    made = {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": "made"}}
    node_of = {"group": "cdi.kubevirt.io", "kind": "DataVolume", "namespace": "demo"}
    index = {"nodes": [
        {**node_of, "name": "made", "found": True, "synthesized": True,
         "file": "resources/demo/cdi.kubevirt.io/DataVolume/made.yaml"},
        {**node_of, "name": "not-read", "found": True},  # neither file: nothing to read, nothing made up
        {**node_of, "name": "missing", "found": False, "file": "resources/x.yaml"},
        {"group": "", "kind": "Secret", "namespace": "demo", "name": "left-out", "found": None, "excluded": True}]}
    bundle = Bundle(str(tmp_path), index, {"resources/demo/cdi.kubevirt.io/DataVolume/made.yaml": dump_yaml(made)})
    assert objects_as_read(bundle, None) == {Ref("cdi.kubevirt.io", "DataVolume", "demo", "made"): made}

def test_an_original_file_without_an_object_the_index_places_there_is_an_error(capsys, tmp_path):
    bundle = export_demo(capsys, tmp_path / "b")
    path = node(bundle, "VirtualMachine", "fedora")["original"]
    ref = Ref("kubevirt.io", "VirtualMachine", "demo", "fedora")
    as_written, as_read = bundle.contents[path], objects_as_read(bundle, None)
    bundle.contents[path] = b"".join(
        dump_yaml(doc) + b"---\n" for doc in yaml.safe_load_all(bundle.contents[path])
        if doc["metadata"]["name"] != "fedora")
    with pytest.raises(BundleError, match=re.escape(f"{path} does not hold {ref}, which the index lists there")):
        objects_as_read(bundle, None)
    bundle.contents[path] = b"metadata: {name: fedora\n"
    with pytest.raises(BundleError, match=re.escape(f"{path} is not valid YAML")):
        objects_as_read(bundle, None)
    bundle.contents[path] = as_written + b"---\n"  # a trailing separator: no empty object
    assert objects_as_read(bundle, None) == as_read


def export_without_umask(capsys, target):
    old = os.umask(0)
    try:
        export_demo(capsys, target)
    finally:
        os.umask(old)


def test_permissions_are_private_whatever_the_umask(capsys, tmp_path):
    export_without_umask(capsys, tmp_path / "b")
    for folder, dirs, files in os.walk(tmp_path / "b"):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o600, name


@pytest.mark.parametrize("suffix", ["", ".tar.gz"])
def test_a_restrictive_umask_still_gives_an_owner_writable_private_bundle(capsys, tmp_path, suffix):
    old = os.umask(0o277)  # would make new directories 0500 and files 0400
    try:
        export_demo(capsys, tmp_path / f"b{suffix}", "--exclude-secrets")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / f"b{suffix}").st_mode) == (0o700 if not suffix else 0o600)
    for folder, _, files in os.walk(tmp_path / f"b{suffix}"):  # a directory bundle's folders and files too
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
        # files stay private; the umask may take the owner's write bit too, which reading the bundle never needs
        assert all(stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) & 0o077 == 0 for name in files), folder


def test_unencrypted_secrets_warn(capsys, tmp_path):
    code, _, err = run(capsys, "export", "-f", EXAMPLES, "-n", "demo", "vm/windows", "--to", str(tmp_path / "b"))
    assert code == 0 and "Secrets are stored unencrypted" in err
    assert read_bundle(str(tmp_path / "b")).index["secrets"]["handling"] == "plaintext"


def test_verify_detects_changed_missing_and_added_files(capsys, tmp_path):
    export_demo(capsys, tmp_path / "b")
    assert run(capsys, "verify", str(tmp_path / "b"))[0] == 0
    changed = tmp_path / "b/resources/demo/core/ConfigMap/fedora-app-config.yaml"
    changed.write_text(changed.read_text().replace("8080", "9090"))
    os.unlink(tmp_path / "b/resources/demo/core/Secret/win-unattend.yaml")
    (tmp_path / "b/resources/demo/core/ConfigMap/extra.yaml").write_text("{}")
    code, out, err = run(capsys, "verify", str(tmp_path / "b"))
    assert code == 1
    assert out.splitlines() == ["missing: resources/demo/core/Secret/win-unattend.yaml",
                                "changed: resources/demo/core/ConfigMap/fedora-app-config.yaml",
                                "unexpected: resources/demo/core/ConfigMap/extra.yaml"]
    code, out, err = run(capsys, "inspect", str(tmp_path / "b"))
    assert code == 1 and "failed verification" in err and out == ""


def test_tarball_round_trip_and_truncation(capsys, tmp_path):
    target = tmp_path / "b.tar.gz"
    export_demo(capsys, target)
    with tarfile.open(target) as tar:
        assert "kvbackup.json" in tar.getnames()
    assert run(capsys, "verify", str(target))[0] == 0
    code, out, _ = run(capsys, "inspect", str(target), "-o", "json")
    assert code == 0 and json.loads(out)["roots"][0]["name"] == "fedora"
    data = target.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    code, out, err = run(capsys, "verify", str(tmp_path / "cut.tar.gz"))
    assert code == 1 and "truncated" in err and "Traceback" not in err


def test_bundle_streams_to_stdout(tmp_path):
    scratch = tmp_path / "tmp"  # where the archive is built before it is copied out: left empty
    scratch.mkdir()
    result = subprocess.run([sys.executable, "-m", "kubectl_kvbackup", "export", "-f", EXAMPLES, "-n", "demo",
                             "vm/windows", "--to", "-", "-q"], capture_output=True, cwd=REPO, timeout=60,
                            env={**os.environ, "PYTHONPATH": REPO, "TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    (tmp_path / "s.tar.gz").write_bytes(result.stdout)
    bundle = read_bundle(str(tmp_path / "s.tar.gz"))
    assert bundle.index["roots"][0]["name"] == "windows"
    assert os.listdir(scratch) == []



def test_stdout_export_leaves_nothing_in_the_working_or_temporary_directory(capsysbinary, tmp_path, monkeypatch):
    scratch, work = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    code = main(["export", "-f", EXAMPLES, "-n", "demo", "vm/windows", "--to", "-", "-q"])
    out = capsysbinary.readouterr().out
    assert code == 0 and out[:2] == b"\x1f\x8b"  # a gzip stream
    assert os.listdir(work) == [] and os.listdir(scratch) == []


def test_a_bundle_is_built_beside_its_target_never_in_the_temporary_directory(capsys, tmp_path, monkeypatch):
    """The rename that makes it appear whole works only within one filesystem."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-directory"))
    for target in ("b", "b.tar.gz"):
        export_demo(capsys, tmp_path / target)
        assert sorted(os.listdir(tmp_path)) == sorted(["b", "b.tar.gz"][:1 + (target == "b.tar.gz")])


def test_an_export_leaves_no_file_open(capsys, tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    export_demo(capsys, tmp_path / "b")
    export_demo(capsys, tmp_path / "b.tar.gz")
    assert len(os.listdir("/proc/self/fd")) == before

def test_inspect_outputs(capsys, tmp_path):
    export_demo(capsys, tmp_path / "b")
    code, out, _ = run(capsys, "inspect", str(tmp_path / "b"))
    assert code == 0
    assert "Pod/virt-launcher-fedora-x7k2p" in out and "[not restored: virt-launcher pod" in out
    assert "freeze (never):" in out
    code, out, _ = run(capsys, "inspect", str(tmp_path / "b"), "-o", "name")
    assert "virtualmachinepool.pool.kubevirt.io/workers" in out.splitlines()
    code, out, _ = run(capsys, "inspect", str(tmp_path / "b"), "-o", "yaml")
    data = yaml.safe_load(out)
    assert data["freeze"]["mode"] == "never" and data["secrets"]["handling"] == "plaintext"


KEY = bytes(range(32))


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "backup.key"
    path.write_bytes(KEY)
    path.chmod(0o600)
    return path


def test_secrets_are_encrypted_and_decrypt_with_the_key(capsys, tmp_path, key_file):
    bundle = export_demo(capsys, tmp_path / "b", "--encrypt-key-file", str(key_file))
    assert bundle.index["secrets"]["handling"] == "encrypted"
    entry = node(bundle, "Secret", "fedora-userdata")
    assert entry["encrypted"] and entry["file"].endswith(".yaml.enc")
    assert b"cloud-config" not in bundle.contents[entry["file"]]
    assert bundle.read_object(entry["file"], KEY)["stringData"]["userdata"].startswith("#cloud-config")
    plain = node(bundle, "ConfigMap", "fedora-app-config")
    assert not plain["encrypted"] and b"8080" in bundle.contents[plain["file"]]
    with pytest.raises(Exception) as error:
        bundle.read_object(entry["file"], bytes(32))
    assert "wrong key or tampered file" in str(error.value)
    # a file moved to another path in the bundle does not decrypt
    other = node(bundle, "Secret", "fedora-app-secret")["file"]
    bundle.contents[other] = bundle.contents[entry["file"]]
    with pytest.raises(Exception):
        bundle.read_object(other, KEY)


def test_key_from_environment_in_hex(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KVBACKUP_ENCRYPTION_KEY", KEY.hex())
    bundle = export_demo(capsys, tmp_path / "b")
    assert bundle.index["secrets"]["handling"] == "encrypted"


@pytest.mark.parametrize("content", [b"short", b"z" * 64])
def test_bad_key_file_is_one_clear_error(capsys, tmp_path, content):
    (tmp_path / "k").write_bytes(content)
    code, out, err = run(capsys, "export", "-f", EXAMPLES, "-n", "demo", "--all", "--to", str(tmp_path / "b"),
                         "--encrypt-key-file", str(tmp_path / "k"))
    assert code == 1 and "does not hold a 256-bit key" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_exclude_secrets(capsys, tmp_path):
    bundle = export_demo(capsys, tmp_path / "b", "--exclude-secrets")
    assert bundle.index["secrets"]["handling"] == "excluded"
    assert not [p for p in bundle.contents if "/Secret/" in p]
    entry = node(bundle, "Secret", "win-unattend")
    assert entry["excluded"] and not entry["restore"] and entry["found"] is None  # never read, so not known
    assert "original" not in entry and "file" not in entry


def test_existing_target_is_never_overwritten(capsys, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep").write_text("mine")
    code, _, err = run(capsys, "export", "-f", EXAMPLES, "-n", "demo", "--all", "--to", str(tmp_path / "b"))
    assert code == 1 and "already exists" in err
    assert os.listdir(tmp_path / "b") == ["keep"]


@pytest.mark.parametrize("suffix", ["", ".tar.gz"])
def test_a_target_whose_directory_is_missing_or_unwritable_is_named_up_front(capsys, tmp_path, suffix):
    code, _, err = run(capsys, "export", "-f", EXAMPLES, "-n", "demo", "--all", "--exclude-secrets", "--to",
                       str(tmp_path / "missing" / f"b{suffix}"))
    assert (code, err) == (1, f"error: the directory {tmp_path / 'missing'} does not exist: create it first\n")
    # /sys refuses new entries even to root
    code, _, err = run(capsys, "export", "-f", EXAMPLES, "-n", "demo", "--all", "--exclude-secrets", "--to",
                       f"/sys/b{suffix}")
    assert code == 1 and err.startswith("error: cannot write in /sys: ") and "Traceback" not in err


def test_failed_export_leaves_nothing_behind(capsys, tmp_path):
    code, _, err = run(capsys, "export", "-f", EXAMPLES, "-n", "demo", "vm/nope", "--to", str(tmp_path / "b"))
    assert code == 1 and "not found" in err
    assert os.listdir(tmp_path) == []


def test_not_a_bundle(capsys, tmp_path):
    (tmp_path / "d").mkdir()
    code, _, err = run(capsys, "verify", str(tmp_path / "d"))
    assert code == 1 and "has no kvbackup.json" in err
    code, _, err = run(capsys, "verify", str(tmp_path / "none"))
    assert code == 1 and "no such bundle" in err


def _export_with_terminal_stderr(tmp_path, *extra, manifests=EXAMPLES):
    return on_terminal("export", "-f", manifests, "-n", "demo", "--all", "--to", str(tmp_path / "b"), *extra)


def test_progress_on_a_terminal_and_quiet(tmp_path):
    code, text = _export_with_terminal_stderr(tmp_path)
    assert code == 0
    assert re.search(r"\robjects listed: (\d+)/\1 \(\d+s\)", text)
    assert re.search(r"\rwriting bundle: (\d+)/\1 \(\d+s\)", text)  # rewritten in place, with the time taken
    assert "exported 40 objects" in text
    (tmp_path / "q").mkdir()
    code, text = _export_with_terminal_stderr(tmp_path / "q", "-q")
    assert code == 0 and text == ""


def test_warnings_during_progress_on_a_terminal_get_lines_of_their_own(tmp_path):
    vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "lonely", "namespace": "demo"},
          "spec": {"runStrategy": "Halted", "template": {"spec": {"volumes": [
              {"name": "config", "configMap": {"name": "gone"}}]}}}}
    (tmp_path / "vm.yaml").write_bytes(dump_yaml(vm))
    code, text = _export_with_terminal_stderr(tmp_path, manifests=str(tmp_path / "vm.yaml"))
    assert code == 0
    warnings = [line for line in text.replace("\r\n", "\n").split("\n") if "not found" in line]
    # the live line is cleared ("\r", erase to the end) and the warning written in its place
    assert warnings and all(line.split("\r")[-1].removeprefix("\x1b[K").startswith(
        "warning: configmap/demo/gone not found") for line in warnings), warnings


def test_resources_never_carry_old_owner_uids(capsys, tmp_path):
    bundle = export_demo(capsys, tmp_path / "b")
    dv = resource(bundle, "demo", "cdi.kubevirt.io", "DataVolume", "fedora-root")
    assert "ownerReferences" not in dv["metadata"]
    assert json.loads(dv["metadata"]["annotations"][rules.OWNER_REFERENCES_ANNOTATION])[0]["name"] == "fedora"


def test_index_is_authenticated_with_the_key(capsys, tmp_path, key_file):
    export_demo(capsys, tmp_path / "b", "--encrypt-key-file", str(key_file))
    code, out, _ = run(capsys, "verify", str(tmp_path / "b"), "--encrypt-key-file", str(key_file))
    assert code == 0 and "index authenticated" in out
    index_path = tmp_path / "b" / "kvbackup.json"
    index = json.loads(index_path.read_text())
    vmi = next(n for n in index["nodes"] if n["kind"] == "VirtualMachineInstance" and n["name"] == "fedora")
    vmi["restore"] = True  # an edit every checksum still agrees with
    index_path.write_text(json.dumps(index))
    code, out, _ = run(capsys, "verify", str(tmp_path / "b"))
    assert code == 0 and "index not authenticated" in out
    code, out, _ = run(capsys, "verify", str(tmp_path / "b"), "--encrypt-key-file", str(key_file))
    assert code == 1 and "index: its MAC does not match" in out
    code, _, err = run(capsys, "inspect", str(tmp_path / "b"), "--encrypt-key-file", str(key_file))
    assert code == 1 and "failed verification" in err


def test_verify_says_what_checksums_alone_protect(capsys, tmp_path):
    export_demo(capsys, tmp_path / "b")
    code, out, _ = run(capsys, "verify", str(tmp_path / "b"))
    assert code == 0 and "checksums detect corruption, not deliberate edits" in out


@pytest.mark.parametrize("argv,message", [
    (["--name", "Nightly Backup"], "must be a valid label value"),
    (["--parallel", "0"], "--parallel must be 1 or more"),
    (["--snapshot"], "--snapshot needs a cluster"),
    (["--freeze=required"], "--freeze=required needs --snapshot"),
    (["--freeze", "sometimes"], "invalid choice"),
])
def test_export_usage_errors(capsys, tmp_path, argv, message):
    try:
        code = main(["export", "-f", EXAMPLES, "-n", "demo", "--all", "--to", str(tmp_path / "b"), *argv])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("target,message", [
    ("", "--to is empty"),
    ("   ", "--to is empty"),
    ("b.tar", "does not write .tar archives"),
    ("b.zip", "does not write .zip archives"),
    ("b.TAR.BZ2", "does not write .tar.bz2 archives"),
    ("b.gz", "does not write .gz archives"),
    ("b.tar.lz4", "does not write .tar.lz4 archives"),
    ("b.tar.Z", "does not write .tar.z archives"),
    ("b.tar.br", "does not write .tar.br archives"),  # any .tar.<ext>, known to us or not
    ("b.tlz", "does not write .tlz archives"),
])
def test_to_names_only_what_kvbackup_writes(capsys, tmp_path, target, message):
    code, _, err = run(capsys, "export", "-f", EXAMPLES, "-n", "demo", "--all", "--to",
                       str(tmp_path / target) if target.strip() else target)
    assert code == 2 and message in err and "PATH.tar.gz (or .tgz)" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("target", ["backup.d", "v1.2.tarball", "nightly.tar-old", "tar.gz.d", "b.tar.gz/",
                                    "b.tar.zst/"])
def test_names_that_only_look_like_archives_are_directories(capsys, tmp_path, target):
    """A trailing slash says directory, whatever the name."""
    export_demo(capsys, f"{tmp_path}/{target}")
    assert (tmp_path / target.rstrip("/") / "kvbackup.json").is_file()


def test_tgz_is_a_tarball_too(capsys, tmp_path):
    export_demo(capsys, tmp_path / "b.tgz")
    assert tarfile.is_tarfile(tmp_path / "b.tgz") and os.listdir(tmp_path) == ["b.tgz"]


def test_tarball_is_streamed_private_with_each_directory_once(capsys, tmp_path):
    export_without_umask(capsys, tmp_path / "b.tar.gz")
    assert stat.S_IMODE(os.stat(tmp_path / "b.tar.gz").st_mode) == 0o600
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        members = tar.getmembers()
    folders = [m.name for m in members if m.isdir()]
    assert len(folders) == len(set(folders)) and "resources/demo/core/Secret" in folders
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mode == (0o700 if member.isdir() else 0o600), member.name
        parent = member.name.rpartition("/")[0]
        assert not parent or folders.index(parent) < members.index(member)  # a folder before what it holds


def test_a_failed_tarball_export_leaves_no_partial_archive(capsys, tmp_path):
    code, _, err = run(capsys, "export", "-f", EXAMPLES, "-n", "demo", "vm/fedora", "vm/nope",
                       "--to", str(tmp_path / "b.tar.gz"))
    assert code == 1 and "not found" in err
    assert os.listdir(tmp_path) == []


def test_manifests_spell_shared_values_out():
    shared = {"name": "data"}
    text = dump_yaml({"volumes": [shared], "disks": [shared]}).decode()
    assert "&" not in text and "*" not in text and text.count("name: data") == 2

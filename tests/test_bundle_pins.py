"""Bundle behaviour that nothing else pins: what the reader refuses, what the archive leaks, what the writer guards."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile

import pytest

from kubectl_kvbackup import kinds
from kubectl_kvbackup.bundle import (FORMAT, FORMAT_VERSION, INDEX, BundleError, BundleWriter, TarStream,
                                     encrypted_secrets, objects_as_read, open_verified, read_bundle)
from kubectl_kvbackup.cli.main import main
from kubectl_kvbackup.refs import Ref

from .helpers import EXAMPLES


def write_index(folder: str, index: dict) -> str:
    os.makedirs(folder)
    with open(os.path.join(folder, INDEX), "w", encoding="utf-8") as f:
        json.dump(index, f)
    return folder


@pytest.mark.parametrize("fmt", ["kvbackup.kubevirt.io/other", "", None, 1])
def test_an_index_of_another_format_is_refused(tmp_path, fmt) -> None:
    folder = write_index(str(tmp_path / "b"), {"format": fmt, "formatVersion": FORMAT_VERSION, "files": {}})
    with pytest.raises(BundleError, match="is not a kvbackup index"):
        read_bundle(folder)


def test_an_index_of_the_right_format_is_read(tmp_path) -> None:
    folder = write_index(str(tmp_path / "b"), {"format": FORMAT, "formatVersion": FORMAT_VERSION, "files": {}})
    assert read_bundle(folder).index["format"] == FORMAT


def test_archived_entries_carry_no_owner_of_the_writer(tmp_path) -> None:
    """Extracted as root, an entry keeping the writer's uid/gid would belong to whoever has that number there."""
    target = str(tmp_path / "b.tar.gz")
    with BundleWriter(target) as writer:
        writer.write("resources/VirtualMachine/vm.yaml", b"kind: VirtualMachine\n")
        if os.getuid() == 0:  # as root, the writer's own ids are 0 already: files of another user are archived
            for folder, dirs, files in os.walk(writer.work):
                for name in dirs + files:
                    os.chown(os.path.join(folder, name), 4321, 4321)
        writer.commit({"format": FORMAT, "formatVersion": FORMAT_VERSION})
    with tarfile.open(target) as tar:
        members = tar.getmembers()
    assert members and all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members)


def test_encrypting_without_a_key_is_refused_and_writes_nothing(tmp_path) -> None:
    with BundleWriter(str(tmp_path / "b")) as writer:
        with pytest.raises(BundleError, match="encryption requested without a key"):
            writer.write("resources/Secret/s.yaml", b"kind: Secret\n", encrypt=True)
        assert writer.files == {}
        assert not os.path.exists(os.path.join(writer.work, "resources", "Secret", "s.yaml"))


def test_a_bundle_streamed_to_stdout_is_staged_in_the_temporary_directory_and_holds_every_file(tmp_path) -> None:
    out = io.BytesIO()
    with BundleWriter("-") as writer:
        assert os.path.dirname(writer.work) == tempfile.gettempdir()  # not beside whatever the current directory is
        writer.write("resources/VirtualMachine/vm.yaml", b"kind: VirtualMachine\n")
        writer.commit({"format": FORMAT, "formatVersion": FORMAT_VERSION}, stdout=out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert {INDEX, "resources/VirtualMachine/vm.yaml"} <= names


def test_the_archive_is_the_tar_tarfile_writes_for_the_same_members(tmp_path) -> None:
    """The writer stamps tarfile's own headers with each member's name and size: names of 100 characters and of 101
    (a PAX header), non-ASCII ones, members over one record and one over a compression chunk must come out as tarfile
    makes them."""
    target = str(tmp_path / "b.tar.gz")
    files = {"resources/demo/core/ConfigMap/small.yaml": b"kind: ConfigMap\n",
             "original/demo/core/ConfigMap/" + "x" * 66 + ".yaml": b"a" * 512,
             "original/demo/core/ConfigMap/" + "y" * 67 + ".yaml": b"a" * 511,
             "original/demo/core/Secret/" + "s" * 200 + ".yaml": b"b" * 20000,
             "original/d\u00e9mo/core/ConfigMap/caf\u00e9.yaml": b"c" * 513,
             "original/demo/core/ConfigMap/large.yaml": b"d" * (TarStream.CHUNK + 1)}
    assert len("original/demo/core/ConfigMap/" + "x" * 66 + ".yaml") == 100
    with BundleWriter(target) as writer:
        for path, data in files.items():
            writer.write(path, data)
        writer.commit({"format": FORMAT, "formatVersion": FORMAT_VERSION})
    expected = io.BytesIO()
    with tarfile.open(target) as written, tarfile.open(fileobj=expected, mode="w",
                                                       format=tarfile.PAX_FORMAT) as tar:
        members = written.getmembers()
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.mode, info.size, info.mtime, info.type = member.mode, member.size, member.mtime, member.type
            tar.addfile(info, written.extractfile(member) if member.isfile() else None)
    assert {m.name for m in members if m.isfile()} == {*files, INDEX}
    with gzip.open(target) as archive:
        assert archive.read() == expected.getvalue()


def test_the_archive_is_streamed_not_held_until_the_end() -> None:
    """Many small members are handed to gzip a chunk at a time: a bundle of thousands of objects never sits whole in
    memory before compression."""
    out = io.BytesIO()
    stream = TarStream(out, 0)
    size = 4096
    for number in range(TarStream.CHUNK // size + 8):  # incompressible: what gzip is handed shows in its output
        stream.add_file(f"resources/demo/core/ConfigMap/{number}.yaml", 0o600, os.urandom(size))
    assert out.tell() > TarStream.CHUNK // 2


def tarball(path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


INDEX_OK = json.dumps({"format": FORMAT, "formatVersion": FORMAT_VERSION}).encode()


@pytest.mark.parametrize("name", ["../outside.yaml", "/etc/passwd", "resources/../../x", "."])
def test_an_archive_member_outside_the_bundle_is_refused_before_anything_is_read(tmp_path, name):
    path = tarball(tmp_path / "b.tar.gz", {INDEX: INDEX_OK, name: b"x: 1\n"})
    with pytest.raises(BundleError, match="holds an unsafe path"):
        read_bundle(path)


@pytest.mark.parametrize("index,message", [
    (b"{not json", "is not valid JSON"),
    (json.dumps({"format": FORMAT, "formatVersion": FORMAT_VERSION + 1}).encode(),
     f"is bundle format version {FORMAT_VERSION + 1}; this kubectl-kvbackup reads versions 1, 2: use a matching"),
    (json.dumps({"format": FORMAT, "formatVersion": 0}).encode(), "is bundle format version 0;"),
    (json.dumps({"format": FORMAT}).encode(), "is bundle format version None;"),
])
def test_an_index_that_is_not_json_or_of_another_format_version_is_refused(tmp_path, index, message):
    with pytest.raises(BundleError, match=message):
        read_bundle(tarball(tmp_path / "b.tar.gz", {INDEX: index}))
    assert read_bundle(tarball(tmp_path / "ok.tar.gz", {INDEX: INDEX_OK})).index["formatVersion"] == FORMAT_VERSION


@pytest.fixture
def encrypted_demo(tmp_path):
    key = tmp_path / "backup.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    target = str(tmp_path / "demo.tar.gz")
    assert main(["export", "-f", EXAMPLES, "-n", "demo", "--all", "-q", "--to", target,
                 "--encrypt-key-file", str(key)]) == 0
    return target, key.read_bytes()


def test_an_archive_ends_as_tar_and_gzip_require(encrypted_demo):
    with open(encrypted_demo[0], "rb") as f:
        tar = gzip.decompress(f.read())  # the whole gzip stream, trailer checked
    assert len(tar) % tarfile.RECORDSIZE == 0 and tar.endswith(tarfile.NUL * 2 * tarfile.BLOCKSIZE)


def test_the_objects_as_read_are_every_found_object_decrypted(encrypted_demo):
    path, key = encrypted_demo
    bundle = open_verified(path, key)
    assert encrypted_secrets(bundle)
    objects = objects_as_read(bundle, key)
    expected = {Ref.of(kinds.SECRET, "demo", "fedora-userdata"), Ref.of(kinds.VM, "demo", "fedora")}
    assert expected <= set(objects)
    assert objects[Ref.of(kinds.SECRET, "demo", "fedora-userdata")]["kind"] == "Secret"
    # as read (original/), not as restored (resources/, where status is dropped)
    assert "status" in objects[Ref.of(kinds.VM, "demo", "fedora")]
    assert all(node["found"] for node in bundle.index["nodes"]
               if Ref(node["group"], node["kind"], node["namespace"], node["name"]) in objects)
    with pytest.raises(BundleError, match="is encrypted: pass --encrypt-key-file"):
        objects_as_read(bundle, None)


def test_a_plain_bundle_has_no_encrypted_secrets_and_a_tampered_one_is_refused_with_its_count(tmp_path):
    target = str(tmp_path / "plain")
    assert main(["export", "-f", EXAMPLES, "-n", "demo", "vm/windows", "-q", "--exclude-secrets", "--to",
                 target]) == 0
    assert not encrypted_secrets(open_verified(target))
    files = sorted(read_bundle(target).index["files"])
    with open(os.path.join(target, files[0]), "ab") as f:
        f.write(b"# edited\n")
    with pytest.raises(BundleError, match=r"failed verification \(1 problem\)"):
        open_verified(target)
    os.remove(os.path.join(target, files[1]))
    with pytest.raises(BundleError, match=r"failed verification \(2 problems\)"):
        open_verified(target)


def test_each_file_written_is_recorded_under_the_sha256_of_what_was_stored(tmp_path):
    with BundleWriter(str(tmp_path / "b")) as writer:
        path = "resources/demo/core/ConfigMap/a.yaml"
        assert writer.write(path, b"data: 1\n") == hashlib.sha256(b"data: 1\n").hexdigest() == writer.files[path]


def test_a_bundle_in_progress_is_named_after_its_target(tmp_path, monkeypatch) -> None:
    """What an interrupted export leaves for a moment says whose it is: ``.b.<random>.partial`` beside ``b``."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for target, prefix in ((str(tmp_path / "b"), ".b."), (str(tmp_path / "b.tar.gz"), ".b.tar.gz."), ("-", ".stdout.")):
        with BundleWriter(target) as writer:
            name = os.path.basename(writer.work)
            assert name.startswith(prefix) and name.endswith(".partial"), name

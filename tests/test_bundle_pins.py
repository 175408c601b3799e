"""Bundle behaviour that nothing else pins: what the reader refuses, what the archive leaks, what the writer guards."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile

import pytest

from kubectl_kvbackup.bundle import FORMAT, FORMAT_VERSION, INDEX, BundleError, BundleWriter, TarStream, read_bundle


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
     f"is bundle format version {FORMAT_VERSION + 1}; this kubectl-kvbackup reads version {FORMAT_VERSION}"),
])
def test_an_index_that_is_not_json_or_of_another_format_version_is_refused(tmp_path, index, message):
    with pytest.raises(BundleError, match=message):
        read_bundle(tarball(tmp_path / "b.tar.gz", {INDEX: index}))
    assert read_bundle(tarball(tmp_path / "ok.tar.gz", {INDEX: INDEX_OK})).index["formatVersion"] == FORMAT_VERSION

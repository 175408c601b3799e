"""Bundles: a directory (or a .tar.gz of one) holding ``kvbackup.json`` and YAML files of objects.

``resources/`` holds each object to restore in a file of its own, apply-ready (export rules applied, server-set
fields dropped, the restore label set), so ``kubectl apply -R -f BUNDLE/resources`` is a valid restore; ``original/``
holds every object as it was read, a multi-document file per kind and namespace: nothing applies or edits those one by
one, and a file per object there doubled the files an export creates. Every file's sha256 is in the index. A bundle
is written under a temporary name and renamed only when complete, with directories 0700 and files 0600 whatever the
umask (0400 where the umask takes the owner's write bit too: never readable by anyone else).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator

import yaml

from . import crypto
from .cluster import KubeError
from .refs import Ref

FORMAT = "kvbackup.kubevirt.io/bundle"
FORMAT_VERSION = 2
#: 1: ``original/`` had a file per object; a version 2 reader reads both
READABLE_FORMAT_VERSIONS = (1, 2)
INDEX = "kvbackup.json"
RESOURCES = "resources"
#: objects other workloads share (DataSources, network definitions elsewhere, cluster instancetypes): kept out of
#: resources/ so that ``kubectl apply -R -f resources/`` never overwrites them; a restore creates them if absent
SHARED = "shared"
ORIGINAL = "original"


class BundleError(KubeError):
    pass


def object_path(top: str, ref: Ref, encrypted: bool = False) -> str:
    """``<top>/<namespace or _cluster>/<group or core>/<Kind>/<name>.yaml`` (``.yaml.enc`` when encrypted)."""
    suffix = ".yaml.enc" if encrypted else ".yaml"
    return "/".join((top, ref.namespace or "_cluster", ref.group or "core", ref.kind, ref.name + suffix))


def original_path(ref: Ref, encrypted: bool = False) -> str:
    """``original/<namespace or _cluster>/<group or core>/<Kind>.yaml`` (``.yaml.enc`` when encrypted): the file
    holding ``ref`` as read, among the other objects of its kind and namespace."""
    suffix = ".yaml.enc" if encrypted else ".yaml"
    return "/".join((ORIGINAL, ref.namespace or "_cluster", ref.group or "core", ref.kind + suffix))


def yaml_stream(documents: list[bytes]) -> bytes:
    """YAML documents (each ending in a newline) as one multi-document stream."""
    return b"---\n".join(documents)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


#: Archive suffixes users may give ``--to``; kvbackup writes only the first two. Any other ``.tar.<ext>`` counts too.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tlz",
                    ".tar.lz4", ".tar.lzma", ".tar.lz", ".tar.z", ".tar", ".zip", ".gz", ".bz2", ".xz", ".zst", ".lz4",
                    ".lzma", ".lz", ".z", ".7z", ".rar")
GZIP_LEVEL = 6  # zlib's default: level 9 costs about twice the CPU for a few percent on YAML


def archive_suffix(path: str) -> str | None:
    lower = path.lower()
    known = next((suffix for suffix in ARCHIVE_SUFFIXES if lower.endswith(suffix)), None)
    if known is not None:
        return known
    name = lower.rsplit("/", 1)[-1]  # "x.tar.gz/" ends in a slash: a directory, and so no suffix
    head, dot, extension = name.rpartition(".")
    return f".tar.{extension}" if dot and head.endswith(".tar") and extension else None


def index_json(index: dict[str, Any]) -> bytes:
    """The index with a line per top-level field and per node, edge, file…: as easy to read and grep as an
    indented dump, and encoded by json's C encoder (``indent`` falls back to its pure-Python one, seconds slower for
    thousands of objects)."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    fields = []
    for key, value in index.items():
        if isinstance(value, list) and value:
            text = "[\n    " + ",\n    ".join(encode(item) for item in value) + "\n  ]"
        elif isinstance(value, dict) and value:
            text = "{\n    " + ",\n    ".join(f"{encode(k)}: {encode(v)}" for k, v in value.items()) + "\n  }"
        else:
            text = encode(value)
        fields.append(f"  {encode(key)}: {text}")
    return ("{\n" + ",\n".join(fields) + "\n}\n").encode()


class TarStream:
    """A PAX-format tar written into a gzip stream, byte for byte as ``tarfile`` writes it, at a fraction of its cost
    per member: each header is ``tarfile``'s own for the member's mode and type, made once and stamped with the
    member's name, size and checksum (a name ``tarfile`` would give a PAX header gets ``tarfile``'s whole header);
    members are compressed in large chunks, not in three small writes each."""

    CHUNK = 1 << 20

    def __init__(self, fileobj: BinaryIO, mtime: int) -> None:
        """``mtime`` in whole seconds: a fractional one costs a PAX header per member."""
        self._gzip = gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=GZIP_LEVEL)
        self._mtime = mtime
        self._templates: dict[tuple[int, bytes], bytes] = {}
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._offset = 0

    def _info(self, name: str, mode: int, size: int, kind: bytes) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mode, info.size, info.mtime, info.type = mode, size, self._mtime, kind
        return info  # uid, gid 0 and no user or group names: nothing of the exporting machine

    def _header(self, name: str, mode: int, size: int, kind: bytes) -> bytes:
        stored = name + "/" if kind == tarfile.DIRTYPE and not name.endswith("/") else name  # as TarInfo.get_info
        if not stored.isascii() or len(stored) > tarfile.LENGTH_NAME or size >= 8 ** 11:
            return self._info(name, mode, size, kind).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        template = self._templates.get((mode, kind))
        if template is None:
            template = self._templates[(mode, kind)] = self._info("", mode, 0, kind).tobuf(
                tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        block = bytearray(template)
        block[0:100] = stored.encode("ascii").ljust(100, tarfile.NUL)
        block[124:136] = b"%011o\0" % size
        block[148:156] = b" " * 8  # the checksum counts its own field as spaces
        block[148:155] = b"%06o\0" % sum(block)
        return bytes(block)

    def _write(self, data: bytes) -> None:
        self._offset += len(data)
        if len(data) >= self.CHUNK:  # the index, megabytes: compressed as it is rather than copied on the way
            self._flush()
            self._gzip.write(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        self._gzip.write(b"".join(self._pending))
        self._pending, self._pending_size = [], 0

    def add_directory(self, name: str, mode: int) -> None:
        self._write(self._header(name, mode, 0, tarfile.DIRTYPE))

    def add_file(self, name: str, mode: int, data: bytes) -> None:
        header = self._header(name, mode, len(data), tarfile.REGTYPE)
        padding = tarfile.NUL * (-len(data) % tarfile.BLOCKSIZE)
        if len(data) < self.CHUNK:
            self._write(header + data + padding)
        else:
            for part in (header, data, padding):
                self._write(part)

    def close(self) -> None:
        """The end-of-archive blocks and the padding to a whole record, as ``TarFile.close`` writes them."""
        self._write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        if self._offset % tarfile.RECORDSIZE:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - self._offset % tarfile.RECORDSIZE))
        self._flush()
        self._gzip.close()


class BundleWriter:
    """Writes a bundle so that it appears whole or not at all.

    A directory bundle is written into a private temporary directory beside the target and renamed on ``commit``;
    each directory is made once, each file with one open. A ``.tar.gz`` is streamed straight into a temporary
    archive beside the target (for ``-``, in the temporary directory, copied to stdout on ``commit``): no tree of
    files is written first. Used as a context manager: leaving it without ``commit`` (an error, Ctrl-C, SIGTERM)
    removes everything written.
    """

    def __init__(self, target: str, key: bytes | None = None):
        self.target = target
        self.key = key
        self.files: dict[str, str] = {}
        self.tarball = target == "-" or archive_suffix(target) in (".tar.gz", ".tgz")
        if target != "-" and os.path.lexists(target):
            raise BundleError(f"error: {target} already exists: choose a new --to path (kvbackup never overwrites "
                              "a bundle)")
        parent = os.path.dirname(os.path.abspath(target)) if target != "-" else tempfile.gettempdir()
        if not os.path.isdir(parent):
            raise BundleError(f"error: the directory {parent} does not exist: create it first")
        base = os.path.basename(target.rstrip("/")) if target != "-" else "stdout"
        self._dirs: set[str] = set()
        self._tar: TarStream | None = None
        self._archive: BinaryIO | None = None
        try:
            if self.tarball:
                descriptor, self.work = tempfile.mkstemp(prefix=f".{base}.", suffix=".partial", dir=parent)
                os.fchmod(descriptor, 0o600)
                self._archive = os.fdopen(descriptor, "w+b")
                self._tar = TarStream(self._archive, int(time.time()))
            else:
                self.work = tempfile.mkdtemp(prefix=f".{base}.", suffix=".partial", dir=parent)
                os.chmod(self.work, 0o700)
        except OSError as error:
            raise BundleError(f"error: cannot write in {parent}: {error.strerror}") from None

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._tar is not None:
            with contextlib.suppress(Exception):
                self._tar.close()
            self._tar = None
        if self._archive is not None:
            self._archive.close()
            self._archive = None
        if os.path.isdir(self.work):
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.work)

    def _make_parents(self, path: str) -> None:
        """Each directory once, 0700 whatever the umask; archived too, so that extracting keeps the mode."""
        folder = path.rpartition("/")[0]
        missing = []
        while folder and folder not in self._dirs:
            missing.append(folder)
            folder = folder.rpartition("/")[0]
        for folder in reversed(missing):
            if self._tar is not None:
                self._tar.add_directory(folder, 0o700)
            else:
                full = os.path.join(self.work, *folder.split("/"))
                os.mkdir(full, 0o700)
                os.chmod(full, 0o700)
            self._dirs.add(folder)

    def _put(self, path: str, data: bytes) -> None:
        if self._tar is not None:
            self._tar.add_file(path, 0o600, data)
            return
        descriptor = os.open(os.path.join(self.work, *path.split("/")), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
        finally:
            os.close(descriptor)

    def write(self, path: str, data: bytes, encrypt: bool = False) -> str:
        """Write one file at ``path`` inside the bundle; returns its sha256 (of the bytes stored)."""
        if encrypt:
            if self.key is None:
                raise BundleError("error: internal: encryption requested without a key")
            data = crypto.encrypt(self.key, data, path)
        self._make_parents(path)
        self._put(path, data)
        digest = sha256(data)
        self.files[path] = digest
        return digest

    def commit(self, index: dict[str, Any], stdout: BinaryIO | None = None) -> None:
        """Write the index last and make the bundle appear under its final name in one rename."""
        index = {**index, "files": dict(sorted(self.files.items()))}
        if self.key is not None:
            index["integrity"] = {"algorithm": crypto.MAC_ALGORITHM, "keyId": crypto.key_id(self.key),
                                  "mac": crypto.index_mac(self.key, index)}
        self._put(INDEX, index_json(index))
        if self._tar is None:
            os.rename(self.work, self.target)
            return
        self._tar.close()
        self._tar = None
        assert self._archive is not None
        if self.target == "-":
            assert stdout is not None
            self._archive.seek(0)
            shutil.copyfileobj(self._archive, stdout)
            stdout.flush()
            return
        self._archive.close()
        self._archive = None
        os.rename(self.work, self.target)


# --- reading and verifying -------------------------------------------------------------------------------------

@dataclass
class Bundle:
    """A bundle read into memory: its index and the bytes of every file (as stored: encrypted ones encrypted)."""

    path: str
    index: dict[str, Any]
    contents: dict[str, bytes] = field(default_factory=dict)

    def read_object(self, path: str, key: bytes | None = None) -> dict[str, Any]:
        return yaml.load(self._plain(path, key), Loader=_LOADER)

    def read_documents(self, path: str, key: bytes | None = None) -> list[dict[str, Any]]:
        """The objects of a multi-document file (``original/``)."""
        try:
            return [doc for doc in yaml.load_all(self._plain(path, key), Loader=_LOADER) if doc is not None]
        except yaml.YAMLError as error:
            raise BundleError(f"error: {self.path}: {path} is not valid YAML: {error}") from None

    def _plain(self, path: str, key: bytes | None) -> bytes:
        data = self.contents[path]
        if path.endswith(".enc"):
            if key is None:
                raise BundleError(f"error: {path} is encrypted: pass --encrypt-key-file or set "
                                  f"{crypto.KEY_ENVIRONMENT} (key id {self.index.get('secrets', {}).get('keyId')})")
            data = crypto.decrypt(key, data, path)
        return data


def _safe_member(name: str) -> bool:
    parts = name.split("/")
    return not name.startswith("/") and ".." not in parts and name not in ("", ".")


def _read_tar(path: str) -> dict[str, bytes]:
    contents = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.removeprefix("./")
                if not _safe_member(name):
                    raise BundleError(f"error: {path} holds an unsafe path {member.name!r}: not a kvbackup bundle")
                extracted = tar.extractfile(member)
                contents[name] = extracted.read() if extracted else b""
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise BundleError(f"error: {path} is not a readable bundle (truncated or not a .tar.gz?): {error}") from None
    return contents


def _read_directory(path: str) -> dict[str, bytes]:
    contents = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            with open(full, "rb") as f:
                contents[os.path.relpath(full, path).replace(os.sep, "/")] = f.read()
    return contents


def read_bundle(path: str) -> Bundle:
    if os.path.isdir(path):
        contents = _read_directory(path)
    elif os.path.isfile(path):
        contents = _read_tar(path)
    else:
        raise BundleError(f"error: {path}: no such bundle (a directory or .tar.gz written by kubectl kvbackup export)")
    if INDEX not in contents:
        raise BundleError(f"error: {path} has no {INDEX}: not a kvbackup bundle, or an export that did not finish")
    try:
        index = json.loads(contents[INDEX])
    except ValueError as error:
        raise BundleError(f"error: {path}/{INDEX} is not valid JSON: {error}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise BundleError(f"error: {path}/{INDEX} is not a kvbackup index")
    if index.get("formatVersion") not in READABLE_FORMAT_VERSIONS:
        raise BundleError(f"error: {path} is bundle format version {index.get('formatVersion')}; this kubectl-kvbackup "
                          f"reads versions {', '.join(map(str, READABLE_FORMAT_VERSIONS))}: use a matching release")
    return Bundle(path, index, contents)


@dataclass
class Verification:
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    #: True: the index's MAC checked out; False: it did not; None: not checked (no MAC, or no key given)
    authentic: bool | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.unexpected) and self.authentic is not False

    def problems(self) -> Iterator[str]:
        if self.authentic is False:
            yield "index: its MAC does not match: the index was edited, or the key is not the export's"
        yield from (f"missing: {p}" for p in self.missing)
        yield from (f"changed: {p}" for p in self.changed)
        yield from (f"unexpected: {p}" for p in self.unexpected)


def verify(bundle: Bundle, key: bytes | None = None) -> Verification:
    """Every file the index lists is there with its checksum, nothing else is, and — given the key of an encrypted
    export — the index itself is authentic. Without a MAC, checksums catch corruption, not deliberate edits."""
    expected: dict[str, str] = bundle.index.get("files") or {}
    result = Verification()
    for path, digest in sorted(expected.items()):
        if path not in bundle.contents:
            result.missing.append(path)
        elif sha256(bundle.contents[path]) != digest:
            result.changed.append(path)
    result.unexpected = sorted(p for p in bundle.contents if p != INDEX and p not in expected)
    if key is not None and bundle.index.get("integrity"):
        result.authentic = crypto.index_authentic(key, bundle.index)
    return result


def open_verified(path: str, key: bytes | None = None) -> Bundle:
    """A bundle that passed verification, for restore and inspect: a tampered bundle is refused."""
    bundle = read_bundle(path)
    check = verify(bundle, key)
    if not check.ok:
        count = len(list(check.problems()))
        raise BundleError(f"error: {path} failed verification ({count} problem{'' if count == 1 else 's'}): "
                          f"run kubectl kvbackup verify {path}")
    return bundle


def encrypted_secrets(bundle: Bundle) -> bool:
    """Whether the bundle holds Secrets only its export key can read."""
    return any(node.get("encrypted") for node in bundle.index.get("nodes") or [])


def objects_as_read(bundle: Bundle, key: bytes | None) -> dict[Ref, dict[str, Any]]:
    """Every object the bundle holds, as it was read from the source (``original/``), decrypted; an object the
    export made up (a DataVolume synthesized from its VM's template) has only its restore file."""
    objects = {}
    originals: dict[str, dict[str, dict[str, Any]]] = {}  # path → name → object
    for node in bundle.index.get("nodes") or []:
        if not node.get("found") or node.get("excluded"):
            continue
        ref = Ref(node["group"], node["kind"], node["namespace"], node["name"])
        path = node.get("original")
        if path is None:
            if node.get("file"):
                objects[ref] = bundle.read_object(node["file"], key)
            continue
        if path not in originals:
            originals[path] = {(doc.get("metadata") or {}).get("name"): doc for doc in bundle.read_documents(path, key)}
        if ref.name not in originals[path]:
            raise BundleError(f"error: {bundle.path}: {path} does not hold {ref}, which the index lists there: the "
                              f"bundle was not written by kubectl kvbackup export")
        objects[ref] = originals[path][ref.name]
    return objects

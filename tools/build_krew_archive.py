"""Build the krew platform archive: a single-file zipapp ``kubectl-kvbackup`` plus LICENSE, in a .tar.gz.

    python tools/build_krew_archive.py [--out dist] [--manifest krew-manifest.yaml] [--version v0.1.0]

The zipapp holds kubectl_kvbackup and the pure-Python code of its runtime dependencies, copied from the Python
environment that runs this script (install the project there first: ``python -m pip install .``), so it runs with
nothing but ``python3``. Compiled accelerators (PyYAML's libyaml binding, charset-normalizer's mypyc build) are left
out: their packages fall back to pure Python. A dependency that is compiled only stops the build. The archive is
reproducible (fixed timestamps and owners, sorted entries); its sha256 and the version are written into the
manifest, for every platform, since one pure-Python archive serves them all.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "kubectl_kvbackup"
EXECUTABLE = "kubectl-kvbackup"
ARCHIVE = f"{EXECUTABLE}.tar.gz"
#: what the plugin imports at run time (cryptography: see LEFT_OUT; flask and gunicorn serve the webhook image only)
ROOTS = ("kubernetes", "argcomplete", "PyYAML")
#: distributions the closure reaches that the plugin never imports, with why they stay out
LEFT_OUT = {
    "aiohttp": "kubernetes.aio only (the plugin uses the synchronous client); compiled",
    "cryptography": "compiled; imported only to encrypt Secrets and to issue webhook certificates, and then "
                    "taken from the system Python (see the manifest's caveats)",
}
#: compiled modules whose package imports them optionally and falls back to pure Python
OPTIONAL_ACCELERATORS = {"yaml/_yaml", "_yaml/_yaml"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
COMPILED = (".so", ".pyd", ".dylib")
MAIN = "from kubectl_kvbackup.cli.main import run\n\nrun()\n"


class BuildError(Exception):
    pass


def closure(roots: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions ``roots`` need, following Requires-Dist with markers for this interpreter."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found or key in LEFT_OUT:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BuildError(f"error: {name} is not installed: run python -m pip install . first") from None
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return sorted(found.values(), key=lambda d: d.metadata["Name"].lower())


def _pure_python(files: dict[str, bytes]) -> dict[str, bytes]:
    """Drop compiled files; refuse a compiled module that has no pure-Python twin to fall back to."""
    kept = {}
    for name, data in files.items():
        if not name.endswith(COMPILED):
            kept[name] = data
            continue
        module = name.split(".", 1)[0]
        if module not in OPTIONAL_ACCELERATORS and module + ".py" not in files:
            raise BuildError(f"error: {name} is compiled and has no pure-Python fallback: the zipapp cannot carry it")
    return kept


def dependency_files(dists: list[metadata.Distribution]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for dist in dists:
        for path in dist.files or []:
            name = str(path)
            if name.startswith("..") or "__pycache__" in name or name.endswith(".pyc"):
                continue  # console scripts and bytecode: the zipapp compiles nothing
            files[name] = Path(dist.locate_file(path)).read_bytes()
    return _pure_python(files)


def package_files() -> dict[str, bytes]:
    """kubectl_kvbackup from this checkout (its .py files), so the archive is what the tag holds."""
    root = REPO / PACKAGE
    return {str(p.relative_to(REPO)): p.read_bytes() for p in sorted(root.rglob("*.py"))
            if "__pycache__" not in p.parts}


def zipapp_bytes(files: dict[str, bytes]) -> bytes:
    """A zipapp with ``#!/usr/bin/env python3``, entries sorted and timestamps fixed, so equal inputs give equal
    bytes."""
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted({**files, "__main__.py": MAIN.encode()}.items()):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def tarball_bytes(members: dict[str, tuple[bytes, int]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def update_manifest(manifest: Path, version: str, sha256: str) -> None:
    """Write the version, the release URL of that version and the archive's sha256 into every platform."""
    text = manifest.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^(  version: ).*$", rf"\g<1>{version}", text)
    text = re.sub(r"(/releases/download/)v[^/]+/", rf"\g<1>{version}/", text)
    text = re.sub(r"(?m)^(\s+sha256: ).*$", rf"\g<1>{sha256}", text)
    manifest.write_text(text, encoding="utf-8")


def build(out: Path, manifest: Path | None, version: str) -> Path:
    dists = closure(ROOTS)
    files = {**dependency_files(dists), **package_files()}
    app = zipapp_bytes(files)
    tarball = tarball_bytes({EXECUTABLE: (app, 0o755), "LICENSE": ((REPO / "LICENSE").read_bytes(), 0o644)})
    out.mkdir(parents=True, exist_ok=True)
    target = out / ARCHIVE
    target.write_bytes(tarball)
    (out / EXECUTABLE).write_bytes(app)
    (out / EXECUTABLE).chmod(0o755)
    digest = hashlib.sha256(tarball).hexdigest()
    if manifest is not None:
        update_manifest(manifest, version, digest)
    print(f"{target}: sha256 {digest}, {len(dists)} dependencies: "
          + ", ".join(f"{d.metadata['Name']} {d.version}" for d in dists), file=sys.stderr)
    return target


def main(argv: list[str] | None = None) -> int:
    from kubectl_kvbackup import __version__

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "dist"), help="output directory (default: dist/)")
    parser.add_argument("--manifest", default=str(REPO / "krew-manifest.yaml"),
                        help="krew manifest to update with the version and sha256 ('' for none)")
    parser.add_argument("--version", default=f"v{__version__}", help="release version, with its v (default: "
                                                                       "the package's)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", args.version):
        parser.error(f"--version {args.version!r} must be a semantic version with a leading v, such as v0.1.0")
    try:
        build(Path(args.out), Path(args.manifest) if args.manifest else None, args.version)
    except BuildError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

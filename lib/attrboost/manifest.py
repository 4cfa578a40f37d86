"""Checked file manifests for saved artefacts (head, model and index bundles).

``manifest.json``, written last and atomically, names the artefact's format and version, the library
versions that wrote it, and a sha256 + size per file. :func:`read_manifest` verifies all of it and raises a
:class:`BundleError` that names the file and says what to do.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from .cache import write_json

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "BundleError", "sha256_file", "library_versions",
           "write_manifest", "read_manifest"]

FORMAT = "attrboost-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_VERSIONED = ("attrboost", "torch", "timm", "numpy", "safetensors", "scikit-learn")


class BundleError(ValueError):
    """A saved bundle (model or index) cannot be used: missing, changed, or from an incompatible version."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def write_manifest(directory: str | os.PathLike, files: list[str], *, fmt: str = FORMAT,
                   version: int = FORMAT_VERSION, **extra) -> Path:
    """Write ``manifest.json`` (last, atomically): format, version, library versions, sha256 + bytes per file."""
    directory = Path(directory)
    table = {f: {"sha256": sha256_file(directory / f), "bytes": (directory / f).stat().st_size} for f in files}
    return write_json(directory / MANIFEST, {
        "format": fmt, "format_version": version, **extra, "created": datetime.now(timezone.utc).isoformat(),
        "versions": library_versions(), "files": table})


def read_manifest(directory: str | os.PathLike, *, fmt: str = FORMAT, version: int | tuple = FORMAT_VERSION) -> dict:
    """The verified manifest of a bundle directory (see the module docstring for the checks); ``version``: the
    format version, or a tuple of the versions the caller reads."""
    directory = Path(directory)
    kind = "index" if fmt != FORMAT else "model"
    if not directory.is_dir():
        raise BundleError(f"{kind} directory {str(directory)!r} does not exist")
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{str(directory)!r} is not an attrboost {kind} bundle: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != fmt:
        raise BundleError(f"{path}: format {manifest.get('format')!r}, expected {fmt!r}")
    got = manifest.get("format_version")
    accepted = version if isinstance(version, tuple) else (version,)
    if got not in accepted:
        raise BundleError(f"{path}: format version {got!r}, but this attrboost "
                          f"({library_versions()['attrboost']}) reads version {' and '.join(map(str, accepted))} only; re-create the "
                          f"{kind} with this version (written by attrboost "
                          f"{manifest.get('versions', {}).get('attrboost')})")
    for name, info in manifest.get("files", {}).items():
        f = directory / name
        if not f.is_file():
            raise BundleError(f"{str(f)!r} is missing (listed in {MANIFEST}); the {kind} bundle is incomplete")
        digest = sha256_file(f)
        if digest != info["sha256"]:
            raise BundleError(f"{str(f)!r} changed after the {kind} was saved: sha256 {digest[:16]}..., "
                              f"{MANIFEST} says {info['sha256'][:16]}...; re-create the {kind}")
    return manifest

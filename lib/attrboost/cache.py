"""Derived-data cache: fingerprints and atomic writes.

Cookiecutter-data-science rule: raw data is read-only; everything derived (features, fitted
heads, pixel matrices) is cached under :func:`cache_dir`, keyed by a fingerprint of its inputs,
and always written atomically (temp file in the same directory, then ``os.replace``), so an
interrupted run never leaves a half-written file behind: the next run simply recomputes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

ENV_CACHE = "ATTRBOOST_CACHE"


def repo_root() -> Path | None:
    """The source checkout this package lives in, or None for a non-editable install."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else None


def cache_dir() -> Path:
    """Cache directory: ``$ATTRBOOST_CACHE``, else ``<repo>/.cache``, else ``~/.cache/attrboost``."""
    env = os.environ.get(ENV_CACHE)
    if env:
        path = Path(env).expanduser()
    else:
        root = repo_root()
        path = root / ".cache" if root else Path.home() / ".cache" / "attrboost"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest() + str(obj.dtype) + str(obj.shape)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"fingerprint(): cannot serialise {type(obj).__name__}")


def fingerprint(*parts) -> str:
    """A stable 16-hex-digit digest of JSON-serialisable parts (paths, arrays and sets allowed)."""
    text = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], None]) -> Path:
    """Call ``write_fn(tmp)`` on a temp path next to ``path``, then atomically rename it to ``path``.

    If ``write_fn`` raises (or the process dies), ``path`` is untouched and the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_arrays(path: str | os.PathLike, **arrays) -> Path:
    """Save numpy arrays to an ``.npz`` file atomically (no pickle)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return atomic_write(path, write)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load an ``.npz`` written by :func:`save_arrays` into a plain dict."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}

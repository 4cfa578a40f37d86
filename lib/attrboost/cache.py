"""Derived-data cache: fingerprints, atomic writes and checked entries.

Cookiecutter-data-science rule: raw data is read-only; everything derived (features, fitted
heads, pixel matrices) is cached under :func:`cache_dir`, keyed by a fingerprint of its inputs,
and always written atomically (temp file in the same directory, then ``os.replace``), so an
interrupted run never leaves a half-written file behind: the next run simply recomputes it.

Every cache entry is written by :func:`save_checked` (its key and a sha256 of its arrays stored inside)
and read by :func:`load_checked`, which validates it (readable, key, checksum, expected arrays, dtypes,
shapes, row ids); a damaged entry is moved to ``<cache>/quarantine/`` with a warning naming it, and
recomputed. :func:`cached` is the compute-or-load helper on top of both.

Two processes that miss the same entry at once (two notebooks of a test run, two study runs) compute it once:
the miss is computed under :func:`computing`, an exclusive lock per entry, and the second process waits
for it and then loads what the first saved.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from datetime import datetime
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


_CODE: dict[str, str] = {}


def _module_code(name: str) -> str:
    """sha256 of one module's code: its syntax tree without docstrings (a comment, a docstring or a blank line
    leaves it unchanged; any change to what runs changes it)."""
    import ast
    import importlib.util

    if name not in _CODE:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise ValueError(f"code_hash: {name!r} is not a Python source module")
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        _CODE[name] = hashlib.sha256(ast.dump(tree).encode()).hexdigest()
    return _CODE[name]


def code_hash(*modules: str) -> str:
    """A digest of the code of ``modules`` (dotted names, e.g. ``"attrboost.heads"``), part of the key of every
    cached artefact they compute: an edit to any function of theirs misses the cache instead of returning what
    the old code computed (:func:`_module_code`: docstrings and comments do not count)."""
    return fingerprint("code", {m: _module_code(m) for m in sorted(set(modules))})


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


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as JSON (indent 2, keys in their given order, other values as ``str``) atomically."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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


# ----------------------------------------------------------------------------- checked entries
#: Names of the two arrays :func:`save_checked` adds to every entry (reserved).
KEY_FIELD, SUM_FIELD = "_cache_key", "_cache_sha256"
QUARANTINE = "quarantine"


class CacheWarning(UserWarning):
    """A cache entry was damaged: it was moved to ``<cache>/quarantine/`` and is recomputed."""


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and bytes (names in sorted order)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checked(path: str | os.PathLike, key: str, **arrays) -> Path:
    """:func:`save_arrays` plus the entry's ``key`` and a sha256 of the arrays, checked by :func:`load_checked`."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    reserved = {KEY_FIELD, SUM_FIELD} & set(arrays)
    if reserved:
        raise ValueError(f"save_checked: array names {sorted(reserved)} are reserved")
    return save_arrays(path, **arrays, **{KEY_FIELD: np.array(str(key)), SUM_FIELD: np.array(_checksum(arrays))})


def quarantine(path: str | os.PathLike, reason: str) -> Path | None:
    """Move a damaged entry to ``<cache>/quarantine/<its path relative to the cache>.<timestamp>`` (kept for
    inspection, never deleted) and warn (:class:`CacheWarning`) naming both paths and ``reason``.
    Returns the new path (None if the file could not be moved, e.g. another process moved it first)."""
    path = Path(path)
    root = cache_dir()
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:  # an entry outside the cache directory: keep its name only
        rel = Path(path.name)
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S.%f")
    dest = root / QUARANTINE / rel.parent / f"{rel.name}.{stamp}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, dest)
    except OSError as exc:
        warnings.warn(f"damaged cache entry {path}: {reason}; could not move it aside ({exc}); recomputing it",
                      CacheWarning, stacklevel=3)
        return None
    warnings.warn(f"damaged cache entry {path}: {reason}; moved it to {dest} and recomputing it",
                  CacheWarning, stacklevel=3)
    return dest


Expect = dict[str, tuple]  # name -> (dtype or kind letter or None, shape with None for any length, or None)


def _dtype_ok(arr: np.ndarray, want) -> bool:
    if want is None:
        return True
    if isinstance(want, str) and len(want) == 1:  # a kind letter: "U" text, "f" float, "i" signed int, ...
        return arr.dtype.kind == want
    return arr.dtype == np.dtype(want)


def _shape_ok(arr: np.ndarray, want) -> bool:
    return want is None or (arr.ndim == len(want) and all(w is None or w == s for w, s in zip(want, arr.shape)))


def _problem(arrays: dict, key: str, expect: Expect, ids, check) -> str | None:
    """What is wrong with a loaded entry (None: nothing); removes the key and checksum from ``arrays``."""
    stored_key, stored_sum = arrays.pop(KEY_FIELD, None), arrays.pop(SUM_FIELD, None)
    if stored_key is None and stored_sum is None:
        return ("it has no stored key and checksum (written by an attrboost older than these checks, or not by "
                "attrboost), so it cannot be verified")
    if stored_key is None or stored_sum is None:
        return f"only one of {KEY_FIELD}/{SUM_FIELD} is stored"
    if stored_key.shape != () or str(stored_key) != str(key):
        return f"it was stored for key {str(stored_key)[:40]!r}, not the requested {str(key)!r}"
    if stored_sum.shape != () or str(stored_sum) != _checksum(arrays):
        return "checksum mismatch (its contents changed after it was written)"
    missing = [n for n in expect if n not in arrays]
    if missing:
        return f"missing array(s) {missing} (has {sorted(arrays)})"
    for name, (dtype, shape) in expect.items():
        arr = arrays[name]
        if not _dtype_ok(arr, dtype) or not _shape_ok(arr, shape):
            want_shape = "any" if shape is None else tuple("*" if s is None else s for s in shape)
            return (f"array {name!r} has dtype {arr.dtype} and shape {arr.shape}, expected dtype {dtype} "
                    f"and shape {want_shape}")
    if ids is not None:
        want = np.asarray(ids).astype(str)
        got = arrays.get("ids")
        if got is None or got.shape != want.shape or not np.array_equal(got.astype(str), want):
            return "its row ids do not match the requested ids (other rows, or another order)"
    return check(arrays) if check is not None else None


def load_checked(path: str | os.PathLike, key: str, expect: Expect | None = None, *, ids=None,
                 check: Callable[[dict], str | None] | None = None) -> dict[str, np.ndarray] | None:
    """The arrays of an entry written by :func:`save_checked`, validated; None when there is no usable entry.

    Checks, in order: the file reads as an ``.npz`` (no pickle); the stored key equals ``key``; the stored
    sha256 matches the arrays; every array named in ``expect`` exists with its dtype (a dtype, or a kind
    letter such as ``"U"`` / ``"f"``, or None) and shape (a tuple with None for any length, or None);
    ``ids`` (if given) equals the entry's ``ids`` array, order included; ``check(arrays)`` (if given) returns
    None (else a description of the problem). An entry that fails any check is moved aside with a
    :class:`CacheWarning` (:func:`quarantine`) and None is returned, so the caller recomputes it.

    Entries without a stored key and checksum (written by an attrboost older than these checks) cannot be
    verified (a shuffled or substituted array would pass every other check), so they too are moved aside and
    recomputed, once.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        arrays = load_arrays(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is recomputed, never trusted
        quarantine(path, f"unreadable ({type(exc).__name__}: {exc})")
        return None
    problem = _problem(arrays, key, expect or {}, ids, check)
    if problem:
        quarantine(path, problem)
        return None
    return arrays


@contextlib.contextmanager
def computing(path: str | os.PathLike):
    """Hold the exclusive compute lock of the cache entry ``path`` for the block: a second process that misses
    the same entry waits here, then finds it saved. The lock is the operating system's (:mod:`filelock`), so a
    process that dies releases it; its file is ``<cache>/.locks/<sha256 of the absolute path>.lock``, so the
    entries' folders hold entries only. Use it around "load again, else compute and save" (as :func:`cached`)."""
    from filelock import FileLock

    name = hashlib.sha256(str(Path(path).absolute()).encode()).hexdigest()[:32]
    locks = cache_dir() / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{name}.lock")):
        yield


def cached(path: str | os.PathLike, key: str, compute: Callable[[], dict], *, expect: Expect | None = None,
           ids=None, check: Callable[[dict], str | None] | None = None, enabled: bool = True) -> dict:
    """Compute-or-load: the validated entry at ``path`` (:func:`load_checked`), else ``compute()`` (a dict
    of arrays), saved with :func:`save_checked` and returned as computed; concurrent misses of one entry
    compute it once (:func:`computing`). ``enabled=False``: always compute, never read or write."""
    if not enabled:
        return compute()
    got = load_checked(path, key, expect, ids=ids, check=check)
    if got is not None:
        return got
    with computing(path):
        got = load_checked(path, key, expect, ids=ids, check=check)  # computed by another process meanwhile?
        if got is not None:
            return got
        arrays = compute()
        save_checked(path, key, **arrays)
    return arrays


# ----------------------------------------------------------------------------- per-part embeddings (heads, baselines)
def embeddings_expect(part_masks: dict) -> Expect:
    """Expected arrays of a cached head or baseline: float32 ``emb_<part>`` with one row per item of the part."""
    return {f"emb_{p}": (np.float32, (int(np.count_nonzero(m)), None)) for p, m in part_masks.items()}


def check_embeddings(json_field: str | None = None) -> Callable[[dict], str | None]:
    """A :func:`load_checked` check: every ``emb_*`` array has the same width, and ``json_field`` holds JSON."""
    def check(arrays: dict) -> str | None:
        widths = {k: v.shape[1] for k, v in arrays.items() if k.startswith("emb_") and v.ndim == 2}
        if len(set(widths.values())) > 1:
            return f"its embeddings differ in width between parts: {widths}"
        if json_field is not None:
            try:
                json.loads(str(arrays[json_field]))
            except ValueError as exc:
                return f"{json_field!r} is not valid JSON ({exc})"
        return None
    return check

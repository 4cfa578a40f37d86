"""Run set bookkeeping: which backbones finished under which parameters, the aggregate results, and
keeping every result until its replacement succeeded (:class:`Swap`, :func:`recover`); the cache's identity.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..cache import atomic_write, cache_dir
from .plan import (
    CACHE_ID,
    FAILED,
    PREVIOUS,
    REPLACED,
    RESULT_COLUMNS,
    RESULTS,
    RUN_JSON,
    SORT_COLUMNS,
    StudyConfig,
    read_json,
    runset_keys,
)


# ----------------------------------------------------------------------------- run sets
def successful_backbones(runset_dir: str | os.PathLike, backbones: Iterable[str] | None = None) -> list[str]:
    """Backbones under ``runset_dir`` whose run.json says "ok" and whose results.csv exists
    (restricted to ``backbones`` when given), sorted. ``<name>.previous`` and ``<name>.failed``
    directories are not backbones."""
    runset_dir = Path(runset_dir)
    if backbones is None:
        backbones = ([p.name for p in runset_dir.iterdir() if p.is_dir() and "." not in p.name]
                     if runset_dir.is_dir() else [])
    ok = []
    for name in backbones:
        info = read_json(runset_dir / name / RUN_JSON)
        if isinstance(info, dict) and info.get("status") == "ok" and (runset_dir / name / RESULTS).is_file():
            ok.append(name)
    return sorted(set(ok))


def aggregate(runset_dir: str | os.PathLike, backbones: Iterable[str] | None = None) -> pd.DataFrame:
    """Concatenate the results.csv of the successful backbones (see :func:`successful_backbones`),
    sorted by backbone, embedding, seed, metric. A failed backbone's results are never read."""
    runset_dir = Path(runset_dir)
    frames = []
    for name in successful_backbones(runset_dir, backbones):
        path = runset_dir / name / RESULTS
        df = pd.read_csv(path)
        if "backbone" not in df.columns:
            df.insert(1 if "dataset" in df.columns else 0, "backbone", name)
        missing = [c for c in RESULT_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected at least {list(RESULT_COLUMNS)}")
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(list(SORT_COLUMNS), kind="mergesort").reset_index(drop=True)


def write_aggregate(runset_dir: str | os.PathLike, df: pd.DataFrame) -> Path:
    return atomic_write(Path(runset_dir) / RESULTS, lambda tmp: df.to_csv(tmp, index=False))


def runset_parameters(info: dict) -> dict:
    """The run-set parameters (:data:`RUNSET_KEYS`, and :data:`CSV_KEYS` for the csv dataset) of a backbone's
    parsed run.json (from its 04 step)."""
    p = ((info or {}).get("parameters") or {}).get("04_evaluate") or {}
    return {k: p.get(k) for k in runset_keys(p.get("dataset"))}


def finished_runs(runset_dir: str | os.PathLike) -> dict[str, dict]:
    """``{backbone: run-set parameters}`` of the successful runs under ``runset_dir``."""
    return {b: runset_parameters(read_json(Path(runset_dir) / b / RUN_JSON)) for b in successful_backbones(runset_dir)}


def parameter_changes(old: dict, new: dict) -> list[str]:
    """``["n_groups: 100 -> 12", ...]`` for the keys whose values differ."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]


def check_runset(cfg: StudyConfig) -> tuple[dict | None, dict[str, dict], str | None]:
    """The run set's parameters against those of its finished runs, before any work: returns
    ``(current parameters, {backbone: other parameters}, error)``. ``--figures-only`` takes the finished
    runs' parameters; another call refuses other parameters unless ``--force`` (which replaces the run set)."""
    existing = finished_runs(cfg.runset_dir)
    where = f"run set {cfg.runset!r} ({cfg.runset_dir})"
    if cfg.figures_only:
        variants = {json.dumps(p, sort_keys=True) for p in existing.values()}
        if len(variants) > 1:
            return None, {}, (f"error: {where} mixes runs with different run-set parameters "
                              f"({', '.join(sorted(variants))}); rerun it with --force")
        return next(iter(existing.values()), None), {}, None
    current = cfg.runset_parameters()
    differing = {b: p for b, p in existing.items() if p != current}
    if not differing or cfg.force:
        return current, differing, None
    variants: dict[str, list[str]] = {}
    for b, params in differing.items():
        variants.setdefault(json.dumps(params, sort_keys=True), []).append(b)
    lines = [f"error: {where} already holds finished runs with other run-set parameters:"]
    for text, backbones in variants.items():
        lines.append(f"  {', '.join(backbones)}: " + "; ".join(parameter_changes(json.loads(text), current)))
    lines.append("Nothing was run. Either replace that run set with --force (the old one is kept until the new "
                 "run has succeeded), or write a separate one with --runset NAME (or another --out).")
    return current, differing, "\n".join(lines)


# ----------------------------------------------------------------------------- protection: keep until success
def side_path(path: str | os.PathLike, tag: str) -> Path:
    """Where a protected path's other version lives, next to it: ``pca`` -> ``pca.<tag>``,
    ``beyond.csv`` -> ``beyond.<tag>.csv`` (tags :data:`PREVIOUS`, :data:`REPLACED`, :data:`FAILED`)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.{tag}{p.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _set_aside_failed(path: Path) -> Path | None:
    """Move ``path`` (a failed attempt) to ``side_path(path, FAILED)``, replacing an older one."""
    if not path.exists():
        return None
    failed = side_path(path, FAILED)
    _remove(failed)
    os.replace(path, failed)
    return failed


class Swap:
    """Keeps the current version of ``paths`` until a step has succeeded.

    On entry each existing path is moved to ``side_path(p, tag)`` (copied instead, for the
    paths in ``copy``: directories the step updates in place, like a figures directory that 05 and 06
    share), so the step writes at the final paths. :meth:`commit` drops the previous versions;
    :meth:`rollback` moves what the step wrote to ``side_path(p, "failed")`` (for debugging, replacing an
    older one) and the previous versions back. Any exception inside ``with`` (KeyboardInterrupt too)
    rolls back; a killed process leaves ``*.previous`` behind for :func:`recover`. Steps inside a
    run-set replacement protect paths the replacement protects too, hence its own ``tag`` (REPLACED).
    """

    def __init__(self, paths: Iterable[str | os.PathLike], copy: Iterable[str | os.PathLike] = (),
                 tag: str = PREVIOUS):
        self.paths = [Path(p) for p in paths]
        self.copy = {Path(p) for p in copy}
        self.tag = tag
        self.done = False

    def __enter__(self) -> "Swap":
        for p in self.paths:  # check every path before moving any, so a refusal leaves nothing half-moved
            prev = side_path(p, self.tag)
            if prev.exists():
                raise FileExistsError(f"{prev} exists: an earlier run was interrupted; run again to restore it")
        for p in self.paths:
            prev = side_path(p, self.tag)
            if not p.exists():
                continue
            if p not in self.copy:
                os.replace(p, prev)
            elif p.is_dir():
                shutil.copytree(p, prev, symlinks=True)
            else:
                shutil.copy2(p, prev)
        return self

    def commit(self) -> None:
        for p in self.paths:
            _remove(side_path(p, self.tag))
        self.done = True

    def rollback(self) -> list[Path]:
        """Restore the previous versions; returns where the failed attempt's files are kept."""
        kept = []
        for p in self.paths:
            if failed := _set_aside_failed(p):
                kept.append(failed)
            if side_path(p, self.tag).exists():
                os.replace(side_path(p, self.tag), p)
        self.done = True
        return kept

    def failed_path(self, path: str | os.PathLike) -> Path:
        """Where ``path`` (written by the step) is kept after a :meth:`rollback`."""
        path = Path(path)
        for p in self.paths:
            if p == path or p in path.parents:
                return side_path(p, FAILED) / path.relative_to(p)
        return path

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not self.done:
            self.rollback()
        return False


def recover(runset_dir: str | os.PathLike, figures_dir: str | os.PathLike) -> list[str]:
    """Restore what a killed run left as ``*.replaced`` next to a run set and its figures directory,
    then as ``*.previous`` in and next to them (the partial new version goes to ``*.failed``).
    Returns one line per restored path."""
    lines = []

    def restore(p: Path, tag: str = PREVIOUS) -> None:
        prev = side_path(p, tag)
        if prev.exists():
            failed = _set_aside_failed(p)
            os.replace(prev, p)
            lines.append(f"restored {p} from {prev} (an earlier run was interrupted"
                         + (f"; its partial output is in {failed})" if failed else ")"))

    runset_dir, figures_dir = Path(runset_dir), Path(figures_dir)
    for tag in (REPLACED, PREVIOUS):
        restore(runset_dir, tag)
        restore(figures_dir, tag)
    if runset_dir.is_dir():
        for child in sorted(runset_dir.iterdir()):
            if f".{PREVIOUS}" in child.name:
                restore(child.with_name(child.name.replace(f".{PREVIOUS}", "", 1)))
    return lines


# ----------------------------------------------------------------------------- cache identity
def cache_id(create: bool = False) -> str | None:
    """The id of the current cache directory (a random token in ``<cache>/cache_id``), created when
    ``create``; None when it has none."""
    path = cache_dir() / CACHE_ID
    with contextlib.suppress(OSError):
        return path.read_text(encoding="utf-8").strip() or None
    if not create:
        return None
    token = os.urandom(8).hex()
    atomic_write(path, lambda tmp: tmp.write_text(token + "\n", encoding="utf-8"))
    return token


def computed_here(info: dict) -> bool:
    """Whether a run (parsed run.json) was computed with the current cache: its recorded ``cache_id``
    is this cache's; a run.json without one counts as computed here unless the cache is empty."""
    recorded = (info or {}).get("cache_id")
    if recorded:
        return recorded == cache_id()
    return any(p.name != CACHE_ID for p in cache_dir().iterdir())



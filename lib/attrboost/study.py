"""Run the whole study: the six notebooks, per backbone, with papermill.

    python -m attrboost.study                                  # synthetic data, 4 backbones -> runs/
    python -m attrboost.study --publish                        # the same, into the committed papermill_runs/, figures/
    python -m attrboost.study --dataset fashion --split by_group
    python -m attrboost.study --figures-only                   # only 05 on the existing runs
    python -m attrboost.study --reproduce                      # re-execute the committed run set into runs/reproduce/
    python -m attrboost.study --refresh-notebooks              # re-execute notebooks/0*.ipynb in place

Where the output goes. Ad-hoc runs write under ``runs/`` (git-ignored), which mirrors the tracked
layout: ``runs/papermill_runs/<runset>/`` and ``runs/figures/<runset>/``. The committed run sets
(``papermill_runs/``, ``figures/``) are written only with ``--publish`` (what ``make study`` and
``make figures`` pass) or an explicit ``--out``/``--figures-dir``. ``--reproduce`` re-executes a committed
run set with its own parameters into ``runs/reproduce/`` and reports, per results table, how many rows are
identical, within the committed 95 % CI, or differing (:func:`compare_results`).

Layout (``<runset>`` is ``--runset``, by default ``<dataset>`` for the random split, ``<dataset>-by_group``
otherwise)::

    <out>/<runset>/<backbone>/01_data.ipynb ... 04_evaluate.ipynb   executed copies
    <out>/<runset>/<backbone>/results.csv                           written by 04 (tidy table)
    <out>/<runset>/<backbone>/run.json                              parameters, fingerprint, status, wall times
    <out>/<runset>/results.csv                                      the run set's successful backbones, concatenated
    <out>/<runset>/05_figures.ipynb, run.json, failures.json        figures step, run-set summary, failures
    <out>/<runset>/06_beyond.ipynb, beyond.csv                      baselines, label budget, ablation (one backbone)
    <figures>/<runset>/                                             written by 05 (and beyond_*.png by 06)

A backbone is skipped ("up to date") when its ``run.json`` says ``ok``, its fingerprint matches and
its ``results.csv`` exists. The fingerprint covers the notebook parameters, the *code* of the
notebooks (cell types and sources, so re-executing a notebook in place, which only changes its
outputs, does not invalidate runs), the attrboost version, the lib sources and any local weights
file. A failing notebook fails its backbone only: the others still run, 05 still runs if the run set
has at least one successful backbone, and the exit status is 1. 06 runs for ``--beyond-backbone``
(default efficientnet_lite0) once that backbone has a successful run in the run set; ``--no-beyond``
skips it.

Never lose a result. A run set has run-set parameters (dataset, data_dir, split, n_groups, per_group,
seeds, tasks). Its aggregate ``results.csv`` holds every backbone with a successful run under those
parameters, not only the backbones of the current call. A call whose run-set parameters differ from
those of the finished runs already in the run set is refused before any work, naming the differences;
``--force`` replaces the run set, ``--runset NAME`` (or another ``--out``) writes a separate one.
Every step keeps what it would replace until it has succeeded: before a backbone's notebooks run, its
previous run directory is moved aside to ``<backbone>.previous``; on success that is deleted, on failure
the new attempt is moved to ``<backbone>.failed/`` (for debugging) and the previous run is moved back.
05 and 06 do the same with their notebook, ``beyond.csv`` and the figures directory (copied aside, as
05 and 06 both write into it), and a forced replacement of a run set does it with the whole run set
and figures directories (the new run set is kept only when every step succeeded). The notebooks thus
always run at their final paths, so the committed notebooks name no temporary directory. A run killed
outright leaves ``*.previous`` behind; the next call restores it first. ``*.previous`` and ``*.failed``
are git-ignored.

Every path handed to papermill or to a notebook is relative to the repository root (papermill and
the kernels run there), so executed notebooks that get committed contain no machine-specific paths.

Each backbone's ``run.json`` records the id of the cache it was computed with (``cache_id`` in the cache
directory, ``$ATTRBOOST_CACHE`` or ``.cache``). When runs are skipped as up to date but were computed with
another cache (a fresh clone: the committed results were computed elsewhere), one line says so and how
to re-execute them.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd
from jupyter_client.manager import AsyncKernelManager

from . import __version__
from . import params as spec
from .cache import ENV_CACHE, atomic_write, cache_dir, fingerprint, repo_root

DATASETS = ("synthetic", "fashion")
SPLITS = ("random", "by_group")
TASKS = ("task1", "task2", "task3")
FALLBACK_BACKBONES = ("pca", "resnet18", "resnet34", "resnet50", "resnet101", "vit_b_16",
                      "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
DEFAULT_BACKBONES = ("pca", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BACKBONE_NOTEBOOKS = ("01_data", "02_embeddings", "03_train", "04_evaluate")
FIGURES_NOTEBOOK = "05_figures"
BEYOND_NOTEBOOK = "06_beyond"
NOTEBOOKS = BACKBONE_NOTEBOOKS + (FIGURES_NOTEBOOK, BEYOND_NOTEBOOK)
BEYOND_RESULTS = "beyond.csv"
RESULT_COLUMNS = ("dataset", "backbone", "embedding", "seed", "metric", "value")
SORT_COLUMNS = ("backbone", "embedding", "seed", "metric")
RESULTS = "results.csv"
RUN_JSON = "run.json"
FAILURES_JSON = "failures.json"
KERNEL = "python3"
EVALUE_CHARS = 500
# where the output goes (relative to the repository root): ad-hoc runs under runs/ (git-ignored),
# the committed run sets only with --publish, a re-execution of a committed run set under runs/reproduce/
DEFAULT_OUT, DEFAULT_FIGURES = "runs/papermill_runs", "runs/figures"
PUBLISH_OUT, PUBLISH_FIGURES = "papermill_runs", "figures"
REPRODUCE_OUT, REPRODUCE_FIGURES = "runs/reproduce/papermill_runs", "runs/reproduce/figures"
# the parameters a run set's backbones share: results of different ones never go into one run set
RUNSET_KEYS = ("dataset", "data_dir", "split", "n_groups", "per_group", "seeds", "tasks")
RUNSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# <name>.previous: kept until a step succeeded; <name>.replaced: a whole run set (and its figures) kept until its
# forced replacement succeeded; <name>.failed: a failed attempt, kept for debugging
PREVIOUS, REPLACED, FAILED = "previous", "replaced", "failed"
CACHE_ID = "cache_id"                        # file in the cache directory naming that cache
HEADLINE_METRICS = ("paper_map@10", "map@r")
COLD_TIME = "about 30-45 min on 2 CPU cores with a cold cache for the synthetic default"

# execute(input_path, output_path, parameters=..., cwd=..., kernel_name=..., progress_bar=...)
Execute = Callable[..., object]


# ----------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Step:
    """One notebook execution; paths are relative to the repository root (or absolute outside it)."""

    notebook: str            # e.g. "02_embeddings"
    input_path: str          # e.g. "notebooks/02_embeddings.ipynb"
    output_path: str         # e.g. "papermill_runs/synthetic/pca/02_embeddings.ipynb"
    parameters: dict = field(hash=False)


@dataclass(frozen=True)
class Run:
    """Notebooks 01..04 for one backbone of a run set."""

    backbone: str
    runset: str
    run_dir: str             # relative to the repository root, e.g. "papermill_runs/synthetic/pca"
    steps: tuple[Step, ...]


def known_backbones() -> tuple[str, ...]:
    """Backbone names from :func:`attrboost.backbones.list_backbones`, else the documented set."""
    try:
        from .backbones import list_backbones
    except ImportError:
        return FALLBACK_BACKBONES
    names = [b if isinstance(b, str) else getattr(b, "name", str(b)) for b in list_backbones()]
    return tuple(names) or FALLBACK_BACKBONES


def runset_name(dataset: str, split: str) -> str:
    """``<dataset>`` for the random split, ``<dataset>-<split>`` otherwise."""
    return dataset if split == "random" else f"{dataset}-{split}"


def rel_to_root(path: str | os.PathLike, root: Path) -> str:
    """``path`` (relative paths are taken from the current directory) as a POSIX path relative to
    ``root``; a path outside ``root`` stays absolute (it cannot be committed anyway)."""
    p = Path(path).expanduser()
    p = (p if p.is_absolute() else Path.cwd() / p).resolve()
    try:
        return p.relative_to(Path(root).resolve()).as_posix() or "."
    except ValueError:
        return str(p)


def _notebook_path(name: str) -> str:
    return f"notebooks/{name}.ipynb"


def plan_runs(args: argparse.Namespace) -> list[Run]:
    """The per-backbone runs (notebooks 01..04, in order) for parsed and normalised ``args``."""
    runset = args.runset
    data = dict(dataset=args.dataset, data_dir=args.data_dir, n_groups=args.n_groups,
                per_group=args.per_group, split=args.split)
    runs = []
    for backbone in args.backbones:
        run_dir = f"{args.out}/{runset}/{backbone}"
        model = dict(backbone=backbone, weights=args.weights.get(backbone))
        params = {
            "01_data": dict(data, seed=args.seeds[0]),
            "02_embeddings": dict(data, seeds=list(args.seeds), **model, device=args.device,
                                  batch_size=args.batch_size),
            "03_train": dict(data, **model, tasks=list(args.tasks), seed=args.seeds[0]),
            "04_evaluate": dict(data, **model, tasks=list(args.tasks), seeds=list(args.seeds),
                                results_dir=run_dir),
        }
        steps = tuple(Step(nb, _notebook_path(nb), f"{run_dir}/{nb}.ipynb", params[nb]) for nb in BACKBONE_NOTEBOOKS)
        runs.append(Run(backbone, runset, run_dir, steps))
    return runs


def plan_figures(args: argparse.Namespace) -> Step:
    """The 05 step of the run set: it reads ``<out>/<runset>`` and writes ``<figures>/<runset>``."""
    runset = args.runset
    # 05 parses dataset and split from its `dataset` parameter; the run set's own name may be anything
    params = dict(dataset=runset_name(args.dataset, args.split), runs_dir=f"{args.out}/{runset}",
                  figures_dir=f"{args.figures_dir}/{runset}",
                  data_dir=args.data_dir)
    return Step(FIGURES_NOTEBOOK, _notebook_path(FIGURES_NOTEBOOK), f"{args.out}/{runset}/{FIGURES_NOTEBOOK}.ipynb",
                params)


# ----------------------------------------------------------------------------- fingerprints
def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def notebook_hash(path: str | os.PathLike) -> str:
    """sha256 of a notebook's code: the type and source of every cell, in order.

    Outputs, execution counts and metadata are ignored, so executing a notebook in place (as
    ``--refresh-notebooks`` does) keeps its hash. A file that is not a notebook is hashed whole.
    """
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        cells = [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
                 for c in nb["cells"]]
    except (ValueError, KeyError, TypeError):
        return file_sha256(path)
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def lib_hash(package_dir: str | os.PathLike | None = None) -> str:
    """sha256 over ``attrboost/**/*.py`` (relative path and content), excluding this runner,
    whose only influence on the notebooks (their parameters) is fingerprinted separately."""
    package_dir = Path(package_dir) if package_dir else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).as_posix()
        if rel == "study.py":
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def run_fingerprint(parameters: dict, inputs: dict[str, str], version: str, lib: str) -> str:
    """Fingerprint of a run: its parameters, the hashes of its input files (notebooks, weights),
    the attrboost version and the lib-source hash."""
    return fingerprint(parameters, inputs, version, lib)


def read_json(path: str | os.PathLike):
    """The parsed JSON file, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n",
                                                         encoding="utf-8"))


def is_up_to_date(run_dir: str | os.PathLike, fp: str) -> bool:
    """True when ``run_dir/run.json`` has status "ok" and fingerprint ``fp`` and results.csv exists."""
    info = read_json(Path(run_dir) / RUN_JSON)
    return (isinstance(info, dict) and info.get("status") == "ok" and info.get("fingerprint") == fp
            and (Path(run_dir) / RESULTS).is_file())


# ----------------------------------------------------------------------------- aggregate
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
    """The run-set parameters (:data:`RUNSET_KEYS`) of a backbone's parsed run.json (from its 04 step)."""
    p = ((info or {}).get("parameters") or {}).get("04_evaluate") or {}
    return {k: p.get(k) for k in RUNSET_KEYS}


def args_runset_parameters(args: argparse.Namespace) -> dict:
    """The run-set parameters of parsed ``args``, as :func:`runset_parameters` reads them back."""
    return dict(dataset=args.dataset, data_dir=args.data_dir, split=args.split, n_groups=args.n_groups,
                per_group=args.per_group, seeds=list(args.seeds), tasks=list(args.tasks))


def finished_runs(runset_dir: str | os.PathLike) -> dict[str, dict]:
    """``{backbone: run-set parameters}`` of the successful runs under ``runset_dir``."""
    return {b: runset_parameters(read_json(Path(runset_dir) / b / RUN_JSON)) for b in successful_backbones(runset_dir)}


def parameter_changes(old: dict, new: dict) -> list[str]:
    """``["n_groups: 100 -> 12", ...]`` for the keys whose values differ."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]


# ----------------------------------------------------------------------------- keep until success
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
        for p in self.paths:
            prev = side_path(p, self.tag)
            if prev.exists():
                raise FileExistsError(f"{prev} exists: an earlier run was interrupted; run again to restore it")
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
            prev, failed = side_path(p, self.tag), side_path(p, FAILED)
            if p.exists():
                _remove(failed)
                os.replace(p, failed)
                kept.append(failed)
            if prev.exists():
                os.replace(prev, p)
        self.done = True
        return kept

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
        prev, failed = side_path(p, tag), side_path(p, FAILED)
        if not prev.exists():
            return
        if p.exists():
            _remove(failed)
            os.replace(p, failed)
        os.replace(prev, p)
        lines.append(f"restored {p} from {prev} (an earlier run was interrupted"
                     + (f"; its partial output is in {failed})" if failed.exists() else ")"))

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


# ----------------------------------------------------------------------------- numbers
def _backbone_order(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [b for b in FALLBACK_BACKBONES if b in names] + sorted(names - set(FALLBACK_BACKBONES))


def headline(table: pd.DataFrame, metrics: Sequence[str] = HEADLINE_METRICS) -> str:
    """Text tables, one per metric: per backbone, raw and each task, ``mean ± half-width`` of the
    95 % Student-t CI over seeds (:func:`attrboost.stats.summarise`, formatted as notebook 05 does)."""
    from .stats import summarise

    part = table[table["metric"].isin(metrics)] if len(table) else table
    if part.empty:
        return ""
    s = summarise(part, by=["metric", "backbone", "embedding"]).set_index(["metric", "backbone", "embedding"])
    present = set(part["embedding"])
    embeddings = ["raw"] * ("raw" in present) + sorted(present - {"raw"})
    backbones = _backbone_order(part["backbone"])
    blocks = []
    for metric in [m for m in metrics if m in set(part["metric"])]:
        seeds = sorted(int(x) for x in part.loc[part["metric"] == metric, "seed"].unique())
        rows = [["backbone", *embeddings]]
        for b in backbones:
            cells = [b]
            for e in embeddings:
                if (metric, b, e) not in s.index:
                    cells.append("-")
                    continue
                r = s.loc[(metric, b, e)]
                half = (r["ci_high"] - r["ci_low"]) / 2
                cells.append(f"{r['mean']:.2f} ± {half:.2f}" if pd.notna(half) else f"{r['mean']:.2f}")
            rows.append(cells)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        blocks.append(f"{metric} (test part; mean ± 95% CI half-width over {len(seeds)} seed(s) {seeds}):\n"
                      + "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows))
    return "\n".join(blocks)


COMPARE_CATEGORIES = ("identical", "within_ci", "differing", "missing", "new")


def compare_results(committed_df: pd.DataFrame, new_df: pd.DataFrame, value: str = "value",
                    seed: str = "seed") -> dict:
    """Row-by-row comparison of a re-executed results table with the committed one.

    Rows are matched on every column but ``value``. Each committed row is ``identical`` (same value),
    ``within_ci`` (differs by at most the half-width of the committed 95 % CI over seeds of its
    configuration: the same columns but ``seed`` and ``value``), ``differing`` or ``missing`` (absent from
    the new table); ``new`` counts rows only in the new table. Returns the counts, ``rows`` (committed
    rows) and ``max_abs_diff`` (over matched rows).
    """
    from .stats import summarise

    for name, df in (("committed", committed_df), ("new", new_df)):
        missing = [c for c in (value, seed) if c not in df.columns]
        if missing:
            raise ValueError(f"compare_results: the {name} table has no column(s) {missing}; "
                             f"columns are {list(df.columns)}")
    if set(committed_df.columns) != set(new_df.columns):
        raise ValueError(f"compare_results: columns differ: committed {list(committed_df.columns)}, "
                         f"new {list(new_df.columns)}")
    keys = [c for c in committed_df.columns if c != value]
    for name, df in (("committed", committed_df), ("new", new_df)):
        dup = df.duplicated(keys)
        if dup.any():
            raise ValueError(f"compare_results: the {name} table has {int(dup.sum())} duplicate row key(s), "
                             f"e.g. {df.loc[dup, keys].iloc[0].to_dict()}")
    config = [c for c in keys if c != seed]
    ci = summarise(committed_df, by=config, value=value) if config else None
    m = committed_df.merge(new_df, on=keys, how="outer", suffixes=("_committed", "_new"), indicator=True)
    if ci is not None:
        ci = ci.assign(half=(ci["ci_high"] - ci["ci_low"]) / 2)[config + ["half"]]
        m = m.merge(ci, on=config, how="left")
    else:
        m["half"] = float("nan")
    both = m[m["_merge"] == "both"]
    old, new = both[f"{value}_committed"], both[f"{value}_new"]
    diff = (new - old).abs()
    identical = (old == new) | (old.isna() & new.isna())
    within = ~identical & (diff <= both["half"])
    return {"rows": len(committed_df), "identical": int(identical.sum()), "within_ci": int(within.sum()),
            "differing": int((~identical & ~within).sum()), "missing": int((m["_merge"] == "left_only").sum()),
            "new": int((m["_merge"] == "right_only").sum()),
            "max_abs_diff": float(diff.max()) if len(diff) and diff.notna().any() else 0.0}


def format_comparison(name: str, c: dict) -> str:
    verdict = ("reproduced exactly" if c["identical"] == c["rows"] and not c["new"] else
               "reproduced within the committed CI" if not (c["differing"] or c["missing"] or c["new"]) else
               "NOT reproduced")
    return (f"{name}: {c['rows']} committed rows: {c['identical']} identical, {c['within_ci']} within the "
            f"committed 95% CI, {c['differing']} differing, {c['missing']} missing, {c['new']} new "
            f"(largest difference {c['max_abs_diff']:.2f}): {verdict}")


# ----------------------------------------------------------------------------- CLI
def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def plan_beyond(args: argparse.Namespace) -> Step:
    """The 06 step of the run set (baselines, label budget, ablation) for ``args.beyond_backbone``:
    it writes ``<out>/<runset>/beyond.csv`` and ``beyond_*.png`` under ``<figures>/<runset>``."""
    runset = args.runset
    bb = args.beyond_backbone
    params = dict(dataset=args.dataset, data_dir=args.data_dir, n_groups=args.n_groups, per_group=args.per_group,
                  split=args.split, backbone=bb, weights=args.weights.get(bb), seeds=list(args.seeds),
                  results_dir=f"{args.out}/{runset}", figures_dir=f"{args.figures_dir}/{runset}")
    return Step(BEYOND_NOTEBOOK, _notebook_path(BEYOND_NOTEBOOK), f"{args.out}/{runset}/{BEYOND_NOTEBOOK}.ipynb",
                params)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m attrboost.study",
        description="Run the study notebooks (01..04 per backbone, then 05, then 06) with papermill; "
                    "unchanged runs are skipped. Output goes to runs/ (git-ignored) unless --publish "
                    "(the committed papermill_runs/ and figures/) or --out/--figures-dir is given. A step "
                    "keeps what it replaces until it succeeded: a failed attempt goes to <name>.failed/ and "
                    "the previous results stay.",
        epilog=f"Cache: derived data (features, heads, synthetic images) live in ${ENV_CACHE}, default "
               f"<repo>/.cache (`make clean-cache` deletes it). Backbones: {', '.join(known_backbones())}.")
    p.add_argument("--dataset", default="synthetic", choices=DATASETS, help="data set (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="data directory (default: the notebooks' default)")
    p.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES),
                   help="comma-separated backbones (default: %(default)s)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated integer seeds (default: %(default)s)")
    p.add_argument("--n-groups", type=int, default=100, help="groups sampled (default: %(default)s)")
    p.add_argument("--per-group", type=int, default=40, help="images per group (default: %(default)s)")
    p.add_argument("--split", default="random", choices=SPLITS, help="train/test split (default: %(default)s)")
    p.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                   help="local weights file for a backbone (repeatable)")
    p.add_argument("--device", default="auto", help="feature-extraction device (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="feature-extraction batch (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help=f"executed notebooks and results (default: <repo>/{DEFAULT_OUT}, git-ignored)")
    p.add_argument("--figures-dir", default=None, help=f"figures (default: <repo>/{DEFAULT_FIGURES})")
    p.add_argument("--publish", action="store_true",
                   help=f"write the committed run set: --out <repo>/{PUBLISH_OUT} "
                        f"--figures-dir <repo>/{PUBLISH_FIGURES} "
                        "(what `make study` does)")
    p.add_argument("--runset", default=None,
                   help="name of the run set directory (default: <dataset>, or <dataset>-<split> for a split "
                        "other than random)")
    p.add_argument("--force", action="store_true",
                   help="rerun even if unchanged; replace a run set whose finished runs have other run-set "
                        "parameters (the old one is kept until the new one succeeded)")
    p.add_argument("--reproduce", action="store_true",
                   help=f"re-execute the committed run set <repo>/{PUBLISH_OUT}/<runset> with its own parameters "
                        f"into <repo>/{REPRODUCE_OUT} and {REPRODUCE_FIGURES}, then report per table how many rows "
                        "are identical, within the committed CI, or differing")
    p.add_argument("--figures-only", action="store_true", help="run only 05 on the existing runs")
    p.add_argument("--beyond-backbone", default="efficientnet_lite0",
                   help="backbone of 06 (baselines, label budget, ablation); it needs a successful run of "
                        "that backbone in the run set (default: %(default)s)")
    p.add_argument("--no-beyond", action="store_true", help="do not run 06")
    p.add_argument("--refresh-notebooks", action="store_true",
                   help="execute the committed notebooks/0*.ipynb in place with their default parameters")
    return p


def parse_args(argv: Sequence[str] | None = None, root: str | os.PathLike | None = None) -> argparse.Namespace:
    """Parse and validate the CLI; lists become lists, paths become root-relative strings.

    Invalid values exit (status 2) with a message naming the option and the accepted values.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.root = Path(root).resolve() if root is not None else (repo_root() or Path.cwd()).resolve()

    known = known_backbones()
    # every value at once, with the notebooks' own checks (attrboost.params), before any work
    cli = dict(dataset=args.dataset, split=args.split, backbones=list(dict.fromkeys(_csv_list(args.backbones))),
               tasks=list(dict.fromkeys(_csv_list(args.tasks))), seeds=args.seeds, n_groups=args.n_groups,
               per_group=args.per_group, batch_size=args.batch_size, device=args.device,
               data_dir=args.data_dir,
               out=args.out, figures_dir=args.figures_dir)
    cli = {k: v for k, v in cli.items() if not (k in ("out", "figures_dir") and v is None)}  # None: the defaults
    try:
        checked = spec.validate(cli, labels={k: "--" + k.replace("_", "-") for k in cli})
    except ValueError as e:
        parser.error(str(e))
    args.backbones, args.tasks, args.seeds = checked["backbones"], checked["tasks"], checked["seeds"]

    weights = {}
    for item in args.weights:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--weights: expected NAME=PATH, got {item!r}")
        if name not in known:
            parser.error(f"--weights: unknown backbone {name!r}; expected one of {list(known)}")
        if not Path(path).expanduser().is_file():
            parser.error(f"--weights: {name}={path}: no such file")
        weights[name] = rel_to_root(path, args.root)
    args.weights = weights

    if args.beyond_backbone not in known:
        parser.error(f"--beyond-backbone: unknown backbone {args.beyond_backbone!r}; expected one of {list(known)}")
    args.data_dir = rel_to_root(args.data_dir, args.root) if args.data_dir else None
    args.runset = runset_name(args.dataset, args.split) if args.runset is None else args.runset
    if not RUNSET_NAME.fullmatch(args.runset):
        parser.error(f"--runset: {args.runset!r} is not a plain directory name; expected letters, digits, "
                     "'_' and '-' (no '.', '/' or spaces)")
    if args.publish and (args.out or args.figures_dir or args.reproduce):
        parser.error("--publish: it sets --out and --figures-dir to the committed directories; "
                     "do not combine it with --out, --figures-dir or --reproduce")
    if args.reproduce and (args.out or args.figures_dir or args.figures_only):
        parser.error(f"--reproduce: it writes to {REPRODUCE_OUT} and {REPRODUCE_FIGURES}; "
                     "do not combine it with --out, --figures-dir or --figures-only")
    out, figures = ((PUBLISH_OUT, PUBLISH_FIGURES) if args.publish else
                    (REPRODUCE_OUT, REPRODUCE_FIGURES) if args.reproduce else (DEFAULT_OUT, DEFAULT_FIGURES))
    args.out = rel_to_root(args.out if args.out else args.root / out, args.root)
    args.figures_dir = rel_to_root(args.figures_dir if args.figures_dir else args.root / figures, args.root)
    return args


def unknown_parameters(args: argparse.Namespace) -> str | None:
    """Why the plan passes a parameter that a notebook's parameter cell does not declare (papermill
    would only warn and run the defaults), or None. Checked before anything executes."""
    steps = [] if args.figures_only else [s for r in plan_runs(args) for s in r.steps]
    steps += [plan_figures(args)] + ([] if args.figures_only or args.no_beyond else [plan_beyond(args)])
    names: dict[str, set] = {}
    for s in steps:
        if Path(s.input_path).is_file():  # a missing notebook is reported by run_study
            names.setdefault(s.input_path, set()).update(s.parameters)
    try:
        spec.check_known(names)
    except ValueError as e:
        return str(e)
    return None


# ----------------------------------------------------------------------------- execution
def quiet_kernel() -> dict:
    """nbclient options (for :func:`papermill.execute_notebook`) that keep a successful run quiet
    without hiding errors; each removes the cause of a message, not the message:

    * ``[IPKernelApp] WARNING | Kernel is running over TCP without encryption ...``: the kernel
      manager provisions CurveZMQ keys (jupyter_client's ``transport_encryption="auto"``; ipykernel's
      kernelspec declares ``supported_encryption: curve``), so the local sockets are encrypted;
    * ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.``: jupyter_client interrupts
      (SIGINT) every kernel it shuts down, and papermill shuts down right after the reply to its last
      ``kernel_info`` request, while the kernel is still inside that request's handler.
      :class:`BatchKernelManager` skips that interrupt: papermill shuts the kernel down once every cell
      has finished or one failed, so it is idle; a busy one (the runner stopped with Ctrl-C) still
      gets the shutdown request and is killed after ``shutdown_wait_time`` (5 s) if it does not stop.
    """
    import zmq
    from traitlets.config import Config

    kw = {"kernel_manager_class": BatchKernelManager}
    if zmq.has("curve"):
        kw["config"] = Config({"KernelManager": {"transport_encryption": "auto"}})
    return kw


class BatchKernelManager(AsyncKernelManager):
    """jupyter_client's AsyncKernelManager, without the interrupt it sends a kernel it shuts down."""

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()


def papermill_execute(input_path, output_path, parameters=None, cwd=None, kernel_name=KERNEL,
                      progress_bar=False, **kw):
    """The default executor: :func:`papermill.execute_notebook` with a :func:`quiet_kernel`."""
    import papermill

    return papermill.execute_notebook(input_path, output_path, parameters=parameters, cwd=cwd,
                                      kernel_name=kernel_name, progress_bar=progress_bar, **{**quiet_kernel(), **kw})


def failure_info(exc: BaseException) -> dict:
    """``ename``/``evalue`` of a papermill execution error (or of any exception)."""
    ename = getattr(exc, "ename", None) or type(exc).__name__
    evalue = getattr(exc, "evalue", None)
    evalue = str(exc) if evalue is None else str(evalue)
    return {"ename": str(ename), "evalue": evalue[:EVALUE_CHARS]}


def fmt_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(round(s)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m{s:02d}s"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Progress:
    """Prints progress lines (through tqdm.write, so an optional bar stays intact) with elapsed time."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=total, unit="nb", desc="study", disable=None, leave=False)

    def say(self, text: str) -> None:
        self._tqdm.write(f"{text}  [elapsed {fmt_seconds(self.elapsed)}]")

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def close(self) -> None:
        self.bar.close()


def _execute_step(execute: Execute, step: Step, root: Path) -> float:
    t = time.perf_counter()
    Path(step.output_path).parent.mkdir(parents=True, exist_ok=True)
    execute(step.input_path, step.output_path, parameters=dict(step.parameters), cwd=str(root),
            kernel_name=KERNEL, progress_bar=False)
    return time.perf_counter() - t


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _check_notebooks(names: Iterable[str]) -> list[str]:
    return [_notebook_path(n) for n in names if not Path(_notebook_path(n)).is_file()]


def strip_run_metadata(path: Path) -> None:
    """Drop papermill's timestamps and durations from a committed notebook, so reruns diff cleanly."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - not a notebook nbformat can read: leave it as it is
        return
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    text = nbformat.writes(nb)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def refresh_notebooks(execute: Execute, root: Path) -> int:
    """Execute notebooks/01..05 in place with their default parameters; stop at the first failure,
    restoring that notebook's previous content."""
    missing = _check_notebooks(NOTEBOOKS)
    if missing:
        print(f"error: missing notebooks {missing} under {root}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    for i, name in enumerate(NOTEBOOKS, 1):
        path = Path(_notebook_path(name))
        before = path.read_bytes()
        print(f"[refresh {i}/{len(NOTEBOOKS)}] {path} ...", flush=True)
        t = time.perf_counter()
        try:
            execute(str(path), str(path), parameters={}, cwd=str(root), kernel_name=KERNEL, progress_bar=False)
        except BaseException as exc:
            atomic_write(path, lambda tmp: tmp.write_bytes(before))
            if not isinstance(exc, Exception):
                raise
            info = failure_info(exc)
            print(f"[refresh {i}/{len(NOTEBOOKS)}] {path} FAILED: {info['ename']}: {info['evalue']}\n"
                  f"(notebook restored; total wall time {fmt_seconds(time.perf_counter() - t0)})", flush=True)
            return 1
        strip_run_metadata(path)
        print(f"[refresh {i}/{len(NOTEBOOKS)}] {path} done in {fmt_seconds(time.perf_counter() - t)}", flush=True)
    print(f"total wall time {fmt_seconds(time.perf_counter() - t0)}")
    return 0


def _summary(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("backbone", "status", "wall", "note")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + ("  " + r[3] if r[3] else "")
             for r in [head, *rows]]
    return "\n".join(lines)


def _failure_note(failure: dict) -> str:
    return f"{failure['notebook']}: {failure['ename']}: {failure['evalue'][:80]}"


def _conflict_message(runset: str, runset_dir: Path, differing: dict[str, dict], current: dict) -> str:
    variants: dict[str, list[str]] = {}
    for b, params in differing.items():
        variants.setdefault(json.dumps(params, sort_keys=True), []).append(b)
    lines = [f"error: run set {runset!r} ({runset_dir}) already holds finished runs with other run-set parameters:"]
    for text, backbones in variants.items():
        lines.append(f"  {', '.join(backbones)}: " + "; ".join(parameter_changes(json.loads(text), current)))
    lines.append("Nothing was run. Either replace that run set with --force (the old one is kept until the new "
                 "run has succeeded), or write a separate one with --runset NAME (or another --out).")
    return "\n".join(lines)


def run_study(args: argparse.Namespace, execute: Execute | None = None) -> int:
    """Run the plan for parsed ``args`` (the current directory must be ``args.root``). Returns the exit status."""
    execute = execute or papermill_execute
    runs = [] if args.figures_only else plan_runs(args)
    fig = plan_figures(args)
    beyond = None if (args.figures_only or args.no_beyond) else plan_beyond(args)
    runset, runset_dir, figs_dir = args.runset, Path(fig.parameters["runs_dir"]), Path(fig.parameters["figures_dir"])
    missing = (_check_notebooks(BACKBONE_NOTEBOOKS if runs else ()) + _check_notebooks([FIGURES_NOTEBOOK])
               + _check_notebooks([BEYOND_NOTEBOOK] if beyond else []))
    if missing:
        print(f"error: missing notebooks {missing} under {args.root}", file=sys.stderr)
        return 2
    for line in recover(runset_dir, figs_dir):
        print(line, flush=True)

    # the run set's parameters: refuse, before any work, to mix or silently replace other ones
    existing = finished_runs(runset_dir)
    if args.figures_only:
        variants = {json.dumps(p, sort_keys=True) for p in existing.values()}
        if len(variants) > 1:
            print(f"error: run set {runset!r} ({runset_dir}) mixes runs with different run-set parameters "
                  f"({', '.join(sorted(variants))}); rerun it with --force", file=sys.stderr)
            return 2
        current = next(iter(existing.values()), None)
        differing = {}
    else:
        current = args_runset_parameters(args)
        differing = {b: p for b, p in existing.items() if p != current}
        if differing and not args.force:
            print(_conflict_message(runset, runset_dir, differing, current), file=sys.stderr)
            return 2

    whole = Swap([runset_dir, figs_dir], tag=REPLACED) if differing else None
    if whole:
        print(f"replacing run set {runset} ({runset_dir}, {figs_dir}) because of --force: "
              + "; ".join(parameter_changes(next(iter(differing.values())), current))
              + f". The old one is kept as {side_path(runset_dir, REPLACED)} until every step of the new one "
                "has succeeded.", flush=True)
    progress = _Progress(total=len(runs) * len(BACKBONE_NOTEBOOKS) + 1 + (beyond is not None))
    with whole or contextlib.nullcontext():
        rows, failures, skipped = _run_runset(execute, args, runs, fig, beyond, current, progress)
        progress.close()
        if whole and failures:
            kept = whole.rollback()
            print(f"\nthe forced replacement of run set {runset} failed: the old run set is back in place; "
                  f"the new, incomplete one is in {', '.join(map(str, kept))}", flush=True)
            failures_at = side_path(runset_dir, FAILED) / FAILURES_JSON
        else:
            if whole:
                whole.commit()
            failures_at = runset_dir / FAILURES_JSON

    print()
    print(_summary(rows))
    if failures:
        print(f"{len(failures)} failure(s), details in {failures_at}")
    table = pd.read_csv(runset_dir / RESULTS) if (runset_dir / RESULTS).is_file() else pd.DataFrame()
    if len(table):
        text = headline(table)
        if text:
            print(f"\nrun set {runset}: {runset_dir / RESULTS} ({len(table)} rows)\n{text}")
    if figs_dir.is_dir():
        names = sorted(p.name for p in figs_dir.iterdir() if p.is_file())
        print(f"figures and tables: {figs_dir}/ ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")
    elsewhere = [b for b in skipped if not computed_here(read_json(runset_dir / b / RUN_JSON))]
    if elsewhere:
        print(f"note: the results of {', '.join(elsewhere)} were computed elsewhere (another machine or another "
              f"cache than {cache_dir()}), so nothing was re-executed here; to re-execute them: `make reproduce` "
              f"(into {REPRODUCE_OUT}/, compared with these) or `make study STUDY_ARGS=--force` "
              f"(replaces them), {COLD_TIME}")
    print(f"total wall time {fmt_seconds(progress.elapsed)}", flush=True)
    return 1 if failures or table.empty else 0


def _run_runset(execute: Execute, args, runs: list[Run], fig: Step, beyond: Step | None, current: dict | None,
                progress: _Progress):
    """Execute the runs, then 05 and 06, each step keeping what it replaces until it succeeded.
    Returns (summary rows, failures, backbones skipped as up to date)."""
    root, runset = args.root, args.runset
    runset_dir, figs_dir = Path(fig.parameters["runs_dir"]), Path(fig.parameters["figures_dir"])
    version, lib = __version__, lib_hash()
    nb_hashes = {_notebook_path(n): notebook_hash(_notebook_path(n)) for n in NOTEBOOKS}
    weight_hashes = {path: file_sha256(path) for path in args.weights.values()}
    rows, failures, skipped = [], [], []
    print(f"study {runset}: backbones {args.backbones}, tasks {args.tasks}, seeds {args.seeds} -> {runset_dir}",
          flush=True)

    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)} backbones] {run.backbone}"
        run_dir = Path(run.run_dir)
        parameters = {s.notebook: s.parameters for s in run.steps}
        inputs = {s.input_path: nb_hashes[s.input_path] for s in run.steps}
        weights = args.weights.get(run.backbone)
        if weights:
            inputs[weights] = weight_hashes[weights]
        fp = run_fingerprint(parameters, inputs, version, lib)
        if not args.force and is_up_to_date(run_dir, fp):
            progress.update(len(run.steps))
            progress.say(f"{tag}: up to date (skipped)")
            skipped.append(run.backbone)
            rows.append((run.backbone, "up to date", "-", ""))
            continue

        failed_dir = side_path(run_dir, FAILED)
        with Swap([run_dir]) as swap:     # the previous run waits in <run_dir>.previous
            run_dir.mkdir(parents=True)
            wall, failure, t_run, done = {}, None, time.perf_counter(), 0
            for step in run.steps:
                progress.say(f"{tag}: {step.notebook} ...")
                t = time.perf_counter()
                try:
                    wall[step.notebook] = _execute_step(execute, step, root)
                except Exception as exc:  # noqa: BLE001 - isolate any failure to its backbone
                    wall[step.notebook] = time.perf_counter() - t
                    failure = {"backbone": run.backbone, "notebook": step.notebook, **failure_info(exc),
                               "output": f"{failed_dir}/{Path(step.output_path).name}"}
                    progress.say(f"{tag}: {step.notebook} FAILED ({failure['ename']}: {failure['evalue'][:200]})")
                    break
                done += 1
                progress.update()
                progress.say(f"{tag}: {step.notebook} done in {fmt_seconds(wall[step.notebook])}")
            if failure is None and not (run_dir / RESULTS).is_file():
                failure = {"backbone": run.backbone, "notebook": BACKBONE_NOTEBOOKS[-1], "ename": "MissingResults",
                           "evalue": f"{run_dir / RESULTS} was not written",
                           "output": f"{failed_dir}/{Path(run.steps[-1].output_path).name}"}
            if failure:
                _unlink(run_dir / RESULTS)    # results.csv only ever comes from a successful run
                progress.update(len(run.steps) - done)
            total = time.perf_counter() - t_run
            write_json(run_dir / RUN_JSON, {
                "backbone": run.backbone, "runset": run.runset, "status": "failed" if failure else "ok",
                "fingerprint": fp, "parameters": parameters, "inputs": inputs, "attrboost_version": version,
                "lib_sha256": lib, "cache_id": cache_id(create=True),
                "wall_s": {k: round(v, 3) for k, v in wall.items()}, "total_wall_s": round(total, 3),
                "finished": _now(), "failure": failure})
            if failure:
                swap.rollback()
                kept = (run_dir / RUN_JSON).is_file()
                failures.append(failure)
                progress.say(f"{tag}: failed; its notebooks are in {failed_dir}/"
                             + ("; the previous results are kept" if kept else ""))
                rows.append((run.backbone, "failed", fmt_seconds(total), f"{_failure_note(failure)}; see {failed_dir}/"
                             + ("; previous results kept" if kept else "")))
            else:
                swap.commit()
                rows.append((run.backbone, "ok", fmt_seconds(total), ""))

    # the run set: every backbone with a successful run under the run-set parameters, not only this call's
    present = finished_runs(runset_dir)
    members = [b for b, p in present.items() if current is None or p == current]
    if args.figures_only:
        absent = [b for b in args.backbones if b not in members]
        if absent:
            print(f"no successful run for {absent} under {runset_dir}; figures use {members}", flush=True)
    if not members:
        print(f"no successful backbone in {runset_dir}: 05 not run; the figures are left as they were")
        rows.append((FIGURES_NOTEBOOK, "not run", "-", "no successful backbone"))
        progress.update(1 + (beyond is not None))
        _write_failures(runset_dir, failures)
        return rows, failures, skipped

    write_aggregate(runset_dir, aggregate(runset_dir, members))
    # 05 depends on the notebook, its parameters, the backbone runs it reads and their aggregate
    runs_fp = {b: (read_json(runset_dir / b / RUN_JSON) or {}).get("fingerprint") for b in members}
    inputs = {fig.input_path: nb_hashes[fig.input_path], RESULTS: file_sha256(runset_dir / RESULTS)}
    fig_fp = run_fingerprint(dict(fig.parameters, runs=runs_fp), inputs, version, lib)
    info = read_json(runset_dir / RUN_JSON) or {}
    fig_ok = (not args.force and info.get("figures_status") == "ok" and info.get("figures_fingerprint") == fig_fp
              and Path(fig.output_path).is_file() and figs_dir.is_dir())
    tag = f"[figures] {runset}"
    fig_wall, fig_note = None, ""
    if fig_ok:
        progress.say(f"{tag}: {FIGURES_NOTEBOOK}: up to date (skipped)")
        fig_status = "up to date"
    else:
        progress.say(f"{tag}: {FIGURES_NOTEBOOK} ...")
        t = time.perf_counter()
        with Swap([figs_dir, fig.output_path], copy=[figs_dir]) as swap:
            try:
                fig_wall = _execute_step(execute, fig, root)
                fig_status = "ok"
                swap.commit()
                progress.say(f"{tag}: {FIGURES_NOTEBOOK} done in {fmt_seconds(fig_wall)}")
            except Exception as exc:  # noqa: BLE001
                fig_wall = time.perf_counter() - t
                fig_status = "failed"
                kept = swap.rollback()
                failure = {"backbone": None, "notebook": FIGURES_NOTEBOOK, **failure_info(exc),
                           "output": str(side_path(fig.output_path, FAILED))}
                failures.append(failure)
                fig_note = f"{_failure_note(failure)}; see {', '.join(map(str, kept))}; previous figures kept"
                progress.say(f"{tag}: {FIGURES_NOTEBOOK} FAILED ({failure['ename']}: {failure['evalue'][:200]})")
    progress.update()
    rows.append((FIGURES_NOTEBOOK, fig_status, fmt_seconds(fig_wall) if fig_wall is not None else "-", fig_note))
    if not fig_ok:
        info.update({"runset": runset, "parameters": current, "backbones": members, "figures_status": fig_status,
                     "figures_fingerprint": fig_fp, "figures_parameters": fig.parameters,
                     "figures_wall_s": round(fig_wall, 3), "finished": _now()})
        write_json(runset_dir / RUN_JSON, info)
    if beyond is not None:
        status, wall, failure, note = _run_beyond(execute, beyond, args, runset_dir, figs_dir, version, lib,
                                                  nb_hashes, progress, root)
        if failure:
            failures.append(failure)
        rows.append((BEYOND_NOTEBOOK, status, fmt_seconds(wall) if wall is not None else "-", note))
    _write_failures(runset_dir, failures)
    return rows, failures, skipped


def _write_failures(runset_dir: Path, failures: list[dict]) -> None:
    if failures:
        write_json(runset_dir / FAILURES_JSON, failures)
    else:
        _unlink(runset_dir / FAILURES_JSON)


def _run_beyond(execute, step: Step, args, runset_dir: Path, figs_dir: Path, version: str, lib: str,
                nb_hashes: dict, progress, root: Path):
    """Run 06 unless up to date; it needs a successful run of its backbone in the run set. beyond.csv,
    06's notebook and the figures stay as they were unless it succeeds.
    Returns (status, wall seconds or None, failure or None, summary note)."""
    bb = args.beyond_backbone
    tag = f"[beyond] {args.runset}"
    progress.update()
    if bb not in successful_backbones(runset_dir, [bb]):
        progress.say(f"{tag}: {BEYOND_NOTEBOOK} not run: no successful {bb} run in {runset_dir} "
                     f"(add it to --backbones, or pick another with --beyond-backbone)")
        return f"not run (no {bb} run)", None, None, ""
    bb_fp = (read_json(runset_dir / bb / RUN_JSON) or {}).get("fingerprint")
    inputs = {step.input_path: nb_hashes[step.input_path]}
    weights = args.weights.get(bb)
    if weights:
        inputs[weights] = file_sha256(weights)
    fp = run_fingerprint(dict(step.parameters, backbone_run=bb_fp), inputs, version, lib)
    info = read_json(runset_dir / RUN_JSON) or {}
    beyond_csv = runset_dir / BEYOND_RESULTS
    if (not args.force and info.get("beyond_status") == "ok" and info.get("beyond_fingerprint") == fp
            and Path(step.output_path).is_file() and beyond_csv.is_file()):
        progress.say(f"{tag}: {BEYOND_NOTEBOOK}: up to date (skipped)")
        return "up to date", None, None, ""
    progress.say(f"{tag}: {BEYOND_NOTEBOOK} ({bb}) ...")
    t = time.perf_counter()
    failure, note = None, ""
    with Swap([beyond_csv, step.output_path, figs_dir], copy=[figs_dir]) as swap:   # old beyond.csv waits aside
        try:
            wall = _execute_step(execute, step, root)
            if not beyond_csv.is_file():
                raise RuntimeError(f"{beyond_csv} was not written")
            swap.commit()
            progress.say(f"{tag}: {BEYOND_NOTEBOOK} done in {fmt_seconds(wall)}")
        except Exception as exc:  # noqa: BLE001
            wall = time.perf_counter() - t
            kept = swap.rollback()
            failure = {"backbone": bb, "notebook": BEYOND_NOTEBOOK, **failure_info(exc),
                       "output": str(side_path(step.output_path, FAILED))}
            note = (f"{_failure_note(failure)}; see {', '.join(map(str, kept))}"
                    + (f"; previous {BEYOND_RESULTS} kept" if beyond_csv.is_file() else ""))
            progress.say(f"{tag}: {BEYOND_NOTEBOOK} FAILED ({failure['ename']}: {failure['evalue'][:200]})")
    status = "failed" if failure else "ok"
    info = read_json(runset_dir / RUN_JSON) or {}
    info.update({"beyond_status": status, "beyond_fingerprint": fp, "beyond_parameters": step.parameters,
                 "beyond_wall_s": round(wall, 3)})
    write_json(runset_dir / RUN_JSON, info)
    return status, wall, failure, note


# ----------------------------------------------------------------------------- reproduce
def reproduce(args: argparse.Namespace, execute: Execute | None = None) -> int:
    """Re-execute the committed run set ``<root>/papermill_runs/<runset>`` with its own run-set parameters,
    backbones, weights and 06 backbone into ``args.out`` (``runs/reproduce/...``), then print, per results
    table, how its rows compare with the committed ones (:func:`compare_results`)."""
    committed = Path(PUBLISH_OUT) / args.runset
    existing = finished_runs(committed)
    variants = {json.dumps(p, sort_keys=True) for p in existing.values()}
    if len(variants) != 1:
        print(f"error: --reproduce: {committed} has " + ("no successful run" if not variants else
              "runs with different run-set parameters") + "; nothing to reproduce", file=sys.stderr)
        return 2
    params = next(iter(existing.values()))
    for k in RUNSET_KEYS:
        setattr(args, k, params[k])
    summary = read_json(committed / RUN_JSON) or {}
    args.backbones = _backbone_order(existing)
    args.weights = {b: w for b in existing
                    if (w := ((read_json(committed / b / RUN_JSON) or {}).get("parameters", {})
                              .get("02_embeddings", {}).get("weights")))}
    absent = {b: w for b, w in args.weights.items() if not Path(w).is_file()}
    if absent:
        print(f"error: --reproduce: {committed} used local weights files that are not here: {absent}", file=sys.stderr)
        return 2
    args.no_beyond = summary.get("beyond_status") != "ok" or not (committed / BEYOND_RESULTS).is_file()
    if not args.no_beyond:
        args.beyond_backbone = summary["beyond_parameters"]["backbone"]
    print(f"reproducing {committed} ({', '.join(args.backbones)}; "
          + ", ".join(f"{k}={params[k]}" for k in RUNSET_KEYS) + f") into {args.out}/{args.runset}", flush=True)
    code = run_study(args, execute)
    print(f"\nreproduction of run set {args.runset} ({committed} vs {args.out}/{args.runset}):")
    for name in (RESULTS, BEYOND_RESULTS):
        old, new = committed / name, Path(args.out) / args.runset / name
        if old.is_file() and new.is_file():
            try:
                print("  " + format_comparison(name, compare_results(pd.read_csv(old), pd.read_csv(new))))
            except ValueError as exc:
                print(f"  {name}: cannot compare: {exc}")
        elif old.is_file():
            print(f"  {name}: not reproduced ({new} was not written)")
    return code


def main(argv: Sequence[str] | None = None, *, execute: Execute | None = None,
         root: str | os.PathLike | None = None) -> int:
    """CLI entry point; ``execute`` (default papermill) and ``root`` (default the repo) are for tests."""
    args = parse_args(argv, root)
    with contextlib.chdir(args.root):  # papermill resolves the relative in/out paths from here
        if args.refresh_notebooks:
            return refresh_notebooks(execute or papermill_execute, args.root)
        unknown = unknown_parameters(args)
        if unknown:
            print(f"error: {unknown}", file=sys.stderr)
            return 2
        if args.reproduce:
            return reproduce(args, execute)
        return run_study(args, execute)


if __name__ == "__main__":
    sys.exit(main())

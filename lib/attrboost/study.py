"""Run the whole study: the six notebooks, per backbone, with papermill.

    python -m attrboost.study                                  # synthetic data, 4 backbones -> runs/
    python -m attrboost.study --publish                        # the same, into the committed papermill_runs/, figures/
    python -m attrboost.study --dataset fashion --split by_group
    python -m attrboost.study --dataset csv --csv my.csv --images my/images --attributes colour,shape \
        --n-groups 20 --per-group 10                           # a catalogue of your own
    python -m attrboost.study --figures-only                   # only 05 on the existing runs
    python -m attrboost.study --reproduce                      # re-execute the committed run set into runs/reproduce/
    python -m attrboost.study --refresh-notebooks              # re-execute notebooks/0*.ipynb (01-07) in place

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

Three kinds of job, each run by one step runner (:func:`run_job`): a backbone's notebooks 01..04, the run
set's 05, and 06 for ``--beyond-backbone`` (default efficientnet_lite0) once that backbone has a successful
run in the run set (``--no-beyond`` skips it). A job is skipped ("up to date") when its record in run.json
says ``ok`` with a matching fingerprint and its outputs (e.g. ``results.csv``) exist. The fingerprint covers
the notebook parameters, the *code* of the notebooks (cell types and sources, so re-executing a notebook
in place, which only changes its outputs, does not invalidate runs), the attrboost version, the lib
sources and any local weights file. A failing notebook fails its job only: the other backbones still run,
05 still runs if the run set has at least one successful backbone, and the exit status is 1.

Never lose a result. A run set has run-set parameters (dataset, data_dir, split, n_groups, per_group,
seeds, tasks); its aggregate ``results.csv`` holds every backbone with a successful run under those
parameters, not only the backbones of the current call. A call with other run-set parameters than the
finished runs in the run set is refused before any work, naming the differences; ``--force`` replaces the
run set, ``--runset NAME`` (or another ``--out``) writes a separate one. Every job keeps what it would
replace until it has succeeded: a backbone's run directory is moved aside to ``<backbone>.previous``
(deleted on success; on failure the new attempt goes to ``<backbone>.failed/`` for debugging and the
previous run comes back); 05 and 06 do the same with their notebook, ``beyond.csv`` and the figures
directory (copied aside, as both write into it); a forced replacement does it with the whole run set and
figures directories (kept only when every job succeeded). The notebooks thus run at their final paths,
so the committed notebooks name no temporary directory. A run killed outright leaves ``*.previous``
behind; the next call restores it first. ``*.previous`` and ``*.failed`` are git-ignored.

Every path handed to papermill or to a notebook is relative to the repository root (papermill and
the kernels run there), so executed notebooks that get committed contain no machine-specific paths.

Each backbone's ``run.json`` records the id of the cache it was computed with (``cache_id`` in the cache
directory, ``$ATTRBOOST_CACHE`` or ``.cache``). When runs are skipped as up to date but were computed with
another cache (a fresh clone: the committed results were computed elsewhere), one line says so and how
to re-execute them.

The code, in order: :func:`parse_args` validates the command line into a frozen :class:`StudyConfig`;
:func:`plan` lists the notebook :class:`Step` s; :func:`run_study` checks the run set's parameters
(:func:`check_runset`) and runs each :class:`Job` (:func:`backbone_job`, :func:`figures_job`,
:func:`beyond_job`) with :func:`run_job` under a :class:`Swap`; :func:`report` prints the summary.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd
from jupyter_client.manager import AsyncKernelManager

from . import __version__
from . import params as spec
from .backbones import list_backbones
from .cache import ENV_CACHE, atomic_write, cache_dir, fingerprint, repo_root, write_json
from .data.catalogue import DATASETS
from .data.sampling import SPLITS
from .heads import TASKS

DEFAULT_BACKBONES = ("pca", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BACKBONE_NOTEBOOKS = ("01_data", "02_embeddings", "03_train", "04_evaluate")
FIGURES_NOTEBOOK = "05_figures"
BEYOND_NOTEBOOK = "06_beyond"
NOTEBOOKS = BACKBONE_NOTEBOOKS + (FIGURES_NOTEBOOK, BEYOND_NOTEBOOK)
SEARCH_NOTEBOOK = "07_search"  # not part of a run set: a whole catalogue searched (committed, refreshed)
COMMITTED_NOTEBOOKS = NOTEBOOKS + (SEARCH_NOTEBOOK,)
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
#: --jobs default: two backbones at a time where there are two CPUs
DEFAULT_JOBS = min(2, os.cpu_count() or 1)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PUBLISH_OUT, PUBLISH_FIGURES = "papermill_runs", "figures"
REPRODUCE_OUT, REPRODUCE_FIGURES = "runs/reproduce/papermill_runs", "runs/reproduce/figures"
# the parameters a run set's backbones share: results of different ones never go into one run set
RUNSET_KEYS = ("dataset", "data_dir", "split", "n_groups", "per_group", "seeds", "tasks")
CSV_KEYS = spec.CSV  # ... and, for the csv dataset, its file, images and columns
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
class StudyConfig:
    """The validated command line (:func:`parse_args`). Paths are POSIX strings relative to ``root``
    (absolute outside it); ``backbones``, ``tasks`` and ``seeds`` are de-duplicated lists."""

    root: Path
    dataset: str
    data_dir: str | None
    csv: str | None              # dataset "csv" only (None otherwise): the catalogue file, ...
    images: str | None           # ... its image folder (None: the CSV's folder), ...
    attributes: list[str] | None  # ... its attribute columns ...
    id_column: str | None        # ... its id column ...
    text_column: str | None      # ... and its product-name column (None: no tags)
    split: str
    n_groups: int
    per_group: int
    seeds: list[int]
    tasks: list[str]
    backbones: list[str]
    weights: dict[str, str]      # backbone -> local weights file
    device: str
    batch_size: int
    out: str                     # run sets go to <out>/<runset>, their figures to <figures_dir>/<runset>
    figures_dir: str
    runset: str
    publish: bool
    reproduce: bool
    force: bool
    figures_only: bool
    beyond_backbone: str
    no_beyond: bool
    refresh_notebooks: bool
    jobs: int = 1                # backbones whose notebooks run at the same time

    @property
    def runset_dir(self) -> str:
        return f"{self.out}/{self.runset}"

    @property
    def runset_figures(self) -> str:
        return f"{self.figures_dir}/{self.runset}"

    def runset_parameters(self) -> dict:
        """The run-set parameters (:data:`RUNSET_KEYS`, and :data:`CSV_KEYS` for ``--dataset csv``), as
        :func:`runset_parameters` reads them back."""
        return {k: getattr(self, k) for k in _runset_keys(self.dataset)}

    def data_parameters(self) -> dict:
        """The data parameters every notebook but 05 takes; the csv options only for ``--dataset csv``, so
        the parameters (and fingerprints) of the other data sets' runs are those they always were."""
        data = dict(dataset=self.dataset, data_dir=self.data_dir)
        if self.dataset == "csv":
            data.update({k: getattr(self, k) for k in spec.CSV})
        return dict(data, n_groups=self.n_groups, per_group=self.per_group, split=self.split)


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


@dataclass(frozen=True)
class Plan:
    """Everything one call executes, in order: the backbones' runs, then 05, then 06 (None: not run)."""

    runs: list[Run]
    figures: Step
    beyond: Step | None

    @property
    def steps(self) -> list[Step]:
        return [s for r in self.runs for s in r.steps] + [self.figures] + ([self.beyond] if self.beyond else [])


def known_backbones() -> tuple[str, ...]:
    """The registered backbones (:func:`attrboost.backbones.list_backbones`), in the study's order."""
    return tuple(list_backbones())


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


def _step(notebook: str, out_dir: str, parameters: dict) -> Step:
    return Step(notebook, f"notebooks/{notebook}.ipynb", f"{out_dir}/{notebook}.ipynb", parameters)


def plan_runs(cfg: StudyConfig) -> list[Run]:
    """The per-backbone runs (notebooks 01..04, in order)."""
    data = cfg.data_parameters()
    runs = []
    for backbone in cfg.backbones:
        run_dir = f"{cfg.runset_dir}/{backbone}"
        model = dict(backbone=backbone, weights=cfg.weights.get(backbone))
        params = {
            "01_data": dict(data, seed=cfg.seeds[0]),
            "02_embeddings": dict(data, seeds=list(cfg.seeds), **model, device=cfg.device, batch_size=cfg.batch_size),
            "03_train": dict(data, **model, tasks=list(cfg.tasks), seed=cfg.seeds[0], device=cfg.device),
            "04_evaluate": dict(data, **model, tasks=list(cfg.tasks), seeds=list(cfg.seeds), results_dir=run_dir,
                                device=cfg.device),
        }
        steps = tuple(_step(nb, run_dir, params[nb]) for nb in BACKBONE_NOTEBOOKS)
        runs.append(Run(backbone, cfg.runset, run_dir, steps))
    return runs


def plan_figures(cfg: StudyConfig) -> Step:
    """The 05 step of the run set: it reads ``<out>/<runset>`` and writes ``<figures>/<runset>``."""
    # 05 parses dataset and split from its `dataset` parameter; the run set's own name may be anything
    csv = {k: getattr(cfg, k) for k in spec.CSV} if cfg.dataset == "csv" else {}
    return _step(FIGURES_NOTEBOOK, cfg.runset_dir, dict(dataset=runset_name(cfg.dataset, cfg.split),
                                                       runs_dir=cfg.runset_dir, figures_dir=cfg.runset_figures,
                                                       data_dir=cfg.data_dir, **csv))


def plan_beyond(cfg: StudyConfig) -> Step:
    """The 06 step of the run set (baselines, label budget, ablation) for ``cfg.beyond_backbone``:
    it writes ``<out>/<runset>/beyond.csv`` and ``beyond_*.png`` under ``<figures>/<runset>``."""
    bb = cfg.beyond_backbone
    return _step(BEYOND_NOTEBOOK, cfg.runset_dir, dict(
        **cfg.data_parameters(), backbone=bb, weights=cfg.weights.get(bb), seeds=list(cfg.seeds), results_dir=cfg.runset_dir,
        figures_dir=cfg.runset_figures, device=cfg.device))


def plan(cfg: StudyConfig) -> Plan:
    return Plan([] if cfg.figures_only else plan_runs(cfg), plan_figures(cfg),
                None if cfg.figures_only or cfg.no_beyond else plan_beyond(cfg))


# ----------------------------------------------------------------------------- fingerprints
def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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


def input_hashes(steps: Iterable[Step], files: dict[str, str | os.PathLike] | None = None) -> dict[str, str]:
    """The hashes of a job's inputs: its notebooks' code (:func:`notebook_hash`) and ``files`` (name -> path)."""
    return {**{s.input_path: notebook_hash(s.input_path) for s in steps},
            **{name: file_sha256(path) for name, path in (files or {}).items()}}


def read_json(path: str | os.PathLike):
    """The parsed JSON file, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


def _runset_keys(dataset: str | None) -> tuple[str, ...]:
    return RUNSET_KEYS + (CSV_KEYS if dataset == "csv" else ())


def runset_parameters(info: dict) -> dict:
    """The run-set parameters (:data:`RUNSET_KEYS`, and :data:`CSV_KEYS` for the csv dataset) of a backbone's
    parsed run.json (from its 04 step)."""
    p = ((info or {}).get("parameters") or {}).get("04_evaluate") or {}
    return {k: p.get(k) for k in _runset_keys(p.get("dataset"))}


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


# ----------------------------------------------------------------------------- executing a notebook
def quiet_kernel() -> dict:
    """nbclient options (for :func:`papermill.execute_notebook`) that keep a successful run quiet
    without hiding errors, each by removing a message's cause:

    * ``Kernel is running over TCP without encryption``: the kernel manager provisions CurveZMQ keys
      (jupyter_client's ``transport_encryption="auto"``; ipykernel supports ``curve``);
    * ``KeyboardInterrupt caught in kernel``: jupyter_client interrupts (SIGINT) every kernel it shuts
      down, and papermill shuts down right after the reply to its last ``kernel_info`` request, while the
      kernel is still in that request's handler. :class:`BatchKernelManager` skips that interrupt: papermill
      shuts a kernel down once its cells have finished or one failed, so it is idle; a busy one (Ctrl-C)
      still gets the shutdown request and is killed after ``shutdown_wait_time`` (5 s).
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


def _execute_step(execute: Execute, step: Step, root: Path) -> None:
    Path(step.output_path).parent.mkdir(parents=True, exist_ok=True)
    execute(step.input_path, step.output_path, parameters=dict(step.parameters), cwd=str(root),
            kernel_name=KERNEL, progress_bar=False)


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


def missing_notebooks(paths: Iterable[str]) -> list[str]:
    return [p for p in dict.fromkeys(paths) if not Path(p).is_file()]


class _Progress:
    """Prints progress lines (through tqdm.write, so an optional bar stays intact) with elapsed time."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.t0, self.write = time.perf_counter(), tqdm.write
        self.bar = tqdm(total=total, unit="nb", desc="study", disable=None, leave=False)
        self.update, self.close = self.bar.update, self.bar.close

    def say(self, text: str) -> None:
        self.write(f"{text}  [elapsed {fmt_seconds(self.elapsed)}]")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


# ----------------------------------------------------------------------------- the step runner
@dataclass(frozen=True)
class Job:
    """One unit :func:`run_job` skips when up to date, or executes and records: a backbone's notebooks
    01..04 (:func:`backbone_job`), the run set's 05 (:func:`figures_job`) or its 06 (:func:`beyond_job`)."""

    name: str                      # its summary row: the backbone, "05_figures" or "06_beyond"
    tag: str                       # its progress lines' prefix, e.g. "[2/4 backbones] pca"
    backbone: str | None           # failures.json's "backbone"
    steps: tuple[Step, ...]
    fingerprint: str               # of its parameters and inputs (:func:`input_hashes`)
    run_json: Path                 # where it is recorded: "<prefix>status" and "<prefix>fingerprint", ...
    prefix: str                    # ... "" (a backbone's own run.json), "figures_" or "beyond_" (the run set's)
    head: dict                     # ... after these entries ...
    record: Callable[[dict, float, dict | None], dict]  # ... and (wall s per notebook, total, failure) -> these
    protect: tuple[Path, ...]      # kept aside (moved) until it succeeded ...
    copy: tuple[Path, ...]         # ... or copied, for those it updates in place
    results: Path | None           # what a success must write; never kept from a failed attempt
    expect: tuple[Path, ...]       # what must exist for an "ok" record to count as up to date
    previous: tuple[Path, str]     # after a failure, "previous <what> kept" when that path exists

    @property
    def label(self) -> str:
        return self.tag if len(self.steps) > 1 else f"{self.tag}: {self.steps[0].notebook}"

    def up_to_date(self) -> bool:
        info = read_json(self.run_json)
        return (isinstance(info, dict) and info.get(f"{self.prefix}status") == "ok"
                and info.get(f"{self.prefix}fingerprint") == self.fingerprint and all(p.exists() for p in self.expect))


@dataclass(frozen=True)
class Outcome:
    status: str                    # "ok", "failed" or "up to date"
    row: tuple[str, str, str, str]  # for the summary: name, status, wall time, note
    failure: dict | None = None


def run_job(job: Job, execute: Execute, root: Path, progress: _Progress, force: bool = False) -> Outcome:
    """Skip ``job`` when it is up to date (unless ``force``); else execute its notebooks in order (the first
    failure stops it), check it wrote its results, record it in its run.json, and keep what it replaced
    unless it succeeded (:class:`Swap`)."""
    if not force and job.up_to_date():
        progress.update(len(job.steps))
        progress.say(f"{job.label}: up to date (skipped)")
        return Outcome("up to date", (job.name, "up to date", "-", ""))
    wall, failure, t0 = {}, None, time.perf_counter()
    with Swap(job.protect, copy=job.copy) as swap:
        for i, step in enumerate(job.steps):
            progress.say(f"{job.tag}: {step.notebook} ...")
            t = time.perf_counter()
            try:
                _execute_step(execute, step, root)
                if job.results and step is job.steps[-1] and not job.results.is_file():
                    raise RuntimeError(f"{job.results} was not written")
            except Exception as exc:  # noqa: BLE001 - a failure stays with its job
                wall[step.notebook] = time.perf_counter() - t
                failure = {"backbone": job.backbone, "notebook": step.notebook, **failure_info(exc),
                           "output": str(swap.failed_path(step.output_path))}
                progress.update(len(job.steps) - i)
                progress.say(f"{job.tag}: {step.notebook} FAILED ({failure['ename']}: {failure['evalue'][:200]})")
                break
            wall[step.notebook] = time.perf_counter() - t
            progress.update()
            progress.say(f"{job.tag}: {step.notebook} done in {fmt_seconds(wall[step.notebook])}")
        total, status = time.perf_counter() - t0, "failed" if failure else "ok"
        if failure and job.results:
            job.results.unlink(missing_ok=True)
        info = read_json(job.run_json) or {}
        info.update({**job.head, f"{job.prefix}status": status, f"{job.prefix}fingerprint": job.fingerprint,
                     **job.record(wall, total, failure)})
        write_json(job.run_json, info)
        if not failure:
            swap.commit()
            return Outcome(status, (job.name, status, fmt_seconds(total), ""))
        kept = swap.rollback()
    where = ", ".join(f"{p}/" if p.is_dir() else str(p) for p in kept)
    note = f"; see {where}" + (f"; previous {job.previous[1]} kept" if job.previous[0].exists() else "")
    progress.say(f"{job.label}: failed{note}")
    return Outcome(status, (job.name, status, fmt_seconds(total), _failure_note(failure) + note), failure)


def _failure_note(failure: dict) -> str:
    return f"{failure['notebook']}: {failure['ename']}: {failure['evalue'][:80]}"


def backbone_job(run: Run, tag: str, weights: str | None, lib: str) -> Job:
    """Notebooks 01..04 of a backbone, recorded in its own run.json; its run directory is kept aside."""
    run_dir = Path(run.run_dir)
    parameters = {s.notebook: s.parameters for s in run.steps}
    inputs = input_hashes(run.steps, {weights: weights} if weights else None)
    return Job(run.backbone, tag, run.backbone, run.steps, fingerprint(parameters, inputs, __version__, lib),
               run_dir / RUN_JSON, "", {"backbone": run.backbone, "runset": run.runset},
               lambda wall, total, failure: {
                   "parameters": parameters, "inputs": inputs, "attrboost_version": __version__, "lib_sha256": lib,
                   "cache_id": cache_id(create=True), "wall_s": {k: round(v, 3) for k, v in wall.items()},
                   "total_wall_s": round(total, 3), "finished": _now(), "failure": failure},
               protect=(run_dir,), copy=(), results=run_dir / RESULTS, expect=(run_dir / RESULTS,),
               previous=(run_dir / RUN_JSON, "results"))


def figures_job(step: Step, runset: str, current: dict | None, members: list[str], lib: str) -> Job:
    """05 on the run set's ``members``; it depends on the notebook, its parameters, the backbone runs it
    reads and their aggregate results.csv. Its notebook and the figures directory are kept aside."""
    runset_dir, figures = Path(step.parameters["runs_dir"]), Path(step.parameters["figures_dir"])
    runs = {b: (read_json(runset_dir / b / RUN_JSON) or {}).get("fingerprint") for b in members}
    inputs = input_hashes([step], {RESULTS: runset_dir / RESULTS})
    out = Path(step.output_path)
    return Job(FIGURES_NOTEBOOK, f"[figures] {runset}", None, (step,),
               fingerprint(dict(step.parameters, runs=runs), inputs, __version__, lib), runset_dir / RUN_JSON,
               "figures_", {"runset": runset, "parameters": current, "backbones": members},
               lambda wall, total, failure: {"figures_parameters": step.parameters, "figures_wall_s": round(total, 3),
                                             "finished": _now()},
               protect=(figures, out), copy=(figures,), results=None, expect=(out, figures),
               previous=(figures, "figures"))


def beyond_job(step: Step, runset: str, lib: str) -> Job:
    """06 for its backbone, whose successful run it depends on. beyond.csv, its notebook and the figures
    directory are kept aside."""
    runset_dir, figures = Path(step.parameters["results_dir"]), Path(step.parameters["figures_dir"])
    bb, weights = step.parameters["backbone"], step.parameters["weights"]
    bb_run = (read_json(runset_dir / bb / RUN_JSON) or {}).get("fingerprint")
    inputs = input_hashes([step], {weights: weights} if weights else None)
    out, csv = Path(step.output_path), runset_dir / BEYOND_RESULTS
    return Job(BEYOND_NOTEBOOK, f"[beyond] {runset} ({bb})", bb, (step,),
               fingerprint(dict(step.parameters, backbone_run=bb_run), inputs, __version__, lib), runset_dir / RUN_JSON,
               "beyond_", {}, lambda wall, total, failure: {"beyond_parameters": step.parameters,
                                                             "beyond_wall_s": round(total, 3)},
               protect=(csv, out, figures), copy=(figures,), results=csv, expect=(out, csv),
               previous=(csv, BEYOND_RESULTS))


def run_study(cfg: StudyConfig, execute: Execute | None = None) -> int:
    """Run the plan for ``cfg`` (the current directory must be ``cfg.root``). Returns the exit status."""
    execute = execute or papermill_execute
    p = plan(cfg)
    runset_dir, figures = Path(cfg.runset_dir), Path(cfg.runset_figures)
    missing = missing_notebooks(s.input_path for s in p.steps)
    if missing:
        print(f"error: missing notebooks {missing} under {cfg.root}", file=sys.stderr)
        return 2
    for line in recover(runset_dir, figures):
        print(line, flush=True)
    current, differing, error = check_runset(cfg)
    if error:
        print(error, file=sys.stderr)
        return 2

    whole = Swap([runset_dir, figures], tag=REPLACED) if differing else None
    if whole:
        print(f"replacing run set {cfg.runset} ({runset_dir}, {figures}) because of --force: "
              + "; ".join(parameter_changes(next(iter(differing.values())), current))
              + f". The old one is kept as {side_path(runset_dir, REPLACED)} until every step of the new one "
                "has succeeded.", flush=True)
    progress = _Progress(total=len(p.steps))
    with whole or contextlib.nullcontext():
        rows, failures, skipped = _run_runset(cfg, execute, p, current, progress)
        progress.close()
        if whole and failures:
            kept = whole.rollback()
            print(f"\nthe forced replacement of run set {cfg.runset} failed: the old run set is back in place; "
                  f"the new, incomplete one is in {', '.join(map(str, kept))}", flush=True)
            failures_at = side_path(runset_dir, FAILED) / FAILURES_JSON
        else:
            if whole:
                whole.commit()
            failures_at = runset_dir / FAILURES_JSON
    print(f"\n{_summary(rows)}")
    if failures:
        print(f"{len(failures)} failure(s), details in {failures_at}")
    table = report(cfg, skipped)
    print(f"total wall time {fmt_seconds(progress.elapsed)}", flush=True)
    return 1 if failures or table.empty else 0


@contextlib.contextmanager
def kernel_threads(n: int):
    """Kernels started in this block use ``n`` BLAS / OpenMP / torch threads (:data:`THREAD_ENV`; their
    results do not depend on it: ``tests/test_determinism.py``), so that notebooks running side by side do not
    oversubscribe the cores (measured: 02's 2-D PCA plot took 17 s instead of 3 with two kernels of 2 threads
    on 2 cores). A variable the user set is left alone."""
    old = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update({k: str(n) for k, v in old.items() if v is None})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)


def side_by_side(n: int, queue: list, after: Callable, run: Callable) -> dict:
    """Run ``queue``'s ``(key, job)`` pairs on ``n`` threads, first come first served; ``after(key, outcome)``
    may return another ``(key, job)``, which goes to the front. Returns ``{key: outcome}``. A thread that
    finds the queue empty stops: a job added later is run by the thread that finished its predecessor."""
    import threading
    from collections import deque

    pending, lock, done = deque(queue), threading.Lock(), {}

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                key, job = pending.popleft()
            done[key] = outcome = run(job)
            nxt = after(key, outcome)
            if nxt is not None:
                with lock:
                    pending.appendleft(nxt)

    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="study") as pool:
        for f in [pool.submit(worker) for _ in range(n)]:
            f.result()
    return done


def _run_runset(cfg: StudyConfig, execute: Execute, p: Plan, current: dict | None, progress: _Progress):
    """Run each backbone's job, then 05 and 06 on the run set (with ``--jobs`` > 1, 06 runs beside the other
    backbones as soon as its own backbone is done; 05 always runs last and alone). Returns (summary rows, failures,
    backbones skipped as up to date)."""
    runset_dir, lib = Path(cfg.runset_dir), lib_hash()
    rows, failures, skipped = [], [], []

    def run(job: Job) -> Outcome:
        outcome = run_job(job, execute, cfg.root, progress, cfg.force)
        rows.append(outcome.row)
        failures.extend([outcome.failure] if outcome.failure else [])
        return outcome

    print(f"study {cfg.runset}: backbones {cfg.backbones}, tasks {cfg.tasks}, seeds {cfg.seeds} -> {runset_dir}",
          flush=True)
    jobs = [backbone_job(r, f"[{i}/{len(p.runs)} backbones] {r.backbone}", cfg.weights.get(r.backbone), lib)
            for i, r in enumerate(p.runs, 1)]
    n, bb = min(cfg.jobs, len(jobs)), cfg.beyond_backbone
    early_beyond = p.beyond is not None and bb in [r.backbone for r in p.runs]
    beyond_outcome = None  # 06's, when it ran beside the backbones

    def after(key, outcome):
        """06 goes ahead of the queue as soon as its backbone has succeeded (it reads only that backbone's
        features and heads, and writes beyond.csv, its notebook and beyond_*.png: nothing another backbone's
        notebooks touch); 05 shares the figures directory with it, so 05 waits for both."""
        if early_beyond and key != "beyond" and jobs[key].name == bb and outcome.status != "failed" \
                and bb in successful_backbones(runset_dir, [bb]):
            return "beyond", beyond_job(p.beyond, cfg.runset, lib)
        return None

    if n > 1:
        # backbones are independent (own run directory and run.json; the shared cache writes atomically and the
        # synthetic catalogue is generated race-safely); outcomes are recorded in plan order
        with kernel_threads(max(1, (os.cpu_count() or 1) // n)):
            done = side_by_side(n, list(enumerate(jobs)), after,
                                lambda job: run_job(job, execute, cfg.root, progress, cfg.force))
        outcomes = [done[i] for i in range(len(jobs))]
        beyond_outcome = done.get("beyond")
    else:
        outcomes = [run_job(job, execute, cfg.root, progress, cfg.force) for job in jobs]
    for r, outcome in zip(p.runs, outcomes):
        rows.append(outcome.row)
        failures.extend([outcome.failure] if outcome.failure else [])
        if outcome.status == "up to date":
            skipped.append(r.backbone)

    # the run set: every backbone with a successful run under the run-set parameters, not only this call's
    members = [b for b, params in finished_runs(runset_dir).items() if current is None or params == current]
    absent = [b for b in cfg.backbones if b not in members]
    if cfg.figures_only and absent:
        print(f"no successful run for {absent} under {runset_dir}; figures use {members}", flush=True)
    if not members:
        print(f"no successful backbone in {runset_dir}: 05 not run; the figures are left as they were")
        rows.append((FIGURES_NOTEBOOK, "not run", "-", "no successful backbone"))
        progress.update(1 + (p.beyond is not None))
    else:
        write_aggregate(runset_dir, aggregate(runset_dir, members))
        run(figures_job(p.figures, cfg.runset, current, members, lib))
        bb = cfg.beyond_backbone
        if p.beyond and bb not in successful_backbones(runset_dir, [bb]):
            progress.update()
            progress.say(f"[beyond] {cfg.runset}: {BEYOND_NOTEBOOK} not run: no successful {bb} run in {runset_dir} "
                         f"(add it to --backbones, or pick another with --beyond-backbone)")
            rows.append((BEYOND_NOTEBOOK, f"not run (no {bb} run)", "-", ""))
        elif beyond_outcome is not None:
            rows.append(beyond_outcome.row)
            failures.extend([beyond_outcome.failure] if beyond_outcome.failure else [])
        elif p.beyond:
            run(beyond_job(p.beyond, cfg.runset, lib))
    if failures:
        write_json(runset_dir / FAILURES_JSON, failures)
    else:
        (runset_dir / FAILURES_JSON).unlink(missing_ok=True)
    return rows, failures, skipped


# ----------------------------------------------------------------------------- summary and reproduce
def _backbone_order(names: Iterable[str]) -> list[str]:
    names, known = set(names), known_backbones()
    return [b for b in known if b in names] + sorted(names - set(known))


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


def _summary(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("backbone", "status", "wall", "note")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + ("  " + r[3] if r[3] else "")
             for r in [head, *rows]]
    return "\n".join(lines)


def report(cfg: StudyConfig, skipped: list[str]) -> pd.DataFrame:
    """Print the headline numbers, where things are, and whether the ``skipped`` (up to date) runs were
    computed elsewhere; returns the run set's results table."""
    runset_dir, figures = Path(cfg.runset_dir), Path(cfg.runset_figures)
    table = pd.read_csv(runset_dir / RESULTS) if (runset_dir / RESULTS).is_file() else pd.DataFrame()
    text = headline(table) if len(table) else ""
    if text:
        print(f"\nrun set {cfg.runset}: {runset_dir / RESULTS} ({len(table)} rows)\n{text}")
    if figures.is_dir():
        names = sorted(p.name for p in figures.iterdir() if p.is_file())
        print(f"figures and tables: {figures}/ ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")
    elsewhere = [b for b in skipped if not computed_here(read_json(runset_dir / b / RUN_JSON))]
    if elsewhere:
        print(f"note: the results of {', '.join(elsewhere)} were computed elsewhere (another machine or another "
              f"cache than {cache_dir()}), so nothing was re-executed here; to re-execute them: `make reproduce` "
              f"(into {REPRODUCE_OUT}/, compared with these) or `make study STUDY_ARGS=--force` "
              f"(replaces them), {COLD_TIME}")
    return table


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


def reproduce(cfg: StudyConfig, execute: Execute | None = None) -> int:
    """Re-execute the committed run set ``<root>/papermill_runs/<runset>`` with its own run-set parameters,
    backbones, weights and 06 backbone into ``cfg.out`` (``runs/reproduce/...``), then print, per results
    table, how its rows compare with the committed ones (:func:`compare_results`)."""
    committed = Path(PUBLISH_OUT) / cfg.runset
    existing = finished_runs(committed)
    variants = {json.dumps(p, sort_keys=True) for p in existing.values()}
    if len(variants) != 1:
        print(f"error: --reproduce: {committed} has " + ("no successful run" if not variants else
              "runs with different run-set parameters") + "; nothing to reproduce", file=sys.stderr)
        return 2
    params = next(iter(existing.values()))
    summary = read_json(committed / RUN_JSON) or {}
    weights = {b: w for b in existing
               if (w := ((read_json(committed / b / RUN_JSON) or {}).get("parameters", {})
                         .get("02_embeddings", {}).get("weights")))}
    absent = {b: w for b, w in weights.items() if not Path(w).is_file()}
    if absent:
        print(f"error: --reproduce: {committed} used local weights files that are not here: {absent}", file=sys.stderr)
        return 2
    no_beyond = summary.get("beyond_status") != "ok" or not (committed / BEYOND_RESULTS).is_file()
    cfg = replace(cfg, **params, backbones=_backbone_order(existing), weights=weights, no_beyond=no_beyond,
                  beyond_backbone=cfg.beyond_backbone if no_beyond else summary["beyond_parameters"]["backbone"])
    print(f"reproducing {committed} ({', '.join(cfg.backbones)}; "
          + ", ".join(f"{k}={params[k]}" for k in params) + f") into {cfg.runset_dir}", flush=True)
    code = run_study(cfg, execute)
    print(f"\nreproduction of run set {cfg.runset} ({committed} vs {cfg.runset_dir}):")
    for name in (RESULTS, BEYOND_RESULTS):
        old, new = committed / name, Path(cfg.runset_dir) / name
        if old.is_file() and new.is_file():
            try:
                print("  " + format_comparison(name, compare_results(pd.read_csv(old), pd.read_csv(new))))
            except ValueError as exc:
                print(f"  {name}: cannot compare: {exc}")
        elif old.is_file():
            print(f"  {name}: not reproduced ({new} was not written)")
    return code


# ----------------------------------------------------------------------------- CLI
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
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="--dataset csv: your catalogue, one row per image: an id column, the attribute columns "
                        "and optionally a product-name column")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="--dataset csv: the image folder, images at DIR/<id>.jpg (default: the CSV's folder)")
    p.add_argument("--attributes", default=None, metavar="A,B,...",
                   help="--dataset csv: the attribute columns (any number >= 1); a group is a full tuple of them")
    p.add_argument("--id-column", default="id", help="--dataset csv: the id column (default: %(default)s)")
    p.add_argument("--text-column", default=None,
                   help="--dataset csv: the product-name column that tags (Tasks 2 and 3) and the paper metric's "
                        "tokens come from (default: none; then run --tasks task1)")
    p.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES),
                   help="comma-separated backbones (default: %(default)s)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default: %(default)s)")
    p.add_argument("--seeds", default=",".join(map(str, spec.PARAMS["seeds"].default)),
                   help="comma-separated integer seeds (default: %(default)s)")
    p.add_argument("--n-groups", type=int, default=spec.PARAMS["n_groups"].default,
                   help="groups sampled (default: %(default)s)")
    p.add_argument("--per-group", type=int, default=spec.PARAMS["per_group"].default,
                   help="images per group (default: %(default)s)")
    p.add_argument("--split", default="random", choices=SPLITS, help="train/test split (default: %(default)s)")
    p.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                   help="local weights file for a backbone (repeatable)")
    p.add_argument("--device", default="auto",
                   help="device of feature extraction, heads and baselines (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="feature-extraction batch (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                   help="backbones whose notebooks 01..04 run at the same time, each in its own kernel; results are "
                        "the same for any value. 06 joins them as soon as its backbone is done; 05 follows alone (default: %(default)s = min(2, CPUs): a "
                        "notebook spends seconds in kernel start, imports and plots on one core)")
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


def _csv_list(text: str) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


def parse_args(argv: Sequence[str] | None = None, root: str | os.PathLike | None = None) -> StudyConfig:
    """Parse and validate the CLI into a :class:`StudyConfig` (lists de-duplicated, paths root-relative).

    Invalid values exit (status 2) with a message naming the option and the accepted values.
    """
    parser = build_parser()
    a = parser.parse_args(argv)
    root = Path(root).resolve() if root is not None else (repo_root() or Path.cwd()).resolve()
    known = known_backbones()
    # every value at once, with the notebooks' own checks (attrboost.params), before any work
    cli = dict(dataset=a.dataset, split=a.split, backbones=_csv_list(a.backbones), tasks=_csv_list(a.tasks),
               seeds=a.seeds, n_groups=a.n_groups, per_group=a.per_group, batch_size=a.batch_size, device=a.device,
               data_dir=a.data_dir, out=a.out, figures_dir=a.figures_dir, csv=a.csv, images=a.images,
               attributes=a.attributes, id_column=a.id_column, text_column=a.text_column)
    cli = {k: v for k, v in cli.items() if not (k in ("out", "figures_dir") and v is None)}  # None: the defaults
    if a.dataset != "csv":
        cli.pop("id_column")  # a default: nothing given
    try:
        checked = spec.validate(cli, labels={k: "--" + k.replace("_", "-") for k in cli})
    except ValueError as e:
        parser.error(str(e))

    weights = {}
    for item in a.weights:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--weights: expected NAME=PATH, got {item!r}")
        if name not in known:
            parser.error(f"--weights: unknown backbone {name!r}; expected one of {list(known)}")
        if not Path(path).expanduser().is_file():
            parser.error(f"--weights: {name}={path}: no such file")
        weights[name] = rel_to_root(path, root)
    if a.jobs < 1:
        parser.error(f"--jobs: {a.jobs}: expected an integer >= 1")
    if a.beyond_backbone not in known:
        parser.error(f"--beyond-backbone: unknown backbone {a.beyond_backbone!r}; expected one of {list(known)}")
    runset = runset_name(a.dataset, a.split) if a.runset is None else a.runset
    if not RUNSET_NAME.fullmatch(runset):
        parser.error(f"--runset: {runset!r} is not a plain directory name; expected letters, digits, "
                     "'_' and '-' (no '.', '/' or spaces)")
    if a.publish and (a.out or a.figures_dir or a.reproduce):
        parser.error("--publish: it sets --out and --figures-dir to the committed directories; "
                     "do not combine it with --out, --figures-dir or --reproduce")
    if a.reproduce and (a.out or a.figures_dir or a.figures_only):
        parser.error(f"--reproduce: it writes to {REPRODUCE_OUT} and {REPRODUCE_FIGURES}; "
                     "do not combine it with --out, --figures-dir or --figures-only")
    out, figures = ((PUBLISH_OUT, PUBLISH_FIGURES) if a.publish else
                    (REPRODUCE_OUT, REPRODUCE_FIGURES) if a.reproduce else (DEFAULT_OUT, DEFAULT_FIGURES))
    return StudyConfig(**{
        **vars(a), "root": root, "backbones": checked["backbones"], "tasks": checked["tasks"],
        "seeds": checked["seeds"], "weights": weights, "runset": runset,
        "data_dir": rel_to_root(a.data_dir, root) if a.data_dir else None,
        **_csv_options(a, checked, root),
        "out": rel_to_root(a.out or root / out, root),
        "figures_dir": rel_to_root(a.figures_dir or root / figures, root)})


def _csv_options(a: argparse.Namespace, checked: dict, root: Path) -> dict:
    """StudyConfig's csv fields: the checked values (paths root-relative) for ``--dataset csv``, else None."""
    if a.dataset != "csv":
        return {k: None for k in spec.CSV}
    return {"csv": rel_to_root(a.csv, root), "images": rel_to_root(a.images, root) if a.images else None,
            "attributes": checked["attributes"], "id_column": checked["id_column"],
            "text_column": checked["text_column"]}


def unknown_parameters(cfg: StudyConfig) -> str | None:
    """Why the plan passes a parameter that a notebook's parameter cell does not declare (papermill
    would only warn and run the defaults), or None. Checked before anything executes."""
    names: dict[str, set] = {}
    for s in plan(cfg).steps:
        if Path(s.input_path).is_file():  # a missing notebook is reported by run_study
            names.setdefault(s.input_path, set()).update(s.parameters)
    try:
        spec.check_known(names)
    except ValueError as e:
        return str(e)
    return None


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
    """Execute notebooks/01..07 in place with their default parameters; stop at the first failure,
    restoring that notebook's previous content."""
    paths = [f"notebooks/{name}.ipynb" for name in COMMITTED_NOTEBOOKS]
    missing = missing_notebooks(paths)
    if missing:
        print(f"error: missing notebooks {missing} under {root}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    for i, path in enumerate(map(Path, paths), 1):
        before = path.read_bytes()
        print(f"[refresh {i}/{len(paths)}] {path} ...", flush=True)
        t = time.perf_counter()
        try:
            execute(str(path), str(path), parameters={}, cwd=str(root), kernel_name=KERNEL, progress_bar=False)
        except BaseException as exc:
            atomic_write(path, lambda tmp: tmp.write_bytes(before))
            if not isinstance(exc, Exception):
                raise
            info = failure_info(exc)
            print(f"[refresh {i}/{len(paths)}] {path} FAILED: {info['ename']}: {info['evalue']}\n"
                  f"(notebook restored; total wall time {fmt_seconds(time.perf_counter() - t0)})", flush=True)
            return 1
        strip_run_metadata(path)
        print(f"[refresh {i}/{len(paths)}] {path} done in {fmt_seconds(time.perf_counter() - t)}", flush=True)
    print(f"total wall time {fmt_seconds(time.perf_counter() - t0)}")
    return 0


def main(argv: Sequence[str] | None = None, *, execute: Execute | None = None,
         root: str | os.PathLike | None = None) -> int:
    """CLI entry point; ``execute`` (default papermill) and ``root`` (default the repo) are for tests."""
    cfg = parse_args(argv, root)
    with contextlib.chdir(cfg.root):  # papermill resolves the relative in/out paths from here
        if cfg.refresh_notebooks:
            return refresh_notebooks(execute or papermill_execute, cfg.root)
        unknown = unknown_parameters(cfg)
        if unknown:
            print(f"error: {unknown}", file=sys.stderr)
            return 2
        if cfg.reproduce:
            return reproduce(cfg, execute)
        return run_study(cfg, execute)


if __name__ == "__main__":
    sys.exit(main())

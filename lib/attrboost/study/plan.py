"""The study's plan: its configuration, the notebook steps per backbone and run set, and the fingerprints of their inputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..backbones import list_backbones
from . import params as spec

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
#: the runner's own files, left out of :func:`lib_hash`
RUNNER_FILES = frozenset(f"study/{m}.py" for m in ("runner", "__main__", "plan", "runsets", "execution", "jobs",
                                                   "summary", "cli"))
COLD_TIME = "see docs/performance.md for how long a cold run takes"

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
        return {k: getattr(self, k) for k in runset_keys(self.dataset)}

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
    it writes ``<out>/<runset>/beyond.csv`` and ``beyond_*.png`` under ``<figures>/<runset>``. Always the
    full configuration (``quick=False``, :func:`attrboost.study.beyond.sweep_config`): the committed notebook's
    parameter cell holds the quick one that nbval runs."""
    bb = cfg.beyond_backbone
    return _step(BEYOND_NOTEBOOK, cfg.runset_dir, dict(
        **cfg.data_parameters(), backbone=bb, weights=cfg.weights.get(bb), seeds=list(cfg.seeds), quick=False,
        results_dir=cfg.runset_dir,
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
    """sha256 over ``attrboost/**/*.py`` (relative path and content), excluding the runner (:data:`RUNNER_FILES`),
    whose only influence on the notebooks (their parameters) is fingerprinted separately."""
    package_dir = Path(package_dir) if package_dir else Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).as_posix()
        if rel in RUNNER_FILES:
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


def runset_keys(dataset: str | None) -> tuple[str, ...]:
    return RUNSET_KEYS + (CSV_KEYS if dataset == "csv" else ())



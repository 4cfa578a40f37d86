"""Run the whole study: the six notebooks, per backbone, with papermill.

    python -m attrboost.study                                  # synthetic data, 4 backbones
    python -m attrboost.study --dataset fashion --split by_group
    python -m attrboost.study --figures-only                   # only 05 on the existing runs
    python -m attrboost.study --refresh-notebooks              # re-execute notebooks/0*.ipynb in place

Layout (``<runset>`` is ``<dataset>`` for the random split, ``<dataset>-by_group`` otherwise)::

    <out>/<runset>/<backbone>/01_data.ipynb ... 04_evaluate.ipynb   executed copies
    <out>/<runset>/<backbone>/results.csv                           written by 04 (tidy table)
    <out>/<runset>/<backbone>/run.json                              parameters, fingerprint, status, wall times
    <out>/<runset>/results.csv                                      the successful backbones' tables, concatenated
    <out>/<runset>/05_figures.ipynb, run.json, failures.json        figures step, run-set summary, failures
    <out>/<runset>/06_beyond.ipynb, beyond.csv                      baselines, label budget, ablation (one backbone)
    <figures>/<runset>/                                             written by 05 (and beyond_*.png by 06)

A backbone is skipped ("up to date") when its ``run.json`` says ``ok``, its fingerprint matches and
its ``results.csv`` exists. The fingerprint covers the notebook parameters, the *code* of the
notebooks (cell types and sources, so re-executing a notebook in place, which only changes its
outputs, does not invalidate runs), the attrboost version, the lib sources and any local weights
file. A failing notebook fails its backbone only: the others still run, 05 still runs if at least
one backbone succeeded, and the exit status is 1. 06 runs for ``--beyond-backbone`` (default
efficientnet_lite0) once that backbone has a successful run in the run set; ``--no-beyond`` skips it.

Every path handed to papermill or to a notebook is relative to the repository root (papermill and
the kernels run there), so executed notebooks that get committed contain no machine-specific paths.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd
from jupyter_client.manager import AsyncKernelManager

from . import __version__, params
from .cache import atomic_write, fingerprint, repo_root

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
    runset = runset_name(args.dataset, args.split)
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
    runset = runset_name(args.dataset, args.split)
    params = dict(dataset=runset, runs_dir=f"{args.out}/{runset}", figures_dir=f"{args.figures_dir}/{runset}",
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
    (restricted to ``backbones`` when given), sorted."""
    runset_dir = Path(runset_dir)
    if backbones is None:
        backbones = [p.name for p in runset_dir.iterdir() if p.is_dir()] if runset_dir.is_dir() else []
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


# ----------------------------------------------------------------------------- CLI
def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def plan_beyond(args: argparse.Namespace) -> Step:
    """The 06 step of the run set (baselines, label budget, ablation) for ``args.beyond_backbone``:
    it writes ``<out>/<runset>/beyond.csv`` and ``beyond_*.png`` under ``<figures>/<runset>``."""
    runset = runset_name(args.dataset, args.split)
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
                    "unchanged runs are skipped.")
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
    p.add_argument("--out", default=None, help="executed notebooks and results (default: <repo>/papermill_runs)")
    p.add_argument("--figures-dir", default=None, help="figures (default: <repo>/figures)")
    p.add_argument("--force", action="store_true", help="rerun even if unchanged")
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
               out=args.out or args.root / "papermill_runs", figures_dir=args.figures_dir or args.root / "figures")
    try:
        checked = params.validate(cli, labels={k: "--" + k.replace("_", "-") for k in cli})
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
    args.out = rel_to_root(args.out if args.out else args.root / "papermill_runs", args.root)
    args.figures_dir = rel_to_root(args.figures_dir if args.figures_dir else args.root / "figures", args.root)
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
        params.check_known(names)
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


def run_study(args: argparse.Namespace, execute: Execute | None = None) -> int:
    """Run the plan for parsed ``args`` (the current directory must be ``args.root``). Returns the exit status."""
    execute = execute or papermill_execute
    root = args.root
    runs = [] if args.figures_only else plan_runs(args)
    fig = plan_figures(args)
    beyond = None if (args.figures_only or args.no_beyond) else plan_beyond(args)
    runset_dir = Path(fig.parameters["runs_dir"])
    missing = (_check_notebooks(BACKBONE_NOTEBOOKS if runs else ()) + _check_notebooks([FIGURES_NOTEBOOK])
               + _check_notebooks([BEYOND_NOTEBOOK] if beyond else []))
    if missing:
        print(f"error: missing notebooks {missing} under {root}", file=sys.stderr)
        return 2

    version, lib = __version__, lib_hash()
    nb_hashes = {_notebook_path(n): notebook_hash(_notebook_path(n)) for n in NOTEBOOKS}
    weight_hashes = {path: file_sha256(path) for path in args.weights.values()}
    progress = _Progress(total=len(runs) * len(BACKBONE_NOTEBOOKS) + 1 + (beyond is not None))
    rows, failures, succeeded = [], [], []
    runset = runset_name(args.dataset, args.split)
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
            succeeded.append(run.backbone)
            rows.append((run.backbone, "up to date", "-", ""))
            continue

        run_dir.mkdir(parents=True, exist_ok=True)
        _unlink(run_dir / RUN_JSON)       # no run.json = incomplete; stale results never survive a rerun
        _unlink(run_dir / RESULTS)
        wall, failure, t_run, done = {}, None, time.perf_counter(), 0
        for step in run.steps:
            progress.say(f"{tag}: {step.notebook} ...")
            t = time.perf_counter()
            try:
                wall[step.notebook] = _execute_step(execute, step, root)
            except Exception as exc:  # noqa: BLE001 - isolate any failure to its backbone
                wall[step.notebook] = time.perf_counter() - t
                failure = {"backbone": run.backbone, "notebook": step.notebook, **failure_info(exc),
                           "output": step.output_path}
                progress.say(f"{tag}: {step.notebook} FAILED ({failure['ename']}: "
                             f"{failure['evalue'][:200]}); see {step.output_path}")
                break
            done += 1
            progress.update()
            progress.say(f"{tag}: {step.notebook} done in {fmt_seconds(wall[step.notebook])}")
        if failure is None and not (run_dir / RESULTS).is_file():
            failure = {"backbone": run.backbone, "notebook": BACKBONE_NOTEBOOKS[-1], "ename": "MissingResults",
                       "evalue": f"{run_dir / RESULTS} was not written", "output": run.steps[-1].output_path}
        if failure:
            _unlink(run_dir / RESULTS)
            failures.append(failure)
            progress.update(len(run.steps) - done)
        else:
            succeeded.append(run.backbone)
        status = "failed" if failure else "ok"
        total = time.perf_counter() - t_run
        write_json(run_dir / RUN_JSON, {
            "backbone": run.backbone, "runset": run.runset, "status": status, "fingerprint": fp,
            "parameters": parameters, "inputs": inputs, "attrboost_version": version, "lib_sha256": lib,
            "wall_s": {k: round(v, 3) for k, v in wall.items()}, "total_wall_s": round(total, 3),
            "finished": _now(), "failure": failure})
        rows.append((run.backbone, status, fmt_seconds(total),
                     f"{failure['notebook']}: {failure['ename']}: {failure['evalue'][:80]}" if failure else ""))

    if args.figures_only:
        succeeded = successful_backbones(runset_dir, args.backbones)
        absent = [b for b in args.backbones if b not in succeeded]
        if absent:
            print(f"no successful run for {absent} under {runset_dir}; figures use {succeeded}", flush=True)

    if not succeeded:
        progress.close()
        print(f"no backbone succeeded: 05 not run; {runset_dir / RESULTS} and the figures are left as they were")
        rows.append((FIGURES_NOTEBOOK, "not run", "-", "no successful backbone"))
        fig_status = "not run"
    else:
        table = aggregate(runset_dir, succeeded)
        write_aggregate(runset_dir, table)
        # 05 depends on the notebook, its parameters, the backbone runs it reads and their aggregate
        runs_fp = {b: (read_json(runset_dir / b / RUN_JSON) or {}).get("fingerprint") for b in succeeded}
        inputs = {fig.input_path: nb_hashes[fig.input_path], RESULTS: file_sha256(runset_dir / RESULTS)}
        fig_fp = run_fingerprint(dict(fig.parameters, runs=runs_fp), inputs, version, lib)
        info = read_json(runset_dir / RUN_JSON) or {}
        fig_ok = (not args.force and info.get("figures_status") == "ok" and info.get("figures_fingerprint") == fig_fp
                  and Path(fig.output_path).is_file() and Path(fig.parameters["figures_dir"]).is_dir())
        tag = f"[figures] {runset}"
        fig_wall = None
        if fig_ok:
            progress.say(f"{tag}: {FIGURES_NOTEBOOK}: up to date (skipped)")
            fig_status = "up to date"
        else:
            progress.say(f"{tag}: {FIGURES_NOTEBOOK} ...")
            t = time.perf_counter()
            try:
                fig_wall = _execute_step(execute, fig, root)
                fig_status = "ok"
                progress.say(f"{tag}: {FIGURES_NOTEBOOK} done in {fmt_seconds(fig_wall)}")
            except Exception as exc:  # noqa: BLE001
                fig_wall = time.perf_counter() - t
                fig_status = "failed"
                failure = {"backbone": None, "notebook": FIGURES_NOTEBOOK, **failure_info(exc),
                           "output": fig.output_path}
                failures.append(failure)
                progress.say(f"{tag}: {FIGURES_NOTEBOOK} FAILED ({failure['ename']}: {failure['evalue'][:200]})")
        progress.update()
        rows.append((FIGURES_NOTEBOOK, fig_status, fmt_seconds(fig_wall) if fig_wall is not None else "-",
                     f"{failures[-1]['ename']}: {failures[-1]['evalue'][:80]}" if fig_status == "failed" else ""))
        if not fig_ok:
            info.update({"runset": runset, "backbones": succeeded, "figures_status": fig_status,
                         "figures_fingerprint": fig_fp, "figures_parameters": fig.parameters,
                         "figures_wall_s": round(fig_wall, 3), "finished": _now()})
            write_json(runset_dir / RUN_JSON, info)
        if beyond is not None:
            status, wall, failure = _run_beyond(execute, beyond, args, runset_dir, version, lib, nb_hashes,
                                                progress, root)
            if failure:
                failures.append(failure)
            rows.append((BEYOND_NOTEBOOK, status, fmt_seconds(wall) if wall is not None else "-",
                         f"{failure['ename']}: {failure['evalue'][:80]}" if failure else
                         ("" if status in ("ok", "up to date") else status)))

    progress.close()
    runset_dir.mkdir(parents=True, exist_ok=True)
    if failures:
        write_json(runset_dir / FAILURES_JSON, failures)
    else:
        _unlink(runset_dir / FAILURES_JSON)
    print()
    print(_summary(rows))
    if failures:
        print(f"{len(failures)} failure(s), details in {runset_dir / FAILURES_JSON}")
    print(f"total wall time {fmt_seconds(progress.elapsed)}", flush=True)
    return 1 if failures or not succeeded else 0


def _run_beyond(execute, step: Step, args, runset_dir: Path, version: str, lib: str, nb_hashes: dict,
                progress, root: Path):
    """Run 06 unless up to date; it needs a successful run of its backbone in the run set.
    Returns (status, wall seconds or None, failure or None)."""
    bb = args.beyond_backbone
    tag = f"[beyond] {runset_dir.name}"
    progress.update()
    if bb not in successful_backbones(runset_dir, [bb]):
        progress.say(f"{tag}: {BEYOND_NOTEBOOK} not run: no successful {bb} run in {runset_dir} "
                     f"(add it to --backbones, or pick another with --beyond-backbone)")
        return f"not run (no {bb} run)", None, None
    bb_fp = (read_json(runset_dir / bb / RUN_JSON) or {}).get("fingerprint")
    inputs = {step.input_path: nb_hashes[step.input_path]}
    weights = args.weights.get(bb)
    if weights:
        inputs[weights] = file_sha256(weights)
    fp = run_fingerprint(dict(step.parameters, backbone_run=bb_fp), inputs, version, lib)
    info = read_json(runset_dir / RUN_JSON) or {}
    if (not args.force and info.get("beyond_status") == "ok" and info.get("beyond_fingerprint") == fp
            and Path(step.output_path).is_file() and (runset_dir / BEYOND_RESULTS).is_file()):
        progress.say(f"{tag}: {BEYOND_NOTEBOOK}: up to date (skipped)")
        return "up to date", None, None
    progress.say(f"{tag}: {BEYOND_NOTEBOOK} ({bb}) ...")
    _unlink(runset_dir / BEYOND_RESULTS)
    t = time.perf_counter()
    failure = None
    try:
        wall = _execute_step(execute, step, root)
        if not (runset_dir / BEYOND_RESULTS).is_file():
            raise RuntimeError(f"{runset_dir / BEYOND_RESULTS} was not written")
        progress.say(f"{tag}: {BEYOND_NOTEBOOK} done in {fmt_seconds(wall)}")
    except Exception as exc:  # noqa: BLE001
        wall = time.perf_counter() - t
        failure = {"backbone": bb, "notebook": BEYOND_NOTEBOOK, **failure_info(exc), "output": step.output_path}
        progress.say(f"{tag}: {BEYOND_NOTEBOOK} FAILED ({failure['ename']}: {failure['evalue'][:200]})")
    status = "failed" if failure else "ok"
    info = read_json(runset_dir / RUN_JSON) or {}
    info.update({"beyond_status": status, "beyond_fingerprint": fp, "beyond_parameters": step.parameters,
                 "beyond_wall_s": round(wall, 3)})
    write_json(runset_dir / RUN_JSON, info)
    return status, wall, failure


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
        return run_study(args, execute)


if __name__ == "__main__":
    sys.exit(main())

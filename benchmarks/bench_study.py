"""Benchmark: a fixed study configuration, cold, in seconds per stage; optionally against another checkout.

Every run starts cold: a fresh temporary ``ATTRBOOST_CACHE`` (so the synthetic images, the features and
the heads are all recomputed) and, in ``--mode study``, a fresh temporary ``--out``/``--figures-dir``. The
repository's ``.cache``, ``papermill_runs/``, ``figures/`` and ``runs/`` are never read or written.

Two modes:

``--mode lib`` (default; no notebooks for the stages): a worker process with the checkout's ``lib`` first on
``PYTHONPATH`` calls the library's public functions in the study's order and times each stage:

* per notebook, a papermill run of a probe notebook made of that notebook's import cell (``kernel start``:
  from papermill's start to the first cell; ``imports``: that cell plus every other top-level import
  statement of the notebook);
* ``lib import`` (attrboost's modules and torch), ``data: catalogue`` (``get_catalogue``: generates the
  synthetic images when cold), ``data: sampling`` (``get_sample`` for each seed);
* ``extract: <backbone>`` (``get_features`` for each seed; the feature store grows seed by seed, as in 02);
* ``heads: <backbone> <task>`` (``get_boosted`` summed over the seeds) and its ``per fit`` mean;
* ``metrics: <backbone>`` (``evaluate`` of raw and every task on each seed's test part, as in 04);
* ``06: baselines``, ``06: label budget``, ``06: ablation`` (:mod:`attrboost.study.beyond`, as notebook 06 calls it,
  on ``--beyond-backbone``).

Fits are timed one after the other here: a checkout that runs fits in parallel shows it in ``--mode study``.

``--mode study``: ``python -m attrboost.study`` with the same configuration into a temporary directory, timed
from outside (``study total``); then per notebook its wall time from the ``run.json`` files the runner writes
(``wall_s``, ``figures_wall_s``, ``beyond_wall_s``), and from papermill's metadata in the executed notebooks
(the runner keeps it; only ``--refresh-notebooks`` strips it): kernel start (papermill's start to the first
cell), the import cell (the first code cell after the parameters), the other cells, and the rest (kernel
shutdown, writing the notebook). Every cell's duration is in the ``--json`` file.

``--against PATH`` runs the same configuration with another checkout (a directory with ``lib/attrboost``)
or a git commit (checked out into a temporary ``git worktree``, removed afterwards): its ``lib`` on
``PYTHONPATH``, its notebooks, its study runner; each run in its own fresh cache. The two alternate
(this, other, this, other, ...) so that a change in the machine's load hits both. The table then has
``this``, ``other`` and ``this/other`` (below 1: this checkout is faster).

With ``--repeat N`` each stage shows the minimum over the N runs (all values are in the ``--json`` file).
Before the first run, each checkout's packages are imported once, untimed (so that the first run does not
alone read them from disk). The machine facts (CPU model, cores, torch threads, thread-related environment
variables, load average at the start and the end) are printed and saved, so a reader knows whether the
machine was shared.

Tiny runs (about 1.5-2 min per run in lib mode, 3.5 min in study mode, on 2 shared cores; ``pca`` needs
at least 2,048 training images, about 80 groups of 40, so the tiny runs use Lite0)::

    python benchmarks/bench_study.py --mode lib --backbones efficientnet_lite0 --tasks task1 --seeds 0 \\
        --n-groups 12 --per-group 40
    python benchmarks/bench_study.py --mode study --backbones efficientnet_lite0 --tasks task1 --seeds 0 \\
        --n-groups 12 --per-group 40
    python benchmarks/bench_study.py --mode lib --backbones efficientnet_lite0 --tasks task1 --seeds 0 \\
        --n-groups 12 --per-group 40 --repeat 3 --against /path/to/other/checkout   # or --against <commit>

With the same code on both sides (this checkout against its base), on 2 cores shared with other jobs
(load average 3-4.5), the minimum of 3 runs per stage agreed within 0.9-1.17x for stages over a second,
extraction within 1.27x; single runs differed by up to 3x. Use ``--repeat 3`` at least, on a quiet machine.

The full configurations (run them on a quiet machine; each is tens of minutes per run and per checkout)::

    # `make study` (synthetic default: 4 backbones x 3 seeds x Tasks 1-3, then 05 and 06)
    python benchmarks/bench_study.py --mode study --dataset synthetic \\
        --backbones pca,efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --tasks task1,task2,task3 \\
        --seeds 0,1,2 --n-groups 100 --per-group 40 --split random --json bench-synthetic.json \\
        [--against <base commit>]

    # the real-data run set (pca + Lite0/1/2, Tasks 1-3, 5 seeds, random split, 06 included)
    python benchmarks/bench_study.py --mode study --dataset fashion \\
        --backbones pca,efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --tasks task1,task2,task3 \\
        --seeds 0,1,2,3,4 --n-groups 100 --per-group 40 --split random --json bench-fashion.json \\
        [--data-dir <dir>] [--against <base commit>]

    # the same stages through the library only (no notebooks), e.g. to see extraction and head fits apart
    python benchmarks/bench_study.py --mode lib --dataset fashion \\
        --backbones pca,efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --tasks task1,task2,task3 \\
        --seeds 0,1,2,3,4 --json bench-fashion-lib.json [--against <base commit>]

Without ``--data-dir`` the real data is looked for where this checkout's library looks
(``$ATTRBOOST_DATA_DIR``, ``<repo>/data/...``, ``<repo>/../shared/data/...``); both checkouts get that same
directory. ``--keep`` keeps the temporary directories (caches, executed notebooks, logs) and prints where.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BACKBONES = "pca,efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"
NOTEBOOK_TAGS_SKIP = {"parameters", "injected-parameters"}
ENV_FACTS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY",
             "CUDA_VISIBLE_DEVICES")


# ----------------------------------------------------------------------------- formatting (tested)
def ratio(this: float | None, other: float | None) -> float | None:
    """``this / other``, or None when either is missing, not finite, or ``other`` is zero."""
    if this is None or other is None or not (math.isfinite(this) and math.isfinite(other)) or other == 0:
        return None
    return this / other


def min_over_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per stage, the minimum over the runs that have it (stages in first-seen order)."""
    out: dict[str, float] = {}
    for run in runs:
        for stage, s in run.items():
            if s is not None and math.isfinite(s):
                out[stage] = min(out.get(stage, s), s)
    return out


def format_table(columns: dict[str, dict[str, float]], fmt: str = "github") -> str:
    """A text table with one row per stage (in first-seen order over the columns) and one column per
    entry of ``columns`` (name -> {stage: seconds}); a missing stage shows ``-``. With exactly two columns
    a third gives their ratio, first / second (``-`` where it is undefined)."""
    from tabulate import tabulate

    names = list(columns)
    stages = list(dict.fromkeys(s for col in columns.values() for s in col))

    def cell(v):
        return "-" if v is None else f"{v:.1f}"

    rows = []
    for stage in stages:
        values = [columns[n].get(stage) for n in names]
        row = [stage, *map(cell, values)]
        if len(names) == 2:
            r = ratio(*values)
            row.append("-" if r is None else f"{r:.2f}")
        rows.append(row)
    headers = ["stage", *(f"{n} (s)" for n in names)] + ([f"{names[0]}/{names[1]}"] if len(names) == 2 else [])
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True,
                    colalign=("left",) + ("right",) * (len(headers) - 1))


# ----------------------------------------------------------------------------- machine facts
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_facts() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": usable,
            "python": sys.version.split()[0], "platform": platform.platform(), "executable": sys.executable,
            "env": {k: os.environ[k] for k in ENV_FACTS if k in os.environ}}


def torch_facts(root: Path) -> dict:
    """torch's version and default thread count, in a fresh process with ``root``'s lib on the path."""
    code = ("import json, torch; print(json.dumps({'torch': torch.__version__, "
            "'torch_threads': torch.get_num_threads(), 'cuda': torch.cuda.is_available()}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=child_env(root, None), capture_output=True,
                             text=True, timeout=300, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        return {"error": str(e)[:200]}


def git_facts(root: Path) -> dict:
    def git(*a):
        r = subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty": bool(status) if status is not None else None}


# ----------------------------------------------------------------------------- checkouts
def child_env(root: Path, cache: Path | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "lib")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if cache is not None:
        env["ATTRBOOST_CACHE"] = str(cache)
    return env


def resolve_checkout(spec: str, tmp: Path) -> tuple[Path, Path | None]:
    """``(root, worktree to remove or None)`` for ``--against``: a directory holding ``lib/attrboost``, or a
    git commit of this repository, checked out into a temporary detached worktree."""
    p = Path(spec).expanduser()
    if p.is_dir():
        p = p.resolve()
        if not (p / "lib" / "attrboost").is_dir() or not (p / "notebooks").is_dir():
            sys.exit(f"error: --against {spec}: {p} is not an attrboost checkout (expected lib/attrboost/ and "
                     "notebooks/ in it)")
        return p, None
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: --against {spec!r}: neither a directory nor a commit of {REPO}")
    wt = tmp / f"against-{r.stdout.strip()[:12]}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(wt), r.stdout.strip()],
                   check=True)
    return wt, wt


def remove_worktree(wt: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(wt)], capture_output=True)
    subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)


def warm_up(root: Path) -> float:
    """Import torch and attrboost once with ``root``'s lib, untimed, so that the first timed run does not
    alone pay for reading the packages from disk ("cold" means a fresh attrboost cache, not a cold OS file
    cache). Returns the seconds it took."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, attrboost.study.pipeline, attrboost.study.beyond, attrboost.study"],
                   env=child_env(root, None), capture_output=True, timeout=600)
    return time.perf_counter() - t


def default_data_dir() -> str | None:
    """Where this checkout's library looks for the real data (both checkouts then get the same)."""
    code = ("from attrboost.data.catalogue import default_fashion_dir as d; p = d(); "
            "print(p.resolve() if p else '')")
    r = subprocess.run([sys.executable, "-c", code], env=child_env(REPO, None), capture_output=True, text=True)
    return r.stdout.strip() or None


# ----------------------------------------------------------------------------- notebooks: timings
def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def import_cell_index(cells: list[dict]) -> int | None:
    """The notebook's import cell: its first code cell after the parameter cells that imports something."""
    for i, c in enumerate(cells):
        tags = set(c.get("metadata", {}).get("tags", []))
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if c["cell_type"] == "code" and not tags & NOTEBOOK_TAGS_SKIP and "import" in src:
            return i
    return None


def notebook_timing(path: Path) -> dict:
    """From papermill's metadata of an executed notebook: ``kernel_start`` (papermill's start to the first
    cell's start), ``imports`` (the import cell), ``cells`` (every other cell), ``rest`` (the notebook's
    duration minus those: kernel shutdown, writing), ``duration``; and ``per_cell`` ([index, first line,
    seconds])."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    meta = nb.get("metadata", {}).get("papermill") or {}
    if not meta.get("start_time"):
        return {"error": f"{path}: no papermill metadata"}
    cells = nb["cells"]
    per_cell = []
    for i, c in enumerate(cells):
        pm = c.get("metadata", {}).get("papermill") or {}
        if pm.get("duration") is not None:
            src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            first = next((ln for ln in src.splitlines() if ln.strip()), "")[:60]
            per_cell.append([i, c["cell_type"], first, pm["duration"]])
    starts = [_when(c["metadata"]["papermill"]["start_time"]) for c in cells
              if (c.get("metadata", {}).get("papermill") or {}).get("start_time")]
    start = _when(meta["start_time"])
    kernel = (min(starts) - start).total_seconds() if starts else None
    imp = import_cell_index(cells)
    imports = next((d for i, _, _, d in per_cell if i == imp), None)
    total_cells = sum(d for *_, d in per_cell)
    duration = meta.get("duration")
    out = {"kernel_start": kernel, "imports": imports,
           "cells": total_cells - (imports or 0.0), "duration": duration, "per_cell": per_cell}
    if duration is not None and kernel is not None:
        out["rest"] = duration - kernel - total_cells
    return out


def probe_notebook(src: Path, dst: Path) -> None:
    """A notebook of two cells: ``src``'s import cell as it is, then every other top-level import
    statement of ``src`` (cells that ast cannot parse after dropping IPython magics are skipped)."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    i = import_cell_index([dict(c) for c in nb.cells])
    first = nb.cells[i].source if i is not None else ""
    later = []
    for c in nb.cells[(i or 0) + 1:]:
        if c.cell_type != "code":
            continue
        code = "\n".join(ln for ln in c.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        later += [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    probe = nbformat.v4.new_notebook(metadata=nb.metadata)
    probe.cells = [nbformat.v4.new_code_cell(first),
                   nbformat.v4.new_code_cell("\n".join(dict.fromkeys(later)) or "pass")]
    nbformat.write(probe, dst)


# ----------------------------------------------------------------------------- the worker (lib mode)
def worker(config_path: str, result_path: str) -> int:
    """Runs inside the checkout's environment (its lib first on PYTHONPATH, a fresh ATTRBOOST_CACHE);
    writes {"stages": {stage: seconds}, "info": {...}, "errors": {...}} to ``result_path``."""
    cfg = json.loads(Path(config_path).read_text())
    stages: dict[str, float] = {}
    errors: dict[str, str] = {}
    info: dict = {"load_start": loadavg()}
    t_all = time.perf_counter()

    def timed(stage: str, fn, *a, **kw):
        t = time.perf_counter()
        out = fn(*a, **kw)
        stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - t
        return out

    def imports():
        import torch  # noqa: F401

        import attrboost.study.beyond  # noqa: F401
        import attrboost.extract  # noqa: F401
        import attrboost.heads  # noqa: F401
        import attrboost.metrics  # noqa: F401
        import attrboost.study.pipeline  # noqa: F401

    timed("lib import", imports)
    import attrboost
    import torch
    from attrboost.study import pipeline as P

    info["attrboost_file"] = attrboost.__file__
    info["torch_threads"] = torch.get_num_threads()

    # per notebook: kernel start and imports, with papermill (the kernel inherits this environment)
    if cfg["kernels"]:
        try:
            from attrboost.study import papermill_execute as execute
        except ImportError:
            import papermill

            execute = papermill.execute_notebook
        probes = Path(cfg["tmp"]) / "probes"
        probes.mkdir(parents=True, exist_ok=True)
        for nb in sorted(Path(cfg["root"], "notebooks").glob("0*.ipynb")):
            name = nb.stem
            try:
                probe_notebook(nb, probes / f"{name}.in.ipynb")
                t = time.perf_counter()
                execute(str(probes / f"{name}.in.ipynb"), str(probes / f"{name}.ipynb"), parameters={},
                        cwd=cfg["root"], kernel_name="python3", progress_bar=False)
                wall = time.perf_counter() - t
                tm = notebook_timing(probes / f"{name}.ipynb")
                stages[f"{name}: kernel start"] = tm["kernel_start"]
                stages[f"{name}: imports"] = tm["cells"] + (tm["imports"] or 0.0)
                info.setdefault("probe_wall", {})[name] = wall
            except Exception as e:  # noqa: BLE001 - a benchmark reports what failed and goes on
                errors[f"{name}: kernel"] = f"{type(e).__name__}: {e}"[:300]

    data = P.DataConfig(dataset=cfg["dataset"], data_dir=cfg["data_dir"], n_groups=cfg["n_groups"],
                        per_group=cfg["per_group"], split=cfg["split"])
    timed("data: catalogue", P.get_catalogue, data.dataset, data.data_dir)
    samples = {s: timed("data: sampling", P.get_sample, data, s) for s in cfg["seeds"]}
    info["images_per_sample"] = {s: len(samples[s].items) for s in cfg["seeds"]}

    feats: dict[str, dict[int, object]] = {}
    for bb in cfg["backbones"]:
        try:
            feats[bb] = {s: timed(f"extract: {bb}", P.get_features, samples[s], bb, device=cfg["device"],
                                  batch_size=cfg["batch_size"], progress=False) for s in cfg["seeds"]}
        except Exception as e:  # noqa: BLE001
            errors[f"extract: {bb}"] = f"{type(e).__name__}: {e}"[:300]
            stages.pop(f"extract: {bb}", None)

    runs: dict = {}
    for bb in feats:
        for task in cfg["tasks"]:
            stage = f"heads: {bb} {task}"
            try:
                for s in cfg["seeds"]:
                    runs[bb, task, s] = timed(stage, P.get_boosted, samples[s], feats[bb][s], bb, task, s)
                stages[f"{stage} per fit"] = stages[stage] / len(cfg["seeds"])
                info.setdefault("epochs", {})[stage] = [len(runs[bb, task, s].history) for s in cfg["seeds"]]
            except Exception as e:  # noqa: BLE001
                errors[stage] = f"{type(e).__name__}: {e}"[:300]
                stages.pop(stage, None)
    fits = [v for k, v in stages.items() if k.startswith("heads: ") and not k.endswith("per fit")]
    if fits:
        stages["heads: all"] = sum(fits)

    for bb in feats:
        def metrics(bb=bb):
            for s in cfg["seeds"]:
                sample = samples[s]
                embs = [feats[bb][s][sample.mask("test")]]
                embs += [runs[bb, t, s].emb["test"] for t in cfg["tasks"] if (bb, t, s) in runs]
                for e in embs:
                    P.evaluate(e, sample, "test")
        try:
            timed(f"metrics: {bb}", metrics)
        except Exception as e:  # noqa: BLE001
            errors[f"metrics: {bb}"] = f"{type(e).__name__}: {e}"[:300]

    bb = cfg["beyond_backbone"]
    if bb and bb in feats:
        try:
            beyond(cfg, data, bb, timed, stages)
        except Exception as e:  # noqa: BLE001
            errors["06"] = f"{type(e).__name__}: {e}"[:300]

    stages["total"] = time.perf_counter() - t_all
    info["load_end"] = loadavg()
    Path(result_path).write_text(json.dumps({"stages": stages, "info": info, "errors": errors}, indent=1))
    return 0


def beyond(cfg: dict, data, bb: str, timed, stages: dict) -> None:
    """Notebook 06's three experiments with its default parameters, as it calls them."""
    from attrboost.study import beyond as B
    from attrboost.study import params

    d = params.defaults("06_beyond")
    base = timed("06: baselines", B.run_baselines, data, bb, cfg["seeds"], d["baselines"], progress=False)
    res = base.scores
    val = res[(res["experiment"] == "baselines") & (res["part"] == "val") & (res["metric"] == "paper_map@10")]
    best = val.groupby("method")["value"].mean().reindex(d["baselines"]).idxmax()
    budgets = B.budgets_for(base.samples[cfg["seeds"][0]], d["budgets"])
    timed("06: label budget", B.label_budget, base.samples, base.features, bb, budgets, best, progress=False)
    attrs = list(base.samples[cfg["seeds"][0]].attributes) if d["ablation"] else []
    timed("06: ablation", B.ablation, base.samples, base.features, bb, attrs, progress=False)
    stages["06: all"] = sum(stages[k] for k in ("06: baselines", "06: label budget", "06: ablation"))


# ----------------------------------------------------------------------------- one cold run
def run_lib(root: Path, args, tmp: Path, log: Path) -> dict:
    cache = tmp / "cache"
    config = {"root": str(root), "tmp": str(tmp), "dataset": args.dataset, "data_dir": args.data_dir,
              "n_groups": args.n_groups, "per_group": args.per_group, "split": args.split, "seeds": args.seeds,
              "backbones": args.backbones, "tasks": args.tasks, "device": args.device,
              "batch_size": args.batch_size, "beyond_backbone": args.beyond_backbone, "kernels": not args.no_kernels}
    (tmp / "config.json").write_text(json.dumps(config))
    result = tmp / "result.json"
    with open(log, "w") as fh:
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(tmp / "config.json"),
                            str(result)], cwd=root, env=child_env(root, cache), stdout=fh, stderr=subprocess.STDOUT)
    if r.returncode != 0 or not result.is_file():
        return {"stages": {}, "info": {}, "errors": {"worker": f"exit {r.returncode}; log {log}:\n" + tail(log)}}
    out = json.loads(result.read_text())
    where = Path(out["info"].get("attrboost_file", "")).resolve()
    if root.resolve() not in where.parents:
        out["errors"]["checkout"] = f"the worker imported attrboost from {where}, not from {root}/lib"
    return out


def run_study(root: Path, args, tmp: Path, log: Path, extra: list[str]) -> dict:
    cache, out, figures = tmp / "cache", tmp / "out", tmp / "figures"
    cmd = [sys.executable, "-m", "attrboost.study", "--dataset", args.dataset, "--backbones", ",".join(args.backbones),
           "--tasks", ",".join(args.tasks), "--seeds", ",".join(map(str, args.seeds)), "--n-groups", str(args.n_groups),
           "--per-group", str(args.per_group), "--split", args.split, "--device", args.device,
           "--batch-size", str(args.batch_size), "--out", str(out), "--figures-dir", str(figures)]
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    cmd += ["--beyond-backbone", args.beyond_backbone] if args.beyond_backbone else ["--no-beyond"]
    cmd += extra
    load_start, t = loadavg(), time.perf_counter()
    with open(log, "w") as fh:
        r = subprocess.run(cmd, cwd=root, env=child_env(root, cache), stdout=fh, stderr=subprocess.STDOUT)
    stages = {"study total": time.perf_counter() - t}
    info = {"command": cmd, "returncode": r.returncode, "load_start": load_start, "load_end": loadavg(),
            "notebooks": {}}
    errors = {} if r.returncode == 0 else {"study": f"exit {r.returncode}; log {log}:\n" + tail(log)}
    runset = next((p for p in out.iterdir() if p.is_dir()), None) if out.is_dir() else None
    if runset is None:
        errors.setdefault("study", f"no run set under {out}; log {log}:\n" + tail(log))
        return {"stages": stages, "info": info, "errors": errors}

    def read(p: Path) -> dict:
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return {}

    startup = {"kernel start": 0.0, "imports": 0.0, "rest": 0.0}

    def add(prefix: str, nb: Path, wall: float | None) -> None:
        if wall is not None:
            stages[f"{prefix}"] = wall
        if not nb.is_file():
            return
        tm = notebook_timing(nb)
        info["notebooks"][prefix] = tm
        if "error" in tm:
            errors[prefix] = tm["error"]
            return
        stages[f"{prefix}: kernel start + imports"] = (tm["kernel_start"] or 0.0) + (tm["imports"] or 0.0)
        startup["kernel start"] += tm["kernel_start"] or 0.0
        startup["imports"] += tm["imports"] or 0.0
        startup["rest"] += tm.get("rest") or 0.0

    for bb in args.backbones:
        rj = read(runset / bb / "run.json")
        for nb, wall in (rj.get("wall_s") or {}).items():
            add(f"{bb}: {nb}", runset / bb / f"{nb}.ipynb", wall)
        if rj.get("total_wall_s") is not None:
            stages[f"{bb}: 01-04"] = rj["total_wall_s"]
    rs = read(runset / "run.json")
    add("05_figures", runset / "05_figures.ipynb", rs.get("figures_wall_s"))
    if args.beyond_backbone:
        add("06_beyond", runset / "06_beyond.ipynb", rs.get("beyond_wall_s"))
    stages["all notebooks: kernel start"] = startup["kernel start"]
    stages["all notebooks: imports"] = startup["imports"]
    stages["all notebooks: shutdown + writing"] = startup["rest"]
    return {"stages": stages, "info": info, "errors": errors}


def slowest_cells(run: dict, n: int) -> list[str]:
    """Lines naming the ``n`` slowest cells of each executed notebook of a study-mode run."""
    lines = []
    for prefix, tm in run["info"].get("notebooks", {}).items():
        cells = sorted(tm.get("per_cell", []), key=lambda c: -c[3])[:n]
        if cells:
            lines.append(f"  {prefix}: " + "; ".join(f"cell {i} {d:.1f} s ({first!r})" for i, _, first, d in cells))
    return lines


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for the stages and the full configurations.")
    p.add_argument("--mode", choices=("lib", "study"), default="lib",
                   help="lib: stages through the library; study: the whole study runner (default: %(default)s)")
    p.add_argument("--dataset", choices=("synthetic", "fashion"), default="synthetic")
    p.add_argument("--data-dir", default=None, help="real data directory (default: where the library looks)")
    p.add_argument("--backbones", default=DEFAULT_BACKBONES, help="comma-separated (default: %(default)s)")
    p.add_argument("--tasks", default="task1,task2,task3", help="comma-separated (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated (default: %(default)s)")
    p.add_argument("--n-groups", type=int, default=100)
    p.add_argument("--per-group", type=int, default=40)
    p.add_argument("--split", choices=("random", "by_group"), default="random")
    p.add_argument("--device", default="auto", help="extraction device (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="extraction batch (default: %(default)s)")
    p.add_argument("--beyond-backbone", default=None,
                   help="backbone of 06 (default: efficientnet_lite0 when benchmarked, else the first backbone)")
    p.add_argument("--no-beyond", action="store_true", help="leave 06 out")
    p.add_argument("--no-kernels", action="store_true", help="lib mode: leave out the per-notebook kernel probes")
    p.add_argument("--repeat", type=int, default=1, help="cold runs per checkout; the table shows the minimum")
    p.add_argument("--against", default=None, metavar="PATH|COMMIT",
                   help="another checkout (directory) or a git commit of this repository to compare with")
    p.add_argument("--study-args", default="", help="--mode study: extra arguments for this checkout's runner")
    p.add_argument("--other-study-args", default="", help="--mode study: extra arguments for the other's runner")
    p.add_argument("--cells", type=int, default=3, help="--mode study: list the N slowest cells of each notebook "
                   "(default: %(default)s; 0: none)")
    p.add_argument("--json", default=None, metavar="FILE", help="write every measurement to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories (printed)")
    p.add_argument("--tmp", default=None, help="where to make the temporary directories (default: the system's)")
    a = p.parse_args(argv)

    def csv(text):
        return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))

    a.backbones, a.tasks = csv(a.backbones), csv(a.tasks)
    try:
        a.seeds = [int(s) for s in csv(a.seeds)]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers, got {a.seeds!r}")
    for name in ("backbones", "tasks", "seeds"):
        if not getattr(a, name):
            p.error(f"--{name}: empty; expected at least one value")
    if a.repeat < 1:
        p.error(f"--repeat: expected an integer >= 1, got {a.repeat}")
    if a.no_beyond:
        a.beyond_backbone = None
    elif a.beyond_backbone is None:
        a.beyond_backbone = "efficientnet_lite0" if "efficientnet_lite0" in a.backbones else a.backbones[0]
    elif a.beyond_backbone not in a.backbones:
        p.error(f"--beyond-backbone: {a.beyond_backbone!r} is not among --backbones {a.backbones} "
                "(06 needs that backbone's run)")
    if a.data_dir:
        if not Path(a.data_dir).expanduser().is_dir():
            p.error(f"--data-dir: {a.data_dir}: no such directory")
        a.data_dir = str(Path(a.data_dir).expanduser().resolve())
    return a


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2], sys.argv[3])
    args = parse_args(argv)
    if args.dataset == "fashion" and not args.data_dir:
        args.data_dir = default_data_dir()
        if not args.data_dir:
            sys.exit("error: --dataset fashion: no real data found where the library looks; pass --data-dir")
    tmp = Path(tempfile.mkdtemp(prefix="bench_study-", dir=args.tmp))
    facts = {**machine_facts(), "load_start": loadavg(), "started": datetime.now().isoformat(timespec="seconds")}
    checkouts = {"this": REPO}
    worktree = None
    try:
        if args.against:
            checkouts["other"], worktree = resolve_checkout(args.against, tmp)
        facts["torch"] = torch_facts(REPO)
        facts["warm_up_s"] = {name: round(warm_up(root), 1) for name, root in checkouts.items()}
        results = {k: {"root": str(r), **git_facts(r), "runs": []} for k, r in checkouts.items()}
        extra = {"this": args.study_args.split(), "other": args.other_study_args.split()}
        for i in range(args.repeat):
            for name, root in checkouts.items():  # alternate, so that a change in load hits both
                d = tmp / f"{name}-{i}"
                d.mkdir()
                print(f"[{name} run {i + 1}/{args.repeat}] {args.mode} mode, {root} (cache {d / 'cache'}) ...",
                      flush=True)
                t = time.perf_counter()
                run = (run_lib(root, args, d, d / "log.txt") if args.mode == "lib"
                       else run_study(root, args, d, d / "log.txt", extra[name]))
                results[name]["runs"].append(run)
                print(f"[{name} run {i + 1}/{args.repeat}] done in {time.perf_counter() - t:.1f} s", flush=True)
                for stage, err in run["errors"].items():
                    print(f"  error in {stage}: {err}", flush=True)
                if not args.keep:
                    shutil.rmtree(d / "cache", ignore_errors=True)
        facts["load_end"] = loadavg()
        facts["finished"] = datetime.now().isoformat(timespec="seconds")
        for r in results.values():
            r["min"] = min_over_runs([run["stages"] for run in r["runs"]])
        config = {k: getattr(args, k) for k in ("mode", "dataset", "data_dir", "backbones", "tasks", "seeds",
                                                "n_groups", "per_group", "split", "device", "batch_size",
                                                "beyond_backbone", "repeat", "against")}
        report = {"machine": facts, "config": config, "results": results}
        print()
        print(describe(report))
        print()
        print(format_table({k: r["min"] for k, r in results.items()}))
        if args.mode == "study" and args.cells:
            for name, r in results.items():
                best = min(r["runs"], key=lambda run: run["stages"].get("study total", math.inf))
                print(f"\n{name}: the {args.cells} slowest cells of each notebook (its fastest run):")
                print("\n".join(slowest_cells(best, args.cells)))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
            print(f"\nall measurements: {args.json}")
        failed = any(run["errors"] for r in results.values() for run in r["runs"])
        return 1 if failed else 0
    finally:
        if worktree is not None:
            remove_worktree(worktree)
        if args.keep:
            print(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def describe(report: dict) -> str:
    m, c = report["machine"], report["config"]
    tf = m.get("torch", {})
    lines = [f"machine: {m['cpu_model']}; {m['cpus_usable']} usable of {m['cpu_count']} CPUs; torch "
             f"{tf.get('torch')} with {tf.get('torch_threads')} threads (cuda: {tf.get('cuda')}); python {m['python']}"
             + (f"; env {m['env']}" if m["env"] else ""),
             f"load average (1, 5, 15 min): {m['load_start']} at the start, {m.get('load_end')} at the end"
             + (" -- the machine was shared: compare with care" if shared(m) else ""),
             f"configuration: --mode {c['mode']} --dataset {c['dataset']} --backbones {','.join(c['backbones'])} "
             f"--tasks {','.join(c['tasks'])} --seeds {','.join(map(str, c['seeds']))} --n-groups {c['n_groups']} "
             f"--per-group {c['per_group']} --split {c['split']} --device {c['device']}"
             + (f" --data-dir {c['data_dir']}" if c["data_dir"] else "")
             + (f"; 06 on {c['beyond_backbone']}" if c["beyond_backbone"] else "; no 06")
             + f"; cold runs: {c['repeat']} per checkout, the table shows the minimum (seconds)"]
    for name, r in report["results"].items():
        lines.append(f"{name}: {r['root']} at {(r.get('commit') or '?')[:12]}"
                     + (" (with uncommitted changes)" if r.get("dirty") else "") + f" {r.get('subject') or ''}")
    return "\n".join(lines)


def shared(m: dict) -> bool:
    """Whether the 1-minute load average, at the start or the end, exceeded half the usable CPUs."""
    loads = [x[0] for x in (m.get("load_start"), m.get("load_end")) if x]
    return any(x > 0.5 * (m.get("cpus_usable") or 1) for x in loads)


if __name__ == "__main__":
    sys.exit(main())

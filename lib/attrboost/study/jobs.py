"""The step runner: a job per backbone (01-04), per run set (05) and for 06, run side by side (``--jobs``)
under a :class:`~attrboost.study.runsets.Swap`; :func:`run_study` runs a whole study.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from .. import __version__
from . import params as spec
from ..cache import fingerprint, write_json
from ..locks import LockedError, writer_lock
from .execution import Progress, execute_step, failure_info, fmt_seconds, missing_notebooks, now_utc, papermill_execute
from .plan import (
    BEYOND_NOTEBOOK,
    BEYOND_RESULTS,
    FAILED,
    FAILURES_JSON,
    FIGURES_NOTEBOOK,
    PUBLISH_OUT,
    REPLACED,
    RESULTS,
    RUN_JSON,
    THREAD_ENV,
    Execute,
    Plan,
    Run,
    Step,
    StudyConfig,
    input_hashes,
    lib_hash,
    plan,
    read_json,
)
from .runsets import (
    Swap,
    aggregate,
    cache_id,
    check_runset,
    finished_runs,
    parameter_changes,
    recover,
    side_path,
    successful_backbones,
    write_aggregate,
)
from .summary import backbone_order, compare_results, format_comparison, report, summary_table


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


def run_job(job: Job, execute: Execute, root: Path, progress: Progress, force: bool = False) -> Outcome:
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
                execute_step(execute, step, root)
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
            found = findings(s.output_path for s in job.steps)
            if found:
                progress.say(f"{job.label}: {len(found)} checked conclusion(s) do not hold on this data (findings, "
                             "not enforced): " + "; ".join(found))
            swap.commit()
            note = f"{len(found)} finding(s): conclusions that do not hold here, not enforced" if found else ""
            return Outcome(status, (job.name, status, fmt_seconds(total), note))
        kept = swap.rollback()
    where = ", ".join(f"{p}/" if p.is_dir() else str(p) for p in kept)
    note = f"; see {where}" + (f"; previous {job.previous[1]} kept" if job.previous[0].exists() else "")
    progress.say(f"{job.label}: failed{note}")
    return Outcome(status, (job.name, status, fmt_seconds(total), _failure_note(failure) + note), failure)


def findings(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The checked conclusions the executed notebooks at ``paths`` printed as not holding, as
    ``"<notebook>: <claim>"``. On the synthetic catalogue such a claim stops the notebook; on other data it is a
    finding (``report.claims_enforced``), which the summary names so that it is not published unseen."""
    from .report import claims_not_holding  # here, not at the top: it imports torch, which the runner never needs

    found = []
    for path in paths:
        nb = read_json(path)
        for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stdout":
                    text = out.get("text", "")
                    text = "".join(text) if isinstance(text, list) else text
                    found += [f"{Path(path).stem}: {claim}" for claim in claims_not_holding(text)]
    return found


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
                   "total_wall_s": round(total, 3), "finished": now_utc(), "failure": failure},
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
                                             "finished": now_utc()},
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
    """Run the plan for ``cfg`` (the current directory must be ``cfg.root``), holding the run set's writer lock
    (:func:`attrboost.locks.writer_lock`: a second study into the same run set is refused at once, naming the
    first). Returns the exit status."""
    try:
        with writer_lock(cfg.runset_dir, "this run set (--runset NAME or --out DIR)"):
            return _run_study(cfg, execute)
    except LockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_study(cfg: StudyConfig, execute: Execute | None = None) -> int:
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
    if cfg.figures_only and current:
        # 05 describes the run set as it was computed, whatever --dataset / --split this call was given
        data = {k: current[k] for k in ("dataset", "data_dir", "split", *spec.CSV) if k in current}
        if any(getattr(cfg, k) != v for k, v in data.items()):
            print(f"--figures-only: run set {cfg.runset} was computed with "
                  + ", ".join(f"{k}={v!r}" for k, v in data.items() if getattr(cfg, k) != v) + "; 05 uses that",
                  flush=True)
            cfg = replace(cfg, **data)
            p = plan(cfg)

    whole = Swap([runset_dir, figures], tag=REPLACED) if differing else None
    if whole:
        print(f"replacing run set {cfg.runset} ({runset_dir}, {figures}) because of --force: "
              + "; ".join(parameter_changes(next(iter(differing.values())), current))
              + f". The old one is kept as {side_path(runset_dir, REPLACED)} until every step of the new one "
                "has succeeded.", flush=True)
    progress = Progress(total=len(p.steps))
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
    print(f"\n{summary_table(rows)}")
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


def _run_runset(cfg: StudyConfig, execute: Execute, p: Plan, current: dict | None, progress: Progress):
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
    cfg = replace(cfg, **params, backbones=backbone_order(existing), weights=weights, no_beyond=no_beyond,
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



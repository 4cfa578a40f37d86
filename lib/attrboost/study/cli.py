"""``python -m attrboost.study``: the command line, checked into a :class:`~attrboost.study.plan.StudyConfig`
before any work; ``--refresh-notebooks``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from ..cache import ENV_CACHE, atomic_write, repo_root
from ..data.catalogue import DATASETS
from ..data.sampling import SPLITS
from ..heads import TASKS
from . import params as spec
from .execution import failure_info, fmt_seconds, missing_notebooks, papermill_execute
from .jobs import reproduce, run_study
from .plan import (
    COMMITTED_NOTEBOOKS,
    DEFAULT_BACKBONES,
    DEFAULT_FIGURES,
    DEFAULT_JOBS,
    DEFAULT_OUT,
    KERNEL,
    PUBLISH_FIGURES,
    PUBLISH_OUT,
    REPRODUCE_FIGURES,
    REPRODUCE_OUT,
    RUNSET_NAME,
    Execute,
    StudyConfig,
    known_backbones,
    plan,
    rel_to_root,
    runset_name,
)


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
    # every value at once, with the notebooks' own checks (attrboost.study.params), before any work
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

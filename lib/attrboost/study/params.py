"""Every notebook parameter in one place: its check and its default, validated before any work.

    from attrboost.study import params
    params.warn_unknown(globals(), notebook="03_train")               # a misspelt `-p n_grups 12`
    globals().update(params.validate(globals(), notebook="03_train"))  # all bad values in one error

:data:`PARAMS` declares each parameter once (the check and the default the notebooks' parameter
cells use; ``tests/test_params.py`` compares them with the cells), :data:`NOTEBOOKS` which
notebook takes which. :func:`validate` checks every value at once and raises one ``ValueError``
that lists each bad parameter with its value and what is allowed; it returns the values
normalised (``"0,1"`` -> ``[0, 1]``, ``1.0`` -> ``1`` for an integer). The study runner checks its
CLI values with the same function (:mod:`attrboost.study`) and, before executing anything, the
parameters it passes against the notebooks' parameter cells (:func:`check_known`).

Each default is defined once in the library and read from there: the sample's from
:func:`attrboost.data.sampling.sample_protocol`, the head's from :class:`attrboost.heads.BoostHead`,
06's baselines and budgets from :mod:`attrboost.study.beyond`; the notebooks' parameter cells repeat them
(papermill needs literals) and ``tests/test_params.py`` checks that they agree.
"""
from __future__ import annotations

import difflib
import numbers
import os
import re
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, MutableMapping

import numpy as np

from .baselines import BASELINES
from .beyond import BUDGETS
from ..data.catalogue import DATASETS, RESERVED_COLUMNS
from ..data.sampling import PROTOCOL_DEFAULTS, SPLITS
from ..heads import SELECTIONS, TASKS
from .pipeline import head_params

#: the search wing's index kinds (attrboost.search.index.KINDS; a test keeps the two equal): notebook 07's
#: ``index_kind`` is checked here without importing the search wing
INDEX_KINDS = ("flat", "hnsw", "ivfpq")

IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit"})
_CHECKED = "_attrboost_params_checked"  # set in a notebook's globals by warn_unknown


class Invalid(ValueError):
    """A value a check rejects; the text says what is allowed."""


# ----------------------------------------------------------------------------- checks
# Each check takes a value and returns it normalised, or raises Invalid("what is allowed").
def _as_int(v, minimum: int) -> int:
    if isinstance(v, (bool, np.bool_)):
        raise Invalid(f"an integer >= {minimum}")
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    if not isinstance(v, numbers.Integral) or v < minimum:
        raise Invalid(f"an integer >= {minimum}")
    return int(v)


def integer(minimum: int, optional: bool = False) -> Callable:
    def check(v):
        if v is None and optional:
            return None
        try:
            return _as_int(v, minimum)
        except Invalid:
            raise Invalid(f"an integer >= {minimum}" + (" or None" if optional else "")) from None
    return check


def number(minimum: float = 0.0, maximum: float | None = None, optional: bool = False) -> Callable:
    what = f"a number >= {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "") + \
        (" or None" if optional else "")

    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v < minimum \
                or (maximum is not None and v > maximum):
            raise Invalid(what)
        return float(v)
    return check


def _listed(v) -> list:
    """A list from a list/tuple, a scalar, or a string such as ``"0,1,2"`` or ``"[0, 1]"`` (``papermill -p``)."""
    if isinstance(v, str):
        return [t.strip(" '\"") for t in v.strip("[]() ").split(",") if t.strip(" '\"")]
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return [v]


def integers(minimum: int) -> Callable:
    """A non-empty list of distinct integers >= minimum (strings like "0,1" are parsed)."""
    def check(v):
        what = f"a non-empty list of distinct integers >= {minimum}, e.g. [0, 1, 2]"
        items = _listed(v)
        try:
            out = [_as_int(int(x) if isinstance(x, str) and re.fullmatch(r"[+-]?\d+", x) else x, minimum)
                   for x in items]
        except Invalid:
            raise Invalid(what) from None
        if not out or len(set(out)) != len(out):
            raise Invalid(what)
        return out
    return check


def choice(allowed: Iterable[str] | Callable[[], Iterable[str]], optional: bool = False) -> Callable:
    def check(v):
        if v is None and optional:
            return None
        names = list(allowed() if callable(allowed) else allowed)
        if not isinstance(v, str) or v not in names:
            raise Invalid(f"one of {names}" + " or None" * optional)
        return v
    return check


def choices(allowed: Iterable[str] | Callable[[], Iterable[str]]) -> Callable:
    """A non-empty list of distinct allowed names (a comma-separated string is parsed)."""
    def check(v):
        names = list(allowed() if callable(allowed) else allowed)
        items = _listed(v)
        if not items or any(not isinstance(x, str) or x not in names for x in items) or len(set(items)) != len(items):
            raise Invalid(f"a non-empty list of distinct names from {names}")
        return items
    return check


def boolean(optional: bool = False) -> Callable:
    def check(v):
        if (v is None and optional) or isinstance(v, (bool, np.bool_)):
            return None if v is None else bool(v)
        raise Invalid("True or False" + " or None" * optional)
    return check


def path(optional: bool = True, kind: str = "any") -> Callable:
    """A path (str or PathLike; None when optional). kind "file": an existing file; "dir": an existing
    folder; "writable": a
    directory that exists and is writable, or can be created (its nearest existing parent is a
    writable directory)."""
    def check(v):
        if v is None and optional:
            return None
        if not isinstance(v, (str, os.PathLike)) or not str(v):
            raise Invalid("a path" + " or None" * optional)
        p = Path(v).expanduser()
        if kind == "file" and not p.is_file():
            raise Invalid("an existing file" + " or None" * optional + ": no such file")
        if kind == "dir" and not p.is_dir():
            raise Invalid("an existing folder" + " or None" * optional + ": no such folder")
        if kind == "writable":
            problem = unwritable(p)
            if problem:
                raise Invalid(f"a writable directory ({problem})")
        return v
    return check


def unwritable(p: Path) -> str | None:
    """Why directory ``p`` cannot be written (or created), or None when it can. No side effects."""
    p = Path(p).expanduser().absolute()
    for parent in (p, *p.parents):
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{parent} is not writable"
            return None
    return f"no existing parent of {p}"


def column(optional: bool = False) -> Callable:
    """A CSV column name: a non-empty string (None when optional)."""
    def check(v):
        if v is None and optional:
            return None
        if not isinstance(v, str) or not v.strip():
            raise Invalid("a column name" + " or None" * optional)
        return v.strip()
    return check


def columns(v):
    """``attributes``: None, or a non-empty list of distinct column names (``"colour,shape"`` is parsed)."""
    if v is None:
        return None
    items = _listed(v)
    if not items or any(not isinstance(x, str) or not x.strip() for x in items) or len(set(items)) != len(items):
        raise Invalid("None or a non-empty list of distinct column names, e.g. colour,shape")
    items = [x.strip() for x in items]
    if any(x in RESERVED_COLUMNS for x in items):
        raise Invalid(f"column names other than {list(RESERVED_COLUMNS)} (the study's own columns)")
    return items


DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def device(v):
    """``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"``; cuda and mps must be available here."""
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
        raise Invalid(f"one of {list(DEVICES)}")
    if v.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(v.partition(":")[2] or 0)
        if index >= n:
            raise Invalid(f"an available device: {'no CUDA GPU here' if not n else f'{n} CUDA GPU(s) here'}; "
                          "use 'cpu' or 'auto'")
    if v == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise Invalid("an available device: MPS is not available here; use 'cpu' or 'auto'")
    return v


def jobs(v):
    """``n_jobs``: ``"auto"`` (one worker process per core, capped by the fits to do; 1 on a GPU), None
    (the same) or an integer >= 1 (1: one fit after the other in the notebook's process)."""
    if v is None or v == "auto":
        return v
    try:
        return _as_int(int(v) if isinstance(v, str) and re.fullmatch(r"\d+", v) else v, 1)
    except Invalid:
        raise Invalid("'auto', None or an integer >= 1") from None


def runset(v):
    """05's ``dataset``: a run set, ``<dataset>`` (random split) or ``<dataset>-<split>``."""
    allowed = [d if s == "random" else f"{d}-{s}" for d in DATASETS for s in SPLITS]
    if v not in allowed:
        raise Invalid(f"one of {allowed}")
    return v


def _backbones() -> list[str]:
    from ..backbones import list_backbones

    return list_backbones()


# ----------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Param:
    check: Callable[[Any], Any]
    default: Any
    doc: str = ""


#: The head's hyper-parameters and their defaults: BoostHead's own (the study's settings).
HEAD_DEFAULTS: dict[str, Any] = head_params()

PARAMS: dict[str, Param] = {
    # data and sample
    "dataset": Param(choice(DATASETS), "synthetic", "data set"),
    "data_dir": Param(path(), None, "data folder (Kaggle layout); None: the default location"),
    # dataset "csv": a catalogue of your own (attrboost.data.load_csv)
    "csv": Param(path(kind="file"), None, "dataset csv: the catalogue file"),
    "images": Param(path(kind="dir"), None, "dataset csv: the image folder (images at <images>/<id>.jpg); None: the CSV's folder"),
    "attributes": Param(columns, None, "dataset csv: the attribute columns (any number >= 1)"),
    "id_column": Param(column(), "id", "dataset csv: the id column"),
    "text_column": Param(column(optional=True), None, "dataset csv: the product-name column tags come from; None: no tags"),
    "n_groups": Param(integer(1), PROTOCOL_DEFAULTS["n_groups"], "attribute groups sampled"),
    "per_group": Param(integer(1), PROTOCOL_DEFAULTS["per_group"], "images per group (and the minimum group size)"),
    "split": Param(choice(SPLITS), PROTOCOL_DEFAULTS["split"], "train/test split"),
    "seed": Param(integer(0), 0, "the sample (and the head's initialisation)"),
    "seeds": Param(integers(0), [0, 1, 2], "the samples"),
    "show_images": Param(boolean(optional=True), None, "None: only for the synthetic data"),
    # backbone and features
    "backbone": Param(choice(_backbones), "efficientnet_lite0", "feature extractor"),
    "weights": Param(path(kind="file"), None, "local weights file"),
    "device": Param(device, "auto", "device of feature extraction (02) and of the heads and baselines (03/04/06)"),
    "n_jobs": Param(jobs, "auto", "worker processes for the independent head and baseline fits (03/04/06)"),
    "batch_size": Param(integer(1), HEAD_DEFAULTS["batch_size"],
                        "batch size (feature extraction in 02, head training in 03/04/06)"),
    # head hyper-parameters (docs/protocol.md): BoostHead's defaults
    "tasks": Param(choices(TASKS), list(TASKS), "head tasks"),
    "hidden_dim": Param(integer(1, optional=True), HEAD_DEFAULTS["hidden_dim"], "None: the input width"),
    "lr": Param(number(0), HEAD_DEFAULTS["lr"], "learning rate"),
    "weight_decay": Param(number(0), HEAD_DEFAULTS["weight_decay"], "weight decay"),
    "max_epochs": Param(integer(1), HEAD_DEFAULTS["max_epochs"], "most epochs"),
    "stop_loss": Param(number(0, optional=True), HEAD_DEFAULTS["stop_loss"],
                       "stop when the training loss falls below this; None: never"),
    "selection": Param(choice(SELECTIONS), HEAD_DEFAULTS["selection"],
                       "model selection on the validation part (val_map@r: the rule every method shares)"),
    "patience": Param(integer(1, optional=True), HEAD_DEFAULTS["patience"], "epochs without validation improvement before stopping; None: never stop early"),
    "tag_weight": Param(number(0, 1), HEAD_DEFAULTS["tag_weight"], "Task 3: the tag decoder's share of the loss"),
    # outputs and 05/06
    "results_dir": Param(path(kind="writable"), None, "where 04/06 write their tables; None: nowhere"),
    "runs_dir": Param(path(), None, "run set folder 05 reads; None: papermill_runs/<dataset>"),
    "figures_dir": Param(path(kind="writable"), None, "figures folder; None: runs/figures/<run set> (git-ignored)"),
    "example_backbone": Param(choice(_backbones, optional=True), None, "05's retrieval example"),
    "baselines": Param(choices(BASELINES), list(BASELINES), "06's label-aware baselines"),
    "budgets": Param(integers(2), list(BUDGETS), "06's label budgets (>= 2 images each)"),
    "ablation": Param(boolean(), True, "06's attribute ablation"),
    "quick": Param(boolean(), True, "06's quick configuration (beyond.QUICK: sections 2-5 on the first seed, two budgets, "
                                    "two attributes ablated); the study runner passes False"),
    # 07: search a whole catalogue
    "task": Param(choice(TASKS), "task1", "07's head task"),
    "kinds": Param(choices(INDEX_KINDS), list(INDEX_KINDS), "07's faiss index kinds"),
    "k": Param(integer(1), 10, "neighbours a search returns"),
    "n_queries": Param(integer(2, optional=True), 2000,
                       "07's queries for retrieval quality over the catalogue; None: every eligible item"),
    "n_latency": Param(integer(1), 200, "07's single-vector searches timed per index"),
    "n_image_queries": Param(integer(1), 30, "07's single-image queries timed end to end"),
    "out_dir": Param(path(kind="writable"), None, "07: where to save the model bundle and the index; None: not saved"),
}

CSV = ("csv", "images", "attributes", "id_column", "text_column")  # pipeline.CSV_OPTIONS
_DATA = ("dataset", "data_dir", *CSV, "n_groups", "per_group", "split")
_HEAD = ("hidden_dim", "lr", "weight_decay", "batch_size", "max_epochs", "stop_loss", "selection", "patience",
         "tag_weight")
_FITS = ("device", "n_jobs")  # where the fits run: not part of the protocol

#: Which parameters each notebook's parameter cell declares, in the cell's order.
NOTEBOOKS: dict[str, tuple[str, ...]] = {
    "01_data": (*_DATA, "seed", "show_images"),
    "02_embeddings": (*_DATA, "seeds", "backbone", "weights", "device", "batch_size"),
    "03_train": (*_DATA, "backbone", "weights", "tasks", "seed", *_HEAD, *_FITS),
    "04_evaluate": (*_DATA, "backbone", "weights", "tasks", "seeds", "results_dir", *_HEAD, *_FITS),
    "05_figures": ("dataset", "runs_dir", "figures_dir", "data_dir", *CSV, "example_backbone", "show_images"),
    "06_beyond": (*_DATA, "backbone", "weights", "seeds", "baselines", "budgets", "ablation", "quick",
                  "results_dir", "figures_dir", *_HEAD, *_FITS),
    "07_search": (*_DATA, "seed", "seeds", "show_images", "backbone", "weights", "device", "task", *_HEAD, "kinds",
                  "k", "n_queries", "n_latency", "n_image_queries", "out_dir"),
}

#: The committed 02, 04 and 06 run the quick configuration ``pytest --nbval`` executes: two seeds, the fewest
#: that give a confidence interval (the study runner passes the run set's seeds, 0-2 on the synthetic default).
QUICK_SEEDS = Param(integers(0), [0, 1], "the samples (as committed, the quick configuration: two seeds, the fewest "
                                         "with a CI; the study runner passes the run set's seeds)")

#: Where a notebook's parameter differs from :data:`PARAMS` (05 reads a run set, not a data set; 07 fits five heads;
#: 02, 04 and 06 default to the quick configuration's seeds).
OVERRIDES: dict[str, dict[str, Param]] = {
    "02_embeddings": {"seeds": QUICK_SEEDS},
    "04_evaluate": {"seeds": QUICK_SEEDS},
    "06_beyond": {"seeds": QUICK_SEEDS},
    "05_figures": {"dataset": Param(runset, "synthetic", "run set: <dataset> or <dataset>-by_group")},
    "07_search": {"seeds": Param(integers(0), [0, 1, 2, 3, 4],
                                 "07's training seeds: one head each on the sample of `seed`, on the same queries")},
}

#: Values only the study CLI has (``python -m attrboost.study``).
CLI_PARAMS: dict[str, Param] = {
    "backbones": Param(choices(_backbones), None, "backbones of the run set"),
    "out": Param(path(optional=False, kind="writable"), None, "executed notebooks and results"),
}


def spec(notebook: str | None = None) -> dict[str, Param]:
    """The parameters of ``notebook`` (in its cell's order), or every known one for None."""
    if notebook is None:
        return {**PARAMS, **CLI_PARAMS}
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; expected one of {list(NOTEBOOKS)}")
    return {n: OVERRIDES.get(notebook, {}).get(n, PARAMS[n]) for n in NOTEBOOKS[notebook]}


def defaults(notebook: str) -> dict[str, Any]:
    return {n: p.default for n, p in spec(notebook).items()}


# ----------------------------------------------------------------------------- validation
def validate(values: Mapping[str, Any], notebook: str | None = None, *,
             labels: Mapping[str, str] | None = None, check_cache: bool = True) -> dict[str, Any]:
    """Check every parameter and return them normalised; one ``ValueError`` lists all bad ones.

    With ``notebook``, every parameter of that notebook must be in ``values`` (other names, e.g. a
    notebook's other globals, are ignored: see :func:`warn_unknown`); without, each name in
    ``values`` must be a known parameter. ``labels`` renames parameters in the message (the CLI
    shows ``--n-groups``). With ``check_cache`` the cache directory (``$ATTRBOOST_CACHE``) must be
    writable too.
    """
    labels = labels or {}
    known = spec(notebook)
    names = list(known) if notebook else list(values)
    where = f" of {notebook}" if notebook else ""
    out, problems = {}, []
    for name in names:
        label = labels.get(name, name)
        if name not in known:
            problems.append(f"{label}: unknown parameter{_close(name, known)}; known: {sorted(known)}")
        elif name not in values:
            problems.append(f"{label}: missing (default {known[name].default!r})")
        else:
            try:
                out[name] = known[name].check(values[name])
            except Invalid as e:
                problems.append(f"{label}={values[name]!r}: expected {e}")
    problems += csv_problems(out, labels)
    if check_cache:
        problem = cache_problem()
        if problem:
            problems.append(problem)
    if problems:
        raise ValueError(f"invalid parameter{'s' * (len(problems) > 1)}{where}:\n  " + "\n  ".join(problems))
    return out


def csv_problems(values: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> list[str]:
    """What the valid ``values`` lack together for the ``csv`` dataset: ``dataset="csv"`` needs ``csv`` and
    ``attributes``, and the CSV's header must name every column given (read here, before any work);
    ``csv``, ``images`` and ``attributes`` are refused with another dataset. Tasks 2 and 3 learn tags
    from ``text_column``: refused without one."""
    if "dataset" not in values:
        return []
    labels = labels or {}
    label = lambda n: labels.get(n, n)  # noqa: E731
    dataset = values["dataset"].partition("-")[0]  # 05's run set: <dataset>-<split>
    if dataset != "csv":
        given = [label(n) for n in ("csv", "images", "attributes") if values.get(n) is not None]
        return [f"{', '.join(given)}: only read with dataset csv (a catalogue of your own), "
                f"not with dataset={values['dataset']!r}"] if given else []
    problems = []
    if values.get("csv") is None and "csv" in values:
        problems.append(f"{label('csv')}: missing: dataset csv needs the catalogue file (a CSV with an id column "
                        f"and the attribute columns)")
    if values.get("attributes") is None and "attributes" in values:
        problems.append(f"{label('attributes')}: missing: dataset csv needs the attribute columns, e.g. colour,shape")
    tag_tasks = [t for t in values.get("tasks") or [] if t in ("task2", "task3")]
    if tag_tasks and values.get("text_column") is None and "text_column" in values:
        problems.append(f"{label('tasks')}={values['tasks']!r}: {', '.join(tag_tasks)} learn tags from product names: "
                        f"give {label('text_column')} (or run task1 only)")
    if values.get("csv") is not None:
        problems += _header_problems(values, label)
    return problems


def _header_problems(values: Mapping[str, Any], label: Callable[[str], str]) -> list[str]:
    """The columns given (attributes, id_column, text_column) that the CSV's header lacks."""
    import pandas as pd

    path_ = Path(values["csv"]).expanduser()
    try:
        header = list(pd.read_csv(path_, nrows=0, encoding="utf-8-sig").columns)
    except Exception as e:  # noqa: BLE001 - unreadable: load_csv says why, with the file's name
        return [f"{label('csv')}={values['csv']!r}: cannot read its header ({type(e).__name__}: {e})"]
    wanted = {"attributes": values.get("attributes") or [], "id_column": [values.get("id_column")],
              "text_column": [values.get("text_column")]}
    problems = []
    for name, cols in wanted.items():
        missing = [c for c in cols if c is not None and c not in header]
        if missing:
            problems.append(f"{label(name)}: column(s) {missing} not in {path_}; its columns are {header}")
    return problems


def cache_problem() -> str | None:
    """Why the cache directory cannot be used, or None. Creates it, as any run would."""
    from ..cache import ENV_CACHE, cache_dir

    where = os.environ.get(ENV_CACHE)
    label = f"${ENV_CACHE}={where!r}" if where else "the cache directory"
    try:
        path_ = cache_dir()
    except OSError as e:
        return f"{label}: cannot create it ({e.strerror or e}); set ${ENV_CACHE} to a writable directory"
    problem = unwritable(path_)
    if problem:
        return f"{label}: {problem}; set ${ENV_CACHE} to a writable directory"
    return None


def _close(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# ----------------------------------------------------------------------------- unknown names
def head_settings(values: Mapping[str, Any], *, device: bool = True) -> dict[str, Any]:
    """The head's hyper-parameters among a notebook's (validated) parameters, in one dict for
    :func:`attrboost.study.pipeline.get_boosted` / :func:`~attrboost.study.pipeline.fit_heads`: the names of
    the head block of the parameter cells, plus ``device`` unless ``device=False``."""
    return {k: values[k] for k in (*_HEAD, *(("device",) if device else ()))}


def unknown_names(namespace: Mapping[str, Any], notebook: str) -> list[str]:
    """Globals of a notebook that are no declared parameter: a misspelt papermill ``-p`` name lands
    here (papermill injects parameters as assignments). Modules, functions, classes (anything
    callable), IPython's own names and names starting with ``_`` are not counted."""
    declared = spec(notebook)
    return sorted(n for n, v in namespace.items()
                  if n not in declared and n not in IPYTHON_NAMES and not n.startswith("_")
                  and not callable(v) and not isinstance(v, types.ModuleType))


def warn_unknown(namespace: MutableMapping[str, Any], notebook: str) -> list[str]:
    """Warn loudly (a banner and a ``UserWarning``) about each global that is no parameter of
    ``notebook``; call it first thing in the validation cell, before any other global is set.
    Returns the unknown names. Only the first call in a session checks: re-running the cell in
    Jupyter after later cells would otherwise list their variables."""
    if namespace.get(_CHECKED):
        return []
    namespace[_CHECKED] = True
    declared = spec(notebook)
    unknown = unknown_names(namespace, notebook)
    if unknown:
        lines = [f"{n} = {namespace[n]!r} is not a parameter of {notebook}{_close(n, declared)}" for n in unknown]
        text = ("unknown parameter(s), ignored (the defaults are used):\n  " + "\n  ".join(lines)
                + f"\nparameters of {notebook}: {list(declared)}")
        print("!" * 78 + "\n" + text + "\n" + "!" * 78)
        warnings.warn(text, UserWarning, stacklevel=2)
    return unknown


def check_known(parameters: Mapping[str, Iterable[str]]) -> None:
    """For each ``{notebook_path: parameters}``, require every name to be a parameter of the
    notebook's parameter cell (``papermill.inspect_notebook``); one ``ValueError`` names each
    notebook, unknown name and the closest known name. Notebooks without a parameter cell are skipped."""
    import papermill

    problems = []
    for nb_path, names in parameters.items():
        declared = papermill.inspect_notebook(str(nb_path))
        if not declared:
            continue
        for name in names:
            if name not in declared:
                problems.append(f"{nb_path}: unknown parameter {name!r}{_close(name, declared)}; "
                                f"known: {sorted(declared)}")
    if problems:
        raise ValueError("parameters unknown to the notebooks:\n  " + "\n  ".join(problems))

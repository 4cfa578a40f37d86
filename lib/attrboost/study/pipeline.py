"""The study's steps as small cached functions; the notebooks call these and tell the story.

    sample   = get_sample(DataConfig(dataset="synthetic"), seed=0)       # 01 data
    X        = get_features(sample, "efficientnet_lite0")                # 02 embeddings (cached)
    run      = get_boosted(sample, X, "efficientnet_lite0", "task1", 0)  # 03 head (cached)
    scores   = evaluate(run.emb["test"], sample, "test")                 # 04 evaluation
    runs     = fit_heads([(cfg, seed, "pca", task, {}) for seed in (0, 1, 2) for task in TASKS])  # in parallel

Caching: features of a (dataset, backbone, weights) live in one *feature store* per backbone,
keyed by item id, that grows as samples (seeds) need more images, so overlapping seeds never
extract an image twice; a head's outputs (val/test embeddings and its learning curve) are cached
by the fingerprint of the sample, the features, the task, the seed and every hyper-parameter.
All writes are atomic (:mod:`attrboost.cache`), so an interrupted run resumes where it stopped;
every read is validated (key, checksum, arrays, shapes, ids), and a damaged file is moved to
``<cache>/quarantine/`` with a warning and recomputed.

Independent fits (seeds x tasks, 06's baselines) run in worker processes (:func:`fit_heads`,
:func:`run_fits`), one torch and one BLAS thread each: a fit gives the same bits wherever it runs.

Reporting (the original table, results files, the retrieval example) is :mod:`attrboost.study.report`;
facts about a backbone (width, preprocessing, GFLOPs) are :mod:`attrboost.backbones`'; the notebooks'
parameters are :mod:`attrboost.study.params`.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import __version__
from ..cache import (cache_dir, check_embeddings, code_hash, computing, embeddings_expect, fingerprint,
                     load_checked, save_checked)
from ..checks import check_int
from ..inference import device_name
from ..data import Catalogue, Sample, load_dataset, sample_protocol
from ..data.sampling import PROTOCOL_DEFAULTS
from ..heads import TASKS, BoostHead
from ..training import numerics


#: The options of the ``csv`` dataset (:func:`attrboost.data.load_csv`), as DataConfig fields and notebook parameters.
CSV_OPTIONS = ("csv", "images", "attributes", "id_column", "text_column")


@dataclass(frozen=True)
class DataConfig:
    """Which data and which protocol sample (defaults: :func:`~attrboost.data.sampling.sample_protocol`'s).

    ``dataset="csv"`` is a user's own catalogue (:func:`attrboost.data.load_csv`): ``csv`` (the file),
    ``images`` (the image folder; None: the CSV's folder), ``attributes`` (the label columns, any number
    >= 1), ``id_column`` (images are ``<images>/<id>.jpg``) and ``text_column`` (the names tags come from;
    None: no tags). The catalogue's fingerprint (the key of every cache) covers the CSV's content and
    these options."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    n_groups: int = PROTOCOL_DEFAULTS["n_groups"]
    per_group: int = PROTOCOL_DEFAULTS["per_group"]
    n_test: int | None = PROTOCOL_DEFAULTS["n_test"]
    split: str = PROTOCOL_DEFAULTS["split"]
    val_fraction: float = PROTOCOL_DEFAULTS["val_fraction"]
    csv: str | None = None
    images: str | None = None
    attributes: tuple[str, ...] | None = None
    id_column: str = "id"
    text_column: str | None = None

    def __post_init__(self):
        if self.attributes is not None:  # a list (or "a,b") becomes a tuple: the config is hashable
            attrs = self.attributes.split(",") if isinstance(self.attributes, str) else self.attributes
            object.__setattr__(self, "attributes", tuple(str(a).strip() for a in attrs if str(a).strip()))
        for name in ("csv", "images"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        given = [n for n in ("csv", "images", "attributes") if getattr(self, n) is not None]
        if self.dataset != "csv" and given:
            raise ValueError(f"DataConfig: {', '.join(given)} given with dataset={self.dataset!r}; they are "
                             "read only with dataset='csv' (a catalogue of your own)")
        if self.dataset == "csv" and (self.csv is None or not self.attributes):
            raise ValueError(f"DataConfig(dataset='csv'): give csv (the catalogue file, got {self.csv!r}) and "
                             f"attributes (its label columns, got {self.attributes!r})")

    @classmethod
    def from_params(cls, values) -> "DataConfig":
        """The DataConfig of a notebook's (or a run's) parameters: the entries of ``values`` named like a
        field (others, e.g. a notebook's other globals, are ignored)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: values[n] for n in names if n in values})

    def catalogue_options(self) -> dict:
        """The keyword arguments :func:`get_catalogue` takes besides dataset and data_dir."""
        if self.dataset != "csv":
            return {}
        return dict(csv=self.csv, images=self.images, attributes=self.attributes, id_column=self.id_column,
                    text_column=self.text_column)


@functools.lru_cache(maxsize=4)
def get_catalogue(dataset: str = "synthetic", data_dir: str | None = None, **csv_options) -> Catalogue:
    """The catalogue of a dataset (:func:`attrboost.data.load_dataset`); ``csv_options``
    (:data:`CSV_OPTIONS`, hashable values) for ``dataset="csv"``."""
    return load_dataset(dataset, data_dir, **csv_options)


@functools.lru_cache(maxsize=16)
def get_sample(cfg: DataConfig, seed: int) -> Sample:
    """The protocol sample for one seed (the seed varies the groups, the images and the split)."""
    cat = get_catalogue(cfg.dataset, cfg.data_dir, **cfg.catalogue_options())
    return sample_protocol(cat, n_groups=cfg.n_groups, per_group=cfg.per_group, n_test=cfg.n_test,
                           split=cfg.split, val_fraction=cfg.val_fraction, seed=seed)


# ----------------------------------------------------------------------------- features
def get_features(sample: Sample, backbone: str, *, weights=None, device: str = "auto", batch_size: int = 32,
                 num_workers: int | str = "auto", progress: bool = True, preprocessing: str = "crop") -> np.ndarray:
    """Frozen features for every row of ``sample.items`` (float32, rows aligned).

    Pretrained CNN/ViT backbones read the per-backbone feature store and extract only the images
    it lacks (:func:`attrboost.features.extract_features`). ``pca`` is fitted on the sample's training part
    only, so it is cached per sample. ``preprocessing``: "crop" (default) or "pad"
    (:func:`attrboost.backbones.create_transform`; CNN/ViT backbones only).
    """
    from ..backbones import get_spec, resolve_weights
    from ..features import extract_features
    from .embed import embed

    get_spec(backbone)  # clear error for unknown names before any work
    items = sample.items
    if backbone == "pca":
        return embed("pca", items, train_ids=sample.part("train")["id"].tolist(),
                     dataset_fp=sample.dataset_fingerprint, progress=progress)
    resolved = resolve_weights(backbone, weights)  # once: the store's key and the model both use it
    # one extraction per sample and backbone at a time: a process that needs the same features meanwhile (two
    # notebooks of a test run) waits, then finds them in the store instead of extracting them again
    with computing(cache_dir() / "features" / "locks" / f"{backbone}-{sample.fingerprint}"):
        return extract_features(resolved, items["image_path"].tolist(), items["id"].tolist(), device=device,
                                batch_size=batch_size, num_workers=num_workers, dataset_fp=sample.dataset_fingerprint,
                                progress=progress, preprocessing=preprocessing)[1]


def get_catalogue_features(cfg: DataConfig, backbone: str, *, weights=None, device: str = "auto",
                           batch_size: int = 32, num_workers: int | str = "auto",
                           progress: bool = True) -> tuple[Catalogue, np.ndarray]:
    """``(catalogue, features)``: frozen features of every item of the catalogue (rows aligned with
    ``catalogue.items``), through the same feature store as :func:`get_features` (a protocol sample's images
    are not extracted twice; an interrupted run resumes). Pretrained CNN/ViT backbones only: ``pca`` is
    fitted on a sample, not a catalogue-wide encoder."""
    from ..backbones import get_spec, resolve_weights
    from ..features import extract_features

    if not get_spec(backbone).is_torch:
        raise ValueError(f"backbone={backbone!r}: a whole catalogue is embedded with a pretrained backbone "
                         "(e.g. efficientnet_lite0); pca is fitted on a protocol sample's training part only")
    cat = get_catalogue(cfg.dataset, cfg.data_dir, **cfg.catalogue_options())
    items = cat.items
    X = extract_features(resolve_weights(backbone, weights), items["image_path"].tolist(), items["id"].tolist(),
                         device=device, batch_size=batch_size, num_workers=num_workers,
                         dataset_fp=cat.fingerprint, progress=progress)[1]
    return cat, X


# ----------------------------------------------------------------------------- heads
#: the modules whose code computes a cached head's outputs (part of its cache key, :func:`attrboost.cache.code_hash`)
HEAD_CODE = ("attrboost.heads", "attrboost.headnet", "attrboost.training", "attrboost.metrics", "attrboost.neighbours",
             "attrboost.data.sampling", "attrboost.data.tags", "attrboost.study.pipeline")

@dataclass
class HeadRun:
    """What a trained head leaves behind: boosted embeddings per part and its learning curve."""

    task: str
    seed: int
    emb: dict[str, np.ndarray]
    history: pd.DataFrame
    best_epoch: int
    fit_seconds: float
    params: dict = field(default_factory=dict)


def head_params(**overrides) -> dict:
    """The head's hyper-parameters: :class:`~attrboost.heads.BoostHead`'s defaults (the study's
    settings, docs/protocol.md; the notebooks' parameter cells use them too) with ``overrides`` applied.
    ``device="auto"`` becomes the device it picks (``"cuda"`` when available, else ``"cpu"``): the
    device is part of a head's cache key, as results differ (in the last bits) between devices."""
    params = BoostHead().get_params()
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown head parameter(s) {sorted(unknown)}; known: {sorted(params)}")
    params.update(overrides)
    for per_run in ("task", "seed", "progress"):  # given per call, not hyper-parameters
        params.pop(per_run, None)
    if params["device"] != "cpu":
        params["device"] = device_name(params["device"])
    return params


def _head_entry(sample: Sample, X: np.ndarray, backbone: str, task: str, seed: int, params: dict):
    """(path, key, expected arrays, part masks) of a head's cache entry."""
    key = fingerprint("head", __version__, code_hash(*HEAD_CODE), numerics(), sample.fingerprint, fingerprint(X),
                      backbone, task, seed, params)
    path = cache_dir() / "heads" / backbone / f"{task}-{key}.npz"
    part = {p: sample.mask(p) for p in ("train", "val", "test")}
    expect = {**embeddings_expect(part), "history": ("U", ()), "best_epoch": ("i", ()), "fit_seconds": ("f", ())}
    return path, key, expect, part


def _cached_head(entry: tuple, task: str, seed: int, params: dict) -> HeadRun | None:
    """The cached :class:`HeadRun` of ``entry`` (:func:`_head_entry`), validated (a damaged entry is
    quarantined), or None."""
    path, key, expect, _ = entry
    d = load_checked(path, key, expect, check=check_embeddings(json_field="history"))
    if d is None:
        return None
    hist = pd.read_json(io.StringIO(str(d["history"])), orient="split")
    emb = {p: d[f"emb_{p}"] for p in ("train", "val", "test")}
    return HeadRun(task, seed, emb, hist, int(d["best_epoch"]), float(d["fit_seconds"]), params)


def get_boosted(sample: Sample, X: np.ndarray, backbone: str, task: str, seed: int, *, progress: bool = False,
                **head_overrides) -> HeadRun:
    """Train (or load from cache) a head on the training part, selected on the validation part, and
    return the boosted embeddings of every part. The test part is only transformed, never used."""
    import time

    if task not in TASKS:
        raise ValueError(f"task={task!r}: expected one of {list(TASKS)}")
    params = head_params(**head_overrides)
    entry = _head_entry(sample, X, backbone, task, seed, params)
    run = _cached_head(entry, task, seed, params)
    if run is not None:
        return run
    path, key, _, part = entry
    with computing(path):  # a process that misses the same head meanwhile waits and loads it
        run = _cached_head(entry, task, seed, params)
        if run is not None:
            return run
        head = BoostHead(task=task, **params, seed=seed, progress=progress)
        t0 = time.perf_counter()
        fit_head(head, sample, X)
        fit_s = time.perf_counter() - t0
        emb = {p: head.transform(X[m]) for p, m in part.items()}
        hist = head.history_.reset_index(drop=True)
        save_checked(path, key, **{f"emb_{p}": e for p, e in emb.items()},
                     history=np.array(hist.to_json(orient="split")), best_epoch=np.array(head.best_epoch_),
                     fit_seconds=np.array(fit_s))
    return HeadRun(task, seed, emb, hist, int(head.best_epoch_), fit_s, params)


def fit_head(head: BoostHead, sample: Sample, X: np.ndarray, select_on: str = "val") -> BoostHead:
    """Fit ``head`` on the sample's training part, selected on part ``select_on`` (``"val"``; 06's optimistic
    "test-selected" rule alone passes ``"test"``)."""
    train, sel = sample.part("train"), sample.part(select_on)
    # an attribute constant in the training part cannot be learned: leave it out of the head's targets
    attrs = [a for a in sample.attributes if train[a].nunique() > 1]
    # y_val also holds the group (the full attribute tuple, even for a sample with an attribute removed from
    # the targets): model selection's retrieval score uses the same relevance as the evaluation; validation
    # rows with a value the classifiers never saw (split="by_group") are left out of the loss by BoostHead
    return head.fit(X[sample.mask("train")], train[attrs], tags=sample.tags("train"),
                    X_val=X[sample.mask(select_on)], y_val=sel[[*attrs, "group"]], tags_val=sample.tags(select_on))


# ----------------------------------------------------------------------------- many fits at once
def resolve_n_jobs(n_jobs, n_fits: int, device: str = "cpu") -> int:
    """Worker processes for ``n_fits`` independent fits: ``"auto"`` (or None) = the cores this process may
    use (``os.sched_getaffinity``), or 1 on a GPU (one device, no gain from sharing it); an integer as
    given. Capped by ``n_fits``; at least 1."""
    if n_jobs is None or (isinstance(n_jobs, str) and n_jobs == "auto"):
        if device != "cpu" and device_name(device) != "cpu":
            return 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(cores, n_fits))
    return max(1, min(check_int(n_jobs, "n_jobs ('auto', None or an integer)"), n_fits))


def _one_thread_fit(fn, args: tuple, kwargs: dict) -> None:
    """Run one fit on one torch and one BLAS thread, wherever it runs (so a cache entry never depends on
    whether a worker or this process filled it, even for ``num_threads=None``)."""
    from ..training import one_blas_thread, torch_threads

    with torch_threads(1), one_blas_thread():
        fn(*args, **kwargs)


def _in_worker(cache: str, fn, args: tuple, kwargs: dict) -> None:
    """Run one fit in a worker process, with the parent's cache directory (:func:`_one_thread_fit`).
    The fit writes its cache entry (atomically); nothing is sent back."""
    from ..cache import ENV_CACHE

    os.environ[ENV_CACHE] = cache  # a reused worker may have been started for another cache
    _one_thread_fit(fn, args, kwargs)


def run_fits(calls: list, n_jobs: int, *, progress: bool = False, desc: str = "fits") -> None:
    """Run ``calls`` (``(function, args, kwargs)``, each a cached step that writes its own cache entry) in
    ``n_jobs`` worker processes (joblib's loky backend; large arrays are memory-mapped, not copied), each on
    one torch and one BLAS thread. ``n_jobs`` 1: in this process, one after the other.

    A fit is deterministic given its inputs and thread count, so where it runs does not change a bit of
    its result. Every entry is written atomically: a worker killed mid-fit leaves no entry (and no
    damaged one) behind (killed mid-write, at most an orphan ``.<name>.*.tmp`` that nothing reads), the
    fits finished before are kept, and calling again fits only the rest; a dead worker is reported as a
    ``RuntimeError`` saying so."""
    from tqdm.auto import tqdm

    if n_jobs <= 1 or len(calls) <= 1:
        for fn, args, kwargs in tqdm(calls, desc=desc, disable=not progress):
            _one_thread_fit(fn, args, kwargs)
        return
    from joblib import Parallel, delayed, parallel_config
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    cache = str(cache_dir())
    try:
        # loky replaces a worker that exits (e.g. its idle timeout while a long fit runs elsewhere) and says so
        # with a UserWarning naming its own file path; every result is still collected below, and a worker that
        # dies for real raises TerminatedWorkerError, so the warning is noise in the notebooks
        with warnings.catch_warnings(), parallel_config(backend="loky", inner_max_num_threads=1):
            warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given",
                                    category=UserWarning)
            results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                delayed(_in_worker)(cache, fn, args, kwargs) for fn, args, kwargs in calls)
            for _ in tqdm(results, total=len(calls), desc=desc, disable=not progress):
                pass
    except TerminatedWorkerError as exc:
        raise RuntimeError(f"a worker process died while running {len(calls)} {desc} in {n_jobs} processes "
                           f"(killed, or out of memory: try fewer n_jobs); the fits it finished are cached "
                           f"and a new call fits only the rest") from exc


def fit_heads(jobs, *, n_jobs="auto", weights=None, device=None, progress: bool = False) -> list[HeadRun]:
    """Fit the heads of ``jobs`` that are not cached yet, in parallel worker processes, and return every
    job's :class:`HeadRun` (in the order of ``jobs``), as :func:`get_boosted` gives it.

    ``jobs``: ``(data, seed, backbone, task, overrides)`` with ``data`` a :class:`DataConfig` (the sample
    is :func:`get_sample` ``(data, seed)``, its features :func:`get_features` with ``weights``) or a
    ``(sample, X)`` pair; ``overrides``: the head's hyper-parameters (:func:`head_params`). ``device``: the
    heads' device where a job's overrides set none (None: BoostHead's default, the CPU).
    ``n_jobs``: :func:`resolve_n_jobs` (``"auto"``: one process per core, capped by the fits to do; 1 on
    a GPU); 1: one fit after the other in this process, as a loop over :func:`get_boosted` would.
    Results are bit-identical for any ``n_jobs`` (each fit is deterministic and runs on one thread)."""
    prepared, features = [], {}
    for job in jobs:
        try:
            data, seed, backbone, task, overrides = job
        except (TypeError, ValueError):
            raise ValueError(f"fit_heads: a job is (data, seed, backbone, task, overrides), got {job!r:.200}") from None
        if task not in TASKS:
            raise ValueError(f"task={task!r}: expected one of {list(TASKS)}")
        overrides = dict(overrides or {})
        if device is not None:
            overrides.setdefault("device", device)
        params = head_params(**overrides)
        if isinstance(data, DataConfig):
            sample = get_sample(data, seed)
            fkey = (data, seed, backbone)
            if fkey not in features:
                features[fkey] = get_features(sample, backbone, weights=weights, device=params["device"],
                                              progress=progress)
            X = features[fkey]
        else:
            sample, X = data
        prepared.append((sample, X, backbone, task, seed, overrides, params))
    done, todo, paths = {}, {}, []
    for sample, X, backbone, task, seed, overrides, params in prepared:
        entry = _head_entry(sample, X, backbone, task, seed, params)
        path = entry[0]
        paths.append(path)
        if path not in done and path not in todo:
            run = _cached_head(entry, task, seed, params)
            if run is None:
                todo[path] = (get_boosted, (sample, X, backbone, task, seed), overrides)
            else:
                done[path] = run
    gpu = [p[-1]["device"] for p in prepared if p[-1]["device"] != "cpu"]
    n = resolve_n_jobs(n_jobs, len(todo), gpu[0] if gpu else "cpu")
    run_fits([(fn, args, dict(kw, progress=progress and n == 1)) for fn, args, kw in todo.values()], n,
             progress=progress, desc="head fits")
    return [done.get(path) or get_boosted(sample, X, backbone, task, seed, **overrides)
            for path, (sample, X, backbone, task, seed, overrides, _) in zip(paths, prepared)]


# ----------------------------------------------------------------------------- evaluation
def evaluate(emb: np.ndarray, sample: Sample, part: str = "test") -> dict[str, float]:
    """Every retrieval metric for one embedding of one part (queries and gallery = that part); the
    original paper metric's tokens come from the product names (``sample.names``)."""
    from ..metrics import evaluate as _evaluate

    return _evaluate(emb, sample.labels(part), sample.tags(part), sample.names(part))


def tidy(rows: list[dict]) -> pd.DataFrame:
    """Results as the tidy table every notebook and the study share (``split``: the split strategy)."""
    cols = ["dataset", "split", "backbone", "embedding", "seed", "metric", "value"]
    return pd.DataFrame(rows, columns=cols)



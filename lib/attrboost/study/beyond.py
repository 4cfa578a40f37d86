"""Beyond the original study: label-aware baselines, a label budget, an attribute ablation.

The cached step (same cache, same atomic writes as :mod:`attrboost.study.pipeline`) and the experiments
notebook 06 runs, each returning a tidy table (one row per experiment, method, n_train, seed, part,
metric: the columns of ``beyond.csv``)::

    run = get_baseline(sample, X, "efficientnet_lite0", "supcon", seed=0)   # a baseline's embeddings
    base = run_baselines(cfg, "efficientnet_lite0", seeds=[0, 1, 2])        # raw, Task 1, every baseline
    bud = label_budget(base.samples, base.features, "efficientnet_lite0", [250, 500], "lda")
    abl = ablation(base.samples, base.features, "efficientnet_lite0", ["baseColour"])
    paired_deltas(test_scores, reference="task1")                           # paired by seed, 95% CI
    write_results(scores, "runs/synthetic", dataset="synthetic", split="random", backbone=...)

Each experiment first fits what is not cached yet in worker processes (:func:`prefetch`, ``n_jobs``;
the same bits as one fit after the other), then scores the cached fits; ``device`` is where the heads
and the metric-learning baselines train.

The baselines and their registry are :mod:`attrboost.study.baselines`; the sample transforms the budget
and the ablation use (:func:`~attrboost.data.sampling.subsample_train`,
:func:`~attrboost.data.sampling.without_attribute`) are :mod:`attrboost.data.sampling`'s.

Protocol choices (stated again in notebook 06; see docs/protocol.md):

* Every method sees the same frozen features, the same training part and the same validation
  part; the test part is only transformed.
* Hyper-parameters are chosen on the validation part only: PCA whitening's width from
  :data:`PCA_GRID` by validation MAP@R; the metric-learning heads' epoch by validation MAP@R with the
  boosting head's patience and epoch cap (the study's one rule, :data:`attrboost.training.PATIENCE`; a
  notebook's ``max_epochs`` / ``patience`` apply to both);
  LDA's shrinkage is analytic (Ledoit-Wolf); NCA runs with fixed settings (64 dims after a PCA to
  256, 50 L-BFGS iterations: about 1 min a fit here), too slow here to tune.
* Label budget: the first ``n`` of a seeded permutation of the training part (nested: the 500 are
  a superset of the 250); validation and test parts unchanged, so validation labels (300 images
  in the default protocol) are used for selection at every budget.
* Attribute ablation: Task 1 without one attribute as a target; the *evaluation* still uses all
  attributes (the retrieval ground truth does not change).
* Selection sensitivity (:func:`selection_sensitivity`): Task 1 and the SupCon head under each rule of
  :data:`SELECTION_RULES`; "test-selected" is the original's procedure (the checkpoint with the best
  *test* score, up to the stop rule): optimistic by construction, computed only to measure how much it
  inflates a score, never used for a claim.
* Task 3's tag weight (:func:`tag_weight_runs`): the default 0.5 against 1/8 (the original's averaging
  of the loss over its 8 outputs).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from . import pipeline as P
from .baselines import BASELINES, METRIC_LOSSES, MULTISIMILARITY, MetricHead, group_labels, make_baseline
from ..cache import (atomic_write, cache_dir, cached, check_embeddings, code_hash, computing, embeddings_expect,
                     fingerprint, load_checked, save_checked)
from ..heads import BoostHead
from ..training import numerics
from ..data import Sample
from ..data.sampling import subsample_train, without_attribute
from ..metrics import map_at_r_quiet
from .stats import mean_ci

BASELINE_LABELS = {"pca_whiten": "PCA whitening", "lda": "LDA (group)", "nca": "NCA (group)",
                   "linear_probe": "Linear probe (attributes)",
                   "supcon": "SupCon head (group)", "multisimilarity": "Multi-similarity head (group)"}
PCA_GRID = (32, 64, 128, 256)
#: The rules :func:`selection_sensitivity` compares: label -> (BoostHead settings, MetricHead settings,
#: whether the selection looks at the test part). "val_map@r" is the study's rule (the defaults).
SELECTION_RULES = {
    "val_map@r (default)": (dict(selection="val_map@r"), dict(selection="val_map@r"), False),
    "val_loss, patience 5 (old default)": (dict(selection="val_loss", patience=5), dict(selection="val_loss", patience=5),
                                           False),
    "train to the stop rule (last epoch)": (dict(selection="last", stop_loss=0.002, patience=None),
                                            dict(selection="last", patience=None), False),
    "test-selected (optimistic)": (dict(selection="val_map@r", stop_loss=0.002, patience=None),
                                   dict(selection="val_map@r", patience=None), True),
}
#: the modules whose code computes 06's cached fits (part of their cache keys, :func:`attrboost.cache.code_hash`)
BASELINE_CODE = (*P.HEAD_CODE, "attrboost.metric_head", "attrboost.study.baselines", "attrboost.study.beyond")
BUDGETS = (250, 500, 1000, 2000, 3000)
#: 06's quick configuration (``quick=True``, what ``pytest --nbval`` runs on the committed notebook): sections 2-5
#: (label budget, ablation, selection rules, tag weight) on the first seed only, these budgets (the full training
#: part is always added) and the first two attributes ablated. Section 1 keeps every seed: its checks need CIs.
#: Fewer epochs are never part of it: every fit keeps the study's selection rule. (The notebook also runs
#: section 4's selection rules for Task 1 only when ``quick``.)
QUICK = {"seeds": 1, "budgets": (250, 1000), "attributes": 2}

__all__ = ["BASELINE_LABELS", "PCA_GRID", "SELECTION_RULES", "BUDGETS", "QUICK", "Sweep", "sweep_config", "selection_sensitivity", "tag_weight_runs", "BaselineRun", "get_baseline", "budgets_for", "Baselines",
           "score_rows", "prefetch", "run_baselines", "label_budget", "ablation", "paired_deltas", "ablation_deltas",
           "labels_needed", "write_results"]


@dataclass
class BaselineRun:
    """A fitted baseline's embeddings per part, its fit time and the settings it was selected with."""

    name: str
    seed: int
    emb: dict[str, np.ndarray]
    fit_seconds: float
    params: dict = field(default_factory=dict)


def _baseline_entry(sample: Sample, X: np.ndarray, backbone: str, name: str, seed: int, params: dict, device: str):
    """(path, key, expected arrays, part masks) of a baseline's cache entry."""
    settings = make_baseline(name, seed, **params).get_params()  # clear errors before any work
    if name == "pca_whiten" and set(params) - {"n_components"}:
        raise ValueError(f"pca_whiten takes only n_components, got {sorted(params)}")
    # every setting that changes the result is in the key: the full parameters, the grid, the loss constants,
    # and the device of a torch-trained baseline off the CPU (results differ in the last bits between devices)
    settings.pop("device", None)
    extra = {"pca_grid": list(PCA_GRID)} if name == "pca_whiten" else (
        {"multisimilarity": MULTISIMILARITY} if name == "multisimilarity" else {})
    if name in METRIC_LOSSES and device != "cpu":
        extra["device"] = device
    key = fingerprint("baseline", __version__, code_hash(*BASELINE_CODE), numerics(), sample.fingerprint,
                      fingerprint(X), backbone, name, seed, settings, extra)
    path = cache_dir() / "baselines" / backbone / f"{name}-{key}.npz"
    part = {p: sample.mask(p) for p in ("train", "val", "test")}
    return path, key, {**embeddings_expect(part), "fit_seconds": ("f", ()), "params": ("U", ())}, part


def _cached_baseline(entry: tuple, name: str, seed: int) -> BaselineRun | None:
    """The cached :class:`BaselineRun` of ``entry`` (:func:`_baseline_entry`), validated (a damaged entry
    is quarantined), or None."""
    path, key, expect, _ = entry
    d = load_checked(path, key, expect, check=check_embeddings(json_field="params"))
    if d is None:
        return None
    return BaselineRun(name, seed, {p: d[f"emb_{p}"] for p in ("train", "val", "test")},
                       float(d["fit_seconds"]), json.loads(str(d["params"])))


def _features(sample: Sample, X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if len(X) != len(sample.items):
        raise ValueError(f"X has {len(X)} rows, the sample has {len(sample.items)} items")
    return X


def get_baseline(sample: Sample, X: np.ndarray, backbone: str, name: str, seed: int, *, device: str = "cpu",
                 **params) -> BaselineRun:
    """Fit (or load from cache) a baseline on the training part, select on the validation part, and
    return its embeddings of every part. The test part is only transformed. ``device`` (``"auto"``:
    cuda when available): where the metric-learning heads train; the scikit-learn baselines run on the CPU."""
    device = P.device_name(device)
    X = _features(sample, X)
    entry = _baseline_entry(sample, X, backbone, name, seed, params, device)
    run = _cached_baseline(entry, name, seed)
    if run is not None:
        return run
    with computing(entry[0]):  # a process that misses the same fit meanwhile waits and loads it
        return _cached_baseline(entry, name, seed) or _fit_baseline(entry, sample, X, name, seed, device, params)


def _fit_baseline(entry: tuple, sample: Sample, X: np.ndarray, name: str, seed: int, device: str,
                  params: dict) -> BaselineRun:
    path, key, _, part = entry
    attrs = list(sample.attributes)
    y_tr, y_va = sample.part("train")[attrs], sample.part("val")[attrs]
    val_codes = group_labels(y_va)
    t0 = time.perf_counter()
    chosen = dict(params)
    if name == "pca_whiten" and "n_components" not in params:
        # PCA components do not depend on how many are kept, and whitening scales each one on its own:
        # one fit at the widest setting, sliced, gives every width of the grid exactly
        # widths up to n_train - 1: the last component of n centred points has (near) zero variance
        cap = min(int(part["train"].sum()) - 1, X.shape[1])
        if cap < 1:
            raise ValueError(f"pca_whiten needs at least 2 training images, got {int(part['train'].sum())}")
        grid = [k for k in PCA_GRID if k <= cap] or [cap]
        est = make_baseline(name, seed, n_components=max(grid)).fit(X[part["train"]])
        wide = {p: est.transform(X[m]) for p, m in part.items()}
        scores = {k: map_at_r_quiet(wide["val"][:, :k], val_codes) for k in grid}
        k_best = max(scores, key=scores.get)  # first best on ties (grid order)
        chosen["n_components"] = int(k_best)
        chosen["val_map@r"] = {str(k): round(v, 4) for k, v in scores.items()}  # str keys: JSON round trip
        fit_s = time.perf_counter() - t0
        emb = {p: e[:, :k_best] for p, e in wide.items()}
    else:
        est = make_baseline(name, seed, **params, **({"device": device} if name in METRIC_LOSSES else {}))
        if isinstance(est, MetricHead):
            est.fit(X[part["train"]], y_tr, X[part["val"]], y_va)
            chosen["best_epoch"], chosen["n_epochs"] = est.best_epoch_, len(est.history_)
        else:
            est.fit(X[part["train"]], y_tr)
        fit_s = time.perf_counter() - t0
        emb = {p: est.transform(X[m]) for p, m in part.items()}
    save_checked(path, key, **{f"emb_{p}": e for p, e in emb.items()}, fit_seconds=np.array(fit_s),
                 params=np.array(json.dumps(chosen, sort_keys=True)))
    return BaselineRun(name, seed, emb, fit_s, chosen)


def _rule(name: str, head_params: dict) -> dict:
    """The metric-learning baselines train under the head's selection rule, epoch cap and patience (one
    rule for every method; MetricHead has no training-loss stop, so a head's ``stop_loss`` does not apply)."""
    if name not in METRIC_LOSSES:
        return {}
    return {k: head_params[k] for k in ("selection", "max_epochs", "patience") if k in head_params}


def prefetch(fits, backbone: str, *, n_jobs="auto", device: str = "auto", progress: bool = False,
             **head_params) -> int:
    """Fit, in parallel worker processes (:func:`attrboost.study.pipeline.run_fits`), every fit of ``fits`` that
    is not cached yet; returns how many were fitted. ``fits``: ``(sample, X, method, seed)``, ``method``
    ``"task1"`` (the Task 1 head with ``head_params``) or a baseline's name. ``n_jobs``:
    :func:`attrboost.study.pipeline.resolve_n_jobs`. Each fit gives the same bits as fitted alone."""
    device = P.device_name(device)
    head = P.head_params(**dict(head_params, device=device))
    calls = {}
    for sample, X, method, seed in fits:
        if method == "task1":
            entry = P._head_entry(sample, X, backbone, "task1", seed, head)
            path = entry[0]
            if path not in calls and P._cached_head(entry, "task1", seed, head) is None:
                calls[path] = (P.get_boosted, (sample, X, backbone, "task1", seed), dict(head_params, device=device))
            continue
        X = _features(sample, X)
        rule = _rule(method, head_params)
        entry = _baseline_entry(sample, X, backbone, method, seed, rule, device)
        path = entry[0]
        if path not in calls and _cached_baseline(entry, method, seed) is None:
            calls[path] = (get_baseline, (sample, X, backbone, method, seed), dict(device=device, **rule))
    P.run_fits(list(calls.values()), P.resolve_n_jobs(n_jobs, len(calls), device), progress=progress,
               desc="fits")
    return len(calls)


# ----------------------------------------------------------------------------- the experiments of notebook 06
@dataclass(frozen=True)
class Sweep:
    """What sections 2-5 of notebook 06 run: their seeds, the label budgets and how many attributes are
    ablated (None: every one; 0: no ablation)."""

    quick: bool
    seeds: tuple[int, ...]
    budgets: tuple[int, ...]
    n_attributes: int | None

    def attributes(self, sample: Sample) -> list[str]:
        """The attributes the ablation removes, one at a time."""
        return list(sample.attributes)[:self.n_attributes]

    def subset(self, per_seed: dict) -> dict:
        """``per_seed`` (seed -> sample or features) restricted to this sweep's seeds."""
        return {s: per_seed[s] for s in self.seeds}

    def describe(self) -> str:
        what = "every attribute" if self.n_attributes is None else f"{self.n_attributes} attribute(s)"
        return (f"{'quick' if self.quick else 'full'} configuration: sections 2-5 on seed(s) "
                f"{', '.join(map(str, self.seeds))}, budgets {list(self.budgets)} (+ the whole training part), "
                f"ablation of {what}")


def sweep_config(quick: bool, seeds, budgets=BUDGETS, ablation: bool = True) -> Sweep:
    """Sections 2-5 of notebook 06: :data:`QUICK` when ``quick``, else every seed, ``budgets`` and (when
    ``ablation``) every attribute. The study's run sets use ``quick=False``."""
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty: 06 needs at least one seed")
    if quick:
        return Sweep(True, seeds[:QUICK["seeds"]], tuple(QUICK["budgets"]), QUICK["attributes"] if ablation else 0)
    return Sweep(False, seeds, tuple(int(b) for b in budgets), None if ablation else 0)


def budgets_for(sample: Sample, budgets=BUDGETS) -> list[int]:
    """The budgets that fit the sample's training part; the full training part is always last."""
    n = int((sample.items["part"] == "train").sum())
    return sorted({int(b) for b in budgets if int(b) < n} | {n})


def score_rows(emb: np.ndarray, sample: Sample, part: str, **keys) -> list[dict]:
    """One row per metric of ``emb`` on ``part`` of ``sample``: ``keys`` + part, metric, value."""
    return [dict(keys, part=part, metric=m, value=v) for m, v in P.evaluate(emb, sample, part).items()]


@dataclass
class Baselines:
    """What :func:`run_baselines` leaves: the scores, the fit times, and each seed's sample and features
    (the label budget and the ablation reuse them)."""

    scores: pd.DataFrame
    fit_seconds: pd.DataFrame
    samples: dict[int, Sample]
    features: dict[int, np.ndarray]


def _progress(items, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not progress)


def run_baselines(cfg: P.DataConfig, backbone: str, seeds, baselines=BASELINES, *, weights=None,
                  device: str = "auto", n_jobs="auto", progress: bool = True, **head_params) -> Baselines:
    """Raw features, the Task 1 head (``head_params``) and every baseline, scored on the validation
    and test parts for each seed (experiment ``"baselines"``); every fit is a cached step, the missing
    ones fitted first in ``n_jobs`` worker processes (:func:`prefetch`). ``device``: the heads' and the
    metric-learning baselines' (and any feature extraction's)."""
    rows, fit_s = [], []
    samples = {seed: P.get_sample(cfg, seed) for seed in seeds}
    feats = {seed: P.get_features(samples[seed], backbone, weights=weights, device=device, progress=False)
             for seed in seeds}
    prefetch([(samples[s], feats[s], m, s) for s in seeds for m in ("task1", *baselines)], backbone,
             n_jobs=n_jobs, device=device, progress=progress, **head_params)
    for seed in _progress(seeds, "seeds", progress):
        sample, X = samples[seed], feats[seed]
        embs = {"raw": {p: X[sample.mask(p)] for p in ("val", "test")}}
        head = P.get_boosted(sample, X, backbone, "task1", seed, **dict(head_params, device=device))
        embs["task1"] = head.emb
        fit_s.append(dict(method="task1", seed=seed, seconds=head.fit_seconds, selected_epoch=head.best_epoch))
        for name in baselines:
            run = get_baseline(sample, X, backbone, name, seed, device=device, **_rule(name, head_params))
            embs[name] = run.emb
            fit_s.append(dict(method=name, seed=seed, seconds=run.fit_seconds, params=run.params,
                              selected_epoch=run.params.get("best_epoch")))
        epochs = {f["method"]: f["selected_epoch"] for f in fit_s if f["seed"] == seed}
        for method, e in embs.items():
            for part in ("val", "test"):
                rows += score_rows(e[part], sample, part, experiment="baselines", method=method, n_train=None,
                                   seed=seed)
            keys = dict(experiment="baselines", method=method, n_train=None, seed=seed, part="test")
            rows.append(dict(keys, metric="embedding_width", value=float(e["test"].shape[1])))
            if epochs.get(method) is not None:
                rows.append(dict(keys, metric="selected_epoch", value=float(epochs[method])))
    return Baselines(pd.DataFrame(rows), pd.DataFrame(fit_s), samples, feats)


def label_budget(samples: dict[int, Sample], features: dict[int, np.ndarray], backbone: str, budgets,
                 baseline: str, *, device: str = "auto", n_jobs="auto", progress: bool = True,
                 **head_params) -> pd.DataFrame:
    """Task 1 and ``baseline`` trained on the first ``n`` training images of each seed's sample
    (:func:`~attrboost.data.sampling.subsample_train`), for each ``n`` in ``budgets``; test scores
    (experiment ``"budget"``). The fits run first, in ``n_jobs`` processes (:func:`prefetch`)."""
    rows = []
    jobs = {(seed, n): subsample_train(samples[seed], features[seed], n, seed) for seed in samples for n in budgets}
    prefetch([(sub, Xs, m, seed) for (seed, _), (sub, Xs) in jobs.items() for m in ("task1", baseline)], backbone,
             n_jobs=n_jobs, device=device, progress=progress, **head_params)
    for (seed, n), (sub, Xs) in _progress(list(jobs.items()), "label budget", progress):
        embs = {"task1": P.get_boosted(sub, Xs, backbone, "task1", seed, **dict(head_params, device=device)).emb["test"],
                baseline: get_baseline(sub, Xs, backbone, baseline, seed, device=device,
                                       **_rule(baseline, head_params)).emb["test"]}
        for method, e in embs.items():
            rows += score_rows(e, sub, "test", experiment="budget", method=method, n_train=n, seed=seed)
    return pd.DataFrame(rows)


def ablation(samples: dict[int, Sample], features: dict[int, np.ndarray], backbone: str, attributes, *,
             device: str = "auto", n_jobs="auto", progress: bool = True, **head_params) -> pd.DataFrame:
    """Task 1 trained without one attribute at a time, scored on the test part with every attribute
    (method ``"without <attribute>"``, experiment ``"ablation"``). The fits run first, in ``n_jobs``
    processes (:func:`prefetch`)."""
    rows = []
    jobs = {(seed, a): without_attribute(samples[seed], a) for seed in samples for a in attributes}
    prefetch([(ablated, features[seed], "task1", seed) for (seed, _), ablated in jobs.items()], backbone,
             n_jobs=n_jobs, device=device, progress=progress, **head_params)
    for (seed, attr), ablated in _progress(list(jobs.items()), "ablation", progress):
        sample = samples[seed]
        run = P.get_boosted(ablated, features[seed], backbone, "task1", seed, **dict(head_params, device=device))
        rows += score_rows(run.emb["test"], sample, "test", experiment="ablation", method=f"without {attr}",
                           n_train=None, seed=seed)
    return pd.DataFrame(rows)


_DEFAULT_RULE, _STOP_RULE, _TEST_SELECTED = ("val_map@r (default)", "train to the stop rule (last epoch)",
                                            "test-selected (optimistic)")
_ONE_RUN = (_STOP_RULE, _TEST_SELECTED)  # the arms :func:`_stop_run` reads from one training run


class _TestScorer:
    """A selection scorer (BoostHead's and MetricHead's callable ``selection``) that scores each epoch's embedding
    of the test part by MAP@R over the group, as the built-in ``"val_map@r"`` scores the validation part (the same
    codes, so the same floats and the same selected epoch), and keeps the embedding of the last epoch it saw."""

    def __init__(self):
        self.codes, self.last = None, None

    def __call__(self, emb: np.ndarray, y, tags=None) -> float:
        if self.codes is None:
            self.codes = group_labels(y, len(y), "y_val")  # the codes both heads' built-in "val_map@r" uses
        self.last = np.array(emb, dtype=np.float32, copy=True)
        return map_at_r_quiet(emb, self.codes)


def _rule_estimator(method: str, rule: str, seed: int, device: str, head_params: dict):
    head_kw, metric_kw, _ = SELECTION_RULES[rule]
    if method == "task1":
        return BoostHead("task1", **{**P.head_params(**dict(head_params, device=device)), **head_kw}, seed=seed)
    return make_baseline(method, seed, **{**_rule(method, head_params), **metric_kw}, device=device)


def _rule_key(sample: Sample, X: np.ndarray, backbone: str, method: str, rule: str, seed: int, device: str,
              head_params: dict) -> str:
    settings = _rule_estimator(method, rule, seed, device, head_params).get_params()
    extra = {"multisimilarity": MULTISIMILARITY} if method == "multisimilarity" else {}
    return fingerprint("rule-fit", __version__, code_hash(*BASELINE_CODE), numerics(), sample.fingerprint,
                       fingerprint(X), backbone, method, rule, seed,
                       {k: v for k, v in settings.items() if k not in ("progress", "device")}, device,
                       "test" if SELECTION_RULES[rule][2] else "val", extra)


def _fit_on(est, sample: Sample, X: np.ndarray, select_on: str) -> None:
    if isinstance(est, BoostHead):
        P.fit_head(est, sample, X, select_on=select_on)
    else:
        attrs = list(sample.attributes)
        est.fit(X[sample.mask("train")], sample.part("train")[attrs], X[sample.mask(select_on)],
                sample.part(select_on)[attrs])


def _rule_fit(sample: Sample, X: np.ndarray, backbone: str, method: str, rule: str, seed: int, device: str,
              head_params: dict) -> dict:
    """One fit of :func:`selection_sensitivity` (cached): the test embedding and the selected epoch."""
    n_test = int(sample.mask("test").sum())
    expect = {"emb_test": (np.float32, (n_test, None)), "best_epoch": ("i", ()), "n_epochs": ("i", ())}
    if rule in _ONE_RUN:  # both arms in one entry, keyed and named by the test-selected settings
        key = _rule_key(sample, X, backbone, method, _TEST_SELECTED, seed, device, head_params)
        both = cached(cache_dir() / "selection" / backbone / f"{method}-{key}-stop-run.npz", key,
                      lambda: _stop_run(sample, X, method, seed, device, head_params),
                      expect={f"{a}_{k}": v for a in ("last", "best") for k, v in expect.items()})
        arm = "last" if rule == _STOP_RULE else "best"
        return {k: both[f"{arm}_{k}"] for k in expect}
    key = _rule_key(sample, X, backbone, method, rule, seed, device, head_params)
    path = cache_dir() / "selection" / backbone / f"{method}-{key}.npz"

    def compute():
        est = _rule_estimator(method, rule, seed, device, head_params)
        _fit_on(est, sample, X, "test" if SELECTION_RULES[rule][2] else "val")
        return {"emb_test": est.transform(X[sample.mask("test")]), "best_epoch": np.array(est.best_epoch_),
                "n_epochs": np.array(len(est.history_))}

    return cached(path, key, compute, expect=expect)


def _stop_run(sample: Sample, X: np.ndarray, method: str, seed: int, device: str, head_params: dict) -> dict:
    """The "train to the stop rule" (``last_*``) and "test-selected" (``best_*``) arms from **one** training run. Both train with the
    same settings and seed to the same stop (the training-loss stop rule, no patience) and differ only in which
    epoch's weights they keep, which never changes training: the run that keeps the epoch with the best test
    MAP@R is the test-selected arm, and the embedding its scorer saw at the last epoch is the stop-rule arm
    (the same bits as two separate fits: tests/test_beyond.py)."""
    est = _rule_estimator(method, _TEST_SELECTED, seed, device, head_params)
    scorer = _TestScorer()
    est.set_params(selection=scorer)
    _fit_on(est, sample, X, "test")
    n = np.array(len(est.history_))
    return {"best_emb_test": est.transform(X[sample.mask("test")]), "best_best_epoch": np.array(est.best_epoch_),
            "best_n_epochs": n, "last_emb_test": scorer.last, "last_best_epoch": n, "last_n_epochs": n}


def _sensitivity_fit(sample: Sample, X: np.ndarray, backbone: str, method: str, rule: str, seed: int, device: str,
                     head_params: dict) -> dict:
    if rule == _DEFAULT_RULE and P.head_params(**head_params)["selection"] == "val_map@r":
        if method == "task1":  # the study's own Task 1 head (cached)
            run = P.get_boosted(sample, X, backbone, "task1", seed, **dict(head_params, device=device))
            return {"emb_test": run.emb["test"], "best_epoch": run.best_epoch, "n_epochs": len(run.history)}
        if method in METRIC_LOSSES:  # section 1's baseline (cached): the same estimator and rule
            run = get_baseline(sample, X, backbone, method, seed, device=device, **_rule(method, head_params))
            return {"emb_test": run.emb["test"], "best_epoch": run.params["best_epoch"],
                    "n_epochs": run.params["n_epochs"]}
    return _rule_fit(sample, X, backbone, method, rule, seed, device, head_params)


def selection_sensitivity(samples: dict[int, Sample], features: dict[int, np.ndarray], backbone: str,
                          methods=("task1", "supcon"), rules=None, *, device: str = "auto", n_jobs="auto",
                          progress: bool = True, **head_params) -> pd.DataFrame:
    """Task 1 and the SupCon head under each selection rule of :data:`SELECTION_RULES`, every seed: test
    scores (experiment ``"selection"``, ``method`` = "<method> | <rule>") plus rows of metric
    ``selected_epoch`` and ``epochs_run``. Fits are cached and run first in ``n_jobs`` processes."""
    device = P.device_name(device)
    rules = list(SELECTION_RULES) if rules is None else list(rules)
    jobs = [(seed, m, r) for seed in samples for m in methods for r in rules]
    # one call per training run: the stop-rule and test-selected arms share one (:func:`_stop_run`)
    units = {(s, m, _TEST_SELECTED if r in _ONE_RUN else r): None for s, m, r in jobs}
    calls = [(_sensitivity_fit, (samples[s], features[s], backbone, m, r, s, device, head_params), {})
             for s, m, r in units]
    P.run_fits(calls, P.resolve_n_jobs(n_jobs, len(calls), device), progress=progress, desc="selection rules")
    rows = []
    for seed, m, r in jobs:
        got = _sensitivity_fit(samples[seed], features[seed], backbone, m, r, seed, device, head_params)
        keys = dict(experiment="selection", method=f"{m} | {r}", n_train=None, seed=seed)
        rows += score_rows(got["emb_test"], samples[seed], "test", **keys)
        rows += [dict(keys, part="test", metric="selected_epoch", value=float(got["best_epoch"])),
                 dict(keys, part="test", metric="epochs_run", value=float(got["n_epochs"]))]
    return pd.DataFrame(rows)


def tag_weight_runs(samples: dict[int, Sample], features: dict[int, np.ndarray], backbone: str,
                    weights=(0.5, 0.125), *, device: str = "auto", n_jobs="auto", progress: bool = True,
                    **head_params) -> pd.DataFrame:
    """Task 3 with each tag-loss weight (experiment ``"tag_weight"``, method ``"task3 | tag_weight=<w>"``):
    test scores per seed. The fits are ordinary cached heads, fitted first in ``n_jobs`` processes."""
    device = P.device_name(device)
    kw = {k: v for k, v in head_params.items() if k != "tag_weight"}
    P.fit_heads([((samples[s], features[s]), s, backbone, "task3", dict(kw, tag_weight=w, device=device))
                 for s in samples for w in weights], n_jobs=n_jobs, progress=progress)
    rows = []
    for seed in samples:
        for w in weights:
            run = P.get_boosted(samples[seed], features[seed], backbone, "task3", seed,
                                **dict(kw, tag_weight=w, device=device))
            rows += score_rows(run.emb["test"], samples[seed], "test", experiment="tag_weight",
                               method=f"task3 | tag_weight={w:g}", n_train=None, seed=seed)
    return pd.DataFrame(rows)


def paired_deltas(scores: pd.DataFrame, reference: str = "task1", methods=None, metrics=None) -> pd.DataFrame:
    """``method - reference`` per metric, paired by seed: mean and Student-t 95% CI over seeds.

    ``scores`` has columns method, seed, metric, value (one part); ``methods`` defaults to every
    method but the reference (in order of appearance), ``metrics`` to every metric. One row per
    method and metric, in that order: method, metric, delta, ci_low, ci_high.
    """
    wide = scores.pivot_table(index=["seed", "metric"], columns="method", values="value").reset_index()
    methods = [m for m in dict.fromkeys(scores["method"]) if m != reference] if methods is None else list(methods)
    metrics = list(dict.fromkeys(scores["metric"])) if metrics is None else list(metrics)
    out = []
    for name in methods:
        for metric in metrics:
            w = wide[wide["metric"] == metric]
            m, lo, hi = mean_ci((w[name] - w[reference]).to_numpy())
            out.append(dict(method=name, metric=metric, delta=m, ci_low=lo, ci_high=hi))
    return pd.DataFrame(out, columns=["method", "metric", "delta", "ci_low", "ci_high"])


def ablation_deltas(ablated: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Each ablated head minus the full Task 1 head (``test``'s ``task1`` rows), paired by seed, with
    ``gain_kept``: the % of the full head's mean gain over raw that remains (NaN without a gain > 0.01).
    Columns: attribute, metric, delta, ci_low, ci_high, gain_kept."""
    full = test[test["method"] == "task1"].set_index(["seed", "metric"])["value"]
    raw_s = test[test["method"] == "raw"].set_index(["seed", "metric"])["value"]
    out = []
    for (method, metric), g in ablated.groupby(["method", "metric"]):
        g = g.set_index(["seed", "metric"])["value"]
        m, lo, hi = mean_ci((g - full.loc[g.index]).to_numpy())
        gain = (full.loc[g.index] - raw_s.loc[g.index]).mean()
        kept = (g - raw_s.loc[g.index]).mean() / gain if gain > 0.01 else np.nan  # undefined without a gain
        out.append(dict(attribute=method.removeprefix("without "), metric=metric, delta=m, ci_low=lo, ci_high=hi,
                        gain_kept=100 * kept))
    return pd.DataFrame(out)


def labels_needed(budget: pd.DataFrame, raw_test: pd.DataFrame, method: str, metric: str = "paper_map@10",
                  share: float = 0.9) -> int | None:
    """The smallest budget on the grid whose mean gain over raw reaches ``share`` of the gain with
    every label (a grid point, so an upper bound at the grid's resolution; None when there is no
    gain to reach). ``budget``: :func:`label_budget`'s rows; ``raw_test``: the raw test scores."""
    s = budget[(budget["metric"] == metric) & (budget["method"] == method)].groupby("n_train")["value"].mean()
    raw_m = raw_test[raw_test["metric"] == metric]["value"].mean()
    full = s.iloc[-1] - raw_m
    ok = s.index[(s - raw_m) >= share * full] if full > 0 else []
    return int(ok[0]) if len(ok) else None


def write_results(scores: pd.DataFrame, results_dir: str | os.PathLike, *, dataset: str, split: str,
                  backbone: str) -> pd.DataFrame:
    """Write ``<results_dir>/beyond.csv`` atomically (values rounded to 6 decimals) with the run's
    dataset, split strategy and backbone as columns; returns the table written."""
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep = scores.assign(dataset=dataset, split=split, backbone=backbone)
    atomic_write(out / "beyond.csv", lambda tmp: keep.round(6).to_csv(tmp, index=False))
    return keep

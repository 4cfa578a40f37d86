"""Beyond the original study: label-aware baselines, a label budget, an attribute ablation.

Cached steps in the style of :mod:`attrboost.pipeline` (same cache, same atomic writes):

    run = get_baseline(sample, X, "efficientnet_lite0", "supcon", seed=0)   # a baseline's embeddings
    sub, X_sub = subsample_train(sample, X, 500, seed=0)                   # 500 labelled train images
    s_wo = without_attribute(sample, "baseColour")                          # Task 1 without one attribute

Protocol choices (stated again in notebook 06):

* Every method sees the same frozen features, the same training part and the same validation
  part; the test part is only transformed.
* Hyper-parameters are chosen on the validation part only: PCA whitening's width from
  :data:`PCA_GRID` by validation MAP@R; the metric-learning heads' epoch by validation MAP@R;
  LDA's shrinkage is analytic (Ledoit-Wolf); NCA runs with fixed settings (64 dims after a PCA to
  256, 50 L-BFGS iterations: about 1 min a fit here), too slow here to tune.
* Label budget: the first ``n`` of a seeded permutation of the training part (nested: the 500 are
  a superset of the 250); validation and test parts unchanged, so validation labels (300 images
  in the default protocol) are used for selection at every budget.
* Attribute ablation: Task 1 without one attribute as a target; the *evaluation* still uses all
  attributes (the retrieval ground truth does not change).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .baselines import (MULTISIMILARITY, GroupLDA, GroupNCA, MetricHead, PCAWhitening, _quiet_map_at_r,
                        group_labels)
from .cache import cache_dir, check_embeddings, embeddings_expect, fingerprint, load_checked, save_checked
from .data import Sample

BASELINES = ("pca_whiten", "lda", "nca", "supcon", "multisimilarity")
BASELINE_LABELS = {"pca_whiten": "PCA whitening", "lda": "LDA (group)", "nca": "NCA (group)",
                   "supcon": "SupCon head (group)", "multisimilarity": "Multi-similarity head (group)"}
PCA_GRID = (32, 64, 128, 256)
BUDGETS = (250, 500, 1000, 2000, 3000)

__all__ = ["BASELINES", "BASELINE_LABELS", "PCA_GRID", "BUDGETS", "BaselineRun", "make_baseline",
           "get_baseline", "subsample_train", "budgets_for", "without_attribute"]


def make_baseline(name: str, seed: int = 0, **params):
    """A fresh, unfitted baseline transformer by name (``params`` override its defaults)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {list(BASELINES)}")
    cls = {"pca_whiten": PCAWhitening, "lda": GroupLDA, "nca": GroupNCA}.get(name, MetricHead)
    known = set(cls().get_params()) - {"loss", "seed"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for baseline {name!r}; known: {sorted(known)}")
    if name == "nca":
        return GroupNCA(**{"seed": seed, **params})
    if cls is MetricHead:
        return MetricHead(**{"loss": name, "seed": seed, **params})
    return cls(**params)


@dataclass
class BaselineRun:
    """A fitted baseline's embeddings per part, its fit time and the settings it was selected with."""

    name: str
    seed: int
    emb: dict[str, np.ndarray]
    fit_seconds: float
    params: dict = field(default_factory=dict)


def get_baseline(sample: Sample, X: np.ndarray, backbone: str, name: str, seed: int, **params) -> BaselineRun:
    """Fit (or load from cache) a baseline on the training part, select on the validation part, and
    return its embeddings of every part. The test part is only transformed."""
    settings = make_baseline(name, seed, **params).get_params()  # clear errors before any work
    if name == "pca_whiten" and set(params) - {"n_components"}:
        raise ValueError(f"pca_whiten takes only n_components, got {sorted(params)}")
    X = np.asarray(X, dtype=np.float32)
    if len(X) != len(sample.items):
        raise ValueError(f"X has {len(X)} rows, the sample has {len(sample.items)} items")
    # every setting that changes the result is in the key: the full parameters, the grid, the loss constants
    extra = {"pca_grid": list(PCA_GRID)} if name == "pca_whiten" else (
        {"multisimilarity": MULTISIMILARITY} if name == "multisimilarity" else {})
    key = fingerprint("baseline", __version__, sample.fingerprint, fingerprint(X), backbone, name, seed, settings, extra)
    path = cache_dir() / "baselines" / backbone / f"{name}-{key}.npz"
    part = {p: sample.mask(p) for p in ("train", "val", "test")}
    d = load_checked(path, key, {**embeddings_expect(part), "fit_seconds": ("f", ()), "params": ("U", ())},
                     check=check_embeddings(json_field="params"))
    if d is not None:
        return BaselineRun(name, seed, {p: d[f"emb_{p}"] for p in ("train", "val", "test")},
                           float(d["fit_seconds"]), json.loads(str(d["params"])))
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
        scores = {k: _quiet_map_at_r(wide["val"][:, :k], val_codes) for k in grid}
        k_best = max(scores, key=scores.get)  # first best on ties (grid order)
        chosen["n_components"] = int(k_best)
        chosen["val_map@r"] = {str(k): round(v, 4) for k, v in scores.items()}  # str keys: JSON round trip
        fit_s = time.perf_counter() - t0
        emb = {p: e[:, :k_best] for p, e in wide.items()}
    else:
        est = make_baseline(name, seed, **params)
        if isinstance(est, MetricHead):
            est.fit(X[part["train"]], y_tr, X[part["val"]], y_va)
            chosen["best_epoch"] = est.best_epoch_
        else:
            est.fit(X[part["train"]], y_tr)
        fit_s = time.perf_counter() - t0
        emb = {p: est.transform(X[m]) for p, m in part.items()}
    save_checked(path, key, **{f"emb_{p}": e for p, e in emb.items()}, fit_seconds=np.array(fit_s),
                 params=np.array(json.dumps(chosen, sort_keys=True)))
    return BaselineRun(name, seed, emb, fit_s, chosen)


# ----------------------------------------------------------------------------- label budget
def budgets_for(sample: Sample, budgets=BUDGETS) -> list[int]:
    """The budgets that fit the sample's training part; the full training part is always last."""
    n = int((sample.items["split"] == "train").sum())
    return sorted({int(b) for b in budgets if int(b) < n} | {n})


def subsample_train(sample: Sample, X: np.ndarray, n_train: int, seed: int) -> tuple[Sample, np.ndarray]:
    """The sample with only ``n_train`` labelled training images (validation and test unchanged).

    The kept images are the first ``n_train`` of a permutation seeded by ``seed`` alone, so budgets
    are nested. ``n_train`` equal to the training part returns ``sample`` and ``X`` unchanged (and so
    shares their caches).
    """
    items = sample.items
    if len(X) != len(items):
        raise ValueError(f"X has {len(X)} rows, the sample has {len(items)} items")
    train_pos = np.flatnonzero((items["split"] == "train").to_numpy())
    if not isinstance(n_train, (int, np.integer)) or not 2 <= n_train <= len(train_pos):
        raise ValueError(f"n_train must be an integer between 2 and the training part's size "
                         f"{len(train_pos)}, got {n_train!r}")
    if n_train == len(train_pos):
        return sample, X
    order = np.random.default_rng([int(seed), 20261127]).permutation(len(train_pos))
    drop = np.zeros(len(items), dtype=bool)
    drop[train_pos[order[n_train:]]] = True
    keep = ~drop
    sub = dataclasses.replace(
        sample, items=items[keep], fingerprint=fingerprint(sample.fingerprint, "train_subset", int(n_train), int(seed)),
        report={**sample.report, "train_subset": int(n_train)})
    return sub, np.ascontiguousarray(X[keep])


# ----------------------------------------------------------------------------- attribute ablation
def without_attribute(sample: Sample, attribute: str) -> Sample:
    """The sample with one attribute removed from the *training targets* (Task 1 ablation).

    Evaluate the resulting embeddings with the original sample: the ground truth keeps every attribute.
    """
    if attribute not in sample.attributes:
        raise ValueError(f"unknown attribute {attribute!r}; the sample's attributes are {list(sample.attributes)}")
    return dataclasses.replace(sample, attributes=tuple(a for a in sample.attributes if a != attribute),
                               fingerprint=fingerprint(sample.fingerprint, "without", attribute))

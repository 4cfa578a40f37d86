"""A whole-catalogue benchmark: label N random items of a catalogue, search all the rest.

The study measures the boost inside a protocol sample (100 groups x 40 images, test groups drawn like the
training ones). A practitioner instead labels ``N`` random items of their own catalogue and searches all of
it. This module measures that, as small pure functions:

* :func:`label_budget_split`: the labelled rows (``N`` random items; ``"all"`` = all but a held-out 20 %),
  their validation part, the unlabelled gallery and the queries;
* :func:`retrieval_scores`: per-query MAP@R under two strict relevances and a graded nDCG@10;
* :func:`labelled_group`: whether a query's group occurs among the labelled items;
* :class:`GalleryScorer`, :func:`fit_metric_head`, :func:`rule_epoch`: model selection that works when the
  labels are spread over many small groups (validation items as queries against training + validation);
* :func:`benchmark` (per-query tidy rows), :func:`per_run` (one row per run and query subset) and
  :func:`summarise_boost` (each method minus raw, paired per query and seed, with a group-bootstrap CI).

Protocol choices (each function's docstring repeats the one it makes):

* **Budget split.** One seeded permutation of the catalogue per seed. The labelled rows are its first ``N``
  positions, so budgets are nested for a seed; ``"all"`` is the first ``n - ceil(0.2 n)`` positions, and no
  budget may exceed that, so the last 20 % of the permutation (the *held-out tail*) is unlabelled at every
  budget. The validation part is every ``1 / val_fraction``-th labelled position (10 %: positions 9, 19,
  ...), so it is nested too.
* **Queries and gallery.** The gallery is every unlabelled item; a query is searched against the gallery
  without itself. Queries are drawn from the held-out tail (a uniform random subset of the unlabelled items,
  the same pool at every budget of a seed), in the permutation's order, keeping those with at least one other
  gallery item of their group (the strictest relevance), up to ``max_queries`` (2,000).
* **Relevance.** ``group``: every attribute equal (MAP@R); ``pair``: the two attributes of ``pair`` equal,
  e.g. articleType + baseColour (MAP@R); ``graded``: nDCG@10 with gain = fraction of matching attributes
  (linear gains, ``1 / log2(rank + 1)``; ideal DCG from the whole gallery). Cosine similarity, ties broken as
  in :mod:`attrboost.metrics` (float32 resolution, then item index). Values on a 0-100 scale.
* **Query subsets.** ``labelled group``: the query's full attribute tuple occurs among the ``N`` labelled
  items (training or validation); ``unlabelled group``: it does not.
* **Model selection, one rule for every method trained by epochs** (Tasks 1/3 and the metric-learning heads):
  after each epoch, the validation items (at most ``max_val_queries``, those with another labelled item of
  their group) are queries against a gallery of training + validation items, scored by MAP@R with full-group
  relevance; best epoch kept, :data:`attrboost.training.PATIENCE` epochs without a better score stop
  training, at most :data:`~attrboost.training.MAX_EPOCHS`. The study's rule (validation part alone as
  queries and gallery) is undefined when few validation items share a group, as happens with spread labels;
  its pick over the same epochs is recorded as ``epoch_val_only``.
* **Targets.** An attribute with one value among the training rows is left out of the heads' targets
  (as in the study); Task 3's tag vocabulary is built from the training rows' product names only
  (:func:`attrboost.data.tags.tags_of`, words seen more than 5 times).
* **Combination** ``task1+supcon``: the Task 1 embedding and the SupCon embedding (each selected by the
  rule above), each L2-normalised, concatenated: its cosine is the mean of the two cosines.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..checks import check_features, check_int
from ..data.tags import tags_of
from ..heads import BoostHead
from ..metrics import map_at_r
from ..neighbours import (average_precision, encode_attributes, group_codes, knn, normalise, prepare, query_rows,
                          relevant_counts)
from ..training import PATIENCE
from .baselines import MetricHead, make_baseline
from .stats import group_bootstrap_ci

__all__ = ["BUDGET_ALL", "HOLDOUT", "VAL_FRACTION", "MAX_QUERIES", "MAX_VAL_QUERIES", "RELEVANCES", "SUBSETS",
           "METHODS", "BudgetSplit", "label_budget_split", "retrieval_scores", "labelled_group", "GalleryScorer",
           "rule_epoch", "fit_metric_head", "Embedded", "embed_method", "benchmark", "per_run", "summarise_boost",
           "group_bootstrap_ratio"]

BUDGET_ALL = "all"
HOLDOUT = 0.2  # the share of the catalogue never labelled (the held-out tail the queries come from)
VAL_FRACTION = 0.1  # the labelled items' validation share (the study's)
MAX_QUERIES = 2000
MAX_VAL_QUERIES = 1000
K_GRADED = 10
RELEVANCES = ("group", "pair", "graded")
SUBSETS = ("labelled group", "unlabelled group")
METHODS = ("raw", "task1", "task3", "supcon", "multisimilarity", "task1+supcon")
COMBINATIONS = {"task1+supcon": ("task1", "supcon")}
_SEED_TAG = 20261208  # mixed into the split's generator so it differs from every other seeded draw


# ----------------------------------------------------------------------------- inputs
def _check_items(items, attributes) -> list[str]:
    if not isinstance(items, pd.DataFrame):
        raise TypeError(f"items must be a pandas DataFrame with the attribute columns; got {type(items).__name__}")
    if isinstance(attributes, str):
        raise TypeError(f"attributes must be a list of column names, not the string {attributes!r}")
    attributes = list(attributes)
    if not attributes:
        raise ValueError("attributes must name at least one column")
    missing = [a for a in attributes if a not in items.columns]
    if missing:
        raise KeyError(f"items has no attribute column(s) {missing}; columns are {list(items.columns)}")
    if len(set(attributes)) != len(attributes):
        raise ValueError(f"attributes has duplicates: {attributes}")
    return attributes


def _check_fraction(value, name: str) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not (0 < value < 1):
        raise ValueError(f"{name} must be a number in (0, 1); got {value!r}")
    return float(value)


def _codes(items: pd.DataFrame, attributes: list[str]) -> np.ndarray:
    """(n, n_attrs) integer codes, the metrics' encoding (missing values an ordinary value)."""
    return encode_attributes(items[attributes], len(items), "items")


# ----------------------------------------------------------------------------- the split
@dataclass(frozen=True)
class BudgetSplit:
    """Row positions (into ``items``) of one budget and seed. ``train`` + ``val`` are the labelled items
    (``n_labelled`` = the budget), ``gallery`` every unlabelled item (ascending), ``queries`` the query items
    (ascending, a subset of the gallery); ``budget`` is the budget as asked (an int or ``"all"``)."""

    budget: int | str
    n_labelled: int
    seed: int
    train: np.ndarray
    val: np.ndarray
    gallery: np.ndarray
    queries: np.ndarray

    @property
    def labelled(self) -> np.ndarray:
        return np.sort(np.concatenate([self.train, self.val]))

    def query_positions(self) -> np.ndarray:
        """The queries' positions within ``gallery`` (what :func:`retrieval_scores` takes)."""
        return np.searchsorted(self.gallery, self.queries)


def max_budget(n_items: int, holdout: float = HOLDOUT) -> int:
    """The largest label budget (``"all"``): every item but the held-out ``ceil(holdout * n)``."""
    return int(n_items - math.ceil(_check_fraction(holdout, "holdout") * n_items))


def label_budget_split(items: pd.DataFrame, attributes: Sequence[str], budget: int | str, seed: int, *,
                       holdout: float = HOLDOUT, val_fraction: float = VAL_FRACTION,
                       max_queries: int | None = MAX_QUERIES) -> BudgetSplit:
    """Split a catalogue for a label budget: labelled training and validation rows, the unlabelled gallery
    and the queries.

    Protocol: one permutation of the rows per ``seed`` (``numpy.random.default_rng([seed, tag])``).
    Labelled = its first ``budget`` positions (budgets are nested for a seed); ``budget="all"`` = the first
    ``n - ceil(holdout * n)``, the largest budget allowed, so the last ``holdout`` share of the permutation
    (the held-out tail) is unlabelled at every budget. Validation = the labelled positions ``p`` where
    ``floor((p + 1) * val_fraction) > floor(p * val_fraction)`` (every 10th for 10 %: nested as well), the
    rest training. Gallery = every unlabelled row. Queries: the held-out tail's rows in permutation order
    whose full attribute group has at least one *other* row in the gallery, the first ``max_queries`` of them
    (None: all), returned ascending.

    ``items``: a DataFrame with the ``attributes`` columns, one row per catalogue item.
    """
    attributes = _check_items(items, attributes)
    seed = check_int(seed, "seed", min_val=0)
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    max_queries = check_int(max_queries, "max_queries", allow_none=True)
    n = len(items)
    top = max_budget(n, holdout)
    if isinstance(budget, str):
        if budget != BUDGET_ALL:
            raise ValueError(f"budget must be a positive integer or {BUDGET_ALL!r}; got {budget!r}")
        n_lab = top
    else:
        n_lab = check_int(budget, "budget")
        if n_lab > top:
            raise ValueError(f"budget={n_lab} exceeds the largest budget of this catalogue ({top} = {n} items "
                             f"minus the held-out {holdout:.0%}); use budget={BUDGET_ALL!r} for it")
    pos = np.arange(n_lab)
    def n_val_before(m):  # validation items among the first m positions (rounded first: 30 * 0.1 is 3, not 2.99..)
        return np.floor(np.round(m * val_fraction, 9))

    is_val = n_val_before(pos + 1) > n_val_before(pos)
    if is_val.sum() < 1 or (~is_val).sum() < 2:
        raise ValueError(f"budget={n_lab} is too small: with val_fraction={val_fraction} it needs at least one "
                         f"validation and two training items (budget >= {math.ceil(1 / val_fraction)})")
    perm = np.random.default_rng([seed, _SEED_TAG]).permutation(n)
    labelled = perm[:n_lab]
    gallery = np.sort(perm[n_lab:])
    groups = group_codes(_codes(items, attributes))
    in_gallery = np.bincount(groups[gallery], minlength=groups.max() + 1)
    tail = perm[top:]
    eligible = tail[in_gallery[groups[tail]] >= 2]
    if eligible.size == 0:
        raise ValueError(f"no held-out item shares its attribute group with another unlabelled item (budget "
                         f"{n_lab}, seed {seed}): no query has a relevant item")
    queries = np.sort(eligible[: max_queries or eligible.size])
    return BudgetSplit(budget, int(n_lab), seed, np.sort(labelled[~is_val]), np.sort(labelled[is_val]), gallery,
                       queries)


def labelled_group(items: pd.DataFrame, attributes: Sequence[str], labelled, queries) -> np.ndarray:
    """For each row of ``queries`` (row positions), whether its group (the full tuple of ``attributes``,
    missing values an ordinary value) occurs among the rows ``labelled``: a bool array in the order of
    ``queries`` ("labelled group" vs "unlabelled group")."""
    attributes = _check_items(items, attributes)
    n = len(items)
    lab = query_rows(np.asarray(labelled, dtype=np.int64), n) if len(labelled) else np.empty(0, np.int64)
    q = query_rows(np.asarray(queries, dtype=np.int64), n)
    groups = group_codes(_codes(items, attributes))
    return np.isin(groups[q], groups[lab])


# ----------------------------------------------------------------------------- scores
def _ap_at_r(nbrs: np.ndarray, groups: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per-query AP@R (0-1; NaN without a relevant item) from neighbours at least max(R) deep."""
    r = relevant_counts(groups)[rows]
    ap = np.full(rows.size, np.nan)
    valid = r > 0
    if not valid.any():
        return ap
    rmax = int(r.max())
    hits = groups[nbrs[:, :rmax]] == groups[rows][:, None]
    hits &= np.arange(rmax) < r[:, None]
    ap[valid] = average_precision(hits[valid], r[valid])
    return ap


def _graded_ndcg(nbrs: np.ndarray, codes: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Per-query nDCG@k (0-1; NaN when the ideal DCG is 0), gain = fraction of matching attributes."""
    n, n_attrs = codes.shape
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = ((codes[nbrs[:, :k]] == codes[rows][:, None, :]).sum(axis=2) / n_attrs) @ discount
    idcg = np.empty(rows.size)
    for s in range(0, rows.size, 256):
        r = rows[s: s + 256]
        matches = np.zeros((r.size, n), dtype=np.int16)
        for j in range(n_attrs):
            matches += codes[r, j, None] == codes[None, :, j]
        matches[np.arange(r.size), r] = -1  # the query itself is not in its ranking
        best = -np.sort(np.partition(-matches, k - 1, axis=1)[:, :k], axis=1)
        idcg[s: s + 256] = (best / n_attrs) @ discount
    out = np.full(rows.size, np.nan)
    ok = idcg > 0
    out[ok] = dcg[ok] / idcg[ok]
    return out


def retrieval_scores(emb, attrs: pd.DataFrame, queries, pair: Sequence[str], *, k: int = K_GRADED) -> pd.DataFrame:
    """Per-query retrieval scores (0-100) of the items ``queries`` searched among all rows of ``emb``.

    ``emb``: ``(n, d)`` gallery embeddings; ``attrs``: the gallery's attribute columns (DataFrame, rows
    aligned); ``queries``: row positions in the gallery. Each query is ranked against every other gallery
    row by cosine similarity (the query itself excluded; ties as in :mod:`attrboost.metrics`: float32
    resolution, then row index). Columns (:data:`RELEVANCES`), one row per query in the given order:

    * ``group``: AP@R, relevant = every attribute equal (as :func:`attrboost.metrics.average_precision_at_r`);
    * ``pair``: AP@R, relevant = the two columns ``pair`` equal (e.g. articleType and baseColour);
    * ``graded``: nDCG@k, gain = fraction of the attributes equal to the query's (linear gains,
      ``1 / log2(rank + 1)``), the ideal DCG from the ``k`` best gains of the whole gallery.

    A query without a relevant item (or, for ``graded``, with an ideal DCG of 0) gets NaN. ``k`` is reduced to
    ``n - 1`` on a gallery of fewer than ``k + 1`` rows.
    """
    if not isinstance(attrs, pd.DataFrame):
        raise TypeError(f"attrs must be a DataFrame of the gallery's attribute columns; got {type(attrs).__name__}")
    pair = list(pair)
    if len(pair) != 2 or len(set(pair)) != 2:
        raise ValueError(f"pair must name two different attribute columns; got {pair}")
    missing = [c for c in pair if c not in attrs.columns]
    if missing:
        raise KeyError(f"pair names column(s) {missing} that attrs lacks; columns are {list(attrs.columns)}")
    x, codes, groups = prepare(emb, attrs)
    n = x.shape[0]
    k = min(check_int(k, "k"), n - 1)
    rows = query_rows(queries, n)
    cols = [list(attrs.columns).index(c) for c in pair]
    pair_groups = group_codes(codes[:, cols])
    depth = max(k, int(relevant_counts(groups)[rows].max()), int(relevant_counts(pair_groups)[rows].max()))
    nbrs, _ = knn(x, min(depth, n - 1), queries=rows)
    out = pd.DataFrame({"group": _ap_at_r(nbrs, groups, rows), "pair": _ap_at_r(nbrs, pair_groups, rows),
                        "graded": _graded_ndcg(nbrs, codes, rows, k)})
    return out * 100.0


# ----------------------------------------------------------------------------- model selection
class GalleryScorer:
    """Model selection with spread labels: ``scorer(embedding, y=None, tags=None) -> float``.

    ``embedding`` holds the training rows first, then the validation rows (``X_val`` passed to
    :class:`~attrboost.heads.BoostHead` = training and validation features stacked in that order). The score is
    MAP@R x100 (full-group relevance, cosine) of the validation rows as queries against all those rows (a
    query never retrieves itself), over at most ``max_queries`` validation rows that have another labelled
    row of their group (a seeded sample when there are more). The study's rule, MAP@R of the validation rows
    among themselves, is recorded beside it (NaN when no two validation rows share a group): ``history`` holds
    ``(score, val_only_score)`` per call, i.e. per epoch.

    ``y_train``, ``y_val``: the attribute labels of the two parts (DataFrames or arrays, the same columns).
    """

    def __init__(self, y_train, y_val, *, max_queries: int | None = MAX_VAL_QUERIES, seed: int = 0):
        n_train, n_val = len(y_train), len(y_val)
        if n_train < 1 or n_val < 1:
            raise ValueError(f"GalleryScorer needs training and validation rows; got {n_train} and {n_val}")
        both = pd.concat([pd.DataFrame(np.asarray(y_train, dtype=object)),
                          pd.DataFrame(np.asarray(y_val, dtype=object))], ignore_index=True)
        self.groups = group_codes(encode_attributes(both, len(both), "y"))
        self.n_train, self.n = n_train, n_train + n_val
        val = np.arange(n_train, self.n)
        eligible = val[relevant_counts(self.groups)[val] > 0]
        if eligible.size == 0:
            raise ValueError(f"no validation item shares its attribute group with another labelled item ({n_val} "
                             f"validation, {n_train} training items): the selection score is undefined; label more")
        max_queries = check_int(max_queries, "max_queries", allow_none=True)
        if max_queries is not None and eligible.size > max_queries:
            eligible = np.sort(np.random.default_rng([check_int(seed, "seed", min_val=0), _SEED_TAG])
                               .choice(eligible, max_queries, replace=False))
        self.queries = eligible
        self.val_groups = self.groups[n_train:]
        self.val_only_defined = bool((np.bincount(self.val_groups) > 1).any())
        self.history: list[tuple[float, float]] = []

    def __call__(self, embedding, y=None, tags=None) -> float:
        emb = np.asarray(embedding)
        if emb.ndim != 2 or emb.shape[0] != self.n:
            raise ValueError(f"GalleryScorer: the embedding must have the {self.n} training + validation rows "
                             f"(training first); got shape {emb.shape}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an all-zero early ReLU row would warn every epoch
            score = float(map_at_r(emb, self.groups, queries=self.queries))
            old = float(map_at_r(emb[self.n_train:], self.val_groups)) if self.val_only_defined else float("nan")
        self.history.append((score, old))
        return score

    def epochs(self, patience: int | None = PATIENCE) -> tuple[int, float]:
        """(the epoch this rule keeps, the epoch the validation-only rule would keep over the same epochs,
        NaN when its score is undefined); see :func:`rule_epoch`."""
        if not self.history:
            raise ValueError("GalleryScorer was never called")
        new, old = zip(*self.history)
        return rule_epoch(new, patience), rule_epoch(old, patience)


def rule_epoch(scores: Sequence[float], patience: int | None = PATIENCE) -> float:
    """The epoch (1-based) the study's selection rule keeps given each epoch's score, as
    :func:`attrboost.training.fit_epochs` does: the first epoch, then every strictly better one; stop after
    ``patience`` epochs in a row without a better one. Over a sequence cut short by another rule's stop this
    is the pick among the epochs that ran. NaN when a score is NaN (undefined)."""
    scores = [float(s) for s in scores]
    if not scores:
        raise ValueError("scores is empty")
    if any(math.isnan(s) for s in scores):
        return float("nan")
    best, best_epoch, bad = -math.inf, 0, 0
    for epoch, s in enumerate(scores, 1):
        if best_epoch == 0 or s > best:
            best, best_epoch, bad = s, epoch, 0
        else:
            bad += 1
        if patience is not None and bad >= patience:
            break
    return best_epoch


def fit_metric_head(head: MetricHead, X, y, X_sel, scorer: Callable) -> MetricHead:
    """Fit ``head`` (a :class:`~attrboost.study.baselines.MetricHead`) exactly as ``MetricHead.fit`` does, but
    select its epoch with ``scorer(embedding of X_sel) -> float`` (higher is better) like
    :class:`~attrboost.heads.BoostHead`'s callable ``selection``, so one rule applies to every method.

    ``MetricHead.fit`` with ``selection=scorer`` and ``X_sel`` as its validation features (the same
    initialisation, batches, loss, ``patience`` and ``max_epochs``); ``history_`` gets ``val_score``."""
    if not isinstance(head, MetricHead):
        raise TypeError(f"head must be a MetricHead; got {type(head).__name__}")
    if not callable(scorer):
        raise TypeError(f"scorer must be callable (embedding, y, tags) -> float; got {type(scorer).__name__}")
    head.set_params(selection=scorer)
    return head.fit(X, y, X_sel)


# ----------------------------------------------------------------------------- one method
@dataclass
class Embedded:
    """One method's embedding of the gallery, with what its fit cost and chose."""

    emb: np.ndarray
    fit_seconds: float
    epoch: float = float("nan")
    epoch_val_only: float = float("nan")
    info: dict = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.emb.shape[1])


def embed_method(method: str, features: np.ndarray, items: pd.DataFrame, attributes: Sequence[str],
                 split: BudgetSplit, *, text_column: str = "text", head_params: dict | None = None,
                 metric_params: dict | None = None, max_val_queries: int | None = MAX_VAL_QUERIES,
                 device: str = "cpu") -> Embedded:
    """Fit ``method`` on ``split``'s labelled rows and embed its gallery.

    ``raw``: the features. ``task1`` / ``task3``: :class:`~attrboost.heads.BoostHead` (its defaults, the
    study's, with ``head_params`` applied) on the training rows; targets = the attributes with at least two
    values among them; Task 3's tags from ``items[text_column]`` with the vocabulary of the training rows only.
    ``supcon`` / ``multisimilarity``: :func:`~attrboost.study.baselines.make_baseline` (``metric_params``
    applied) on the group, fitted by :func:`fit_metric_head`. Every trained method is selected by a
    :class:`GalleryScorer` (validation items against training + validation), seeded with ``split.seed``.
    Combinations (:data:`COMBINATIONS`) are built by :func:`benchmark`."""
    attributes = _check_items(items, attributes)
    X = check_features(features, "features")
    if len(X) != len(items):
        raise ValueError(f"features has {len(X)} rows, items {len(items)}; they must be aligned")
    if method == "raw":
        return Embedded(X[split.gallery], 0.0)
    tr, va = split.train, split.val
    y_tr, y_va = items.iloc[tr][attributes].reset_index(drop=True), items.iloc[va][attributes].reset_index(drop=True)
    scorer = GalleryScorer(y_tr, y_va, max_queries=max_val_queries, seed=split.seed)
    X_sel = np.concatenate([X[tr], X[va]])
    t0 = time.perf_counter()
    if method in ("task1", "task3"):
        targets = [a for a in attributes if y_tr[a].nunique() > 1]
        if not targets:
            raise ValueError(f"{method}: every attribute has a single value among the {len(tr)} training items")
        tags = None
        if method == "task3":
            if text_column not in items.columns:
                raise KeyError(f"task3 needs product names: items has no column {text_column!r}")
            in_train = np.zeros(len(items), dtype=bool)
            in_train[tr] = True
            vocab, all_tags = tags_of(items[text_column].tolist(), in_train)
            if not vocab:
                raise ValueError(f"task3: no word occurs more than 5 times in the {len(tr)} training names")
            tags = [all_tags[i] for i in tr]
        head = BoostHead(method, **{**(head_params or {}), "selection": scorer, "seed": split.seed,
                                    "device": device})
        # X_val = training + validation features, the scorer's rows; no y_val / tags_val: the selection is the
        # scorer's, and BoostHead's validation loss over these rows would only cost time (val_loss stays NaN)
        head.fit(X[tr], y_tr[targets], tags=tags, X_val=X_sel)
        est, patience = head, head.patience
    elif method in ("supcon", "multisimilarity"):
        est = make_baseline(method, seed=split.seed, **{**(metric_params or {}), "device": device})
        fit_metric_head(est, X[tr], y_tr, X_sel, scorer)
        patience = est.patience
    else:
        raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")
    fit_s = time.perf_counter() - t0
    epoch, old = scorer.epochs(patience)
    if epoch != est.best_epoch_:  # the scorer's record must be the fit's own
        raise RuntimeError(f"{method}: the scorer's history selects epoch {epoch}, the fit kept {est.best_epoch_}")
    return Embedded(est.transform(X[split.gallery]), fit_s, float(epoch), float(old),
                    {"n_epochs": len(scorer.history), "n_val_queries": int(scorer.queries.size)})


def _combine(parts: Sequence[Embedded]) -> Embedded:
    emb = np.hstack([normalise(p.emb.astype(np.float64), warn=False) for p in parts]).astype(np.float32)
    return Embedded(emb, float(sum(p.fit_seconds for p in parts)))


# ----------------------------------------------------------------------------- the runner
def _check_methods(methods) -> list[str]:
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    if "raw" not in methods:
        methods = ["raw", *methods]  # every comparison is against raw
    return list(dict.fromkeys(methods))


def benchmark(features, items: pd.DataFrame, attributes: Sequence[str], *, budgets=(500, 1000, BUDGET_ALL),
              seeds=(0, 1, 2), methods=METHODS, pair: Sequence[str] = ("articleType", "baseColour"),
              max_queries: int | None = MAX_QUERIES, holdout: float = HOLDOUT, val_fraction: float = VAL_FRACTION,
              max_val_queries: int | None = MAX_VAL_QUERIES, k: int = K_GRADED, text_column: str = "text",
              id_column: str = "id", head_params: dict | None = None, metric_params: dict | None = None,
              device: str = "cpu", progress: bool = False) -> pd.DataFrame:
    """The whole-catalogue benchmark: per-query tidy rows for every method, budget, seed and relevance.

    ``features``: ``(n, d)`` frozen features aligned with ``items`` (a DataFrame with the ``attributes``
    columns, ``id_column`` (query ids; the row position when absent) and, for Task 3, ``text_column``).
    For each seed and budget: :func:`label_budget_split`, each method fitted (:func:`embed_method`) and scored
    over the split's queries by :func:`retrieval_scores` (``pair``: the pair relevance's two columns). ``raw``
    is always included.

    Returns one row per (method, budget, seed, relevance, query): ``method``, ``budget`` (as given, a string),
    ``n_labelled``, ``seed``, ``relevance`` (:data:`RELEVANCES`), ``query`` (its id), ``group`` (its full
    attribute tuple, joined by " | "), ``subset`` (:data:`SUBSETS`: whether that group occurs among the
    labelled items), ``value`` (0-100), ``fit_seconds``, ``width`` (the embedding's), ``epoch`` (the epoch the
    selection kept; NaN for raw and combinations) and ``epoch_val_only`` (the study's rule's pick over the same
    epochs). :func:`per_run` aggregates them, :func:`summarise_boost` compares each method with raw.
    """
    attributes = _check_items(items, attributes)
    X = check_features(features, "features")
    if len(X) != len(items):
        raise ValueError(f"features has {len(X)} rows, items {len(items)}; they must be aligned")
    pair = list(pair)
    missing = [c for c in pair if c not in attributes]
    if len(pair) != 2 or missing:
        raise ValueError(f"pair must name two of the attributes {attributes}; got {pair}")
    methods = _check_methods(methods)
    budgets = [budgets] if isinstance(budgets, (int, str)) else list(budgets)
    seeds = [check_int(s, "seed", min_val=0) for s in ([seeds] if isinstance(seeds, int) else seeds)]
    if not budgets or not seeds:
        raise ValueError("budgets and seeds must be non-empty")
    ids = items[id_column].to_numpy() if id_column in items.columns else np.arange(len(items))
    group_key = items[attributes].astype(str).agg(" | ".join, axis=1).to_numpy()
    needed = list(dict.fromkeys(p for m in methods for p in COMBINATIONS.get(m, (m,))))
    frames = []
    for seed in seeds:
        for budget in budgets:
            split = label_budget_split(items, attributes, budget, seed, holdout=holdout, val_fraction=val_fraction,
                                       max_queries=max_queries)
            flag = labelled_group(items, attributes, split.labelled, split.queries)
            gallery_attrs = items.iloc[split.gallery][attributes].reset_index(drop=True)
            qpos = split.query_positions()
            fitted: dict[str, Embedded] = {}
            for m in needed:
                if progress:
                    print(f"  seed {seed} budget {budget}: {m} ...", flush=True)
                fitted[m] = embed_method(m, X, items, attributes, split, text_column=text_column,
                                         head_params=head_params, metric_params=metric_params,
                                         max_val_queries=max_val_queries, device=device)
            for m in methods:
                e = fitted[m] if m in fitted else _combine([fitted[p] for p in COMBINATIONS[m]])
                scores = retrieval_scores(e.emb, gallery_attrs, qpos, pair, k=k)
                base = pd.DataFrame({"query": ids[split.queries], "group": group_key[split.queries],
                                     "subset": np.where(flag, SUBSETS[0], SUBSETS[1])})
                for rel in RELEVANCES:
                    frames.append(base.assign(method=m, budget=str(budget), n_labelled=split.n_labelled, seed=seed,
                                              relevance=rel, value=scores[rel].to_numpy(), fit_seconds=e.fit_seconds,
                                              width=e.width, epoch=e.epoch, epoch_val_only=e.epoch_val_only))
    cols = ["method", "budget", "n_labelled", "seed", "relevance", "query", "group", "subset", "value",
            "fit_seconds", "width", "epoch", "epoch_val_only"]
    return pd.concat(frames, ignore_index=True)[cols]


def _subsets(df: pd.DataFrame):
    """(label, rows) for all queries and each query subset present."""
    yield "all", df
    for s in SUBSETS:
        part = df[df["subset"] == s]
        if len(part):
            yield s, part


def per_run(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`benchmark`'s per-query rows -> one row per (method, budget, seed, relevance, subset): the mean
    ``value`` over the run's queries (NaN values skipped) and ``n_queries``, with the run's ``fit_seconds``,
    ``width``, ``epoch`` and ``epoch_val_only``; ``subset`` is ``"all"`` or one of :data:`SUBSETS`."""
    keys = ["method", "budget", "n_labelled", "seed", "relevance"]
    rows = []
    for key, part in df.groupby(keys, sort=False):
        first = part.iloc[0]
        for label, sub in _subsets(part):
            v = sub["value"].dropna()
            rows.append({**dict(zip(keys, key)), "subset": label, "value": v.mean(), "n_queries": len(v),
                         "fit_seconds": first["fit_seconds"], "width": first["width"], "epoch": first["epoch"],
                         "epoch_val_only": first["epoch_val_only"]})
    return pd.DataFrame(rows)


def group_bootstrap_ratio(num, den, groups, *, n_boot: int = 2000, seed: int = 0,
                          confidence: float = 0.95) -> tuple[float, float, float]:
    """``(ratio, low, high)``: ``mean(num) / mean(den)`` and a percentile interval from a bootstrap that
    resamples ``groups`` with replacement (the draws of :func:`attrboost.study.stats.group_bootstrap_ci`, for a
    ratio of means instead of a mean). One group gives ``(ratio, nan, nan)``."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    g = np.asarray(groups)
    if not (num.shape == den.shape == (g.shape[0],)) or num.size == 0:
        raise ValueError(f"num, den and groups must be 1-D of one non-empty length; got {num.shape}, {den.shape}, "
                         f"{g.shape}")
    if not (np.isfinite(num).all() and np.isfinite(den).all()):
        raise ValueError("num and den must be finite")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if den.sum() == 0:
        raise ValueError("den sums to 0: the ratio is undefined")
    ratio = float(num.sum() / den.sum())
    codes = pd.factorize(pd.Series(g))[0]
    n_groups = int(codes.max()) + 1
    if n_groups < 2:
        return ratio, float("nan"), float("nan")
    s_num = np.bincount(codes, weights=num, minlength=n_groups)
    s_den = np.bincount(codes, weights=den, minlength=n_groups)
    rng = np.random.default_rng([int(seed), 20261207])
    draws = rng.integers(0, n_groups, size=(int(n_boot), n_groups))
    w = np.stack([np.bincount(d, minlength=n_groups) for d in draws]).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = (w @ s_num) / (w @ s_den)
    boot = boot[np.isfinite(boot)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return ratio, float(low), float(high)


def summarise_boost(df: pd.DataFrame, *, reference: str = "raw", n_boot: int = 2000, seed: int = 0,
                    confidence: float = 0.95) -> pd.DataFrame:
    """Each method against ``reference`` (raw), paired per (seed, query), per budget, relevance and query subset.

    From :func:`benchmark`'s per-query rows: for every method, the pairs (method value, raw value) of the same
    seed and query (pairs with a NaN dropped); ``diff`` = the mean paired difference with the percentile CI of
    :func:`attrboost.study.stats.group_bootstrap_ci`, resampling query *groups* (one row per (seed, query),
    clustered by the query's full attribute group, so queries that share relevant items and the same query
    under several seeds stay together); ``ratio`` = mean(method) / mean(raw) with the same bootstrap
    (:func:`group_bootstrap_ratio`). ``best`` marks the method with the highest mean in each (budget, relevance,
    subset). Also: ``n`` (pairs), ``n_groups``, ``n_seeds``, ``fit_seconds`` (mean per fit), ``width``,
    ``epoch`` / ``epoch_val_only`` (median over seeds).
    """
    need = {"method", "budget", "n_labelled", "seed", "relevance", "query", "group", "subset", "value"}
    if not isinstance(df, pd.DataFrame) or need - set(df.columns):
        raise ValueError(f"df must be benchmark()'s per-query frame; missing columns {sorted(need - set(df.columns))}")
    if reference not in set(df["method"]):
        raise ValueError(f"reference method {reference!r} is not in df (methods: {sorted(set(df['method']))})")
    keys = ["budget", "n_labelled", "relevance"]
    pair_on = ["seed", "query"]
    rows = []
    for key, part in df.groupby(keys, sort=False):
        ref = part[part["method"] == reference].set_index(pair_on)
        for method, mpart in part.groupby("method", sort=False):
            m = mpart.set_index(pair_on)
            joined = m[["value", "group", "subset"]].join(ref[["value"]].rename(columns={"value": "value_ref"}),
                                                          how="inner").dropna(subset=["value", "value_ref"])
            runs = mpart.drop_duplicates("seed")
            for label, sub in _subsets(joined):
                if len(sub) == 0:
                    continue
                d, dlo, dhi = group_bootstrap_ci(sub["value"] - sub["value_ref"], sub["group"], n_boot=n_boot,
                                                 seed=seed, confidence=confidence)
                r, rlo, rhi = group_bootstrap_ratio(sub["value"], sub["value_ref"], sub["group"], n_boot=n_boot,
                                                    seed=seed, confidence=confidence)
                rows.append({**dict(zip(keys, key)), "subset": label, "method": method, "n": len(sub),
                             "n_groups": sub["group"].nunique(), "n_seeds": sub.index.get_level_values(0).nunique(),
                             "raw": sub["value_ref"].mean(), "value": sub["value"].mean(),
                             "diff": d, "diff_low": dlo, "diff_high": dhi, "ratio": r, "ratio_low": rlo,
                             "ratio_high": rhi,
                             "fit_seconds": runs["fit_seconds"].mean() if "fit_seconds" in runs else np.nan,
                             "width": runs["width"].iloc[0] if "width" in runs else np.nan,
                             "epoch": runs["epoch"].median() if "epoch" in runs else np.nan,
                             "epoch_val_only": runs["epoch_val_only"].median() if "epoch_val_only" in runs else np.nan})
    out = pd.DataFrame(rows)
    if len(out):
        best = out.groupby(["budget", "relevance", "subset"], sort=False)["value"].transform("max")
        out["best"] = out["value"] == best
    return out

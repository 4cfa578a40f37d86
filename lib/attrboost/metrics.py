"""Retrieval metrics: pure functions of embeddings and labels.

In the style of pytorch-metric-learning's accuracy calculator, every function here takes the
embeddings and the labels and returns a number; nothing is trained or cached. Conventions shared
by all metrics:

* ``emb``: ``(n, d)`` array of finite numbers; similarity is the **cosine** similarity.
* ``attrs``: ``(n, n_attrs)`` labels (strings or ints; a pandas DataFrame or a 1-D array for a
  single attribute is accepted). Missing values (None/NaN) are an ordinary label value: two
  missing labels match. The *group* of an item is its full attribute tuple.
* ``names``: a list of ``n`` product names (strings); the original metric's tokens come from
  them (:func:`paper_tokens`). ``tags``: a list of ``n`` token lists (the study's vocabulary-filtered
  tags; only ``paper_map@10_filtered`` uses them).
* Every item is a query against all **other** items: the query itself is always excluded, even
  when another item has an identical embedding (except in the original metric, which drops the
  *first* of its top 11 and so replicates the original code; see :func:`paper_map_at_10`).
* Ranking is deterministic: by descending cosine similarity compared at **float32 resolution**
  (scores are computed in float64 and rounded to float32, so values equal in float32 are ties),
  then by ascending item index.
* Zero vectors: a zero embedding has cosine similarity 0 with every item (it is left as zero by
  the normalisation, as in ``sklearn.preprocessing.normalize``); a warning names how many there are.
* Every metric is reported on a **0-100 scale** (the paper's mAP was x100; the others follow so a
  results table is uniform). A query for which a metric is undefined (no relevant item) is
  skipped; if every query is skipped the metric is NaN (with a warning).
* When fewer than ``k`` other items exist, ``k`` is reduced to ``n - 1``.

Metrics (:data:`METRICS` are the keys of :func:`evaluate`):

* ``paper_map@10``: the original code's mAP@10, see :func:`paper_map_at_10` (the query is the
  second argument of the original's label similarity ``get_score(a, b)``).
* ``map@r``: MAP@R (Musgrave et al., 2020); relevant = same group, R = number of relevant items.
  The primary standard metric.
* ``precision@1``: the nearest other item is in the query's group.
* ``recall@10``: fraction of the query's relevant items found among its 10 nearest.
* ``ndcg@10``: nDCG@10 with graded relevance = fraction of attributes that match (linear gains,
  ``1 / log2(rank + 1)`` discount, as ``sklearn.metrics.ndcg_score``).
* ``paper_map@10_rev``: ``paper_map@10`` with the query as the *first* argument of ``get_score``
  (the other possible reading of the original, see :func:`paper_map_at_10`).
* ``paper_ndcg@10``: a tie-robust reading of the paper metric, see :func:`paper_ndcg_at_k`.
* ``paper_map@10_filtered``: a filtered variant (vocabulary-filtered tag sets, positives
  only, divided by ``min(10, |ground truth|)``), see :func:`paper_map_at_10_filtered`.

The original's metric lives in :mod:`attrboost.paper_metric`, the inputs and the k-nearest neighbours in
:mod:`attrboost.neighbours`; this module holds the standard metrics and :func:`evaluate`, and gives every
metric's public name.
"""
from __future__ import annotations

import warnings

import numpy as np

from .neighbours import (as_names, as_tags, average_precision, check_k, encode_attributes, group_codes, knn,  # noqa: F401
                         nanmean100, normalise, paper_tokens, prepare, query_rows, relevant_counts)
from .paper_metric import (QUERY_ARGS, filtered_map, paper_ground_truth, paper_ground_truth_filtered,  # noqa: F401
                           paper_map_at_10, paper_map_at_10_filtered, paper_map_tie_spread, paper_ndcg, paper_ndcg_at_k,
                           paper_neighbours, paper_original)

METRICS = ("paper_map@10", "map@r", "precision@1", "recall@10", "ndcg@10", "paper_map@10_rev", "paper_ndcg@10",
           "paper_map@10_filtered")


def _ap_at_r(nbrs: np.ndarray, groups: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Per-query AP@R (0-1; NaN for a query with no relevant item). ``nbrs``: the neighbours of the
    items ``rows`` (default all), among all items of ``groups``."""
    rows = np.arange(groups.size) if rows is None else rows
    r = relevant_counts(groups)[rows]
    valid = r > 0
    ap = np.full(rows.size, np.nan)
    rmax = int(r.max())
    if rmax == 0:
        return ap
    rel = groups[nbrs[:, :rmax]] == groups[rows][:, None]
    rel &= np.arange(rmax) < r[:, None]
    ap[valid] = average_precision(rel[valid], r[valid])
    return ap


def _map_at_r(nbrs: np.ndarray, groups: np.ndarray, rows: np.ndarray | None = None) -> float:
    ap = _ap_at_r(nbrs, groups, rows)
    return nanmean100(ap[~np.isnan(ap)], "map@r")


def _precision_at_1(nbrs: np.ndarray, groups: np.ndarray, rows: np.ndarray | None = None) -> float:
    rows = np.arange(groups.size) if rows is None else rows
    valid = relevant_counts(groups)[rows] > 0
    return nanmean100((groups[nbrs[:, 0]] == groups[rows])[valid].astype(np.float64), "precision@1")


def _recall_at_k(nbrs: np.ndarray, groups: np.ndarray, k: int) -> float:
    r = relevant_counts(groups)
    valid = r > 0
    found = (groups[nbrs[:, :k]] == groups[:, None]).sum(axis=1)
    return nanmean100(found[valid] / r[valid], f"recall@{k}")


def _ndcg_at_k(nbrs: np.ndarray, codes: np.ndarray, k: int) -> float:
    n, n_attrs = codes.shape
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    gains = (codes[nbrs[:, :k]] == codes[:, None, :]).sum(axis=2) / n_attrs
    dcg = gains @ discount
    matches = np.zeros((n, n), dtype=np.int16)
    for j in range(n_attrs):
        matches += codes[:, j, None] == codes[None, :, j]
    np.fill_diagonal(matches, -1)
    best = -np.sort(np.partition(-matches, k - 1, axis=1)[:, :k], axis=1)  # top k, descending
    idcg = (best / n_attrs) @ discount
    valid = idcg > 0
    return nanmean100(dcg[valid] / idcg[valid], f"ndcg@{k}")


def map_at_r(emb, attrs, queries=None) -> float:
    """MAP@R x100: relevant = same group, R = number of relevant items; queries with R = 0 skipped.

    ``queries``: the row indices (or a boolean mask) of the items used as queries, each searched among
    all items (default: every item is a query), e.g. a sample of queries over a whole catalogue."""
    x, codes, groups = prepare(emb, attrs)
    rows = query_rows(queries, x.shape[0])
    nbrs, _ = knn(x, max(1, int(relevant_counts(groups)[rows].max())), queries=rows)
    return _map_at_r(nbrs, groups, rows)


def average_precision_at_r(emb, attrs, queries=None) -> np.ndarray:
    """Each query's AP@R x100 (the terms :func:`map_at_r` averages; NaN for a query with no relevant
    item), in the order of ``queries`` (default: every item). For paired comparisons over queries."""
    x, codes, groups = prepare(emb, attrs)
    rows = query_rows(queries, x.shape[0])
    nbrs, _ = knn(x, max(1, int(relevant_counts(groups)[rows].max())), queries=rows)
    return 100.0 * _ap_at_r(nbrs, groups, rows)


def map_at_r_quiet(emb, attrs) -> float:
    """:func:`map_at_r` for model selection: an all-zero row (an early ReLU embedding) is scored as
    documented, without the warning (it would repeat every epoch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(map_at_r(emb, attrs))


def precision_at_1(emb, attrs, queries=None) -> float:
    """Precision@1 x100: the nearest other item is in the query's group (queries with R = 0 skipped);
    ``queries`` as in :func:`map_at_r`."""
    x, codes, groups = prepare(emb, attrs)
    rows = query_rows(queries, x.shape[0])
    nbrs, _ = knn(x, 1, queries=rows)
    return _precision_at_1(nbrs, groups, rows)


def recall_at_k(emb, attrs, k: int = 10) -> float:
    """Recall@k x100: |relevant among the k nearest| / |relevant|, over queries with >= 1 relevant."""
    x, codes, groups = prepare(emb, attrs)
    k = min(check_k(k, np.inf), x.shape[0] - 1)
    nbrs, _ = knn(x, k)
    return _recall_at_k(nbrs, groups, k)


def ndcg_at_k(emb, attrs, k: int = 10) -> float:
    """nDCG@k x100 with graded relevance = fraction of attributes equal to the query's.

    Linear gains and ``1/log2(rank + 1)`` discounts (as ``sklearn.metrics.ndcg_score``); the ideal
    ranking is over all other items. Queries whose ideal DCG is 0 (no other item shares any
    attribute) are skipped (sklearn would count them as 0).
    """
    x, codes, groups = prepare(emb, attrs)
    k = min(check_k(k, np.inf), x.shape[0] - 1)
    nbrs, _ = knn(x, k)
    return _ndcg_at_k(nbrs, codes, k)


def evaluate(emb, attrs, tags, names=None) -> dict[str, float]:
    """All :data:`METRICS` (each on a 0-100 scale) from one nearest-neighbour search.

    ``names``: the product names, for the original metric's tokens (``paper_map@10``, ``_rev``,
    ``paper_ndcg@10``). Without them (None) those metrics use ``tags`` as the token lists, with a
    warning: that is *not* the original's tokens. ``tags``: for ``paper_map@10_filtered``.
    """
    x, codes, groups = prepare(emb, attrs)
    n = x.shape[0]
    tag_sets = as_tags(tags, n)
    if names is None:
        warnings.warn("evaluate: no product names given; paper_map@10, paper_map@10_rev and paper_ndcg@10 use the "
                      "tags as tokens, not the original's tokens of the product name", RuntimeWarning, stacklevel=2)
        tokens = [list(t) for t in tags]
    else:
        tokens = as_names(names, n)
    k = min(10, n - 1)
    nbrs, scores = knn(x, min(n - 1, max(k + 16, int(relevant_counts(groups).max()))))
    xn = normalise(x, warn=False)
    return {
        "paper_map@10": paper_original(xn, nbrs, scores, groups, tokens, k, "b"),
        "map@r": _map_at_r(nbrs, groups),
        "precision@1": _precision_at_1(nbrs, groups),
        "recall@10": _recall_at_k(nbrs, groups, k),
        "ndcg@10": _ndcg_at_k(nbrs, codes, k),
        "paper_map@10_rev": paper_original(xn, nbrs, scores, groups, tokens, k, "a"),
        "paper_ndcg@10": paper_ndcg(xn, nbrs, scores, groups, tokens, k, "b"),
        "paper_map@10_filtered": filtered_map(nbrs, groups, tag_sets, k),
    }

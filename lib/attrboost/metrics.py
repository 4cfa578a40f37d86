"""Retrieval metrics: pure functions of embeddings and labels.

In the style of pytorch-metric-learning's accuracy calculator, every function here takes the
embeddings and the labels and returns a number; nothing is trained or cached. Conventions shared
by all metrics:

* ``emb``: ``(n, d)`` array of finite numbers; similarity is the **cosine** similarity.
* ``attrs``: ``(n, n_attrs)`` labels (strings or ints; a pandas DataFrame or a 1-D array for a
  single attribute is accepted). Missing values (None/NaN) are an ordinary label value: two
  missing labels match. The *group* of an item is its full attribute tuple.
* ``tags``: a list of ``n`` token lists (only the paper metric uses them).
* Every item is a query against all **other** items: the query itself is always excluded, even
  when another item has an identical embedding.
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

* ``paper_map@10``: the original study's metric, see :func:`paper_map_at_10` (its ground truth
  lists come from :func:`paper_ground_truth`).
* ``map@r``: MAP@R (Musgrave et al., 2020); relevant = same group, R = number of relevant items.
* ``precision@1``: the nearest other item is in the query's group.
* ``recall@10``: fraction of the query's relevant items found among its 10 nearest.
* ``ndcg@10``: nDCG@10 with graded relevance = fraction of attributes that match (linear gains,
  ``1 / log2(rank + 1)`` discount, as ``sklearn.metrics.ndcg_score``).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from .checks import check_int

METRICS = ("paper_map@10", "map@r", "precision@1", "recall@10", "ndcg@10")

_U32 = 2.0**-24  # unit roundoff of float32
_CHUNK = 256  # queries per block in the exact fallback
_GATHER_BYTES = 8 << 20  # re-scoring works on blocks of about this size (cache-friendly)


# ----------------------------------------------------------------------------------- validation
def _as_embedding(emb, name: str = "emb") -> np.ndarray:
    """Validate ``emb`` and return it as a float64 ``(n, d)`` array."""
    if isinstance(emb, (pd.DataFrame, pd.Series)):
        emb = emb.to_numpy()
    x = np.asarray(emb)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_items, dim); got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 items (rows) to rank others; got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least 1 column; got shape {x.shape}")
    x = x.astype(np.float64)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad.size} row(s), e.g. rows {bad[:5].tolist()}"
        )
    return x


def encode_attributes(attrs, n: int, name: str = "attrs") -> np.ndarray:
    """Integer-code each attribute column: ``(n, n_attrs)`` int64 (equal labels <=> equal codes)."""
    if isinstance(attrs, pd.Series):
        attrs = attrs.to_frame()
    if isinstance(attrs, pd.DataFrame):
        columns = [attrs[c].to_numpy() for c in attrs.columns]
        n_rows = len(attrs)
    else:
        a = np.asarray(attrs, dtype=object)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_items, n_attrs) or 1-D; got shape {a.shape}")
        columns = [a[:, j] for j in range(a.shape[1])]
        n_rows = a.shape[0]
    if n_rows != n:
        raise ValueError(f"emb has {n} rows but {name} has {n_rows} rows; they must describe the same items")
    if not columns:
        raise ValueError(f"{name} must have at least one attribute column")
    codes = [pd.factorize(pd.Series(col, dtype=object), use_na_sentinel=False)[0] for col in columns]
    return np.stack(codes, axis=1).astype(np.int64)


def group_codes(codes: np.ndarray) -> np.ndarray:
    """Group id per item: equal full attribute tuples <=> equal ids."""
    return np.unique(codes, axis=0, return_inverse=True)[1].ravel()


def _as_tags(tags, n: int, name: str = "tags") -> list[frozenset]:
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise TypeError(f"{name} must be a list of token lists (one per item); got {type(tags).__name__}")
    tags = list(tags)
    if len(tags) != n:
        raise ValueError(f"emb has {n} rows but {name} has {len(tags)} entries; they must describe the same items")
    out = []
    for i, t in enumerate(tags):
        if isinstance(t, (str, bytes)) or not isinstance(t, Iterable):
            raise TypeError(
                f"{name}[{i}] must be a list of tokens (e.g. ['men', 'tshirt']), not {type(t).__name__} {t!r}"
            )
        out.append(frozenset(t))
    return out


def _check_k(k, n_max: int, name: str = "k") -> int:
    k = check_int(k, name)
    if k > n_max:
        raise ValueError(f"{name}={k} exceeds the number of items that can be returned ({n_max})")
    return int(k)


def _normalise(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows in float64; zero rows stay zero (cosine 0 with everything), with a warning."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    zero = norms == 0
    if zero.any():
        warnings.warn(
            f"emb has {int(zero.sum())} zero vector(s); they get cosine similarity 0 with every item",
            RuntimeWarning,
            stacklevel=3,
        )
    return x / np.where(zero, 1.0, norms)[:, None]


# ---------------------------------------------------------------------------------- neighbours
def _rank_rows(scores: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row by (-score, index); ``cand`` holds the indices, ascending within a row."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _exact_rows(xn: np.ndarray, rows: np.ndarray, k: int, exclude_self: bool):
    """Exact numpy k-NN for the query ``rows`` (all items scored)."""
    n = xn.shape[0]
    idx = np.empty((rows.size, k), dtype=np.int64)
    sc = np.empty((rows.size, k), dtype=np.float32)
    for s in range(0, rows.size, _CHUNK):
        r = rows[s : s + _CHUNK]
        scores = (xn[r] @ xn.T).astype(np.float32)
        if exclude_self:
            scores[np.arange(r.size), r] = -np.inf
        cand = np.broadcast_to(np.arange(n, dtype=np.int64), scores.shape)
        idx[s : s + _CHUNK], sc[s : s + _CHUNK] = _rank_rows(scores, cand, k)
    return idx, sc


def knn(emb, k: int, *, exclude_self: bool = True, margin: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest items of every item by cosine similarity, with deterministic ties.

    Candidates come from faiss exact inner-product search (``IndexFlatIP`` on L2-normalised
    float32 vectors), asking for ``k + 1 + margin`` of them. The candidates are then re-scored in
    float64, rounded to float32, and ranked by (descending score, ascending index). If an item
    outside the candidate list could still tie with or beat the k-th candidate (the k-th score is
    within the float32 error bound of the last candidate's faiss score), that query is recomputed
    exactly with numpy over all items. The result therefore equals the numpy brute force
    ``argsort(-float32(cos), kind="stable")``, ties included (float64 summation-order noise is
    absorbed by the rounding to float32; in principle a value sitting exactly on a float32
    rounding boundary could still round differently, which has not been observed).

    Parameters
    ----------
    emb : (n, d) array of finite numbers. Zero rows have cosine similarity 0 with every item.
    k : number of neighbours, ``1 <= k <= n - 1`` (``<= n`` when ``exclude_self=False``).
    exclude_self : drop the query itself (by index, so an identical duplicate is still returned).
    margin : extra candidates asked from faiss (default 16); only affects speed (fewer exact
        fallbacks with more candidates), never the result.

    Returns
    -------
    indices : (n, k) int64, neighbours of each item, best first.
    scores : (n, k) float32, their cosine similarities.
    """
    import faiss

    x = _as_embedding(emb)
    n, d = x.shape
    k = _check_k(k, n - 1 if exclude_self else n)
    margin = 16 if margin is None else int(margin)
    if margin < 0:
        raise ValueError(f"margin must be >= 0; got {margin}")
    xn = _normalise(x)
    m = k + int(exclude_self) + margin
    if m >= n:  # the candidates would be every item: just do it exactly
        return _exact_rows(xn, np.arange(n), k, exclude_self)

    index = faiss.IndexFlatIP(d)
    index.add(np.ascontiguousarray(xn, dtype=np.float32))
    f_scores, cand = index.search(np.ascontiguousarray(xn, dtype=np.float32), m)
    # Any item faiss did not return has faiss score <= min(f_scores), hence a true cosine below
    # min(f_scores) + tol; tol bounds float32 rounding of the vectors and of the d-term sum.
    tol = 2.0 * (d + 4) * _U32 + 1e-6
    f_min = f_scores.min(axis=1).astype(np.float64)

    idx = np.empty((n, k), dtype=np.int64)
    sc = np.empty((n, k), dtype=np.float32)
    unsafe = []
    block = int(np.clip(_GATHER_BYTES // (m * d * 8), 1, 1024))
    for s in range(0, n, block):
        q = np.arange(s, min(s + block, n))
        c = np.sort(cand[q].astype(np.int64), axis=1)
        scores = np.matmul(xn[c], xn[q][:, :, None])[..., 0].astype(np.float32)
        if exclude_self:
            scores[c == q[:, None]] = -np.inf
        idx[q], sc[q] = _rank_rows(scores, c, k)
        bad = ~(sc[q, k - 1].astype(np.float64) > f_min[q] + tol)
        unsafe.append(q[bad])
    unsafe = np.concatenate(unsafe)
    if unsafe.size:
        idx[unsafe], sc[unsafe] = _exact_rows(xn, unsafe, k, exclude_self)
    return idx, sc


# ------------------------------------------------------------------------------ metric kernels
def _nanmean100(values: np.ndarray, metric: str) -> float:
    if values.size == 0:
        warnings.warn(f"{metric}: no query has a relevant item; returning NaN", RuntimeWarning, stacklevel=3)
        return float("nan")
    return float(100.0 * values.mean())


def _paper_ground_truth(groups: np.ndarray, tags: Sequence[frozenset], k: int) -> np.ndarray:
    """(n, k) ground truth of the paper metric, padded with -1.

    For query a: the k other items with the highest label similarity
    ``sim(a, b) = [group(a) == group(b)] * |tags(a) & tags(b)| / |tags(a)|`` (``= [group equal]``
    when a has no tags), keeping only ``sim > 0``, ties broken by ascending index.
    """
    n = groups.size
    gt = np.full((n, k), -1, dtype=np.int64)
    vocab: dict = {}
    tag_ids = [np.array([vocab.setdefault(t, len(vocab)) for t in ts], dtype=np.int64) for ts in tags]
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    for members in np.split(order, bounds):  # members ascending (stable sort of ascending indices)
        g = members.size
        if g < 2:
            continue
        local = {t: j for j, t in enumerate(np.unique(np.concatenate([tag_ids[i] for i in members])))}
        onehot = np.zeros((g, max(len(local), 1)), dtype=np.int64)
        for r, i in enumerate(members):
            onehot[r, [local[t] for t in tag_ids[i]]] = 1
        size = onehot.sum(axis=1)
        overlap = onehot @ onehot.T
        sim = np.where(size[:, None] > 0, overlap / np.maximum(size, 1)[:, None], 1.0)
        np.fill_diagonal(sim, -1.0)
        kk = min(k, g - 1)
        top = np.argsort(-sim, axis=1, kind="stable")[:, :kk]
        keep = np.take_along_axis(sim, top, axis=1) > 0
        gt[members, :kk] = np.where(keep, members[top], -1)
    return gt


def _average_precision(hits: np.ndarray, denom: np.ndarray) -> np.ndarray:
    """sum_i precision@i * hit_i / denom, row-wise."""
    ranks = np.arange(1, hits.shape[1] + 1)
    return (np.cumsum(hits, axis=1) / ranks * hits).sum(axis=1) / denom


def _paper_map(nbrs: np.ndarray, groups: np.ndarray, tags, k: int) -> float:
    gt = _paper_ground_truth(groups, tags, k)
    pred = nbrs[:, :k]
    hits = (pred[:, :, None] == gt[:, None, :]).any(axis=2)  # gt padding (-1) never matches
    size = (gt >= 0).sum(axis=1)
    valid = size > 0
    ap = _average_precision(hits[valid], np.minimum(k, size[valid]))
    return _nanmean100(ap, "paper_map@10")


def _relevant_counts(groups: np.ndarray) -> np.ndarray:
    return np.bincount(groups)[groups] - 1


def _map_at_r(nbrs: np.ndarray, groups: np.ndarray) -> float:
    r = _relevant_counts(groups)
    valid = r > 0
    rmax = int(r.max())
    if rmax == 0:
        return _nanmean100(np.empty(0), "map@r")
    rel = groups[nbrs[:, :rmax]] == groups[:, None]
    rel &= np.arange(rmax) < r[:, None]
    ap = _average_precision(rel[valid], r[valid])
    return _nanmean100(ap, "map@r")


def _precision_at_1(nbrs: np.ndarray, groups: np.ndarray) -> float:
    valid = _relevant_counts(groups) > 0
    return _nanmean100((groups[nbrs[:, 0]] == groups)[valid].astype(np.float64), "precision@1")


def _recall_at_k(nbrs: np.ndarray, groups: np.ndarray, k: int) -> float:
    r = _relevant_counts(groups)
    valid = r > 0
    found = (groups[nbrs[:, :k]] == groups[:, None]).sum(axis=1)
    return _nanmean100(found[valid] / r[valid], f"recall@{k}")


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
    return _nanmean100(dcg[valid] / idcg[valid], f"ndcg@{k}")


# ------------------------------------------------------------------------------ public metrics
def _prepare(emb, attrs):
    x = _as_embedding(emb)
    codes = encode_attributes(attrs, x.shape[0])
    return x, codes, group_codes(codes)


def paper_map_at_10(emb, attrs, tags, k: int = 10) -> float:
    """The original study's mAP@10 (x100), reimplemented faithfully.

    For each query a (every item, against all other items):

    * label similarity ``sim(a, b) = [all attributes equal] * |T(a) & T(b)| / |T(a)|`` where
      ``T(x)`` is the *set* of x's tags ("the fraction of a's tags that also occur in b's tags";
      duplicated tokens count once). If a has no tags, ``sim(a, b)`` is attribute equality alone.
      Note the asymmetry: the denominator is the query's tag count.
    * ground truth: the ``k`` other items with the highest ``sim``, ties broken by ascending
      index; only items with ``sim > 0`` count, so the ground truth may hold fewer than ``k``.
    * prediction: the ``k`` other items with the highest cosine similarity (see :func:`knn`).
    * ``AP = sum_i precision@i * [prediction i in ground truth] / min(k, |ground truth|)``.

    Queries with an empty ground truth (no other item of their group) are skipped. Returns the
    mean AP over the remaining queries, times 100.
    """
    x, codes, groups = _prepare(emb, attrs)
    tag_sets = _as_tags(tags, x.shape[0])
    k = min(_check_k(k, np.inf), x.shape[0] - 1)
    nbrs, _ = knn(x, k)
    return _paper_map(nbrs, groups, tag_sets, k)


def paper_ground_truth(attrs, tags, k: int = 10) -> np.ndarray:
    """The paper metric's ground truth: ``(n, k)`` int64 item indices, best first, padded with -1.

    Row ``a`` lists the other items with ``sim(a, b) > 0`` in order of (descending ``sim``,
    ascending index), at most ``k`` of them (``k`` is reduced to ``n - 1`` for small ``n``);
    see :func:`paper_map_at_10` for ``sim``.
    """
    n = len(attrs)
    if n < 2:
        raise ValueError(f"attrs must have at least 2 items (rows); got {n}")
    codes = encode_attributes(attrs, n)
    tag_sets = _as_tags(tags, n)
    k = min(_check_k(k, np.inf), n - 1)
    return _paper_ground_truth(group_codes(codes), tag_sets, k)


def map_at_r(emb, attrs) -> float:
    """MAP@R x100: relevant = same group, R = number of relevant items; queries with R = 0 skipped."""
    x, codes, groups = _prepare(emb, attrs)
    nbrs, _ = knn(x, max(1, int(_relevant_counts(groups).max())))
    return _map_at_r(nbrs, groups)


def map_at_r_quiet(emb, attrs) -> float:
    """:func:`map_at_r` for model selection: an all-zero row (an early ReLU embedding) is scored as
    documented, without the warning (it would repeat every epoch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(map_at_r(emb, attrs))


def precision_at_1(emb, attrs) -> float:
    """Precision@1 x100: the nearest other item is in the query's group (queries with R = 0 skipped)."""
    x, codes, groups = _prepare(emb, attrs)
    nbrs, _ = knn(x, 1)
    return _precision_at_1(nbrs, groups)


def recall_at_k(emb, attrs, k: int = 10) -> float:
    """Recall@k x100: |relevant among the k nearest| / |relevant|, over queries with >= 1 relevant."""
    x, codes, groups = _prepare(emb, attrs)
    k = min(_check_k(k, np.inf), x.shape[0] - 1)
    nbrs, _ = knn(x, k)
    return _recall_at_k(nbrs, groups, k)


def ndcg_at_k(emb, attrs, k: int = 10) -> float:
    """nDCG@k x100 with graded relevance = fraction of attributes equal to the query's.

    Linear gains and ``1/log2(rank + 1)`` discounts (as ``sklearn.metrics.ndcg_score``); the ideal
    ranking is over all other items. Queries whose ideal DCG is 0 (no other item shares any
    attribute) are skipped (sklearn would count them as 0).
    """
    x, codes, groups = _prepare(emb, attrs)
    k = min(_check_k(k, np.inf), x.shape[0] - 1)
    nbrs, _ = knn(x, k)
    return _ndcg_at_k(nbrs, codes, k)


def evaluate(emb, attrs, tags) -> dict[str, float]:
    """All :data:`METRICS` (each on a 0-100 scale) from one nearest-neighbour search."""
    x, codes, groups = _prepare(emb, attrs)
    tag_sets = _as_tags(tags, x.shape[0])
    n = x.shape[0]
    k = min(10, n - 1)
    nbrs, _ = knn(x, max(k, int(_relevant_counts(groups).max())))
    return {
        "paper_map@10": _paper_map(nbrs, groups, tag_sets, k),
        "map@r": _map_at_r(nbrs, groups),
        "precision@1": _precision_at_1(nbrs, groups),
        "recall@10": _recall_at_k(nbrs, groups, k),
        "ndcg@10": _ndcg_at_k(nbrs, codes, k),
    }

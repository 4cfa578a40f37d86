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
* ``paper_map@10_filtered``: the study's earlier variant (vocabulary-filtered tag sets, positives
  only, divided by ``min(10, |ground truth|)``), see :func:`paper_map_at_10_filtered`.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from .checks import check_int

METRICS = ("paper_map@10", "map@r", "precision@1", "recall@10", "ndcg@10", "paper_map@10_rev", "paper_ndcg@10",
           "paper_map@10_filtered")
#: which argument of the original's ``get_score(a, b)`` is the query: the default ("b") and the other reading
QUERY_ARGS = ("b", "a")

_U32 = 2.0**-24  # unit roundoff of float32
_CHUNK = 256  # queries per block in the exact fallback
_GATHER_BYTES = 8 << 20  # re-scoring works on blocks of about this size (cache-friendly)
_SIM_CELLS = 1 << 22  # label-similarity blocks hold about this many cells (32 MiB of float64)


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


def _per_item(values, n: int, name: str, what: str) -> list:
    """``values`` as a list of ``n`` entries (one per item), or a clear error."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of {what} (one per item); got {type(values).__name__}")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"emb has {n} rows but {name} has {len(values)} entries; they must describe the same items")
    return values


def _as_tags(tags, n: int, name: str = "tags") -> list[frozenset]:
    tags = _per_item(tags, n, name, "token lists")
    out = []
    for i, t in enumerate(tags):
        if isinstance(t, (str, bytes)) or not isinstance(t, Iterable):
            raise TypeError(
                f"{name}[{i}] must be a list of tokens (e.g. ['men', 'tshirt']), not {type(t).__name__} {t!r}"
            )
        out.append(frozenset(t))
    return out


def paper_tokens(name) -> list[str]:
    """The original code's tokens of one product name (``proc_lib.read_annotation``).

    Lower-cased, trailing whitespace removed (the original strips the CSV line, whose last field is
    the name), ``" & "`` replaced by ``"-"``, split on single spaces. Duplicates are kept and there is
    no vocabulary filter; a missing name (None/NaN) is the empty string, whose one token is ``""``.

    >>> paper_tokens("Puma Men Black & White T-shirt  Tee ")
    ['puma', 'men', 'black-white', 't-shirt', '', 'tee']
    """
    if name is None or (isinstance(name, float) and name != name):
        name = ""
    if not isinstance(name, str):
        raise TypeError(f"a product name must be a string (or None/NaN when missing); got {type(name).__name__} "
                        f"{name!r}")
    return name.lower().rstrip().replace(" & ", "-").split(" ")


def _as_names(names, n: int, name: str = "names") -> list[list[str]]:
    """Product names -> the original's token lists (:func:`paper_tokens`), validated."""
    names = _per_item(names, n, name, "product names")
    out = []
    for i, v in enumerate(names):
        if v is not None and not isinstance(v, (str, float)):
            raise TypeError(f"{name}[{i}] must be a product name (a string, e.g. 'Puma Men Black Tshirt'), not "
                            f"{type(v).__name__} {v!r}; for the study's tag lists use paper_map_at_10_filtered")
        try:
            out.append(paper_tokens(v))
        except TypeError as e:
            raise TypeError(f"{name}[{i}]: {e}") from None
    return out


def _check_query_arg(query_arg) -> str:
    if query_arg not in QUERY_ARGS:
        raise ValueError(f"query_arg={query_arg!r}: expected 'b' (the query is get_score's second argument, the "
                         f"default) or 'a' (its first)")
    return query_arg


def _check_k(k, n_max: int, name: str = "k") -> int:
    k = check_int(k, name)
    if k > n_max:
        raise ValueError(f"{name}={k} exceeds the number of items that can be returned ({n_max})")
    return int(k)


def _normalise(x: np.ndarray, warn: bool = True) -> np.ndarray:
    """L2-normalise rows in float64; zero rows stay zero (cosine 0 with everything), with a warning."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    zero = norms == 0
    if warn and zero.any():
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


def knn(emb, k: int, *, exclude_self: bool = True, margin: int | None = None,
        queries=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest items of every item (or of the ``queries`` rows) by cosine similarity, with
    deterministic ties.

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
    queries : row indices of the items to search for (default: every item); each is searched
        among all ``n`` items (a whole catalogue as the gallery, a sample of it as the queries).

    Returns
    -------
    indices : (n_queries, k) int64, neighbours of each query, best first.
    scores : (n_queries, k) float32, their cosine similarities.
    """
    import faiss

    x = _as_embedding(emb)
    n, d = x.shape
    k = _check_k(k, n - 1 if exclude_self else n)
    margin = 16 if margin is None else int(margin)
    if margin < 0:
        raise ValueError(f"margin must be >= 0; got {margin}")
    xn = _normalise(x)
    rows = _query_rows(queries, n)
    nq = rows.size
    m = k + int(exclude_self) + margin
    if m >= n:  # the candidates would be every item: just do it exactly
        return _exact_rows(xn, rows, k, exclude_self)

    index = faiss.IndexFlatIP(d)
    index.add(np.ascontiguousarray(xn, dtype=np.float32))
    f_scores, cand = index.search(np.ascontiguousarray(xn[rows], dtype=np.float32), m)
    # Any item faiss did not return has faiss score <= min(f_scores), hence a true cosine below
    # min(f_scores) + tol; tol bounds float32 rounding of the vectors and of the d-term sum.
    tol = 2.0 * (d + 4) * _U32 + 1e-6
    f_min = f_scores.min(axis=1).astype(np.float64)

    idx = np.empty((nq, k), dtype=np.int64)
    sc = np.empty((nq, k), dtype=np.float32)
    unsafe = []
    block = int(np.clip(_GATHER_BYTES // (m * d * 8), 1, 1024))
    for s in range(0, nq, block):
        p = np.arange(s, min(s + block, nq))  # positions in the query list
        q = rows[p]  # the queries' item indices
        c = np.sort(cand[p].astype(np.int64), axis=1)
        scores = np.matmul(xn[c], xn[q][:, :, None])[..., 0].astype(np.float32)
        if exclude_self:
            scores[c == q[:, None]] = -np.inf
        idx[p], sc[p] = _rank_rows(scores, c, k)
        bad = ~(sc[p, k - 1].astype(np.float64) > f_min[p] + tol)
        unsafe.append(p[bad])
    unsafe = np.concatenate(unsafe)
    if unsafe.size:
        idx[unsafe], sc[unsafe] = _exact_rows(xn, rows[unsafe], k, exclude_self)
    return idx, sc


def _query_rows(queries, n: int) -> np.ndarray:
    """The query rows as int64 item indices (all ``n`` items when None); clear errors otherwise."""
    if queries is None:
        return np.arange(n, dtype=np.int64)
    q = np.asarray(queries)
    if q.dtype == bool:
        if q.shape != (n,):
            raise ValueError(f"queries: a boolean mask must have one value per item ({n}); got shape {q.shape}")
        q = np.flatnonzero(q)
    if q.ndim != 1 or q.size == 0 or not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"queries must be a non-empty 1-D array of item indices (or a boolean mask); got "
                         f"dtype {q.dtype}, shape {q.shape}")
    if q.min() < 0 or q.max() >= n:
        raise ValueError(f"queries: item indices must be in [0, {n - 1}]; got {int(q.min())}..{int(q.max())}")
    return q.astype(np.int64)


# ------------------------------------------------------------------------------ metric kernels
def _nanmean100(values: np.ndarray, metric: str) -> float:
    if values.size == 0:
        warnings.warn(f"{metric}: no query has a relevant item; returning NaN", RuntimeWarning, stacklevel=3)
        return float("nan")
    return float(100.0 * values.mean())


def _filtered_ground_truth(groups: np.ndarray, tags: Sequence[frozenset], k: int) -> np.ndarray:
    """(n, k) ground truth of ``paper_map@10_filtered``, padded with -1.

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


def _filtered_map(nbrs: np.ndarray, groups: np.ndarray, tags, k: int) -> float:
    gt = _filtered_ground_truth(groups, tags, k)
    pred = nbrs[:, :k]
    hits = (pred[:, :, None] == gt[:, None, :]).any(axis=2)  # gt padding (-1) never matches
    size = (gt >= 0).sum(axis=1)
    valid = size > 0
    ap = _average_precision(hits[valid], np.minimum(k, size[valid]))
    return _nanmean100(ap, "paper_map@10_filtered")


# ------------------------------------------------------------------ the original code's metric
def _label_sim_blocks(groups: np.ndarray, tokens: Sequence[Sequence[str]], query_arg: str):
    """The original's label similarity, one block of queries of one group at a time.

    Yields ``(members, rows, sim)``: ``members`` the group's items (ascending), ``rows`` positions in
    ``members`` of this block's queries, ``sim[r, j]`` the similarity of query ``members[rows[r]]``
    and candidate ``members[j]``: ``get_score(candidate, query)`` for ``query_arg="b"``,
    ``get_score(query, candidate)`` for ``"a"``, where ``get_score(a, b) = |[w for w in tokens(a) if w
    in tokens(b)]| / |tokens(a)|`` within a group (items of other groups have similarity 0). The
    division is float64 of two integers, as Python's ``t / len(atags)``.
    """
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    for members in np.split(order, bounds):  # ascending (stable sort of ascending indices)
        local: dict = {}
        ids = [[local.setdefault(w, len(local)) for w in tokens[i]] for i in members]
        g = members.size
        counts = np.zeros((g, len(local)), dtype=np.float64)  # token multiplicities (exact small integers)
        for r, t in enumerate(ids):
            np.add.at(counts[r], t, 1.0)
        present = (counts > 0).astype(np.float64)
        size = counts.sum(axis=1)  # >= 1: every name has at least one token
        block = max(1, _SIM_CELLS // g)
        for s in range(0, g, block):
            rows = np.arange(s, min(s + block, g))
            if query_arg == "b":  # |tokens(candidate) found in query| / |tokens(candidate)|
                sim = (present[rows] @ counts.T) / size[None, :]
            else:  # |tokens(query) found in candidate| / |tokens(query)|
                sim = (counts[rows] @ present.T) / size[rows, None]
            yield members, rows, sim


def _original_ground_truth(groups: np.ndarray, tokens, m: int, query_arg: str) -> np.ndarray:
    """(n, m - 1): the ``m`` highest of the query's similarity column over all n items, the first dropped.

    Order: descending similarity, ties by ascending item index. The positives (similarity > 0) are
    in the query's group; the rest are zero-similarity fillers: the lowest-index items that are not
    positive.
    """
    n = groups.size
    gt = np.empty((n, m - 1), dtype=np.int64)
    window = np.arange(min(2 * m, n))  # holds >= m - npos non-positive items whenever npos < m
    j = np.arange(m)
    for members, rows, sim in _label_sim_blocks(groups, tokens, query_arg):
        b = rows.size
        top = np.argsort(-sim, axis=1, kind="stable")[:, :m]
        vals = np.take_along_axis(sim, top, axis=1)
        pos = np.full((b, m), -1, dtype=np.int64)
        pos[:, : top.shape[1]] = np.where(vals > 0, members[top], -1)
        npos = (pos >= 0).sum(axis=1)
        taken = (window[None, :, None] == pos[:, None, :]).any(axis=2)
        fill = window[np.argsort(taken, axis=1, kind="stable")]  # non-positive first, ascending
        fill_at = np.take_along_axis(fill, np.clip(j - npos[:, None], 0, None), axis=1)
        full = np.where(j < npos[:, None], pos, fill_at)
        gt[members[rows]] = full[:, 1:]
    return gt


def _original_predictions(xn: np.ndarray, nbrs: np.ndarray, scores: np.ndarray, m: int) -> np.ndarray:
    """(n, m - 1): the ``m`` nearest items *including the query itself*, the first dropped.

    ``nbrs``/``scores``: :func:`knn` with the query excluded, at least ``min(m, n - 1)`` columns. The
    query is put back at its place in the order (descending float32 cosine, ascending index); its
    own cosine is 1 (0 for a zero vector), so an earlier-index item tied with it at 1 comes first and
    is the one dropped, as the original's "drop the first" does.
    """
    n = xn.shape[0]
    w = min(m, n - 1)
    nb, sc = nbrs[:, :w], scores[:, :w]
    q = np.arange(n)[:, None]
    own = np.einsum("ij,ij->i", xn, xn).astype(np.float32)[:, None]
    p = ((sc > own) | ((sc == own) & (nb < q))).sum(axis=1)[:, None]  # a prefix: the list is sorted
    j = np.arange(m)
    full = np.where(j < p, nb[:, np.minimum(j, w - 1)], np.where(j == p, q, nb[:, np.maximum(j - 1, 0)]))
    return full[:, 1:]


def _original_map(pred: np.ndarray, gt: np.ndarray) -> float:
    """The original ``evaluate`` averaged as ``get_acc``: AP / min(len(ground truth), k), mean x100."""
    hits = (pred[:, :, None] == gt[:, None, :]).any(axis=2)
    return float(100.0 * _average_precision(hits, gt.shape[1]).mean())


def _paper_original(xn, nbrs, scores, groups, tokens, k: int, query_arg: str) -> float:
    m = min(k + 1, xn.shape[0])
    return _original_map(_original_predictions(xn, nbrs, scores, m),
                         _original_ground_truth(groups, tokens, m, query_arg))


def _tie_averaged_dcg(sc: np.ndarray, gains: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """Row-wise DCG over the first ``len(disc)`` ranks with every run of equal scores given its
    mean gain (McSherry & Najork 2008, as ``sklearn.metrics.ndcg_score(ignore_ties=False)``). Each
    run reaching a rank < len(disc) must be complete in ``sc``."""
    b, width = sc.shape
    k = disc.size
    new = np.ones((b, width), dtype=bool)
    new[:, 1:] = sc[:, 1:] != sc[:, :-1]
    flat = (np.cumsum(new, axis=1) - 1) + np.arange(b)[:, None] * width
    sums = np.bincount(flat.ravel(), weights=gains.ravel(), minlength=b * width)
    cnts = np.bincount(flat.ravel(), minlength=b * width)
    mean = sums / np.maximum(cnts, 1)
    return mean[flat[:, :k]] @ disc


def _paper_ndcg(xn, nbrs, scores, groups, tokens, k: int, query_arg: str) -> float:
    n = xn.shape[0]
    width = nbrs.shape[1]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    # a query whose run of scores tied with its k-th neighbour may reach past the list is redone exactly
    complete = (width == n - 1) | (scores[:, width - 1] < scores[:, k - 1])
    local = np.empty(n, dtype=np.int64)
    dcg = np.empty(n)
    idcg = np.empty(n)
    for members, rows, sim in _label_sim_blocks(groups, tokens, query_arg):
        local[members] = np.arange(members.size)
        qs = members[rows]
        nb = nbrs[qs]
        same = groups[nb] == groups[qs][:, None]
        gains = np.where(same, np.take_along_axis(sim, np.where(same, local[nb], 0), axis=1), 0.0)
        dcg[qs] = _tie_averaged_dcg(scores[qs], gains, disc)
        other = sim.copy()
        other[np.arange(rows.size), rows] = -np.inf  # the query itself is not a candidate
        kk = min(k, members.size - 1)
        best = np.zeros((rows.size, k))
        if kk > 0:
            best[:, :kk] = -np.sort(np.partition(-other, kk - 1, axis=1)[:, :kk], axis=1)
        idcg[qs] = best @ disc
        for r in np.flatnonzero(~complete[qs]):  # rare: long runs of exact ties (duplicates, zero vectors)
            q = qs[r]
            s_all = (xn @ xn[q]).astype(np.float32)
            s_all[q] = -np.inf
            g_all = np.zeros(n)
            g_all[members] = sim[r]
            order = np.argsort(-s_all, kind="stable")[:-1]
            dcg[q] = _tie_averaged_dcg(s_all[order][None], g_all[order][None], disc)[0]
    valid = idcg > 0
    return _nanmean100(dcg[valid] / idcg[valid], f"paper_ndcg@{k}")


def _relevant_counts(groups: np.ndarray) -> np.ndarray:
    return np.bincount(groups)[groups] - 1


def _ap_at_r(nbrs: np.ndarray, groups: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Per-query AP@R (0-1; NaN for a query with no relevant item). ``nbrs``: the neighbours of the
    items ``rows`` (default all), among all items of ``groups``."""
    rows = np.arange(groups.size) if rows is None else rows
    r = _relevant_counts(groups)[rows]
    valid = r > 0
    ap = np.full(rows.size, np.nan)
    rmax = int(r.max())
    if rmax == 0:
        return ap
    rel = groups[nbrs[:, :rmax]] == groups[rows][:, None]
    rel &= np.arange(rmax) < r[:, None]
    ap[valid] = _average_precision(rel[valid], r[valid])
    return ap


def _map_at_r(nbrs: np.ndarray, groups: np.ndarray, rows: np.ndarray | None = None) -> float:
    ap = _ap_at_r(nbrs, groups, rows)
    return _nanmean100(ap[~np.isnan(ap)], "map@r")


def _precision_at_1(nbrs: np.ndarray, groups: np.ndarray, rows: np.ndarray | None = None) -> float:
    rows = np.arange(groups.size) if rows is None else rows
    valid = _relevant_counts(groups)[rows] > 0
    return _nanmean100((groups[nbrs[:, 0]] == groups[rows])[valid].astype(np.float64), "precision@1")


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


def _paper_setup(emb, attrs, names, k, query_arg):
    x, codes, groups = _prepare(emb, attrs)
    tokens = _as_names(names, x.shape[0])
    k = min(_check_k(k, np.inf), x.shape[0] - 1)
    return x, codes, groups, tokens, k, _check_query_arg(query_arg)


def paper_map_at_10(emb, attrs, names, k: int = 10, query_arg: str = "b") -> float:
    """The original code's mAP@10 (x100): leobitz/boosting_image_retrieval, ``proc_lib.py``
    (``get_score``, ``find_sims``, ``evaluate``, ``get_acc``) and ``evaluate.py``.

    * label similarity ``get_score(a, b) = [all attributes equal] * |[w for w in T(a) if w in T(b)]|
      / |T(a)|`` with ``T`` = :func:`paper_tokens` of the product name (duplicates in ``T(a)``
      counted, no vocabulary filter);
    * for query q, the test x test similarity matrix's column q; ground truth = its ``k + 1``
      highest entries, the first dropped: always ``k`` items, zero-similarity fillers included;
    * prediction = the ``k + 1`` items with the highest cosine similarity to q, the first dropped;
    * ``AP = sum_i precision@i * [prediction i in ground truth] / min(|ground truth|, k)`` (= k);
      the mean over *all* queries, x100 (no query is skipped).

    **Which argument is the query** is not in the repository (the code that built its
    ``test-sim.h5`` is missing). Default ``query_arg="b"``: the original reads column q of the
    matrix, and a matrix built the natural way, ``sim[i, j] = get_score(test[i], test[j])``, makes
    column q ``get_score(candidate, query)``: the fraction of the *candidate's* tokens found in the
    query's name. ``query_arg="a"`` is the other reading, ``get_score(query, candidate)`` (reported
    as ``paper_map@10_rev``).

    **Ties** (deterministic rule; the original sorts with numpy's unstable ``argsort`` and reverses
    it, so its tie order is arbitrary): both lists are ordered by descending similarity, then
    ascending item index, over *all* items including the query itself; cosines are compared at
    float32 resolution as in :func:`knn`. "The first dropped" is then exactly the original's step:
    it drops the query only when the query comes first; an item with a lower index tied with it (a
    duplicate image, or a label similarity of 1) is dropped instead and the query stays in the list
    (in the prediction and the ground truth alike, so it counts as a hit there). Zero-similarity
    fillers are the lowest-index items. :func:`paper_map_tie_spread` measures how much the score
    depends on this rule.
    """
    x, codes, groups, tokens, k, query_arg = _paper_setup(emb, attrs, names, k, query_arg)
    nbrs, scores = knn(x, min(k + 1, x.shape[0] - 1))
    return _paper_original(_normalise(x, warn=False), nbrs, scores, groups, tokens, k, query_arg)


def paper_ground_truth(attrs, names, k: int = 10, query_arg: str = "b") -> np.ndarray:
    """The original metric's ground truth: ``(n, min(k, n - 1))`` int64 item indices, best first.

    Row q: the ``k + 1`` highest entries of the similarity column of q (descending, ties by
    ascending index), the first dropped; zero-similarity fillers included. See :func:`paper_map_at_10`.
    """
    n = len(attrs)
    if n < 2:
        raise ValueError(f"attrs must have at least 2 items (rows); got {n}")
    groups = group_codes(encode_attributes(attrs, n))
    tokens = _as_names(names, n)
    k = min(_check_k(k, np.inf), n - 1)
    return _original_ground_truth(groups, tokens, k + 1, _check_query_arg(query_arg))


def paper_neighbours(emb, k: int = 10) -> np.ndarray:
    """The original metric's prediction: ``(n, min(k, n - 1))``: the ``k + 1`` nearest items by
    cosine *including the query*, the first dropped (see :func:`paper_map_at_10` for the ties)."""
    x = _as_embedding(emb)
    k = min(_check_k(k, np.inf), x.shape[0] - 1)
    nbrs, scores = knn(x, min(k + 1, x.shape[0] - 1))
    return _original_predictions(_normalise(x, warn=False), nbrs, scores, k + 1)


def paper_map_tie_spread(emb, attrs, names, *, n_orders: int = 20, seed: int = 0, k: int = 10,
                         query_arg: str = "b") -> dict:
    """How far :func:`paper_map_at_10` moves when ties are broken in other orders.

    The score is recomputed on ``n_orders`` random permutations of the item order (seeded by
    ``seed``): the deterministic rule (ties by ascending index) then breaks every tie (label
    similarity, zero-similarity fillers, equal cosines, the "first dropped") in a random order.
    Returns ``value`` (the deterministic score), ``mean``, ``std`` (ddof=1), ``min``, ``max`` over the
    orders, and ``n_orders``. Without ties, every order gives ``value``.
    """
    x, codes, groups, tokens, k, query_arg = _paper_setup(emb, attrs, names, k, query_arg)
    n_orders = check_int(n_orders, "n_orders")
    xn = _normalise(x, warn=False)
    width = min(k + 1, x.shape[0] - 1)
    value = _paper_original(xn, *knn(x, width), groups, tokens, k, query_arg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the zero-vector warning, if any, was just given
        rng = np.random.default_rng(seed)
        vals = []
        for _ in range(n_orders):
            perm = rng.permutation(x.shape[0])
            vals.append(_paper_original(xn[perm], *knn(x[perm], width), group_codes(codes[perm]),
                                        [tokens[i] for i in perm], k, query_arg))
    vals = np.asarray(vals)
    return {"value": value, "mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if n_orders > 1 else 0.0,
            "min": float(vals.min()), "max": float(vals.max()), "n_orders": int(n_orders)}


def paper_ndcg_at_k(emb, attrs, names, k: int = 10, query_arg: str = "b") -> float:
    """A tie-robust reading of the paper metric: nDCG@k x100 with the original's label similarity
    (:func:`paper_map_at_10`, same ``query_arg``) as graded gain.

    Every other item is a candidate (the query excluded by index); linear gains, ``1 / log2(rank + 1)``
    discounts; the ideal DCG uses the best ``k`` gains among all other items, so ties in the label
    similarity cannot change it. Items with equal cosine (float32 resolution) share the mean of
    their gains (as ``sklearn.metrics.ndcg_score`` with ``ignore_ties=False``), so the score does not
    depend on the item order at all. Queries whose ideal DCG is 0 (no other item of their group)
    are skipped.
    """
    x, codes, groups, tokens, k, query_arg = _paper_setup(emb, attrs, names, k, query_arg)
    nbrs, scores = knn(x, min(x.shape[0] - 1, k + 16))
    return _paper_ndcg(_normalise(x, warn=False), nbrs, scores, groups, tokens, k, query_arg)


def paper_map_at_10_filtered(emb, attrs, tags, k: int = 10) -> float:
    """The study's earlier paper-metric variant (mAP@10 x100), kept for comparison.

    It differs from the original code (:func:`paper_map_at_10`): for each query a (against all
    other items),

    * label similarity ``sim(a, b) = [all attributes equal] * |T(a) & T(b)| / |T(a)|`` where
      ``T(x)`` is the *set* of x's vocabulary-filtered tags (duplicates count once); the query is
      the first argument. If a has no tags, ``sim(a, b)`` is attribute equality alone.
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
    return _filtered_map(nbrs, groups, tag_sets, k)


def paper_ground_truth_filtered(attrs, tags, k: int = 10) -> np.ndarray:
    """``paper_map@10_filtered``'s ground truth: ``(n, k)`` int64 item indices, best first, padded with -1.

    Row ``a`` lists the other items with ``sim(a, b) > 0`` in order of (descending ``sim``,
    ascending index), at most ``k`` of them (``k`` is reduced to ``n - 1`` for small ``n``);
    see :func:`paper_map_at_10_filtered` for ``sim``.
    """
    n = len(attrs)
    if n < 2:
        raise ValueError(f"attrs must have at least 2 items (rows); got {n}")
    codes = encode_attributes(attrs, n)
    tag_sets = _as_tags(tags, n)
    k = min(_check_k(k, np.inf), n - 1)
    return _filtered_ground_truth(group_codes(codes), tag_sets, k)


def map_at_r(emb, attrs, queries=None) -> float:
    """MAP@R x100: relevant = same group, R = number of relevant items; queries with R = 0 skipped.

    ``queries``: the row indices (or a boolean mask) of the items used as queries, each searched among
    all items (default: every item is a query), e.g. a sample of queries over a whole catalogue."""
    x, codes, groups = _prepare(emb, attrs)
    rows = _query_rows(queries, x.shape[0])
    nbrs, _ = knn(x, max(1, int(_relevant_counts(groups)[rows].max())), queries=rows)
    return _map_at_r(nbrs, groups, rows)


def average_precision_at_r(emb, attrs, queries=None) -> np.ndarray:
    """Each query's AP@R x100 (the terms :func:`map_at_r` averages; NaN for a query with no relevant
    item), in the order of ``queries`` (default: every item). For paired comparisons over queries."""
    x, codes, groups = _prepare(emb, attrs)
    rows = _query_rows(queries, x.shape[0])
    nbrs, _ = knn(x, max(1, int(_relevant_counts(groups)[rows].max())), queries=rows)
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
    x, codes, groups = _prepare(emb, attrs)
    rows = _query_rows(queries, x.shape[0])
    nbrs, _ = knn(x, 1, queries=rows)
    return _precision_at_1(nbrs, groups, rows)


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


def evaluate(emb, attrs, tags, names=None) -> dict[str, float]:
    """All :data:`METRICS` (each on a 0-100 scale) from one nearest-neighbour search.

    ``names``: the product names, for the original metric's tokens (``paper_map@10``, ``_rev``,
    ``paper_ndcg@10``). Without them (None) those metrics use ``tags`` as the token lists, with a
    warning: that is *not* the original's tokens. ``tags``: for ``paper_map@10_filtered``.
    """
    x, codes, groups = _prepare(emb, attrs)
    n = x.shape[0]
    tag_sets = _as_tags(tags, n)
    if names is None:
        warnings.warn("evaluate: no product names given; paper_map@10, paper_map@10_rev and paper_ndcg@10 use the "
                      "tags as tokens, not the original's tokens of the product name", RuntimeWarning, stacklevel=2)
        tokens = [list(t) for t in tags]
    else:
        tokens = _as_names(names, n)
    k = min(10, n - 1)
    nbrs, scores = knn(x, min(n - 1, max(k + 16, int(_relevant_counts(groups).max()))))
    xn = _normalise(x, warn=False)
    return {
        "paper_map@10": _paper_original(xn, nbrs, scores, groups, tokens, k, "b"),
        "map@r": _map_at_r(nbrs, groups),
        "precision@1": _precision_at_1(nbrs, groups),
        "recall@10": _recall_at_k(nbrs, groups, k),
        "ndcg@10": _ndcg_at_k(nbrs, codes, k),
        "paper_map@10_rev": _paper_original(xn, nbrs, scores, groups, tokens, k, "a"),
        "paper_ndcg@10": _paper_ndcg(xn, nbrs, scores, groups, tokens, k, "b"),
        "paper_map@10_filtered": _filtered_map(nbrs, groups, tag_sets, k),
    }

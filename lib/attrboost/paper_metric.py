"""The original study's metric, ``paper_map@10``, and its readings (:mod:`attrboost.metrics` states the
conventions; docs/protocol.md the metric): the original code's computation, its ground truth and
neighbours, the tie spread, the tie-robust ``paper_ndcg@10`` and the filtered variant."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .checks import check_int
from .neighbours import (as_embedding, as_names, as_tags, average_precision, check_k, encode_attributes, group_codes,
                         knn, nanmean100, normalise, prepare)

#: which argument of the original's ``get_score(a, b)`` is the query: the default ("b") and the other reading
QUERY_ARGS = ("b", "a")
_SIM_CELLS = 1 << 22  # label-similarity blocks hold about this many cells (32 MiB of float64)


def check_query_arg(query_arg) -> str:
    if query_arg not in QUERY_ARGS:
        raise ValueError(f"query_arg={query_arg!r}: expected 'b' (the query is get_score's second argument, the "
                         f"default) or 'a' (its first)")
    return query_arg


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


def filtered_map(nbrs: np.ndarray, groups: np.ndarray, tags, k: int) -> float:
    gt = _filtered_ground_truth(groups, tags, k)
    pred = nbrs[:, :k]
    hits = (pred[:, :, None] == gt[:, None, :]).any(axis=2)  # gt padding (-1) never matches
    size = (gt >= 0).sum(axis=1)
    valid = size > 0
    ap = average_precision(hits[valid], np.minimum(k, size[valid]))
    return nanmean100(ap, "paper_map@10_filtered")


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
    return float(100.0 * average_precision(hits, gt.shape[1]).mean())


def paper_original(xn, nbrs, scores, groups, tokens, k: int, query_arg: str) -> float:
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


def paper_ndcg(xn, nbrs, scores, groups, tokens, k: int, query_arg: str) -> float:
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
    return nanmean100(dcg[valid] / idcg[valid], f"paper_ndcg@{k}")


def _paper_setup(emb, attrs, names, k, query_arg):
    x, codes, groups = prepare(emb, attrs)
    tokens = as_names(names, x.shape[0])
    k = min(check_k(k, np.inf), x.shape[0] - 1)
    return x, codes, groups, tokens, k, check_query_arg(query_arg)


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
    return paper_original(normalise(x, warn=False), nbrs, scores, groups, tokens, k, query_arg)


def paper_ground_truth(attrs, names, k: int = 10, query_arg: str = "b") -> np.ndarray:
    """The original metric's ground truth: ``(n, min(k, n - 1))`` int64 item indices, best first.

    Row q: the ``k + 1`` highest entries of the similarity column of q (descending, ties by
    ascending index), the first dropped; zero-similarity fillers included. See :func:`paper_map_at_10`.
    """
    n = len(attrs)
    if n < 2:
        raise ValueError(f"attrs must have at least 2 items (rows); got {n}")
    groups = group_codes(encode_attributes(attrs, n))
    tokens = as_names(names, n)
    k = min(check_k(k, np.inf), n - 1)
    return _original_ground_truth(groups, tokens, k + 1, check_query_arg(query_arg))


def paper_neighbours(emb, k: int = 10) -> np.ndarray:
    """The original metric's prediction: ``(n, min(k, n - 1))``: the ``k + 1`` nearest items by
    cosine *including the query*, the first dropped (see :func:`paper_map_at_10` for the ties)."""
    x = as_embedding(emb)
    k = min(check_k(k, np.inf), x.shape[0] - 1)
    nbrs, scores = knn(x, min(k + 1, x.shape[0] - 1))
    return _original_predictions(normalise(x, warn=False), nbrs, scores, k + 1)


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
    xn = normalise(x, warn=False)
    width = min(k + 1, x.shape[0] - 1)
    value = paper_original(xn, *knn(x, width), groups, tokens, k, query_arg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the zero-vector warning, if any, was just given
        rng = np.random.default_rng(seed)
        vals = []
        for _ in range(n_orders):
            perm = rng.permutation(x.shape[0])
            vals.append(paper_original(xn[perm], *knn(x[perm], width), group_codes(codes[perm]),
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
    return paper_ndcg(normalise(x, warn=False), nbrs, scores, groups, tokens, k, query_arg)


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
    x, codes, groups = prepare(emb, attrs)
    tag_sets = as_tags(tags, x.shape[0])
    k = min(check_k(k, np.inf), x.shape[0] - 1)
    nbrs, _ = knn(x, k)
    return filtered_map(nbrs, groups, tag_sets, k)


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
    tag_sets = as_tags(tags, n)
    k = min(check_k(k, np.inf), n - 1)
    return _filtered_ground_truth(group_codes(codes), tag_sets, k)

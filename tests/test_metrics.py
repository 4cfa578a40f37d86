"""Tests for attrboost.metrics against independent, loop-by-loop computations."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score

from attrboost import metrics as M
from helpers import continuous, tie_heavy

SEEDS = [0, 1, 2, 3]


# ----------------------------------------------------------------- independent references
def cosine_f32(a, b) -> np.float32:
    """Cosine of two vectors in plain python floats, compared at float32 resolution (the documented rule)."""
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    na = math.sqrt(sum(v * v for v in a))
    nb = math.sqrt(sum(v * v for v in b))
    if na == 0 or nb == 0:
        return np.float32(0.0)
    return np.float32(sum(p * q for p, q in zip(a, b)) / (na * nb))


def ranking_loop(emb, q):
    """All other items, best first: (-cosine, index)."""
    others = [(cosine_f32(emb[q], emb[j]), j) for j in range(len(emb)) if j != q]
    return [j for s, j in sorted(others, key=lambda t: (-t[0], t[1]))]


def label_sim_loop(attrs, tags, a, b):
    if tuple(attrs[a]) != tuple(attrs[b]):
        return 0.0
    ta = set(tags[a])
    if not ta:
        return 1.0
    return len(ta & set(tags[b])) / len(ta)


def truth_loop(attrs, tags, q, k):
    others = [j for j in range(len(attrs)) if j != q]
    by_label = sorted(((label_sim_loop(attrs, tags, q, j), j) for j in others), key=lambda t: (-t[0], t[1]))
    return [j for s, j in by_label if s > 0][:k]


def paper_map_loop(emb, attrs, tags, k=10):
    """Direct transcription of the original algorithm: python loops, explicit pairwise similarity."""
    aps = []
    for q in range(len(emb)):
        truth = truth_loop(attrs, tags, q, k)
        if not truth:
            continue
        pred = ranking_loop(emb, q)[:k]
        hits, ap = 0, 0.0
        for i, j in enumerate(pred, start=1):
            if j in truth:
                hits += 1
                ap += hits / i
        aps.append(ap / min(k, len(truth)))
    return 100.0 * sum(aps) / len(aps)


def group_metrics_loop(emb, attrs, k=10):
    """map@r, precision@1, recall@k by brute force (relevant = same full attribute tuple)."""
    n = len(emb)
    group = [tuple(a) for a in attrs]
    maps, p1s, recalls = [], [], []
    for q in range(n):
        ranking = ranking_loop(emb, q)
        relevant = {j for j in range(n) if j != q and group[j] == group[q]}
        r = len(relevant)
        if r == 0:
            continue
        hits, ap = 0, 0.0
        for i, j in enumerate(ranking[:r], start=1):
            if j in relevant:
                hits += 1
                ap += hits / i
        maps.append(ap / r)
        p1s.append(1.0 if ranking[0] in relevant else 0.0)
        recalls.append(len(relevant & set(ranking[:k])) / r)
    mean = lambda v: 100.0 * sum(v) / len(v)  # noqa: E731
    return mean(maps), mean(p1s), mean(recalls)


def knn_numpy(emb, k, exclude_self=True):
    x = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    xn = x / np.where(norms == 0, 1, norms)
    s = (xn @ xn.T).astype(np.float32)
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


# ------------------------------------------------------------------------------ paper metric
@pytest.mark.filterwarnings("ignore:emb has .* zero vector")
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [10, 4])
def test_paper_map_equals_loop_transcription(seed, k):
    emb, attrs, tags = tie_heavy(seed)
    assert M.paper_map_at_10_filtered(emb, attrs, tags, k=k) == pytest.approx(paper_map_loop(emb, attrs, tags, k), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_paper_map_equals_loop_continuous(seed):
    emb, attrs, tags = continuous(seed, n_attrs=2, values=2)
    assert M.paper_map_at_10_filtered(emb, attrs, tags) == pytest.approx(paper_map_loop(emb, attrs, tags), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_paper_ground_truth_equals_loop(seed):
    _, attrs, tags = tie_heavy(seed, n=80)
    gt = M.paper_ground_truth_filtered(pd.DataFrame(attrs), tags, k=10)
    assert gt.shape == (80, 10) and gt.dtype == np.int64
    for q in range(80):
        truth = truth_loop(attrs, tags, q, 10)
        assert gt[q].tolist() == truth + [-1] * (10 - len(truth))


def test_paper_map_tags_are_a_set_and_empty_tags_mean_attribute_equality():
    emb, attrs, tags = continuous(5, n_attrs=1, values=3)
    doubled = [t + t for t in tags]  # repeating a token changes nothing
    assert M.paper_map_at_10_filtered(emb, attrs, doubled) == M.paper_map_at_10_filtered(emb, attrs, tags)
    # With no tags at all, ground truth = same attributes ranked by index.
    no_tags = [[] for _ in tags]
    assert M.paper_map_at_10_filtered(emb, attrs, no_tags) == pytest.approx(paper_map_loop(emb, attrs, no_tags), abs=1e-12)


# -------------------------------------------------------------------------- standard metrics
@pytest.mark.filterwarnings("ignore:emb has .* zero vector")
@pytest.mark.parametrize("seed", SEEDS)
def test_group_metrics_equal_brute_force(seed):
    emb, attrs, _ = tie_heavy(seed, n=120)
    want_map, want_p1, want_recall = group_metrics_loop(emb, attrs)
    assert M.map_at_r(emb, attrs) == pytest.approx(want_map, abs=1e-12)
    assert M.precision_at_1(emb, attrs) == pytest.approx(want_p1, abs=1e-12)
    assert M.recall_at_k(emb, attrs, k=10) == pytest.approx(want_recall, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_group_metrics_equal_brute_force_continuous(seed):
    emb, attrs, _ = continuous(seed, n_attrs=2, values=3)
    want = group_metrics_loop(emb, attrs, k=5)
    got = (M.map_at_r(emb, attrs), M.precision_at_1(emb, attrs), M.recall_at_k(emb, attrs, k=5))
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [10, 3])
def test_ndcg_equals_sklearn(seed, k):
    emb, attrs, _ = continuous(seed)  # continuous: no ties, so sklearn's tie averaging does not matter
    n = len(emb)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = x @ x.T
    frac = (attrs[:, None, :] == attrs[None, :, :]).mean(axis=2)
    off = ~np.eye(n, dtype=bool)  # drop the query itself from both truth and scores
    y_true = frac[off].reshape(n, n - 1)
    y_score = cos[off].reshape(n, n - 1)
    assert (y_true.max(axis=1) > 0).all()  # every query has some relevance: sklearn averages the same set
    assert M.ndcg_at_k(emb, attrs, k=k) == pytest.approx(100 * ndcg_score(y_true, y_score, k=k), abs=1e-10)


def test_evaluate_matches_individual_functions():
    emb, attrs, tags = continuous(7, n=120, n_attrs=3, values=2)
    names = [" ".join(t) + " & Co" for t in tags]
    got = M.evaluate(emb, attrs, tags, names)
    assert tuple(got) == M.METRICS
    assert got == {
        "paper_map@10": M.paper_map_at_10(emb, attrs, names),
        "map@r": M.map_at_r(emb, attrs),
        "precision@1": M.precision_at_1(emb, attrs),
        "recall@10": M.recall_at_k(emb, attrs, 10),
        "ndcg@10": M.ndcg_at_k(emb, attrs, 10),
        "paper_map@10_rev": M.paper_map_at_10(emb, attrs, names, query_arg="a"),
        "paper_ndcg@10": M.paper_ndcg_at_k(emb, attrs, names),
        "paper_map@10_filtered": M.paper_map_at_10_filtered(emb, attrs, tags),
    }
    assert all(0 <= v <= 100 for v in got.values())


def test_dataframe_and_string_labels_equal_integer_codes():
    emb, attrs, tags = continuous(8, n_attrs=3, values=3)
    names = np.array(["red", "blue", "green"])
    df = pd.DataFrame({f"a{j}": names[attrs[:, j]] for j in range(attrs.shape[1])})
    words = [" ".join(t) for t in tags]
    assert M.evaluate(emb, df, tags, words) == M.evaluate(emb, attrs, tags, words)


# --------------------------------------------------------------------------------------- knn
@pytest.mark.filterwarnings("ignore:emb has .* zero vector")
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 5, 12])
@pytest.mark.parametrize("margin", [None, 0, 2])
def test_knn_equals_numpy_with_exact_ties(seed, k, margin):
    emb, _, _ = tie_heavy(seed, n=200, dim=3)
    idx, scores = M.knn(emb, k, margin=margin)
    want_idx, want_scores = knn_numpy(emb, k)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(scores, want_scores)
    assert idx.dtype == np.int64 and scores.dtype == np.float32


def test_knn_all_tied_falls_back_to_exact():
    rng = np.random.default_rng(0)
    emb = np.ones((100, 4))
    emb[rng.choice(100, 5, replace=False)] = rng.normal(size=(5, 4))  # a few distinct rows
    idx, scores = M.knn(emb, 10, margin=0)
    want_idx, want_scores = knn_numpy(emb, 10)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(scores, want_scores)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_knn_continuous_high_dim(seed):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(400, 256)).astype(np.float32) + 0.5
    for exclude_self in (True, False):
        idx, scores = M.knn(emb, 7, exclude_self=exclude_self)
        want_idx, want_scores = knn_numpy(emb, 7, exclude_self=exclude_self)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(scores, want_scores)


def test_knn_excludes_self_but_keeps_duplicates():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 6))
    emb = np.concatenate([base, base])  # item i and i + 40 are identical
    idx, scores = M.knn(emb, 3)
    n = len(emb)
    assert not (idx == np.arange(n)[:, None]).any()
    np.testing.assert_array_equal(idx[:, 0], (np.arange(n) + 40) % n)  # the twin comes first
    idx_self, _ = M.knn(emb, 3, exclude_self=False)
    np.testing.assert_array_equal(idx_self[:, :2], np.sort(np.stack([np.arange(n), (np.arange(n) + 40) % n], 1)))


def test_zero_vectors_have_cosine_zero_and_warn():
    emb = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [0.5, 0.5]])
    with pytest.warns(RuntimeWarning, match="1 zero vector"):
        idx, scores = M.knn(emb, 3)
    assert scores[1].tolist() == [0.0, 0.0, 0.0] and idx[1].tolist() == [0, 2, 3]
    np.testing.assert_array_equal(idx[0], [3, 1, 2])  # cos 0.707 > 0 (zero row) > -1


# ------------------------------------------------------------------------------- invariances
def test_metrics_invariant_to_scaling():
    emb, attrs, tags = continuous(11, n=100, n_attrs=3, values=2)
    rng = np.random.default_rng(0)
    scaled = emb * 3.7 * rng.uniform(0.1, 10.0, size=(len(emb), 1))
    words = [" ".join(t) for t in tags]
    assert M.evaluate(scaled, attrs, tags, words) == pytest.approx(M.evaluate(emb, attrs, tags, words), abs=1e-12)


def test_perfect_embedding_scores_100():
    rng = np.random.default_rng(0)
    attrs = rng.integers(0, 2, size=(80, 3))
    groups = np.unique(attrs, axis=0, return_inverse=True)[1].ravel()
    emb = np.eye(groups.max() + 1)[groups]
    assert M.map_at_r(emb, attrs) == 100.0
    assert M.precision_at_1(emb, attrs) == 100.0
    assert M.recall_at_k(emb, attrs, k=int(np.bincount(groups).max()) - 1) == 100.0


def test_query_is_excluded():
    """Pairs of identical embeddings with different labels: the twin, not the query, is the top hit."""
    rng = np.random.default_rng(4)
    base = rng.normal(size=(30, 5))
    emb = np.concatenate([base, base])
    attrs = np.concatenate([np.zeros(30, int), np.ones(30, int)])[:, None]  # twin is in the other group
    assert M.precision_at_1(emb, attrs) == 0.0  # would be 100 if the query counted as its own neighbour
    attrs_same = np.concatenate([np.arange(30), np.arange(30)])[:, None]  # twin in the same group
    assert M.precision_at_1(emb, attrs_same) == 100.0
    assert M.map_at_r(emb, attrs_same) == 100.0


def test_lone_queries_are_skipped_and_all_lone_gives_nan():
    emb, attrs, _ = continuous(2, n=60, n_attrs=1, values=4)
    attrs[:7, 0] = 100 + np.arange(7)  # seven items alone in their group: skipped, as in the loop
    want = group_metrics_loop(emb, attrs)
    got = (M.map_at_r(emb, attrs), M.precision_at_1(emb, attrs), M.recall_at_k(emb, attrs))
    assert got == pytest.approx(want, abs=1e-12)
    with pytest.warns(RuntimeWarning, match="no query"):
        assert math.isnan(M.map_at_r(emb, np.arange(60)))


def test_small_n_reduces_k():
    emb, attrs, tags = continuous(3, n=6, n_attrs=1, values=2)
    got = M.evaluate(emb, attrs, tags, [" ".join(t) for t in tags])
    assert all(math.isfinite(v) for v in got.values())
    assert M.paper_map_at_10_filtered(emb, attrs, tags) == pytest.approx(paper_map_loop(emb, attrs, tags), abs=1e-12)


# ------------------------------------------------------------------------------------ errors
def test_mismatched_lengths_name_the_arguments():
    emb, attrs, tags = continuous(0, n=20)
    with pytest.raises(ValueError, match=r"emb has 20 rows but attrs has 19"):
        M.map_at_r(emb, attrs[:19])
    with pytest.raises(ValueError, match=r"emb has 20 rows but tags has 19"):
        M.paper_map_at_10_filtered(emb, attrs, tags[:19])
    with pytest.raises(ValueError, match="attrs has 21"):
        M.evaluate(emb, np.concatenate([attrs, attrs[:1]]), tags)


def test_nan_in_emb_is_an_error():
    emb, attrs, tags = continuous(0, n=20)
    emb[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"emb contains NaN.*rows \[3\]"):
        M.evaluate(emb, attrs, tags)
    with pytest.raises(ValueError, match="NaN"):
        M.knn(emb, 2)


def test_fewer_than_two_items_is_an_error():
    with pytest.raises(ValueError, match="at least 2 items"):
        M.precision_at_1(np.ones((1, 3)), [[0]])
    with pytest.raises(ValueError, match="2-D"):
        M.knn(np.ones(5), 1)


def test_bad_k_and_bad_tags():
    emb, attrs, tags = continuous(0, n=20)
    with pytest.raises(ValueError, match="k=20 exceeds"):
        M.knn(emb, 20)
    with pytest.raises(ValueError, match="k == 0, must be >= 1"):
        M.recall_at_k(emb, attrs, k=0)
    with pytest.raises(TypeError, match=r"k must be an integer >= 1, got True"):
        M.knn(emb, True)
    with pytest.raises(TypeError, match=r"tags\[0\] must be a list of tokens"):
        M.paper_map_at_10_filtered(emb, attrs, ["men tshirt"] * 20)


# ------------------------------------------------------------- queries over a whole gallery
def group_metrics_loop_queries(emb, attrs, queries):
    """map@r and precision@1 by brute force for the query rows only, every item as the gallery."""
    n = len(emb)
    group = [tuple(a) for a in attrs]
    maps, p1s = [], []
    for q in queries:
        ranking = ranking_loop(emb, q)
        relevant = {j for j in range(n) if j != q and group[j] == group[q]}
        if not relevant:
            continue
        hits, ap = 0, 0.0
        for i, j in enumerate(ranking[:len(relevant)], start=1):
            if j in relevant:
                hits += 1
                ap += hits / i
        maps.append(ap / len(relevant))
        p1s.append(1.0 if ranking[0] in relevant else 0.0)
    return 100.0 * sum(maps) / len(maps), 100.0 * sum(p1s) / len(p1s)


@pytest.mark.filterwarnings("ignore:emb has .* zero vector")
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("k", [1, 6])
def test_knn_queries_are_the_rows_of_the_full_search(seed, k):
    emb, _, _ = tie_heavy(seed, n=180, dim=3)
    rows = np.random.default_rng(seed).choice(180, 37, replace=False)
    want_idx, want_scores = knn_numpy(emb, k)
    for margin in (None, 0):
        idx, scores = M.knn(emb, k, margin=margin, queries=rows)
        np.testing.assert_array_equal(idx, want_idx[rows])
        np.testing.assert_array_equal(scores, want_scores[rows])
    mask = np.zeros(180, bool)
    mask[rows] = True
    np.testing.assert_array_equal(M.knn(emb, k, queries=mask)[0], want_idx[np.sort(rows)])


@pytest.mark.filterwarnings("ignore:emb has .* zero vector")
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_map_at_r_and_p1_over_query_rows_equal_brute_force(seed):
    emb, attrs, _ = tie_heavy(seed, n=150)
    rows = np.random.default_rng(seed + 1).choice(150, 40, replace=False)
    want_map, want_p1 = group_metrics_loop_queries(emb, attrs, rows)
    assert M.map_at_r(emb, attrs, queries=rows) == pytest.approx(want_map, abs=1e-12)
    assert M.precision_at_1(emb, attrs, queries=rows) == pytest.approx(want_p1, abs=1e-12)
    # every item as a query is the default
    assert M.map_at_r(emb, attrs, queries=np.arange(150)) == pytest.approx(M.map_at_r(emb, attrs), abs=1e-12)


def test_bad_queries_name_the_problem():
    emb, attrs, _ = continuous(0, n=30)
    with pytest.raises(ValueError, match=r"queries: item indices must be in \[0, 29\]"):
        M.map_at_r(emb, attrs, queries=[0, 30])
    with pytest.raises(ValueError, match="one value per item"):
        M.precision_at_1(emb, attrs, queries=np.ones(5, bool))
    with pytest.raises(ValueError, match="non-empty 1-D array"):
        M.map_at_r(emb, attrs, queries=[])


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_average_precision_at_r_are_the_terms_of_map_at_r(seed):
    emb, attrs, _ = continuous(seed, n=80, n_attrs=2, values=3)
    attrs[0] = [9, 9]  # a lone item: no relevant item, NaN
    rows = np.array([0, 5, 7, 11, 40])
    ap = M.average_precision_at_r(emb, attrs, queries=rows)
    assert ap.shape == (5,) and np.isnan(ap[0]) and not np.isnan(ap[1:]).any()
    assert np.nanmean(ap) == pytest.approx(group_metrics_loop_queries(emb, attrs, rows)[0], abs=1e-12)
    assert np.nanmean(M.average_precision_at_r(emb, attrs)) == pytest.approx(M.map_at_r(emb, attrs), abs=1e-12)

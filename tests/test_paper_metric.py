"""paper_map@10 is the original code's computation: the library against a step-by-step transcription
of leobitz/boosting_image_retrieval's proc_lib.py / evaluate.py (tests/original_metric.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from attrboost import metrics as M

sys.path.insert(0, str(Path(__file__).parent))
import original_metric as O  # noqa: E402
from helpers import continuous, make_kaggle, tie_heavy  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:emb has .* zero vector")

WORDS = ["men", "women", "black", "Blue", "tshirt", "&", "watch", "puma", "nike", ""]


def dataset(seed: int, n: int = 60, kind: str = "continuous", n_attrs: int = 2):
    """Few attribute classes (groups collide), names from a small word list with duplicates.

    kind: ``continuous`` (no cosine ties), ``ints`` (small-integer embeddings: many exact ties and
    zero vectors), ``dups`` (continuous, every third row a copy of an earlier one).
    """
    rng = np.random.default_rng(seed)
    attrs = rng.integers(0, 2, size=(n, n_attrs))
    names = [" ".join(rng.choice(WORDS, size=rng.integers(1, 6))) for _ in range(n)]
    names[0] = None  # a missing name: one empty token, as the original's CSV reader gives
    if kind == "ints":
        emb = rng.integers(0, 3, size=(n, 3))
    else:
        emb = rng.normal(size=(n, 5))
        if kind == "dups":
            rows = np.arange(2, n, 3)
            emb[rows] = emb[rng.integers(0, 2, size=rows.size) + rows - 2]
    return emb, attrs, names


CASES = [(seed, kind) for seed in range(4) for kind in ("continuous", "ints", "dups")]


@pytest.mark.parametrize("query_arg", ["b", "a"])
@pytest.mark.parametrize("seed,kind", CASES)
def test_paper_map_equals_original_transcription(seed, kind, query_arg):
    emb, attrs, names = dataset(seed, kind=kind)
    want = O.original_paper_map(emb, attrs, names, query_arg)
    got = M.paper_map_at_10(emb, attrs, names, query_arg=query_arg)
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("n", [2, 5, 11, 12])
def test_paper_map_small_n_equals_transcription(n):
    emb, attrs, names = dataset(n, n=n, kind="ints", n_attrs=1)
    for query_arg in "ba":
        assert M.paper_map_at_10(emb, attrs, names, query_arg=query_arg) == pytest.approx(
            O.original_paper_map(emb, attrs, names, query_arg), abs=1e-12)


def test_lists_equal_find_sims():
    """Ground truth and prediction lists themselves, query by query, as the original's find_sims."""
    emb, attrs, names = dataset(5, n=80, kind="dups")
    psim = O.cosine_matrix(emb)
    idx = {str(i): i for i in range(len(names))}
    pred = M.paper_neighbours(emb)
    for query_arg in "ba":
        gt = M.paper_ground_truth(attrs, names, query_arg=query_arg)
        sim = O.similarity_matrix(attrs, names, query_arg)
        assert gt.shape == (80, 10)  # always 10, zero-similarity fillers included
        for q in range(80):
            assert gt[q].tolist() == O.find_sims(str(q), sim, idx)[1][1:].tolist()
            assert pred[q].tolist() == O.find_sims(str(q), psim, idx)[1][1:].tolist()


def test_first_dropped_is_the_lowest_index_tie_not_always_the_query():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 4))
    emb[20] = emb[3]  # an exact duplicate with a higher index
    pred = M.paper_neighbours(emb)
    assert 20 in pred[3]  # query 3 comes first: dropped; its twin is its first neighbour
    assert pred[3][0] == 20
    assert 20 in pred[20] and 3 not in pred[20]  # query 20: the twin (index 3) comes first and is dropped


def test_label_similarity_direction_and_tokens():
    """get_score(a, b) = |tokens(a) found in b| / |tokens(a)|, duplicates counted; 'b' = the query is b."""
    attrs = np.zeros((12, 1), dtype=int)
    names = ["Red red shirt", "red"] + [f"x{i}" for i in range(10)]
    # query 1 ("red"), query_arg "b": candidate 0 scores 2/3 (two of its three tokens are in "red")
    assert M.paper_ground_truth(attrs, names, k=1, query_arg="b")[1].tolist() == [0]
    # query 0, query_arg "a": candidate 1 scores |[red, red, shirt] in {red}| / 3 = 2/3; others 0 -> fillers
    assert M.paper_ground_truth(attrs, names, k=2, query_arg="a")[0].tolist() == [1, 2]
    assert M.paper_tokens("Puma Men Black & White T-shirt  Tee ") == ["puma", "men", "black-white", "t-shirt", "",
                                                                     "tee"]
    assert M.paper_tokens(None) == M.paper_tokens(float("nan")) == [""]


def test_filtered_variant_equals_previous_numbers():
    """paper_map@10_filtered is the study's earlier paper_map@10, unchanged (values from the old code)."""
    old = {0: 2.6527998236331567, 1: 3.140360449735449, 2: 2.2556901927437645}
    for seed, want in old.items():
        emb, attrs, tags = continuous(seed, n=120, n_attrs=2, values=2)
        assert M.paper_map_at_10_filtered(emb, attrs, tags) == pytest.approx(want, abs=1e-12)
        names = [" ".join(t) for t in tags]
        assert M.evaluate(emb, attrs, tags, names)["paper_map@10_filtered"] == pytest.approx(want, abs=1e-12)
    for seed, want in {0: 1.8076499118165785, 1: 2.9117529562160436}.items():
        emb, attrs, tags = tie_heavy(seed)
        with pytest.warns(RuntimeWarning, match="zero vector"):
            assert M.paper_map_at_10_filtered(emb, attrs, tags) == pytest.approx(want, abs=1e-12)


def test_evaluate_keys_and_agreement():
    emb, attrs, names = dataset(3, n=150, kind="dups")
    tags = [M.paper_tokens(v) for v in names]
    got = M.evaluate(emb, attrs, tags, names)
    assert list(got)[:2] == ["paper_map@10", "map@r"] and tuple(got) == M.METRICS
    assert got["paper_map@10"] == pytest.approx(O.original_paper_map(emb, attrs, names, "b"), abs=1e-12)
    assert got["paper_map@10_rev"] == pytest.approx(O.original_paper_map(emb, attrs, names, "a"), abs=1e-12)
    with pytest.warns(RuntimeWarning, match="no product names given"):
        without = M.evaluate(emb, attrs, tags)  # tags used as the tokens: here the same tokens
    assert without == got


def ndcg_reference(emb, attrs, names, query_arg, k=10):
    """sklearn's nDCG (ties averaged) with the transcription's label similarity, over the other items."""
    n = len(names)
    sim = O.similarity_matrix(attrs, names, query_arg)  # column q = the gains for query q
    cos = O.cosine_matrix(emb).astype(np.float64)
    off = ~np.eye(n, dtype=bool)
    y_true = sim.T[off].reshape(n, n - 1)
    y_score = cos[off].reshape(n, n - 1)
    valid = y_true.max(axis=1) > 0
    return 100 * ndcg_score(y_true[valid], y_score[valid], k=k, ignore_ties=False)


@pytest.mark.parametrize("seed,kind", CASES)
def test_paper_ndcg_equals_sklearn_with_ties_averaged(seed, kind):
    emb, attrs, names = dataset(seed, kind=kind)
    for query_arg in "ba":
        got = M.paper_ndcg_at_k(emb, attrs, names, query_arg=query_arg)
        assert got == pytest.approx(ndcg_reference(emb, attrs, names, query_arg), abs=1e-9)


@pytest.mark.parametrize("kind", ["ints", "dups", "continuous"])
def test_paper_ndcg_is_invariant_to_item_order(kind):
    emb, attrs, names = dataset(7, n=90, kind=kind)
    base = M.paper_ndcg_at_k(emb, attrs, names)
    rng = np.random.default_rng(1)
    for _ in range(3):
        p = rng.permutation(90)
        assert M.paper_ndcg_at_k(emb[p], attrs[p], [names[i] for i in p]) == pytest.approx(base, abs=1e-9)
    # while the map moves with the order on tie-heavy data (fillers, duplicates): it is not tie-robust
    if kind == "ints":
        spread = M.paper_map_tie_spread(emb, attrs, names, n_orders=5)
        assert spread["max"] > spread["min"]


def test_tie_spread_is_zero_without_ties():
    """One group, names 'x x ... x u_i' with distinct lengths: distinct label similarities (query_arg 'b'),
    >= 11 positives per query (no fillers), continuous embeddings: every order gives the same score."""
    n = 15
    attrs = np.zeros((n, 2), dtype=int)
    names = [" ".join(["x"] * (r + 1) + [f"u{r}"]) for r in range(n)]
    emb = np.random.default_rng(0).normal(size=(n, 6))
    s = M.paper_map_tie_spread(emb, attrs, names, n_orders=6, seed=3)
    assert s["value"] == pytest.approx(O.original_paper_map(emb, attrs, names, "b"), abs=1e-12)
    assert s["min"] == pytest.approx(s["value"], abs=1e-12) and s["max"] == pytest.approx(s["value"], abs=1e-12)
    assert s["std"] == pytest.approx(0, abs=1e-12) and s["n_orders"] == 6


def test_tie_spread_values_are_the_transcription_on_permuted_items():
    emb, attrs, names = dataset(2, n=50, kind="ints")
    s = M.paper_map_tie_spread(emb, attrs, names, n_orders=4, seed=9, query_arg="a")
    rng = np.random.default_rng(9)
    vals = []
    for _ in range(4):
        p = rng.permutation(50)
        vals.append(O.original_paper_map(emb[p], attrs[p], [names[i] for i in p], "a"))
    assert s["mean"] == pytest.approx(np.mean(vals), abs=1e-12)
    assert (s["min"], s["max"]) == pytest.approx((min(vals), max(vals)), abs=1e-12)


def test_bad_names_and_query_arg_are_clear_errors():
    emb, attrs, names = dataset(0, n=20)
    with pytest.raises(TypeError, match=r"names\[0\] must be a product name.*paper_map_at_10_filtered"):
        M.paper_map_at_10(emb, attrs, [["men", "tshirt"]] * 20)
    with pytest.raises(ValueError, match="emb has 20 rows but names has 19"):
        M.paper_map_at_10(emb, attrs, names[:19])
    with pytest.raises(ValueError, match=r"query_arg='q'.*'b'.*'a'"):
        M.paper_map_at_10(emb, attrs, names, query_arg="q")
    with pytest.raises(TypeError, match="list of product names"):
        M.evaluate(emb, attrs, [[]] * 20, "men tshirt")


def test_pipeline_evaluate_uses_the_product_names(tmp_path):
    """pipeline.evaluate passes the catalogue's names (``text``), not the filtered tags, to paper_map@10."""
    from attrboost.study import pipeline as P
    from attrboost.data import load_kaggle, sample_protocol

    cat = load_kaggle(make_kaggle(tmp_path / "data", n_groups=6, per_group=8, small_groups=0))
    s = sample_protocol(cat, n_groups=6, per_group=8, n_test=24, check_images=False)
    names = s.names("test")
    assert names == list(s.part("test")["text"]) and len(names) == 24
    emb = np.random.default_rng(0).normal(size=(24, 6))
    got = P.evaluate(emb, s, "test")
    assert got["paper_map@10"] == pytest.approx(O.original_paper_map(emb, s.labels("test"), names, "b"), abs=1e-12)
    assert got["paper_map@10_filtered"] == pytest.approx(M.paper_map_at_10_filtered(emb, s.labels("test"),
                                                                                    s.tags("test")), abs=1e-12)

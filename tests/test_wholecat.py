"""The whole-catalogue benchmark (attrboost.study.wholecat): metrics against brute-force loops, the label-budget
split, the labelled-group flag, model selection, the bootstrap of a ratio, and a tiny end-to-end run on a
generated synthetic catalogue with pixel features."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from attrboost import metrics as M
from attrboost.study import wholecat as W

ATTRS = ["articleType", "baseColour", "gender"]


# ----------------------------------------------------------------------------- brute force
def _ranking(emb: np.ndarray, q: int) -> list[int]:
    """Every other row, by descending float32 cosine, then ascending index."""
    x = emb.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = (x @ x[q]).astype(np.float32)
    return sorted((j for j in range(len(x)) if j != q), key=lambda j: (-sims[j], j))


def _ap_at_r(order: list[int], relevant: set[int]) -> float:
    r = len(relevant)
    if r == 0:
        return float("nan")
    hits, total = 0, 0.0
    for i, j in enumerate(order[:r], 1):
        if j in relevant:
            hits += 1
            total += hits / i
    return 100.0 * total / r


def _ndcg(order: list[int], gains: dict[int, float], k: int) -> float:
    dcg = sum(gains[j] / math.log2(i + 1) for i, j in enumerate(order[:k], 1))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, 1))
    return float("nan") if idcg == 0 else 100.0 * dcg / idcg


def _brute(emb, attrs: pd.DataFrame, queries, pair, k=10) -> pd.DataFrame:
    a = attrs.to_numpy(dtype=object)
    cols = [list(attrs.columns).index(c) for c in pair]
    out = []
    for q in queries:
        order = _ranking(emb, q)
        full = {j for j in order if (a[j] == a[q]).all()}
        two = {j for j in order if (a[j, cols] == a[q, cols]).all()}
        gains = {j: float((a[j] == a[q]).mean()) for j in order}
        out.append({"group": _ap_at_r(order, full), "pair": _ap_at_r(order, two),
                    "graded": _ndcg(order, gains, min(k, len(order)))})
    return pd.DataFrame(out)


def _random_attrs(rng, n, sizes=(3, 2, 2)) -> pd.DataFrame:
    return pd.DataFrame({c: rng.choice([f"{c[0]}{i}" for i in range(s)], n) for c, s in zip(ATTRS, sizes)})


# ----------------------------------------------------------------------------- scores
@pytest.mark.parametrize("kind", ["float", "ties"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_scores_match_a_brute_force_loop(kind, seed):
    rng = np.random.default_rng(seed)
    n = 45
    if kind == "float":
        emb = rng.normal(size=(n, 6))
    else:  # few distinct directions: many exact ties, broken by index
        emb = rng.integers(1, 3, size=(n, 3)).astype(np.float64)
    attrs = _random_attrs(rng, n)
    queries = np.sort(rng.choice(n, 20, replace=False))
    got = W.retrieval_scores(emb, attrs, queries, ["articleType", "baseColour"], k=10)
    want = _brute(emb, attrs, queries, ["articleType", "baseColour"], k=10)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_exact=False, atol=1e-9, rtol=0)
    # the strict relevance is the library's MAP@R term, over the same gallery
    np.testing.assert_allclose(got["group"], M.average_precision_at_r(emb, attrs, queries=queries), atol=1e-9)


def test_retrieval_scores_small_gallery_and_no_relevant_item():
    emb = np.array([[1.0, 0], [0.9, 0.1], [0, 1], [0.1, 1]])
    attrs = pd.DataFrame({"articleType": ["a", "a", "b", "c"], "baseColour": ["x", "y", "x", "x"],
                          "gender": ["m", "m", "m", "m"]})
    got = W.retrieval_scores(emb, attrs, [0, 2], ["articleType", "baseColour"], k=10)  # k cut to 3
    assert np.isnan(got.loc[1, "group"])  # item 2 has no other item of its group
    want = _brute(emb, attrs, [0, 2], ["articleType", "baseColour"], k=3)
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-9, rtol=0)


def test_retrieval_scores_check_their_inputs():
    rng = np.random.default_rng(0)
    emb, attrs = rng.normal(size=(10, 3)), _random_attrs(rng, 10)
    with pytest.raises(ValueError, match="two different"):
        W.retrieval_scores(emb, attrs, [0], ["articleType"])
    with pytest.raises(KeyError, match="season"):
        W.retrieval_scores(emb, attrs, [0], ["articleType", "season"])
    with pytest.raises(ValueError, match="rows"):
        W.retrieval_scores(emb[:5], attrs, [0], ["articleType", "baseColour"])
    with pytest.raises(TypeError, match="DataFrame"):
        W.retrieval_scores(emb, attrs.to_numpy(), [0], ["articleType", "baseColour"])


# ----------------------------------------------------------------------------- the split
def _items(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return _random_attrs(rng, n, sizes=(4, 3, 2)).assign(id=np.arange(n) + 500)


def test_split_partitions_the_catalogue_and_queries_are_unlabelled():
    items = _items()
    s = W.label_budget_split(items, ATTRS, 60, seed=3, max_queries=25)
    assert s.n_labelled == 60 and len(s.train) + len(s.val) == 60 and len(s.val) == 6
    assert not set(s.train) & set(s.val)
    assert sorted([*s.labelled, *s.gallery]) == list(range(len(items)))
    assert not set(s.queries) & set(s.labelled)
    assert set(s.queries) <= set(s.gallery) and len(s.queries) == 25
    np.testing.assert_array_equal(s.gallery[s.query_positions()], s.queries)
    keys = items[ATTRS].astype(str).agg("|".join, axis=1).to_numpy()
    for q in s.queries:  # each query has another gallery item of its group
        assert sum(keys[j] == keys[q] for j in s.gallery if j != q) >= 1
    # the queries come from the held-out tail: unlabelled even at the largest budget
    top = W.label_budget_split(items, ATTRS, "all", seed=3)
    assert top.n_labelled == 200 - 40 and not set(s.queries) & set(top.labelled)


def test_split_is_seeded_and_nested():
    items = _items()
    a = W.label_budget_split(items, ATTRS, 50, seed=1)
    b = W.label_budget_split(items, ATTRS, 50, seed=1)
    for f in ("train", "val", "gallery", "queries"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    c = W.label_budget_split(items, ATTRS, 50, seed=2)
    assert set(c.labelled) != set(a.labelled)
    big = W.label_budget_split(items, ATTRS, 120, seed=1)
    assert set(a.labelled) <= set(big.labelled)
    assert set(a.val) <= set(big.val) and set(a.train) <= set(big.train)
    assert len(big.val) == 12


@pytest.mark.parametrize("budget, err", [(161, "largest budget"), (0, "budget"), ("most", "positive integer"),
                                         (5, "too small")])
def test_split_rejects_bad_budgets(budget, err):
    with pytest.raises((ValueError, TypeError), match=err):
        W.label_budget_split(_items(), ATTRS, budget, seed=0)


def test_labelled_group_flag_matches_a_loop():
    items = _items(n=120, seed=4)
    s = W.label_budget_split(items, ATTRS, 15, seed=0)
    got = W.labelled_group(items, ATTRS, s.labelled, s.queries)
    tuples = [tuple(r) for r in items[ATTRS].to_numpy()]
    labelled = {tuples[i] for i in s.labelled}
    assert got.tolist() == [tuples[q] in labelled for q in s.queries]
    assert got.any() and not got.all()  # both subsets occur with 15 labels over 24 groups


# ----------------------------------------------------------------------------- selection
def test_gallery_scorer_scores_validation_queries_against_training_and_validation():
    rng = np.random.default_rng(0)
    y = _random_attrs(rng, 50, sizes=(3, 2, 1))
    emb = rng.normal(size=(50, 4))
    scorer = W.GalleryScorer(y.iloc[:40], y.iloc[40:], max_queries=None)
    score = scorer(emb)
    tuples = [tuple(r) for r in y.to_numpy()]
    aps = []
    for q in range(40, 50):
        rel = {j for j in range(50) if j != q and tuples[j] == tuples[q]}
        if rel:
            aps.append(_ap_at_r(_ranking(emb, q), rel))
    assert score == pytest.approx(np.mean(aps), abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert scorer.history[-1][1] == pytest.approx(M.map_at_r(emb[40:], y.iloc[40:]), abs=1e-9)
    with pytest.raises(ValueError, match="50 training"):
        scorer(emb[:45])


def test_gallery_scorer_needs_a_validation_item_with_a_relevant_item():
    y = pd.DataFrame({"a": ["p", "q", "r"]})
    with pytest.raises(ValueError, match="no validation item"):
        W.GalleryScorer(y.iloc[:2], y.iloc[2:])


@pytest.mark.parametrize("scores, patience, want", [
    ([1, 2, 3], 10, 3), ([3, 2, 1], 10, 1), ([1, 5, 5, 4, 6], 10, 5), ([1, 5, 4, 4, 6], 2, 2),
    ([2, 2, 2], None, 1), ([1, float("nan")], 10, float("nan"))])
def test_rule_epoch(scores, patience, want):
    got = W.rule_epoch(scores, patience)
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_fit_metric_head_is_metric_head_fit_with_another_score():
    """With a scorer that computes the study's rule (validation MAP@R), the loop gives MetricHead.fit's bits."""
    from attrboost.metrics import map_at_r_quiet
    from attrboost.study.baselines import MetricHead
    from helpers import toy

    X, attrs, _ = toy(per_group=12, seed=1)
    tr, va = np.arange(0, 80), np.arange(80, len(X))
    params = {"max_epochs": 4, "patience": 2, "seed": 3, "batch_size": 32}
    ref = MetricHead("supcon", **params).fit(X[tr], attrs.iloc[tr], X[va], attrs.iloc[va])
    own = W.fit_metric_head(MetricHead("supcon", **params), X[tr], attrs.iloc[tr], X[va],
                            lambda e, y, t: map_at_r_quiet(e, attrs.iloc[va]))
    assert own.best_epoch_ == ref.best_epoch_
    np.testing.assert_array_equal(own.transform(X), ref.transform(X))
    np.testing.assert_allclose(own.history_["val_score"], ref.history_["val_map@r"])


# ----------------------------------------------------------------------------- bootstrap of a ratio
def test_group_bootstrap_ratio_matches_a_loop():
    rng = np.random.default_rng(0)
    groups = rng.choice(list("abcdefg"), 60)
    den = rng.uniform(1, 2, 60)
    num = den * rng.uniform(0.8, 1.6, 60)
    r, lo, hi = W.group_bootstrap_ratio(num, den, groups, n_boot=300, seed=5)
    assert r == pytest.approx(num.sum() / den.sum())
    codes = pd.factorize(pd.Series(groups))[0]
    draws = np.random.default_rng([5, 20261207]).integers(0, 7, size=(300, 7))
    boot = []
    for d in draws:
        rows = np.concatenate([np.flatnonzero(codes == c) for c in d])
        boot.append(num[rows].sum() / den[rows].sum())
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    assert W.group_bootstrap_ratio(den, den, groups, n_boot=100) == pytest.approx((1.0, 1.0, 1.0))
    assert np.isnan(W.group_bootstrap_ratio(num, den, ["a"] * 60, n_boot=100)[1])


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A generated synthetic catalogue (12 groups of 14 + small groups: 178 items) and its pixel features at
    12 x 16 (576 wide)."""
    from attrboost.data import load_kaggle
    from attrboost.data.synthetic import generate_synthetic
    from attrboost.pixels import load_pixels

    root = generate_synthetic(tmp_path_factory.mktemp("wholecat") / "syn", n_groups=12, per_group=14, seed=0,
                              progress=False)
    cat = load_kaggle(root, name="synthetic")
    X = load_pixels(cat.items["image_path"].tolist(), size=(12, 16), progress=False)
    return cat, X


def test_benchmark_end_to_end(catalogue):
    cat, X = catalogue
    items, attrs = cat.items, list(cat.attributes)
    fast = {"max_epochs": 3, "patience": 2}
    methods = ["task1", "task3", "supcon", "multisimilarity", "task1+supcon"]
    df = W.benchmark(X, items, attrs, budgets=[16, "all"], seeds=[0], methods=methods, max_queries=15,
                     head_params=fast, metric_params=fast)
    all_methods = ["raw", *methods]
    n_queries = df[df["method"] == "raw"].groupby("budget")["query"].nunique()
    assert (n_queries == 15).all()
    assert len(df) == len(all_methods) * 3 * 30  # methods x relevances x (15 queries x 2 budgets)
    assert set(df["method"]) == set(all_methods) and set(df["relevance"]) == set(W.RELEVANCES)

    # raw equals its own recomputation over the same split
    s = W.label_budget_split(items, attrs, 16, seed=0, max_queries=15)
    raw = df[(df["method"] == "raw") & (df["budget"] == "16")]
    want = W.retrieval_scores(X[s.gallery], items.iloc[s.gallery][attrs].reset_index(drop=True),
                              s.query_positions(), ["articleType", "baseColour"])
    for rel in W.RELEVANCES:
        got = raw[raw["relevance"] == rel]
        assert got["query"].tolist() == items["id"].to_numpy()[s.queries].tolist()
        np.testing.assert_allclose(got["value"].to_numpy(), want[rel].to_numpy())
    np.testing.assert_allclose(raw[raw["relevance"] == "group"]["value"],
                               M.average_precision_at_r(X[s.gallery], items.iloc[s.gallery][attrs], s.query_positions()))
    flag = W.labelled_group(items, attrs, s.labelled, s.queries)
    assert (raw[raw["relevance"] == "group"]["subset"] == np.where(flag, *W.SUBSETS)).all()

    # each head has rows per relevance and query subset; widths and epochs recorded
    runs = W.per_run(df)
    for m in methods:
        for rel in W.RELEVANCES:
            got = runs[(runs["method"] == m) & (runs["relevance"] == rel) & (runs["budget"] == "16")]
            assert set(got["subset"]) == {"all", *W.SUBSETS} and (got["n_queries"] > 0).all()
    heads = runs[runs["method"].isin(["task1", "task3", "supcon", "multisimilarity"])]
    assert heads["epoch"].between(1, 3).all() and (heads["fit_seconds"] > 0).all()
    assert (runs.loc[runs["method"] == "task1+supcon", "width"] == 2 * X.shape[1]).all()
    assert (runs.loc[runs["method"] == "raw", "width"] == X.shape[1]).all()

    summ = W.summarise_boost(df, n_boot=200)
    ref = summ[summ["method"] == "raw"]
    assert (ref["diff"] == 0).all() and np.allclose(ref["ratio"], 1.0)
    assert len(summ) == len(runs[runs["seed"] == 0])  # one seed: one summary row per run row
    t1 = summ[(summ["method"] == "task1") & (summ["subset"] == "all")]
    assert (t1["diff_low"] <= t1["diff"]).all() and (t1["diff"] <= t1["diff_high"]).all()
    assert summ.groupby(["budget", "relevance", "subset"])["best"].sum().ge(1).all()


def test_benchmark_checks_its_inputs(catalogue):
    cat, X = catalogue
    attrs = list(cat.attributes)
    with pytest.raises(ValueError, match="unknown method"):
        W.benchmark(X, cat.items, attrs, budgets=[40], seeds=[0], methods=["task2"])
    with pytest.raises(ValueError, match="pair"):
        W.benchmark(X, cat.items, attrs, budgets=[40], seeds=[0], pair=["articleType", "colour"])
    with pytest.raises(ValueError, match="aligned"):
        W.benchmark(X[:-1], cat.items, attrs, budgets=[40], seeds=[0])

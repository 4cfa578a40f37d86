"""Tests for attrboost.study.stats against scipy and explicit per-group loops."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from attrboost.study.stats import mean_ci, ratio_ci, summarise


@pytest.mark.parametrize("n", [2, 3, 5, 20])
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_mean_ci_equals_scipy_t_interval(n, confidence):
    values = np.random.default_rng(n).normal(10, 2, size=n)
    mean, low, high = mean_ci(values, confidence)
    want_low, want_high = scipy.stats.t.interval(
        confidence, n - 1, loc=values.mean(), scale=scipy.stats.sem(values)
    )
    assert mean == pytest.approx(values.mean(), rel=1e-12)
    assert (low, high) == pytest.approx((want_low, want_high), rel=1e-12)


def test_mean_ci_edge_cases():
    mean, low, high = mean_ci([4.2])
    assert mean == 4.2 and math.isnan(low) and math.isnan(high)
    assert mean_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)


def test_summarise_groups_correctly():
    rng = np.random.default_rng(0)
    rows = []
    for backbone in ["resnet18", "pca", "vit"]:
        for head in ["raw", "task1"]:
            n_seeds = 1 if (backbone, head) == ("vit", "raw") else 4
            for seed in range(n_seeds):
                rows.append({"backbone": backbone, "head": head, "seed": seed, "value": rng.normal()})
    df = pd.DataFrame(rows).sample(frac=1, random_state=1)  # shuffled rows
    out = summarise(df, by=["backbone", "head"])
    assert list(out.columns) == ["backbone", "head", "mean", "ci_low", "ci_high", "n"]
    assert len(out) == df.groupby(["backbone", "head"]).ngroups
    for _, row in out.iterrows():
        values = [r["value"] for r in rows if r["backbone"] == row["backbone"] and r["head"] == row["head"]]
        mean, low, high = mean_ci(values)
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(mean, rel=1e-12)
        if len(values) == 1:
            assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
        else:
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-12)


def test_summarise_single_key_and_custom_value_column():
    df = pd.DataFrame({"metric": ["a", "b", "a", "b", "a"], "score": [1.0, 5.0, 2.0, 7.0, 3.0]})
    out = summarise(df, by="metric", value="score")
    assert out["metric"].tolist() == ["a", "b"]  # order of first appearance
    assert out["mean"].tolist() == pytest.approx([2.0, 6.0])
    assert out["n"].tolist() == [3, 2]
    with pytest.raises(KeyError, match="value"):
        summarise(df, by="metric")


def test_ratio_ci_is_mean_ci_of_paired_ratios():
    rng = np.random.default_rng(2)
    den = rng.uniform(10, 12, size=5)
    num = den * rng.uniform(1.1, 1.4, size=5)
    assert ratio_ci(num, den) == pytest.approx(mean_ci(num / den), rel=1e-12)
    # pandas Series are paired by index (seed), not position
    s_num = pd.Series(num, index=[4, 3, 2, 1, 0])
    s_den = pd.Series(den[::-1], index=[0, 1, 2, 3, 4])
    assert ratio_ci(s_num, s_den) == pytest.approx(mean_ci(num / den), rel=1e-12)
    assert ratio_ci(s_num.to_numpy(), s_den.to_numpy()) != pytest.approx(mean_ci(num / den), rel=1e-6)


def test_ratio_ci_errors():
    with pytest.raises(ValueError, match="num has 3 values but den has 2"):
        ratio_ci([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="den contains zeros"):
        ratio_ci([1, 2], [1, 0])
    with pytest.raises(ValueError, match="same unique index"):
        ratio_ci(pd.Series([1.0, 2.0], index=[0, 1]), pd.Series([1.0, 2.0], index=[0, 2]))


# ----------------------------------------------------------------------------- group bootstrap
def test_group_bootstrap_matches_a_brute_force_loop_and_is_seeded():
    from attrboost.study.stats import group_bootstrap_ci

    rng = np.random.default_rng(1)
    groups = rng.integers(0, 12, size=90)
    values = rng.normal(size=90)
    mean, lo, hi = group_bootstrap_ci(values, groups, n_boot=300, seed=3)
    assert mean == pytest.approx(values.mean())
    assert (mean, lo, hi) == group_bootstrap_ci(values, groups, n_boot=300, seed=3)
    # the same draws, one resample at a time
    labels = np.unique(groups)
    r = np.random.default_rng([3, 20261207])
    draws = r.integers(0, len(labels), size=(300, len(labels)))
    order = {g: i for i, g in enumerate(dict.fromkeys(groups))}  # factorize: order of first appearance
    by_code = {order[g]: values[groups == g] for g in labels}
    boot = [np.concatenate([by_code[c] for c in d]).mean() for d in draws]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))


def test_group_bootstrap_is_wider_than_independent_rows_when_groups_share_a_value():
    from attrboost.study.stats import group_bootstrap_ci, mean_ci

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 25)
    values = rng.normal(size=40)[groups] + 0.05 * rng.normal(size=groups.size)
    _, lo, hi = group_bootstrap_ci(values, groups)
    _, tlo, thi = mean_ci(values)
    assert hi - lo > 3 * (thi - tlo)


def test_group_bootstrap_rejects_bad_input():
    from attrboost.study.stats import group_bootstrap_ci

    with pytest.raises(ValueError, match="groups has 2 entries for 3 values"):
        group_bootstrap_ci([1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(ValueError, match="n_boot"):
        group_bootstrap_ci([1.0, 2.0], [0, 1], n_boot=5)
    assert np.isnan(group_bootstrap_ci([1.0, 2.0], [0, 0])[1])

"""Notebook 07's retrieval measurements (attrboost.study.catalogue): the queries' own random stream, one row per
(seed, query) for several training seeds, and a CI that resamples the queries' attribute groups."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attrboost.study import catalogue as C
from attrboost.study.stats import group_bootstrap_ci

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "07_search.ipynb"


def tiny_catalogue(n_groups: int = 12, per_group: int = 6, width: int = 8, seed: int = 0):
    """Items in ``n_groups`` attribute groups, half of the groups in a 'training part', and a sample mask that
    takes the first item of each group."""
    rng = np.random.default_rng(seed)
    colour = np.repeat([f"c{g % 4}" for g in range(n_groups)], per_group)
    shape = np.repeat([f"s{g // 4}" for g in range(n_groups)], per_group)
    items = pd.DataFrame({"id": np.arange(n_groups * per_group), "colour": colour, "shape": shape})
    centres = rng.normal(size=(n_groups, width))
    X = np.repeat(centres, per_group, axis=0) + rng.normal(scale=1.5, size=(len(items), width))
    in_sample = np.zeros(len(items), bool)
    in_sample[::per_group] = True
    train = items[in_sample].iloc[: n_groups // 2]
    return items, X, in_sample, train


def queries(n_queries=None, rng=0):
    items, X, in_sample, train = tiny_catalogue()
    return C.outside_queries(items, ["colour", "shape"], in_sample, train, n_queries, rng), X


def test_queries_have_their_own_stream_independent_of_the_latency_generator():
    items, X, in_sample, train = tiny_catalogue()
    args = (items, ["colour", "shape"], in_sample, train, 20)
    a = C.outside_queries(*args, 3)  # an integer seed: the queries' own stream
    assert np.array_equal(a.queries, C.outside_queries(*args, C.query_rng(3)).queries)
    latency = np.random.default_rng(3)  # the notebook's latency probe draws from this one, before or not
    latency.choice(len(items), 50, replace=False)
    assert np.array_equal(a.queries, C.outside_queries(*args, 3).queries)
    # the stream is not the plain seed's (which the latency probe uses), and another seed draws other queries
    assert not np.array_equal(a.queries, C.outside_queries(*args, np.random.default_rng(3)).queries)
    assert not np.array_equal(a.queries, C.outside_queries(*args, 4).queries)


def test_the_notebook_draws_queries_from_the_query_stream_not_the_latency_generator():
    cells = ["".join(c["source"]) for c in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code"]
    call = next(line for cell in cells for line in cell.splitlines() if "C.outside_queries(" in line)
    assert "C.query_rng(seed)" in call and ", rng)" not in call


def test_several_seeds_give_one_row_per_seed_and_query():
    q, X = queries()
    rng = np.random.default_rng(1)
    heads = {s: X @ rng.normal(size=(X.shape[1], X.shape[1])) for s in (0, 1, 2)}
    scores = C.query_scores({"raw": X, "boosted": heads}, q)
    assert len(scores) == 3 * len(q.queries)
    assert not scores.duplicated(["seed", "query"]).any()
    assert sorted(scores["seed"].unique()) == [0, 1, 2]
    raw = scores.pivot(index="query", columns="seed", values="raw")
    assert (raw.nunique(axis=1) == 1).all()  # raw is the same for every seed: paired
    for s, E in heads.items():  # each seed scored with its own head, on the same queries
        one = C.query_scores({"raw": X, "boosted": E}, q)
        got = scores[scores["seed"] == s].reset_index(drop=True)
        assert np.allclose(got["boosted"], one["boosted"]) and np.array_equal(got["query"], one["query"])
    table = C.quality_table(scores)
    assert list(table.columns) == ["n queries", "n groups", "n seeds", "MAP@R raw", "MAP@R boosted",
                                   "boosted - raw", "95% CI low", "95% CI high"]
    assert (table["n seeds"] == 3).all()
    assert table.loc["all queries", "n queries"] == len(q.queries)
    assert table.loc["all queries", "n groups"] == q.group.iloc[q.queries].nunique()
    assert table.loc["seen groups", "n queries"] + table.loc["unseen groups", "n queries"] == len(q.queries)
    spread = C.seed_table(scores)
    assert list(spread.columns) == ["seed 0", "seed 1", "seed 2"] and list(spread.index) == list(table.index)
    per_seed = scores.groupby("seed")["boosted - raw"].mean().round(2)
    assert spread.loc["all queries"].tolist() == per_seed.tolist()
    # the wrapper: the same table, and precision@1 averaged over the seeds
    wrapped, p1 = C.catalogue_quality({"raw": X, "boosted": heads}, q)
    pd.testing.assert_frame_equal(wrapped, table)
    assert set(p1) == {"raw", "boosted"}


def test_the_ci_is_the_group_bootstrap_over_every_seed_and_query():
    q, X = queries()
    heads = {s: X + np.random.default_rng(s).normal(scale=0.5, size=X.shape) for s in (0, 1)}
    scores = C.query_scores({"raw": X, "boosted": heads}, q)
    table = C.quality_table(scores, n_boot=500, seed=7)
    m, lo, hi = group_bootstrap_ci(scores["boosted - raw"], scores["group"], n_boot=500, seed=7)
    assert table.loc["all queries", ["boosted - raw", "95% CI low", "95% CI high"]].tolist() == \
        [round(m, 2), round(lo, 2), round(hi, 2)]


def test_the_ci_never_splits_the_queries_of_a_group():
    # in every group one query gains d and the other loses d, under each seed: a bootstrap that keeps a group's
    # rows together always sees a group mean of 0 (a zero-width CI); resampling queries would not
    rows = []
    for g in range(10):
        d = float(g + 1)
        for seed in (0, 1, 2):
            for i, sign in enumerate((1, -1)):
                rows.append({"seed": seed, "query": 2 * g + i, "group": f"g{g}", "seen": g < 5,
                             "raw": 50.0, "boosted": 50.0 + sign * d, "boosted - raw": sign * d})
    table = C.quality_table(pd.DataFrame(rows))
    for label in ("all queries", "seen groups", "unseen groups"):
        assert table.loc[label, ["boosted - raw", "95% CI low", "95% CI high"]].tolist() == [0.0, 0.0, 0.0]
    assert table.loc["all queries", ["n queries", "n groups", "n seeds"]].tolist() == [20, 10, 3]


def test_one_embedding_per_name_still_works_and_seeds_must_agree():
    q, X = queries()
    table, p1 = C.catalogue_quality({"raw": X, "boosted": X * 2.0 + 0.1}, q)
    assert (table["n seeds"] == 1).all()
    assert C.seed_table(C.query_scores({"raw": X, "boosted": X}, q)).columns.tolist() == ["seed -"]
    with pytest.raises(ValueError, match="paired by seed"):
        C.query_scores({"raw": {0: X}, "boosted": {0: X, 1: X}}, q)

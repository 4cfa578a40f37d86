"""attrboost.study.reference: the committed run set as a regression reference."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from attrboost.study.reference import committed_results, reference_claims


def _results(task1=30.0, raw=20.0, seeds=(0, 1, 2), backbone="b"):
    rows = []
    for s in seeds:
        for emb, v in (("raw", raw), ("task1", task1)):
            for metric in ("map@r", "paper_map@10"):
                rows.append(dict(dataset="d", split="random", backbone=backbone, embedding=emb, seed=s, metric=metric,
                                 value=v + s * 0.1))
    return pd.DataFrame(rows)


def _runset(root, name, **params):
    d = root / "papermill_runs" / name
    d.mkdir(parents=True)
    p = dict(dataset="d", data_dir=None, split="random", n_groups=100, per_group=40)
    p.update(params)
    (d / "run.json").write_text(json.dumps({"parameters": p}))
    _results().to_csv(d / "results.csv", index=False)
    return d


def test_the_reference_is_the_run_set_made_with_the_same_parameters(tmp_path):
    _runset(tmp_path, "d-by_group", split="by_group")
    _runset(tmp_path, "d-small", n_groups=10)
    _runset(tmp_path, "d-own-data", data_dir="/elsewhere")
    none, why = committed_results("d", "random", 100, 40, root=tmp_path)
    assert none is None and "no committed run set has" in why
    _runset(tmp_path, "d")
    got, source = committed_results("d", "random", 100, 40, root=tmp_path)
    assert source == "papermill_runs/d/results.csv" and len(got) == 12
    assert committed_results("d", "by_group", 100, 40, root=tmp_path)[1] == "papermill_runs/d-by_group/results.csv"
    none, why = committed_results("d", "random", 100, 40, root=tmp_path / "nowhere")
    assert none is None and "no papermill_runs/" in why


def test_the_claims_hold_for_the_same_numbers_and_fail_outside_the_band_or_with_half_the_boost():
    ref = _results()
    assert all(reference_claims(_results(), ref, "b", ["task1"]).values())
    assert len(reference_claims(_results(), ref, "b", ["task1"])) == 2
    # inside the band: 2.5 points lower
    assert all(reference_claims(_results(task1=27.5), ref, "b", ["task1"]).values())
    # outside the band, the failing claim names what moved
    band, boost = reference_claims(_results(task1=26.0, raw=16.5), ref, "b", ["task1"]).items()
    assert not band[1] and "task1 map@r" in band[0] and "raw map@r" in band[0] and boost[1]
    # inside the band, but less than half of the committed gain of 10 points (raw +2.9, task1 -2.9: gain 4.2)
    claims = reference_claims(_results(task1=27.1, raw=22.9), ref, "b", ["task1"])
    assert list(claims.values()) == [True, False]


def test_no_shared_seed_or_backbone_gives_no_claim():
    ref = _results()
    assert reference_claims(_results(seeds=(7,)), ref, "b", ["task1"]) == {}
    assert reference_claims(_results(backbone="c"), ref, "c", ["task1"]) == {}


# ----------------------------------------------------------------------------- the quick configuration
def test_the_quick_configuration_s_two_seeds_keep_the_checked_conclusions_of_the_committed_run_set():
    """The committed 04 and 06 run on ``params.QUICK_SEEDS`` (what nbval executes); the conclusions their check
    cells enforce on the synthetic default must hold on the committed synthetic run set's rows of those seeds
    (a CI over two seeds is wide: this is where it would show)."""
    import numpy as np

    from attrboost.cache import repo_root
    from attrboost.study import beyond as B
    from attrboost.study import params
    from attrboost.study.stats import ratio_ci

    seeds = params.QUICK_SEEDS.default
    assert len(seeds) >= 2 and all(params.spec(n)["seeds"].default == seeds
                                   for n in ("02_embeddings", "04_evaluate", "06_beyond"))
    runset = repo_root() / "papermill_runs" / "synthetic"
    backbone, tasks = params.PARAMS["backbone"].default, params.PARAMS["tasks"].default
    res = pd.read_csv(runset / "results.csv")
    res = res[(res["backbone"] == backbone) & res["seed"].isin(seeds)]
    assert sorted(res["seed"].unique()) == sorted(seeds)
    # 04: every head's boost ratio CI above 1 on both metrics; Task 1 the best head on MAP@R
    wide = res.pivot_table(index=["seed", "metric"], columns="embedding", values="value").reset_index()
    for task in tasks:
        for metric in ("map@r", "paper_map@10"):
            w = wide[wide["metric"] == metric]
            assert ratio_ci(w[task].to_numpy(), w["raw"].to_numpy())[1] > 1, (task, metric)
    mr = res[res["metric"] == "map@r"].groupby("embedding")["value"].mean()
    assert mr[list(tasks)].idxmax() == "task1"
    # 06, section 1: the three checked conclusions
    b = pd.read_csv(runset / "beyond.csv")
    b = b[(b["experiment"] == "baselines") & b["seed"].isin(seeds)]
    test = b[b["part"] == "test"]
    baselines = params.PARAMS["baselines"].default
    val = b[(b["part"] == "val") & (b["metric"] == "paper_map@10")].groupby("method")["value"].mean()
    best = val.reindex(baselines).idxmax()
    d = B.paired_deltas(test, reference="task1", methods=["raw", *baselines], metrics=["map@r"]).set_index("method")
    test_map = test[test["metric"] == "map@r"].groupby("method")["value"].mean()
    assert all(test_map[m] > test_map["raw"] + 5 for m in ["task1", *baselines] if m != "pca_whiten")
    assert d.loc["raw", "ci_high"] < 0
    assert d.loc[best, "ci_low"] > 0 and np.isfinite(d.loc[best, "ci_low"])

"""Reporting: the retrieval example (its AP is the paper metric's per-query AP) and reading results."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attrboost import pipeline as P
from attrboost import report as R
from attrboost.metrics import paper_ground_truth
from test_pipeline import _cache, tiny  # noqa: F401 - the same fixtures: an empty cache, a tiny catalogue


def test_load_results_prefers_the_aggregate_and_names_the_folder(tmp_path):
    rows = lambda b: pd.DataFrame({"dataset": ["synthetic"], "split": ["random"], "backbone": [b],
                                   "embedding": ["raw"], "seed": [0], "metric": ["map@r"], "value": [1.0]})
    for b in ("pca", "resnet18"):
        (tmp_path / b).mkdir()
        rows(b).to_csv(tmp_path / b / "results.csv", index=False)
    assert sorted(R.load_results(tmp_path)["backbone"]) == ["pca", "resnet18"]
    rows("pca").to_csv(tmp_path / "results.csv", index=False)
    assert R.load_results(tmp_path)["backbone"].tolist() == ["pca"]
    with pytest.raises(FileNotFoundError, match=f"no results.csv under {tmp_path / 'none'}"):
        R.load_results(tmp_path / "none")


def test_retrieval_example_ap_matches_paper_metric_definition(tiny, monkeypatch):
    cfg = P.DataConfig(dataset="tiny", n_groups=6, per_group=8, n_test=16)
    monkeypatch.setattr(P, "get_catalogue", lambda *a, **k: tiny)
    P.get_sample.cache_clear()
    rng = np.random.default_rng(1)
    s = P.get_sample(cfg, 0)
    X = rng.normal(size=(len(s.items), 8)).astype(np.float32)
    monkeypatch.setattr(P, "get_features", lambda *a, **k: X)
    ex = R.retrieval_example(cfg, "toy", seed=0, task="task1", max_epochs=2)
    # the mean of the per-query AP over all queries is the paper metric; check this query against it
    test = s.part("test")
    gt = paper_ground_truth(s.labels("test"), s.names("test"))
    assert list(ex["truth"]) == list(gt[ex["query"]]) and len(ex["truth"]) == 10  # fillers included
    emb = X[s.mask("test")].astype(np.float64)
    q = ex["query"]
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = e @ e[q]
    top = sorted(range(len(e)), key=lambda i: (-np.float32(sims[i]), i))[:11][1:]  # the first dropped
    assert list(ex["raw"]) == top
    truth = set(ex["truth"])
    hits, ap = 0, 0.0
    for rank, i in enumerate(top, start=1):
        if i in truth:
            hits += 1
            ap += hits / rank
    assert ex["ap"]["raw"] == pytest.approx(100 * ap / 10)
    assert len(ex["boosted"]) == 10 and ex["query_id"] == test["id"].iloc[q]
    P.get_sample.cache_clear()


def test_load_results_ignores_run_dirs_set_aside(tmp_path):
    import pandas as pd

    from attrboost.report import load_results

    for name, value in (("pca", 1.0), ("pca.previous", 2.0), ("pca.failed", 3.0)):
        (tmp_path / name).mkdir()
        pd.DataFrame({"backbone": ["pca"], "value": [value]}).to_csv(tmp_path / name / "results.csv", index=False)
    assert load_results(tmp_path)["value"].tolist() == [1.0]

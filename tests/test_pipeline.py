"""The cached study steps the notebooks call: the feature store, head caching, the defaults."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attrboost import pipeline as P
from attrboost.data import load_kaggle, sample_protocol


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTRBOOST_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny(tmp_path):
    from test_data import make_kaggle

    return load_kaggle(make_kaggle(tmp_path / "data", n_groups=6, per_group=8, small_groups=0))


def test_feature_store_extracts_each_image_once(tiny, monkeypatch):
    import attrboost.extract as E

    calls = []  # the ids (= file names) of the images forwarded through the model, per extraction
    real = E._forward

    def spy(resolved, paths, rows, on_chunk, **kw):
        if len(rows):
            calls.append([Path(paths[r]).stem for r in rows])
        return real(resolved, paths, rows, on_chunk, **{**kw, "num_workers": 0, "progress": False})

    monkeypatch.setattr(E, "_forward", spy)
    a = sample_protocol(tiny, n_groups=4, per_group=4, n_test=4, seed=0)
    b = sample_protocol(tiny, n_groups=4, per_group=4, n_test=4, seed=1)
    Xa = P.get_features(a, "efficientnet_lite0", progress=False)
    Xb = P.get_features(b, "efficientnet_lite0", progress=False)
    assert Xa.shape == (16, 1280) and Xa.dtype == np.float32
    assert calls[0] == a.items["id"].tolist()
    overlap = set(a.items["id"]) & set(b.items["id"])
    assert len(calls) == 2 and set(calls[1]) == set(b.items["id"]) - overlap  # only the new images
    # rows are aligned with the sample: the same image has the same features in both samples
    ia = {i: k for k, i in enumerate(a.items["id"])}
    for k, i in enumerate(b.items["id"]):
        if i in ia:
            np.testing.assert_array_equal(Xb[k], Xa[ia[i]])
    assert np.array_equal(P.get_features(a, "efficientnet_lite0", progress=False), Xa) and len(calls) == 2


def test_get_boosted_is_cached_and_uses_only_train_and_val(tiny, monkeypatch):
    import attrboost.heads as H

    s = sample_protocol(tiny, n_groups=6, per_group=8, n_test=12, val_fraction=0.25, seed=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(s.items), 16)).astype(np.float32) + s.items["group"].to_numpy()[:, None]
    seen = {}
    real_fit = H.BoostHead.fit

    def spy_fit(self, X_, y, tags=None, X_val=None, y_val=None, tags_val=None):
        seen["n"] = (len(X_), len(X_val))
        seen["task"] = self.task
        return real_fit(self, X_, y, tags=tags, X_val=X_val, y_val=y_val, tags_val=tags_val)

    monkeypatch.setattr(H.BoostHead, "fit", spy_fit)
    run = P.get_boosted(s, X, "toy", "task1", 0, max_epochs=3)
    assert seen["n"] == (len(s.part("train")), len(s.part("val")))
    assert run.emb["test"].shape == (12, 16) and len(run.history) <= 3
    seen.clear()
    again = P.get_boosted(s, X, "toy", "task1", 0, max_epochs=3)
    assert not seen  # served from the cache
    for p in ("train", "val", "test"):
        np.testing.assert_array_equal(again.emb[p], run.emb[p])
    pd.testing.assert_frame_equal(again.history, run.history, check_dtype=False)
    other = P.get_boosted(s, X, "toy", "task1", 0, max_epochs=2)  # a changed hyper-parameter retrains
    assert seen and len(other.history) <= 2
    seen.clear()
    t2 = P.get_boosted(s, X, "toy", "task2", 0, max_epochs=2, gru_hidden=8)
    assert seen["task"] == "task2"  # each task trains its own head (regression: all tasks trained task1)
    assert not np.array_equal(t2.emb["test"], other.emb["test"])
    with pytest.raises(ValueError, match="unknown head parameter"):
        P.get_boosted(s, X, "toy", "task1", 0, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"task='task9': expected one of \['task1', 'task2', 'task3'\]"):
        P.get_boosted(s, X, "toy", "task9", 0)

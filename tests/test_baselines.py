"""Label-aware baselines (sklearn transformers) and the beyond-the-original helpers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from attrboost.study import beyond as B
from attrboost.study.baselines import GroupLDA, GroupNCA, MetricHead, PCAWhitening, group_labels
from attrboost.data import subsample_train, without_attribute
from attrboost.metrics import map_at_r
from helpers import toy, toy_sample


pytestmark = pytest.mark.usefixtures("cache")  # a private, empty cache (conftest)


def test_group_labels_codes_the_full_attribute_tuple():
    y = pd.DataFrame({"a": ["x", "x", "y", "y", None, None], "b": [1, 2, 1, 1, 2, 2]})
    codes = group_labels(y)
    keys = [tuple(r) for r in y.astype(object).where(y.notna(), "NA").itertuples(index=False)]
    for i in range(len(y)):
        for j in range(len(y)):
            assert (codes[i] == codes[j]) == (keys[i] == keys[j])
    c = group_labels(np.array(["b", "a", "b"]))
    assert c[0] == c[2] != c[1]
    mixed = group_labels(pd.DataFrame({"a": [1, "1", None, np.nan, "<missing>"]}))
    assert len(set(mixed[[0, 1]])) == 2 and mixed[2] == mixed[3] != mixed[4]  # raw values, as the metrics do
    with pytest.raises(ValueError, match="y has 6 rows, X has 5"):
        group_labels(y, 5)
    with pytest.raises(ValueError, match="attribute labels"):
        group_labels(None)


def test_pca_whitening_matches_sklearn_and_whitens_the_training_data():
    X, _, _ = toy()
    w = PCAWhitening(n_components=6).fit(X)
    Z = w.transform(X)
    assert Z.shape == (len(X), 6) and Z.dtype == np.float32
    ref = PCA(n_components=6, whiten=True, svd_solver="full").fit(X.astype(np.float64)).transform(X.astype(np.float64))
    np.testing.assert_allclose(Z, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.cov(Z, rowvar=False, ddof=1), np.eye(6), atol=1e-3)
    assert PCAWhitening().fit(X[:10]).transform(X).shape == (len(X), 10)  # None: min(n, d)
    with pytest.raises(ValueError, match="n_components == 0, must be >= 1"):
        PCAWhitening(n_components=0).fit(X)
    with pytest.raises(ValueError, match="X has 5 features, but the estimator was fitted with 32"):
        w.transform(X[:, :5])
    with pytest.raises(ValueError, match="NaN or infinite"):
        PCAWhitening().fit(np.full((4, 3), np.nan))


def test_lda_uses_the_group_and_beats_raw_features_on_hidden_groups():
    X, attrs, g = toy()
    lda = GroupLDA().fit(X, attrs)
    Z = lda.transform(X)
    assert Z.shape == (len(X), 7)  # n_groups - 1
    # independent: sklearn's LDA on the known group ids (same eigen solver, same shrinkage)
    ref = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto", n_components=7).fit(X.astype(np.float64), g)
    np.testing.assert_allclose(np.abs(Z), np.abs(ref.transform(X.astype(np.float64))), rtol=1e-3, atol=1e-3)
    assert map_at_r(lda.transform(X), g) > map_at_r(X, g) + 20
    with pytest.raises(ValueError, match="at least 2 different groups"):
        GroupLDA().fit(X[:5], attrs.iloc[:5])  # one group only
    with pytest.raises(ValueError, match=r"n_components must be at most min\(n_groups - 1, n_features\) = 7, got 50"):
        GroupLDA(n_components=50).fit(X, attrs)


def test_nca_learns_to_ignore_noise_dimensions_and_is_deterministic():
    X, attrs, g = toy()
    a = GroupNCA(n_components=4, pca_components=None, max_iter=50, seed=0).fit(X, attrs)
    b = GroupNCA(n_components=4, pca_components=None, max_iter=50, seed=0).fit(X, attrs)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    assert map_at_r(a.transform(X), g) > map_at_r(X, g) + 20
    assert GroupNCA(n_components=4, pca_components=8, max_iter=5).fit(X, attrs).transform(X).shape == (len(X), 4)
    with pytest.raises(ValueError, match="max_iter == 0, must be >= 1"):
        GroupNCA(max_iter=0).fit(X, attrs)


@pytest.mark.parametrize("loss", ["supcon", "multisimilarity"])
def test_metric_head_improves_validation_retrieval_and_selects_on_validation(loss):
    X, attrs, g = toy(per_group=60, noise=2.0)
    # validation items drawn around the same group centres as training
    rng = np.random.default_rng(3)
    centres = np.stack([X[g == k, :4].mean(0) for k in range(8)])
    gv = np.repeat(np.arange(8), 10)
    Xv = np.hstack([centres[gv] + rng.normal(0, 0.25, (80, 4)), rng.normal(0, 2.0, (80, 28))]).astype(np.float32)
    av = pd.DataFrame({"colour": [f"c{i % 4}" for i in gv], "kind": [f"k{i // 4}" for i in gv]})
    h = MetricHead(loss=loss, hidden_dim=32, lr=1e-2, batch_size=64, max_epochs=40, patience=10, seed=0)
    h.fit(X, attrs, Xv, av)
    hist = h.history_
    assert hist.loc[hist["selected"], "epoch"].item() == h.best_epoch_
    assert hist["val_map@r"].idxmax() == hist.index[hist["selected"]][0]
    assert map_at_r(h.transform(Xv), gv) > map_at_r(Xv, gv) + 10
    h2 = MetricHead(loss=loss, hidden_dim=32, lr=1e-2, batch_size=64, max_epochs=40, patience=10, seed=0)
    np.testing.assert_array_equal(h2.fit(X, attrs, Xv, av).transform(Xv), h.transform(Xv))
    last = MetricHead(loss=loss, hidden_dim=8, max_epochs=3, batch_size=64).fit(X, attrs)
    assert last.best_epoch_ == 3 and "val_map@r" not in last.history_


def test_metric_head_rejects_bad_parameters():
    X, attrs, _ = toy()
    with pytest.raises(ValueError, match="loss must be one of"):
        MetricHead(loss="triplet").fit(X, attrs)
    with pytest.raises(ValueError, match="batch_size == 1, must be >= 2"):
        MetricHead(batch_size=1).fit(X, attrs)
    with pytest.raises(ValueError, match="X_val has 3 features"):
        MetricHead().fit(X, attrs, X[:, :3], attrs)
    with pytest.raises(ValueError, match="num_threads == 0, must be >= 1"):
        MetricHead(num_threads=0).fit(X, attrs)
    with pytest.raises(TypeError, match=r"hidden_dim .*got 8.0; expected an integer >= 1 or None"):
        MetricHead(hidden_dim=8.0).fit(X, attrs)


@pytest.mark.parametrize("cls, first", [(GroupLDA, 4), (GroupNCA, 4), (MetricHead, "multisimilarity")])
def test_baseline_parameters_after_the_first_are_keyword_only(cls, first):
    with pytest.raises(TypeError, match="positional argument"):
        cls(first, None)
    name = next(iter(cls.__init__.__code__.co_varnames[1:]))
    assert cls(first).get_params()[name] == first


def test_integer_parameters_name_the_bad_value():
    X, attrs, _ = toy()
    with pytest.raises(TypeError, match=r"n_components must be an instance of int, not float \(got 2.5; expected an "
                                        r"integer >= 1 or None\)"):
        PCAWhitening(n_components=2.5).fit(X)
    with pytest.raises(TypeError, match=r"n_components must be an integer >= 1 or None, got True"):
        GroupLDA(n_components=True).fit(X, attrs)
    assert GroupLDA(n_components=np.int64(3)).fit(X, attrs).transform(X).shape == (len(X), 3)


# ----------------------------------------------------------------------------- sample transforms, cached step
def test_subsample_train_is_nested_and_leaves_val_and_test_alone():
    s, X = toy_sample()
    a, Xa = subsample_train(s, X, 30, seed=0)
    b, Xb = subsample_train(s, X, 60, seed=0)
    assert (a.items["part"] == "train").sum() == 30 and len(Xa) == len(a.items)
    assert set(a.part("train")["id"]) < set(b.part("train")["id"])
    for p in ("val", "test"):
        assert a.part(p)["id"].tolist() == s.part(p)["id"].tolist()
    rows = s.items.index.get_indexer(a.items.index)
    np.testing.assert_array_equal(Xa, X[rows])
    assert len({a.fingerprint, b.fingerprint, s.fingerprint}) == 3
    same, Xs = subsample_train(s, X, 100, seed=0)
    assert same is s and Xs is X
    assert subsample_train(s, X, 30, seed=1)[0].part("train")["id"].tolist() != a.part("train")["id"].tolist()
    with pytest.raises(ValueError, match="between 2 and the training part's size 100"):
        subsample_train(s, X, 101, seed=0)
    assert B.budgets_for(s, (10, 50, 100, 500)) == [10, 50, 100]


def test_without_attribute_changes_targets_only():
    s, _ = toy_sample()
    w = without_attribute(s, "kind")
    assert w.attributes == ("colour",) and w.fingerprint != s.fingerprint and w.items is s.items
    with pytest.raises(ValueError, match="unknown attribute 'size'"):
        without_attribute(s, "size")


@pytest.mark.parametrize("name", ["pca_whiten", "lda", "supcon"])
def test_get_baseline_caches_and_never_fits_on_the_test_part(name, monkeypatch):
    monkeypatch.setattr(B, "PCA_GRID", (2, 4, 8, 32))
    s, X = toy_sample()
    params = {"max_epochs": 5, "batch_size": 32} if name == "supcon" else {}
    run = B.get_baseline(s, X, "toy", name, seed=0, **params)
    again = B.get_baseline(s, X, "toy", name, seed=0, **params)
    for p in ("train", "val", "test"):
        np.testing.assert_array_equal(run.emb[p], again.emb[p])
    assert again.params == run.params and again.fit_seconds == run.fit_seconds
    X2 = X.copy()
    X2[s.mask("test")] += 100.0  # a different test part must not change what was fitted
    other = B.get_baseline(s, X2, "toy", name, seed=0, **params)
    np.testing.assert_array_equal(other.emb["train"], run.emb["train"])
    np.testing.assert_array_equal(other.emb["val"], run.emb["val"])
    if name == "pca_whiten":
        scores = run.params["val_map@r"]
        assert run.params["n_components"] == int(max(scores, key=scores.get)) and len(scores) == 4
        assert run.emb["test"].shape[1] == run.params["n_components"]
        # one wide fit, sliced, must equal a fit at the selected width
        ref = PCAWhitening(run.params["n_components"]).fit(X[s.mask("train")])
        np.testing.assert_allclose(run.emb["test"], ref.transform(X[s.mask("test")]), rtol=1e-4, atol=1e-4)


def test_get_baseline_keys_every_setting_and_runs_every_baseline():
    s, X = toy_sample()
    a = B.get_baseline(s, X, "toy", "supcon", 0, max_epochs=3, batch_size=32)
    b = B.get_baseline(s, X, "toy", "supcon", 0, max_epochs=3, batch_size=32, temperature=0.5)
    assert not np.array_equal(a.emb["test"], b.emb["test"])  # a different setting is not served from the cache
    assert len(list((B.cache_dir() / "baselines" / "toy").glob("supcon-*.npz"))) == 2
    for name, params in [("nca", {"n_components": 4, "pca_components": 8, "max_iter": 5}),
                         ("multisimilarity", {"max_epochs": 3, "batch_size": 32}), ("lda", {})]:
        run = B.get_baseline(s, X, "toy", name, 1, **params)
        assert {p: e.shape[0] for p, e in run.emb.items()} == {"train": 100, "val": 20, "test": 40}
        assert np.isfinite(run.emb["test"]).all()


def test_get_baseline_errors():
    s, X = toy_sample()
    with pytest.raises(ValueError, match="unknown baseline 'svm'"):
        B.get_baseline(s, X, "toy", "svm", 0)
    with pytest.raises(ValueError, match="X has 10 rows, the sample has 160"):
        B.get_baseline(s, X[:10], "toy", "lda", 0)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['gamma'\] for baseline 'lda'"):
        B.get_baseline(s, X, "toy", "lda", 0, gamma=1)
    with pytest.raises(ValueError, match="temperature must be a positive number, got 0"):
        B.get_baseline(s, X, "toy", "supcon", 0, temperature=0)
    with pytest.raises(ValueError, match="lr must be a positive number, got 'fast'"):
        B.get_baseline(s, X, "toy", "supcon", 0, lr="fast")
    with pytest.raises(ValueError, match="pca_components == 0, must be >= 1"):
        B.get_baseline(s, X, "toy", "nca", 0, pca_components=0)


# ----------------------------------------------------------------------------- linear probe
def test_linear_probe_is_one_logistic_regression_per_attribute_on_standardised_features():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from attrboost.study.baselines import LinearProbe, make_baseline

    X, y, _ = toy()
    Y = pd.DataFrame(y).astype(str)
    probe = make_baseline("linear_probe").fit(X, Y)
    assert isinstance(probe, LinearProbe)
    Z = StandardScaler().fit_transform(X.astype(np.float64))
    want = [LogisticRegression(max_iter=1000).fit(Z, Y[c]) for c in Y.columns]
    emb = probe.transform(X)
    widths = [len(m.classes_) for m in want]
    assert emb.shape == (len(X), sum(widths)) and emb.dtype == np.float32
    blocks = np.split(emb, np.cumsum(widths)[:-1], axis=1)
    for block, m in zip(blocks, want):
        np.testing.assert_allclose(block.sum(1), 1, atol=1e-5)
        np.testing.assert_allclose(block, m.predict_proba(Z), atol=1e-5)
    np.testing.assert_array_equal(probe.predict(X), np.stack([m.predict(Z) for m in want], axis=1))
    np.testing.assert_array_equal(emb, make_baseline("linear_probe").fit(X, Y).transform(X))  # deterministic


def test_linear_probe_rejects_what_it_cannot_fit():
    from attrboost.study.baselines import LinearProbe

    X, y, _ = toy()
    with pytest.raises(ValueError, match="attribute labels"):
        LinearProbe().fit(X)
    with pytest.raises(ValueError, match="one value"):
        LinearProbe().fit(X, np.zeros((len(X), 1)))
    with pytest.raises(ValueError, match="rows"):
        LinearProbe().fit(X, np.asarray(y)[:-1])
    with pytest.raises(ValueError, match="C must be"):
        LinearProbe(C=0).fit(X, y)

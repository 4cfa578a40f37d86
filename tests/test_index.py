"""The faiss gallery: exact search equals brute-force cosine, approximate kinds report their recall, files are
verified, mismatches and empty indexes are clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from attrboost.search.bundle import BundleError
from attrboost.search.index import EmptyIndexError, IndexMismatchError, VectorIndex


def _clustered(n=300, d=32, seed=0):
    """Vectors around 10 centres (like boosted embeddings of groups), not unit-norm."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, d))
    X = centres[rng.integers(0, 10, n)] + 0.3 * rng.normal(size=(n, d))
    return (X * rng.uniform(0.5, 3, (n, 1))).astype(np.float32)


def _brute_force(G, Q, k):
    """Cosine top-k by plain numpy, ties by position (independent of the module)."""
    Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    S = Qn.astype(np.float64) @ Gn.T.astype(np.float64)
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(S, order, axis=1)


def test_flat_equals_brute_force_cosine_top_k():
    X = _clustered()
    Q = _clustered(20, seed=1)
    ids = [f"item{i}" for i in range(len(X))]
    index = VectorIndex(X.shape[1]).add(X, ids, [f"/img/{i}.jpg" for i in range(len(X))])
    got_ids, got_scores = index.search(Q, k=7)
    pos, scores = _brute_force(X, Q, 7)
    assert got_ids.tolist() == np.asarray(ids)[pos].tolist()
    np.testing.assert_allclose(got_scores, scores, atol=1e-5)
    assert index.path_of(got_ids[0][:2]) == [f"/img/{p}.jpg" for p in pos[0][:2]]
    assert "recall_at_10" not in index.report  # exact


@pytest.mark.parametrize("kind,at_least", [("hnsw", 0.95), ("ivfpq", 0.0)])
def test_approximate_kinds_report_recall_against_exact(kind, at_least):
    X = _clustered(300)  # <= the recall sample: every vector is a query, so the test can recompute it
    index = VectorIndex(X.shape[1], kind).add(X, range(len(X)))
    rec = index.report["recall_at_10"]
    exact, _ = _brute_force(X, X, 10)
    got, _ = index.search(X, 10)
    own = np.mean([len(set(e.tolist()) & set(map(int, g))) / 10 for e, g in zip(exact, got)])
    assert rec["k"] == 10 and rec["queries"] == 300
    assert rec["recall"] == pytest.approx(own, abs=1e-9)
    assert rec["recall"] >= at_least


def test_save_load_add_and_verification(tmp_path):
    X = _clustered(100)
    index = VectorIndex(X.shape[1], model={"backbone": "efficientnet_lite0", "width": 32})
    index.add(X[:60], [f"a{i}" for i in range(60)]).save(tmp_path / "ix")
    back = VectorIndex.load(tmp_path / "ix")
    assert back.ids.tolist() == index.ids.tolist()
    np.testing.assert_array_equal(back.search(X[:5], 5)[0], index.search(X[:5], 5)[0])
    back.add(X[60:], [f"a{i}" for i in range(60, 100)]).save(tmp_path / "ix")
    grown = VectorIndex.load(tmp_path / "ix")
    assert len(grown) == 100
    pos, _ = _brute_force(X, X[95:], 1)
    assert grown.search(X[95:], 1)[0][:, 0].tolist() == [f"a{p}" for p in pos[:, 0]]
    with pytest.raises(ValueError, match="ids must be unique.*a3"):
        grown.add(X[:1], ["a3"])

    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    meta["width"] = 64
    (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"index\.json.*changed after the index was saved"):
        VectorIndex.load(tmp_path / "ix")


def test_mismatch_and_empty_errors():
    index = VectorIndex(32, model={"backbone": "efficientnet_lite0", "width": 32, "head_sha256": "aa"})
    with pytest.raises(EmptyIndexError, match="empty"):
        index.search(np.ones((1, 32)), 3)
    index.add(_clustered(20), range(20))
    with pytest.raises(IndexMismatchError, match="width 16.*width 32"):
        index.search(np.ones((1, 16)), 3)
    with pytest.raises(IndexMismatchError, match="width 16"):
        index.add(np.ones((1, 16)), ["x"])
    with pytest.raises(IndexMismatchError, match="backbone: index 'efficientnet_lite0', model 'resnet18'"):
        index.check_model({"backbone": "resnet18", "width": 32, "head_sha256": "aa"})
    with pytest.raises(IndexMismatchError, match="head_sha256"):
        index.check_model({"backbone": "efficientnet_lite0", "width": 32, "head_sha256": "bb"})
    index.check_model({"backbone": "efficientnet_lite0", "width": 32, "head_sha256": "aa"})
    ids, scores = index.search(np.ones((2, 32)), k=50)  # k above the size: every item once
    assert ids.shape == (2, 20) and sorted(ids[0].tolist()) == sorted(str(i) for i in range(20))
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    with pytest.raises(ValueError, match="kind='annoy'"):
        VectorIndex(32, "annoy")


def test_ivfpq_on_a_small_catalogue_trains_without_faiss_warnings(capfd):
    """2,000 vectors: 8-bit PQ codebooks (256 centroids) would want 9,984; the index picks fewer bits."""
    X = _clustered(2000, 64)
    index = VectorIndex(64, "ivfpq").add(X, np.arange(2000))
    assert "please provide at least" not in capfd.readouterr().err
    assert 2 ** index.report["params"]["pq_nbits"] * 39 <= 2000
    assert index.report["recall_at_10"]["recall"] > 0.05  # chance: 10 / 2000


# ------------------------------------------------------------------ flat: float16 candidates, float32 proof
def _one_at_a_time(index, Q, k):
    got = [index.search(q[None], k) for q in Q]
    return np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])


def test_flat_few_query_search_is_exact_like_brute_force():
    X = _clustered(3000, d=48)
    Q = _clustered(30, d=48, seed=1)
    index = VectorIndex(X.shape[1]).add(X, range(len(X)))
    pos, scores = _brute_force(X, Q, 10)
    for got_ids, got_scores in (_one_at_a_time(index, Q, 10), index.search(Q[:5], 10)):
        assert got_ids.astype(int).tolist() == pos[:len(got_ids)].tolist()
        np.testing.assert_allclose(got_scores, scores[:len(got_ids)], atol=1e-5)
    many_ids, _ = index.search(Q, 10)  # 30 queries: faiss's float32 scan, same answer
    assert many_ids.astype(int).tolist() == pos.tolist()


def test_flat_near_duplicates_below_float16_resolution_stay_exact():
    """500 near-copies of the query whose cosines are 1 - 2e-6 j (j = 0..499, shuffled): float16 storage
    (~5e-4 resolution near 1) cannot order them, so the float16 candidates are a lottery; the bound must
    reject them and the search must still be exact."""
    rng = np.random.default_rng(3)
    d = 64
    q = np.abs(rng.normal(size=d))
    q /= np.linalg.norm(q)
    v = rng.normal(size=(500, d))
    v -= (v @ q)[:, None] * q  # directions orthogonal to the query
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cos = 1 - 2e-6 * rng.permutation(500)
    near = cos[:, None] * q + np.sqrt(1 - cos**2)[:, None] * v
    X = np.vstack([near, _clustered(1500, d=d, seed=4)]).astype(np.float32)
    index = VectorIndex(d).add(X, range(len(X)))
    got_ids, got_scores = index.search(q[None].astype(np.float32), 10)
    assert got_ids[0].astype(int).tolist() == np.argsort(-cos)[:10].tolist()
    np.testing.assert_allclose(got_scores[0], np.sort(cos)[::-1][:10], atol=1e-6)
    assert index.widened > 0  # the proof failed and the search widened


def test_flat_float16_copy_follows_load_and_add(tmp_path):
    X = _clustered(400)
    index = VectorIndex(X.shape[1]).add(X[:300], [f"a{i}" for i in range(300)])
    assert index._fp16.ntotal == 300  # built with the index
    index.add(X[300:350], [f"b{i}" for i in range(50)])  # appended to it
    index.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix").add(X[350:], [f"c{i}" for i in range(50)])
    for ix in (index, loaded):
        n = len(ix)
        got, _ = _one_at_a_time(ix, X[:n], 1)
        assert got[:, 0].tolist() == ix.ids.tolist()  # every vector finds itself first, new ones included
        assert ix._fp16.ntotal == n

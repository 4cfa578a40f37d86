"""attrboost fit --objective: every objective fitted by the command on the 40 generated shapes, saved, loaded and
encoding as its own heads do (task1+supcon: both parts, each unit norm, concatenated); one selection rule; old
bundles load as task1; predicted attributes stored by `attrboost index` equal the head's; filtered search
against a brute-force filter; bad filters are clear errors."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

import attrboost
from attrboost.heads import BoostHead
from attrboost.metric_head import MetricHead
from attrboost.objectives import DEFAULT_OBJECTIVE, OBJECTIVES, SELECTION
from attrboost.search.cli import build_parser, main
from attrboost.search.index import VectorIndex
from attrboost.search.predicted import FilterError, Predictions

FIT = ["--attributes", "colour,shape", "--max-epochs", "3", "-q"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, shapes_model):
    """The shared task1 model (conftest) and supcon / task1+supcon models fitted by `attrboost fit` on the same 40
    shapes (a copy, in a cache of their own), each with a flat index of the images."""
    root = tmp_path_factory.mktemp("objectives")
    cat = shutil.copytree(shapes_model.csv.parent, root / "cat")
    csv_path, images = cat / shapes_model.csv.name, cat / shapes_model.images.name
    out = {"task1": shapes_model.model}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTRBOOST_CACHE", str(root / "cache"))
        for objective in ("supcon", "task1+supcon"):
            out[objective] = root / objective.replace("+", "_")
            assert main(["fit", "--csv", str(csv_path), "--images", str(images), "--out", str(out[objective]),
                         "--objective", objective, *FIT]) == 0
        for objective, model in out.items():
            assert main(["index", "--model", str(model), "--images", str(images), "--out",
                         str(root / f"ix_{objective.replace('+', '_')}"), "-q"]) == 0
    paths = sorted((str(p) for p in images.glob("s*.jpg")), key=lambda p: int(Path(p).stem[1:]))
    return out, {o: root / f"ix_{o.replace('+', '_')}" for o in out}, paths


def _unit(A):
    n = np.linalg.norm(A.astype(np.float64), axis=1, keepdims=True)
    return A / np.where(n > 0, n, 1)


@pytest.mark.parametrize("objective", ["task1", "supcon", "task1+supcon"])
def test_each_objective_round_trips_and_encodes_as_its_heads(models, objective):
    bundles, _, paths = models
    model = bundles[objective]
    manifest = json.loads((model / "manifest.json").read_text())
    metrics = json.loads((model / "metrics.json").read_text())
    assert manifest["objective"] == metrics["objective"] == objective
    assert manifest["selection"] == metrics["selection"] == SELECTION
    assert "validation MAP@R" in metrics["selection_rule"]
    enc = attrboost.load_model(model)
    assert enc.objective == objective and enc.selection == SELECTION
    X = enc.features(paths[:8])[0]
    Z = enc(paths[:8])
    # independent: the head files read on their own, no bundle code
    t1 = BoostHead.read_files(model) if objective != "supcon" else None
    sc = MetricHead.read_files(model) if objective != "task1" else None
    if objective == "task1":
        assert np.array_equal(Z, t1.transform(X)) and enc.width == 1280
    elif objective == "supcon":
        assert np.array_equal(Z, sc.transform(X)) and enc.width == sc.hidden_dim_
        assert enc.attributes == [] and enc.predict_features(X).shape == (8, 0)
    else:
        a, b = t1.transform(X), sc.transform(X)
        assert enc.width == Z.shape[1] == a.shape[1] + b.shape[1] == 2560
        np.testing.assert_allclose(np.linalg.norm(Z[:, :1280], axis=1), 1, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(Z[:, 1280:], axis=1), 1, atol=1e-6)
        np.testing.assert_allclose(Z, np.hstack([_unit(a), _unit(b)]), atol=1e-6)
        assert enc.attributes == ["colour", "shape"]
        assert enc.predict_features(X).equals(t1.predict_attributes(X))
    files = set(manifest["files"])
    want = {"task1": {"head.safetensors", "head.json"}, "supcon": {"metric_head.safetensors", "metric_head.json"}}
    assert files - {"backbone.json", "metrics.json"} == set().union(*(want[p] for p in objective.split("+")))


@pytest.mark.parametrize("objective", ["task1", "supcon", "task1+supcon"])
def test_one_selection_rule_for_every_objective_and_part(models, objective):
    metrics = json.loads((models[0][objective] / "metrics.json").read_text())
    parts = metrics.get("parts") or {objective: metrics}
    assert len(parts) == len(objective.split("+"))
    for part in parts.values():
        hist = part["history"]
        best = [h for h in hist if h["selected"]]
        assert len(best) == 1 and best[0]["epoch"] == part["best_epoch"]
        top = max(h["val_map@r"] for h in hist)  # the first epoch with the best validation MAP@R
        assert best[0]["epoch"] == min(h["epoch"] for h in hist if h["val_map@r"] == top)


def test_old_bundle_without_objective_loads_as_task1(models, tmp_path):
    bundles, _, paths = models
    old = shutil.copytree(bundles["task1"], tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["objective"], manifest["selection"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    enc, new = attrboost.load_model(old), attrboost.load_model(bundles["task1"])
    assert enc.objective == "task1" and enc.identity["head_sha256"] == new.identity["head_sha256"]
    assert np.array_equal(enc(paths[:3]), new(paths[:3]))


def test_the_default_objective_is_one_constant():
    assert DEFAULT_OBJECTIVE == "task1+supcon" and set(OBJECTIVES) >= {"task1", "supcon", "task1+supcon"}
    args = build_parser().parse_args(["fit", "--csv", "c", "--attributes", "a", "--out", "o"])
    assert args.objective == DEFAULT_OBJECTIVE
    assert build_parser().parse_args(["fit", "--csv", "c", "--attributes", "a", "--out", "o", "--task",
                                      "task3"]).objective == "task3"  # the old flag still works


def test_export_of_task1_plus_supcon_matches_eager(models, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    bundles, _, paths = models
    assert main(["export", "--model", str(bundles["task1+supcon"]), "--onnx", str(tmp_path / "e.onnx"),
                 "--check-images", *paths[:2]]) == 0


# ------------------------------------------------------------------------------------------- predicted attributes
@pytest.mark.parametrize("objective", ["task1", "task1+supcon"])
def test_indexed_predictions_equal_the_heads_own(models, objective):
    bundles, indexes, paths = models
    ix, enc = VectorIndex.load(indexes[objective]), attrboost.load_model(bundles[objective])
    assert ix.predicted is not None and ix.predicted.classes == enc.classes
    X = enc.features(paths)[0]
    want = enc.head.predict_attributes(X)
    proba = enc.head.predict_attribute_proba(X)
    got = ix.predicted.at(ix.items.positions([Path(p).stem for p in paths]))
    for a in ("colour", "shape"):
        assert [g[a]["value"] for g in got] == want[a].tolist()
        np.testing.assert_allclose([g[a]["confidence"] for g in got], proba[a].max(1), atol=1e-4)


def test_supcon_index_has_no_predictions_and_refuses_filters(models, capsys):
    _, indexes, paths = models
    assert VectorIndex.load(indexes["supcon"]).predicted is None
    capsys.readouterr()
    assert main(["search", "--index", str(indexes["supcon"]), paths[0], "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["predicted"] == {} and all(h["predicted"] is None for h in out[0]["results"])
    assert main(["search", "--index", str(indexes["supcon"]), paths[0], "--filter", "colour:red"]) == 2
    assert "keeps no predicted attributes" in capsys.readouterr().err


def test_cli_filter_returns_only_matching_items(models, capsys):
    _, indexes, paths = models
    ix = VectorIndex.load(indexes["task1"])
    codes = np.asarray(ix.predicted.arrays()[0])
    value = ix.predicted.classes["shape"][int(np.bincount(codes[1]).argmax())]  # the most predicted shape
    capsys.readouterr()
    assert main(["search", "--index", str(indexes["task1"]), paths[0], "-k", "5", "--filter", f"shape:{value}",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["results"]
    assert len(hits) == 5 and all(h["predicted"]["shape"]["value"] == value for h in hits)
    assert main(["search", "--index", str(indexes["task1"]), paths[0], "--filter", "material:wood"]) == 2
    assert "unknown attribute 'material'; the index predicts colour, shape" in capsys.readouterr().err


def _toy_index(n=600, width=16, seed=0, kind="flat"):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, width)).astype(np.float32)
    classes = {"colour": ["Navy Blue", "Red", "Rare"], "shape": ["disc", "square"]}
    codes = np.stack([rng.choice([0, 1], n), rng.choice([0, 1], n)], 1)
    codes[rng.choice(n, 3, replace=False), 0] = 2  # 3 items predicted "Rare"
    conf = rng.uniform(0.3, 1, size=codes.shape)
    ix = VectorIndex(width, kind, classes=classes).add(V, [f"i{j}" for j in range(n)], predicted=(codes, conf))
    return ix, V, codes, rng.normal(size=(4, width)).astype(np.float32)


def _brute(V, q, ok, k):
    S = _unit(V) @ (q / np.linalg.norm(q))
    cand = np.flatnonzero(ok)
    return cand[np.argsort(-S[cand], kind="stable")][:k]


@pytest.mark.parametrize("specs, rule", [
    (["colour:Navy Blue"], lambda c: c[:, 0] == 0),
    (["colour:Navy Blue", "colour:Rare"], lambda c: np.isin(c[:, 0], [0, 2])),             # one attribute: any
    (["colour:Red", "shape:square"], lambda c: (c[:, 0] == 1) & (c[:, 1] == 1)),           # two: all
    (["colour:Rare"], lambda c: c[:, 0] == 2),                                             # fewer than k exist
])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_filtered_search_equals_a_brute_force_filter(specs, rule, k):
    ix, V, codes, Q = _toy_index()
    keep = ix.predicted.matcher(ix.predicted.parse(specs))
    ids, scores = ix.search(Q, k, keep=keep)
    ok = rule(codes)
    for q in range(len(Q)):
        want = _brute(V, Q[q], ok, k)
        got = [i for i in ids[q] if i]
        assert got == [f"i{j}" for j in want]
        assert len(got) == min(k, int(ok.sum()))  # still k when enough items match
        assert np.all(np.isneginf(scores[q][len(got):]))


def test_predictions_survive_save_load_and_add(tmp_path):
    ix, V, codes, Q = _toy_index(n=100)
    ix.save(tmp_path / "ix")
    back = VectorIndex.load(tmp_path / "ix")
    assert back.predicted.at(range(100)) == ix.predicted.at(range(100))
    back.add(V[:2] + 1, ["new0", "new1"], predicted=(np.array([[2, 0], [2, 1]]), np.array([[0.9, 0.8], [0.7, 0.6]])))
    assert back.predicted.at(back.items.positions(["new1"]))[0]["colour"] == {"value": "Rare", "confidence": 0.7}
    with pytest.raises(ValueError, match="keeps predicted attributes"):
        back.add(V[:1], ["new2"])
    with pytest.raises(ValueError, match="keeps no predicted attributes"):
        VectorIndex(16).add(V[:1], ["a"], predicted=(np.zeros((1, 2), int), np.ones((1, 2))))


@pytest.mark.parametrize("spec, message", [
    ("colour", "expected ATTRIBUTE:VALUE"),
    ("material:wood", "unknown attribute 'material'; the index predicts colour, shape"),
    ("colour:Navy", "colour has no value 'Navy'; its values: Navy Blue, Red, Rare"),
    (":Red", "expected ATTRIBUTE:VALUE"),
])
def test_bad_filters_are_clear_errors(spec, message):
    p = Predictions({"colour": ["Navy Blue", "Red", "Rare"], "shape": ["disc", "square"]})
    with pytest.raises(FilterError, match=message):
        p.parse([spec])
    assert p.parse(["colour:Navy Blue", "colour: Red"]) == {"colour": {0, 1}}  # the value may hold spaces


def test_a_refit_with_another_objective_replaces_the_bundle_only_with_overwrite(models, tmp_path, monkeypatch,
                                                                                 capsys):
    bundles, _, _ = models
    root = bundles["supcon"].parent
    monkeypatch.setenv("ATTRBOOST_CACHE", str(root / "cache"))  # the features are there: nothing is encoded
    model = shutil.copytree(bundles["supcon"], tmp_path / "m")
    args = ["fit", "--csv", str(root / "cat" / "catalogue.csv"), "--images", str(root / "cat" / "images"),
            "--out", str(model), "--objective", "task1+supcon", *FIT]
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert attrboost.load_model(model).objective == "supcon"
    assert main([*args, "--overwrite"]) == 0
    assert attrboost.load_model(model).objective == "task1+supcon"
    assert not [p for p in tmp_path.iterdir() if p.name != "m" and not p.name.endswith(".lock")]  # no leftovers


def test_tool_docs_document_objectives_filters_and_the_bundle_record():
    text = (Path(__file__).resolve().parents[1] / "docs" / "tool.md").read_text()
    for needle in ("--objective", *(f"`{o}`" for o in OBJECTIVES), "DEFAULT_OBJECTIVE", "--filter ATTRIBUTE:VALUE",
                   "filter=baseColour:Navy%20Blue", "c = max(64, 4 k)", "records the **objective** and the",
                   "**selection** rule", "loads as the `BoostHead` it holds (`task1`)", "400"):
        assert needle in text, needle

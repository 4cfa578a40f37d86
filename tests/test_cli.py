"""The attrboost command end to end on 40 generated images: fit -> index -> search (--json) -> add -> export,
checked against independent computations; and its errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
from _shapes import write_shapes
from helpers import SHAPES_FIT

import attrboost
from attrboost.search.cli import main


@pytest.fixture(scope="module")
def work(tmp_path_factory, shapes_model):
    """The catalogue of the shared model (conftest's shapes_model: 40 images, a model fitted by `attrboost fit`)
    copied here with an undecodable file added, and a flat index of its images made with that model."""
    root = tmp_path_factory.mktemp("cli")
    cat = shutil.copytree(shapes_model.csv.parent, root / "cat")
    csv_path, images = cat / shapes_model.csv.name, cat / shapes_model.images.name
    (images / "zz_broken.jpg").write_bytes(b"\xff\xd8 truncated")  # in the folder, not in the CSV
    assert main(["index", "--model", str(shapes_model.model), "--images", str(images), "--out", str(root / "ix"),
                 "-q"]) == 0
    return root, csv_path, images


def _search(capsys, *args):
    capsys.readouterr()
    assert main(["search", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_fit_writes_a_bundle_with_validation_metrics(shapes_model):
    metrics = json.loads((shapes_model.model / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_val"] == 40 and metrics["n_val"] >= 2
    assert set(metrics["validation"]) == {"val_loss", "val_acc_colour", "val_acc_shape", "val_map@r"}
    assert metrics["n_epochs"] == 3 and len(metrics["history"]) == 3
    best = [h for h in metrics["history"] if h["selected"]][0]
    # BoostHead's default selection (the study's rule): the first epoch with the best validation MAP@R
    assert best["val_map@r"] == max(h["val_map@r"] for h in metrics["history"])
    assert best["epoch"] == min(h["epoch"] for h in metrics["history"] if h["val_map@r"] == best["val_map@r"])
    enc = attrboost.load_model(shapes_model.model)
    assert enc.attributes == ["colour", "shape"] and enc.width == 1280


def test_index_search_json_equals_brute_force(work, shapes_model, capsys):
    root, _, images = work
    meta = json.loads((root / "ix" / "index.json").read_text())
    assert meta["n"] == 40 and meta["kind"] == "flat"
    assert [f["path"] for f in meta["report"]["undecodable"]] == [str(images / "zz_broken.jpg")]
    queries = [str(images / "s0.jpg"), str(images / "s7.jpg")]
    out = _search(capsys, "--index", str(root / "ix"), *queries, "-k", "5")
    # independent: encode every image, cosine by numpy
    enc = attrboost.load_model(shapes_model.model)
    gallery = sorted(p for p in images.glob("s*.jpg"))
    G = enc(gallery)
    Q = enc(queries)
    S = (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (G / np.linalg.norm(G, axis=1, keepdims=True)).T
    X = enc.features(queries)[0]
    predicted = enc.head.predict_attributes(X)
    for q, res in enumerate(out):
        top = np.argsort(-S[q], kind="stable")[:5]
        assert [r["id"] for r in res["results"]] == [gallery[t].stem for t in top]
        np.testing.assert_allclose([r["score"] for r in res["results"]], S[q][top], atol=1e-5)
        assert res["results"][0]["id"] == os.path.basename(queries[q])[:-4]  # an indexed image finds itself
        assert res["predicted"] == predicted.iloc[q].to_dict()


def test_add_appends_only_new_images(work, shapes_model, tmp_path, capsys):
    root, _, images = work
    ix = shutil.copytree(root / "ix", tmp_path / "ix")
    _, new_images = write_shapes(tmp_path / "more", n=6, seed=1, prefix="n")
    assert main(["index", "--model", str(shapes_model.model), "--images", str(new_images), "--out", str(ix), "--add",
                 "-q"]) == 0
    assert json.loads((ix / "index.json").read_text())["n"] == 46
    out = _search(capsys, "--index", str(ix), str(new_images / "n2.jpg"), "-k", "1")
    assert out[0]["results"][0]["id"] == "n2"
    assert main(["index", "--model", str(shapes_model.model), "--images", str(new_images), "--out", str(ix), "--add",
                 "-q"]) == 0
    assert json.loads((ix / "index.json").read_text())["n"] == 46
    assert "6 of 6 images are already in" in capsys.readouterr().err


def test_clear_errors(work, shapes_model, tmp_path, capsys):
    root, csv_path, images = work
    assert main(["fit", "--csv", str(csv_path), "--images", str(images), "--attributes", "colour,material",
                 "--out", str(tmp_path / "m"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) ['material']" in err and "'colour'" in err
    assert main(["search", "--index", str(root / "ix"), str(images / "zz_broken.jpg")]) == 2
    assert "zz_broken.jpg" in capsys.readouterr().err
    assert main(["index", "--model", str(shapes_model.model), "--images", str(images), "--out", str(root / "ix"),
                 "-q"]) == 2
    assert "already holds an index: pass --add" in capsys.readouterr().err
    # another model (other seed: other head weights) cannot search this index
    assert main(["fit", "--csv", str(csv_path), "--images", str(images), "--out", str(tmp_path / "other"),
                 "--seed", "1", *SHAPES_FIT]) == 0
    assert main(["search", "--index", str(root / "ix"), "--model", str(tmp_path / "other"),
                 str(images / "s0.jpg")]) == 2
    assert "does not match the index (head_sha256" in capsys.readouterr().err


def test_export_onnx_matches_eager(work, shapes_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    _, _, images = work
    path = tmp_path / "enc.onnx"
    queries = [str(images / f"s{i}.jpg") for i in range(4)]
    assert main(["export", "--model", str(shapes_model.model), "--onnx", str(path), "--check-images", *queries]) == 0
    enc = attrboost.load_model(shapes_model.model)
    pil_stage, _ = enc.preprocessing()
    from attrboost.data import load_image
    batch = np.stack([np.asarray(pil_stage(load_image(q)), dtype=np.uint8) for q in queries])
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": batch})[0]
    want = enc(queries)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert got.shape == want.shape and cos.min() >= 0.9999


def test_module_entry_point_and_study_still_run():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for mod in ("attrboost.search.cli", "attrboost.study"):
        out = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, env=env,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert mod == "attrboost.study" or "{fit,index,search,export,serve,demo-data}" in out.stdout

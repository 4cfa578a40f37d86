"""The study's frozen features of a protocol sample, for every backbone including ``pca``.

:func:`embed` is the study-level entry point: features for the rows of an ``items`` table. Torch backbones
go through the shared feature store (:func:`attrboost.features.extract_features`); ``pca`` loads the pixels
(cached), fits :class:`~attrboost.pixels.PixelPCA` on the training rows only and caches the result per
sample under ``features/pca/``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import backbones
from ..cache import cache_dir, cached, code_hash, fingerprint, load_checked, save_checked
from ..features import FEATURES_VERSION, dataset_identity, extract_features, ids_array
from ..pixels import PixelPCA, load_pixels

__all__ = ["embed", "pca_width", "feature_cache_path"]


def feature_cache_path(backbone: str, fp: str) -> Path:
    """``cache_dir()/features/<backbone>/<fp>.npz`` (the per-sample ``pca`` features)."""
    return cache_dir() / "features" / backbone / f"{fp}.npz"


def _features_expect(n: int, width: int) -> dict:
    return {"ids": (None, (n,)), "features": (np.float32, (n, width))}


_TORCH_ONLY = {"weights", "pretrained", "device", "batch_size", "num_workers", "chunk_size", "num_threads"}


def _cached_pixels(paths: list[str], ids: np.ndarray, size, dataset_fp: str, cache: bool,
                   progress: bool) -> np.ndarray:
    """:func:`attrboost.pixels.load_pixels`, cached as uint8 (exactly recoverable: pixels are k/255)."""
    fp = fingerprint("pixels", FEATURES_VERSION, code_hash("attrboost.pixels", "attrboost.data.catalogue"), list(size),
                     dataset_identity(dataset_fp, paths), ids.tolist())
    path = cache_dir() / "pixels" / f"{fp}.npz"
    w, h = size
    if cache:
        data = load_checked(path, fp, {"ids": (None, (len(ids),)), "pixels": (np.uint8, (len(ids), w * h * 3))},
                            ids=ids)
        if data is not None:
            return data["pixels"].astype(np.float32) / 255.0
    pixels = load_pixels(paths, size, progress=progress)
    if cache:
        save_checked(path, fp, ids=ids, pixels=np.rint(pixels * 255.0).astype(np.uint8))
    return pixels


def pca_width(n_train: int, width: int) -> int:
    """The ``pca`` backbone's width for ``n_train`` training images: ``width`` (2048), or ``n_train - 1``
    when the training part is smaller than that (centred pixels of n images span at most n - 1 directions;
    PixelPCA needs at least as many training images as components), with a printed message."""
    if n_train >= width:  # as before: PixelPCA takes as many components as training images
        return width
    if n_train < 2:
        raise ValueError(f"pca: the training part has {n_train} image(s); PixelPCA needs at least 2 "
                         "(raise n_groups or per_group)")
    print(f"pca: width capped at {n_train - 1} (the training part has {n_train} images, fewer than the "
          f"{width} components of the study's pca; centred pixels of {n_train} images span {n_train - 1} directions)")
    return n_train - 1


def embed(backbone: str, items: pd.DataFrame, train_ids, *, dataset_fp: str, **kw) -> np.ndarray:
    """Frozen features for every row of ``items`` (columns ``id``, ``image_path``), aligned to its rows.

    Torch backbones: :func:`extract_features` on all rows (``train_ids`` is not used; ``kw`` is passed on).
    ``pca``: pixels of all rows are loaded (cached), :class:`~attrboost.pixels.PixelPCA` is fitted on the
    rows whose ``id`` is in ``train_ids`` only, and all rows are transformed; cached under
    ``features/pca/`` keyed also by the training ids. ``kw`` for pca: ``n_components`` (default
    :func:`pca_width`: 2048, capped by the training images for a small catalogue, with a message),
    ``image_size`` (default (60, 80)), ``seed``, ``cache``, ``progress``; torch-only options are ignored.
    """
    spec = backbones.get_spec(backbone)
    if not isinstance(items, pd.DataFrame) or not {"id", "image_path"} <= set(items.columns):
        raise ValueError("items must be a DataFrame with columns 'id' and 'image_path'")
    paths = [os.fspath(p) for p in items["image_path"]]
    ids = ids_array(items["id"].tolist())
    if spec.is_torch:
        return extract_features(backbone, paths, ids, dataset_fp=dataset_fp, **kw)[1]

    cache, progress = kw.pop("cache", True), kw.pop("progress", True)
    n_components = kw.pop("n_components", None)
    size = tuple(kw.pop("image_size", (60, 80)))
    seed = kw.pop("seed", 0)
    unknown = set(kw) - _TORCH_ONLY
    if unknown:
        raise TypeError(f"embed({backbone!r}): unexpected keyword arguments {sorted(unknown)}")
    train_mask = items["id"].isin(list(train_ids)).to_numpy()
    if not train_mask.any():
        raise ValueError("train_ids: none of them occurs in items['id']; PixelPCA needs training rows")
    if n_components is None:
        n_components = pca_width(int(train_mask.sum()), spec.width)
    fp = fingerprint("features", FEATURES_VERSION, code_hash("attrboost.pixels", "attrboost.data.catalogue",
                                                             "attrboost.study.embed"), backbone, n_components,
                     list(size), seed,
                     dataset_identity(dataset_fp, paths), ids.tolist(), ids[train_mask].tolist())

    def compute() -> dict:
        pixels = _cached_pixels(paths, ids, size, dataset_fp, cache, progress)
        pca = PixelPCA(n_components=n_components, image_size=size, seed=seed).fit(pixels[train_mask])
        return {"ids": ids, "features": np.ascontiguousarray(pca.transform(pixels), dtype=np.float32)}

    return cached(feature_cache_path(backbone, fp), fp, compute, expect=_features_expect(len(ids), n_components),
                  ids=ids, enabled=cache)["features"]

"""The ``pca`` backbone: raw pixels (:func:`load_pixels`) and their PCA fitted on the training part only
(:class:`PixelPCA`), the study's cheapest frozen embedding."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .checks import check_int
from .training import one_blas_thread

__all__ = ["load_pixels", "PixelPCA"]


def load_pixels(image_paths: Sequence[str | os.PathLike], size: tuple[int, int] = (60, 80), *,
                progress: bool = True) -> np.ndarray:
    """Pixel matrix of the images: each resized to ``size`` = (width, height), RGB, scaled to [0, 1],
    flattened (row-major H x W x 3). Returns float32 of shape (n_images, width * height * 3)."""
    from PIL import Image
    from tqdm.auto import tqdm

    from .data import load_image

    w, h = _check_size(size)
    out = np.empty((len(image_paths), h * w * 3), dtype=np.float32)
    for i, path in enumerate(tqdm(image_paths, desc="load pixels", unit="img", disable=not progress)):
        img = load_image(path)
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        out[i] = np.asarray(img, dtype=np.float32).reshape(-1) / 255.0
    return out


def _check_size(size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size/size must be a (width, height) pair of positive ints, got {size!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"image_size/size must be a (width, height) pair of positive ints, got {size!r}")
    return w, h


class PixelPCA:
    """PCA of raw pixels as a frozen embedding (the study's ``pca`` backbone), scikit-learn style.

    Input: pixel matrices from :func:`load_pixels`: images resized to ``image_size`` = (width, height)
    = (60, 80), RGB, scaled to [0, 1], flattened (n_samples, 60*80*3). ``fit`` must be given the
    **training split only** (the PCA basis is part of the model; fitting on test images would leak);
    ``transform`` then projects any split onto the ``n_components`` leading components (centred by the
    training mean, not whitened). Full SVD (``svd_solver="full"``), fit and transform on one BLAS thread
    (:func:`attrboost.training.one_blas_thread`): bit-identical given the data, whatever the thread count.
    """

    def __init__(self, n_components: int = 2048, image_size: tuple[int, int] = (60, 80), seed: int = 0):
        self.n_components = n_components
        self.image_size = image_size
        self.seed = seed

    def _validate(self, X, fitting: bool) -> np.ndarray:
        from sklearn.utils import check_array

        w, h = _check_size(self.image_size)
        X = check_array(X, dtype=np.float32, ensure_2d=True)
        if X.shape[1] != w * h * 3:
            raise ValueError(f"X has {X.shape[1]} columns; image_size={self.image_size} (width, height) RGB "
                             f"expects {w * h * 3} (use load_pixels(paths, size=image_size))")
        if not fitting and hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, PixelPCA was fitted with {self.n_features_in_}")
        return X

    def fit(self, X, y=None) -> "PixelPCA":
        """Fit the PCA on training pixels ``X`` (n_samples >= n_components required)."""
        from sklearn.decomposition import PCA

        check_int(self.n_components, "n_components")
        X = self._validate(X, fitting=True)
        if X.shape[0] < self.n_components:
            raise ValueError(f"PixelPCA: n_components={self.n_components} needs at least that many training "
                             f"images, got {X.shape[0]}; lower n_components or use a larger training split")
        with one_blas_thread():
            self.pca_ = PCA(n_components=int(self.n_components), svd_solver="full", random_state=self.seed).fit(X)
        self.n_features_in_ = X.shape[1]
        self.explained_variance_ratio_ = self.pca_.explained_variance_ratio_
        return self

    def transform(self, X) -> np.ndarray:
        """Project pixels onto the fitted components: float32 (n_samples, n_components)."""
        if not hasattr(self, "pca_"):
            raise RuntimeError("PixelPCA is not fitted yet: call fit(train_pixels) first")
        X = self._validate(X, fitting=False)
        with one_blas_thread():
            return self.pca_.transform(X).astype(np.float32, copy=False)

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

"""Label-aware baselines on the same frozen features, as scikit-learn transformers.

The original study compared its boosted embedding only with the raw one. A practitioner asks next
whether a standard label-aware projection would do as well. Every baseline here has the head's
interface: ``fit(X, y)`` with ``y`` the ``(n, n_attrs)`` attribute labels (or 1-D group labels),
then ``transform(X)`` gives the new embedding, compared with cosine similarity like every other.

* :class:`PCAWhitening` - unsupervised: centre, rotate and rescale to unit variance per component
  (``sklearn.decomposition.PCA(whiten=True)``). Uses no labels; the reference for "just
  re-normalising the features".
* :class:`GroupLDA` - Fisher LDA with the *group* (the full 7-attribute tuple) as the class,
  shrinkage covariance (Ledoit-Wolf) because the features are wide for a few thousand images.
* :class:`GroupNCA` - scikit-learn's Neighbourhood Components Analysis on the group, after a PCA
  to ``pca_components`` dimensions (NCA's cost grows with the input width).
* :class:`LinearProbe` - one multinomial logistic regression per attribute on the standardised features
  (``C=1``, untuned, like LDA and NCA); the embedding is the concatenation of every attribute's predicted
  class probabilities. The reference for "a linear classifier on raw features": a head that does not beat
  it has learnt nothing a linear map of the features could not.
* :class:`MetricHead` (defined in the core, :mod:`attrboost.metric_head`; re-exported here) - the boosting
  head's architecture (one ReLU hidden layer, same width),
  trained with a metric-learning loss from pytorch-metric-learning on the group labels instead
  of per-attribute classifiers: ``loss="supcon"`` (supervised contrastive, Khosla et al. 2020) or
  ``loss="multisimilarity"`` (Wang et al. 2019). The epoch is selected on the validation split
  by MAP@R (early stopping); the test split is never seen.

Every estimator takes its first parameter by position, the others by keyword only (as scikit-learn).

The *group* is what every baseline can use from the labels; the boosting head (Task 1) instead
sees each attribute separately, which is the point of the comparison.

Determinism: the scikit-learn baselines fit and transform on one BLAS thread
(:func:`attrboost.training.one_blas_thread`), so their output is bit-identical whatever the thread count
(multi-threaded OpenBLAS changes the last bits, which NCA's optimiser amplifies); :class:`MetricHead`
pins torch's threads with ``num_threads``.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.neighbors import NeighborhoodComponentsAnalysis
from sklearn.utils.validation import check_is_fitted

from ..checks import check_features, check_int
# MetricHead and the group labels live in the core (both wings use them); re-exported here under the old names
from ..metric_head import (METRIC_LOSSES, METRIC_SELECTIONS, MULTISIMILARITY, MetricHead, _need_groups,  # noqa: F401
                           group_labels)
from ..training import one_blas_thread

__all__ = ["BASELINES", "group_labels", "make_baseline", "PCAWhitening", "GroupLDA", "GroupNCA", "LinearProbe",
           "MetricHead",
           "METRIC_LOSSES"]

#: The registry's names (:func:`make_baseline`), in the order the tables show them.
BASELINES = ("pca_whiten", "lda", "nca", "linear_probe", "supcon", "multisimilarity")


# ----------------------------------------------------------------------------- PCA whitening
class PCAWhitening(BaseEstimator, TransformerMixin):
    """Unsupervised PCA whitening; ``n_components`` None keeps ``min(n_samples, n_features)``."""

    def __init__(self, n_components=None):
        self.n_components = n_components

    def fit(self, X, y=None):
        X = check_features(X)
        k = check_int(self.n_components, "n_components", allow_none=True)
        k = min(k or min(X.shape), *X.shape)
        with one_blas_thread():
            self.pca_ = PCA(n_components=k, whiten=True, svd_solver="full").fit(X.astype(np.float64))
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "pca_")
        X = check_features(X, n_features=self.n_features_in_)
        with one_blas_thread():
            return self.pca_.transform(X.astype(np.float64)).astype(np.float32)


# ----------------------------------------------------------------------------- LDA
class GroupLDA(BaseEstimator, TransformerMixin):
    """Fisher LDA on the group; ``n_components`` None = ``n_groups - 1`` (capped by the width)."""

    def __init__(self, n_components=None, *, shrinkage="auto"):
        self.n_components = n_components
        self.shrinkage = shrinkage

    def fit(self, X, y=None):
        X = check_features(X)
        codes = group_labels(y, len(X))
        k = _need_groups(codes, "GroupLDA")
        cap = min(k - 1, X.shape[1])
        n_comp = check_int(self.n_components, "n_components", allow_none=True) or cap
        if n_comp > cap:
            raise ValueError(f"n_components must be at most min(n_groups - 1, n_features) = {cap}, got {n_comp}")
        self.lda_ = LinearDiscriminantAnalysis(solver="eigen", shrinkage=self.shrinkage, n_components=n_comp)
        with one_blas_thread():
            self.lda_.fit(X.astype(np.float64), codes)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "lda_")
        X = check_features(X, n_features=self.n_features_in_)
        with one_blas_thread():
            return self.lda_.transform(X.astype(np.float64)).astype(np.float32)


# ----------------------------------------------------------------------------- linear probe
class LinearProbe(BaseEstimator, TransformerMixin):
    """Per-attribute logistic regression on standardised features; ``transform`` gives the concatenated class
    probabilities (one block per attribute, its classes in sorted order). ``y``: the ``(n, n_attrs)`` attribute
    labels (a DataFrame or 2-D array; 1-D labels are one attribute)."""

    def __init__(self, C=1.0, *, max_iter=1000):
        self.C = C
        self.max_iter = max_iter

    def fit(self, X, y=None):
        X = check_features(X)
        if y is None:
            raise ValueError("y (the attribute labels) is required")
        Y = np.asarray(y, dtype=object)
        Y = Y.reshape(len(Y), -1)
        if len(Y) != len(X):
            raise ValueError(f"y has {len(Y)} rows, X has {len(X)}")
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ValueError(f"C must be a positive number, got {self.C!r}")
        X64 = X.astype(np.float64)
        self.mean_ = X64.mean(0)
        self.scale_ = X64.std(0)
        self.scale_[self.scale_ == 0] = 1.0
        Z = (X64 - self.mean_) / self.scale_
        self.models_ = []
        with one_blas_thread():
            for j in range(Y.shape[1]):
                labels = Y[:, j].astype(str)
                if len(np.unique(labels)) < 2:
                    raise ValueError(f"attribute {j} has one value in the training rows; a probe needs two")
                self.models_.append(LogisticRegression(C=float(self.C), max_iter=check_int(self.max_iter, "max_iter"))
                                    .fit(Z, labels))
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "models_")
        X = check_features(X, n_features=self.n_features_in_)
        Z = (X.astype(np.float64) - self.mean_) / self.scale_
        with one_blas_thread():
            return np.hstack([m.predict_proba(Z) for m in self.models_]).astype(np.float32)

    def predict(self, X) -> np.ndarray:
        """``(n, n_attrs)`` predicted values (str), one column per attribute."""
        check_is_fitted(self, "models_")
        X = check_features(X, n_features=self.n_features_in_)
        Z = (X.astype(np.float64) - self.mean_) / self.scale_
        with one_blas_thread():
            return np.stack([m.predict(Z) for m in self.models_], axis=1)


# ----------------------------------------------------------------------------- NCA
class GroupNCA(BaseEstimator, TransformerMixin):
    """NCA on the group after a PCA to ``pca_components`` (None: no PCA); deterministic per seed, on one
    BLAS thread (bit-identical whatever the thread count)."""

    def __init__(self, n_components=64, *, pca_components=256, max_iter=50, seed=0):
        self.n_components = n_components
        self.pca_components = pca_components
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, X, y=None):
        X = check_features(X)
        codes = group_labels(y, len(X))
        _need_groups(codes, "GroupNCA")
        check_int(self.n_components, "n_components")
        check_int(self.max_iter, "max_iter")
        check_int(self.pca_components, "pca_components", allow_none=True)
        Z = X.astype(np.float64)
        self.pca_ = None
        with one_blas_thread():
            if self.pca_components is not None:
                k = min(int(self.pca_components), *X.shape)
                self.pca_ = PCA(n_components=k, svd_solver="full").fit(Z)
                Z = self.pca_.transform(Z)
            self.nca_ = NeighborhoodComponentsAnalysis(n_components=min(int(self.n_components), Z.shape[1]),
                                                       max_iter=int(self.max_iter), random_state=int(self.seed))
            self.nca_.fit(Z, codes)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "nca_")
        Z = check_features(X, n_features=self.n_features_in_).astype(np.float64)
        with one_blas_thread():
            if self.pca_ is not None:
                Z = self.pca_.transform(Z)
            return self.nca_.transform(Z).astype(np.float32)


# ----------------------------------------------------------------------------- registry
def make_baseline(name: str, seed: int = 0, **params):
    """A fresh, unfitted baseline transformer by name (``params`` override its defaults)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {list(BASELINES)}")
    cls = {"pca_whiten": PCAWhitening, "lda": GroupLDA, "nca": GroupNCA, "linear_probe": LinearProbe}.get(name, MetricHead)
    known = set(cls().get_params()) - {"loss", "seed"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for baseline {name!r}; known: {sorted(known)}")
    if name == "nca":
        return GroupNCA(**{"seed": seed, **params})
    if cls is MetricHead:
        return MetricHead(**{"loss": name, "seed": seed, **params})
    return cls(**params)

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
* :class:`MetricHead` - the boosting head's architecture (one ReLU hidden layer, same width),
  trained with a metric-learning loss from pytorch-metric-learning on the group labels instead
  of per-attribute classifiers: ``loss="supcon"`` (supervised contrastive, Khosla et al. 2020) or
  ``loss="multisimilarity"`` (Wang et al. 2019). The epoch is selected on the validation split
  by MAP@R (early stopping); the test split is never seen.

The *group* is what every baseline can use from the labels; the boosting head (Task 1) instead
sees each attribute separately, which is the point of the comparison.

Determinism: the scikit-learn baselines fit and transform on one BLAS thread
(:func:`attrboost.backbones._one_thread`), so their output is bit-identical whatever the thread count
(multi-threaded OpenBLAS changes the last bits, which NCA's optimiser amplifies); :class:`MetricHead`
pins torch's threads with ``num_threads``.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.neighbors import NeighborhoodComponentsAnalysis
from sklearn.utils.validation import check_is_fitted

from .backbones import _one_thread

__all__ = ["group_labels", "PCAWhitening", "GroupLDA", "GroupNCA", "MetricHead", "METRIC_LOSSES"]

METRIC_LOSSES = ("supcon", "multisimilarity")
MULTISIMILARITY = dict(alpha=2, beta=50, base=0.5)  # the loss's published defaults


# ----------------------------------------------------------------------------- input checks
def _check_X(X, name: str = "X", n_features: int | None = None) -> np.ndarray:
    """The head's feature checks (:func:`attrboost.heads._check_X`), worded for an estimator."""
    from .heads import _check_X as check

    arr = check(X, name)
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, the estimator was fitted with {n_features}")
    return arr


def group_labels(y, n: int | None = None, name: str = "y") -> np.ndarray:
    """Integer group codes: rows with the same full attribute tuple share a code.

    ``y`` is a DataFrame / 2-D array of attributes (the group is the row tuple) or 1-D labels.
    Codes come from the metrics' own encoding (:mod:`attrboost.metrics`): raw values (1 and "1"
    differ), missing values an ordinary value, so the baselines' groups are the metrics' groups.
    """
    from .metrics import _encode_attrs, _groups

    if y is None:
        raise ValueError(f"{name} (the attribute labels) is required")
    if n is not None and len(y) != n:
        raise ValueError(f"{name} has {len(y)} rows, X has {n}")
    return _groups(_encode_attrs(y, len(y), name)).astype(np.int64)


def _quiet_map_at_r(emb: np.ndarray, codes: np.ndarray) -> float:
    """MAP@R for model selection; all-zero rows (early ReLU embeddings) are scored as documented, silently."""
    from .metrics import map_at_r

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(map_at_r(emb, codes))


def _need_groups(codes: np.ndarray, who: str, minimum: int = 2) -> int:
    k = len(np.unique(codes))
    if k < minimum:
        raise ValueError(f"{who} needs labels of at least {minimum} different groups, got {k}")
    return k


# ----------------------------------------------------------------------------- PCA whitening
class PCAWhitening(BaseEstimator, TransformerMixin):
    """Unsupervised PCA whitening; ``n_components`` None keeps ``min(n_samples, n_features)``."""

    def __init__(self, n_components=None):
        self.n_components = n_components

    def fit(self, X, y=None):
        X = _check_X(X)
        k = self.n_components
        if k is not None and (not isinstance(k, (int, np.integer)) or k < 1):
            raise ValueError(f"n_components must be None or a positive integer, got {k!r}")
        k = min(int(k or min(X.shape)), *X.shape)
        with _one_thread():
            self.pca_ = PCA(n_components=k, whiten=True, svd_solver="full").fit(X.astype(np.float64))
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "pca_")
        X = _check_X(X, n_features=self.n_features_in_)
        with _one_thread():
            return self.pca_.transform(X.astype(np.float64)).astype(np.float32)


# ----------------------------------------------------------------------------- LDA
class GroupLDA(BaseEstimator, TransformerMixin):
    """Fisher LDA on the group; ``n_components`` None = ``n_groups - 1`` (capped by the width)."""

    def __init__(self, n_components=None, shrinkage="auto"):
        self.n_components = n_components
        self.shrinkage = shrinkage

    def fit(self, X, y=None):
        X = _check_X(X)
        codes = group_labels(y, len(X))
        k = _need_groups(codes, "GroupLDA")
        n_comp = min(k - 1, X.shape[1]) if self.n_components is None else self.n_components
        if not isinstance(n_comp, (int, np.integer)) or not 1 <= n_comp <= min(k - 1, X.shape[1]):
            raise ValueError(f"n_components must be between 1 and min(n_groups - 1, n_features) = "
                             f"{min(k - 1, X.shape[1])}, got {self.n_components!r}")
        self.lda_ = LinearDiscriminantAnalysis(solver="eigen", shrinkage=self.shrinkage, n_components=int(n_comp))
        with _one_thread():
            self.lda_.fit(X.astype(np.float64), codes)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "lda_")
        X = _check_X(X, n_features=self.n_features_in_)
        with _one_thread():
            return self.lda_.transform(X.astype(np.float64)).astype(np.float32)


# ----------------------------------------------------------------------------- NCA
class GroupNCA(BaseEstimator, TransformerMixin):
    """NCA on the group after a PCA to ``pca_components`` (None: no PCA); deterministic per seed, on one
    BLAS thread (bit-identical whatever the thread count)."""

    def __init__(self, n_components=64, pca_components=256, max_iter=50, seed=0):
        self.n_components = n_components
        self.pca_components = pca_components
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, X, y=None):
        X = _check_X(X)
        codes = group_labels(y, len(X))
        _need_groups(codes, "GroupNCA")
        for name in ("n_components", "max_iter"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        v = self.pca_components
        if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"pca_components must be None or a positive integer, got {v!r}")
        Z = X.astype(np.float64)
        self.pca_ = None
        with _one_thread():
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
        Z = _check_X(X, n_features=self.n_features_in_).astype(np.float64)
        with _one_thread():
            if self.pca_ is not None:
                Z = self.pca_.transform(Z)
            return self.nca_.transform(Z).astype(np.float32)


# ----------------------------------------------------------------------------- metric-learning head
class MetricHead(BaseEstimator, TransformerMixin):
    """The boosting head's hidden layer trained with a pytorch-metric-learning loss on the group.

    Parameters: ``loss`` ("supcon" | "multisimilarity"), ``hidden_dim`` (None: input width),
    ``lr``, ``weight_decay`` (Adam), ``batch_size`` (random batches; larger than the head's 32 so a
    batch holds positive pairs), ``max_epochs``, ``patience`` (epochs without a better validation
    MAP@R), ``temperature`` (SupCon), ``seed``, ``num_threads`` (torch threads during fit/transform).

    ``fit(X, y, X_val=None, y_val=None)``: with a validation split the epoch with the best
    validation MAP@R (group relevance, cosine) is kept; without, the last epoch.
    Attributes: ``history_`` (epoch, train_loss, val_map@r, seconds, selected), ``best_epoch_``,
    ``model_``.
    """

    def __init__(self, loss="supcon", hidden_dim=None, lr=1e-3, weight_decay=1e-5, batch_size=256,
                 max_epochs=100, patience=10, temperature=0.1, seed=0, num_threads=1):
        self.loss = loss
        self.hidden_dim = hidden_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.temperature = temperature
        self.seed = seed
        self.num_threads = num_threads

    def _make_loss(self):
        from pytorch_metric_learning import losses

        if self.loss == "supcon":
            return losses.SupConLoss(temperature=float(self.temperature))
        return losses.MultiSimilarityLoss(**MULTISIMILARITY)

    def _check_params(self):
        if self.loss not in METRIC_LOSSES:
            raise ValueError(f"loss must be one of {METRIC_LOSSES}, got {self.loss!r}")
        for name in ("batch_size", "max_epochs"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {v!r}")
        if self.hidden_dim is not None and (not isinstance(self.hidden_dim, (int, np.integer)) or self.hidden_dim < 1):
            raise ValueError(f"hidden_dim must be None or a positive integer, got {self.hidden_dim!r}")
        if self.patience is not None and (not isinstance(self.patience, (int, np.integer)) or self.patience < 1):
            raise ValueError(f"patience must be None or a positive integer, got {self.patience!r}")
        for name, positive in (("lr", True), ("weight_decay", False), ("temperature", True)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)
            if not ok or v < 0 or (positive and v == 0):
                kind = "a positive" if positive else "a non-negative"
                raise ValueError(f"{name} must be {kind} number, got {v!r}")

    def fit(self, X, y=None, X_val=None, y_val=None):
        import torch
        from torch import nn

        from .heads import _deterministic, _threads

        self._check_params()
        self.__dict__.pop("model_", None)
        X = _check_X(X)
        codes = group_labels(y, len(X))
        _need_groups(codes, "MetricHead")
        has_val = X_val is not None
        if has_val:
            X_val = _check_X(X_val, "X_val", X.shape[1])
            val_codes = group_labels(y_val, len(X_val), "y_val")
        n, d = X.shape
        self.hidden_dim_ = int(self.hidden_dim or d)
        loss_fn = self._make_loss()
        rows, best_state, best_score, best_epoch, bad = [], None, -np.inf, 0, 0
        with _threads(self.num_threads), _deterministic(int(self.seed)):
            net = nn.Sequential(nn.Linear(d, self.hidden_dim_), nn.ReLU())
            nn.init.kaiming_uniform_(net[0].weight)
            nn.init.constant_(net[0].bias, 0.01)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            gen = torch.Generator().manual_seed(int(self.seed))
            Xt, Yt = torch.as_tensor(X), torch.as_tensor(codes)
            Xv = torch.as_tensor(X_val) if has_val else None
            for epoch in range(1, self.max_epochs + 1):
                t0 = time.perf_counter()
                net.train()
                perm = torch.randperm(n, generator=gen)
                total = 0.0
                for s in range(0, n, self.batch_size):
                    idx = perm[s: s + self.batch_size]
                    if len(idx) < 2:
                        continue
                    loss = loss_fn(net(Xt[idx]), Yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                row = {"epoch": epoch, "train_loss": total / n}
                if not np.isfinite(row["train_loss"]):
                    raise RuntimeError(f"MetricHead diverged (non-finite loss) at epoch {epoch}; lower lr")
                if has_val:
                    net.eval()
                    with torch.no_grad():
                        emb = net(Xv).numpy()
                    row["val_map@r"] = _quiet_map_at_r(emb, val_codes)
                    score = row["val_map@r"]
                else:
                    score = float(epoch)
                if best_state is None or score > best_score:
                    best_score, best_epoch, bad = score, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    bad += 1
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
                if has_val and self.patience is not None and bad >= self.patience:
                    break
            net.load_state_dict(best_state)
            net.eval()
        hist = pd.DataFrame(rows)
        hist["selected"] = hist["epoch"] == best_epoch
        self.history_, self.best_epoch_, self.model_ = hist, int(best_epoch), net
        self.n_features_in_ = d
        return self

    def transform(self, X):
        import torch

        from .heads import _threads

        check_is_fitted(self, "model_")
        X = _check_X(X, n_features=self.n_features_in_)
        with _threads(self.num_threads), torch.no_grad():
            return self.model_(torch.as_tensor(X)).numpy().astype(np.float32)

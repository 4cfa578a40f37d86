"""The metric-learning head: the boosting head's hidden layer trained with a metric-learning loss on the group.

:class:`MetricHead` has the boosting head's architecture (``Linear(d, hidden_dim)`` + ReLU, ``hidden_dim = d``
by default) but no classifiers: it is trained with a pytorch-metric-learning loss on the *group* (rows with the
same full attribute tuple share a label, :func:`group_labels`): ``loss="supcon"`` (supervised contrastive,
Khosla et al. 2020) or ``loss="multisimilarity"`` (Wang et al. 2019). Model selection is the study's one rule
(validation MAP@R, :data:`attrboost.training.PATIENCE`, :data:`~attrboost.training.MAX_EPOCHS`).

It lives in the core because both wings use it: the study compares it with the boosting head
(:mod:`attrboost.study.baselines` re-exports it), and ``attrboost fit --objective supcon`` trains it
(:mod:`attrboost.objectives`). Training needs the package ``pytorch-metric-learning``; loading a saved head and
:meth:`MetricHead.transform` do not.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .cache import atomic_write, write_json
from .checks import check_features, check_int
from .manifest import FORMAT, BundleError, read_manifest, write_manifest
from .metrics import encode_attributes, group_codes, map_at_r_quiet
from .training import MAX_EPOCHS, PATIENCE

__all__ = ["MetricHead", "group_labels", "METRIC_LOSSES", "METRIC_SELECTIONS", "MULTISIMILARITY"]

METRIC_LOSSES = ("supcon", "multisimilarity")
METRIC_SELECTIONS = ("val_map@r", "val_loss", "last")
MULTISIMILARITY = dict(alpha=2, beta=50, base=0.5)  # the loss's published defaults


# ----------------------------------------------------------------------------- labels
def group_labels(y, n: int | None = None, name: str = "y") -> np.ndarray:
    """Integer group codes: rows with the same full attribute tuple share a code.

    ``y`` is a DataFrame / 2-D array of attributes (the group is the row tuple) or 1-D labels.
    Codes come from the metrics' own encoding (:mod:`attrboost.metrics`): raw values (1 and "1"
    differ), missing values an ordinary value, so the baselines' groups are the metrics' groups.
    """
    if y is None:
        raise ValueError(f"{name} (the attribute labels) is required")
    if n is not None and len(y) != n:
        raise ValueError(f"{name} has {len(y)} rows, X has {n}")
    return group_codes(encode_attributes(y, len(y), name)).astype(np.int64)


def _need_groups(codes: np.ndarray, who: str, minimum: int = 2) -> int:
    k = len(np.unique(codes))
    if k < minimum:
        raise ValueError(f"{who} needs labels of at least {minimum} different groups, got {k}")
    return k


# ----------------------------------------------------------------------------- the estimator
class MetricHead(BaseEstimator, TransformerMixin):
    """The boosting head's hidden layer trained with a pytorch-metric-learning loss on the group.

    Parameters (keyword-only after ``loss``): ``loss`` ("supcon" | "multisimilarity"), ``hidden_dim`` (None: input
    width),
    ``lr``, ``weight_decay`` (Adam), ``batch_size`` (random batches; larger than the head's 32 so a
    batch holds positive pairs), ``max_epochs``, ``selection`` ("val_map@r": the study's rule; "val_loss":
    the metric loss on the whole validation part, lowest kept; "last"), ``patience`` (epochs without a
    better validation score), ``temperature`` (SupCon), ``seed``, ``num_threads`` (torch threads during
    fit/transform), ``device``.

    ``fit(X, y, X_val=None, y_val=None)``: with a validation split the epoch with the best
    validation MAP@R (group relevance, cosine) is kept, with the boosting head's patience and epoch cap
    (the study's one rule: :data:`attrboost.training.PATIENCE`, :data:`~attrboost.training.MAX_EPOCHS`);
    without, the last epoch. ``device``: the torch
    device it trains and transforms on ("cpu", "cuda", ...); results differ in the last bits between devices.
    Attributes: ``history_`` (epoch, train_loss, val_map@r, seconds, selected), ``best_epoch_``, ``n_epochs_``,
    ``stop_reason_``, ``model_``. It saves and loads itself like :class:`~attrboost.heads.BoostHead`
    (:meth:`save` / :meth:`load`; :meth:`write_files` / :meth:`read_files` inside a model bundle).
    """

    def __init__(self, loss="supcon", *, hidden_dim=None, lr=1e-3, weight_decay=1e-5, batch_size=256,
                 max_epochs=MAX_EPOCHS, selection="val_map@r", patience=PATIENCE, temperature=0.1, seed=0,
                 num_threads=1, device="cpu"):
        self.loss = loss
        self.hidden_dim = hidden_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.selection = selection
        self.patience = patience
        self.temperature = temperature
        self.seed = seed
        self.num_threads = num_threads
        self.device = device

    def _make_loss(self):
        from pytorch_metric_learning import losses

        if self.loss == "supcon":
            return losses.SupConLoss(temperature=float(self.temperature))
        return losses.MultiSimilarityLoss(**MULTISIMILARITY)

    def _check_params(self):
        if self.loss not in METRIC_LOSSES:
            raise ValueError(f"loss must be one of {METRIC_LOSSES}, got {self.loss!r}")
        if not (callable(self.selection) or self.selection in METRIC_SELECTIONS):
            raise ValueError(f"selection must be one of {METRIC_SELECTIONS} or a callable scorer, got {self.selection!r}")
        for name in ("batch_size", "max_epochs"):
            check_int(getattr(self, name), name, min_val=2)
        for name in ("hidden_dim", "patience", "num_threads"):
            check_int(getattr(self, name), name, allow_none=True)
        for name, positive in (("lr", True), ("weight_decay", False), ("temperature", True)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)
            if not ok or v < 0 or (positive and v == 0):
                kind = "a positive" if positive else "a non-negative"
                raise ValueError(f"{name} must be {kind} number, got {v!r}")

    def fit(self, X, y=None, X_val=None, y_val=None):
        import torch
        from torch import nn

        from .training import deterministic, fit_epochs, torch_threads

        self._check_params()
        self.__dict__.pop("model_", None)
        X = check_features(X)
        codes = group_labels(y, len(X))
        _need_groups(codes, "MetricHead")
        if X_val is not None:
            X_val = check_features(X_val, "X_val", X.shape[1])
            if not callable(self.selection):
                val_codes = group_labels(y_val, len(X_val), "y_val")
        n, d = X.shape
        self.hidden_dim_ = int(self.hidden_dim or d)
        loss_fn = self._make_loss()
        dev = torch.device(self.device)
        with torch_threads(self.num_threads), deterministic(int(self.seed)):
            net = nn.Sequential(nn.Linear(d, self.hidden_dim_), nn.ReLU())
            nn.init.kaiming_uniform_(net[0].weight)  # on the CPU, then moved: the same initial weights anywhere
            nn.init.constant_(net[0].bias, 0.01)
            net.to(dev)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            Xt, Yt = torch.as_tensor(X, device=dev), torch.as_tensor(codes, device=dev)
            Xv = None if X_val is None else torch.as_tensor(X_val, device=dev)

            def train_epoch(perm):
                total = 0.0
                for s in range(0, n, self.batch_size):
                    idx = perm[s: s + self.batch_size].to(dev)
                    if len(idx) < 2:  # a metric loss needs pairs
                        continue
                    loss = loss_fn(net(Xt[idx]), Yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                return {"train_loss": total / n}

            def score_epoch(epoch):
                if Xv is None:
                    return {}, None  # keep the last epoch
                net.eval()
                if callable(self.selection):  # scorer(embedding_val, y_val, tags_val), as BoostHead's
                    with torch.no_grad():
                        Zv = net(Xv)
                    score = float(self.selection(Zv.cpu().numpy(), y_val, None))
                    if not np.isfinite(score):
                        raise ValueError(f"selection scorer returned a non-finite score {score!r} at epoch {epoch}")
                    return {"val_score": score}, score
                with torch.no_grad():
                    Zv = net(Xv)
                    row = {"val_map@r": map_at_r_quiet(Zv.cpu().numpy(), val_codes),
                           "val_loss": float(loss_fn(Zv, torch.as_tensor(val_codes, device=dev)))}
                score = {"val_map@r": row["val_map@r"], "val_loss": -row["val_loss"], "last": None}[self.selection]
                return row, score

            log = fit_epochs(net, train_epoch, score_epoch, n=n, seed=self.seed, max_epochs=self.max_epochs,
                             patience=self.patience, name="MetricHead")
        self.history_, self.best_epoch_, self.model_ = log.history, log.best_epoch, net
        self.n_epochs_, self.stop_reason_ = len(log.history), log.stop_reason
        self.n_features_in_ = d
        return self

    def transform(self, X):
        import torch

        from .training import torch_threads

        check_is_fitted(self, "model_")
        X = check_features(X, n_features=self.n_features_in_)
        with torch_threads(self.num_threads), torch.no_grad():
            return self.model_(torch.as_tensor(X, device=torch.device(self.device))).cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ persistence
    WEIGHTS_FILE = "metric_head.safetensors"
    CONFIG_FILE = "metric_head.json"

    def config(self) -> dict:
        """What :meth:`read_files` needs besides the weights: parameters, widths, best epoch, epochs run and
        stop reason (JSON-serialisable)."""
        check_is_fitted(self, "model_")
        return {"params": self.get_params(), "n_features_in": int(self.n_features_in_),
                "hidden_dim": int(self.hidden_dim_), "best_epoch": int(self.best_epoch_),
                "n_epochs": int(getattr(self, "n_epochs_", len(self.history_))),
                "stop_reason": getattr(self, "stop_reason_", None)}

    def write_files(self, directory: str | os.PathLike) -> list[str]:
        """Write the weights (safetensors: no pickle) and :meth:`config` (JSON) into ``directory``, each file
        atomically; returns their names (for a manifest)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.model_.state_dict().items()}
        config = self.config()
        atomic_write(directory / self.WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}))
        write_json(directory / self.CONFIG_FILE, config)
        return [self.WEIGHTS_FILE, self.CONFIG_FILE]

    @classmethod
    def read_files(cls, directory: str | os.PathLike, *, device: str = "cpu") -> "MetricHead":
        """The head written by :meth:`write_files` (no manifest check: see :meth:`load`)."""
        import torch
        from safetensors.torch import load_file
        from torch import nn

        directory = Path(directory)
        cfg = json.loads((directory / cls.CONFIG_FILE).read_text(encoding="utf-8"))
        head = cls(**dict(cfg["params"], device=device))
        head.n_features_in_, head.hidden_dim_ = int(cfg["n_features_in"]), int(cfg["hidden_dim"])
        head.best_epoch_, head.n_epochs_, head.stop_reason_ = cfg["best_epoch"], cfg["n_epochs"], cfg["stop_reason"]
        net = nn.Sequential(nn.Linear(head.n_features_in_, head.hidden_dim_), nn.ReLU())
        state = load_file(str(directory / cls.WEIGHTS_FILE), device="cpu")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BundleError(f"{directory / cls.WEIGHTS_FILE}: weights do not fit the head described in "
                              f"{cls.CONFIG_FILE} ({exc})") from None
        head.model_ = net.to(torch.device(device)).eval()
        return head

    def save(self, directory: str | os.PathLike) -> Path:
        """Save the fitted head to ``directory``: :meth:`write_files` + a manifest with checksums."""
        check_is_fitted(self, "model_")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_manifest(directory, self.write_files(directory), contents="head")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str = "cpu") -> "MetricHead":
        """A head saved by :meth:`save`, checksums verified."""
        read_manifest(directory)
        return cls.read_files(directory, device=device)

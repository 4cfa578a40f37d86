"""The boosting head: a shallow multi-task network whose hidden layer is the boosted embedding.

:class:`BoostHead` is a scikit-learn-style transformer with torch inside::

    head = BoostHead(task="task1").fit(X_train, y_train, X_val=X_val, y_val=y_val)
    Z = head.transform(X_test)            # hidden-layer ReLU activations, float32

Architecture (see docs/protocol.md, "The three heads")
------------------------------------------------------
* ``hidden``: ``Linear(d, hidden_dim)`` + ReLU, ``hidden_dim = d`` by default. Its activations are
  the boosted embedding returned by :meth:`BoostHead.transform`.
* Task 1 (``"task1"``): one softmax classifier (``Linear(hidden_dim, n_classes)``) per attribute,
  stored as one stacked Linear whose output is split per attribute (mathematically identical to
  separate layers, one matmul instead of seven). Loss: the per-attribute cross-entropies
  **averaged** over attributes (equal weights).
* Task 2 (``"task2"``): a GRU decoder (hidden ``gru_hidden`` = 512) generating the tag sequence
  with teacher forcing. Its initial state is ``tanh(Linear(embedding))``; inputs are
  ``[BOS, t1..tn]``, targets ``[t1..tn, EOS]``, padded with PAD; sequences are cut to
  ``max_tag_len`` tokens. Token embedding width :data:`TOKEN_DIM`. The vocabulary
  (:attr:`BoostHead.vocab_`) is built from the *training* tags only, sorted; validation tokens
  outside it are dropped. Loss: token cross-entropy averaged over non-PAD target tokens. The
  sequences are packed, so neither the GRU nor the output projection computes padded positions,
  and the decoder's matmuls can run in bfloat16 (``decoder_dtype``, opt-in; everything else float32).
* Task 3 (``"task3"``): both; loss = ``(1 - tag_weight) * Task 1 loss + tag_weight * Task 2 loss``.
  ``tag_weight=0.5`` (default): the tags are half of the loss (our reconstruction: the original repository
  has no tag-training code). ``tag_weight=1/8`` is what averaging the loss over 8 outputs (7 attribute
  classifiers + the decoder), as the original's training loop does for its heads, would give.

Training: Kaiming-uniform weights (``nn.init.kaiming_uniform_`` defaults) and bias 0.01 for every
Linear layer (the GRU and the token embedding keep PyTorch's default init); Adam(lr=1e-3,
weight_decay=1e-5); batch 32 from an in-memory seeded permutation (no DataLoader); at most
``max_epochs`` = 200 epochs. ``stop_loss`` (default None: off) stops training once the epoch's training
loss (mean of the batch losses weighted by batch size) falls below it (the original's rule was 0.001;
"train to the stop rule" in notebook 06's selection-sensitivity table uses 0.002). The epoch loop (shuffle, train, score, keep the best
weights, stop) is :func:`attrboost.training.fit_epochs`, shared with :class:`~attrboost.metric_head.MetricHead`.

Model selection (``selection``) uses the validation split only -- never pass the test set:

* ``"val_map@r"`` (default, the study's one rule for every method that yields an embedding, the
  baselines included): after each epoch the embedding of ``X_val`` is scored by MAP@R with relevance =
  same attribute tuple of ``y_val`` (every validation row, also rows whose attribute values the
  classifiers never saw); the epoch with the best score is kept and training stops after ``patience``
  (10, :data:`attrboost.training.PATIENCE`) epochs without a better one, at most ``max_epochs`` (200).
  Needs ``y_val`` for every task (Task 2 too: the attributes define relevance).
* ``"val_loss"``: after each epoch the loss above is computed on ``(X_val, y_val, tags_val)``; the
  weights of the epoch with the lowest validation loss are kept, and training stops early after
  ``patience`` epochs without improvement (``patience=None``: never). As a default (with patience 5) it selected very early epochs and
  under-trained the head (docs/protocol.md, "Model selection").
* ``"last"``: no validation needed; train to the stop rule / ``max_epochs``, keep the last epoch.
  Validation data, if given, is only recorded in ``history_``.
* a callable ``scorer(embedding_val, y_val, tags_val) -> float`` (higher is better), called after
  each epoch with ``transform(X_val)`` and ``y_val`` / ``tags_val`` exactly as passed to ``fit``
  (e.g. a retrieval metric on the validation split); best epoch kept, same ``patience`` rule.

Validation rows whose attribute value does not occur in the training labels (``split="by_group"``
holds out whole groups) cannot be scored by the classifiers: they are left out of the validation loss
and accuracies (``n_val_loss_rows_``), never out of the retrieval score.

Determinism: the whole fit runs under ``torch.random.fork_rng`` seeded with ``seed`` (the global
RNG is left untouched; :func:`attrboost.training.deterministic`) with ``torch.use_deterministic_algorithms(True)``; the same seed, data and
thread count give bit-identical :meth:`transform` output. Results can differ across thread counts
(``torch.get_num_threads()``) and devices.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch.nn import functional as F

from .cache import atomic_write, write_json
from .checks import check_features, check_int
from .headnet import (BOS, EOS, PAD, TOKEN_DIM, HeadNet, Split, as_label_frame, check_len,
                      check_tags)
from .manifest import FORMAT, BundleError, read_manifest, write_manifest
from .metrics import encode_attributes, group_codes, map_at_r_quiet
from .training import MAX_EPOCHS, PATIENCE, EpochLog, deterministic, fit_epochs, torch_threads

TASKS = ("task1", "task2", "task3")
SELECTIONS = ("val_map@r", "val_loss", "last")
DECODER_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
_EVAL_BATCH = 1024

__all__ = ["BoostHead", "TASKS", "SELECTIONS", "TOKEN_DIM"]


# ----------------------------------------------------------------------------- the estimator
class BoostHead(BaseEstimator, TransformerMixin):
    """Shallow multi-task head whose hidden-layer activations are the boosted embedding.

    Every parameter but ``task`` is keyword-only, as in scikit-learn.

    Parameters
    ----------
    task : {"task1", "task2", "task3"}
        "task1": attribute classifiers; "task2": GRU tag decoder; "task3": both (losses summed).
    hidden_dim : int or None
        Width of the hidden layer (the embedding); None = input width.
    lr, weight_decay : float
        Adam settings.
    batch_size : int
        Training batch size.
    max_epochs : int
        Upper bound on training epochs.
    stop_loss : float or None
        Stop once the epoch's mean training loss falls below this value (None: never).
    selection : "val_map@r", "val_loss", "last" or callable
        How the returned epoch is chosen, on the validation split only (see module docstring).
        A callable is ``scorer(embedding_val, y_val, tags_val) -> float``, higher is better.
    patience : int or None
        Early stop after this many epochs without improvement of the selection criterion.
    tag_weight : float in [0, 1]
        Task 3 only: the tag decoder's share of the loss (see module docstring).

    Every default is the study's setting (``docs/protocol.md``); the notebooks' parameter cells use
    these values (:mod:`attrboost.study.params` reads them from here).
    gru_hidden : int
        GRU hidden size (Tasks 2/3).
    max_tag_len : int
        Tag sequences are cut to this many tokens (before EOS).
    decoder_dtype : {"bfloat16", "float32"}
        Training precision of the tag decoder's matmuls (Tasks 2/3: initial state, GRU, output
        projection) under ``torch.autocast``; the hidden layer (the embedding), the attribute
        classifiers, the weights, the optimiser and :meth:`transform` stay float32. Default
        "float32": portable and bit-reproducible on any CPU. "bfloat16" (opt-in) made a Task 2/3 fit
        ~1.7x faster on a CPU with AVX-512 BF16 (3 seeds on the synthetic catalogue: paired
        differences -0.17 to -0.02 points, every 95 % CI including 0, Task 3 lower in all 3 seeds);
        on CPUs without native bfloat16 it is not expected to help, and its results depend on the
        CPU's bfloat16 kernels.
    seed : int
        Seed for initialisation and batch order.
    device : str
        torch device ("cpu", "cuda", ...).
    progress : bool
        Show a tqdm bar over epochs.
    num_threads : int or None
        torch CPU threads used inside ``fit``/``transform`` (restored afterwards); None leaves
        torch's setting alone. Default 1: batch-32 steps gain little from a second core and
        slow down badly when the cores are shared; results are bit-identical only for equal
        thread counts.

    Attributes
    ----------
    history_ : DataFrame, one row per epoch: epoch (1-based), train_loss (+ train_attr_loss /
        train_tag_loss), val_loss (+ val_attr_loss / val_tag_loss, NaN without validation labels),
        val_acc_<attr> (Tasks 1/3), val_score (callable selection), seconds, selected (True on the
        kept epoch).
    best_epoch_ : int, the kept epoch (1-based). n_epochs_ : int, epochs run.
    stop_reason_ : "stop_loss", "patience" or "max_epochs": why training ended.
    classes_ : dict attribute -> sorted array of class names (Tasks 1/3; empty for Task 2).
    attributes_ : list of attribute names. vocab_ : list of tag words (Tasks 2/3; specials excluded,
        word ``vocab_[i]`` has token id ``i + 3``). n_features_in_ : int. hidden_dim_ : int.
    model_ : the fitted torch module (on ``device``).
    """

    def __init__(self, task="task1", *, hidden_dim=None, lr=1e-3, weight_decay=1e-5, batch_size=32,
                 max_epochs=MAX_EPOCHS, stop_loss=None, selection="val_map@r", patience=PATIENCE, tag_weight=0.5,
                 gru_hidden=512, max_tag_len=12, decoder_dtype="float32", seed=0, device="cpu", progress=False,
                 num_threads=1):
        self.task = task
        self.hidden_dim = hidden_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.stop_loss = stop_loss
        self.selection = selection
        self.patience = patience
        self.tag_weight = tag_weight
        self.gru_hidden = gru_hidden
        self.max_tag_len = max_tag_len
        self.decoder_dtype = decoder_dtype
        self.seed = seed
        self.device = device
        self.progress = progress
        self.num_threads = num_threads

    # ------------------------------------------------------------------ helpers
    @property
    def _uses_attrs(self) -> bool:
        return self.task in ("task1", "task3")

    @property
    def _uses_tags(self) -> bool:
        return self.task in ("task2", "task3")

    def _check_params(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not (callable(self.selection) or self.selection in SELECTIONS):
            raise ValueError(f"selection must be one of {SELECTIONS} or a callable scorer, got {self.selection!r}")
        if self.decoder_dtype not in DECODER_DTYPES:
            raise ValueError(f"decoder_dtype must be one of {list(DECODER_DTYPES)}, got {self.decoder_dtype!r}")
        for name in ("batch_size", "max_epochs", "gru_hidden", "max_tag_len"):
            check_int(getattr(self, name), name)
        for name in ("hidden_dim", "num_threads", "patience"):
            check_int(getattr(self, name), name, allow_none=True)
        for name in ("lr", "weight_decay", "stop_loss"):
            val = getattr(self, name)
            if val is None and name == "stop_loss":
                continue
            if not np.isfinite(val) or val < 0:
                raise ValueError(f"{name} must be a non-negative number, got {val!r}")
        if not (0 <= self.tag_weight <= 1):
            raise ValueError(f"tag_weight must be a number in [0, 1], got {self.tag_weight!r}")

    def _encode_attrs(self, frame: pd.DataFrame, name: str) -> np.ndarray:
        codes = np.empty(frame.shape, dtype=np.int64)
        for j, attr in enumerate(self.attributes_):
            cls = self.classes_[attr]
            vals = frame[attr].to_numpy()
            idx = np.clip(np.searchsorted(cls, vals), 0, len(cls) - 1)
            bad = cls[idx] != vals
            if bad.any():
                raise ValueError(f"{name} has label {vals[bad][0]!r} for attribute {attr!r}, "
                                 f"which does not occur in the training labels y")
            codes[:, j] = idx
        return codes

    def _encode_tags(self, tags: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Teacher-forcing arrays (tokens_in, tokens_out) of shape (n, L) and lengths (n,)."""
        ids = [[self._word_index[t] + 3 for t in toks if t in self._word_index][: self.max_tag_len]
               for toks in tags]
        lengths = np.array([len(s) + 1 for s in ids], dtype=np.int64)  # + BOS / EOS
        L = int(lengths.max())
        tin = np.full((len(ids), L), PAD, dtype=np.int64)
        tout = np.full((len(ids), L), PAD, dtype=np.int64)
        for i, s in enumerate(ids):
            tin[i, : len(s) + 1] = [BOS] + s
            tout[i, : len(s) + 1] = s + [EOS]
        return tin, tout, lengths

    def _losses(self, net: HeadNet, xb, yb, tin, tout, lengths, reduction: str = "mean"):
        """(total, attr_loss, tag_loss, attr_logits); the attribute term is computed iff ``yb`` is
        given, the tag term iff ``tin`` is given. With reduction='sum': per-term sums, total None."""
        h = net.embed(xb)
        attr_loss = tag_loss = logits = None
        if yb is not None:
            logits = net.attr_logits(h)
            terms = [F.cross_entropy(lg, yb[:, j], reduction=reduction) for j, lg in enumerate(logits)]
            attr_loss = torch.stack(terms).mean() if reduction == "mean" else torch.stack(terms)
        if tin is not None:
            tag_loss = net.tag_loss(h, tin, tout, lengths, reduction, DECODER_DTYPES[self.decoder_dtype])
        if reduction != "mean":
            return None, attr_loss, tag_loss, logits
        return self._combine(attr_loss, tag_loss), attr_loss, tag_loss, logits

    def _combine(self, attr_loss, tag_loss):
        """The training loss: one term alone (Tasks 1/2), or Task 3's weighted sum."""
        if attr_loss is None or tag_loss is None:
            return attr_loss if tag_loss is None else tag_loss
        return (1 - self.tag_weight) * attr_loss + self.tag_weight * tag_loss

    @torch.no_grad()
    def _evaluate(self, net, val: "Split") -> dict:
        """Validation loss (training definition, exact over the whole set) and accuracies.

        Parts whose labels are missing (Y or tin None) are skipped; val_loss is NaN unless every
        part the task trains on is available.
        """
        net.eval()
        X, Y, tin, tout, lengths = val.X, val.Y, val.tin, val.tout, val.lengths
        n = X.shape[0]
        attr_sum = torch.zeros(len(self.attributes_), dtype=torch.float64)
        correct = torch.zeros(len(self.attributes_), dtype=torch.float64)
        tag_sum, n_tok = 0.0, 0
        for s in range(0, n, _EVAL_BATCH):
            sl = slice(s, s + _EVAL_BATCH)
            tb_in = tb_out = lb = None
            if tin is not None:
                lb = lengths[sl]
                tb_in, tb_out = tin[sl, : int(lb.max())], tout[sl, : int(lb.max())]
                n_tok += int(lb.sum())
            _, a, t, logits = self._losses(net, X[sl], None if Y is None else Y[sl], tb_in, tb_out, lb,
                                           reduction="sum")
            if a is not None:
                attr_sum += a.double().cpu()
                correct += torch.stack([(lg.argmax(1) == Y[sl, j]).sum()
                                        for j, lg in enumerate(logits)]).double().cpu()
            if t is not None:
                tag_sum += float(t)
        net.train()
        out, attr_total, tag_total = {}, None, None
        if self._uses_attrs:
            out["val_attr_loss"] = attr_total = float((attr_sum / n).mean()) if Y is not None and n else np.nan
            for j, attr in enumerate(self.attributes_):
                out[f"val_acc_{attr}"] = float(correct[j] / n) if Y is not None and n else np.nan
        if self._uses_tags:
            out["val_tag_loss"] = tag_total = tag_sum / n_tok if tin is not None and n_tok else np.nan
        total = self._combine(attr_total, tag_total)
        if self.task == "task3":
            out["val_loss"] = total
        else:
            out = {"val_loss": total, **{k: v for k, v in out.items() if not k.endswith("_loss")}}
        return out

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, tags=None, X_val=None, y_val=None, tags_val=None) -> "BoostHead":
        """Train the head; select the epoch on the validation split (see ``selection``).

        X: (n, d) features; y: (n, n_attrs) labels (DataFrame: columns are the attribute names),
        required for task1/task3 (ignored by task2); tags: list of n token lists (words already
        normalised and filtered), required for task2/task3 (ignored by task1).
        X_val / y_val / tags_val: the validation split (never the test set).
        """
        self._check_params()
        self.__dict__.pop("model_", None)  # a failed refit must not leave a stale fitted model
        X, X_val = self._check_inputs(X, y, tags, X_val, y_val, tags_val)
        train_targets = self._learn_targets(y, tags)
        val_groups = None if y_val is None else group_codes(encode_attributes(y_val, len(y_val), "y_val"))
        self._check_validation(X_val, y_val, tags_val, val_groups)
        loss_rows, val_targets = self._encode_val_targets(y_val, tags_val)
        self.n_val_loss_rows_ = None if X_val is None else int(loss_rows.sum())
        if self.selection == "val_loss" and self.n_val_loss_rows_ == 0:
            raise ValueError("selection='val_loss': no validation row has attribute values seen in training "
                             "(y_val); use selection='val_map@r'")
        self.n_features_in_ = X.shape[1]
        self.hidden_dim_ = int(self.hidden_dim or X.shape[1])
        with torch_threads(self.num_threads), deterministic(int(self.seed)):
            net, opt = self._build()
            train = self._tensors(X, *train_targets)
            val = None if X_val is None else self._tensors(X_val[loss_rows], *val_targets)
            val_all = None if X_val is None else torch.as_tensor(X_val, device=torch.device(self.device))
            log = fit_epochs(net, lambda perm: self._train_epoch(net, opt, train, perm),
                             lambda epoch: self._score_epoch(net, val, val_all, val_groups, y_val, tags_val, epoch),
                             n=len(X), seed=self.seed, max_epochs=self.max_epochs, patience=self.patience,
                             stop_loss=self.stop_loss, name="BoostHead",
                             progress=f"BoostHead {self.task}" if self.progress else None)
        self._record(log, net)
        return self

    def _check_inputs(self, X, y, tags, X_val, y_val, tags_val):
        """Checked (X, X_val): finite 2-D features of one width, labels of matching lengths."""
        X = check_features(X, "X")
        check_len(len(X), y, "y", "X")
        check_len(len(X), tags, "tags", "X")
        if X_val is not None:
            X_val = check_features(X_val, "X_val", X.shape[1])
            check_len(len(X_val), y_val, "y_val", "X_val")
            check_len(len(X_val), tags_val, "tags_val", "X_val")
        elif y_val is not None or tags_val is not None:
            raise ValueError("y_val / tags_val were given without X_val")
        return X, X_val

    def _learn_targets(self, y, tags):
        """Learn ``attributes_``/``classes_`` (Tasks 1/3) and ``vocab_`` (Tasks 2/3) from the training
        labels; return them encoded: (attribute codes or None, teacher-forcing arrays or None)."""
        self.attributes_, self.classes_ = [], {}
        self.vocab_, self._word_index = [], {}
        Y = tokens = None
        if self._uses_attrs:
            if y is None:
                raise ValueError(f"y (attribute labels) is required for task={self.task!r}")
            frame = as_label_frame(y, "y")
            self.attributes_ = list(frame.columns)
            for attr in self.attributes_:
                cls = np.unique(frame[attr].to_numpy().astype(str))
                if len(cls) < 2:
                    raise ValueError(f"y: attribute {attr!r} has a single class ({cls[0]!r}) in the training "
                                     f"labels; a classifier needs at least 2 (drop the attribute)")
                self.classes_[attr] = cls
            Y = self._encode_attrs(frame, "y")
        if self._uses_tags:
            if tags is None:
                raise ValueError(f"tags (token lists) are required for task={self.task!r}")
            tags = check_tags(tags, "tags")
            self.vocab_ = sorted({t for toks in tags for t in toks})
            if not self.vocab_:
                raise ValueError("tags: the training tags are all empty, so the tag vocabulary is empty")
            self._word_index = {w: i for i, w in enumerate(self.vocab_)}
            tokens = self._encode_tags(tags)
        return Y, tokens

    def _check_validation(self, X_val, y_val, tags_val, val_groups) -> None:
        """The validation data that ``selection`` needs is there (``val_groups``: y_val's group codes)."""
        if self.selection != "last" and X_val is None:
            raise ValueError(f"selection={self.selection!r} needs a validation split: pass X_val "
                             f"(and y_val / tags_val), or use selection='last'")
        if self.selection == "val_map@r" and y_val is None:
            raise ValueError("selection='val_map@r' needs y_val (the validation attributes define which items are "
                             "relevant to each other), also for task2")
        if self.selection == "val_map@r":
            if not (np.bincount(val_groups) > 1).any():
                raise ValueError("selection='val_map@r': no two validation items share their attributes (y_val), "
                                 "so the retrieval score is undefined; draw the validation part per group "
                                 "(at least 2 items of a group) or use selection='val_loss'")
        if self.selection == "val_loss":
            parts = (("y_val", self._uses_attrs, y_val), ("tags_val", self._uses_tags, tags_val))
            need = [p for p, used, given in parts if used and given is None]
            if need:
                raise ValueError(f"selection='val_loss' with task={self.task!r} requires {' and '.join(need)}")

    def _encode_val_targets(self, y_val, tags_val):
        """(loss_rows, (Y, tokens)): the validation rows the loss can score (every attribute value seen in
        training; all rows for Task 2) and their labels encoded like the training ones (the parts the task
        uses and that are given)."""
        Y = tokens = None
        n = None if y_val is None else len(y_val)
        n = len(tags_val) if n is None and tags_val is not None else n
        loss_rows = np.ones(n or 0, dtype=bool)
        if self._uses_attrs and y_val is not None:
            frame = as_label_frame(y_val, "y_val", self.attributes_)
            for attr in self.attributes_:
                loss_rows &= frame[attr].isin(set(self.classes_[attr])).to_numpy()
            Y = self._encode_attrs(frame[loss_rows], "y_val")
        if self._uses_tags and tags_val is not None:
            tags_val = check_tags(tags_val, "tags_val")
            tokens = self._encode_tags([t for t, keep in zip(tags_val, loss_rows) if keep])
        return loss_rows, (Y, tokens)

    def _build(self):
        """The network (seeded initialisation) and its Adam optimiser, on ``device``."""
        dev = torch.device(self.device)
        net = HeadNet(self.n_features_in_, self.hidden_dim_, [len(self.classes_[a]) for a in self.attributes_],
                       len(self.vocab_) + 3 if self._uses_tags else 0, self.gru_hidden).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay,
                               fused=dev.type in ("cpu", "cuda"))
        return net, opt

    def _tensors(self, X, Y, tokens) -> "Split":
        dev = torch.device(self.device)
        to = lambda a: None if a is None else torch.as_tensor(a, device=dev)  # noqa: E731
        tin, tout, lengths = tokens if tokens is not None else (None, None, None)
        return Split(to(X), to(Y), to(tin), to(tout), None if lengths is None else torch.as_tensor(lengths))

    def _train_epoch(self, net, opt, train: "Split", perm: torch.Tensor) -> dict:
        """One pass over ``train`` in the order ``perm``; the epoch's losses (batch means weighted by size)."""
        n = len(perm)
        sums = {"train_loss": 0.0, "train_attr_loss": 0.0, "train_tag_loss": 0.0}
        for s in range(0, n, self.batch_size):
            idx = perm[s: s + self.batch_size]
            loss, a, t, _ = self._losses(net, *train.batch(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = len(idx)
            sums["train_loss"] += loss.item() * b
            if a is not None:
                sums["train_attr_loss"] += a.item() * b
            if t is not None:
                sums["train_tag_loss"] += t.item() * b
        if self.task == "task3":
            return {k: v / n for k, v in sums.items()}
        return {"train_loss": sums["train_loss"] / n}

    def _score_epoch(self, net, val: "Split | None", val_all, val_groups, y_val, tags_val, epoch: int) -> tuple[dict, float | None]:
        """The epoch's validation columns and selection score (None: keep the last epoch)."""
        row = {} if val is None else self._evaluate(net, val)
        if self.selection == "last":
            return row, None
        if self.selection == "val_loss":
            return row, -row["val_loss"]
        if self.selection == "val_map@r":
            score = map_at_r_quiet(self._embed_numpy(net, val_all), val_groups)
            row["val_map@r"] = score
            return row, score
        score = float(self.selection(self._embed_numpy(net, val_all), y_val, tags_val))
        row["val_score"] = score
        if not np.isfinite(score):
            raise ValueError(f"selection scorer returned a non-finite score {score!r} at epoch {epoch}")
        return row, score

    def _record(self, log: EpochLog, net) -> None:
        hist = log.history
        first = [c for c in ("epoch", "train_loss", "train_attr_loss", "train_tag_loss", "val_loss",
                             "val_attr_loss", "val_tag_loss") if c in hist.columns]
        self.history_ = hist[first + [c for c in hist.columns if c not in first]]
        self.best_epoch_ = log.best_epoch
        self.n_epochs_ = len(hist)
        self.stop_reason_ = log.stop_reason
        self.model_ = net

    @torch.no_grad()
    def _embed_numpy(self, net, Xt: torch.Tensor) -> np.ndarray:
        was_training = net.training
        net.eval()
        out = torch.cat([net.embed(Xt[s: s + _EVAL_BATCH]) for s in range(0, len(Xt), _EVAL_BATCH)])
        net.train(was_training)
        return out.cpu().numpy().astype(np.float32, copy=False)

    # ------------------------------------------------------------------ inference
    def _check_fitted(self, X) -> torch.Tensor:
        check_is_fitted(self, "model_")
        X = check_features(X, "X", self.n_features_in_)
        return torch.as_tensor(X, device=torch.device(self.device))

    def transform(self, X) -> np.ndarray:
        """Boosted embedding: hidden-layer ReLU activations, float32 array (n, hidden_dim_)."""
        Xt = self._check_fitted(X)
        with torch_threads(self.num_threads):
            return self._embed_numpy(self.model_, Xt)

    @torch.no_grad()
    def predict_attribute_proba(self, X) -> dict[str, np.ndarray]:
        """Class probabilities per attribute: dict attr -> float64 (n, len(classes_[attr])) (Tasks 1/3)."""
        Xt = self._check_fitted(X)
        if not self._uses_attrs:
            raise ValueError(f"task={self.task!r} has no attribute classifiers (use task1 or task3)")
        net = self.model_
        with torch_threads(self.num_threads):
            parts = [net.attr_logits(net.embed(Xt[s: s + _EVAL_BATCH])) for s in range(0, len(Xt), _EVAL_BATCH)]
        logits = [torch.cat(p) for p in zip(*parts)]
        return {a: torch.softmax(lg.double(), dim=1).cpu().numpy() for a, lg in zip(self.attributes_, logits)}

    def predict_attributes(self, X) -> pd.DataFrame:
        """Most probable class per attribute (Tasks 1/3), one column per attribute."""
        proba = self.predict_attribute_proba(X)
        return pd.DataFrame({a: self.classes_[a][p.argmax(1)] for a, p in proba.items()})

    @torch.no_grad()
    def predict_tags(self, X) -> list[list[str]]:
        """Greedy decoding of the tag sequence (Tasks 2/3), at most ``max_tag_len`` words each."""
        Xt = self._check_fitted(X)
        if not self._uses_tags:
            raise ValueError(f"task={self.task!r} has no tag decoder (use task2 or task3)")
        net = self.model_
        out: list[list[str]] = []
        for s in range(0, len(Xt), _EVAL_BATCH):
            h = torch.tanh(net.init_state(net.embed(Xt[s: s + _EVAL_BATCH]))).unsqueeze(0)
            tok = torch.full((h.shape[1], 1), BOS, dtype=torch.long, device=Xt.device)
            done = torch.zeros(h.shape[1], dtype=torch.bool, device=Xt.device)
            seqs = []
            for _ in range(self.max_tag_len + 1):
                o, h = net.gru(net.tok_emb(tok), h)
                logits = net.tok_out(o[:, -1])
                logits[:, [PAD, BOS]] = -torch.inf
                tok = logits.argmax(1, keepdim=True)
                seqs.append(torch.where(done, EOS, tok[:, 0]))
                done |= tok[:, 0] == EOS
                if bool(done.all()):
                    break
            ids = torch.stack(seqs, 1).cpu().numpy()
            for row in ids:
                words = []
                for i in row:
                    if i == EOS or len(words) >= self.max_tag_len:
                        break
                    words.append(self.vocab_[i - 3])
                out.append(words)
        return out

    # ------------------------------------------------------------------ persistence
    WEIGHTS_FILE = "head.safetensors"
    CONFIG_FILE = "head.json"

    def config(self) -> dict:
        """What :meth:`read_files` needs besides the weights: parameters, attribute classes, tag vocabulary,
        widths, best epoch and stop reason (JSON-serialisable)."""
        check_is_fitted(self, "model_")
        params = self.get_params()
        if callable(params["selection"]):
            params["selection"] = f"callable:{getattr(params['selection'], '__qualname__', 'scorer')}"
        return {
            "params": params, "attributes": list(self.attributes_),
            "classes": {a: [str(c) for c in self.classes_[a]] for a in self.attributes_},
            "vocab": list(self.vocab_), "n_features_in": int(self.n_features_in_), "hidden_dim": int(self.hidden_dim_),
            "best_epoch": int(self.best_epoch_), "n_epochs": int(self.n_epochs_), "stop_reason": self.stop_reason_,
        }

    def write_files(self, directory: str | os.PathLike) -> list[str]:
        """Write the weights (safetensors: no pickle) and :meth:`config` (JSON) into ``directory``, each file
        atomically; returns their names (for a manifest)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.model_.state_dict().items()}
        config = self.config()
        atomic_write(directory / self.WEIGHTS_FILE,
                     lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}))
        write_json(directory / self.CONFIG_FILE, config)
        return [self.WEIGHTS_FILE, self.CONFIG_FILE]

    @classmethod
    def read_files(cls, directory: str | os.PathLike, *, device: str = "cpu") -> "BoostHead":
        """The head written by :meth:`write_files` (no manifest check: see :meth:`load`)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg = json.loads((directory / cls.CONFIG_FILE).read_text(encoding="utf-8"))
        head = cls(**dict(cfg["params"], device=device))
        head.attributes_ = list(cfg["attributes"])
        head.classes_ = {a: np.asarray(cfg["classes"][a], dtype=str) for a in head.attributes_}
        head.vocab_ = list(cfg["vocab"])
        head._word_index = {w: i for i, w in enumerate(head.vocab_)}
        head.n_features_in_, head.hidden_dim_ = int(cfg["n_features_in"]), int(cfg["hidden_dim"])
        head.best_epoch_, head.n_epochs_, head.stop_reason_ = cfg["best_epoch"], cfg["n_epochs"], cfg["stop_reason"]
        uses_tags = head.task in ("task2", "task3")
        net = HeadNet(head.n_features_in_, head.hidden_dim_, [len(head.classes_[a]) for a in head.attributes_],
                      len(head.vocab_) + 3 if uses_tags else 0, head.gru_hidden)
        state = load_file(str(directory / cls.WEIGHTS_FILE), device="cpu")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BundleError(f"{directory / cls.WEIGHTS_FILE}: weights do not fit the head described in "
                              f"{cls.CONFIG_FILE} ({exc})") from None
        head.model_ = net.to(torch.device(device)).eval()
        return head

    def save(self, directory: str | os.PathLike) -> Path:
        """Save the fitted head to ``directory``: :meth:`write_files` + a manifest with checksums
        (:mod:`attrboost.manifest`)."""
        check_is_fitted(self, "model_")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_manifest(directory, self.write_files(directory), contents="head")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str = "cpu") -> "BoostHead":
        """A head saved by :meth:`save` (or inside a model bundle), checksums verified."""
        read_manifest(directory)
        return cls.read_files(directory, device=device)

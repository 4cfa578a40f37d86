"""The boosting head's network and its input checks (:class:`~attrboost.heads.BoostHead` trains it).

:class:`HeadNet`: ``Linear(d, hidden_dim)`` + ReLU (the boosted embedding), a stacked attribute classifier
(Task 1) and a GRU tag decoder (Task 2); Task 3 has both. :class:`Split` holds one part's tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

__all__ = ["HeadNet", "Split", "as_label_frame", "check_tags", "check_len", "PAD", "BOS", "EOS", "SPECIAL_TOKENS",
           "TOKEN_DIM"]

PAD, BOS, EOS = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
TOKEN_DIM = 256


# ----------------------------------------------------------------------------- the network
class HeadNet(nn.Module):
    """Hidden layer + optional attribute classifiers + optional GRU tag decoder."""

    def __init__(self, d: int, hidden_dim: int, n_classes: Sequence[int], vocab_size: int,
                 gru_hidden: int):
        super().__init__()
        self.hidden = nn.Linear(d, hidden_dim)
        self.n_classes = list(n_classes)
        self.attr_out = nn.Linear(hidden_dim, sum(self.n_classes)) if self.n_classes else None
        self.vocab_size = vocab_size
        if vocab_size:
            self.tok_emb = nn.Embedding(vocab_size, TOKEN_DIM, padding_idx=PAD)
            self.init_state = nn.Linear(hidden_dim, gru_hidden)
            self.gru = nn.GRU(TOKEN_DIM, gru_hidden, batch_first=True)
            self.tok_out = nn.Linear(gru_hidden, vocab_size)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight)
                nn.init.constant_(m.bias, 0.01)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.hidden(x))

    def attr_logits(self, h: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(self.attr_out(h), self.n_classes, dim=1))

    def tag_loss(self, h: torch.Tensor, tokens_in: torch.Tensor, tokens_out: torch.Tensor, lengths: torch.Tensor,
                 reduction: str = "mean", dtype: torch.dtype | None = None) -> torch.Tensor:
        """Teacher-forced token cross-entropy over the non-PAD targets.

        The sequences are packed (``pack_padded_sequence``), so the GRU runs each sequence for its
        own length only and the output projection sees non-PAD positions only: the same loss as
        unrolling every row to the batch's longest sequence, without the padded steps. ``lengths``
        (on the CPU) count BOS/EOS. ``dtype``: the decoder's matmuls (initial state, GRU, output
        projection) run under autocast in this dtype; None: float32.
        """
        with torch.autocast(h.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            h0 = torch.tanh(self.init_state(h)).unsqueeze(0)
            packed = pack_padded_sequence(self.tok_emb(tokens_in), lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.gru(packed, h0)
            logits = self.tok_out(out.data)
        target = pack_padded_sequence(tokens_out, lengths, batch_first=True, enforce_sorted=False).data
        return F.cross_entropy(logits.float(), target, reduction=reduction)


@dataclass
class Split:
    """One split as tensors: features, attribute codes (or None), teacher-forcing tokens in/out
    and sequence lengths including BOS/EOS (or None)."""

    X: torch.Tensor
    Y: torch.Tensor | None = None
    tin: torch.Tensor | None = None
    tout: torch.Tensor | None = None
    lengths: torch.Tensor | None = None  # on the CPU

    def batch(self, idx: torch.Tensor):
        """(x, y, tokens_in, tokens_out, lengths) of rows ``idx`` (``idx`` on the CPU), the tokens cut to
        the batch's longest sequence."""
        idx_d = idx.to(self.X.device)
        tin = tout = lengths = None
        if self.tin is not None:
            lengths = self.lengths[idx]
            L = int(lengths.max())
            tin, tout = self.tin[idx_d, :L], self.tout[idx_d, :L]
        return self.X[idx_d], None if self.Y is None else self.Y[idx_d], tin, tout, lengths


# ----------------------------------------------------------------------------- input checks
def as_label_frame(y, name: str, columns: list | None = None) -> pd.DataFrame:
    """Labels as a DataFrame of strings; with ``columns`` (y_val), match the training attributes."""
    if isinstance(y, pd.DataFrame):
        frame = y
    elif isinstance(y, pd.Series):
        frame = y.to_frame(name=y.name if y.name is not None else "attr_0")
    else:
        arr = np.asarray(y, dtype=object)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_attributes), got shape {arr.shape}")
        cols = columns if columns is not None and len(columns) == arr.shape[1] else \
            [f"attr_{i}" for i in range(arr.shape[1])]
        frame = pd.DataFrame(arr, columns=cols)
    if frame.shape[1] == 0:
        raise ValueError(f"{name} has no attribute columns")
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks the training attributes {missing} (has {list(frame.columns)})")
        frame = frame[list(columns)]
    for col in frame.columns:
        if frame[col].isna().any():
            raise ValueError(f"{name} has missing values in attribute {col!r}")
    return frame.astype(str).reset_index(drop=True)


def check_tags(tags, name: str) -> list[list[str]]:
    if isinstance(tags, (str, bytes)) or not hasattr(tags, "__len__"):
        raise ValueError(f"{name} must be a list of token lists, got {type(tags).__name__}")
    out = []
    for i, toks in enumerate(tags):
        if isinstance(toks, (str, bytes)) or not hasattr(toks, "__iter__"):
            raise ValueError(f"{name}[{i}] must be a list of tokens (strings), got {type(toks).__name__}")
        toks = list(toks)
        if not all(isinstance(t, str) for t in toks):
            raise ValueError(f"{name}[{i}] must contain only strings")
        out.append(toks)
    return out


def check_len(n: int, other, name: str, ref: str) -> None:
    if other is not None and len(other) != n:
        raise ValueError(f"{name} has {len(other)} samples but {ref} has {n}")

"""What a model is trained for (its *objective*), and the one model-selection rule every objective uses.

``attrboost fit --objective`` (:data:`OBJECTIVES`; default :data:`DEFAULT_OBJECTIVE`, the one place to change it):

* ``task1`` / ``task2`` / ``task3``: :class:`~attrboost.heads.BoostHead` (attribute classifiers, tag decoder, both);
* ``supcon``: :class:`~attrboost.metric_head.MetricHead` with the supervised contrastive loss on the attribute
  group (no classifiers: a model without predicted attributes);
* ``task1+supcon``: both heads fitted on the same rows, each selected on its own; the embedding is the Task 1
  embedding and the SupCon embedding, each L2-normalised, concatenated (:class:`JointHead`: width = the sum of
  the parts', the cosine of two items = the mean of the parts' cosines). Its predicted attributes are Task 1's.

Model selection (:data:`SELECTION`, the study's rule, the same for every objective and every part of one):
after each epoch the validation part's embedding is scored by MAP@R (relevance: the same full attribute tuple,
cosine); the best epoch is kept; training stops after :data:`~attrboost.training.PATIENCE` epochs without a
better score, at most :data:`~attrboost.training.MAX_EPOCHS`. :data:`SELECTION_RULE` says it in words; a model
bundle records both (``manifest.json`` and ``metrics.json``).

:func:`write_head` / :func:`read_head` put any of these heads into a bundle directory and back; a directory
without a recorded objective (bundles saved before objectives existed) holds a BoostHead.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .heads import BoostHead
from .metric_head import MetricHead

__all__ = ["OBJECTIVES", "DEFAULT_OBJECTIVE", "SELECTION", "SELECTION_RULE", "JointHead", "objective_of",
           "classifies", "objective_problems", "fit_head", "write_head", "read_head", "weights_sha256",
           "embedding_module"]

OBJECTIVES = ("task1", "task2", "task3", "supcon", "task1+supcon")
#: what ``attrboost fit`` trains unless told otherwise (the one place to change the tool's default): the winner of
#: the whole-catalogue benchmark's primary row (docs/results.md, "A catalogue labelled in part": full-group MAP@R,
#: 10,000 labelled items, minus Task 1 +1.35 [+0.73, +2.09], paired over queries of 3 seeds)
DEFAULT_OBJECTIVE = "task1+supcon"
SELECTION = "val_map@r"
SELECTION_RULE = ("validation MAP@R (relevance: the same full attribute tuple, cosine) of the validation part's "
                  "embedding after each epoch; the best epoch is kept; stop after {patience} epochs without a better "
                  "score, at most {max_epochs} epochs; task1+supcon: each part selected by this rule on its own")


class JointHead:
    """Task 1 + SupCon: two fitted heads on the same features; :meth:`transform` concatenates their embeddings,
    each L2-normalised (float64, zero rows stay zero, then float32), Task 1's first. Attribute predictions are
    Task 1's."""

    objective = "task1+supcon"

    def __init__(self, task1: BoostHead, supcon: MetricHead):
        if getattr(task1, "task", None) != "task1" or getattr(supcon, "loss", None) != "supcon":
            raise ValueError("JointHead joins a fitted BoostHead('task1') and a fitted MetricHead('supcon')")
        if task1.n_features_in_ != supcon.n_features_in_:
            raise ValueError(f"the parts were fitted on features of different widths ({task1.n_features_in_} and "
                             f"{supcon.n_features_in_})")
        self.task1, self.supcon = task1, supcon
        self.n_features_in_ = int(task1.n_features_in_)
        self.hidden_dim_ = int(task1.hidden_dim_ + supcon.hidden_dim_)
        self.attributes_, self.classes_ = task1.attributes_, task1.classes_

    @property
    def parts(self) -> dict:
        return {"task1": self.task1, "supcon": self.supcon}

    @property
    def model_(self) -> nn.Module:
        return embedding_module(self)

    def transform(self, X) -> np.ndarray:
        from .neighbours import normalise

        return np.hstack([normalise(p.transform(X).astype(np.float64), warn=False)
                          for p in (self.task1, self.supcon)]).astype(np.float32)

    def predict_attribute_proba(self, X) -> dict[str, np.ndarray]:
        return self.task1.predict_attribute_proba(X)

    def predict_attributes(self, X):
        return self.task1.predict_attributes(X)

    def __repr__(self) -> str:
        return f"JointHead(task1 {self.task1.hidden_dim_} + supcon {self.supcon.hidden_dim_})"


def objective_of(head) -> str:
    """The objective of a fitted head: a BoostHead's task, ``supcon`` / ``multisimilarity`` for a MetricHead,
    ``task1+supcon`` for a :class:`JointHead`."""
    if isinstance(head, JointHead):
        return JointHead.objective
    if isinstance(head, MetricHead):
        return head.loss
    return head.task


def classifies(head) -> bool:
    """Whether the head has attribute classifiers (and so predicts attribute values)."""
    return objective_of(head) in ("task1", "task3", "task1+supcon")


def objective_problems(objective: str) -> list[str]:
    """What keeps ``objective`` from being trained here (an unknown name, a missing package), found before any
    work."""
    if objective not in OBJECTIVES:
        return [f"objective {objective!r}: expected one of {', '.join(OBJECTIVES)}"]
    if "supcon" in objective and importlib.util.find_spec("pytorch_metric_learning") is None:
        return [f"objective {objective}: training SupCon needs the package pytorch-metric-learning "
                f"(pip install pytorch-metric-learning)"]
    return []


def fit_head(objective: str, X, y, X_val, y_val, *, tags=None, tags_val=None, seed: int = 0,
             max_epochs: int | None = None, device: str = "cpu", progress: bool = False):
    """A head for ``objective`` fitted on ``(X, y)`` (and ``tags`` for Tasks 2/3), selected by :data:`SELECTION`
    on ``(X_val, y_val)``; every other setting is the estimators' default (the study's)."""
    problems = objective_problems(objective)
    if problems:
        raise ValueError(problems[0])
    common = {"seed": seed, "device": device, "selection": SELECTION}
    if max_epochs is not None:
        common["max_epochs"] = max_epochs
    heads = {}
    if objective in ("task1", "task2", "task3", "task1+supcon"):
        task = "task1" if objective == "task1+supcon" else objective
        heads["task1"] = BoostHead(task, progress=progress, **common).fit(X, y, tags, X_val=X_val, y_val=y_val,
                                                                           tags_val=tags_val)
    if "supcon" in objective:
        heads["supcon"] = MetricHead("supcon", **common).fit(X, y, X_val, y_val)
    if objective == "task1+supcon":
        return JointHead(heads["task1"], heads["supcon"])
    return next(iter(heads.values()))


def _parts(head) -> list:
    return [head.task1, head.supcon] if isinstance(head, JointHead) else [head]


def write_head(directory: str | os.PathLike, head) -> list[str]:
    """Write every part of ``head`` (its weights and config files) into ``directory``; returns the file names."""
    return [f for part in _parts(head) for f in part.write_files(directory)]


def read_head(directory: str | os.PathLike, objective: str | None, *, device: str = "cpu"):
    """The head :func:`write_head` wrote for ``objective`` (None: a directory from before objectives, a
    BoostHead)."""
    if objective is None or objective in ("task1", "task2", "task3"):
        head = BoostHead.read_files(directory, device=device)
        if objective is not None and head.task != objective:
            from .manifest import BundleError

            raise BundleError(f"{Path(directory) / BoostHead.CONFIG_FILE}: a {head.task} head, but the manifest "
                              f"says objective {objective}")
        return head
    if objective == "supcon":
        return MetricHead.read_files(directory, device=device)
    if objective == "task1+supcon":
        return JointHead(BoostHead.read_files(directory, device=device),
                         MetricHead.read_files(directory, device=device))
    from .manifest import BundleError

    raise BundleError(f"{directory}: objective {objective!r} is not one this attrboost reads ({', '.join(OBJECTIVES)})")


def weights_sha256(head, file_sha256: dict[str, str]) -> str:
    """One digest for the head's weights, from the sha256 of each weights file (``file_sha256``: file name ->
    sha256, e.g. a manifest's): a single head's is its weights file's own (as before objectives existed)."""
    digests = [file_sha256[type(p).WEIGHTS_FILE] for p in _parts(head)]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256(":".join([objective_of(head), *digests]).encode()).hexdigest()


class _Joint(nn.Module):
    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(p(x), dim=1) for p in self.parts], dim=1)


def embedding_module(head) -> nn.Module:
    """Frozen features -> the head's embedding, as one torch module (the ONNX export's head)."""
    if isinstance(head, JointHead):
        return _Joint([embedding_module(head.task1), embedding_module(head.supcon)])
    if isinstance(head, MetricHead):
        return head.model_
    return nn.Sequential(head.model_.hidden, nn.ReLU())

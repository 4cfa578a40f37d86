"""The boosted encoder: image files -> boosted vectors (frozen backbone + its preprocessing + a fitted head).

:class:`Encoder` runs the same inference path as :func:`attrboost.features.extract_features` (timm eval
transform, BatchNorm folded into the convolutions, channels_last, batched, decoding in DataLoader workers)
and then :meth:`BoostHead.transform <attrboost.heads.BoostHead.transform>`. Unlike the study's extraction it
never stops on a bad file: an image that cannot be decoded is skipped, counted and listed
(:attr:`Encoded.failed`). With ``checkpoint=`` the finished chunks are saved as they complete
(one checked file per chunk, :func:`attrboost.cache.save_checked`), so an interrupted :meth:`Encoder.encode` resumes where it stopped.

Get one from a saved bundle with :func:`attrboost.load_model`, or build it from a fitted head::

    enc = Encoder("efficientnet_lite0", head)
    out = enc.encode(paths)          # out.vectors (n_ok, width), out.ids, out.failed
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import backbones
from ..cache import fingerprint, load_checked, save_checked
from ..checks import check_int
from ..features import CHUNK_SIZE
from ..inference import auto_workers, forward_files, resolve_device, split_transform
from ..objectives import JointHead, classifies, objective_of
from ..training import torch_threads

__all__ = ["Encoder", "Encoded"]


@dataclass
class Encoded:
    """What :meth:`Encoder.encode` returns: one row per image that decoded, in input order.

    ids / paths / vectors: the decoded images' ids, paths and float32 vectors; features: their frozen backbone
    features (only with ``return_features=True``); failed: one dict ``{id, path, error}`` per image that
    could not be decoded (skipped); predicted: ``(codes, confidence)`` of the predicted attributes
    (:meth:`Encoder.predict_codes`; only with ``return_predictions=True`` and a model with classifiers)."""

    ids: np.ndarray
    paths: list[str]
    vectors: np.ndarray
    failed: list[dict] = field(default_factory=list)
    features: np.ndarray | None = None
    predicted: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)


class Encoder:
    """Images -> boosted vectors: a torch backbone (registry name or
    :class:`~attrboost.backbones.ResolvedWeights`), its timm eval preprocessing and a fitted head of any objective
    (:class:`~attrboost.heads.BoostHead`, :class:`~attrboost.metric_head.MetricHead`,
    :class:`~attrboost.objectives.JointHead`).

    device: ``"auto" | "cpu" | "cuda"``; batch_size: images per forward; num_workers: DataLoader decoding
    workers (``"auto"``: :func:`attrboost.inference.auto_workers`); num_threads: torch threads for the backbone
    forward (None: torch's setting). ``head=None`` gives a features-only encoder (:meth:`features`), e.g. to
    fit a head. ``bundle``: the bundle directory this encoder was loaded from, if any;
    ``metrics``: its validation metrics; ``selection``: the model-selection rule it was fitted with.
    """

    def __init__(self, backbone, head, *, device="cpu", batch_size: int = 32, num_workers="auto",
                 num_threads: int | None = None, bundle: str | os.PathLike | None = None,
                 metrics: dict | None = None, identity: dict | None = None, selection: str | None = None):
        from sklearn.utils.validation import check_is_fitted

        self.backbone = backbones.resolve_weights(backbone)
        spec = self.backbone.spec
        if head is not None and not isinstance(head, JointHead):  # a JointHead is made of fitted parts
            check_is_fitted(head, "model_")
        if head is not None and head.n_features_in_ != spec.width:
            raise ValueError(f"the head was fitted on {head.n_features_in_}-wide features, but backbone "
                             f"{spec.name!r} gives {spec.width}")
        self.head = head
        self.device = resolve_device(device)
        self.batch_size = check_int(batch_size, "batch_size")
        self.num_workers = auto_workers(self.device) if num_workers == "auto" else check_int(
            num_workers, "num_workers (or 'auto')", min_val=0)
        self.num_threads = num_threads
        self.bundle = None if bundle is None else Path(bundle)
        self.metrics = dict(metrics or {})
        self.selection = selection or self.metrics.get("selection")
        self._identity = dict(identity or {})
        self._model = None

    # ------------------------------------------------------------------------------------------ facts
    @property
    def width(self) -> int:
        """Width of the boosted vectors."""
        return int(self.head.hidden_dim_)

    @property
    def objective(self) -> str:
        """What the head was trained for (:data:`attrboost.objectives.OBJECTIVES`)."""
        return objective_of(self.head)

    @property
    def predicts_attributes(self) -> bool:
        """Whether the head has attribute classifiers (``task1``, ``task3``, ``task1+supcon``)."""
        return classifies(self.head)

    @property
    def attributes(self) -> list[str]:
        """The attributes the head predicts (none for a model without classifiers, e.g. ``supcon``)."""
        return list(self.head.attributes_) if self.predicts_attributes else []

    @property
    def classes(self) -> dict[str, list[str]]:
        """attribute -> its classes (the values the head predicts), in code order."""
        return {a: [str(c) for c in self.head.classes_[a]] for a in self.attributes}

    @property
    def identity(self) -> dict:
        """What an index built with this encoder must match: backbone, weights, head and width
        (``space`` ``"boosted"``: the head's vectors)."""
        return {"backbone": self.backbone.name, "width": self.width, "space": "boosted", **self._identity}

    @property
    def raw_identity(self) -> dict:
        """What an index of this encoder's frozen backbone features (no head; ``attrboost index --raw``) must
        match: backbone, weights and the backbone's width (``space`` ``"raw"``)."""
        rest = {k: v for k, v in self._identity.items() if k != "head_sha256"}
        return {"backbone": self.backbone.name, "width": int(self.backbone.spec.width), "space": "raw", **rest}

    def __repr__(self) -> str:
        return (f"Encoder(backbone={self.backbone.name!r}, objective={self.objective!r}, width={self.width}, "
                f"attributes={self.attributes})")

    # ------------------------------------------------------------------------------------------ parts
    def model(self) -> torch.nn.Module:
        """The backbone as :func:`attrboost.features.extract_features` runs it (BatchNorm folded, channels_last)."""
        if self._model is None:
            model, self._transform = backbones.create_backbone(self.backbone)
            self._model = backbones.fold_batchnorm(model).to(self.device, memory_format=torch.channels_last)
        return self._model

    def preprocessing(self):
        """``(pil_stage, normalise)``: the timm eval transform split as extraction runs it (``pil_stage``:
        PIL image -> resized, cropped PIL image; ``normalise(uint8 NHWC batch, device)`` -> float NCHW)."""
        self.model()
        split = split_transform(self._transform)
        if split is None:  # pragma: no cover - timm's eval transforms always split
            raise ValueError(f"the preprocessing of {self.backbone.name!r} is not a standard timm eval transform")
        return split

    def preprocessing_size(self) -> int:
        """Side of the square image the backbone sees (after resizing and cropping)."""
        return int(backbones.data_config(self.backbone.name)["input_size"][-1])

    def transform(self, X) -> np.ndarray:
        """Frozen features -> boosted vectors (:meth:`BoostHead.transform <attrboost.heads.BoostHead.transform>`)."""
        return self.head.transform(X)

    # ------------------------------------------------------------------------------------------ images
    def features(self, paths: Sequence[str | os.PathLike], *, progress: bool = False,
                 on_batch=None) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Frozen features of the images that decode: ``(X, failed)``, X float32 with one row per decoded
        image in input order, failed ``[(position, error)]``. ``on_batch(n)`` is called after each batch.
        The loop is :func:`attrboost.inference.forward_files` (the feature store's too). On the CPU the forward
        runs in padded micro-batches (bitwise the same whatever the batch size and thread count,
        :func:`attrboost.backbones.forward`), except for fewer than :data:`~attrboost.backbones.CPU_MICRO_BATCH`
        paths (a query), run as they are."""
        paths = [os.fspath(p) for p in paths]
        out = []
        if not paths:
            return np.zeros((0, self.backbone.spec.width), dtype=np.float32), []
        failed = forward_files(self.model(), self._transform, paths, np.arange(len(paths)), lambda rows, X: out.append(X),
                               dev=self.device, batch_size=self.batch_size, num_workers=self.num_workers,
                               chunk_size=len(paths), num_threads=self.num_threads, progress=progress,
                               desc=f"encode {self.backbone.name}", tolerant=True,
                               pad=len(paths) >= backbones.CPU_MICRO_BATCH, on_batch=on_batch)
        X = np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(
            (0, self.backbone.spec.width), dtype=np.float32)
        return X, failed

    def image_features(self, images: Sequence) -> np.ndarray:
        """Frozen features of decoded RGB PIL images (e.g. an upload), one row each: the same preprocessing
        and forward pass as :meth:`features` runs on files."""
        pil_stage = self.preprocessing()[0]
        if not len(images):
            return np.zeros((0, self.backbone.spec.width), dtype=np.float32)
        x = torch.from_numpy(np.stack([np.array(pil_stage(im), dtype=np.uint8) for im in images]))
        with torch_threads(max(1, self.num_threads or torch.get_num_threads())):
            return self.forward(x, pad=False)  # a few uploads: no blank padding (backbones.forward)

    def forward(self, x: torch.Tensor, *, pad: bool = True) -> np.ndarray:
        """Frozen features of a preprocessed uint8 NHWC batch (the PIL stage's output): normalise, backbone
        forward (:func:`attrboost.backbones.forward`: padded micro-batches on the CPU unless ``pad=False``),
        float32 numpy. The one forward pass of files (:meth:`features`), uploads (:meth:`image_features`) and
        Ray actors (:class:`attrboost.search.scale.Embedder`); threads are the caller's."""
        model, normalise = self.model(), self.preprocessing()[1]
        with torch.inference_mode():
            return backbones.forward(model, x, normalise, self.device, pad=pad)

    def encode(self, paths: Sequence[str | os.PathLike], ids: Sequence | None = None, *, progress: bool = True,
               checkpoint: str | os.PathLike | None = None, chunk_size: int = CHUNK_SIZE,
               return_features: bool = False, return_predictions: bool = False) -> Encoded:
        """Boosted vectors of image files (see :class:`Encoded`); ``ids`` default to the paths.
        ``return_predictions``: also each image's predicted attributes (a model with classifiers only).

        checkpoint: a directory; each finished chunk of ``chunk_size`` images is saved there as its own
        checked file (``chunk-<start>.npz``: writing is linear in the catalogue, not quadratic), and the next
        call with the same encoder, paths, ids and chunk size picks up the chunks found (the caller deletes
        the directory when done).
        """
        paths = [os.fspath(p) for p in paths]
        ids = np.asarray(paths if ids is None else [str(i) for i in ids], dtype=str)
        if len(ids) != len(paths):
            raise ValueError(f"ids has {len(ids)} entries but paths has {len(paths)}")
        check_int(chunk_size, "chunk_size")
        predict = return_predictions and self.predicts_attributes
        key = fingerprint("encode", self.identity, self.objective, ids.tolist(), paths, return_features, chunk_size,
                          *(["predicted"] if predict else []))
        ok, bad, err, V, F, PC, PP = [], [], [], [], [], [], []
        n_attrs = len(self.attributes)

        def keep(got: dict) -> None:
            ok.extend(got["ok"].tolist())
            bad.extend(got["bad"].tolist())
            err.extend(got["err"].tolist())
            V.append(got["V"])
            F.append(got["F"])
            if predict:
                PC.append(got["PC"])
                PP.append(got["PP"])

        def chunk_file(s: int) -> tuple[Path, str]:  # a chunk's file in the checkpoint and its key
            return Path(checkpoint) / f"chunk-{s:012d}.npz", f"{key}:{s}"

        start = 0
        if checkpoint is not None:
            while start < len(paths):
                got = load_checked(*chunk_file(start))
                if got is None:
                    break
                keep(got)
                start = min(start + chunk_size, len(paths))
        from tqdm.auto import tqdm

        with tqdm(total=len(paths), initial=start, desc=f"encode {self.backbone.name}", unit="img",
                  disable=not progress) as bar:
            for s in range(start, len(paths), chunk_size):
                e = min(s + chunk_size, len(paths))
                X, failed = self.features(paths[s:e], on_batch=bar.update)
                bad_pos = {p for p, _ in failed}
                got = {"ok": np.asarray([s + k for k in range(e - s) if k not in bad_pos], dtype=np.int64),
                       "bad": np.asarray([s + p for p, _ in failed], dtype=np.int64),
                       "err": np.asarray([msg for _, msg in failed], dtype=str),
                       "V": self.transform(X) if len(X) else np.zeros((0, self.width), np.float32),
                       "F": X if return_features else np.zeros((len(X), 0), np.float32)}
                if predict:
                    got["PC"], got["PP"] = self.predict_codes(X) if len(X) else (
                        np.zeros((0, n_attrs), np.int32), np.zeros((0, n_attrs), np.float32))
                if checkpoint is not None:
                    Path(checkpoint).mkdir(parents=True, exist_ok=True)
                    save_checked(*chunk_file(s), **got)
                keep(got)
        ok_pos = np.asarray(ok, dtype=np.int64)
        V = np.concatenate(V) if V else np.zeros((0, self.width), np.float32)
        F = np.concatenate(F) if F else None
        failed = [{"id": str(ids[p]), "path": paths[p], "error": msg} for p, msg in zip(bad, err)]
        predicted = (np.concatenate(PC), np.concatenate(PP)) if predict and PC else None
        return Encoded(ids[ok_pos], [paths[p] for p in ok_pos], np.ascontiguousarray(V, dtype=np.float32), failed,
                       F if return_features else None, predicted)

    def __call__(self, paths, **kw) -> np.ndarray:
        """Boosted vectors of ``paths``; an image that cannot be decoded is an error naming it."""
        from ..data import DataError

        out = self.encode(paths, progress=kw.pop("progress", False), **kw)
        if out.failed:
            bad = out.failed[0]
            raise DataError(f"{len(out.failed)} image(s) could not be decoded, e.g. {bad['path']}: {bad['error']}")
        return out.vectors

    def predict(self, paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
        """Predicted attributes (Tasks 1/3) and tags (Tasks 2/3) per image, one row per path (undecodable: error)."""
        from ..data import DataError

        X, bad = self.features(paths)
        if bad:
            raise DataError(f"{os.fspath(paths[bad[0][0]])}: {bad[0][1]}")
        return self.predict_features(X)

    def predict_features(self, X) -> pd.DataFrame:
        """Predicted attributes / tags from frozen features ``X`` (no columns for a model that predicts neither)."""
        out = pd.DataFrame(index=range(len(X)))
        if self.predicts_attributes:
            out = self.head.predict_attributes(X)
        if self.objective in ("task2", "task3"):
            out["tags"] = [" ".join(t) for t in self.head.predict_tags(X)]
        return out

    def predict_codes(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Predicted attributes as ``(codes, confidence)``, both ``(n, len(attributes))``: int32 index into
        :attr:`classes` of the most probable value, and its probability (float32). The same argmax as
        :meth:`BoostHead.predict_attributes <attrboost.heads.BoostHead.predict_attributes>`."""
        if not self.predicts_attributes:
            raise ValueError(f"a {self.objective} model has no attribute classifiers")
        proba = self.head.predict_attribute_proba(X)
        codes = np.stack([proba[a].argmax(1) for a in self.attributes], axis=1).astype(np.int32)
        conf = np.stack([proba[a].max(1) for a in self.attributes], axis=1).astype(np.float32)
        return codes, conf

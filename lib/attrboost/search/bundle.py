"""Saved models: a fitted head (:mod:`attrboost.objectives`), alone or with its backbone, in a directory.

A **head bundle** (``BoostHead.save`` / ``BoostHead.load``: the head serialises itself)::

    head.safetensors   the head's weights (safetensors: no pickle)
    head.json          its parameters, attribute classes, tag vocabulary, best epoch, stop reason
    manifest.json      format name and version, library versions, and a sha256 + size per file

A **model bundle** (:func:`save_model` / :func:`load_model`) holds the head of its objective (``task1``, ``task2``,
``task3``: the files above; ``supcon``: ``metric_head.safetensors`` + ``metric_head.json``
(:class:`~attrboost.metric_head.MetricHead`); ``task1+supcon``: both pairs) and adds::

    backbone.json      backbone name, timm architecture, width, weights kind / identity / sha256 of the
                       weights file, and the preprocessing (timm data config)
    metrics.json       validation metrics, the objective, the selection rule and the training history

Its ``manifest.json`` records ``objective`` and ``selection`` (the model-selection rule,
:data:`attrboost.objectives.SELECTION`); a bundle saved before objectives existed has neither and holds a
:class:`~attrboost.heads.BoostHead` (``task1`` unless it was fitted with another task).

:func:`load_model` returns an :class:`~attrboost.search.encoder.Encoder` whose ``transform`` gives bit-identical
vectors to the saved head (same thread count). Loading checks, with a :class:`BundleError` naming the file:
the manifest exists and has a format version this code reads; every listed file exists and has its sha256;
the backbone's weights found here have the sha256 the model was fitted with, and its preprocessing is unchanged.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .. import backbones
from ..cache import write_json
from ..manifest import FORMAT, FORMAT_VERSION, BundleError, read_manifest, sha256_file, write_manifest
from ..objectives import SELECTION, objective_of, read_head, weights_sha256, write_head
from .encoder import Encoder

__all__ = ["FORMAT", "FORMAT_VERSION", "BundleError", "save_model", "load_model"]

# ---------------------------------------------------------------------------------------------- model
_WEIGHTS_SHA: dict[tuple, str] = {}


def _weights_sha256(resolved: backbones.ResolvedWeights) -> str | None:
    if resolved.path is None:
        return None
    st = resolved.path.stat()
    key = (str(resolved.path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _WEIGHTS_SHA:
        _WEIGHTS_SHA[key] = sha256_file(resolved.path)
    return _WEIGHTS_SHA[key]


def _backbone_config(resolved: backbones.ResolvedWeights) -> dict:
    spec = resolved.spec
    return {"name": spec.name, "timm_name": spec.timm_name, "width": spec.width, "weights_kind": resolved.kind,
            "weights_identity": resolved.identity, "weights_sha256": _weights_sha256(resolved),
            "weights_path": str(resolved.path) if resolved.kind == "local" else None,
            "preprocessing": backbones.data_config(spec.name)}


def save_model(directory: str | os.PathLike, head, backbone, *, metrics: dict | None = None,
               selection: str | None = None) -> Path:
    """Save a model bundle: ``head`` (fitted on ``backbone``'s features: a BoostHead, MetricHead or JointHead)
    + the backbone's identity and preprocessing + ``metrics`` (JSON-serialisable: validation metrics, training
    history, data description). The manifest records the head's objective and ``selection`` (default: the
    ``selection`` in ``metrics``, else :data:`attrboost.objectives.SELECTION`).

    backbone: a torch registry name or a :class:`~attrboost.backbones.ResolvedWeights`.
    """
    resolved = backbones.resolve_weights(backbone)
    if head.n_features_in_ != resolved.spec.width:
        raise ValueError(f"the head was fitted on {head.n_features_in_}-wide features, but backbone "
                         f"{resolved.name!r} gives {resolved.spec.width}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = write_head(directory, head)
    write_json(directory / "backbone.json", _backbone_config(resolved))
    write_json(directory / "metrics.json", metrics or {})
    selection = selection or (metrics or {}).get("selection") or SELECTION
    write_manifest(directory, files + ["backbone.json", "metrics.json"], contents="model",
                   objective=objective_of(head), selection=selection)
    return directory


def load_model(directory: str | os.PathLike, *, weights: str | os.PathLike | None = None, device: str = "cpu",
               **encoder_kw):
    """The :class:`~attrboost.search.encoder.Encoder` saved by :func:`save_model` (every file verified).

    weights: the backbone's weights file, for bundles fitted on a local file that has since moved (its
    sha256 must still match). ``encoder_kw`` go to :class:`~attrboost.search.encoder.Encoder` (batch_size, ...).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.get("contents") != "model" or not (directory / "backbone.json").is_file():
        raise BundleError(f"{str(directory)!r} holds a head only (saved by BoostHead.save / save_head), not a "
                          f"model: load it with BoostHead.load, or save it with attrboost.save_model")
    cfg = json.loads((directory / "backbone.json").read_text(encoding="utf-8"))
    name = cfg["name"]
    if weights is None and cfg["weights_kind"] == "local":
        weights = cfg["weights_path"]
    resolved = backbones.resolve_weights(name, weights, pretrained=cfg["weights_kind"] != "random")
    sha = _weights_sha256(resolved)
    if sha != cfg["weights_sha256"]:
        raise BundleError(f"{directory / 'backbone.json'}: backbone {name!r} weights here ({resolved.identity}, "
                          f"sha256 {str(sha)[:16]}...) differ from those the model was fitted with "
                          f"({cfg['weights_identity']}, sha256 {str(cfg['weights_sha256'])[:16]}...)")
    now = json.loads(json.dumps(backbones.data_config(name)))
    if now != cfg["preprocessing"]:
        raise BundleError(f"{directory / 'backbone.json'}: the preprocessing of {name!r} changed since the model "
                          f"was saved ({cfg['preprocessing']} then, {now} now; a different timm version?)")
    head = read_head(directory, manifest.get("objective"), device=device)  # none recorded: a BoostHead
    metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    files = {name: info["sha256"] for name, info in manifest["files"].items()}
    identity = {"weights_sha256": sha, "head_sha256": weights_sha256(head, files)}
    return Encoder(resolved, head, device=device, bundle=directory, metrics=metrics, identity=identity,
                   selection=manifest.get("selection", metrics.get("selection", SELECTION)), **encoder_kw)

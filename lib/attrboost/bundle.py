"""Saved models: a fitted :class:`~attrboost.heads.BoostHead`, alone or with its backbone, in a directory.

A **head bundle** (:func:`save_head` / :func:`load_head`, also ``BoostHead.save`` / ``BoostHead.load``)::

    head.safetensors   the head's weights (safetensors: no pickle)
    head.json          its parameters, attribute classes, tag vocabulary, best epoch, stop reason
    manifest.json      format name and version, library versions, and a sha256 + size per file

A **model bundle** (:func:`save_model` / :func:`load_model`) adds::

    backbone.json      backbone name, timm architecture, width, weights kind / identity / sha256 of the
                       weights file, and the preprocessing (timm data config)
    metrics.json       validation metrics and the training history

:func:`load_model` returns an :class:`~attrboost.encoder.Encoder` whose ``transform`` gives bit-identical
vectors to the saved head (same thread count). Loading checks, with a :class:`BundleError` naming the file:
the manifest exists and has a format version this code reads; every listed file exists and has its sha256;
the backbone's weights found here have the sha256 the model was fitted with, and its preprocessing is unchanged.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import backbones
from .cache import atomic_write, write_json

__all__ = ["FORMAT", "FORMAT_VERSION", "BundleError", "save_head", "load_head", "save_model", "load_model",
           "write_manifest", "read_manifest", "sha256_file"]

FORMAT = "attrboost-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_VERSIONED = ("attrboost", "torch", "timm", "numpy", "safetensors", "scikit-learn")


class BundleError(ValueError):
    """A saved bundle (model or index) cannot be used: missing, changed, or from an incompatible version."""


# ---------------------------------------------------------------------------------------------- manifest
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def write_manifest(directory: str | os.PathLike, files: list[str], *, fmt: str = FORMAT,
                   version: int = FORMAT_VERSION, **extra) -> Path:
    """Write ``manifest.json`` (last, atomically): format, version, library versions, sha256 + bytes per file."""
    directory = Path(directory)
    table = {f: {"sha256": sha256_file(directory / f), "bytes": (directory / f).stat().st_size} for f in files}
    return write_json(directory / MANIFEST, {
        "format": fmt, "format_version": version, **extra, "created": datetime.now(timezone.utc).isoformat(),
        "versions": library_versions(), "files": table})


def read_manifest(directory: str | os.PathLike, *, fmt: str = FORMAT, version: int | tuple = FORMAT_VERSION) -> dict:
    """The verified manifest of a bundle directory (see the module docstring for the checks); ``version``: the
    format version, or a tuple of the versions the caller reads."""
    directory = Path(directory)
    kind = "index" if fmt != FORMAT else "model"
    if not directory.is_dir():
        raise BundleError(f"{kind} directory {str(directory)!r} does not exist")
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{str(directory)!r} is not an attrboost {kind} bundle: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != fmt:
        raise BundleError(f"{path}: format {manifest.get('format')!r}, expected {fmt!r}")
    got = manifest.get("format_version")
    accepted = version if isinstance(version, tuple) else (version,)
    if got not in accepted:
        raise BundleError(f"{path}: format version {got!r}, but this attrboost "
                          f"({library_versions()['attrboost']}) reads version {' and '.join(map(str, accepted))} only; re-create the "
                          f"{kind} with this version (written by attrboost "
                          f"{manifest.get('versions', {}).get('attrboost')})")
    for name, info in manifest.get("files", {}).items():
        f = directory / name
        if not f.is_file():
            raise BundleError(f"{str(f)!r} is missing (listed in {MANIFEST}); the {kind} bundle is incomplete")
        digest = sha256_file(f)
        if digest != info["sha256"]:
            raise BundleError(f"{str(f)!r} changed after the {kind} was saved: sha256 {digest[:16]}..., "
                              f"{MANIFEST} says {info['sha256'][:16]}...; re-create the {kind}")
    return manifest


# ---------------------------------------------------------------------------------------------- head
def _head_config(head) -> dict:
    params = head.get_params()
    if callable(params["selection"]):
        params["selection"] = f"callable:{getattr(params['selection'], '__qualname__', 'scorer')}"
    return {
        "params": params, "attributes": list(head.attributes_),
        "classes": {a: [str(c) for c in head.classes_[a]] for a in head.attributes_},
        "vocab": list(head.vocab_), "n_features_in": int(head.n_features_in_), "hidden_dim": int(head.hidden_dim_),
        "best_epoch": int(head.best_epoch_), "n_epochs": int(head.n_epochs_), "stop_reason": head.stop_reason_,
    }


def _write_head(head, directory: Path) -> list[str]:
    from safetensors.torch import save_file
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(head, "model_")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in head.model_.state_dict().items()}
    atomic_write(directory / "head.safetensors", lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}))
    write_json(directory / "head.json", _head_config(head))
    return ["head.safetensors", "head.json"]


def save_head(head, directory: str | os.PathLike) -> Path:
    """Save a fitted head (weights in safetensors, the rest JSON, a manifest with checksums) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_manifest(directory, _write_head(head, directory), contents="head")
    return directory


def _read_head(directory: Path, device: str = "cpu"):
    from safetensors.torch import load_file

    from .heads import BoostHead, _HeadNet

    cfg = json.loads((directory / "head.json").read_text(encoding="utf-8"))
    params = dict(cfg["params"], device=device)
    head = BoostHead(**params)
    head.attributes_ = list(cfg["attributes"])
    head.classes_ = {a: np.asarray(cfg["classes"][a], dtype=str) for a in head.attributes_}
    head.vocab_ = list(cfg["vocab"])
    head._word_index = {w: i for i, w in enumerate(head.vocab_)}
    head.n_features_in_, head.hidden_dim_ = int(cfg["n_features_in"]), int(cfg["hidden_dim"])
    head.best_epoch_, head.n_epochs_, head.stop_reason_ = cfg["best_epoch"], cfg["n_epochs"], cfg["stop_reason"]
    uses_tags = head.task in ("task2", "task3")
    net = _HeadNet(head.n_features_in_, head.hidden_dim_, [len(head.classes_[a]) for a in head.attributes_],
                   len(head.vocab_) + 3 if uses_tags else 0, head.gru_hidden)
    state = load_file(str(directory / "head.safetensors"), device="cpu")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{directory / 'head.safetensors'}: weights do not fit the head described in "
                          f"head.json ({exc})") from None
    head.model_ = net.to(torch.device(device)).eval()
    return head


def load_head(directory: str | os.PathLike, *, device: str = "cpu"):
    """The :class:`~attrboost.heads.BoostHead` saved by :func:`save_head` or :func:`save_model` (verified)."""
    directory = Path(directory)
    read_manifest(directory)
    return _read_head(directory, device)


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


def save_model(directory: str | os.PathLike, head, backbone, *, metrics: dict | None = None) -> Path:
    """Save a model bundle: ``head`` (fitted on ``backbone``'s features) + the backbone's identity and
    preprocessing + ``metrics`` (JSON-serialisable: validation metrics, training history, data description).

    backbone: a torch registry name or a :class:`~attrboost.backbones.ResolvedWeights`.
    """
    resolved = backbones.resolve_weights(backbone)
    if head.n_features_in_ != resolved.spec.width:
        raise ValueError(f"the head was fitted on {head.n_features_in_}-wide features, but backbone "
                         f"{resolved.name!r} gives {resolved.spec.width}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = _write_head(head, directory)
    write_json(directory / "backbone.json", _backbone_config(resolved))
    write_json(directory / "metrics.json", metrics or {})
    write_manifest(directory, files + ["backbone.json", "metrics.json"], contents="model")
    return directory


def load_model(directory: str | os.PathLike, *, weights: str | os.PathLike | None = None, device: str = "cpu",
               **encoder_kw):
    """The :class:`~attrboost.encoder.Encoder` saved by :func:`save_model` (every file verified).

    weights: the backbone's weights file, for bundles fitted on a local file that has since moved (its
    sha256 must still match). ``encoder_kw`` go to :class:`~attrboost.encoder.Encoder` (batch_size, ...).
    """
    from .encoder import Encoder

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
    head = _read_head(directory, device)
    metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    identity = {"weights_sha256": sha, "head_sha256": manifest["files"]["head.safetensors"]["sha256"]}
    return Encoder(resolved, head, device=device, bundle=directory, metrics=metrics, identity=identity,
                   **encoder_kw)

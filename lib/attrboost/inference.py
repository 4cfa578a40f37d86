"""The one images -> vectors loop: image files -> preprocessed batches -> a frozen backbone's features.

Every entry point that turns images into vectors runs through here: the feature store
(:func:`attrboost.features.extract_features`), the search wing's encoder and its Ray Data actors. The
preprocessing travels with the resolved weights (:func:`attrboost.backbones.create_backbone` returns the
model and its timm evaluation transform); :func:`split_transform` cuts that transform into the PIL stage
(decode, resize, crop: DataLoader workers, uint8) and the float stage (:class:`Normalize`, on whole batches),
which is bit-identical to the per-image transform. :func:`resolve_device` / :func:`device_name` are the one
device rule; :func:`forward_files` is the batched, chunked forward pass.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from . import backbones
from .training import torch_threads

__all__ = ["ImageFiles", "collate_tolerant", "Normalize", "split_transform", "resolve_device", "device_name",
           "auto_workers", "forward_files"]


class ImageFiles(torch.utils.data.Dataset):
    """Images on disk -> tensors (decoding and resizing happen in the DataLoader workers).

    With ``uint8=True`` the transform must stop before tensor conversion (PIL in, PIL out) and items are
    ``uint8`` HWC tensors: 4x less inter-process traffic, and :class:`Normalize` finishes the job on whole
    batches. Otherwise items are ``transform(img)``. With ``tolerant=True`` an item is ``(position, tensor
    or None, error text or None)``: a file that cannot be decoded gives its error instead of raising (batch
    such items with :func:`collate_tolerant`).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], transform, uint8: bool = False, tolerant: bool = False):
        self.paths = list(paths)
        self.transform = transform
        self.uint8 = uint8
        self.tolerant = tolerant

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> torch.Tensor:
        from .data import load_image

        out = self.transform(load_image(self.paths[i]))
        if self.uint8:
            return torch.from_numpy(np.array(out, dtype=np.uint8))  # H x W x 3
        return out

    def __getitem__(self, i: int):
        if not self.tolerant:
            return self._load(i)
        from .data import DataError

        try:
            return i, self._load(i), None
        except (DataError, OSError, ValueError) as exc:
            return i, None, str(exc)


def collate_tolerant(items):
    """A batch of tolerant :class:`ImageFiles` items -> ``(positions decoded, stacked tensor or None,
    [(position, error)])``."""
    ok = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, e) for i, x, e in items if x is None]
    return [i for i, _ in ok], (torch.stack([x for _, x in ok]) if ok else None), bad


class Normalize:
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


def split_transform(transform):
    """``(pil_stage, Normalize)`` if ``transform`` is ``Compose([... PIL ops, (Maybe)ToTensor, Normalize])``
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
    return T.Compose(steps[:-2]), Normalize(norm.mean, norm.std)


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


def device_name(device) -> str:
    """:func:`resolve_device` as its canonical name: ``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``."""
    return str(resolve_device(device))


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



def forward_files(model: torch.nn.Module, transform, image_paths: Sequence[str], rows: np.ndarray, on_chunk, *,
                  dev: torch.device, batch_size: int, num_workers: int, chunk_size: int, num_threads: int | None = None,
                  progress: bool = False, desc: str = "features", tolerant: bool = False, pad: bool = True,
                  on_batch=None) -> list[tuple[int, str]]:
    """The one loop from image files to frozen features: decode and preprocess ``image_paths[rows]`` in
    DataLoader workers (``transform``: the backbone's timm eval transform, split by :func:`split_transform`),
    run ``model`` (built by the caller: BatchNorm folded, channels_last, on ``dev``) over batches of
    ``batch_size`` with :func:`attrboost.backbones.forward`, and call ``on_chunk(rows of one chunk, their float32
    features)`` as each chunk of ``chunk_size`` rows completes (batches never straddle a chunk).

    tolerant: an image that cannot be decoded is skipped (its row is left out of ``on_chunk``) and returned
    in ``[(row, error)]``; otherwise it raises. pad: see :func:`attrboost.backbones.forward`. on_batch(n):
    called after each batch with the images it consumed (progress of a caller's own bar)."""
    from tqdm.auto import tqdm

    rows = np.asarray(rows, dtype=np.int64)
    paths = [image_paths[r] for r in rows]
    split = split_transform(transform)
    if split is not None:  # workers: decode + resize + crop (uint8); here: to float + normalise per batch
        dataset, finish = ImageFiles(paths, split[0], uint8=True, tolerant=tolerant), split[1]
    else:
        dataset = ImageFiles(paths, transform, tolerant=tolerant)

        def finish(x, device):
            return x.to(device, memory_format=torch.channels_last, non_blocking=True)
    n = len(paths)
    chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    batches = [list(range(b, min(b + batch_size, e))) for s, e in chunks for b in range(s, e, batch_size)]
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_tolerant if tolerant else None,
        pin_memory=dev.type == "cuda", prefetch_factor=4 if num_workers else None)
    ends = {e for _, e in chunks}
    pending, done, failed = [], [], []
    threads = num_threads or torch.get_num_threads()
    with torch_threads(max(1, threads)), torch.inference_mode(), tqdm(
            total=n, desc=desc, unit="img", disable=not progress) as bar:
        for idx, batch in zip(batches, loader):
            if tolerant:
                ok, x, bad = batch
                failed.extend((int(rows[i]), err) for i, err in bad)
                done.extend(ok)
            else:
                x = batch
                done.extend(idx)
            if x is not None:
                pending.append(backbones.forward(model, x, finish, dev, pad=pad))
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(len(idx))
            end = idx[-1] + 1
            if end in ends:  # a chunk is complete (a chunk none of whose images decoded is not handed on)
                if done:
                    on_chunk(rows[np.asarray(done, dtype=np.int64)],
                             np.concatenate(pending).astype(np.float32, copy=False))
                pending, done = [], []
    return failed

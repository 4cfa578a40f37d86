"""Benchmark: the same work on the CPU and on a CUDA GPU (skips the GPU part without one).

1. A boosting-head fit per task on study-shaped random data (``bench_heads.make_data``: 2,700 train +
   300 validation vectors of width 1280, 7 attributes, tags), a fixed number of epochs (``--epochs``,
   selection "last", so both devices do the same work): seconds per epoch.
2. EfficientNet-Lite0 feature extraction of ``--n-images`` generated 60x80 JPEGs (no cache): images/s.

    python benchmarks/bench_device.py [--epochs 5] [--n-images 1024] [--cpu-threads 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_heads import make_data  # noqa: E402

from attrboost.features import extract_features# noqa: E402
from attrboost.heads import BoostHead  # noqa: E402


def heads(device: str, epochs: int, threads: int) -> list[dict]:
    X, y, tags = make_data(3000, 1280)
    tr, va = slice(0, 2700), slice(2700, None)
    rows = []
    for task in ("task1", "task2", "task3"):
        head = BoostHead(task, max_epochs=epochs, selection="last", patience=None, device=device, num_threads=threads)
        t0 = time.perf_counter()
        head.fit(X[tr], y.iloc[tr], tags[tr], X_val=X[va], y_val=y.iloc[va], tags_val=tags[va])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rows.append(dict(device=device, task=task, s_per_epoch=round((time.perf_counter() - t0) / epochs, 3)))
        print(rows[-1], flush=True)
    return rows


def extraction(device: str, n: int, folder: Path) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i}.jpg"
        if not p.exists():
            Image.fromarray(rng.integers(0, 255, (80, 60, 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(str(p))
    workers = min(8, os.cpu_count() or 1) if device.startswith("cuda") else 0
    extract_features("efficientnet_lite0", paths[:64], list(range(64)), device=device, cache=False, progress=False,
                     num_workers=workers)  # warm-up
    t0 = time.perf_counter()
    extract_features("efficientnet_lite0", paths, list(range(n)), device=device, cache=False, progress=False,
                     batch_size=128 if device.startswith("cuda") else 32, num_workers=workers)
    row = dict(device=device, images=n, images_per_s=round(n / (time.perf_counter() - t0), 1))
    print(row, flush=True)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--n-images", type=int, default=1024)
    ap.add_argument("--cpu-threads", type=int, default=1)
    args = ap.parse_args(argv)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, GPU: {gpu}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        for dev in devices:
            heads(dev, args.epochs, args.cpu_threads if dev == "cpu" else None)
        for dev in devices:
            extraction(dev, args.n_images if dev == "cuda" else min(args.n_images, 256), Path(tmp))


if __name__ == "__main__":
    main()

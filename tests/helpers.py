"""Helpers shared by several test modules: small generated data sets and test doubles.

A plain module (not collected: no ``test_`` prefix); import what you need (``from helpers import make_kaggle``).
pytest puts ``tests/`` on ``sys.path`` (rootdir-relative imports, no ``__init__.py``), as for ``_shapes``.
Fixtures built on these helpers live in ``tests/conftest.py``.
"""
from __future__ import annotations

import csv
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads crawl on a busy 2-core box

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from attrboost.data import Sample
from attrboost.data.catalogue import KAGGLE_COLUMNS

# ------------------------------------------------------------------------------ catalogues on disk
KAGGLE_COLOURS = ["Black", "Blue", "Red", "White", "Green", "Pink", "Grey", "Navy Blue"]


def write_jpeg(path: Path, colour=(200, 30, 30)) -> None:
    """A 6x8 JPEG of one colour."""
    Image.new("RGB", (6, 8), colour).save(path, format="JPEG")


def make_kaggle(root: Path, n_groups=8, per_group=6, small_groups=2, nested=False) -> Path:
    """A tiny Kaggle-layout dataset: n_groups groups of per_group items + small groups of 2."""
    base = root / "myntradataset" if nested else root
    (base / "images").mkdir(parents=True)
    rows, rid = [], 1000
    sizes = [per_group] * n_groups + [2] * small_groups
    for g, size in enumerate(sizes):
        for j in range(size):
            rid += 1
            colour = KAGGLE_COLOURS[g % len(KAGGLE_COLOURS)]
            gender = "Men" if g % 2 else "Women"
            rows.append([rid, gender, "Apparel", "Topwear", f"Type{g // len(KAGGLE_COLOURS)}", colour, "Summer", 2012,
                         "Casual", f"Brand{j % 2} {gender}'s {colour} T-Shirts & Tops {j}"])
            write_jpeg(base / "images" / f"{rid}.jpg", (g * 20 % 255, j * 30 % 255, 100))
    with open(base / "styles.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(KAGGLE_COLUMNS)
        w.writerows(rows)
    return root


# ``attrboost fit`` options of the shared 40-shapes model (conftest.shapes_model)
SHAPES_FIT = ["--objective", "task1", "--attributes", "colour,shape", "--text-column", "name", "--max-epochs", "3", "-q"]


# ------------------------------------------------------------------------------ features in memory
def toy(n_groups=8, per_group=30, signal_dims=4, noise_dims=28, seed=0, noise=4.0):
    """Groups separated in a few low-variance dimensions, hidden under high-variance noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (n_groups, signal_dims))
    g = np.repeat(np.arange(n_groups), per_group)
    sig = centres[g] + rng.normal(0, 0.25, (len(g), signal_dims))
    X = np.hstack([sig, rng.normal(0, noise, (len(g), noise_dims))]).astype(np.float32)
    attrs = pd.DataFrame({"colour": [f"c{i % 4}" for i in g], "kind": [f"k{i // 4}" for i in g]})
    return X, attrs, g


def toy_sample(seed=0):
    """A Sample of 160 items (8 groups of 20: 100 train, 20 val, 40 test) and its :func:`toy` features."""
    X, attrs, g = toy(per_group=20, seed=seed)
    rng = np.random.default_rng(seed)
    part = np.array(["train"] * 100 + ["val"] * 20 + ["test"] * 40)
    rng.shuffle(part)
    items = attrs.assign(id=[f"i{i}" for i in range(len(g))], group=g, part=part,
                         tags=[[f"w{k}"] for k in g])
    s = Sample(items=items, attributes=("colour", "kind"), vocab=[f"w{k}" for k in range(8)],
               params={"split": "random"}, fingerprint=f"toy{seed}", dataset="toy", dataset_fingerprint="toy")
    return s, X


def pixels(n=300, w=20, h=40, rank=30, seed=0) -> np.ndarray:
    """Pixel-like data in [0, 1]: a few smooth factors plus noise (decaying spectrum, as images have)."""
    rng = np.random.default_rng(seed)
    d = w * h * 3
    X = 0.5 + rng.normal(0, 1, (n, rank)) @ rng.normal(0, 0.05, (rank, d)) + rng.normal(0, 0.05, (n, d))
    return np.clip(X, 0, 1).astype(np.float32)


def noisy_groups(n_groups=10, per_group=30, signal_dims=4, noise_dims=124, seed=0, noise=4.0):
    """Groups separated in a few dimensions under high-variance noise (as :func:`toy`): features and group ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (n_groups, signal_dims))
    g = np.repeat(np.arange(n_groups), per_group)
    sig = centres[g] + rng.normal(0, 0.25, (len(g), signal_dims))
    return np.hstack([sig, rng.normal(0, noise, (len(g), noise_dims))]).astype(np.float32), g


def tie_heavy(seed: int, n: int = 150, dim: int = 3, n_attrs: int = 3, vocab: int = 6):
    """Small-integer embeddings (many exact ties, some zero rows), few labels, random tags."""
    rng = np.random.default_rng(seed)
    emb = rng.integers(0, 3, size=(n, dim))
    attrs = rng.integers(0, 2, size=(n, n_attrs))
    words = [f"w{i}" for i in range(vocab)]
    tags = [list(rng.choice(words, size=rng.integers(0, 4))) for _ in range(n)]  # may repeat words
    return emb, attrs, tags


def continuous(seed: int, n: int = 90, dim: int = 8, n_attrs: int = 7, values: int = 3):
    """Gaussian embeddings (no ties), integer labels, random tags (no repeated word)."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim))
    attrs = rng.integers(0, values, size=(n, n_attrs))
    words = [f"w{i}" for i in range(8)]
    tags = [list(rng.choice(words, size=rng.integers(0, 4), replace=False)) for _ in range(n)]
    return emb, attrs, tags


# ------------------------------------------------------------------------------ test doubles
class Interrupted(Exception):
    """Stands in for a Ctrl-C / killed kernel in the middle of an extraction."""


class Counting(torch.nn.Module):
    """Wraps a backbone, counts forwarded images (not the blank padding of :func:`attrboost.backbones.forward`),
    raises on forward call number ``fail_at`` (1-based)."""

    def __init__(self, inner, fail_at=None):
        super().__init__()
        self.inner, self.fail_at, self.calls, self.images = inner, fail_at, 0, 0

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise Interrupted("simulated interruption")
        self.images += int((x.flatten(1).abs().sum(1) > 0).sum())  # not the blanks padding a CPU micro-batch
        return self.inner(x)

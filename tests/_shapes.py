"""A tiny labelled catalogue for the bundle / index / CLI tests: coloured shapes on a light background.

Attributes ``colour`` (red, green, blue) and ``shape`` (square, disc) are plainly visible, so a head fitted for
a few epochs on frozen EfficientNet-Lite0 features separates them; names give task2/3 tags.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (210, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 210)}
SHAPES = ("square", "disc")


def write_shapes(folder: Path, n: int = 40, seed: int = 0, prefix: str = "s") -> tuple[Path, Path]:
    """``n`` 64x64 JPEGs in ``folder/images`` and ``folder/catalogue.csv`` (id, colour, shape, name)."""
    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour, shape = list(COLOURS)[i % 3], SHAPES[(i // 3) % 2]
        img = Image.new("RGB", (64, 64), tuple(int(v) for v in 230 + rng.integers(-10, 10, 3)))
        draw = ImageDraw.Draw(img)
        c, r = 32 + rng.integers(-6, 7, 2), int(rng.integers(14, 22))
        box = (int(c[0] - r), int(c[1] - r), int(c[0] + r), int(c[1] + r))
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
        img.save(images / f"{prefix}{i}.jpg", quality=95)
        rows.append({"id": f"{prefix}{i}", "colour": colour, "shape": shape, "name": f"{colour} {shape} thing"})
    csv_path = folder / "catalogue.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path, images

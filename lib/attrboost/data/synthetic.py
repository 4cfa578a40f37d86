"""Embedded synthetic catalogue: the project's offline default dataset.

Draws simple product pictures with PIL and writes them in the Kaggle "Fashion Product Images
(Small)" layout, so the normal loader reads them unchanged::

    <out_dir>/styles.csv        id,gender,masterCategory,subCategory,articleType,baseColour,
                                season,year,usage,productDisplayName
    <out_dir>/images/<id>.jpg   RGB, 60 px wide x 80 px high
    <out_dir>/manifest.json     generator version, parameters, and size + SHA-256 of every file
                                (written last; :func:`ensure_synthetic` checks the cached copy
                                against it on every use and regenerates a damaged one)

How visible each attribute is in the pixels (by design):

- ``articleType`` (and so ``masterCategory``/``subCategory``): strongly, a distinct silhouette;
- ``baseColour``: strongly, the fill colour (small per-image jitter);
- ``gender``: moderately, the silhouette's width and overall size;
- ``usage``: weakly, through the probabilities of the surface pattern (plain/striped/checked/dotted);
- ``season``: weakly, a faint background tint and the pattern density, both under noise.

Each image also gets its own position/scale jitter, a few degrees of rotation, background shade,
pattern phase and gaussian noise, so images of one group are never identical.

Groups (full tuples of the 7 attributes) are drawn with a seeded generator: ``n_groups`` distinct
tuples of ``per_group`` images each, plus ``n_extra`` "noise" products in small groups (fewer than
``min(per_group, 40)`` images each) that a minimum-group-size filter drops. The defaults
(110 x 44 + 302 = 5,142 images) let the original protocol (100 groups x 40 images) run unchanged.

Everything is deterministic in ``seed``: the catalogue (tuples, ids, names, per-image parameters)
comes from one ``numpy.random.Generator(PCG64(seed))`` in a fixed order, and each image is rendered
from its own integer seed, so the same seed gives a byte-identical ``styles.csv`` and identical
pixels (rendering order does not matter).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..cache import atomic_write, cache_dir, computing, fingerprint
from ..checks import check_int
from .catalogue import KAGGLE_COLUMNS

__all__ = ["VERSION", "ARTICLES", "COLOURS", "generate_synthetic", "plan_catalogue",
           "default_synthetic_dir", "ensure_synthetic", "render_image", "verify_synthetic"]

#: Bump when the generator's output changes, so cached copies are regenerated.
VERSION = 1

WIDTH, HEIGHT = 60, 80          # output size, like the real data
_SS = 2                         # drawing supersampling factor
_W, _H = WIDTH * _SS, HEIGHT * _SS

# --------------------------------------------------------------------------------------------
# Catalogue vocabulary
# --------------------------------------------------------------------------------------------

GENDERS = ("Men", "Women", "Unisex", "Boys", "Girls")
SEASONS = ("Summer", "Winter", "Fall", "Spring")
USAGES = ("Casual", "Formal", "Sports", "Ethnic")
PATTERNS = ("plain", "striped", "checked", "dotted")

#: name -> RGB fill colour (plainly visible).
COLOURS = {
    "Black": (28, 28, 30), "White": (242, 242, 240), "Blue": (40, 95, 205),
    "Navy Blue": (28, 38, 92), "Red": (205, 32, 38), "Green": (38, 145, 62),
    "Grey": (128, 128, 132), "Pink": (240, 140, 182), "Yellow": (242, 212, 40),
    "Brown": (122, 76, 36), "Purple": (122, 50, 152), "Orange": (244, 128, 28),
    "Beige": (218, 198, 156), "Maroon": (112, 22, 38),
}
#: relative frequency of each colour among groups (the real data is skewed towards these first ones).
_COLOUR_WEIGHTS = {"Black": 3.0, "White": 2.5, "Blue": 2.5, "Navy Blue": 1.5, "Red": 1.5, "Grey": 1.5,
                   "Green": 1.0, "Pink": 1.0, "Yellow": 0.8, "Brown": 1.0, "Purple": 0.8,
                   "Orange": 0.6, "Beige": 0.6, "Maroon": 0.6}

#: gender -> (overall scale, extra width factor): moderately visible.
_GENDER_SHAPE = {"Men": (1.00, 1.00), "Women": (0.97, 0.86), "Unisex": (0.98, 0.93),
                 "Boys": (0.82, 0.98), "Girls": (0.82, 0.84)}
#: season -> direction of a faint background tint in the (warm-cool, green-magenta) chroma plane,
#: and base pattern spacing (drawing px): weakly visible, each image adds random chroma of its own.
_SEASON_TINT = {"Summer": (1.0, 0.0), "Winter": (-1.0, 0.0), "Spring": (0.0, 1.0), "Fall": (0.0, -1.0)}
_TINT_AMPLITUDE, _TINT_NOISE = 2.0, 2.5  # RGB levels
_CHROMA = np.array([[1.0, 0.0, -1.0], [-0.5, 1.0, -0.5]])  # warm-cool, green-magenta
_SEASON_SPACING = {"Summer": 15, "Spring": 13, "Fall": 11, "Winter": 10}
#: usage -> probabilities of PATTERNS: weakly visible.
_USAGE_PATTERN = {"Casual": (0.40, 0.25, 0.20, 0.15), "Formal": (0.60, 0.28, 0.12, 0.00),
                  "Sports": (0.45, 0.45, 0.05, 0.05), "Ethnic": (0.25, 0.15, 0.20, 0.40)}


@dataclass(frozen=True)
class Article:
    """One article type: its categories, who wears it, what for, and how it is named."""
    master: str
    sub: str
    genders: tuple[str, ...]
    usages: tuple[str, ...]
    nouns: tuple[str, ...]


ARTICLES = {
    "Tshirts": Article("Apparel", "Topwear", ("Men", "Women", "Boys", "Girls", "Unisex"),
                       ("Casual", "Sports"), ("Tshirt", "T-shirt", "Polo T-shirt")),
    "Shirts": Article("Apparel", "Topwear", ("Men", "Women", "Boys"),
                      ("Casual", "Formal", "Ethnic"), ("Shirt",)),
    "Jeans": Article("Apparel", "Bottomwear", ("Men", "Women"), ("Casual",), ("Jeans",)),
    "Trousers": Article("Apparel", "Bottomwear", ("Men", "Women"), ("Casual", "Formal"), ("Trousers",)),
    "Shorts": Article("Apparel", "Bottomwear", ("Men", "Women", "Boys", "Girls"),
                      ("Casual", "Sports"), ("Shorts",)),
    "Skirts": Article("Apparel", "Bottomwear", ("Women", "Girls"), ("Casual", "Ethnic"), ("Skirt",)),
    "Dresses": Article("Apparel", "Dress", ("Women", "Girls"), ("Casual", "Ethnic", "Formal"), ("Dress",)),
    "Casual Shoes": Article("Footwear", "Shoes", ("Men", "Women", "Unisex", "Boys"),
                            ("Casual",), ("Casual Shoes", "Sneakers")),
    "Sports Shoes": Article("Footwear", "Shoes", ("Men", "Women", "Unisex"),
                            ("Sports",), ("Sports Shoes", "Running Shoes")),
    "Sandals": Article("Footwear", "Sandal", ("Men", "Women", "Girls"), ("Casual", "Ethnic"), ("Sandals",)),
    "Flip Flops": Article("Footwear", "Flip Flops", ("Men", "Women", "Unisex"), ("Casual",), ("Flip Flops",)),
    "Handbags": Article("Accessories", "Bags", ("Women",), ("Casual", "Formal"), ("Handbag",)),
    "Backpacks": Article("Accessories", "Bags", ("Unisex", "Men", "Women"), ("Casual", "Sports"), ("Backpack",)),
    "Watches": Article("Accessories", "Watches", ("Men", "Women", "Unisex"),
                       ("Casual", "Formal", "Sports"), ("Watch", "Analog Watch")),
    "Caps": Article("Accessories", "Headwear", ("Unisex", "Men"), ("Casual", "Sports"), ("Cap",)),
    "Belts": Article("Accessories", "Belts", ("Men", "Women"), ("Casual", "Formal"), ("Belt",)),
    "Sunglasses": Article("Accessories", "Eyewear", ("Men", "Women", "Unisex"), ("Casual", "Sports"),
                          ("Sunglasses",)),
}

_BRANDS = {
    "Apparel": ("Roadster", "Puma", "Nike", "Adidas", "Wrangler", "Levis", "Peter England", "Arrow",
                "Van Heusen", "United Colors of Benetton", "Fabindia", "Jealous 21", "Tokyo Talkies",
                "Mast & Harbour", "Flying Machine", "Allen Solly"),
    "Footwear": ("Puma", "Nike", "Adidas", "Reebok", "Catwalk", "Red Tape", "Woodland", "Bata",
                 "Crocs", "Fila", "Lotto", "Converse"),
    "Accessories": ("Titan", "Fastrack", "Fossil", "Baggit", "Lavie", "Wildcraft", "Skagen",
                    "Ray-Ban", "Carrera", "Hidesign", "Puma", "Nike"),
}
_PATTERN_WORDS = {"striped": ("Striped",), "checked": ("Checked", "Check"), "dotted": ("Polka Dot", "Printed")}
_PLAIN_WORDS = ("Solid", "Slim Fit", "Classic", "Basic", "")
_USAGE_WORDS = {"Casual": "Casual", "Formal": "Formal", "Sports": "Sports", "Ethnic": "Ethnic"}

# --------------------------------------------------------------------------------------------
# Silhouettes, in unit coordinates: u to the right, v downwards, both roughly in [-1, 1].
# Part kinds: ("poly", pts) and ("line", pts, width) are filled with the product colour and pattern;
# ("accent", pts, rgb) is drawn on top in a fixed colour; ("detail", pts, width) in the outline colour.
# --------------------------------------------------------------------------------------------


def _ellipse(cu, cv, ru, rv, start=0.0, stop=360.0, n=28):
    angles = np.radians(np.linspace(start, stop, n, endpoint=(stop - start) < 360))
    return [(cu + ru * math.cos(a), cv + rv * math.sin(a)) for a in angles]


def _mirror(pts):
    return [(-u, v) for u, v in pts]


_ROUND = _W / _H  # converts a u-radius to the v-radius that looks circular on the canvas

SHAPES = {
    "Tshirts": [("poly", [(-0.30, -0.80), (-0.12, -0.80), (0, -0.70), (0.12, -0.80), (0.30, -0.80),
                          (0.85, -0.45), (0.65, -0.15), (0.42, -0.32), (0.42, 0.85), (-0.42, 0.85),
                          (-0.42, -0.32), (-0.65, -0.15), (-0.85, -0.45)])],
    "Shirts": [("poly", [(-0.30, -0.82), (-0.10, -0.86), (0, -0.70), (0.10, -0.86), (0.30, -0.82),
                         (0.62, -0.62), (0.80, 0.55), (0.60, 0.58), (0.46, -0.25), (0.44, 0.85),
                         (-0.44, 0.85), (-0.46, -0.25), (-0.60, 0.58), (-0.80, 0.55), (-0.62, -0.62)]),
               ("detail", [(0, -0.70), (0, 0.85)], 2),
               ("detail", [(-0.12, -0.86), (-0.02, -0.60), (-0.22, -0.70)], 2),
               ("detail", [(0.12, -0.86), (0.02, -0.60), (0.22, -0.70)], 2)],
    "Jeans": [("poly", [(-0.42, -0.85), (0.42, -0.85), (0.46, -0.55), (0.34, 0.90), (0.10, 0.90),
                        (0.02, -0.30), (-0.02, -0.30), (-0.10, 0.90), (-0.34, 0.90), (-0.46, -0.55)]),
              ("detail", [(-0.43, -0.74), (0.43, -0.74)], 2),
              ("detail", [(-0.40, -0.60), (-0.24, -0.60), (-0.20, -0.74)], 2),
              ("detail", [(0.40, -0.60), (0.24, -0.60), (0.20, -0.74)], 2),
              ("detail", [(0, -0.74), (0, -0.35)], 2)],
    "Trousers": [("poly", [(-0.40, -0.85), (0.40, -0.85), (0.45, 0.90), (0.07, 0.90), (0.0, -0.35),
                           (-0.07, 0.90), (-0.45, 0.90)]),
                 ("detail", [(-0.41, -0.76), (0.41, -0.76)], 2),
                 ("detail", [(-0.24, -0.62), (-0.26, 0.88)], 1),
                 ("detail", [(0.24, -0.62), (0.26, 0.88)], 1)],
    "Shorts": [("poly", [(-0.46, -0.55), (0.46, -0.55), (0.58, 0.35), (0.06, 0.42), (0, 0.0),
                         (-0.06, 0.42), (-0.58, 0.35)]),
               ("detail", [(-0.47, -0.44), (0.47, -0.44)], 2)],
    "Skirts": [("poly", [(-0.30, -0.62), (0.30, -0.62), (0.66, 0.56), (-0.66, 0.56)]),
               ("detail", [(-0.31, -0.50), (0.31, -0.50)], 2),
               ("detail", [(-0.12, -0.50), (-0.26, 0.56)], 1),
               ("detail", [(0.12, -0.50), (0.26, 0.56)], 1)],
    "Dresses": [("poly", [(-0.28, -0.92), (-0.19, -0.92), (-0.15, -0.62), (0.15, -0.62), (0.19, -0.92),
                          (0.28, -0.92), (0.31, -0.48), (0.22, -0.15), (0.70, 0.90), (-0.70, 0.90),
                          (-0.22, -0.15), (-0.31, -0.48)]),
                ("detail", [(-0.22, -0.15), (0.22, -0.15)], 2)],
    "Casual Shoes": [("poly", [(-0.85, 0.25), (-0.86, -0.08), (-0.72, -0.24), (-0.36, -0.24),
                               (-0.10, -0.04), (0.45, 0.02), (0.80, 0.12), (0.90, 0.25)]),
                     ("accent", [(-0.88, 0.24), (0.92, 0.24), (0.90, 0.36), (-0.86, 0.36)], (236, 234, 228)),
                     ("detail", [(-0.28, -0.16), (-0.18, -0.04)], 2),
                     ("detail", [(-0.16, -0.12), (-0.06, 0.0)], 2)],
    "Sports Shoes": [("poly", [(-0.84, 0.16), (-0.90, -0.22), (-0.74, -0.42), (-0.50, -0.30),
                               (-0.20, -0.20), (0.40, -0.06), (0.82, 0.04), (0.92, 0.16)]),
                     ("accent", [(-0.90, 0.15), (0.94, 0.15), (0.88, 0.44), (-0.86, 0.44)], (222, 224, 230)),
                     ("detail", [(-0.62, 0.06), (-0.10, -0.02), (0.40, -0.02)], 3)],
    "Sandals": [("poly", [(-0.88, 0.28), (0.90, 0.28), (0.88, 0.42), (-0.86, 0.42)]),
                ("line", [(-0.58, 0.29), (-0.44, 0.0), (-0.26, -0.08), (-0.06, 0.29)], 5),
                ("line", [(0.10, 0.29), (0.30, 0.0), (0.48, -0.02), (0.64, 0.29)], 5),
                ("line", [(-0.84, 0.29), (-0.80, -0.06), (-0.56, 0.06)], 5)],
    "Flip Flops": [("poly", _ellipse(0, 0.02, 0.36, 0.86)),
                   ("detail", [(-0.30, 0.05), (0, -0.55), (0.30, 0.05)], 4)],
    "Handbags": [("poly", [(-0.70, -0.15), (0.70, -0.15), (0.84, 0.75), (-0.84, 0.75)]),
                 ("line", _ellipse(0, -0.15, 0.42, 0.55, 180, 360, 16), 6),
                 ("detail", [(-0.72, 0.05), (0, 0.22), (0.72, 0.05)], 2)],
    "Backpacks": [("poly", [(-0.40, -0.80), (0.40, -0.80), (0.58, -0.60), (0.60, 0.85), (-0.60, 0.85),
                            (-0.58, -0.60)]),
                  ("line", _ellipse(0, -0.80, 0.16, 0.12, 180, 360, 10), 5),
                  ("detail", [(-0.38, 0.20), (0.38, 0.20), (0.38, 0.70), (-0.38, 0.70), (-0.38, 0.20)], 2),
                  ("detail", [(-0.30, 0.20), (0, 0.30), (0.30, 0.20)], 2)],
    "Watches": [("poly", [(-0.20, -0.95), (0.20, -0.95), (0.20, 0.95), (-0.20, 0.95)]),
                ("poly", _ellipse(0, 0, 0.46, 0.46 * _ROUND)),
                ("accent", _ellipse(0, 0, 0.34, 0.34 * _ROUND), (244, 242, 236)),
                ("detail", [(0, 0), (0, -0.30)], 2),
                ("detail", [(0, 0), (0.20, 0.06)], 2),
                ("detail", [(-0.20, -0.70), (0.20, -0.70)], 1),
                ("detail", [(-0.20, 0.70), (0.20, 0.70)], 1)],
    "Caps": [("poly", _ellipse(-0.12, 0.14, 0.62, 0.62 * _ROUND, 180, 360, 18) + [(0.50, 0.14)]),
             ("poly", [(0.30, 0.06), (0.95, 0.12), (0.92, 0.26), (0.30, 0.22)]),
             ("poly", [(-0.74, 0.10), (0.50, 0.10), (0.50, 0.24), (-0.74, 0.24)]),
             ("detail", [(-0.12, -0.46), (-0.12, 0.12)], 1)],
    "Belts": [("poly", [(-0.95, -0.09), (0.95, -0.09), (0.95, 0.09), (-0.95, 0.09)]),
              ("accent", [(-0.80, -0.16), (-0.52, -0.16), (-0.52, 0.16), (-0.80, 0.16)], (176, 172, 160)),
              ("accent", [(-0.74, -0.09), (-0.58, -0.09), (-0.58, 0.09), (-0.74, 0.09)], (232, 232, 230)),
              ("detail", [(0.20, 0), (0.22, 0)], 3), ("detail", [(0.40, 0), (0.42, 0)], 3),
              ("detail", [(0.60, 0), (0.62, 0)], 3)],
    "Sunglasses": [("poly", _ellipse(-0.46, 0.0, 0.38, 0.27)),
                   ("poly", _ellipse(0.46, 0.0, 0.38, 0.27)),
                   ("line", [(-0.10, -0.08), (0, -0.14), (0.10, -0.08)], 5),
                   ("line", [(-0.84, -0.08), (-0.96, -0.14)], 4),
                   ("line", [(0.84, -0.08), (0.96, -0.14)], 4)],
}
assert set(SHAPES) == set(ARTICLES)

# --------------------------------------------------------------------------------------------
# Planning: the catalogue (rows + per-image render parameters), no pixels yet
# --------------------------------------------------------------------------------------------


def _check_int(name, value, minimum):
    return check_int(value, name, min_val=minimum)


def _default_extra(n_groups: int, per_group: int) -> int:
    return n_groups * per_group // 16


def _draw_tuple(rng) -> tuple[str, ...]:
    """One random 7-attribute tuple in :data:`~attrboost.data.catalogue.ATTRIBUTES` order."""
    article_names = list(ARTICLES)
    colour_names = list(COLOURS)
    w = np.array([_COLOUR_WEIGHTS[c] for c in colour_names])
    art = article_names[rng.integers(len(article_names))]
    spec = ARTICLES[art]
    gender = spec.genders[rng.integers(len(spec.genders))]
    colour = colour_names[rng.choice(len(colour_names), p=w / w.sum())]
    season = SEASONS[rng.integers(len(SEASONS))]
    usage = spec.usages[rng.integers(len(spec.usages))]
    return (gender, spec.master, spec.sub, art, colour, season, usage)


def plan_catalogue(*, n_groups: int = 110, per_group: int = 44, seed: int = 0,
                   n_extra: int | None = None) -> list[dict]:
    """The catalogue's rows, without drawing any image.

    Returns one dict per product, sorted by ``id``: the :data:`~attrboost.data.catalogue.KAGGLE_COLUMNS` plus the private render keys
    ``_pattern`` (one of PATTERNS) and ``_seed`` (the image's own integer seed). Cheap: lets tests
    and callers check the group structure of a large catalogue without writing it.

    Parameters
    ----------
    n_groups : int >= 1
        Number of distinct 7-attribute tuples that get exactly ``per_group`` images.
    per_group : int >= 1
        Images per main group.
    seed : int >= 0
        Seed of the whole catalogue.
    n_extra : int >= 0 or None
        Extra "noise" products in small groups of fewer than ``min(per_group, 40)`` images each, with
        tuples distinct from the main groups and from each other. Default ``n_groups * per_group // 16``
        (302 for the defaults). Ignored (no extras) when ``per_group == 1``.
    """
    n_groups = _check_int("n_groups", n_groups, 1)
    per_group = _check_int("per_group", per_group, 1)
    seed = _check_int("seed", seed, 0)
    n_extra = _default_extra(n_groups, per_group) if n_extra is None else _check_int("n_extra", n_extra, 0)
    small_max = min(per_group, 40) - 1  # largest size of a "noise" group
    if small_max < 1:
        n_extra = 0

    if n_groups > 5000:
        raise ValueError(f"n_groups must be at most 5000 (the synthetic attribute space), got {n_groups}")
    rng = np.random.Generator(np.random.PCG64(seed))
    sizes = [per_group] * n_groups
    remaining = n_extra
    while remaining > 0:
        size = min(remaining, int(rng.integers(1, small_max + 1)))
        sizes.append(size)
        remaining -= size

    space = sum(len(a.genders) * len(a.usages) for a in ARTICLES.values()) * len(COLOURS) * len(SEASONS)
    if len(sizes) > space:
        raise ValueError(f"n_groups={n_groups} plus {len(sizes) - n_groups} extra groups exceed the "
                         f"{space} distinct attribute tuples the synthetic catalogue has")
    tuples, seen = [], set()
    tries_left = 200 * len(sizes) + 1000
    while len(tuples) < len(sizes):
        t = _draw_tuple(rng)
        if t not in seen:
            seen.add(t)
            tuples.append(t)
        tries_left -= 1
        if tries_left == 0 and len(tuples) < len(sizes):
            raise ValueError(f"n_groups={n_groups} (+ extra groups) is more than the synthetic attribute "
                         f"space can supply as distinct tuples; use a smaller n_groups")

    n_total = sum(sizes)
    id_span = max(60000, 10 * n_total)
    ids = np.sort(rng.choice(id_span, size=n_total, replace=False) + 1000)
    ids = ids[rng.permutation(n_total)]  # ids not in group order

    rows, k = [], 0
    for (gender, master, sub, art, colour, season, usage), size in zip(tuples, sizes):
        spec = ARTICLES[art]
        brands = _BRANDS[master]
        group_brands = [brands[i] for i in rng.choice(len(brands), size=3, replace=False)]
        base_year = int(rng.integers(2010, 2019))
        for _ in range(size):
            pattern = PATTERNS[rng.choice(len(PATTERNS), p=_USAGE_PATTERN[usage])]
            if pattern == "plain":
                adjective = _PLAIN_WORDS[rng.integers(len(_PLAIN_WORDS))]
            else:
                words = _PATTERN_WORDS[pattern]
                adjective = words[rng.integers(len(words))]
            gender_word = gender + "'s" if gender in ("Men", "Women") and rng.random() < 0.1 else gender
            usage_word = _USAGE_WORDS[usage] if rng.random() < 0.35 else ""
            if usage_word and usage_word in " ".join(spec.nouns):
                usage_word = ""  # no "Casual Casual Shoes"
            noun = spec.nouns[rng.integers(len(spec.nouns))]
            brand = group_brands[rng.choice(3, p=(0.6, 0.25, 0.15))]
            name = " ".join(w for w in (brand, gender_word, colour, adjective, usage_word, noun) if w)
            year = int(np.clip(base_year + rng.integers(-1, 2), 2010, 2018))
            rows.append({
                "id": int(ids[k]), "gender": gender, "masterCategory": master, "subCategory": sub,
                "articleType": art, "baseColour": colour, "season": season, "year": year,
                "usage": usage, "productDisplayName": name,
                "_pattern": pattern, "_seed": int(rng.integers(2**63 - 1)),
            })
            k += 1
    rows.sort(key=lambda r: r["id"])
    return rows

# --------------------------------------------------------------------------------------------
# Rendering one image
# --------------------------------------------------------------------------------------------


def _shade(rgb, factor):
    """Darker (factor < 1) or lighter (factor > 1, towards white) version of a colour."""
    if factor <= 1:
        return tuple(int(round(c * factor)) for c in rgb)
    t = factor - 1
    return tuple(int(round(c + t * (255 - c))) for c in rgb)


def render_image(row: dict) -> Image.Image:
    """Draw the 60x80 RGB picture of one planned row (see :func:`plan_catalogue`); deterministic."""
    rng = np.random.Generator(np.random.PCG64(row["_seed"]))
    art, colour, gender, season = row["articleType"], row["baseColour"], row["gender"], row["season"]

    # background: light grey shade + faint season tint + random tint of this image
    grey = rng.uniform(224, 250)
    chroma = _TINT_AMPLITUDE * np.array(_SEASON_TINT[season]) + rng.normal(0, _TINT_NOISE, 2)
    bg = tuple(int(v) for v in np.clip(grey + chroma @ _CHROMA, 0, 255).round())

    # product colour with small jitter; pattern and outline shades derived from it
    fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + rng.normal(0, 7, 3), 0, 255).round())
    lum = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    pattern_rgb = _shade(fill, 0.72) if lum > 110 else _shade(fill, 1.45)
    outline_rgb = _shade(fill, 0.55) if lum > 60 else _shade(fill, 1.6)

    # geometry: gender-dependent scale/width, jitter, rotation, translation, optional mirror
    scale, width = _GENDER_SHAPE[gender]
    scale *= rng.uniform(0.92, 1.04)
    sx = 0.45 * _W * scale * width * rng.uniform(0.95, 1.05)
    sy = 0.45 * _H * scale
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    angle = math.radians(rng.uniform(-6, 6))
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    cx = _W / 2 + rng.uniform(-6, 6)
    cy = _H / 2 + rng.uniform(-6, 6)

    def place(pts):
        out = []
        for u, v in pts:
            x, y = mirror * u * sx, v * sy
            out.append((cx + x * cos_a - y * sin_a, cy + x * sin_a + y * cos_a))
        return out

    parts = [(kind, place(p[0]), *p[1:]) for kind, *p in SHAPES[art]]

    # product mask
    mask = Image.new("L", (_W, _H), 0)
    md = ImageDraw.Draw(mask)
    for kind, pts, *extra in parts:
        if kind == "poly":
            md.polygon(pts, fill=255)
        elif kind == "line":
            md.line(pts, fill=255, width=extra[0] * _SS, joint="curve")

    # fill layer with the surface pattern (density weakly tied to season)
    layer = Image.new("RGB", (_W, _H), fill)
    pattern = row["_pattern"]
    if pattern != "plain":
        ld = ImageDraw.Draw(layer)
        step = max(6, _SEASON_SPACING[season] + int(rng.integers(-3, 4)))
        ox, oy = rng.integers(step), rng.integers(step)
        thick = max(2, step // 3)
        if pattern in ("striped", "checked"):
            for y in range(int(oy) - step, _H + step, step):
                ld.rectangle([0, y, _W, y + thick - 1], fill=pattern_rgb)
        if pattern == "checked":
            for x in range(int(ox) - step, _W + step, step):
                ld.rectangle([x, 0, x + thick - 1, _H], fill=pattern_rgb)
        if pattern == "dotted":
            r = max(1.5, step / 5)
            for y in range(int(oy) - step, _H + step, step):
                shift = step / 2 if (y // step) % 2 else 0
                for x in np.arange(ox - step + shift, _W + step, step):
                    ld.ellipse([x - r, y - r, x + r, y + r], fill=pattern_rgb)

    img = Image.composite(layer, Image.new("RGB", (_W, _H), bg), mask)
    draw = ImageDraw.Draw(img)
    for kind, pts, *extra in parts:
        if kind == "poly":
            draw.polygon(pts, outline=outline_rgb, width=2)
        elif kind == "accent":
            draw.polygon(pts, fill=extra[0], outline=_shade(extra[0], 0.6), width=2)
        elif kind == "detail":
            draw.line(pts, fill=outline_rgb, width=extra[0] * _SS, joint="curve")

    img = img.resize((WIDTH, HEIGHT), Image.Resampling.BOX)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(2, 6), (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------
# Writing the catalogue
# --------------------------------------------------------------------------------------------


def generate_synthetic(out_dir, *, n_groups: int = 110, per_group: int = 44, seed: int = 0,
                       progress: bool = True, n_extra: int | None = None) -> Path:
    """Write a synthetic catalogue in the Kaggle layout into ``out_dir`` and return it as a Path.

    ``out_dir`` must not exist or be empty. The parameters are those of :func:`plan_catalogue`;
    ``progress`` shows a tqdm bar. The result is not written atomically: use
    :func:`ensure_synthetic` for a cached, atomic copy.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out_dir must be a new or empty directory, got {str(out)!r}")
    rows = plan_catalogue(n_groups=n_groups, per_group=per_group, seed=seed, n_extra=n_extra)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)

    jobs = [(row, images / f"{row['id']}.jpg") for row in rows]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs), desc="synthetic images", unit="img")
    for row, path in jobs:  # ~1 ms per image: a plain loop is fast enough
        render_image(row).save(path, format="JPEG", quality=90)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()

    with open(out / "styles.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(KAGGLE_COLUMNS)
        for row in rows:
            writer.writerow([row[c] for c in KAGGLE_COLUMNS])
    manifest = {"version": VERSION, "params": _params(n_groups, per_group, seed, n_extra),
                "count": len(rows), "files": _file_table(out)}
    atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=0, sort_keys=True)))
    return out


MANIFEST = "manifest.json"


def _file_table(root: Path) -> dict[str, list]:
    """``{relative path: [size, sha256 prefix]}`` of styles.csv and every file in images/ (~0.1 s for
    the default catalogue)."""
    table = {}
    paths = [root / "styles.csv", *sorted((root / "images").iterdir())] if (root / "images").is_dir() \
        else [root / "styles.csv"]
    for p in paths:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        table[p.relative_to(root).as_posix()] = [len(data), hashlib.sha256(data).hexdigest()[:16]]
    return table


def verify_synthetic(root: str | os.PathLike) -> str | None:
    """Check a generated catalogue against its manifest: None if intact, else what is wrong."""
    root = Path(root)
    if not root.is_dir():
        return "it does not exist"
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        expected, count = manifest["files"], int(manifest["count"])
    except FileNotFoundError:
        return (f"it has no {MANIFEST} (an interrupted generation, or written by an older version that "
                "kept none)")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its {MANIFEST} is unreadable ({type(exc).__name__}: {exc})"
    found = _file_table(root)
    n_images = sum(1 for k in found if k.startswith("images/"))
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    changed = sorted(k for k in set(expected) & set(found) if found[k] != list(expected[k]))
    if not (missing or extra or changed) and n_images == count:
        return None
    parts = [f"it does not match its {MANIFEST}: {n_images} images, expected {count}"]
    for what, names in (("missing", missing), ("changed (size or content)", changed), ("unexpected", extra)):
        if names:
            parts.append(f"{len(names)} {what}, e.g. {names[:3]}")
    return "; ".join(parts)


def _params(n_groups, per_group, seed, n_extra):
    n_groups = _check_int("n_groups", n_groups, 1)
    per_group = _check_int("per_group", per_group, 1)
    n_extra = _default_extra(n_groups, per_group) if n_extra is None else _check_int("n_extra", n_extra, 0)
    return {"n_groups": n_groups, "per_group": per_group, "seed": _check_int("seed", seed, 0),
            "n_extra": n_extra}


def default_synthetic_dir(*, n_groups: int = 110, per_group: int = 44, seed: int = 0,
                          n_extra: int | None = None) -> Path:
    """Where :func:`ensure_synthetic` keeps the catalogue for these parameters (not created here):
    ``cache_dir() / "synthetic" / f"v{VERSION}-{fingerprint}"``."""
    params = _params(n_groups, per_group, seed, n_extra)
    return cache_dir() / "synthetic" / f"v{VERSION}-{fingerprint('synthetic', VERSION, params)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def ensure_synthetic(*, n_groups: int = 110, per_group: int = 44, seed: int = 0, progress: bool = True,
                     n_extra: int | None = None) -> Path:
    """Return the cached catalogue directory for these parameters, generating it if missing or damaged.

    The cached copy is checked against its manifest on every call (:func:`verify_synthetic`: the
    file count, and the size and SHA-256 of styles.csv and every image); a copy that does not match
    (a deleted or truncated image, an interrupted or older generation without a manifest) is
    regenerated, with a warning saying what was wrong: the result is identical to an undamaged copy.

    Generation goes into a temporary sibling directory (``.<name>.tmp-<pid>-*``) which is renamed
    into place at the end (a damaged copy is first renamed aside to ``.<name>.old-<pid>-*``, then
    removed), so an interrupted run leaves no half-written catalogue; such directories left by dead
    processes on this machine are removed.
    """
    final = default_synthetic_dir(n_groups=n_groups, per_group=per_group, seed=seed, n_extra=n_extra)
    if verify_synthetic(final) is None:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with computing(final):  # a process that needs the same catalogue meanwhile waits for this one, then reads it
        return _generate_in_place(final, n_groups=n_groups, per_group=per_group, seed=seed, progress=progress,
                                  n_extra=n_extra)


def _generate_in_place(final: Path, *, n_groups: int, per_group: int, seed: int, progress: bool,
                       n_extra: int | None) -> Path:
    problem = verify_synthetic(final)
    if problem is None:  # generated by another process while this one waited
        return final
    if final.exists():
        warnings.warn(f"synthetic catalogue {final}: {problem}; regenerating it (the same parameters "
                      "give identical files)", stacklevel=3)
    final.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old"):
        prefix = f".{final.name}.{kind}-"
        for leftover in final.parent.glob(prefix + "*"):
            pid = leftover.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)

    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-{os.getpid()}-"))
    aside = None
    try:
        generate_synthetic(tmp, n_groups=n_groups, per_group=per_group, seed=seed, progress=progress,
                           n_extra=n_extra)
        if final.exists() and verify_synthetic(final) is not None:  # still damaged (no one fixed it meanwhile)
            aside = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-{os.getpid()}-"))
            os.replace(final, aside / "catalogue")
        try:
            os.replace(tmp, final)
        except OSError:
            if verify_synthetic(final) is not None:  # lost a race only if the winner finished
                raise
    finally:
        for leftover in (tmp, aside):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return final

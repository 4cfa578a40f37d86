"""Fixtures shared by the test modules (plain helpers: ``tests/helpers.py``).

- ``cache``: a private, empty ``$ATTRBOOST_CACHE`` for one test. Modules whose every test needs one say
  ``pytestmark = pytest.mark.usefixtures("cache")``.
- ``tiny`` / ``sample``: a tiny Kaggle-layout catalogue (6 groups of 8) and its protocol sample.
- ``shapes_model``: the 40 generated shapes and a model ``attrboost fit`` fitted on them, built once per
  session (per xdist worker) and shared by the CLI, serve and scale tests: read it, never write into it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from _shapes import write_shapes
from helpers import SHAPES_FIT, make_kaggle

from attrboost.data import load_kaggle, sample_protocol


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache directory (``tmp_path / "cache"``, not created), fresh for each test, so that nothing
    touches the real cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ATTRBOOST_CACHE", str(path))
    return path


@pytest.fixture
def tiny(tmp_path):
    """A tiny catalogue: 6 groups of 8 items, no small groups (under ``tmp_path / "data"``)."""
    return load_kaggle(make_kaggle(tmp_path / "data", n_groups=6, per_group=8, small_groups=0))


@pytest.fixture
def sample(tiny):
    """The protocol sample of :func:`tiny`: all 6 groups of 8, 12 test items, a quarter of the rest for
    validation, seed 0."""
    return sample_protocol(tiny, n_groups=6, per_group=8, n_test=12, val_fraction=0.25, seed=0)


@dataclass(frozen=True)
class ShapesModel:
    csv: Path  # the catalogue: id, colour, shape, name
    images: Path  # s0.jpg .. s39.jpg, nothing else
    model: Path  # the bundle written by `attrboost fit`


@pytest.fixture(scope="session")
def shapes_model(tmp_path_factory) -> ShapesModel:
    """40 generated shapes (``write_shapes(n=40)``) and a model fitted on them by ``attrboost fit`` with
    :data:`helpers.SHAPES_FIT` (Task 1 on colour and shape, 3 epochs), in a cache of its own.

    Shared by every test of the session: never write into these folders. A test that needs to change the
    model or the catalogue copies it first (``shutil.copytree(shapes_model.model, tmp_path / "model")``)."""
    from attrboost.search.cli import main

    root = tmp_path_factory.mktemp("shapes40")
    csv_path, images = write_shapes(root / "cat", n=40)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTRBOOST_CACHE", str(root / "cache"))
        assert main(["fit", "--csv", str(csv_path), "--images", str(images), "--out", str(root / "model"),
                     *SHAPES_FIT]) == 0
    return ShapesModel(csv=csv_path, images=images, model=root / "model")

"""Catalogues by name: the embedded synthetic default, the real data in the Kaggle layout, or a user's CSV."""
from __future__ import annotations

import os
from pathlib import Path

from .catalogue import DATA_HELP, DATASETS, Catalogue, DataError, default_fashion_dir, load_csv, load_kaggle
from .synthetic import ensure_synthetic

__all__ = ["load_dataset"]


def load_dataset(name: str = "synthetic", data_dir: str | os.PathLike | None = None, **kw) -> Catalogue:
    """Load a catalogue by name: ``synthetic`` (embedded default, generated and cached on first
    use; ``kw`` go to :func:`~attrboost.data.synthetic.ensure_synthetic`), ``fashion`` (the real data in
    the Kaggle layout at ``data_dir``; ``kw`` go to :func:`load_kaggle`, e.g. ``encoding``) or ``csv`` (a
    user's own catalogue: ``kw`` are ``csv`` (the file), ``images`` (the image folder; None: the CSV's
    folder), ``attributes`` and the other options of :func:`load_csv`; ``data_dir`` is not used)."""
    if name == "synthetic":
        path = Path(data_dir) if data_dir else ensure_synthetic(**kw)
        return load_kaggle(path, name="synthetic")
    if name == "fashion":
        path = data_dir or default_fashion_dir()
        if path is None:
            raise DataError(f"the real data was not found. {DATA_HELP}")
        return load_kaggle(path, name="fashion", **kw)
    if name == "csv":
        csv_path, images = kw.pop("csv", None), kw.pop("images", None)
        if csv_path is None:
            raise DataError("dataset 'csv' needs the catalogue file: csv=<file> (notebooks: -p csv FILE; "
                            "CLI: --csv FILE), with --attributes naming its label columns")
        if not kw.get("attributes"):
            raise DataError(f"dataset 'csv' ({csv_path}) needs its attribute columns: attributes=[...] "
                            "(notebooks: -p attributes a,b; CLI: --attributes a,b)")
        return load_csv(csv_path, images, name="csv", **kw)
    raise DataError(f"unknown dataset {name!r}; known: {list(DATASETS)} (or use attrboost.data.load_csv "
                    "for your own catalogue)")

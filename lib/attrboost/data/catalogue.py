"""One dataset abstraction, four sources.

A :class:`Catalogue` is a table of items with columns ``id`` (str, unique), ``image_path`` (str),
one column per categorical attribute, and ``text`` (the product name the tags come from), plus
image loading. It is filled by:

1. :func:`load_kaggle` - the Kaggle "Fashion Product Images (Small)" layout
   (``styles.csv`` + ``images/<id>.jpg``; the ``myntradataset/`` nesting of Kaggle's zip is accepted);
2. :func:`attrboost.data.download.download_fashion` - fetches the Hugging Face copy and writes
   the Kaggle layout, then 1. reads it;
3. :func:`load_csv` - a user's own catalogue: any CSV with an id or path column, any attribute
   columns and an optional text column;
4. :func:`attrboost.data.synthetic.ensure_synthetic` - the embedded, generated default, written in
   the Kaggle layout.

Bad input policy (each case is tested):

* missing directory / CSV / image folder, missing columns -> ``DataError`` naming what is missing
  and what is expected;
* rows with an empty attribute value -> dropped, counted in ``report["dropped_empty_attributes"]``
  and warned about (the real csv has a few);
* rows whose image file is missing -> dropped, counted in ``report["dropped_missing_images"]`` with
  the first ids, and warned about; unreadable images are detected (and skipped, counted) only when
  the protocol samples them (see :mod:`attrboost.data.sampling`), because opening ~40k files up
  front would cost more than the whole study;
* duplicated ids (Kaggle ``id``, or the CSV's id/path column) -> ``DataError`` naming the file, the
  column and the first duplicated values (the same image would land in two groups);
* a CSV not in the expected encoding (UTF-8, with or without the byte-order mark Excel writes) ->
  ``DataError`` naming the file and the encoding tried; ``encoding=`` reads other encodings;
* an unknown dataset name -> ``DataError`` listing the known names.

Images are decoded by one function, :func:`load_image` (used by sampling, pixel loading, feature
extraction and figures): any PIL mode to 8-bit RGB, 16-bit scaled, transparency composited on white
(:func:`to_rgb`).

``Catalogue.fingerprint`` (the key of every feature cache) depends on the CSV's content, the loader
options and the byte size of every kept image, not on where the folder lies: a moved or copied data
folder keeps its caches.
"""
from __future__ import annotations

import csv
import hashlib
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ..cache import fingerprint

ENV_DATA_DIR = "ATTRBOOST_DATA_DIR"
#: The 7 categorical attributes of the Kaggle catalogue: a group is a full tuple of them.
ATTRIBUTES = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")
#: The header of the Kaggle ``styles.csv`` (written by the download and the synthetic generator).
KAGGLE_COLUMNS = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour",
                  "season", "year", "usage", "productDisplayName")
#: Columns a catalogue and a protocol sample add next to the attributes: no attribute may be named so.
RESERVED_COLUMNS = ("id", "image_path", "text", "group", "part", "tags")
#: The data sets :func:`load_dataset` knows by name (``csv``: a user's own catalogue, :func:`load_csv`).
DATASETS = ("synthetic", "fashion", "csv")
DATA_HELP = (
    "Get the real data with `make data` (downloads ashraq/fashion-product-images-small from the "
    "Hugging Face hub), or by hand from https://www.kaggle.com/datasets/paramaggarwal/"
    "fashion-product-images-small: unpack it so that <dir>/styles.csv and <dir>/images/ exist, then "
    f"pass data_dir=<dir> (notebooks: -p data_dir <dir>; CLI: --data-dir <dir>) or set ${ENV_DATA_DIR}."
)


class DataError(ValueError):
    """Bad or missing input data; the message says what is wrong and what is expected."""


@dataclass
class Catalogue:
    """A labelled image catalogue: ``items`` has ``id, image_path, <attributes...>, text``."""

    name: str
    items: pd.DataFrame
    attributes: tuple[str, ...]
    source: str
    fingerprint: str
    report: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def load_image(self, i: int) -> Image.Image:
        """Open item ``i`` (row position) as an RGB PIL image."""
        return load_image(self.items["image_path"].iloc[i])

    def __repr__(self) -> str:
        return (f"Catalogue({self.name!r}, {len(self)} items, attributes={list(self.attributes)}, "
                f"source={self.source!r})")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file as an 8-bit RGB PIL image: the one decoder every part of the study uses
    (sampling's readability check, pixel loading for PCA, feature extraction, figures).

    See :func:`to_rgb` for how each mode is converted. A file that cannot be decoded raises a
    ``DataError`` naming it.
    """
    try:
        with Image.open(path) as im:
            return to_rgb(im, source=path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, ...
        raise DataError(f"{os.fspath(path)}: cannot decode the image ({type(exc).__name__}: {exc}); "
                        "expected an image file PIL can read (JPEG, PNG, ...)") from exc


_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_16BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(img: Image.Image, *, source: str | os.PathLike | None = None) -> Image.Image:
    """Convert a PIL image of any common mode to 8-bit RGB.

    * ``RGB``, ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr`` without transparency: ``img.convert("RGB")``
      (unchanged from before, so the JPEGs of the real and synthetic data give the same pixels);
    * 16-bit greyscale (``I;16*``; ``I`` is read as 16-bit, as Pillow used to open 16-bit PNGs):
      scaled to 8 bits, ``round(v * 255 / 65535)`` (values outside 0..65535 are clipped), instead of
      Pillow's clipping at 255, which turns almost every pixel white;
    * anything with transparency (``RGBA``, ``LA``, ``PA``, a PNG ``tRNS`` colour or palette entry):
      composited on white, as product photos are shown, instead of dropping alpha (black background);
    * ``F`` (32-bit float) has no agreed range: ``DataError``.
    """
    mode = img.mode
    transparency = img.info.get("transparency")
    if mode in _16BIT_MODES:
        a = np.asarray(img).astype(np.int64)
        opaque = None if not isinstance(transparency, int) else a != transparency
        a8 = ((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        if opaque is not None:
            a8[~opaque] = 255
        return Image.fromarray(a8, "L").convert("RGB")
    if mode in _ALPHA_MODES or transparency is not None:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if mode == "F":
        where = f"{os.fspath(source)}: " if source is not None else ""
        raise DataError(f"{where}32-bit float images (mode 'F') are not supported; expected 8- or 16-bit "
                        "images (JPEG, PNG, TIFF)")
    return img.convert("RGB")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _check_unique_ids(df: pd.DataFrame, source: str, column: str) -> None:
    """One rule for every loader: ids must be unique (a duplicated id would put the same image in
    two groups, and every cache is keyed by id)."""
    dup = df["id"].duplicated(keep=False)
    if dup.any():
        values = list(dict.fromkeys(df.loc[dup, "id"].tolist()))
        raise DataError(f"{source}: column {column!r} has {len(values)} duplicated value(s), e.g. {values[:5]}; "
                        "expected one row per image (a unique id in every row)")


def _image_sizes(paths) -> np.ndarray:
    """Byte size of each regular file, -1 where there is none."""
    out = np.full(len(paths), -1, dtype=np.int64)
    for k, p in enumerate(paths):
        try:
            st = os.stat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out[k] = st.st_size
    return out


def _catalogue_fingerprint(csv_path: Path, df: pd.DataFrame, options: dict) -> str:
    """Identity of a catalogue, independent of where its folder lies: the CSV's content, the loader
    options, and the byte size of every kept image (in row order). Copying or moving the folder keeps
    it (mtimes are left out, as a copy changes them); editing the CSV, or an image changing size,
    changes it. An image replaced by one of exactly the same byte size is not noticed (possible with
    uncompressed formats): clear the cache (``make clean-cache``) after such an edit."""
    return fingerprint("catalogue", 2, _file_digest(csv_path), options, df["_size"].to_numpy())


def _clean(df: pd.DataFrame, attributes: Sequence[str], source: str, id_column: str = "id",
           ) -> tuple[pd.DataFrame, dict]:
    """Reject duplicate ids; drop rows with empty attributes or missing images; return the kept rows
    (with their image sizes in ``_size``) and a report."""
    _check_unique_ids(df, source, id_column)
    report: dict = {"rows_read": int(len(df))}
    attrs = list(attributes)
    for a in attrs:
        df[a] = df[a].astype("string").str.strip()
    empty = df[attrs].isna().any(axis=1) | (df[attrs] == "").any(axis=1)
    report["dropped_empty_attributes"] = int(empty.sum())
    if empty.any():
        warnings.warn(f"{source}: dropped {int(empty.sum())} rows with an empty attribute value "
                      f"(first ids: {df.loc[empty, 'id'].head(5).tolist()})", stacklevel=3)
    df = df.loc[~empty]
    sizes = _image_sizes(df["image_path"].tolist())
    exists = sizes >= 0
    missing = df.loc[~exists, "id"]
    report["dropped_missing_images"] = int(len(missing))
    report["missing_image_ids"] = missing.head(10).tolist()
    if len(missing):
        warnings.warn(f"{source}: dropped {len(missing)} rows whose image file is missing "
                      f"(first ids: {missing.head(5).tolist()})", stacklevel=3)
    first_missing = df.loc[~exists, "image_path"].head(1).tolist()
    df = df.loc[exists].reset_index(drop=True)
    df["_size"] = sizes[exists]
    if df.empty:
        tried = f"; the first image looked for: {first_missing[0]}" if first_missing else ""
        raise DataError(f"{source}: no usable rows (every row lacks an attribute value or an image{tried})")
    for a in attrs:
        df[a] = df[a].astype(object)
    df["id"] = df["id"].astype(str).astype(object)
    df["text"] = df["text"].fillna("").astype(str).astype(object)
    report["rows_kept"] = int(len(df))
    return df, report


def _decode_error(path: Path, encoding: str, exc: UnicodeDecodeError) -> DataError:
    return DataError(f"{path}: cannot be read as {encoding} text (byte {exc.object[exc.start:exc.start + 1]!r} "
                     f"at position {exc.start}); re-save the file as UTF-8, or pass its encoding, "
                     "e.g. encoding='latin-1' (load_csv/load_kaggle)")


def _read_kaggle_csv(path: Path, encoding: str = "utf-8-sig") -> pd.DataFrame:
    """Read Kaggle's styles.csv; product names that contain unquoted commas (a known quirk of the
    Kaggle file) are re-joined instead of dropping the row."""
    try:
        with open(path, newline="", encoding=encoding) as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None
    if not rows:
        raise DataError(f"{path}: the file is empty; expected a header {','.join(KAGGLE_COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    n = len(header)
    body = [r[: n - 1] + [",".join(r[n - 1:])] if len(r) > n else r + [""] * (n - len(r))
            for r in rows[1:] if r]
    return pd.DataFrame(body, columns=header, dtype=object)


def read_table(path: str | os.PathLike, encoding: str = "utf-8-sig") -> pd.DataFrame:
    """A user's CSV as text columns; an unreadable file is a :class:`DataError` that says what is wrong
    (empty, malformed quoting with pandas' line, wrong encoding)."""
    path = Path(path)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected a header row naming the columns, then one row "
                        "per image") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a well-formed CSV ({str(exc).strip()}); check the quoting and the number "
                        "of fields on that line") from None


def find_kaggle_root(data_dir: str | os.PathLike) -> Path:
    """The folder holding styles.csv: ``data_dir`` itself or its ``myntradataset/`` subfolder."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataError(f"data directory {str(data_dir)!r} does not exist. {DATA_HELP}")
    for cand in (data_dir, data_dir / "myntradataset"):
        if (cand / "styles.csv").is_file():
            return cand
    raise DataError(f"{str(data_dir)!r} has no styles.csv (nor myntradataset/styles.csv). {DATA_HELP}")


def load_kaggle(data_dir: str | os.PathLike, *, name: str = "fashion",
                attributes: Sequence[str] = ATTRIBUTES, encoding: str = "utf-8-sig") -> Catalogue:
    """Read the Kaggle layout: ``styles.csv`` + ``images/<id>.jpg``.

    ``encoding`` of styles.csv: UTF-8 with or without a byte-order mark (as Excel saves it) by default.
    """
    root = find_kaggle_root(data_dir)
    csv_path = root / "styles.csv"
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise DataError(f"{str(root)!r} has styles.csv but no images/ folder. {DATA_HELP}")
    df = _read_kaggle_csv(csv_path, encoding)
    need = ["id", *attributes, "productDisplayName"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {missing}; expected at least {need}")
    df = df[need].rename(columns={"productDisplayName": "text"})
    df["id"] = df["id"].str.strip()
    df["image_path"] = [str(image_dir / f"{i}.jpg") for i in df["id"]]
    df, report = _clean(df, attributes, str(csv_path))
    fp = _catalogue_fingerprint(csv_path, df, {"layout": "kaggle", "attributes": list(attributes)})
    cols = ["id", "image_path", *attributes, "text"]
    return Catalogue(name, df[cols], tuple(attributes), str(root), fp, report)


def load_csv(csv_path: str | os.PathLike, image_dir: str | os.PathLike | None = None, *,
             attributes: Sequence[str], id_column: str | None = "id", path_column: str | None = None,
             text_column: str | None = None, image_ext: str = ".jpg", name: str = "custom",
             encoding: str = "utf-8-sig") -> Catalogue:
    """A user's own catalogue.

    Images are found either by ``path_column`` (a path, relative to ``image_dir`` or the CSV's
    folder, or absolute) or as ``<image_dir>/<id><image_ext>``. ``attributes`` are the categorical
    label columns (any number); ``text_column`` (optional) gives the words used as tags.
    ``encoding``: of the CSV; UTF-8 with or without a byte-order mark (as Excel saves it) by default.
    Ids (``id_column``, else ``path_column``) must be unique.
    """
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise DataError(f"CSV file {str(csv_path)!r} does not exist; expected a CSV with an id or path column "
                        "and the attribute columns")
    if not attributes:
        raise DataError("load_csv(attributes=...): give at least one attribute column")
    reserved = [a for a in attributes if a in RESERVED_COLUMNS]
    if reserved:
        raise DataError(f"{csv_path}: attribute column(s) {reserved}: the study uses these names for its own "
                        f"columns {list(RESERVED_COLUMNS)}; rename them in the CSV")
    if path_column is None and id_column is None:
        raise DataError("load_csv: give id_column (images at <image_dir>/<id><image_ext>) or path_column")
    base = Path(image_dir).expanduser() if image_dir is not None else csv_path.parent
    if not base.is_dir():
        raise DataError(f"image folder {str(base)!r} does not exist; expected image_dir (default: the CSV's "
                        "folder) to hold the images")
    df = read_table(csv_path, encoding)
    need = [c for c in [id_column, path_column, *attributes, text_column] if c]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {missing}; the CSV has {list(df.columns)}")
    out = pd.DataFrame({a: df[a] for a in attributes})
    if path_column:
        out["image_path"] = [str(Path(p) if Path(p).is_absolute() else base / p) for p in df[path_column]]
        out["id"] = df[id_column] if id_column else df[path_column]
    else:
        out["id"] = df[id_column]
        out["image_path"] = [str(base / f"{i}{image_ext}") for i in df[id_column]]
    out["text"] = df[text_column] if text_column else ""
    out, report = _clean(out, attributes, str(csv_path), id_column or path_column)
    fp = _catalogue_fingerprint(csv_path, out, {"layout": "csv", "attributes": list(attributes),
                                                "id_column": id_column, "path_column": path_column,
                                                "text_column": text_column, "image_ext": image_ext})
    cols = ["id", "image_path", *attributes, "text"]
    return Catalogue(name, out[cols], tuple(attributes), str(csv_path), fp, report)


def default_fashion_dir() -> Path | None:
    """Where the real data is looked for: ``$ATTRBOOST_DATA_DIR``, ``<repo>/data/...``, ``<repo>/../shared/data/...``."""
    from ..cache import repo_root

    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    root = repo_root() or Path.cwd()
    for cand in (root / "data" / "fashion-product-images-small",
                 root.parent / "shared" / "data" / "fashion-product-images-small"):
        if cand.is_dir():
            return cand
    return None

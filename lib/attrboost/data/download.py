"""Get the real data: Hugging Face ``ashraq/fashion-product-images-small`` -> the Kaggle layout.

``python -m attrboost.data.download [--out DIR]`` (or ``make data``) downloads the parquet shards
with :func:`huggingface_hub.snapshot_download` and writes ``styles.csv`` + ``images/<id>.jpg``,
which :func:`attrboost.data.load_kaggle` reads. Without a network it fails within ~30 s with a
message that says how to get the data by hand. The conversion (:func:`write_kaggle_layout`) is
separate and tested on a tiny in-memory table.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Iterable, Mapping

from PIL import Image
from tqdm.auto import tqdm

from .catalogue import DATA_HELP, ENV_DATA_DIR, KAGGLE_COLUMNS, DataError, to_rgb

HF_REPO = "ashraq/fashion-product-images-small"


def _image_bytes(img) -> bytes:
    """JPEG bytes from a PIL image, raw bytes, or the ``{"bytes": ..., "path": ...}`` parquet struct."""
    if isinstance(img, Mapping):
        img = img.get("bytes")
    if isinstance(img, (bytes, bytearray)):
        if bytes(img[:3]) == b"\xff\xd8\xff":
            return bytes(img)
        img = Image.open(io.BytesIO(img))
    if isinstance(img, Image.Image):
        buf = io.BytesIO()
        to_rgb(img).save(buf, format="JPEG", quality=95)
        return buf.getvalue()
    raise DataError(f"cannot read an image from a {type(img).__name__}; expected PIL image, bytes or "
                    "{'bytes': ...}")


def write_kaggle_layout(records: Iterable[Mapping], out_dir: str | os.PathLike, *, total: int | None = None,
                        progress: bool = True) -> Path:
    """Write records (dicts with the Kaggle columns + ``image``) as ``styles.csv`` + ``images/<id>.jpg``.

    Written into a temporary sibling folder and renamed into place at the end, so an interrupted
    download leaves no half-written dataset behind.
    """
    out = Path(out_dir).expanduser()
    if (out / "styles.csv").exists():
        raise DataError(f"{out} already holds a dataset (styles.csv); remove it or choose another --out")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    try:
        with open(tmp / "styles.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(KAGGLE_COLUMNS)
            for rec in tqdm(records, total=total, desc="writing images", disable=not progress):
                missing = [c for c in (*KAGGLE_COLUMNS, "image") if c not in rec]
                if missing:
                    raise DataError(f"record is missing field(s) {missing}; expected {[*KAGGLE_COLUMNS, 'image']}")
                rid = str(rec["id"]).strip()
                (tmp / "images" / f"{rid}.jpg").write_bytes(_image_bytes(rec["image"]))
                row = ["" if rec[c] is None else rec[c] for c in KAGGLE_COLUMNS]
                if isinstance(row[7], float) and row[7] == row[7]:
                    row[7] = int(row[7])  # year comes as float in the parquet
                writer.writerow(row)
        if out.exists() and not any(out.iterdir()):
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _run_with_timeout(fn, timeout: float):
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise TimeoutError(f"no answer within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def download_fashion(out_dir: str | os.PathLike, *, repo_id: str = HF_REPO, timeout: float = 25,
                     progress: bool = True) -> Path:
    """Download the Hugging Face copy of the data and write it in the Kaggle layout at ``out_dir``."""
    import pyarrow.parquet as pq
    from huggingface_hub import HfApi, snapshot_download

    try:  # a quick reachability check, so an offline machine fails fast
        _run_with_timeout(lambda: HfApi().dataset_info(repo_id), timeout)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"could not reach the Hugging Face hub for {repo_id!r} ({type(exc).__name__}: "
                        f"{str(exc)[:200]}). {DATA_HELP}") from exc
    snap = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=["*.parquet"]))
    shards = sorted(snap.rglob("*.parquet"))
    if not shards:
        raise DataError(f"{repo_id}: no parquet files found in the download at {snap}")
    total = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)

    def records():
        for shard in shards:
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=512):
                yield from batch.to_pylist()

    return write_kaggle_layout(records(), out_dir, total=total, progress=progress)


def main(argv: list[str] | None = None) -> int:
    from ..cache import repo_root

    default = (repo_root() or Path.cwd()) / "data" / "fashion-product-images-small"
    ap = argparse.ArgumentParser(description="Download Fashion Product Images (Small) in the Kaggle layout.")
    ap.add_argument("--out", default=str(default), help=f"target folder (default: {default})")
    ap.add_argument("--timeout", type=float, default=25, help="seconds to wait for the hub before giving up")
    args = ap.parse_args(argv)
    if (Path(args.out) / "styles.csv").exists():
        print(f"{args.out} already has the data; nothing to do.")
        return 0
    try:
        out = download_fashion(args.out, timeout=args.timeout)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}. Use it with: export {ENV_DATA_DIR}={out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cache entries are validated when read: a damaged one is reported, moved aside and recomputed.

Each kind of cache file is written through the normal code path on tiny data, damaged in several ways,
and the rerun must warn naming the file, move it to ``<cache>/quarantine/`` and give the same numbers.
The cache keys do not depend on where the cache folder (or, with an empty ``dataset_fp``, the image
folder) lives.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads crawl on a busy 2-core box

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from attrboost import backbones, pixels
from attrboost.study import baselines as BL
from attrboost.study import beyond as B
from attrboost import cache as C
from attrboost import features as E
from attrboost.study.embed import embed
from attrboost import heads as H
from attrboost.study import pipeline as P
from helpers import Counting, Interrupted

BACKBONE = "efficientnet_lite0"  # its width (1280) is what the caches are checked against
WIDTH = 1280
CPU = dict(device="cpu", num_workers=0, progress=False)
_REAL_PCA_FIT = pixels.PixelPCA.fit


# ----------------------------------------------------------------------------- fixtures (cache, sample: conftest)
def tiny_net(fail_at=None) -> Counting:
    """A fixed, randomly initialised stand-in for the backbone (1280 outputs): the cache logic is the same
    and each extraction takes milliseconds. Counts images; raises on forward call number ``fail_at``."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(16, WIDTH))
    return Counting(net, fail_at)


def _tiny_transform(img):
    return torch.from_numpy(np.asarray(img.resize((12, 12)), dtype=np.float32) / 255.0).permute(2, 0, 1)


def patch_model(monkeypatch, fail_at=None) -> list[Counting]:
    made = []

    def create(*args, **kwargs):
        made.append(tiny_net(fail_at))
        return made[-1], _tiny_transform
    monkeypatch.setattr(backbones, "create_backbone", create)
    monkeypatch.setattr(backbones, "fold_batchnorm", lambda model, *a, **k: model)
    return made


def forbid_compute(monkeypatch):
    """Every compute step of every cache raises: whatever the next calls return comes from the cache."""
    def fail(*args, **kwargs):
        raise AssertionError("recomputed although the cache holds a valid entry")
    monkeypatch.setattr(backbones, "create_backbone", fail)
    monkeypatch.setattr("attrboost.study.embed.load_pixels", fail)
    monkeypatch.setattr(pixels.PixelPCA, "fit", fail)
    monkeypatch.setattr(H.BoostHead, "fit", fail)
    for cls in (BL.PCAWhitening, BL.GroupLDA, BL.GroupNCA, BL.MetricHead):
        monkeypatch.setattr(cls, "fit", fail)


def write_images(folder: Path, n: int = 12) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths, ids = [], []
    for i in range(n):
        arr = (rng.random((20, 16, 3)) * 255).astype(np.uint8)
        paths.append(str(folder / f"{i}.png"))
        Image.fromarray(arr).save(paths[-1])
        ids.append(f"p{i}")
    return paths, ids


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "images")


def toy_features(s) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(len(s.items), 16)) + s.items["group"].to_numpy()[:, None]).astype(np.float32)


# ----------------------------------------------------------------------------- the kinds of cache file
# Each kind: run(ctx) -> dict of the results to compare; the glob of its file under the cache;
# the name of its main (row-per-item) array; whether it stores row ids.
def _run_store(ctx):
    return {"X": P.get_features(ctx["sample"], BACKBONE, device="cpu", num_workers=0, progress=False)}


def _run_features(ctx):
    """extract_features called directly (not through get_features): the same kind of store."""
    paths, ids = ctx["images"]
    got_ids, feats = E.extract_features(BACKBONE, paths, ids, dataset_fp="fp", **CPU)
    return {"ids": got_ids, "features": feats}


def _run_chunks(ctx):
    paths, ids = ctx["images"]
    return {"features": E.extract_features(BACKBONE, paths, ids, dataset_fp="fp-chunks", batch_size=4, chunk_size=4,
                                           **CPU)[1]}


def _run_pca(ctx):
    paths, ids = ctx["images"]
    items = pd.DataFrame({"id": ids, "image_path": paths})
    return {"features": embed("pca", items, ids[::2], dataset_fp="fp", n_components=4, progress=False)}


def _run_head(ctx):
    """Wall-clock times (fit_seconds, the history's seconds) differ on a recomputation; the cached history
    is JSON with 10 significant digits (pandas' default), so it is compared to that precision."""
    s = ctx["sample"]
    run = P.get_boosted(s, toy_features(s), "toy", "task1", 0, max_epochs=2)
    return {**{f"emb_{p}": e for p, e in run.emb.items()}, "best_epoch": np.array(run.best_epoch),
            "approx_history": run.history.drop(columns="seconds").to_numpy(dtype=float)}


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if name.startswith("approx_"):
            np.testing.assert_allclose(a[name], b[name], rtol=1e-9, err_msg=name)
        else:
            assert np.array_equal(a[name], b[name]), name


def _run_baseline(ctx):
    s = ctx["sample"]
    run = B.get_baseline(s, toy_features(s), "toy", "lda", 0)
    return {**{f"emb_{p}": e for p, e in run.emb.items()}, "params": np.array(str(run.params))}


KINDS = {
    "feature_store": (_run_store, f"features/{BACKBONE}/store-*.npz", "X", True),
    "feature_call": (_run_features, f"features/{BACKBONE}/store-*.npz", "X", True),
    "interrupted_store": (_run_chunks, f"features/{BACKBONE}/store-*.npz", "X", True),
    "pixel_cache": (_run_pca, "pixels/*.npz", "pixels", True),
    "pca_features": (_run_pca, "features/pca/*.npz", "features", True),
    "head_cache": (_run_head, "heads/toy/task1-*.npz", "emb_train", False),
    "baseline_cache": (_run_baseline, "baselines/toy/lda-*.npz", "emb_train", False),
}


# ----------------------------------------------------------------------------- the kinds of damage
def _arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def _write_npz(path: Path, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def truncate(path, main, has_ids):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path, main, has_ids):
    """One byte flipped in the middle of the main array's stored data (a flip in, say, a zip header's
    version field would be harmless)."""
    import struct
    import zipfile

    nbytes = _arrays(path)[main].nbytes
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(f"{main}.npy")
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    end = info.header_offset + 30 + name_len + extra_len + info.compress_size  # np.savez stores, no compression
    data[end - 1 - nbytes // 2] ^= 0xFF  # the array's bytes are the member's last nbytes
    path.write_bytes(bytes(data))


def wrong_width(path, main, has_ids):
    """A valid .npz (as another program would write it) whose main array is one column narrower."""
    arrays = {k: v for k, v in _arrays(path).items() if not k.startswith("_cache_")}
    arrays[main] = np.ascontiguousarray(arrays[main][:, :-1])
    _write_npz(path, arrays)


def shuffled_rows(path, main, has_ids):
    """The main array's rows permuted in place, everything else (ids, stored key and checksum) kept."""
    arrays = _arrays(path)
    arrays[main] = arrays[main][::-1].copy()
    _write_npz(path, arrays)


def reordered(path, main, has_ids):
    """Rows and ids consistently in another order (same set of ids), as a valid .npz; no ids: rows reversed."""
    arrays = {k: v for k, v in _arrays(path).items() if not k.startswith("_cache_")}
    arrays[main] = arrays[main][::-1].copy()
    if has_ids:
        arrays["ids"] = arrays["ids"][::-1].copy()
    _write_npz(path, arrays)


def other_ids(path, main, has_ids):
    """Ids that are not the requested ones (no ids stored: another entry's key), stored key and checksum kept."""
    arrays = _arrays(path)
    if has_ids:
        arrays["ids"] = np.array([f"x{i}" for i in arrays["ids"]])
    else:
        arrays["_cache_key"] = np.array("0123456789abcdef")
    _write_npz(path, arrays)


DAMAGES = {f.__name__: f for f in (truncate, flip_byte, wrong_width, shuffled_rows, reordered, other_ids)}


def _first_run(kind: str, ctx: dict, cache: Path, monkeypatch) -> tuple[dict, Path]:
    """Run the normal code path once; return its results and the cache file of this kind."""
    run, pattern, _, _ = KINDS[kind]
    patch_model(monkeypatch)
    if kind == "interrupted_store":
        first = run(ctx)  # the reference: an uninterrupted run
        shutil.rmtree(cache / "features")
        patch_model(monkeypatch, fail_at=2)  # chunk 0 = forward call 1: stored, then killed
        with pytest.raises(Interrupted):
            run(ctx)
    else:
        first = run(ctx)
    (path,) = cache.glob(pattern)
    if kind == "pixel_cache":  # the pca features would serve the rerun: make it read the pixels again
        for f in cache.glob(KINDS["pca_features"][1]):
            f.unlink()
    return first, path


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_cache_file_is_reported_moved_aside_and_recomputed(kind, damage, cache, images, sample, monkeypatch):
    run, _, main, has_ids = KINDS[kind]
    ctx = {"images": images, "sample": sample}
    first, path = _first_run(kind, ctx, cache, monkeypatch)
    DAMAGES[damage](path, main, has_ids)
    damaged = path.read_bytes()

    made = patch_model(monkeypatch)
    with pytest.warns(UserWarning, match=re.escape(str(path))):
        again = run(ctx)
    same(again, first)  # (c) the same numbers as the first run
    # (b) moved aside, unchanged, for inspection
    moved = list((cache / "quarantine").glob(f"{path.relative_to(cache)}.*"))
    assert len(moved) == 1 and moved[0].read_bytes() == damaged
    if kind == "interrupted_store":
        assert made[0].images == len(images[0])  # the damaged store's rows were not used
    # the rewritten entry is valid: the next run reads it without a warning and computes nothing
    forbid_compute(monkeypatch)
    assert path.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = run(ctx)
    same(third, first)


def test_warning_says_what_is_wrong(cache, images, monkeypatch):
    patch_model(monkeypatch)
    ctx = {"images": images}
    _run_features(ctx)
    (path,) = cache.glob(KINDS["feature_call"][1])
    reasons = {truncate: "unreadable", wrong_width: "no stored key and checksum", shuffled_rows: "checksum mismatch",
               other_ids: "checksum mismatch"}
    for damage, reason in reasons.items():
        damage(path, "X", True)
        with pytest.warns(C.CacheWarning, match=rf"damaged cache entry {re.escape(str(path))}: .*{reason}"
                                                rf".*moved it to {re.escape(str(cache / 'quarantine'))}"):
            _run_features(ctx)


# ----------------------------------------------------------------------------- load_checked, one check at a time
def _quarantined(cache: Path, path: Path) -> list[Path]:
    return list((cache / "quarantine").glob(f"{path.relative_to(cache)}.*"))


def test_save_and_load_checked_round_trip(cache):
    path = cache / "kind" / "entry.npz"
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    C.save_checked(path, "k1", ids=np.array(["a", "b", "c", "d"]), X=X, note=np.array("text"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = C.load_checked(path, "k1", {"ids": ("U", (4,)), "X": (np.float32, (None, 3)), "note": ("U", ())},
                             ids=["a", "b", "c", "d"])
        assert C.load_checked(cache / "kind" / "absent.npz", "k1") is None  # a miss, not damage
    assert sorted(got) == ["X", "ids", "note"] and np.array_equal(got["X"], X) and str(got["note"]) == "text"
    with pytest.raises(ValueError, match="reserved"):
        C.save_checked(path, "k1", _cache_key=np.array("x"))


@pytest.mark.parametrize("case, expect, ids, check, reason", [
    ("other key", {}, None, None, "stored for key 'k1', not the requested 'k2'"),
    ("dtype", {"X": (np.float64, None)}, None, None, "array 'X' has dtype float32 and shape \\(4, 3\\), expected dtype"),
    ("width", {"X": (np.float32, (None, 4))}, None, None, "expected dtype .* and shape \\('\\*', 4\\)"),
    ("missing array", {"Y": (None, None)}, None, None, r"missing array\(s\) \['Y'\]"),
    ("id order", {}, ["b", "a", "c", "d"], None, "row ids do not match"),
    ("other ids", {}, ["a", "b", "c"], None, "row ids do not match"),
    ("check", {}, None, lambda d: "too few rows", "too few rows"),
])
def test_load_checked_rejects_each_mismatch(cache, case, expect, ids, check, reason):
    path = cache / "kind" / "entry.npz"
    C.save_checked(path, "k1", ids=np.array(["a", "b", "c", "d"]), X=np.ones((4, 3), np.float32))
    before = path.read_bytes()
    with pytest.warns(C.CacheWarning, match=f"{re.escape(str(path))}: .*{reason}"):
        assert C.load_checked(path, "k2" if case == "other key" else "k1", expect, ids=ids, check=check) is None
    assert not path.exists()
    (moved,) = _quarantined(cache, path)
    assert moved.read_bytes() == before and moved.parent == cache / "quarantine" / "kind"


def test_load_checked_rejects_entries_without_key_or_checksum(cache):
    """Files written before the checks (no stored key and checksum) cannot be verified: recomputed once."""
    path = cache / "kind" / "entry.npz"
    C.save_arrays(path, X=np.ones((2, 2), np.float32))
    with pytest.warns(C.CacheWarning, match="no stored key and checksum"):
        assert C.load_checked(path, "k1") is None
    C.save_arrays(path, X=np.ones((2, 2), np.float32), _cache_key=np.array("k1"))
    with pytest.warns(C.CacheWarning, match="only one of"):
        assert C.load_checked(path, "k1") is None
    assert len(_quarantined(cache, path)) == 2  # both kept, under distinct time stamps


def test_cached_computes_once_and_enabled_false_never_touches_the_cache(cache):
    path = cache / "kind" / "entry.npz"
    calls = []

    def compute():
        calls.append(1)
        return {"ids": np.array(["a", "b"]), "X": np.array([[1.0], [2.0]], np.float32)}
    expect = {"X": (np.float32, (2, 1))}
    first = C.cached(path, "k", compute, expect=expect, ids=["a", "b"])
    second = C.cached(path, "k", compute, expect=expect, ids=["a", "b"])
    assert len(calls) == 1 and np.array_equal(first["X"], second["X"])
    C.cached(path, "k", compute, enabled=False)
    assert len(calls) == 2
    path.unlink()
    C.cached(path, "k", compute, enabled=False)
    assert not path.exists()


# ----------------------------------------------------------------------------- moving folders
def test_moving_the_cache_folder_keeps_every_entry_valid(tmp_path, cache, images, sample, monkeypatch):
    """Copy the whole cache to a new $ATTRBOOST_CACHE: every entry (and an interrupted store) is used as it is."""
    ctx = {"images": images, "sample": sample}
    patch_model(monkeypatch, fail_at=2)
    with pytest.raises(Interrupted):  # leaves a store holding chunk 0
        _run_chunks(ctx)
    patch_model(monkeypatch)
    kinds = ["feature_store", "feature_call", "pca_features", "head_cache", "baseline_cache"]
    first = {k: KINDS[k][0](ctx) for k in kinds}
    moved = tmp_path / "elsewhere" / "cache2"
    shutil.copytree(cache, moved)
    shutil.rmtree(cache)
    monkeypatch.setenv("ATTRBOOST_CACHE", str(moved))
    made = patch_model(monkeypatch)
    resumed = _run_chunks(ctx)["features"]
    assert made[0].images == len(images[0]) - 4  # the stored chunk 0 was reused
    forbid_compute(monkeypatch)
    (moved / "pixels").rename(moved / "pixels-gone")  # the pca features alone must serve the rerun
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k in kinds:
            same(KINDS[k][0](ctx), first[k])
    assert np.array_equal(resumed[:4], first["feature_call"]["features"][:4])
    assert not (moved / "quarantine").exists() and not cache.exists()


def test_moving_the_image_folder_keeps_extract_caches_without_dataset_fp(tmp_path, cache, images, monkeypatch):
    """With an empty dataset_fp the key holds the files' paths relative to their folder, sizes and mtimes:
    a moved (or mtime-preserving copy of the) folder hits the cache; a changed file does not."""
    paths, ids = images
    patch_model(monkeypatch)
    feats = E.extract_features(BACKBONE, paths, ids, dataset_fp="", **CPU)[1]
    items = pd.DataFrame({"id": ids, "image_path": paths})
    pca = embed("pca", items, ids[::2], dataset_fp="", n_components=4, progress=False)
    new_dir = tmp_path / "moved" / "images"
    shutil.copytree(Path(paths[0]).parent, new_dir)  # copy2: mtimes kept
    shutil.rmtree(Path(paths[0]).parent)
    new_paths = [str(new_dir / Path(p).name) for p in paths]
    forbid_compute(monkeypatch)
    assert np.array_equal(E.extract_features(BACKBONE, new_paths, ids, dataset_fp="", **CPU)[1], feats)
    new_items = items.assign(image_path=new_paths)
    assert np.array_equal(embed("pca", new_items, ids[::2], dataset_fp="", n_components=4, progress=False), pca)
    (cache / "features" / "pca").rename(cache / "pca-gone")  # the pixel cache alone
    monkeypatch.setattr(pixels.PixelPCA, "fit", _REAL_PCA_FIT)
    assert np.array_equal(embed("pca", new_items, ids[::2], dataset_fp="", n_components=4, progress=False), pca)
    os.utime(new_paths[3], ns=(0, 0))  # a changed file is a different key: extracted again
    with pytest.raises(AssertionError, match="recomputed"):
        E.extract_features(BACKBONE, new_paths, ids, dataset_fp="", **CPU)


# ----------------------------------------------------------------------------- code in the keys
STALE_PROBE = """
import json, sys
import numpy as np
import attrboost
from attrboost.cache import code_hash
from attrboost.data import load_kaggle, sample_protocol
from attrboost.study import pipeline as P
cat = load_kaggle(sys.argv[1])
sample = sample_protocol(cat, n_groups=6, per_group=8, n_test=12, val_fraction=0.25, seed=0)
X = np.random.default_rng(0).normal(size=(len(sample.items), 16)).astype(np.float32)
run = P.get_boosted(sample, X, "efficientnet_lite0", "task1", 0, max_epochs=3)
print(json.dumps({"package": attrboost.__file__, "code": code_hash(*P.HEAD_CODE),
                  "test": run.emb["test"].sum().item()}))
"""


def test_a_changed_function_body_misses_the_head_cache(tmp_path):
    """A head fitted by changed code is never returned to the real code (the cache key holds a hash of the
    code of every module that computes a head); a comment or a docstring is not a change."""
    import json
    import subprocess
    import sys

    from helpers import make_kaggle

    data = make_kaggle(tmp_path / "data", n_groups=6, per_group=8, small_groups=0)
    env = {**os.environ, "ATTRBOOST_CACHE": str(tmp_path / "cache")}

    def probe(lib: Path) -> dict:
        out = subprocess.run([sys.executable, "-c", STALE_PROBE, str(data)], env={**env, "PYTHONPATH": str(lib)},
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert Path(got["package"]).resolve().is_relative_to(lib.resolve())
        return got

    real = Path(__file__).resolve().parents[1] / "lib"
    copy = tmp_path / "lib"
    shutil.copytree(real / "attrboost", copy / "attrboost", ignore=shutil.ignore_patterns("__pycache__"))
    heads = copy / "attrboost" / "heads.py"
    text = heads.read_text()
    returns = "            return self._embed_numpy(self.model_, Xt)\n"
    doc = '"""Boosted embedding: hidden-layer ReLU activations, float32 array (n, hidden_dim_)."""'
    assert returns in text and doc in text
    heads.write_text(text.replace(doc, '"""Reworded."""  # and a comment'))
    original = probe(real)
    assert probe(copy)["code"] == original["code"]  # documentation only: the same key, a cache hit
    heads.write_text(text.replace(returns, returns.replace("Xt)", "Xt) * 2")))
    mutated = probe(copy)  # fitted by the changed code into the shared cache
    assert mutated["code"] != original["code"] and mutated["test"] == pytest.approx(2 * original["test"])
    assert probe(real)["test"] == original["test"]  # the real code does not get the changed code's head


# ------------------------------------------------------------------------------ concurrent misses compute once
def _slow_cached(path: str, log: str, start: str) -> None:
    import time as _t

    while not os.path.exists(start):  # both processes miss the entry at about the same moment
        _t.sleep(0.01)

    def compute():
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        _t.sleep(1.0)
        return {"x": np.arange(5, dtype=np.float32)}

    got = C.cached(path, "key-1", compute, expect={"x": (np.float32, (5,))})
    np.testing.assert_array_equal(got["x"], np.arange(5, dtype=np.float32))


def test_two_processes_that_miss_one_entry_compute_it_once(tmp_path, monkeypatch):
    import multiprocessing as mp

    monkeypatch.setenv(C.ENV_CACHE, str(tmp_path / "cache"))  # inherited by the spawned processes: one lock folder
    path, log, start = tmp_path / "c" / "entry.npz", tmp_path / "log", tmp_path / "start"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_slow_cached, args=(str(path), str(log), str(start))) for _ in range(2)]
    for p in procs:
        p.start()
    start.touch()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(log.read_text().split()) == 1  # the second waited for the first and loaded its entry
    assert C.load_checked(path, "key-1")["x"].tolist() == [0, 1, 2, 3, 4]


def test_a_head_missed_by_two_processes_is_fitted_once(cache, monkeypatch):
    """get_boosted's miss path runs under the entry's compute lock: a fit that finds the entry saved while it
    waited returns it instead of fitting again."""
    from helpers import toy_sample

    sample, X = toy_sample(0)
    fits = []
    real_fit = P.fit_head

    def fit_and_count(*a, **k):
        fits.append(1)
        return real_fit(*a, **k)

    monkeypatch.setattr(P, "fit_head", fit_and_count)
    first = P.get_boosted(sample, X, "toy", "task1", 0, max_epochs=2)
    # a second process that missed before the first saved: its re-check under the lock now finds the entry
    entry = P._head_entry(sample, X, "toy", "task1", 0, P.head_params(max_epochs=2))
    monkeypatch.setattr(P, "_cached_head", _miss_once(P._cached_head))
    again = P.get_boosted(sample, X, "toy", "task1", 0, max_epochs=2)
    assert len(fits) == 1 and again.best_epoch == first.best_epoch
    np.testing.assert_array_equal(again.emb["test"], first.emb["test"])
    assert entry[0].exists() and sorted(p.name for p in entry[0].parent.iterdir()) == [entry[0].name]


def _miss_once(real):
    calls = []

    def cached_head(*a, **k):
        calls.append(1)
        return None if len(calls) == 1 else real(*a, **k)
    return cached_head

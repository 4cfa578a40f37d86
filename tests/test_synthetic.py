"""Tests of the embedded synthetic catalogue (attrboost.data.synthetic)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from attrboost.data import ATTRIBUTES
from attrboost.data.catalogue import KAGGLE_COLUMNS
from attrboost.data import synthetic as syn

SMALL = dict(n_groups=6, per_group=5, n_extra=9, progress=False)


def read_images(root: Path, ids) -> np.ndarray:
    return np.stack([np.asarray(Image.open(root / "images" / f"{i}.jpg")) for i in ids])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return syn.generate_synthetic(tmp_path_factory.mktemp("syn") / "a", seed=1, **SMALL)


# ------------------------------------------------------------------------------------ determinism

def test_same_seed_gives_identical_csv_and_pixels(small, tmp_path):
    again = syn.generate_synthetic(tmp_path / "b", seed=1, **SMALL)
    assert (again / "styles.csv").read_bytes() == (small / "styles.csv").read_bytes()
    ids = pd.read_csv(small / "styles.csv")["id"]
    np.testing.assert_array_equal(read_images(again, ids), read_images(small, ids))


def test_different_seed_differs(small, tmp_path):
    other = syn.generate_synthetic(tmp_path / "c", seed=2, **SMALL)
    assert (other / "styles.csv").read_bytes() != (small / "styles.csv").read_bytes()
    a = pd.read_csv(small / "styles.csv")
    b = pd.read_csv(other / "styles.csv")
    assert not np.array_equal(read_images(small, a["id"][:5]), read_images(other, b["id"][:5]))


def test_images_within_a_group_differ(small):
    df = pd.read_csv(small / "styles.csv")
    first = df.groupby(list(ATTRIBUTES))["id"].apply(list).iloc[0]
    imgs = read_images(small, first).astype(int)
    assert len(first) >= 2
    assert all(np.abs(imgs[0] - imgs[k]).mean() > 0 for k in range(1, len(first)))


# ------------------------------------------------------------------------------------ schema

def test_schema_and_files(small):
    with open(small / "styles.csv", newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour",
                      "season", "year", "usage", "productDisplayName"]
    df = pd.read_csv(small / "styles.csv", dtype=str, keep_default_na=False)
    assert len(df) == SMALL["n_groups"] * SMALL["per_group"] + SMALL["n_extra"]
    assert (df != "").all().all() and (df == df.apply(lambda s: s.str.strip())).all().all()
    ids = df["id"].astype(int)
    assert ids.is_unique and (ids > 0).all()
    years = df["year"].astype(int)
    assert years.between(2010, 2018).all()
    files = sorted(p.name for p in (small / "images").iterdir())
    assert files == sorted(f"{i}.jpg" for i in ids)
    for i in ids:
        with Image.open(small / "images" / f"{i}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (60, 80)


def test_categories_are_consistent_and_names_mention_attributes():
    rows = pd.DataFrame(syn.plan_catalogue(n_groups=110, per_group=2, seed=4, n_extra=0))
    # every articleType sits in exactly one (masterCategory, subCategory), as in the real data
    assert (rows.groupby("articleType")[["masterCategory", "subCategory"]].nunique() == 1).all().all()
    for r in rows.itertuples():
        words = r.productDisplayName.split()
        assert r.baseColour in r.productDisplayName
        assert r.gender in words or r.gender + "'s" in words
    # brands/adjectives vary within a group, so tags are not just the group label
    names_per_group = rows.groupby(list(ATTRIBUTES))["productDisplayName"].nunique()
    assert (names_per_group > 1).any()


def test_plan_matches_written_csv(small):
    planned = pd.DataFrame(syn.plan_catalogue(seed=1, **{k: v for k, v in SMALL.items() if k != "progress"}))
    written = pd.read_csv(small / "styles.csv")
    pd.testing.assert_frame_equal(planned[list(KAGGLE_COLUMNS)].reset_index(drop=True), written,
                                  check_dtype=False)


# ------------------------------------------------------------------------------------ groups

def group_sizes(df: pd.DataFrame) -> pd.Series:
    return df.groupby(list(ATTRIBUTES)).size()


def test_group_structure_small(small):
    sizes = group_sizes(pd.read_csv(small / "styles.csv"))
    per_group = SMALL["per_group"]
    assert (sizes >= per_group).sum() == SMALL["n_groups"]
    assert (sizes[sizes >= per_group] == per_group).all()
    assert sizes[sizes < per_group].sum() == SMALL["n_extra"]


def test_group_structure_defaults_supports_the_protocol():
    df = pd.DataFrame(syn.plan_catalogue())  # the default catalogue, without drawing it
    sizes = group_sizes(df)
    assert (sizes >= 44).sum() == 110 and (sizes[sizes >= 44] == 44).all()
    kept = sizes[sizes >= 40]  # the study's min-group-size filter
    assert len(kept) >= 100 and (kept >= 40).all()
    dropped = sizes[sizes < 40]
    assert len(dropped) > 0 and dropped.sum() == len(df) - 110 * 44
    assert df["id"].is_unique and df["id"].is_monotonic_increasing


@pytest.mark.parametrize("bad", [dict(n_groups=0), dict(per_group=0), dict(seed=-1),
                                 dict(n_extra=-1), dict(n_groups=1.5), dict(n_groups=10**6)])
def test_invalid_parameters_raise(bad):
    with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
        syn.plan_catalogue(**bad)


def test_generate_refuses_a_non_empty_dir(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("hi")
    with pytest.raises(ValueError, match="out_dir"):
        syn.generate_synthetic(tmp_path / "x", **SMALL)


# ------------------------------------------------------------------------------------ visibility

def image_features(path: Path) -> np.ndarray:
    """Generic features: a coarse grey thumbnail (shape), a colour histogram and the mean colour."""
    with Image.open(path) as im:
        grey = np.asarray(im.convert("L").resize((12, 16), Image.Resampling.BOX), dtype=np.float64) / 255
        rgb = np.asarray(im).reshape(-1, 3)
    q = rgb // 64
    hist = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64) / len(q)
    return np.concatenate([grey.ravel(), np.sqrt(hist), rgb.mean(0) / 255])


def test_visibility_colour_and_type_visible_season_much_less(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    root = syn.generate_synthetic(tmp_path / "vis", n_groups=100, per_group=6, seed=3, progress=False)
    df = pd.read_csv(root / "styles.csv")
    X = np.stack([image_features(root / "images" / f"{i}.jpg") for i in df["id"]])
    groups = df.groupby(list(ATTRIBUTES)).ngroup()
    # held-out *groups*: a season cannot be read off a memorised (type, colour) combination
    train, test = next(GroupShuffleSplit(test_size=0.3, random_state=0).split(X, groups=groups))

    def accuracy_and_chance(attr):
        y = df[attr].to_numpy()
        with threadpool_limits(1):  # multi-threaded BLAS is far slower on tiny problems here
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X[train], y[train])
        majority = pd.Series(y[train]).value_counts().index[0]
        return (clf.predict(X[test]) == y[test]).mean(), (y[test] == majority).mean()

    acc_type, chance_type = accuracy_and_chance("articleType")
    acc_colour, chance_colour = accuracy_and_chance("baseColour")
    acc_season, chance_season = accuracy_and_chance("season")
    assert acc_type > 2 * chance_type
    assert acc_colour > 2 * chance_colour
    assert acc_season - chance_season < acc_type - chance_type
    assert acc_season - chance_season < acc_colour - chance_colour


# ------------------------------------------------------------------------------------ caching

def test_default_dir_is_keyed_by_params(cache):
    d = syn.default_synthetic_dir()
    assert d.parent == cache / "synthetic" and d.name.startswith(f"v{syn.VERSION}-")
    assert syn.default_synthetic_dir(seed=1) != d
    assert syn.default_synthetic_dir(n_groups=109) != d
    explicit_extra = len(syn.plan_catalogue()) - 110 * 44
    assert syn.default_synthetic_dir(n_extra=explicit_extra) == d  # same catalogue, same place
    assert syn.default_synthetic_dir(n_extra=explicit_extra + 1) != d


def test_ensure_generates_once(cache, monkeypatch):
    params = dict(n_groups=3, per_group=2, n_extra=1, seed=0)
    first = syn.ensure_synthetic(progress=False, **params)
    assert first == syn.default_synthetic_dir(**params)
    csv_path = first / "styles.csv"
    mtime = csv_path.stat().st_mtime_ns
    n_files = len(list((first / "images").iterdir()))

    def fail(*a, **k):
        raise AssertionError("ensure_synthetic regenerated a cached catalogue")

    monkeypatch.setattr(syn, "generate_synthetic", fail)
    assert syn.ensure_synthetic(progress=False, **params) == first
    assert csv_path.stat().st_mtime_ns == mtime
    assert len(list((first / "images").iterdir())) == n_files == 7
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp dirs left


def test_interrupted_generation_leaves_nothing_and_next_run_succeeds(cache, monkeypatch):
    params = dict(n_groups=3, per_group=2, n_extra=0, seed=0)
    final = syn.default_synthetic_dir(**params)
    real_render = syn.render_image
    calls = []

    def render_then_die(row):
        calls.append(row["id"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of the loop
        return real_render(row)

    monkeypatch.setattr(syn, "render_image", render_then_die)
    with pytest.raises(KeyboardInterrupt):
        syn.ensure_synthetic(progress=False, **params)
    assert not final.exists()
    assert list(final.parent.iterdir()) == []

    monkeypatch.setattr(syn, "render_image", real_render)
    # leftovers a killed run could leave: a temp dir of a dead process, and an incomplete final dir
    dead = final.parent / f".{final.name}.tmp-{2**22 + 12345}-abcd"
    (dead / "images").mkdir(parents=True)
    (dead / "images" / "1.jpg").write_bytes(b"partial")
    (final / "images").mkdir(parents=True)
    with pytest.warns(UserWarning, match=r"has no manifest\.json.*regenerating it"):
        out = syn.ensure_synthetic(progress=False, **params)
    assert out == final and (final / "styles.csv").is_file()
    assert len(pd.read_csv(final / "styles.csv")) == len(list((final / "images").iterdir())) == 6
    assert not dead.exists()
    assert [p.name for p in final.parent.iterdir()] == [final.name]


def test_ensure_matches_generate(cache, tmp_path):
    params = dict(n_groups=2, per_group=3, n_extra=2, seed=7)
    cached = syn.ensure_synthetic(progress=False, **params)
    direct = syn.generate_synthetic(tmp_path / "direct", progress=False, **params)
    assert (cached / "styles.csv").read_bytes() == (direct / "styles.csv").read_bytes()
    assert sorted(os.listdir(cached / "images")) == sorted(os.listdir(direct / "images"))


# ------------------------------------------------------------------------------------ verification

TINY = dict(n_groups=3, per_group=4, n_extra=2, seed=0)


def _tiny_sample():
    from attrboost.data import load_dataset, sample_protocol

    cat = load_dataset("synthetic", progress=False, **TINY)
    return cat, sample_protocol(cat, n_groups=3, per_group=4, n_test=3, seed=0)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip_byte", "csv_edit", "no_manifest", "bad_manifest"])
def test_damaged_cached_catalogue_is_regenerated_and_gives_the_same_sample(cache, damage):
    cat, sample = _tiny_sample()
    root = syn.default_synthetic_dir(**TINY)
    before = _snapshot(root)
    assert "manifest.json" in before
    victim = Path(sample.items["image_path"].iloc[0])  # an image the seed-0 sample uses
    if damage == "delete":
        victim.unlink()
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:100])
    elif damage == "flip_byte":  # same size, other content
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "csv_edit":
        csv_path = root / "styles.csv"
        csv_path.write_text(csv_path.read_text().rstrip("\n") + " Edited\n")  # the last product's name
    elif damage == "no_manifest":  # an interrupted generation, or a copy made before manifests
        (root / "manifest.json").unlink()
    else:
        (root / "manifest.json").write_text("{not json")
    what = {"delete": r"missing, e\.g\. \['images/", "truncate": r"1 changed \(size or content\), e\.g\. \['images/",
            "flip_byte": r"1 changed", "csv_edit": r"changed.*'styles\.csv'", "no_manifest": "has no manifest",
            "bad_manifest": "manifest.json is unreadable"}[damage]
    with pytest.warns(UserWarning, match=f"synthetic catalogue .*{what}.*regenerating it"):
        cat2, sample2 = _tiny_sample()
    assert _snapshot(root) == before  # byte-identical files, manifest included
    pd.testing.assert_frame_equal(sample2.items, sample.items)
    assert sample2.fingerprint == sample.fingerprint and cat2.fingerprint == cat.fingerprint
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # nothing left aside
    assert syn.verify_synthetic(root) is None


def test_manifest_lists_every_file_and_an_intact_catalogue_verifies(small):
    import hashlib
    import json

    manifest = json.loads((small / "manifest.json").read_text())
    assert manifest["count"] == SMALL["n_groups"] * SMALL["per_group"] + SMALL["n_extra"]
    assert manifest["version"] == syn.VERSION and manifest["params"]["seed"] == 1
    files = sorted(p for p in small.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["files"]) == sorted(p.relative_to(small).as_posix() for p in files)
    for p in files:
        data = p.read_bytes()
        assert manifest["files"][p.relative_to(small).as_posix()] == [len(data), hashlib.sha256(data).hexdigest()[:16]]
    assert syn.verify_synthetic(small) is None

"""Data layer: loaders, bad input, sampling protocol, tags, download conversion, real data."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from attrboost.data import (ATTRIBUTES, DataError, build_vocab, default_fashion_dir, filter_tags, load_csv,
                            load_dataset, load_kaggle, normalise_name, sample_protocol)
from attrboost.data.catalogue import KAGGLE_COLUMNS
from attrboost.pixels import load_pixels
from attrboost.data.download import download_fashion, write_kaggle_layout
from helpers import make_kaggle, write_jpeg

# ---------------------------------------------------------------- tags
def test_normalise_name_rules():
    assert normalise_name("Puma Men's T-Shirts & Tops") == ["puma", "men", "tshirt", "-", "tops"]
    assert normalise_name("Women's Blue TShirts") == ["women", "blue", "tshirt"]
    assert normalise_name("Levi's  Jeans") == ["levis", "jeans"]
    assert normalise_name("") == [] and normalise_name(None) == []


def test_vocab_keeps_words_seen_more_than_min_count():
    docs = [["a"] * 6, ["b"] * 5, ["c", "a"]]
    assert build_vocab(docs, min_count=5) == ["a"]  # a: 7 > 5; b: 5 is not > 5
    assert build_vocab(docs, min_count=4) == ["a", "b"]
    assert filter_tags([["a", "x", "b"]], ["b", "a"]) == [["a", "b"]]


# ---------------------------------------------------------------- loaders
@pytest.mark.parametrize("nested", [False, True])
def test_load_kaggle_layout(tmp_path, nested):
    cat = load_kaggle(make_kaggle(tmp_path, nested=nested))
    assert len(cat) == 8 * 6 + 2 * 2
    assert list(cat.items.columns) == ["id", "image_path", *ATTRIBUTES, "text"]
    assert all(Path(p).is_file() for p in cat.items["image_path"])
    assert cat.load_image(0).mode == "RGB"
    assert cat.report["dropped_empty_attributes"] == 0


def test_kaggle_unquoted_commas_in_name_are_rejoined(tmp_path):
    make_kaggle(tmp_path, n_groups=1, per_group=2, small_groups=0)
    lines = (tmp_path / "styles.csv").read_text().splitlines()
    first = lines[1].rsplit(",", 1)[0] + ",Nike Men, Blue, Shoes"
    (tmp_path / "styles.csv").write_text("\n".join([lines[0], first, *lines[2:]]) + "\n")
    cat = load_kaggle(tmp_path)
    assert cat.items["text"].iloc[0] == "Nike Men, Blue, Shoes"


def test_missing_dir_csv_images_and_columns(tmp_path):
    with pytest.raises(DataError, match="does not exist.*make data"):
        load_kaggle(tmp_path / "nope")
    with pytest.raises(DataError, match="no styles.csv"):
        load_kaggle(tmp_path)
    make_kaggle(tmp_path / "d")
    df = pd.read_csv(tmp_path / "d" / "styles.csv")
    df.drop(columns=["season", "usage"]).to_csv(tmp_path / "d" / "styles.csv", index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['season', 'usage'\]"):
        load_kaggle(tmp_path / "d")


def test_empty_attributes_and_missing_images_are_dropped_and_reported(tmp_path):
    make_kaggle(tmp_path)
    df = pd.read_csv(tmp_path / "styles.csv", dtype=str)
    df.loc[[0, 1], "usage"] = ""
    df.to_csv(tmp_path / "styles.csv", index=False)
    gone = df["id"].iloc[[5, 6, 7]].tolist()
    for i in gone:
        (tmp_path / "images" / f"{i}.jpg").unlink()
    with pytest.warns(UserWarning) as rec:
        cat = load_kaggle(tmp_path)
    assert cat.report["dropped_empty_attributes"] == 2
    assert cat.report["dropped_missing_images"] == 3
    assert cat.report["missing_image_ids"] == gone
    assert len(cat) == len(df) - 5
    assert any("missing" in str(w.message) and gone[0] in str(w.message) for w in rec)


def test_load_csv_generic(tmp_path):
    img = tmp_path / "pics"
    img.mkdir()
    rows = []
    for i in range(6):
        write_jpeg(img / f"p{i}.jpg")
        rows.append({"sku": f"s{i}", "file": f"p{i}.jpg", "colour": "red" if i % 2 else "blue",
                     "shape": "round", "title": f"Red thing {i}"})
    pd.DataFrame(rows).to_csv(tmp_path / "cat.csv", index=False)
    cat = load_csv(tmp_path / "cat.csv", img, attributes=["colour", "shape"], id_column="sku",
                   path_column="file", text_column="title")
    assert cat.attributes == ("colour", "shape") and len(cat) == 6
    assert cat.items["id"].tolist() == [f"s{i}" for i in range(6)]
    assert cat.items["text"].iloc[1] == "Red thing 1"
    by_id = load_csv(tmp_path / "cat.csv", img, attributes=["colour"], id_column="file", image_ext="")
    assert len(by_id) == 6
    with pytest.raises(DataError, match=r"missing column\(s\) \['size'\]"):
        load_csv(tmp_path / "cat.csv", img, attributes=["size"], id_column="sku")
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "nope.csv", img, attributes=["colour"])


# ---------------------------------------------------------------- duplicate ids: one rule for every loader
def test_duplicate_ids_are_rejected_by_both_loaders_naming_ids_and_file(tmp_path):
    make_kaggle(tmp_path, n_groups=2, per_group=3, small_groups=0)
    csv_path = tmp_path / "styles.csv"
    lines = csv_path.read_text().splitlines()
    # ids 1001 and 1003 appear twice (a second row pointing at the same image)
    lines += [lines[1].replace("T-Shirts", "Copy"), lines[3].replace("T-Shirts", "Copy")]
    csv_path.write_text("\n".join(lines) + "\n")
    expect = r"styles\.csv: column 'id' has 2 duplicated value\(s\), e\.g\. \['1001', '1003'\]; expected one row"
    with pytest.raises(DataError, match=expect):
        load_kaggle(tmp_path)
    with pytest.raises(DataError, match=expect):
        load_csv(csv_path, tmp_path / "images", attributes=["gender", "baseColour"], id_column="id")
    # with a path column as the id: the same rule, naming that column
    pd.DataFrame({"file": ["a.jpg", "b.jpg", "a.jpg"], "colour": ["red", "blue", "red"]}).to_csv(
        tmp_path / "paths.csv", index=False)
    with pytest.raises(DataError, match=r"paths\.csv: column 'file' has 1 duplicated value\(s\), e\.g\. \['a\.jpg'\]"):
        load_csv(tmp_path / "paths.csv", tmp_path / "images", attributes=["colour"], id_column=None,
                 path_column="file")


# ---------------------------------------------------------------- CSV encodings
def _rewrite(path: Path, encoding: str, replace: tuple[str, str] = ("", "")) -> None:
    text = path.read_text(encoding="utf-8").replace(*replace)
    path.write_bytes(text.encode(encoding))


def test_kaggle_csv_saved_by_excel_with_bom_loads(tmp_path):
    make_kaggle(tmp_path, n_groups=2, per_group=3, small_groups=0)
    plain = load_kaggle(tmp_path)
    _rewrite(tmp_path / "styles.csv", "utf-8-sig")
    assert (tmp_path / "styles.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    cat = load_kaggle(tmp_path)
    pd.testing.assert_frame_equal(cat.items, plain.items)


def test_csv_with_bom_loads_with_load_csv(tmp_path):
    make_kaggle(tmp_path, n_groups=2, per_group=3, small_groups=0)
    _rewrite(tmp_path / "styles.csv", "utf-8-sig")
    cat = load_csv(tmp_path / "styles.csv", tmp_path / "images", attributes=["gender"], id_column="id")
    assert cat.items["id"].iloc[0] == "1001" and len(cat) == 6


@pytest.mark.parametrize("loader", ["kaggle", "csv"])
def test_latin1_csv_gives_a_clear_error_and_loads_with_encoding(tmp_path, loader):
    make_kaggle(tmp_path, n_groups=2, per_group=3, small_groups=0)
    _rewrite(tmp_path / "styles.csv", "latin-1", ("Brand0 ", "Café "))

    def load(**kw):
        if loader == "kaggle":
            return load_kaggle(tmp_path, **kw)
        return load_csv(tmp_path / "styles.csv", tmp_path / "images", attributes=["gender"],
                        text_column="productDisplayName", **kw)

    with pytest.raises(DataError, match=r"styles\.csv: cannot be read as utf-8-sig text \(byte b'\\xe9' at "
                                        r"position \d+\); re-save the file as UTF-8, or pass its encoding, "
                                        r"e\.g\. encoding='latin-1'"):
        load()
    cat = load(encoding="latin-1")
    assert cat.items["text"].iloc[0].startswith("Café ")


# ---------------------------------------------------------------- fingerprint: content, not location
def test_catalogue_fingerprint_survives_moving_the_folder_and_follows_content(tmp_path):
    import shutil

    make_kaggle(tmp_path / "a", n_groups=3, per_group=4, small_groups=0)
    orig = load_kaggle(tmp_path / "a")
    kw = dict(n_groups=3, per_group=4, n_test=3, seed=0)
    s_orig = sample_protocol(orig, **kw)
    # a plain copy elsewhere (new mtimes: shutil.copy does not keep them), then the original is gone
    shutil.copytree(tmp_path / "a", tmp_path / "moved" / "deeper", copy_function=shutil.copy)
    shutil.rmtree(tmp_path / "a")
    moved = load_kaggle(tmp_path / "moved" / "deeper")
    assert moved.fingerprint == orig.fingerprint
    s_moved = sample_protocol(moved, **kw)
    assert s_moved.dataset_fingerprint == s_orig.dataset_fingerprint
    assert s_moved.fingerprint == s_orig.fingerprint

    root = tmp_path / "moved" / "deeper"
    img = root / "images" / f"{orig.items['id'].iloc[5]}.jpg"
    before = img.read_bytes()
    Image.effect_noise((6, 8), 60).convert("RGB").save(img, format="JPEG")  # other content (and size)
    assert img.read_bytes() != before
    assert load_kaggle(root).fingerprint != orig.fingerprint
    img.write_bytes(before)
    assert load_kaggle(root).fingerprint == orig.fingerprint
    _rewrite(root / "styles.csv", "utf-8", ("Brand1", "Brand9"))  # a label/name edit in the CSV
    assert load_kaggle(root).fingerprint != orig.fingerprint


def test_load_csv_fingerprint_survives_moving_the_folder(tmp_path):
    import shutil

    (tmp_path / "a" / "pics").mkdir(parents=True)
    for i in range(4):
        write_jpeg(tmp_path / "a" / "pics" / f"p{i}.jpg", (i * 50, 0, 0))
    pd.DataFrame({"file": [f"pics/p{i}.jpg" for i in range(4)], "colour": ["red", "blue"] * 2}).to_csv(
        tmp_path / "a" / "cat.csv", index=False)
    fp = load_csv(tmp_path / "a" / "cat.csv", attributes=["colour"], id_column=None, path_column="file").fingerprint
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy)
    assert load_csv(tmp_path / "b" / "cat.csv", attributes=["colour"], id_column=None,
                    path_column="file").fingerprint == fp
    Image.effect_noise((6, 8), 60).convert("RGB").save(tmp_path / "b" / "pics" / "p0.jpg", format="JPEG")
    assert load_csv(tmp_path / "b" / "cat.csv", attributes=["colour"], id_column=None,
                    path_column="file").fingerprint != fp


# ---------------------------------------------------------------- image decoding: every mode to RGB
def _over_white(c, a):
    """Independent expectation: colour c with alpha a (0..255) composited on white."""
    return np.round(np.asarray(c, float) * a / 255 + 255 * (1 - a / 255))


def _mode_case(kind: str, path: Path):
    """Write a small image of one mode with known pixels; return (file, expected RGB H x W x 3)."""
    if kind == "1":
        im = Image.new("1", (2, 1))
        im.putpixel((1, 0), 1)
        im.save(path := path.with_suffix(".png"))
        return path, [[(0, 0, 0), (255, 255, 255)]]
    if kind == "L":
        Image.fromarray(np.array([[0, 77, 255]], np.uint8), "L").save(path := path.with_suffix(".png"))
        return path, [[(v, v, v) for v in (0, 77, 255)]]
    if kind in ("I;16", "I"):
        vals = np.array([[0, 32768, 65535, 1000, 257 * 77]])
        if kind == "I;16":
            Image.fromarray(vals.astype(np.uint16)).save(path := path.with_suffix(".png"))  # a 16-bit PNG
        else:
            Image.fromarray(vals.astype(np.int32)).save(path := path.with_suffix(".tif"))  # mode I
        with Image.open(path) as im:
            assert im.mode == kind
        # 32768 -> 128, 65535 -> 255, 1000 -> 4, 77 * 257 -> 77
        return path, [[(round(v / 257),) * 3 for v in vals[0]]]
    if kind in ("P", "P+transparency"):
        im = Image.new("P", (3, 1))
        im.putpalette([255, 0, 0, 0, 0, 255, 10, 200, 30] + [0] * (768 - 9))
        for x in range(3):
            im.putpixel((x, 0), x)
        expect = [[(255, 0, 0), (0, 0, 255), (10, 200, 30)]]
        if kind == "P":
            im.save(path := path.with_suffix(".png"))
        else:
            im.save(path := path.with_suffix(".png"), transparency=0)  # palette entry 0 is transparent
            expect = [[(255, 255, 255), (0, 0, 255), (10, 200, 30)]]
        with Image.open(path) as check:
            assert check.mode == "P"
        return path, expect
    if kind == "RGBA":
        px = [(255, 0, 0, 128), (10, 20, 30, 0), (10, 20, 30, 255), (0, 100, 200, 64)]
        im = Image.new("RGBA", (4, 1))
        for x, p in enumerate(px):
            im.putpixel((x, 0), p)
        im.save(path := path.with_suffix(".png"))
        return path, [[tuple(_over_white(p[:3], p[3])) for p in px]]  # half-transparent red -> (255, 127, 127)
    if kind == "LA":
        px = [(100, 0), (100, 255), (0, 128)]
        im = Image.new("LA", (3, 1))
        for x, p in enumerate(px):
            im.putpixel((x, 0), p)
        im.save(path := path.with_suffix(".png"))
        return path, [[tuple(_over_white([p[0]] * 3, p[1])) for p in px]]
    if kind == "RGB+tRNS":
        im = Image.new("RGB", (2, 1), (1, 2, 3))
        im.putpixel((1, 0), (40, 50, 60))
        im.save(path := path.with_suffix(".png"), transparency=(1, 2, 3))  # a PNG colour key
        return path, [[(255, 255, 255), (40, 50, 60)]]
    if kind == "CMYK":
        px = [(0, 128, 255, 64), (0, 0, 0, 0), (255, 255, 255, 255), (30, 60, 90, 0)]
        im = Image.new("CMYK", (4, 1))
        for x, p in enumerate(px):
            im.putpixel((x, 0), p)
        im.save(path := path.with_suffix(".tif"))  # lossless
        # naive CMYK: channel = 255 * (1 - c) * (1 - k)
        return path, [[tuple(round((255 - c) * (255 - p[3]) / 255) for c in p[:3]) for p in px]]
    raise AssertionError(kind)


MODES = ["1", "L", "I;16", "I", "P", "P+transparency", "RGBA", "LA", "RGB+tRNS", "CMYK"]


@pytest.mark.parametrize("kind", MODES)
def test_load_image_converts_every_mode_to_the_expected_rgb(tmp_path, kind):
    from attrboost.data import load_image

    path, expect = _mode_case(kind, tmp_path / "img")
    got = load_image(path)
    assert got.mode == "RGB"
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(expect, dtype=float), atol=1)


def test_all_decoders_share_the_conversion(tmp_path, monkeypatch):
    """Sampling, Catalogue.load_image, pixel loading (PCA), feature extraction and figures decode alike."""
    from attrboost import backbones
    from attrboost.data import load_image
    from attrboost.inference import ImageFiles

    paths, expect = zip(*(_mode_case(k, tmp_path / k.replace(";", "").replace("+", "")) for k in ("I;16", "RGBA")))
    for path, exp in zip(paths, expect):
        exp = np.asarray(exp, dtype=float)
        size = Image.open(path).size
        np.testing.assert_allclose(np.asarray(load_image(path), float), exp, atol=1)
        pixels = load_pixels([path], size=size, progress=False)[0].reshape(exp.shape) * 255
        np.testing.assert_allclose(pixels, exp, atol=1)
        item = ImageFiles([path], transform=lambda im: np.asarray(im, dtype=float))[0]
        np.testing.assert_allclose(item, exp, atol=1)
    # the sampler's readability check uses the same decoder: what it cannot convert is skipped
    from attrboost.data import sampling

    Image.fromarray(np.zeros((2, 2), np.float32), "F").save(tmp_path / "float.tif")
    assert sampling._readable(str(paths[0])) and not sampling._readable(str(tmp_path / "float.tif"))
    with pytest.raises(DataError, match=r"float\.tif: 32-bit float images \(mode 'F'\) are not supported"):
        load_image(tmp_path / "float.tif")
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"junk\.jpg: cannot decode the image"):
        load_image(tmp_path / "junk.jpg")


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L")])
def test_plain_rgb_and_grey_decode_bit_identical_to_convert_rgb(tmp_path, fmt, mode):
    """The real and synthetic data are RGB JPEGs: their pixels (and so every study number) must not move."""
    from attrboost import backbones
    from attrboost.data import load_image

    rng = np.random.default_rng(0)
    shape = (80, 60, 3) if mode == "RGB" else (80, 60)
    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, format=fmt)
    with Image.open(path) as im:
        ref = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_image(path)), ref)
    np.testing.assert_array_equal(load_pixels([path], progress=False)[0],
                                  ref.astype(np.float32).reshape(-1) / 255.0)


def test_unknown_dataset_name():
    with pytest.raises(DataError, match=r"unknown dataset 'mnist'; known: \['synthetic', 'fashion', 'csv'\]"):
        load_dataset("mnist")


# ---------------------------------------------------------------- sampling
@pytest.fixture
def tiny(tmp_path):
    return load_kaggle(make_kaggle(tmp_path, n_groups=8, per_group=6, small_groups=3))


def test_sample_sizes_groups_and_parts(tiny):
    s = sample_protocol(tiny, n_groups=5, per_group=4, min_group_size=6, n_test=8, val_fraction=0.25, seed=1)
    assert len(s.items) == 20 and s.items["group"].nunique() == 5
    assert (s.items.groupby("group").size() == 4).all()
    # each protocol group is one full attribute tuple, and distinct groups are distinct tuples
    tuples = s.items.groupby("group")[list(ATTRIBUTES)].nunique()
    assert (tuples == 1).all().all()
    assert len(s.items.drop_duplicates(list(ATTRIBUTES))) == 5
    counts = s.items["part"].value_counts()
    assert counts["test"] == 8 and counts["val"] == 3 and counts["train"] == 9
    assert not s.items["id"].duplicated().any()
    assert set(s.part("train")["id"]).isdisjoint(s.part("test")["id"])
    assert set(s.part("val")["id"]).isdisjoint(s.part("test")["id"])
    assert set(s.part("val")["id"]).isdisjoint(s.part("train")["id"])


def test_sample_drops_small_groups(tiny):
    s = sample_protocol(tiny, n_groups=8, per_group=6, seed=0)
    assert s.items.groupby("group").size().min() == 6  # the 2-item groups never qualify


def test_sample_seed_reproduces_and_varies(tiny):
    a = sample_protocol(tiny, n_groups=4, per_group=5, seed=3)
    b = sample_protocol(tiny, n_groups=4, per_group=5, seed=3)
    c = sample_protocol(tiny, n_groups=4, per_group=5, seed=4)
    pd.testing.assert_frame_equal(a.items, b.items)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.items["id"].tolist() != c.items["id"].tolist()


def test_by_group_split_has_unseen_test_groups(tiny):
    s = sample_protocol(tiny, n_groups=8, per_group=6, n_test=12, split="by_group", val_fraction=1 / 6, seed=0)
    test_groups = set(s.part("test")["group"])
    assert test_groups.isdisjoint(s.part("train")["group"])
    assert len(test_groups) == 2
    assert set(s.part("val")["group"]).isdisjoint(s.part("train")["group"])


def test_fewer_groups_than_requested(tiny):
    with pytest.raises(DataError, match="only 8 attribute groups have at least 6 images.*n_groups=9"):
        sample_protocol(tiny, n_groups=9, per_group=6)


def test_bad_sampling_parameters(tiny):
    with pytest.raises(ValueError, match="split='seen'"):
        sample_protocol(tiny, n_groups=2, per_group=2, split="seen")
    with pytest.raises(ValueError, match="per_group == 0"):
        sample_protocol(tiny, n_groups=2, per_group=0)


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    cat = load_kaggle(make_kaggle(tmp_path, n_groups=3, per_group=6, small_groups=0))
    bad = cat.items["id"].iloc[0]
    Path(cat.items["image_path"].iloc[0]).write_bytes(b"not a jpeg")
    s = sample_protocol(cat, n_groups=3, per_group=5, min_group_size=6, n_test=3, seed=0)
    assert bad not in set(s.items["id"])
    assert (s.items.groupby("group").size() == 5).all()
    assert s.report["skipped_unreadable"] <= 1
    # asking for all 6 of each group: the broken group no longer has enough readable images
    with pytest.raises(DataError, match="only 2 groups have 6 readable images.*1 unreadable"):
        sample_protocol(cat, n_groups=3, per_group=6, n_test=3, seed=0)


def test_sample_tags_use_sample_vocab(tiny):
    s = sample_protocol(tiny, n_groups=8, per_group=6, seed=0, tag_min_count=5)
    flat = [t for tags in s.items["tags"] for t in tags]
    assert set(flat) <= set(s.vocab) and "tshirt" in s.vocab


def test_sample_vocab_comes_from_training_names_only(tiny):
    """Validation and test names never decide which words are kept: the vocabulary is build_vocab of the training
    part's normalised names, and renaming every evaluated item leaves it (and the training tags) unchanged."""
    from attrboost.data.tags import normalise_name

    s = sample_protocol(tiny, n_groups=8, per_group=6, seed=0, tag_min_count=2)
    train = (s.items["part"] == "train").to_numpy()
    assert s.vocab == build_vocab([normalise_name(t) for t in s.items.loc[train, "text"]], 2)
    # a word that only evaluated items carry, often enough to pass the count, stays out
    renamed = tiny.items.copy()
    held_out = set(s.items.loc[~train, "id"])
    renamed.loc[renamed["id"].isin(held_out), "text"] = "zzleak " * 3
    import dataclasses
    s2 = sample_protocol(dataclasses.replace(tiny, items=renamed), n_groups=8, per_group=6, seed=0, tag_min_count=2)
    assert list(s2.items["id"]) == list(s.items["id"]) and "zzleak" not in s2.vocab
    assert s2.vocab == s.vocab
    assert s2.items.loc[train, "tags"].tolist() == s.items.loc[train, "tags"].tolist()


# ---------------------------------------------------------------- download conversion
def test_write_kaggle_layout_from_in_memory_records(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (6, 8), (0, 0, 255)).save(buf, format="PNG")
    recs = []
    for i in range(4):
        rec = {c: v for c, v in zip(KAGGLE_COLUMNS, [10 + i, "Men", "Apparel", "Topwear", "Shirts", "Blue",
                                                      "Fall", 2011.0, "Casual", f"Blue Shirt {i}"])}
        rec["image"] = ({"bytes": buf.getvalue(), "path": None} if i % 2 else Image.new("RGB", (6, 8), "red"))
        recs.append(rec)
    out = write_kaggle_layout(recs, tmp_path / "fashion", progress=False)
    cat = load_kaggle(out)
    assert cat.items["id"].tolist() == ["10", "11", "12", "13"]
    assert pd.read_csv(out / "styles.csv")["year"].tolist() == [2011] * 4
    px = np.asarray(cat.load_image(1))
    assert px[..., 2].mean() > 200 and px[..., 0].mean() < 50  # the blue PNG came through as a JPEG
    assert not (tmp_path / "fashion.partial").exists()


def test_write_kaggle_layout_interrupted_leaves_nothing(tmp_path):
    def recs():
        yield {**{c: "x" for c in KAGGLE_COLUMNS}, "id": 1, "image": Image.new("RGB", (4, 4))}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_kaggle_layout(recs(), tmp_path / "fashion", progress=False)
    assert not (tmp_path / "fashion").exists() and not (tmp_path / "fashion.partial").exists()


def test_download_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    import time

    import huggingface_hub

    def no_network(self, *a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", no_network)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"could not reach the Hugging Face hub.*kaggle.*ATTRBOOST_DATA_DIR"):
        download_fashion(tmp_path / "x")
    assert time.perf_counter() - t0 < 30


# ---------------------------------------------------------------- real data
REAL = default_fashion_dir()


@pytest.mark.skipif(REAL is None or not (Path(REAL) / "styles.csv").exists(),
                    reason="real data absent: get it with `make data` or set ATTRBOOST_DATA_DIR (see docs/reproducibility.md)")
def test_real_data_protocol_sample():
    cat = load_dataset("fashion", REAL)
    header = (Path(cat.source) / "styles.csv").read_text().splitlines()[0].split(",")
    assert header == list(KAGGLE_COLUMNS)
    assert len(cat) > 30000
    s = sample_protocol(cat, seed=0)
    assert len(s.items) == 4000 and s.items["group"].nunique() == 100
    assert (s.items.groupby("group").size() == 40).all()
    assert s.items["part"].value_counts().to_dict() == {"train": 2700, "test": 1000, "val": 300}
    assert 200 < len(s.vocab) < 600  # the original kept 292 words

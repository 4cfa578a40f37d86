"""The item table of an index (ids and paths by position, id lookup), checked against a plain dict."""
from __future__ import annotations

import json

import numpy as np
import pytest

from attrboost.search import items as I
from attrboost.search.bundle import BundleError, write_manifest
from attrboost.cache import save_arrays
from attrboost.search.index import FORMAT, VectorIndex
from attrboost.search.items import ItemTable


def _random_items(rng, n, start=0):
    alphabet = list("abcXYZ019-_/é中 ")
    ids = [f"{start + k}:" + "".join(rng.choice(alphabet, rng.integers(0, 12))) for k in range(n)]
    paths = ["" if rng.random() < 0.2 else "/data/" + "".join(rng.choice(alphabet, rng.integers(1, 40)))
             for _ in range(n)]
    return ids, paths


def _check_against_dict(table: ItemTable, ids: list[str], paths: list[str], rng) -> None:
    assert len(table) == len(ids)
    assert table.ids.tolist() == ids and table.paths.tolist() == paths
    pos = rng.permutation(len(ids))[:50]
    assert table.ids_at(pos) == [ids[p] for p in pos]
    assert table.paths_at(pos) == [paths[p] for p in pos]
    row = {i: k for k, i in enumerate(ids)}
    queries = [ids[p] for p in pos] + ["not there", ""] + [i + "x" for i in ids[:1]]
    assert table.positions(queries).tolist() == [row.get(q, -1) for q in queries]
    assert table.contains(queries).tolist() == [q in row for q in queries]


def test_appends_lookups_and_memory_mapped_reload_equal_a_dict(tmp_path):
    rng = np.random.default_rng(0)
    table, all_ids, all_paths = ItemTable(), [], []
    for size in (0, 1, 37, 500, 3):
        ids, paths = _random_items(rng, size, start=len(all_ids))
        table.append(ids, paths)
        all_ids += ids
        all_paths += paths
        _check_against_dict(table, all_ids, all_paths, rng)
    names = table.save(tmp_path)
    assert names == list(I.FILES)
    loaded = ItemTable.load(tmp_path, len(all_ids))
    assert all(isinstance(a, np.memmap) for a in (loaded._hash, loaded._order, *loaded._ids.arrays()))
    _check_against_dict(loaded, all_ids, all_paths, rng)
    more, more_paths = _random_items(rng, 20, start=len(all_ids))  # appending to a loaded (read-only) table
    loaded.append(more, more_paths)
    _check_against_dict(loaded, all_ids + more, all_paths + more_paths, rng)
    with pytest.raises(ValueError, match="do not hold 999 items"):
        ItemTable.load(tmp_path, 999)


def test_repeated_ids_are_refused_and_nothing_is_appended():
    table = ItemTable()
    table.append(["a", "b"], ["pa", "pb"])
    with pytest.raises(ValueError, match=r"1 repeated, e.g. \['b'\]"):
        table.append(["c", "b"])
    with pytest.raises(ValueError, match=r"1 repeated, e.g. \['d'\]"):
        table.append(["d", "e", "d"])
    with pytest.raises(ValueError, match="differ in length"):
        table.append(["f"], ["pf", "pg"])
    assert table.ids.tolist() == ["a", "b"] and table.positions(["c", "d", "e", "f"]).tolist() == [-1] * 4


def test_hash_collisions_are_resolved_on_the_ids(monkeypatch):
    """With a hash that collides all the time, lookups and the repeat check still go by the ids themselves
    (the test fails if a hash match is taken as an id match)."""
    weak = lambda ids: np.fromiter((len(s) % 3 for s in ids), dtype=np.uint64, count=len(ids))  # noqa: E731
    monkeypatch.setattr(I, "id_hashes", weak)
    rng = np.random.default_rng(1)
    ids, paths = _random_items(rng, 300)
    table = ItemTable()
    table.append(ids[:200], paths[:200])
    table.append(ids[200:], paths[200:])
    _check_against_dict(table, ids, paths, rng)
    with pytest.raises(ValueError, match="1 repeated"):
        table.append([ids[123]])
    with pytest.raises(ValueError, match="1 repeated"):
        table.append(["new-1", "new-2", "new-1"])
    table.append(["new-1", "new-22"])  # same weak hash as many others, distinct ids: accepted
    assert table.positions(["new-22", "new-1"]).tolist() == [301, 300]


def _version1_copy(index: VectorIndex, src, dst):
    """The same index as format version 1 wrote it: ids and paths in items.npz."""
    dst.mkdir()
    (dst / "faiss.index").write_bytes((src / "faiss.index").read_bytes())
    (dst / "index.json").write_text((src / "index.json").read_text(encoding="utf-8"), encoding="utf-8")
    save_arrays(dst / "items.npz", ids=index.ids, paths=index.paths)
    write_manifest(dst, ["faiss.index", "items.npz", "index.json"], fmt=FORMAT, version=1)


def test_index_reads_format_version_1_and_rewrites_it_as_version_2(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 16)).astype(np.float32)
    ids, paths = _random_items(rng, 300)
    index = VectorIndex(16).add(X, ids, paths)
    index.save(tmp_path / "v2")
    _version1_copy(index, tmp_path / "v2", tmp_path / "v1")
    old = VectorIndex.load(tmp_path / "v1")
    new = VectorIndex.load(tmp_path / "v2")
    for ix in (old, new):
        got, scores = ix.search(X[:5], k=7)
        want, want_scores = index.search(X[:5], k=7)
        assert got.tolist() == want.tolist() and np.array_equal(scores, want_scores)
        assert ix.path_of([ids[5], "nope"]) == [paths[5], ""]
    old.add(X[:1] + 1, ["extra"], ["/extra.jpg"])
    old.save(tmp_path / "v1")
    manifest = json.loads((tmp_path / "v1" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == 2 and "items.npz" not in manifest["files"]
    assert not (tmp_path / "v1" / "items.npz").exists()
    again = VectorIndex.load(tmp_path / "v1")
    assert len(again) == 301 and again.path_of(["extra"]) == ["/extra.jpg"]


def test_inconsistent_item_files_are_a_bundle_error(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    VectorIndex(8).add(X, [str(k) for k in range(40)]).save(tmp_path)
    np.save(tmp_path / "item_id_order.npy", np.arange(39, dtype=np.int64))
    write_manifest(tmp_path, ["faiss.index", *I.FILES, "index.json"], fmt=FORMAT, version=2)  # checksums pass
    with pytest.raises(BundleError, match="do not hold 40 items"):
        VectorIndex.load(tmp_path)

"""The ids and paths of an index's items, by position, in a form that scales to 100M items.

:class:`ItemTable` keeps each column as one UTF-8 byte blob plus ``int64`` offsets (variable length: an id
or path costs its own bytes, not the longest one's), and finds items by id through a sorted array of 64-bit
id hashes (BLAKE2b, 8 bytes; a hash match is confirmed on the id itself, so collisions are harmless).
Saved as plain ``.npy`` files, a loaded table is memory-mapped: opening an index of 100M items reads no
ids or paths until they are asked for.

Cost per item: ``len(id) + len(path)`` bytes (UTF-8) + 32 bytes (two offsets, hash, position). Appending
``m`` items to ``n`` costs O(m log m + n) (the hash array is merged, not re-sorted); the id check runs on
every append, so ids stay unique.

Before format version 2 the index kept them in ``items.npz`` as fixed-width unicode arrays (4 bytes per
character of the longest path, for every item: ~24 GB at 100M items with 60-character paths, all in memory)
with an O(n) duplicate check per ``add``; :meth:`ItemTable.from_arrays` reads those.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..cache import atomic_write

__all__ = ["ItemTable", "FILES", "id_hashes"]

#: The files :meth:`ItemTable.save` writes (in this order).
FILES = ("item_ids.npy", "item_id_offsets.npy", "item_paths.npy", "item_path_offsets.npy",
         "item_id_hashes.npy", "item_id_order.npy")


def id_hashes(ids) -> np.ndarray:
    """64-bit BLAKE2b hashes of the ids' UTF-8 bytes (uint64, little-endian), stable across runs and machines."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")
                        for s in ids), dtype=np.uint64, count=len(ids))


def _encode(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(blob uint8, lengths int64) of the strings' UTF-8 bytes."""
    raw = [s.encode("utf-8") for s in strings]
    return (np.frombuffer(b"".join(raw), dtype=np.uint8).copy(),
            np.fromiter(map(len, raw), dtype=np.int64, count=len(raw)))


class _Column:
    """Variable-length strings: a UTF-8 blob and n + 1 offsets. Appends are kept as parts (a blob and the
    absolute end offsets of its strings) and joined when the column is first read."""

    def __init__(self, blob: np.ndarray | None = None, offsets: np.ndarray | None = None):
        self._blobs = [np.zeros(0, np.uint8) if blob is None else blob]
        self._offsets = [np.zeros(1, np.int64) if offsets is None else offsets]  # the first part: n0 + 1 entries

    def __len__(self) -> int:
        return sum(len(o) for o in self._offsets) - 1

    def append(self, strings: list[str]) -> None:
        if not strings:
            return
        blob, lens = _encode(strings)
        self._blobs.append(blob)
        self._offsets.append(int(self._offsets[-1][-1]) + np.cumsum(lens))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(blob, offsets) of the whole column."""
        if len(self._blobs) > 1:
            self._blobs, self._offsets = [np.concatenate(self._blobs)], [np.concatenate(self._offsets)]
        return self._blobs[0], self._offsets[0]

    def __getitem__(self, positions) -> list[str]:
        blob, off = self.arrays()
        return [bytes(blob[off[p]: off[p + 1]]).decode("utf-8") for p in np.asarray(positions, dtype=np.int64).ravel()]

    def all(self) -> list[str]:
        return self[np.arange(len(self))]


class ItemTable:
    """Ids (unique) and paths of ``n`` items by position (module docstring).

    >>> t = ItemTable(); t.append(["a", "b"], ["/x/a.jpg", "/x/b.jpg"])
    >>> t.positions(["b", "zz"]).tolist(), t.paths_at([1])
    ([1, -1], ['/x/b.jpg'])
    """

    def __init__(self):
        self._ids, self._paths = _Column(), _Column()
        self._hash = np.zeros(0, np.uint64)   # sorted
        self._order = np.zeros(0, np.int64)   # the position of each sorted hash

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return f"ItemTable(n={len(self)})"

    # ------------------------------------------------------------------------------------------ lookups
    def ids_at(self, positions) -> list[str]:
        """The ids at ``positions`` (a list, in the order given)."""
        return self._ids[positions]

    def paths_at(self, positions) -> list[str]:
        """The paths at ``positions`` ("" where none was given)."""
        return self._paths[positions]

    def _find(self, ids: list[str], hashes: np.ndarray) -> np.ndarray:
        """Positions of ``ids`` (-1: not in the table), ``hashes`` their :func:`id_hashes`."""
        out = np.full(len(ids), -1, dtype=np.int64)
        if not len(self) or not len(ids):
            return out
        lo = np.searchsorted(self._hash, hashes, side="left")
        hit = np.flatnonzero(self._hash[np.minimum(lo, len(self) - 1)] == hashes)
        for q in hit:  # confirm on the id itself (several items may share a 64-bit hash)
            j = lo[q]
            while j < len(self) and self._hash[j] == hashes[q]:
                if self._ids[[self._order[j]]][0] == ids[q]:
                    out[q] = self._order[j]
                    break
                j += 1
        return out

    def positions(self, ids) -> np.ndarray:
        """The position of each id (int64; -1 for ids not in the table)."""
        ids = [str(i) for i in ids]
        return self._find(ids, id_hashes(ids))

    def contains(self, ids) -> np.ndarray:
        """Whether each id is in the table (bool array)."""
        return self.positions(ids) >= 0

    @property
    def ids(self) -> np.ndarray:
        """Every id, as a numpy str array (reads them all: O(n); use :meth:`ids_at` on large tables)."""
        return np.asarray(self._ids.all(), dtype=str)

    @property
    def paths(self) -> np.ndarray:
        """Every path, as a numpy str array (O(n), as :attr:`ids`)."""
        return np.asarray(self._paths.all(), dtype=str)

    # ------------------------------------------------------------------------------------------ append
    def check_new(self, ids) -> np.ndarray:
        """Raise ValueError naming the repeated ids unless ``ids`` are unique among themselves and new to the
        table; returns their :func:`id_hashes`."""
        ids = [str(i) for i in ids]
        h = id_hashes(ids)
        hs = np.sort(h)
        repeated = set()
        if (hs[1:] == hs[:-1]).any():  # equal hashes within the batch: equal ids, or a collision
            seen: set[str] = set()
            repeated = {i for i in ids if i in seen or seen.add(i)}
        known = self._find(ids, h) >= 0
        repeated |= {ids[k] for k in np.flatnonzero(known)}
        if repeated:
            raise ValueError(f"ids must be unique in the index: {len(repeated)} repeated, e.g. {sorted(repeated)[:5]}")
        return h

    def append(self, ids, paths=None) -> None:
        """Append items; ``ids`` must be unique among themselves and new to the table (:meth:`check_new`;
        nothing is appended otherwise). ``paths``: None or one per id."""
        ids = [str(i) for i in ids]
        paths = ["" if p is None else os.fspath(p) for p in (paths if paths is not None else [None] * len(ids))]
        if len(paths) != len(ids):
            raise ValueError(f"ids ({len(ids)}) and paths ({len(paths)}) differ in length")
        h = self.check_new(ids)
        order = np.argsort(h, kind="stable")
        hs = h[order]
        n = len(self)
        self._ids.append(ids)
        self._paths.append(paths)
        at = np.searchsorted(self._hash, hs, side="right")
        self._hash = np.insert(self._hash, at, hs)
        self._order = np.insert(self._order, at, n + order.astype(np.int64))

    # ------------------------------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike) -> list[str]:
        """Write the table as :data:`FILES` (``.npy``, each atomically) into ``directory``; returns the names."""
        directory = Path(directory)
        arrays = (*self._ids.arrays(), *self._paths.arrays(), self._hash, self._order)
        for name, arr in zip(FILES, arrays):
            atomic_write(directory / name, lambda tmp, a=arr: _save_npy(tmp, a))
        return list(FILES)

    @classmethod
    def load(cls, directory: str | os.PathLike, n: int, *, mmap: bool = True) -> "ItemTable":
        """The table saved by :meth:`save` (memory-mapped unless ``mmap=False``); ``n``: the expected number
        of items (ValueError if the files disagree with it or with each other)."""
        directory = Path(directory)
        a = [np.load(directory / name, mmap_mode="r" if mmap else None, allow_pickle=False) for name in FILES]
        ids, id_off, paths, path_off, h, order = a
        ok = (len(id_off) == len(path_off) == n + 1 and len(h) == len(order) == n and int(id_off[-1]) == len(ids)
              and int(path_off[-1]) == len(paths) and ids.dtype == paths.dtype == np.uint8
              and h.dtype == np.uint64 and order.dtype == id_off.dtype == path_off.dtype == np.int64)
        if not ok:
            raise ValueError(f"{directory}: the item files do not hold {n} items consistently "
                             f"(offsets {len(id_off) - 1}/{len(path_off) - 1}, hashes {len(h)}, positions {len(order)})")
        out = cls()
        out._ids, out._paths = _Column(ids, id_off), _Column(paths, path_off)
        out._hash, out._order = h, order
        return out

    @classmethod
    def from_arrays(cls, ids, paths) -> "ItemTable":
        """A table of these ids and paths (e.g. format version 1's ``items.npz`` arrays)."""
        out = cls()
        out.append(list(np.asarray(ids).tolist()), list(np.asarray(paths).tolist()))
        return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

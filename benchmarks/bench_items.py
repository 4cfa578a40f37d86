"""Benchmark: an index's item table (ids and paths, attrboost.search.items) at catalogue sizes, vs format version 1.

For each ``--sizes`` n: ids ``sku-0000000042`` and paths ``/catalogue/images/0042/sku-0000000042.jpg``
(14 and 41 characters) appended in groups of ``--batch`` (attrboost index --engine ray adds 262,144 at a time),
then saved, loaded (memory-mapped) and looked up by id. Prints the append rate, save and load seconds, the
bytes per item on disk, the process's peak RSS, lookups per second, and what format version 1 would have
needed (fixed-width unicode ``items.npz``: 4 bytes x longest string x n, held in memory) and cost (its
duplicate check built a set of every id already in the index on each add: measured for the first sizes,
``--v1-max``). Usage::

    python benchmarks/bench_items.py [--sizes 1000000 10000000] [--batch 262144] [--v1-max 1000000]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from attrboost.search.items import ItemTable


def make(start: int, n: int) -> tuple[list[str], list[str]]:
    ids = [f"sku-{k:010d}" for k in range(start, start + n)]
    return ids, [f"/catalogue/images/{k % 10000:04d}/{i}.jpg" for k, i in zip(range(start, start + n), ids)]


def v1_append_seconds(n: int, batch: int) -> float:
    """The time format version 1's ``VectorIndex.add`` spent on ids: set of all ids for the duplicate check and
    concatenation of the fixed-width arrays, per add."""
    have_ids, have_paths = np.zeros(0, dtype=str), np.zeros(0, dtype=str)
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        ids, paths = make(s, min(batch, n - s))
        ids, paths = np.asarray(ids, dtype=str), np.asarray(paths, dtype=str)
        dup = set(ids.tolist()) & set(have_ids.tolist())
        assert not dup and len(set(ids.tolist())) == len(ids)
        have_ids, have_paths = np.concatenate([have_ids, ids]), np.concatenate([have_paths, paths])
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--batch", type=int, default=1 << 18)
    ap.add_argument("--v1-max", type=int, default=1_000_000, help="measure format version 1's add up to this size")
    ap.add_argument("--lookups", type=int, default=10_000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    for n in args.sizes:
        table = ItemTable()
        t0 = time.perf_counter()
        for s in range(0, n, args.batch):
            table.append(*make(s, min(args.batch, n - s)))
        append_s = time.perf_counter() - t0
        d = Path(tempfile.mkdtemp(prefix="bench_items_"))
        try:
            t0 = time.perf_counter()
            table.save(d)
            save_s = time.perf_counter() - t0
            disk = sum(f.stat().st_size for f in d.iterdir())
            del table
            t0 = time.perf_counter()
            loaded = ItemTable.load(d, n)
            load_s = time.perf_counter() - t0
            pick = rng.integers(0, n, args.lookups)
            want = [f"sku-{k:010d}" for k in pick]
            t0 = time.perf_counter()
            got = loaded.positions(want)
            lookup_s = time.perf_counter() - t0
            assert np.array_equal(got, pick), "lookup returned wrong positions"
            t0 = time.perf_counter()
            paths = loaded.paths_at(pick)
            paths_s = time.perf_counter() - t0
            assert paths[0] == make(int(pick[0]), 1)[1][0]
        finally:
            shutil.rmtree(d, ignore_errors=True)
        ids, paths = make(n - 1, 1)
        v1_bytes = 4 * n * (len(ids[0]) + len(paths[0]))
        v1 = f"{v1_append_seconds(n, args.batch):.1f} s" if n <= args.v1_max else "not measured"
        print(f"n={n:,}: append {append_s:.1f} s ({n / append_s:,.0f} items/s, batches of {args.batch:,}); "
              f"save {save_s:.2f} s; load {load_s * 1e3:.1f} ms (memory-mapped); {disk / n:.1f} bytes/item on disk "
              f"({disk / 1e9:.2f} GB); lookup {args.lookups / lookup_s:,.0f} ids/s; paths_at {args.lookups / paths_s:,.0f}/s; "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB | "
              f"format v1: {v1_bytes / 1e9:.2f} GB in memory, append {v1}", flush=True)


if __name__ == "__main__":
    main()

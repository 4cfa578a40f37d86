"""A searchable gallery of boosted vectors: a faiss index with the items' ids and paths.

Vectors are L2-normalised when added and compared by inner product, so scores are cosine similarities.
Kinds (:data:`KINDS`):

* ``flat`` (default): exact search (``faiss.IndexFlatIP``). A few queries at a time (fewer than
  :data:`PREFILTER_MAX_QUERIES`) are answered by a two-step search that is still exact: a float16 copy of the
  vectors (``faiss.IndexScalarQuantizer`` ``QT_fp16``, half the bytes to read) gives candidates, they are
  re-scored in float32, and the result is accepted only if no vector outside the candidates can beat the
  k-th score (the float16 error is bounded: :func:`fp16_error_bound`); otherwise more candidates, and at
  last the float32 scan. It halves the memory read of a query (39k x 1280: 7.8 -> 3.3 ms on one core,
  ``benchmarks/bench_index.py``) for 50 % more memory;
* ``hnsw``: graph search (``faiss.IndexHNSWFlat``, ``M`` = 32, ``efSearch`` = 64), approximate;
* ``ivfpq``: inverted lists + product quantisation (``faiss.IndexIVFPQ``; trained on the first vectors
  added, ``nlist`` ~ 4 sqrt(n), ``nprobe`` 16, one byte per 16 dimensions), approximate and compact.

When an approximate index is built (its first :meth:`VectorIndex.add`), its recall@10 against exact search
is measured on a sample of the added vectors used as queries and kept in :attr:`VectorIndex.report`.

With a model that has attribute classifiers, the index also keeps each item's predicted attributes
(:class:`~attrboost.search.predicted.Predictions`, :attr:`VectorIndex.predicted`), and :meth:`VectorIndex.search`
takes a ``keep`` filter over item positions. **Filtered search over-fetches**: it asks the index for
``c = max(64, 4 k)`` candidates per query, keeps the matching ones in score order, and while fewer than ``k`` match
and ``c`` is below the index size, asks again with ``c`` x 8; so it returns the best ``k`` matching items (exactly
the filtered top k on a ``flat`` index), fewer only when fewer than ``k`` items match at all.

An index remembers the model that made its vectors (:attr:`VectorIndex.model`: backbone, width, weights and
head hashes, bundle path, and ``space``: ``boosted`` vectors, or ``raw`` frozen backbone features for an
``attrboost index --raw``); :meth:`VectorIndex.check_model` refuses vectors from another one. :meth:`save`
writes a directory (every file atomically, then a manifest with checksums); :meth:`load` verifies it.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ..manifest import BundleError, read_manifest, write_manifest
from ..cache import atomic_write, load_arrays, write_json
from ..checks import check_features, check_int
from .artefacts import INDEX_FORMAT
from .items import ItemTable
from .predicted import Predictions

__all__ = ["VectorIndex", "KINDS", "IndexMismatchError", "EmptyIndexError", "exact_search"]

KINDS = ("flat", "hnsw", "ivfpq")
FORMAT, FORMAT_VERSION = INDEX_FORMAT, 2
#: Versions :meth:`VectorIndex.load` reads: 1 kept ids and paths in ``items.npz`` (fixed-width unicode).
READABLE_VERSIONS = (1, 2)
RECALL_SAMPLE, RECALL_K = 500, 10
PREFILTER_MAX_QUERIES = 20  # faiss switches to BLAS (fast for many queries) at 20
PREFILTER_MIN_CANDIDATES, PREFILTER_GROWTH = 64, 8
FILTER_MIN_CANDIDATES, FILTER_OVERFETCH, FILTER_GROWTH = 64, 4, 8  # filtered search (module docstring)
HNSW_M, HNSW_EF_SEARCH = 32, 64
IVF_NPROBE = 16


class IndexMismatchError(ValueError):
    """Vectors or a model that do not match the index (backbone, width, weights, head)."""


class EmptyIndexError(ValueError):
    """A search in an index that holds no vectors."""


def _normalised(X, name: str, width: int | None = None) -> np.ndarray:
    X = check_features(X, name, width).copy()
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0).astype(np.float32)


def exact_search(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force cosine top-``k`` (numpy): ``(positions, scores)``, ties broken by position."""
    G, Q = _normalised(gallery, "gallery"), _normalised(queries, "queries", gallery.shape[1])
    S = Q @ G.T
    order = np.lexsort((np.broadcast_to(np.arange(S.shape[1]), S.shape), -S), axis=1)[:, :k]
    return order, np.take_along_axis(S, order, axis=1)


def fp16_error_bound(width: int) -> float:
    """Upper bound on |float16-stored score - float32 score| for unit-norm vectors of ``width`` dimensions.

    Storing x_i in float16 errs by at most 2^-10 |x_i| (normal range; round-to-nearest halves it) or 2^-24
    (subnormal), so the inner product with a unit query errs by <= 2^-10 + 2^-24 sqrt(width)
    (Cauchy-Schwarz); each of the two float32 sums (float16 scan, float32 re-score) adds <= width * 2^-24.
    Doubled for safety (normalisation is float32, not exact)."""
    return 2.0 * (2.0**-10 + 2.0**-24 * math.sqrt(width) + 2 * width * 2.0**-24)


def _largest_divisor(d: int, at_most: int) -> int:
    return max(m for m in range(1, max(1, at_most) + 1) if d % m == 0)


class VectorIndex:
    """Cosine search over boosted vectors, with ids and paths (see the module docstring).

    width: vector width; kind: one of :data:`KINDS`; model: identity of the encoder that makes the vectors
    (:attr:`attrboost.search.encoder.Encoder.identity`, plus its bundle path), checked by :meth:`check_model`.
    num_threads: faiss (OpenMP) threads for :meth:`search`; None: faiss's setting. Default 1: a search is
    memory-bound, and on 2 shared cores exact search over 39k x 1280 took 7.6 ms per query on one thread
    and 32 ms on two (benchmarks/bench_index.py). classes: attribute -> the model's classes, for an index that
    keeps each item's predicted attributes (:attr:`predicted`; every :meth:`add` then gives them).
    """

    def __init__(self, width: int, kind: str = "flat", *, model: dict | None = None, seed: int = 0,
                 num_threads: int | None = 1, classes: dict | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: expected one of {list(KINDS)}")
        self.width = check_int(width, "width")
        self.kind = kind
        self.model = dict(model or {})
        self.seed = seed
        self.num_threads = check_int(num_threads, "num_threads", allow_none=True)
        self.items = ItemTable()  # ids and paths by position (attrboost.search.items: variable length, memory-mapped)
        self.predicted = Predictions(classes) if classes else None  # predicted attributes by position, or None
        self.report: dict = {}
        self._faiss = None
        self._fp16 = None  # flat only: the float16 copy that pre-filters few-query searches (kept in step by add/load)
        self.widened = 0  # flat: times the float16 candidates could not prove the top k (more were taken)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> np.ndarray:
        """Every item's id in index order (reads them all; on large indexes use ``items.ids_at``)."""
        return self.items.ids

    @property
    def paths(self) -> np.ndarray:
        """Every item's path in index order (reads them all; on large indexes use ``items.paths_at``)."""
        return self.items.paths

    @property
    def nbytes(self) -> int:
        """The faiss index's size serialised (what ``faiss.index`` takes on disk); 0 while empty."""
        import faiss

        return 0 if self._faiss is None else int(faiss.serialize_index(self._faiss).nbytes)

    def __repr__(self) -> str:
        return f"VectorIndex(kind={self.kind!r}, width={self.width}, n={len(self)})"

    # ---------------------------------------------------------------------------------------------- build
    def _new(self, X: np.ndarray):
        import faiss

        d = self.width
        if self.kind == "flat":
            return faiss.IndexFlatIP(d), {}
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = HNSW_EF_SEARCH
            return index, {"M": HNSW_M, "efSearch": HNSW_EF_SEARCH}
        n = len(X)
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        m = _largest_divisor(d, d // 16)
        # faiss's k-means wants >= 39 training vectors per centroid (it warns, and trains slowly, below that):
        # 2**nbits PQ centroids, 8 bits (one byte per sub-vector) from 9,984 vectors on
        nbits = max(1, min(8, int(math.log2(max(2, n // 39)))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = index.pq.cp.seed = self.seed
        index.train(X)
        index.nprobe = min(nlist, IVF_NPROBE)
        return index, {"nlist": nlist, "pq_m": m, "pq_nbits": nbits, "nprobe": index.nprobe}

    def add(self, vectors, ids, paths=None, predicted=None) -> "VectorIndex":
        """Add vectors (normalised here) with their ids (unique, also across calls) and paths; ``predicted``:
        ``(codes, confidence)`` of their predicted attributes, required iff the index keeps them.

        The first call builds the faiss index (``ivfpq`` is trained on these vectors) and, for approximate
        kinds, measures recall@10 against exact search (:attr:`report`)."""
        X = _normalised(vectors, "vectors")
        if X.shape[1] != self.width:
            raise IndexMismatchError(f"vectors have width {X.shape[1]}, the index holds width {self.width}")
        ids = np.asarray([str(i) for i in ids], dtype=str)
        paths = np.asarray(["" if p is None else os.fspath(p) for p in (paths if paths is not None else [None] * len(ids))],
                           dtype=str)
        if not len(ids) == len(paths) == len(X):
            raise ValueError(f"vectors ({len(X)}), ids ({len(ids)}) and paths ({len(paths)}) differ in length")
        if (predicted is None) != (self.predicted is None):
            raise ValueError("this index keeps predicted attributes: pass predicted=(codes, confidence)"
                             if predicted is None else "this index keeps no predicted attributes; pass predicted=None")
        if predicted is not None and not len(predicted[0]) == len(X):
            raise ValueError(f"predicted has {len(predicted[0])} rows, vectors {len(X)}")
        self.items.check_new(ids.tolist())  # before anything changes
        t0 = time.perf_counter()
        first = self._faiss is None
        if first:
            self._faiss, params = self._new(X)
            self.report = {"params": params}
        self._faiss.add(X)
        if self.kind == "flat":  # the float16 copy for few-query searches, kept in step
            self._add_fp16(X)
        self.items.append(ids.tolist(), paths.tolist())
        if predicted is not None:
            self.predicted.append(*predicted)
        if first:
            self.report["build_seconds"] = time.perf_counter() - t0
            if self.kind != "flat":
                self.report["recall_at_10"] = self._recall(X)
        return self

    def _add_fp16(self, X: np.ndarray) -> None:
        """Append ``X`` to the float16 copy of a flat index (made on first use)."""
        import faiss

        if self._fp16 is None:
            self._fp16 = faiss.IndexScalarQuantizer(self.width, faiss.ScalarQuantizer.QT_fp16,
                                                    faiss.METRIC_INNER_PRODUCT)
            self._fp16.train(np.zeros((1, self.width), np.float32))  # float16 needs no training
        self._fp16.add(X)

    def _search_prefiltered(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` of a few queries via float16 candidates (module docstring); ties by position."""
        n, eps = len(self), fp16_error_bound(self.width)
        scores = np.empty((len(Q), k), np.float32)
        pos = np.empty((len(Q), k), np.int64)
        for r, q in enumerate(Q):
            c = max(PREFILTER_MIN_CANDIDATES, 4 * k)
            while True:
                if c >= n:  # as good as a full scan: do the float32 one
                    s, p = self._faiss.search(q[None], k)
                    scores[r], pos[r] = s[0], p[0]
                    break
                s16, cand = self._fp16.search(q[None], c)
                cand = cand[0]
                exact = self._faiss.reconstruct_batch(cand) @ q
                order = np.lexsort((cand, -exact))[:k]
                # everything outside the candidates has a float16 score <= s16[0, -1], so a float32 score
                # <= s16[0, -1] + eps: the top k are proven when the k-th exact score is above that
                if exact[order[-1]] > s16[0, -1] + eps:
                    scores[r], pos[r] = exact[order], cand[order]
                    break
                self.widened += 1
                c *= PREFILTER_GROWTH
        return scores, pos

    def _recall(self, X: np.ndarray) -> dict:
        rng = np.random.default_rng(self.seed)
        q = rng.choice(len(X), size=min(RECALL_SAMPLE, len(X)), replace=False)
        k = min(RECALL_K, len(X))
        exact, _ = exact_search(X, X[q], k)
        _, got = self._faiss.search(X[q], k)
        hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, got)]
        return {"recall": float(np.mean(hits) / k), "k": k, "queries": len(q)}

    # ---------------------------------------------------------------------------------------------- search
    def search(self, queries, k: int = 10, *, keep=None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items of each query: ``(ids, scores)``, both ``(n_queries, min(k, len(self)))``,
        scores = cosine similarity, best first. ``keep(positions) -> bool array``: only items it keeps (e.g.
        :meth:`Predictions.matcher <attrboost.search.predicted.Predictions.matcher>`), found by over-fetching
        (module docstring); rows with fewer matches are padded with id ``""`` and score ``-inf``."""
        check_int(k, "k")
        if len(self) == 0:
            raise EmptyIndexError("the index is empty: add vectors before searching (attrboost index ... --add)")
        Q = _normalised(queries, "queries")
        if Q.shape[1] != self.width:
            raise IndexMismatchError(f"queries have width {Q.shape[1]}, the index holds width {self.width} "
                                     f"(built with model {self.model.get('bundle', '?')})")
        k = min(k, len(self))
        import faiss

        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.num_threads or before)
        try:
            scores, pos = self._search_positions(Q, k) if keep is None else self._search_kept(Q, k, keep)
        finally:
            faiss.omp_set_num_threads(before)
        found = pos >= 0
        got = np.asarray(self.items.ids_at(np.clip(pos, 0, None)), dtype=str).reshape(pos.shape)
        out_ids = np.where(found, got, "")
        return out_ids, np.where(found, scores, -np.inf).astype(np.float32)

    def _search_positions(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions) of the top ``k`` (``k`` <= len(self)); position -1: none."""
        if self.kind == "flat" and len(Q) < PREFILTER_MAX_QUERIES:
            return self._search_prefiltered(Q, k)
        return self._faiss.search(Q, k)

    def _search_kept(self, Q: np.ndarray, k: int, keep) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` items that ``keep`` keeps: over-fetch ``c`` candidates, grow ``c`` until ``k`` match or
        ``c`` covers the index (module docstring)."""
        n = len(self)
        scores = np.full((len(Q), k), -np.inf, np.float32)
        pos = np.full((len(Q), k), -1, np.int64)
        todo, c = np.arange(len(Q)), min(n, max(FILTER_MIN_CANDIDATES, FILTER_OVERFETCH * k))
        while todo.size:
            s, p = self._search_positions(Q[todo], c)
            again = []
            for r, q in enumerate(todo):
                valid = p[r] >= 0
                pr, sr = p[r][valid], s[r][valid]
                mask = keep(pr)
                pr, sr = pr[mask][:k], sr[mask][:k]
                if len(pr) < k and c < n:
                    again.append(q)
                    continue
                pos[q, :len(pr)], scores[q, :len(pr)] = pr, sr
            todo, c = np.asarray(again, dtype=np.int64), min(n, c * FILTER_GROWTH)
        return scores, pos

    def path_of(self, ids) -> list[str]:
        """The path of each id ("" for ids not in the index)."""
        pos = self.items.positions(ids)
        paths = self.items.paths_at(np.clip(pos, 0, None)) if len(self) else [""] * len(pos)
        return [p if k >= 0 else "" for k, p in zip(pos, paths)]

    def check_model(self, identity: dict) -> None:
        """Raise :class:`IndexMismatchError` if ``identity`` (an encoder's) differs from the index's model."""
        fields = ("space", "backbone", "width", "weights_sha256", "head_sha256")
        got, want = self.model.get("space", "boosted"), identity.get("space", "boosted")
        if got != want:
            what = {"raw": "frozen backbone features (attrboost index --raw)", "boosted": "boosted vectors"}
            raise IndexMismatchError(f"the index ({self.model.get('bundle', '?')}) holds {what.get(got, got)}, but "
                                     f"the query vectors are {what.get(want, want)}")
        diff = [f for f in fields if f in self.model and f in identity and self.model[f] != identity[f]]
        if diff:
            detail = "; ".join(f"{f}: index {self.model[f]!r}, model {identity[f]!r}" for f in diff)
            raise IndexMismatchError(f"the model does not match the index ({detail}); use the model the index "
                                     f"was built with ({self.model.get('bundle', '?')}) or rebuild the index")

    # ---------------------------------------------------------------------------------------------- files
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``faiss.index``, the item table (ids and paths: :data:`attrboost.search.items.FILES`), ``index.json``
        and a checksummed manifest (format version 2)."""
        import faiss

        if self._faiss is None:
            raise EmptyIndexError("nothing to save: the index is empty")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / "faiss.index", lambda tmp: faiss.write_index(self._faiss, str(tmp)))
        items = self.items.save(directory)
        predicted = [] if self.predicted is None else self.predicted.save(directory)
        (directory / "items.npz").unlink(missing_ok=True)  # format version 1's, when an old index is re-saved
        write_json(directory / "index.json", {"kind": self.kind, "width": self.width, "n": len(self),
                                              "seed": self.seed, "model": self.model, "report": self.report,
                                              **({} if self.predicted is None else
                                                 {"predicted": self.predicted.meta()})})
        write_manifest(directory, ["faiss.index", *items, *predicted, "index.json"], fmt=FORMAT,
                       version=FORMAT_VERSION)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "VectorIndex":
        """The index saved by :meth:`save` (manifest, checksums and format version verified). The item table is
        memory-mapped; format version 1 (``items.npz``) is read too."""
        import faiss

        directory = Path(directory)
        manifest = read_manifest(directory, fmt=FORMAT, version=READABLE_VERSIONS)
        meta = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        out = cls(meta["width"], meta["kind"], model=meta["model"], seed=meta.get("seed", 0))
        out._faiss = faiss.read_index(str(directory / "faiss.index"))
        out.report = meta.get("report", {})
        if manifest["format_version"] == 1:
            items = load_arrays(directory / "items.npz")
            out.items = ItemTable.from_arrays(items["ids"], items["paths"])
        else:
            try:
                out.items = ItemTable.load(directory, out._faiss.ntotal)
            except ValueError as exc:
                raise BundleError(str(exc)) from None
        if "predicted" in meta and manifest["format_version"] > 1:
            try:
                out.predicted = Predictions.load(directory, meta["predicted"], out._faiss.ntotal)
            except (ValueError, KeyError, OSError) as exc:
                raise BundleError(f"{directory}: the predicted attributes cannot be read ({exc})") from None
        if out._faiss.ntotal != len(out.items) or out._faiss.d != out.width:
            raise BundleError(f"{directory}: faiss.index holds {out._faiss.ntotal} vectors of width {out._faiss.d}, "
                              f"the item table {len(out.items)} ids, index.json width {out.width}")
        if out.kind == "flat":  # the float16 copy now, not in the first query's time
            out._add_fp16(out._faiss.reconstruct_n(0, out._faiss.ntotal))
        return out

"""Inputs and nearest neighbours of the retrieval metrics (:mod:`attrboost.metrics`, whose conventions apply):
embeddings, labels, names and tags checked and encoded; the exact cosine k-nearest neighbours with
deterministic tie order (:func:`knn`); the small pieces every metric shares."""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd

from .checks import check_int

_U32 = 2.0**-24  # unit roundoff of float32
_CHUNK = 256  # queries per block in the exact fallback
_GATHER_BYTES = 8 << 20  # re-scoring works on blocks of about this size (cache-friendly)


# ----------------------------------------------------------------------------------- validation
def as_embedding(emb, name: str = "emb") -> np.ndarray:
    """Validate ``emb`` and return it as a float64 ``(n, d)`` array."""
    if isinstance(emb, (pd.DataFrame, pd.Series)):
        emb = emb.to_numpy()
    x = np.asarray(emb)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_items, dim); got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 items (rows) to rank others; got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least 1 column; got shape {x.shape}")
    x = x.astype(np.float64)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad.size} row(s), e.g. rows {bad[:5].tolist()}"
        )
    return x


def encode_attributes(attrs, n: int, name: str = "attrs") -> np.ndarray:
    """Integer-code each attribute column: ``(n, n_attrs)`` int64 (equal labels <=> equal codes)."""
    if isinstance(attrs, pd.Series):
        attrs = attrs.to_frame()
    if isinstance(attrs, pd.DataFrame):
        columns = [attrs[c].to_numpy() for c in attrs.columns]
        n_rows = len(attrs)
    else:
        a = np.asarray(attrs, dtype=object)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_items, n_attrs) or 1-D; got shape {a.shape}")
        columns = [a[:, j] for j in range(a.shape[1])]
        n_rows = a.shape[0]
    if n_rows != n:
        raise ValueError(f"emb has {n} rows but {name} has {n_rows} rows; they must describe the same items")
    if not columns:
        raise ValueError(f"{name} must have at least one attribute column")
    codes = [pd.factorize(pd.Series(col, dtype=object), use_na_sentinel=False)[0] for col in columns]
    return np.stack(codes, axis=1).astype(np.int64)


def group_codes(codes: np.ndarray) -> np.ndarray:
    """Group id per item: equal full attribute tuples <=> equal ids."""
    return np.unique(codes, axis=0, return_inverse=True)[1].ravel()


def _per_item(values, n: int, name: str, what: str) -> list:
    """``values`` as a list of ``n`` entries (one per item), or a clear error."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of {what} (one per item); got {type(values).__name__}")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"emb has {n} rows but {name} has {len(values)} entries; they must describe the same items")
    return values


def as_tags(tags, n: int, name: str = "tags") -> list[frozenset]:
    tags = _per_item(tags, n, name, "token lists")
    out = []
    for i, t in enumerate(tags):
        if isinstance(t, (str, bytes)) or not isinstance(t, Iterable):
            raise TypeError(
                f"{name}[{i}] must be a list of tokens (e.g. ['men', 'tshirt']), not {type(t).__name__} {t!r}"
            )
        out.append(frozenset(t))
    return out


def paper_tokens(name) -> list[str]:
    """The original code's tokens of one product name (``proc_lib.read_annotation``).

    Lower-cased, trailing whitespace removed (the original strips the CSV line, whose last field is
    the name), ``" & "`` replaced by ``"-"``, split on single spaces. Duplicates are kept and there is
    no vocabulary filter; a missing name (None/NaN) is the empty string, whose one token is ``""``.

    >>> paper_tokens("Puma Men Black & White T-shirt  Tee ")
    ['puma', 'men', 'black-white', 't-shirt', '', 'tee']
    """
    if name is None or (isinstance(name, float) and name != name):
        name = ""
    if not isinstance(name, str):
        raise TypeError(f"a product name must be a string (or None/NaN when missing); got {type(name).__name__} "
                        f"{name!r}")
    return name.lower().rstrip().replace(" & ", "-").split(" ")


def as_names(names, n: int, name: str = "names") -> list[list[str]]:
    """Product names -> the original's token lists (:func:`paper_tokens`), validated."""
    names = _per_item(names, n, name, "product names")
    out = []
    for i, v in enumerate(names):
        if v is not None and not isinstance(v, (str, float)):
            raise TypeError(f"{name}[{i}] must be a product name (a string, e.g. 'Puma Men Black Tshirt'), not "
                            f"{type(v).__name__} {v!r}; for the study's tag lists use paper_map_at_10_filtered")
        try:
            out.append(paper_tokens(v))
        except TypeError as e:
            raise TypeError(f"{name}[{i}]: {e}") from None
    return out


def check_k(k, n_max: int, name: str = "k") -> int:
    k = check_int(k, name)
    if k > n_max:
        raise ValueError(f"{name}={k} exceeds the number of items that can be returned ({n_max})")
    return int(k)


def normalise(x: np.ndarray, warn: bool = True) -> np.ndarray:
    """L2-normalise rows in float64; zero rows stay zero (cosine 0 with everything), with a warning."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    zero = norms == 0
    if warn and zero.any():
        warnings.warn(
            f"emb has {int(zero.sum())} zero vector(s); they get cosine similarity 0 with every item",
            RuntimeWarning,
            stacklevel=3,
        )
    return x / np.where(zero, 1.0, norms)[:, None]


# ---------------------------------------------------------------------------------- neighbours
def _rank_rows(scores: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row by (-score, index); ``cand`` holds the indices, ascending within a row."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _exact_rows(xn: np.ndarray, rows: np.ndarray, k: int, exclude_self: bool):
    """Exact numpy k-NN for the query ``rows`` (all items scored)."""
    n = xn.shape[0]
    idx = np.empty((rows.size, k), dtype=np.int64)
    sc = np.empty((rows.size, k), dtype=np.float32)
    for s in range(0, rows.size, _CHUNK):
        r = rows[s : s + _CHUNK]
        scores = (xn[r] @ xn.T).astype(np.float32)
        if exclude_self:
            scores[np.arange(r.size), r] = -np.inf
        cand = np.broadcast_to(np.arange(n, dtype=np.int64), scores.shape)
        idx[s : s + _CHUNK], sc[s : s + _CHUNK] = _rank_rows(scores, cand, k)
    return idx, sc


def knn(emb, k: int, *, exclude_self: bool = True, margin: int | None = None,
        queries=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest items of every item (or of the ``queries`` rows) by cosine similarity, with
    deterministic ties.

    Candidates come from faiss exact inner-product search (``IndexFlatIP`` on L2-normalised
    float32 vectors), asking for ``k + 1 + margin`` of them. The candidates are then re-scored in
    float64, rounded to float32, and ranked by (descending score, ascending index). If an item
    outside the candidate list could still tie with or beat the k-th candidate (the k-th score is
    within the float32 error bound of the last candidate's faiss score), that query is recomputed
    exactly with numpy over all items. The result therefore equals the numpy brute force
    ``argsort(-float32(cos), kind="stable")``, ties included (float64 summation-order noise is
    absorbed by the rounding to float32; in principle a value sitting exactly on a float32
    rounding boundary could still round differently, which has not been observed).

    Parameters
    ----------
    emb : (n, d) array of finite numbers. Zero rows have cosine similarity 0 with every item.
    k : number of neighbours, ``1 <= k <= n - 1`` (``<= n`` when ``exclude_self=False``).
    exclude_self : drop the query itself (by index, so an identical duplicate is still returned).
    margin : extra candidates asked from faiss (default 16); only affects speed (fewer exact
        fallbacks with more candidates), never the result.
    queries : row indices of the items to search for (default: every item); each is searched
        among all ``n`` items (a whole catalogue as the gallery, a sample of it as the queries).

    Returns
    -------
    indices : (n_queries, k) int64, neighbours of each query, best first.
    scores : (n_queries, k) float32, their cosine similarities.
    """
    import faiss

    x = as_embedding(emb)
    n, d = x.shape
    k = check_k(k, n - 1 if exclude_self else n)
    margin = 16 if margin is None else int(margin)
    if margin < 0:
        raise ValueError(f"margin must be >= 0; got {margin}")
    xn = normalise(x)
    rows = query_rows(queries, n)
    nq = rows.size
    m = k + int(exclude_self) + margin
    if m >= n:  # the candidates would be every item: just do it exactly
        return _exact_rows(xn, rows, k, exclude_self)

    index = faiss.IndexFlatIP(d)
    index.add(np.ascontiguousarray(xn, dtype=np.float32))
    f_scores, cand = index.search(np.ascontiguousarray(xn[rows], dtype=np.float32), m)
    # Any item faiss did not return has faiss score <= min(f_scores), hence a true cosine below
    # min(f_scores) + tol; tol bounds float32 rounding of the vectors and of the d-term sum.
    tol = 2.0 * (d + 4) * _U32 + 1e-6
    f_min = f_scores.min(axis=1).astype(np.float64)

    idx = np.empty((nq, k), dtype=np.int64)
    sc = np.empty((nq, k), dtype=np.float32)
    unsafe = []
    block = int(np.clip(_GATHER_BYTES // (m * d * 8), 1, 1024))
    for s in range(0, nq, block):
        p = np.arange(s, min(s + block, nq))  # positions in the query list
        q = rows[p]  # the queries' item indices
        c = np.sort(cand[p].astype(np.int64), axis=1)
        scores = np.matmul(xn[c], xn[q][:, :, None])[..., 0].astype(np.float32)
        if exclude_self:
            scores[c == q[:, None]] = -np.inf
        idx[p], sc[p] = _rank_rows(scores, c, k)
        bad = ~(sc[p, k - 1].astype(np.float64) > f_min[p] + tol)
        unsafe.append(p[bad])
    unsafe = np.concatenate(unsafe)
    if unsafe.size:
        idx[unsafe], sc[unsafe] = _exact_rows(xn, rows[unsafe], k, exclude_self)
    return idx, sc


def query_rows(queries, n: int) -> np.ndarray:
    """The query rows as int64 item indices (all ``n`` items when None); clear errors otherwise."""
    if queries is None:
        return np.arange(n, dtype=np.int64)
    q = np.asarray(queries)
    if q.dtype == bool:
        if q.shape != (n,):
            raise ValueError(f"queries: a boolean mask must have one value per item ({n}); got shape {q.shape}")
        q = np.flatnonzero(q)
    if q.ndim != 1 or q.size == 0 or not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"queries must be a non-empty 1-D array of item indices (or a boolean mask); got "
                         f"dtype {q.dtype}, shape {q.shape}")
    if q.min() < 0 or q.max() >= n:
        raise ValueError(f"queries: item indices must be in [0, {n - 1}]; got {int(q.min())}..{int(q.max())}")
    return q.astype(np.int64)


# ------------------------------------------------------------------------------ metric kernels
def nanmean100(values: np.ndarray, metric: str) -> float:
    if values.size == 0:
        warnings.warn(f"{metric}: no query has a relevant item; returning NaN", RuntimeWarning, stacklevel=3)
        return float("nan")
    return float(100.0 * values.mean())


def average_precision(hits: np.ndarray, denom: np.ndarray) -> np.ndarray:
    """sum_i precision@i * hit_i / denom, row-wise."""
    ranks = np.arange(1, hits.shape[1] + 1)
    return (np.cumsum(hits, axis=1) / ranks * hits).sum(axis=1) / denom


def relevant_counts(groups: np.ndarray) -> np.ndarray:
    return np.bincount(groups)[groups] - 1


# ------------------------------------------------------------------------------ public metrics
def prepare(emb, attrs):
    x = as_embedding(emb)
    codes = encode_attributes(attrs, x.shape[0])
    return x, codes, group_codes(codes)

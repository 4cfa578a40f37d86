"""Notebook 07's measurements as functions: retrieval over a whole catalogue and search latency.

A head fitted on the protocol sample is applied to every item of the catalogue; retrieval is scored over the
items *outside* the sample (queries drawn among them, the gallery = all of them), relevance = the same
attribute tuple (group), raw against boosted paired over the same queries, and split by whether the query's
group occurs in the head's training part ("seen") or not ("unseen").

Several training seeds (one head each, on the same sample) are scored on the same queries; the 95 % interval
of boosted - raw is a bootstrap that resamples the queries' *attribute groups* (every query of a drawn group,
under every seed, comes along): queries of one group share their relevant items and a seed's head is shared by
every query, so neither queries nor (seed, query) pairs are independent draws.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from .. import metrics as M
from .stats import group_bootstrap_ci

__all__ = ["QUERY_STREAM", "CatalogueQueries", "query_rng", "outside_queries", "query_scores", "quality_table",
           "seed_table", "precision_at_1", "catalogue_quality", "percentiles_ms", "time_calls"]

#: the fixed tag of the queries' own random stream: ``np.random.default_rng([seed, QUERY_STREAM])``, so the
#: queries do not depend on what else (the latency probe, a figure) draws from a generator seeded with ``seed``
QUERY_STREAM = 70_700

SUBSETS = ("all queries", "seen groups", "unseen groups")


def query_rng(seed: int) -> np.random.Generator:
    """The queries' own generator for ``seed`` (tagged with :data:`QUERY_STREAM`)."""
    return np.random.default_rng([int(seed), QUERY_STREAM])


@dataclass
class CatalogueQueries:
    """Queries over the items outside a sample. outside: those items' row positions in the catalogue;
    attrs: their attribute values (str); group: their attribute tuples; queries: positions within ``outside``
    of the query items (each with at least one other item of its group); seen: whether each query's group
    occurs in the head's training part."""

    outside: np.ndarray
    attrs: np.ndarray
    group: pd.Series
    queries: np.ndarray
    seen: np.ndarray


def outside_queries(items: pd.DataFrame, attributes, in_sample: np.ndarray, train: pd.DataFrame,
                    n_queries: int | None, rng: np.random.Generator | int) -> CatalogueQueries:
    """Draw ``n_queries`` (None: all) query items among the catalogue's items outside the sample whose group
    has at least two such items, with ``rng`` (an integer seed: :func:`query_rng` of it, the queries' own
    stream); ``train``: the head's training part (for seen / unseen)."""
    if not isinstance(rng, np.random.Generator):
        rng = query_rng(rng)
    attributes = list(attributes)
    outside = np.flatnonzero(~np.asarray(in_sample, dtype=bool))
    attrs = items.loc[outside, attributes].astype(str).to_numpy()
    group = pd.Series(list(map(tuple, attrs)))
    eligible = np.flatnonzero(group.map(group.value_counts()).to_numpy() >= 2)
    n = min(n_queries or len(eligible), len(eligible))
    queries = np.sort(rng.choice(eligible, n, replace=False))
    trained = set(map(tuple, train[attributes].astype(str).to_numpy()))
    seen = group.iloc[queries].map(lambda g: g in trained).to_numpy(dtype=bool)
    return CatalogueQueries(outside, attrs, group, queries, seen)


def _by_seed(embeddings: Mapping[str, object], names: tuple[str, ...]) -> dict[str, dict]:
    """``{name: {seed: array}}`` from values that are an array (the same for every seed) or ``{seed: array}``;
    the seeds are those of the mappings (they must agree), or ``[None]`` when every value is an array."""
    seeds = None
    for name in names:
        e = embeddings[name]
        if isinstance(e, Mapping):
            if not e:
                raise ValueError(f"embeddings[{name!r}]: no seed")
            if seeds is not None and set(e) != set(seeds):
                raise ValueError(f"embeddings[{name!r}] has seeds {sorted(e)}, another embedding {sorted(seeds)}: "
                                 "the comparison is paired by seed")
            seeds = list(e)
    seeds = seeds or [None]
    return {name: (dict(embeddings[name]) if isinstance(embeddings[name], Mapping)
                   else {s: embeddings[name] for s in seeds}) for name in names}


def query_scores(embeddings: Mapping[str, object], q: CatalogueQueries, reference: str = "raw",
                 other: str = "boosted") -> pd.DataFrame:
    """One row per (seed, query): AP@R of ``reference`` and ``other`` and their paired difference.

    ``embeddings[name]``: a whole-catalogue array (the same for every seed: raw features) or ``{seed: array}``
    (one head per training seed); the seeds of the mappings must agree. Columns: seed (None when no value is a
    mapping), query (its position within ``q.outside``), group (the attribute tuple joined by ``" | "``), seen,
    ``reference``, ``other``, ``"<other> - <reference>"``."""
    emb = _by_seed(embeddings, (reference, other))
    ap_of: dict[int, np.ndarray] = {}  # id(array) -> AP@R: an array shared by every seed is scored once

    def ap(x):
        if id(x) not in ap_of:
            ap_of[id(x)] = M.average_precision_at_r(np.asarray(x)[q.outside], q.attrs, queries=q.queries)
        return ap_of[id(x)]

    labels = q.group.iloc[q.queries].map(" | ".join).to_numpy()
    frames = []
    for s in emb[reference]:
        a, b = ap(emb[reference][s]), ap(emb[other][s])
        frames.append(pd.DataFrame({"seed": [s] * len(q.queries), "query": q.queries, "group": labels,
                                    "seen": q.seen, reference: a, other: b, f"{other} - {reference}": b - a}))
    return pd.concat(frames, ignore_index=True)


def _subsets(scores: pd.DataFrame):
    yield SUBSETS[0], np.ones(len(scores), bool)
    yield SUBSETS[1], scores["seen"].to_numpy(bool)
    yield SUBSETS[2], ~scores["seen"].to_numpy(bool)


def quality_table(scores: pd.DataFrame, reference: str = "raw", other: str = "boosted", *, n_boot: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Per query subset (all, seen groups, unseen groups; a subset with fewer than 2 queries is left out) of
    :func:`query_scores`' rows: n queries, n groups, n seeds, mean MAP@R of each embedding (over seeds and
    queries), the mean paired difference and its 95 % CI from :func:`~attrboost.study.stats.group_bootstrap_ci`
    over the rows (every (seed, query)), resampling the queries' groups (``n_boot`` draws, bootstrap ``seed``).
    Rounded to 2 decimals."""
    diff = f"{other} - {reference}"
    rows = []
    for label, sel in _subsets(scores):
        s = scores[sel]
        if s["query"].nunique() < 2:
            continue
        m, lo, hi = group_bootstrap_ci(s[diff].to_numpy(), s["group"].to_numpy(), n_boot=n_boot, seed=seed)
        rows.append({"queries": label, "n queries": s["query"].nunique(), "n groups": s["group"].nunique(),
                     "n seeds": s["seed"].nunique(dropna=False), f"MAP@R {reference}": s[reference].mean(),
                     f"MAP@R {other}": s[other].mean(), diff: m, "95% CI low": lo, "95% CI high": hi})
    return pd.DataFrame(rows).set_index("queries").round(2)


def seed_table(scores: pd.DataFrame, reference: str = "raw", other: str = "boosted") -> pd.DataFrame:
    """The mean paired difference of each training seed (columns ``seed <s>``) per query subset (rows, as in
    :func:`quality_table`), rounded to 2 decimals: the spread the seeds add."""
    diff = f"{other} - {reference}"
    rows = {}
    for label, sel in _subsets(scores):
        s = scores[sel]
        if s["query"].nunique() < 2:
            continue
        rows[label] = {f"seed {k if pd.notna(k) else '-'}": v for k, v in s.groupby("seed", dropna=False, sort=False)[diff].mean().items()}
    out = pd.DataFrame.from_dict(rows, orient="index").round(2)
    out.index.name = "queries"
    return out


def precision_at_1(embeddings: Mapping[str, object], q: CatalogueQueries,
                   names: tuple[str, ...] = ("raw", "boosted")) -> dict[str, float]:
    """Each embedding's precision@1 over all of ``q``'s queries (a ``{seed: array}`` value: the mean over its
    seeds)."""
    emb = _by_seed(embeddings, tuple(names))
    return {name: float(np.mean([M.precision_at_1(np.asarray(x)[q.outside], q.attrs, queries=q.queries)
                                 for x in {id(x): x for x in emb[name].values()}.values()]))
            for name in names}


def catalogue_quality(embeddings: Mapping[str, object], q: CatalogueQueries, reference: str = "raw",
                      other: str = "boosted", *, n_boot: int = 2000,
                      seed: int = 0) -> tuple[pd.DataFrame, dict[str, float]]:
    """MAP@R of ``embeddings[reference]`` and ``embeddings[other]`` over ``q``'s queries per query subset,
    with ``other - reference`` paired over (seed, query) and a group-bootstrap 95 % CI
    (:func:`query_scores`, then :func:`quality_table`); and each embedding's precision@1 over all queries
    (:func:`precision_at_1`). A value of ``embeddings``: a whole-catalogue array or ``{seed: array}``."""
    scores = query_scores(embeddings, q, reference, other)
    return (quality_table(scores, reference, other, n_boot=n_boot, seed=seed),
            precision_at_1(embeddings, q, (reference, other)))


def percentiles_ms(seconds) -> tuple[float, float]:
    """(p50, p99) of durations in seconds, in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def time_calls(fn: Callable, args) -> list[float]:
    """Wall seconds of ``fn(a)`` for each ``a`` in ``args``, one call at a time."""
    times = []
    for a in args:
        t0 = time.perf_counter()
        fn(a)
        times.append(time.perf_counter() - t0)
    return times

"""Notebook 07's measurements as functions: retrieval over a whole catalogue and search latency.

A head fitted on the protocol sample is applied to every item of the catalogue; retrieval is scored over the
items *outside* the sample (queries drawn among them, the gallery = all of them), relevance = the same
attribute tuple (group), raw against boosted paired over the same queries, and split by whether the query's
group occurs in the head's training part ("seen") or not ("unseen").
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .. import metrics as M
from .stats import mean_ci

__all__ = ["CatalogueQueries", "outside_queries", "catalogue_quality", "percentiles_ms", "time_calls"]


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
                    n_queries: int | None, rng: np.random.Generator) -> CatalogueQueries:
    """Draw ``n_queries`` (None: all) query items among the catalogue's items outside the sample whose group
    has at least two such items, with ``rng``; ``train``: the head's training part (for seen / unseen)."""
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


def catalogue_quality(embeddings: dict[str, np.ndarray], q: CatalogueQueries,
                      reference: str = "raw", other: str = "boosted") -> tuple[pd.DataFrame, dict[str, float]]:
    """MAP@R of ``embeddings[reference]`` and ``embeddings[other]`` (whole-catalogue arrays) over ``q``'s
    queries, per query subset (all, seen groups, unseen groups; a subset with fewer than 2 queries is left
    out), with ``other - reference`` paired over queries (mean and Student-t 95 % CI, rounded to 2 decimals);
    and each embedding's precision@1 over all queries."""
    ap = {name: M.average_precision_at_r(embeddings[name][q.outside], q.attrs, queries=q.queries)
          for name in (reference, other)}
    p1 = {name: M.precision_at_1(embeddings[name][q.outside], q.attrs, queries=q.queries) for name in (reference, other)}
    rows = []
    for label, sel in (("all queries", np.ones(len(q.queries), bool)), ("seen groups", q.seen),
                       ("unseen groups", ~q.seen)):
        if sel.sum() < 2:
            continue
        m, lo, hi = mean_ci(ap[other][sel] - ap[reference][sel])
        rows.append({"queries": label, "n": int(sel.sum()), f"MAP@R {reference}": ap[reference][sel].mean(),
                     f"MAP@R {other}": ap[other][sel].mean(), f"{other} - {reference}": m, "95% CI low": lo,
                     "95% CI high": hi})
    return pd.DataFrame(rows).set_index("queries").round(2), p1


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

"""Seed statistics: means with Student-t confidence intervals.

Each configuration is run with several seeds; a result is reported as the mean over seeds with a
two-sided Student-t interval ``mean +/- t_{(1+c)/2, n-1} * s / sqrt(n)`` (``s``: sample standard
deviation, ``ddof=1``). With a single value the interval is undefined and returned as NaN.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st


def _as_values(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError(f"{name} is empty; need at least one value")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or infinite values: {v.tolist()}")
    return v


def _check_confidence(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    return float(confidence)


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its Student-t confidence interval.

    ``values``: one number per seed. One value gives ``(value, nan, nan)``; identical values give a
    zero-width interval.
    """
    confidence = _check_confidence(confidence)
    v = _as_values(values, "values")
    mean = float(v.mean())
    if v.size == 1:
        return mean, float("nan"), float("nan")
    half = float(_st.t.ppf((1 + confidence) / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return mean, mean - half, mean + half


def summarise(df: pd.DataFrame, by: str | Sequence[str], value: str = "value", confidence: float = 0.95) -> pd.DataFrame:
    """Tidy results (one row per run) -> one row per group of ``by``.

    Returns the ``by`` columns followed by ``mean``, ``ci_low``, ``ci_high`` and ``n`` (number of
    runs), groups in order of first appearance.
    """
    confidence = _check_confidence(confidence)
    by = [by] if isinstance(by, str) else list(by)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame; got {type(df).__name__}")
    missing = [c for c in [*by, value] if c not in df.columns]
    if missing:
        raise KeyError(f"df has no column(s) {missing}; columns are {list(df.columns)}")
    rows = []
    for key, part in df.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high = mean_ci(part[value].to_numpy(), confidence)
        rows.append((*key, mean, low, high, len(part)))
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n"])


def ratio_ci(num, den, confidence: float = 0.95) -> tuple[float, float, float]:
    """Paired per-seed ratios ``num_i / den_i`` -> :func:`mean_ci` of the ratios.

    ``num`` and ``den`` are matched by position (e.g. boosted and raw scores of the same seeds);
    if both are pandas Series they are matched by index instead.
    """
    if isinstance(num, pd.Series) and isinstance(den, pd.Series):
        if set(num.index) != set(den.index) or not num.index.is_unique or not den.index.is_unique:
            raise ValueError(
                f"num and den must have the same unique index (the seeds); got {list(num.index)} and {list(den.index)}"
            )
        den = den.reindex(num.index)
    n = _as_values(num, "num")
    d = _as_values(den, "den")
    if n.size != d.size:
        raise ValueError(f"num has {n.size} values but den has {d.size}; they must be paired per seed")
    if (d == 0).any():
        raise ValueError(f"den contains zeros at positions {np.flatnonzero(d == 0).tolist()}")
    return mean_ci(n / d, confidence)


def fmt_mean_ci(values, digits: int = 2) -> str:
    """``"23.92 ± 1.53"``: the mean over seeds ± the half-width of its 95 % CI (:func:`mean_ci`); the mean
    alone for a single value. The one formatter of the notebooks' and reports' tables."""
    m, lo, hi = mean_ci(values)
    return f"{m:.{digits}f} ± {(hi - lo) / 2:.{digits}f}" if np.isfinite(lo) else f"{m:.{digits}f}"


def fmt_ratio_ci(num, den, digits: int = 2) -> str:
    """``"1.30 [1.26, 1.35]"``: the mean of the per-seed ratios ``num / den`` and its 95 % CI (:func:`ratio_ci`);
    the mean alone for a single pair."""
    m, lo, hi = ratio_ci(num, den)
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) else f"{m:.{digits}f}"



def group_bootstrap_ci(values, groups, *, n_boot: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and a percentile confidence interval from a bootstrap that
    resamples *groups* (clusters) with replacement, keeping every value of a drawn group together.

    Use it when values are not independent: queries of the same attribute group (they share relevant items),
    or the same query under several training seeds (pass one row per (seed, query) and the query's group).
    ``values``: one number per row (e.g. a paired difference per query); ``groups``: each row's cluster label
    (any hashable). ``seed`` fixes the bootstrap's own random generator. One group gives ``(mean, nan, nan)``.
    """
    confidence = _check_confidence(confidence)
    v = _as_values(values, "values")
    g = np.asarray(groups)
    if g.shape[0] != v.size:
        raise ValueError(f"groups has {g.shape[0]} entries for {v.size} values")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    codes = pd.factorize(pd.Series(list(g) if g.ndim > 1 else g))[0]
    n_groups = int(codes.max()) + 1
    sums = np.bincount(codes, weights=v, minlength=n_groups)
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    mean = float(v.mean())
    if n_groups < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng([int(seed), 20261207])
    draws = rng.integers(0, n_groups, size=(int(n_boot), n_groups))
    w = np.stack([np.bincount(d, minlength=n_groups) for d in draws]).astype(np.float64)
    boot = (w @ sums) / (w @ counts)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return mean, float(low), float(high)

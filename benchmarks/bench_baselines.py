"""Benchmark: fit and transform time and peak memory of each label-aware baseline (and Task 1).

Data: the same learnable random vectors as ``bench_heads.py`` (``--n`` 2,700 train + ``--n-val``
300 validation, 100 groups of 7 attributes), at one input width (``--width``, 1280 = EfficientNet-Lite).
Prints one row per method: fit seconds, transform seconds for 1,000 vectors, peak RSS growth during
the fit (MB), and the validation MAP@R reached (a sanity check that the fit did something).
Usage::

    python benchmarks/bench_baselines.py [--width 1280] [--methods pca_whiten lda nca supcon multisimilarity task1]
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from attrboost.study.baselines import BASELINES, group_labels, make_baseline
from attrboost.heads import BoostHead
from attrboost.metrics import map_at_r

from bench_heads import make_data


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--n", type=int, default=2700)
    ap.add_argument("--n-val", type=int, default=300)
    ap.add_argument("--methods", nargs="+", default=[*BASELINES, "task1"])
    args = ap.parse_args(argv)
    X, y, tags = make_data(args.n + args.n_val + 1000, args.width)
    tr, va, te = slice(0, args.n), slice(args.n, args.n + args.n_val), slice(args.n + args.n_val, None)
    val_groups = group_labels(y.iloc[va])
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.n} train + {args.n_val} val "
          f"vectors of width {args.width}")
    print(f"{'method':>16} {'fit s':>8} {'transform s':>12} {'peak RSS +MB':>13} {'val MAP@R':>10}")
    print(f"{'raw':>16} {'-':>8} {'-':>12} {'-':>13} {map_at_r(X[va], val_groups):10.1f}")
    for name in args.methods:
        before = peak_rss_mb()
        t0 = time.perf_counter()
        if name == "task1":
            est = BoostHead(task="task1", patience=5).fit(X[tr], y.iloc[tr], X_val=X[va], y_val=y.iloc[va])
        else:
            est = make_baseline(name, seed=0, **({"n_components": 128} if name == "pca_whiten" else {}))
            if name in ("supcon", "multisimilarity"):
                est.fit(X[tr], y.iloc[tr], X[va], y.iloc[va])
            else:
                est.fit(X[tr], y.iloc[tr])
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        est.transform(X[te])
        tr_s = time.perf_counter() - t0
        score = map_at_r(est.transform(X[va]), val_groups)
        print(f"{name:>16} {fit_s:8.1f} {tr_s:12.3f} {peak_rss_mb() - before:13.0f} {score:10.1f}", flush=True)


if __name__ == "__main__":
    main()

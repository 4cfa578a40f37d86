"""Benchmark: the boost over a whole catalogue, for a practitioner who labels N random items and searches the rest.

Per seed and label budget (:func:`attrboost.study.wholecat.label_budget_split`): N random items of the
catalogue are labelled (10 % of them for model selection), every other item is the gallery, and up to
``--queries`` held-out items are queries. Each method is fitted on the labelled items (epoch selected with the
validation items as queries against training + validation) and scored per query: MAP@R with relevance = the
full attribute group, MAP@R with relevance = an attribute pair (``--pair``), and nDCG@10 with graded relevance.
Features: the frozen EfficientNet-Lite0 features of every catalogue item (``--backbone``), through the feature
store (:func:`attrboost.study.pipeline.get_catalogue_features`; offline on the synthetic catalogue).

Prints one row per (relevance, query subset, budget, method): the mean over seeds and queries, the difference to
raw paired per (seed, query) with a 95 % group-bootstrap CI (query groups resampled), the ratio to raw (same
bootstrap), the fit seconds, the embedding width and the median selected epoch (and the epoch the study's
validation-only rule would have kept). ``--out`` writes the per-query rows (CSV). Usage::

    python benchmarks/bench_wholecat.py --dataset synthetic --budgets 250,1000 --seeds 0,1 --out runs/wholecat.csv
    python benchmarks/bench_wholecat.py --dataset fashion --budgets 500,1000,3000,all --seeds 0,1,2 --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
from attrboost.study.wholecat import (
    BUDGET_ALL,
    METHODS,
    benchmark,
    per_run,
    summarise_boost,
)


def _budget(text: str):
    return text if text == BUDGET_ALL else int(text)


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("synthetic", "fashion"), default="synthetic")
    ap.add_argument("--data-dir", default=None, help="the real data's folder (fashion; default: $ATTRBOOST_DATA_DIR)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--budgets", default="500,1000,all", help="comma-separated label budgets (an int or 'all')")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (each: a split and the heads' init)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {','.join(METHODS)}")
    ap.add_argument("--queries", type=int, default=2000, help="at most this many queries per seed and budget")
    ap.add_argument("--pair", default="articleType,baseColour", help="the pair relevance's two attributes")
    ap.add_argument("--max-epochs", type=int, default=None, help="cap on epochs (default: the study's, 200)")
    ap.add_argument("--patience", type=int, default=None, help="default: the study's, 10")
    ap.add_argument("--device", default="cpu", help="torch device of the fits (feature extraction: auto)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None, help="write the per-query rows to this CSV")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.budgets = [_budget(b) for b in _list(args.budgets)]
    args.seeds = [int(s) for s in _list(args.seeds)]
    args.methods = _list(args.methods)
    args.pair = _list(args.pair)
    if args.out is not None and args.out.exists() and not args.overwrite:
        ap.error(f"--out {args.out} exists; pass --overwrite to replace it")
    return args


def _ci(m, lo, hi, digits=2, signed=True) -> str:
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    if pd.isna(lo):
        return f.format(m)
    return f"{f.format(m)} [{f.format(lo)}, {f.format(hi)}]"


def table(summary: pd.DataFrame) -> pd.DataFrame:
    """The printed table: one row per (relevance, subset, budget, method)."""
    order = {"group": 0, "pair": 1, "graded": 2}
    subsets = {"all": 0, "labelled group": 1, "unlabelled group": 2}
    s = summary.assign(_r=summary["relevance"].map(order), _s=summary["subset"].map(subsets))
    s = s.sort_values(["_r", "_s", "n_labelled"], kind="stable")
    return pd.DataFrame({
        "relevance": s["relevance"], "subset": s["subset"], "budget": s["budget"], "method": s["method"],
        "n": s["n"], "value": s["value"].round(2),
        "- raw [95% CI]": [_ci(*v) for v in zip(s["diff"], s["diff_low"], s["diff_high"])],
        "/ raw [95% CI]": [_ci(*v, signed=False) for v in zip(s["ratio"], s["ratio_low"], s["ratio_high"])],
        "best": s["best"].map({True: "*", False: ""}),
        "fit s": s["fit_seconds"].round(1), "width": s["width"].astype(int),
        "epoch": s["epoch"], "epoch val-only": s["epoch_val_only"]})


def main(argv=None) -> int:
    args = parse(argv)
    from attrboost.study.pipeline import DataConfig, get_catalogue_features

    t0 = time.perf_counter()
    cat, X = get_catalogue_features(DataConfig(dataset=args.dataset, data_dir=args.data_dir), args.backbone,
                                    progress=not args.quiet)
    t_feat = time.perf_counter() - t0
    print(f"{args.dataset}: {len(cat.items)} items, {args.backbone} features {X.shape[1]} wide ({t_feat:.0f} s); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; budgets {args.budgets}, seeds {args.seeds}, "
          f"methods {args.methods}, pair {args.pair}", flush=True)
    fit = {k: v for k, v in (("max_epochs", args.max_epochs), ("patience", args.patience)) if v is not None}
    t1 = time.perf_counter()
    df = benchmark(X, cat.items, list(cat.attributes), budgets=args.budgets, seeds=args.seeds, methods=args.methods,
                   pair=args.pair, max_queries=args.queries, head_params=fit, metric_params=fit, device=args.device,
                   progress=not args.quiet)
    t_bench = time.perf_counter() - t1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")
        df.to_csv(tmp, index=False)
        os.replace(tmp, args.out)
        print(f"wrote {len(df)} per-query rows to {args.out}")
    runs = per_run(df)
    nq = runs[(runs["method"] == "raw") & (runs["relevance"] == "group")].pivot_table(
        index="budget", columns="subset", values="n_queries", aggfunc="sum")
    print("\nqueries per budget (summed over seeds):\n" + nq.to_string())
    summ = summarise_boost(df, n_boot=args.n_boot)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 1000):
        print("\n" + table(summ).to_string(index=False))
    print(f"\nwall: features {t_feat:.0f} s, benchmark {t_bench:.0f} s, total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

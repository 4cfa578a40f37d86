"""Summarise a whole-catalogue benchmark run (the per-query CSV of ``bench_wholecat.py --out``): a summary CSV
and a figure of quality against label budget per method, both refusing to replace a file without --overwrite.

Each method is compared with raw and with Task 1 (``--against``), paired per (seed, query), 95 % CIs from a
bootstrap over query groups (:func:`attrboost.study.wholecat.summarise_boost`). The primary row, fixed before
the run: full-group relevance, all queries, the largest budget. Usage::

    python benchmarks/wholecat_summary.py runs/wholecat/fashion.csv \\
        --csv benchmarks/results/wholecat_fashion.csv --figure figures/wholecat/fashion.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from attrboost.study import wholecat as W

COLUMNS = ["reference", "budget", "n_labelled", "relevance", "subset", "method", "n", "n_groups", "n_seeds", "reference_value",
           "value", "diff", "diff_low", "diff_high", "ratio", "ratio_low", "ratio_high", "fit_seconds", "width",
           "epoch", "epoch_val_only"]


def summary(rows: pd.DataFrame, against=("raw", "task1"), n_boot: int = 2000) -> pd.DataFrame:
    parts = []
    for ref in against:
        if ref in set(rows["method"]):
            s = W.summarise_boost(rows, reference=ref, n_boot=n_boot)
            parts.append(s.assign(reference=ref))
    out = pd.concat(parts, ignore_index=True)
    out = out.rename(columns={"raw": "reference_value"})  # the reference method's mean (raw or Task 1)
    return out[[c for c in COLUMNS if c in out.columns]].round(4)


def figure(s: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vs_raw = s[(s["reference"] == "raw") & (s["subset"] == "all")]
    rels = list(dict.fromkeys(vs_raw["relevance"]))
    fig, axes = plt.subplots(1, len(rels), figsize=(4.6 * len(rels), 3.6), squeeze=False)
    for ax, rel in zip(axes[0], rels):
        d = vs_raw[vs_raw["relevance"] == rel]
        for method, m in d.groupby("method", sort=False):
            m = m.sort_values("n_labelled")
            ax.errorbar(m["n_labelled"], m["value"], yerr=[m["diff"] - m["diff_low"], m["diff_high"] - m["diff"]],
                        marker="o", capsize=3, label=method, ls="--" if method == "raw" else "-")
        ax.set(xscale="log", xlabel="labelled items", title=rel,
               ylabel="nDCG@10" if rel == "graded" else "MAP@R")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title + " (bars: 95 % CI of the paired difference to raw, query groups resampled)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", help="per-query CSV of bench_wholecat.py --out")
    p.add_argument("--csv", required=True, help="summary CSV to write")
    p.add_argument("--figure", help="PNG to write")
    p.add_argument("--title", default="whole-catalogue benchmark")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    outs = [Path(a.csv)] + ([Path(a.figure)] if a.figure else [])
    taken = [str(o) for o in outs if o.exists()]
    if taken and not a.overwrite:
        print(f"{', '.join(taken)} exist(s); pass --overwrite to replace", file=sys.stderr)
        return 2
    s = summary(pd.read_csv(a.rows), n_boot=a.n_boot)
    Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
    s.to_csv(a.csv, index=False)
    if a.figure:
        figure(s, Path(a.figure), a.title)
    primary = s[(s["relevance"] == "group") & (s["subset"] == "all") & (s["n_labelled"] == s["n_labelled"].max())]
    pd.set_option("display.width", 200)
    print(primary[["reference", "n_labelled", "method", "value", "diff", "diff_low", "diff_high", "ratio", "ratio_low",
                   "ratio_high"]].round(2).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

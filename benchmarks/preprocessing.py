"""Crop vs pad: which image preparation should be the default? Chosen on the VALIDATION part.

EfficientNet-Lite0 features of each seed's sample with timm's centre crop ("crop", the default) and with
pad-to-white-square ("pad", nothing cut); raw and Task 1 boosted (the study's head and selection rule),
MAP@R on the validation and the test part, paired by seed. Prints a table and the validation verdict.

    python benchmarks/preprocessing.py --dataset synthetic --seeds 0,1,2
    python benchmarks/preprocessing.py --dataset fashion --seeds 0,1,2,3,4
"""
from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd

from attrboost.study import pipeline as P
from attrboost.metrics import map_at_r
from attrboost.study.report import fmt_delta, verdict
from attrboost.study.stats import mean_ci


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--split", default="random")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    cfg = P.DataConfig(dataset=args.dataset, split=args.split)
    rows, t0 = [], time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",")]:
        sample = P.get_sample(cfg, seed)
        for prep in ("crop", "pad"):
            X = P.get_features(sample, args.backbone, device="cpu", preprocessing=prep, progress=False)
            head = P.get_boosted(sample, X, args.backbone, "task1", seed)
            for part in ("val", "test"):
                m = sample.mask(part)
                for emb, Z in (("raw", X[m]), ("task1", head.emb[part])):
                    rows.append(dict(seed=seed, prep=prep, part=part, embedding=emb,
                                     map_r=map_at_r(Z, sample.labels(part))))
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    print(f"\n{args.dataset} ({args.split}), {args.backbone}, MAP@R, {df['seed'].nunique()} seeds:")
    for part in ("val", "test"):
        for emb in ("raw", "task1"):
            w = df[(df["part"] == part) & (df["embedding"] == emb)].pivot(index="seed", columns="prep", values="map_r")
            m, lo, hi = mean_ci((w["pad"] - w["crop"]).to_numpy())
            d = dict(delta=m, ci_low=lo, ci_high=hi)
            print(f"  {part:4s} {emb:5s}: crop {w['crop'].mean():6.2f}  pad {w['pad'].mean():6.2f}  "
                  f"pad - crop {fmt_delta(d)} ({verdict(lo, hi)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

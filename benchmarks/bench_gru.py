"""Tasks 2 and 3 with a cheaper tag decoder: what a smaller ``gru_hidden`` or a bfloat16 decoder saves and costs.

The GRU decoder is about three quarters of a Task 2/3 training step (docs/performance.md, *Head fits*). This
benchmark fits Task 2 and Task 3 heads with each ``--widths`` value of ``gru_hidden`` (the study's is 512) and
each ``--dtypes`` value of ``decoder_dtype`` (the study's is float32; bfloat16 runs the decoder's matmuls under
autocast) on the study's samples, one head per seed, with every other setting the study's (the
validation-MAP@R rule included), and prints per task and variant: seconds per epoch, epochs run, the fit, test
MAP@R and paper_map@10, and the paired difference to the study's decoder (512, float32) over the seeds (mean
and Student-t 95 % CI).

The fits are cached steps like the study's (``$ATTRBOOST_CACHE``): the study's decoder is a cache hit where a
run set made it (its fit seconds are then that run's). Protocol options only: the study keeps its decoder
unless paired CIs over the run sets' seeds show no change.

    python benchmarks/bench_gru.py --dataset fashion --backbone efficientnet_lite0 --seeds 0,1,2,3,4 \
        --widths 512,256,128
    python benchmarks/bench_gru.py --dataset fashion --backbone efficientnet_lite0 --seeds 0,1,2,3,4 \
        --widths 512 --dtypes float32,bfloat16
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from attrboost.heads import BoostHead
from attrboost.study import beyond as B
from attrboost.study import params
from attrboost.study import pipeline as P

METRICS = ("map@r", "paper_map@10")
DECODER = ("gru_hidden", "decoder_dtype")
STUDY = tuple(BoostHead().get_params()[k] for k in DECODER)  # the study's decoder: BoostHead's defaults


def label(width: int, dtype: str) -> str:
    """A decoder variant's name in the tables, e.g. ``512`` (the study's) or ``512 bfloat16``."""
    return str(width) if dtype == STUDY[1] else f"{width} {dtype}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="synthetic", choices=["synthetic", "fashion"])
    ap.add_argument("--split", default="random", choices=["random", "by_group"])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tasks", default="task2,task3")
    ap.add_argument("--widths", default="512,256")
    ap.add_argument("--dtypes", default="float32", help="decoder_dtype values, e.g. float32,bfloat16")
    ap.add_argument("--n-jobs", default="auto", help="worker processes for the fits (default: one per core)")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    tasks = a.tasks.split(",")
    widths = [int(w) for w in a.widths.split(",")]
    dtypes = a.dtypes.split(",")
    # every width x dtype; the study's decoder first: the reference of every paired difference
    variants = list(dict.fromkeys([STUDY, *((w, d) for w in widths for d in dtypes)]))
    cfg = P.DataConfig(dataset=a.dataset, split=a.split)
    samples = {seed: P.get_sample(cfg, seed) for seed in seeds}  # each seed's sample and features, made once
    data = {seed: (samples[seed], P.get_features(samples[seed], a.backbone, progress=False)) for seed in seeds}
    head_kw = params.head_settings(params.defaults("04_evaluate"))  # the study's head settings, as 04 passes them
    fits, scores = [], []
    for width, dtype in variants:
        # only what differs from the study's decoder is passed: the study's decoder keeps the run sets' cache key
        kw = dict(head_kw, **{k: v for k, v, std in zip(DECODER, (width, dtype), STUDY) if v != std})
        name = label(width, dtype)
        t0 = time.perf_counter()
        runs = P.fit_heads([(data[s], s, a.backbone, t, kw) for s in seeds for t in tasks], n_jobs=a.n_jobs,
                           progress=True)
        wall = time.perf_counter() - t0
        print(f"decoder {name}: {len(runs)} heads in {wall:.0f} s wall (cached ones in no time)", flush=True)
        for run in runs:
            fits.append(dict(decoder=name, task=run.task, seed=run.seed, epochs=len(run.history),
                             selected=run.best_epoch, fit_s=run.fit_seconds,
                             s_per_epoch=run.fit_seconds / max(len(run.history), 1)))
            scores += B.score_rows(run.emb["test"], samples[run.seed], "test", method=f"{run.task} | {name}",
                                   task=run.task, decoder=name, seed=run.seed)
    fits = pd.DataFrame(fits)
    scores = pd.DataFrame(scores)
    table = fits.merge(scores[scores["metric"].isin(METRICS)]
                       .pivot_table(index=["task", "decoder", "seed"], columns="metric", values="value").reset_index())
    print(f"\n{a.dataset} ({a.split} split), {a.backbone}, seeds {seeds}: means over seeds")
    print(table.groupby(["task", "decoder"], sort=False)[["s_per_epoch", "epochs", "selected", "fit_s", *METRICS]]
          .mean().round(2).to_string())
    ref_name = label(*STUDY)
    others = [label(*v) for v in variants if v != STUDY]
    print(f"\npaired by seed, decoder minus {ref_name} [95% CI] (a cached head's seconds are those of the run that "
          "fitted it: compare speed only between decoders fitted in this run, e.g. with an empty $ATTRBOOST_CACHE):")
    for task in tasks:
        d = B.paired_deltas(scores, reference=f"{task} | {ref_name}", methods=[f"{task} | {o}" for o in others],
                            metrics=list(METRICS))
        ref = fits[(fits["task"] == task) & (fits["decoder"] == ref_name)]
        for name in others:
            cur = fits[(fits["task"] == task) & (fits["decoder"] == name)]
            parts = [f"{r.metric} {r.delta:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
                     for r in d[d["method"] == f"{task} | {name}"].itertuples()]
            speed = ref["s_per_epoch"].mean() / cur["s_per_epoch"].mean()
            fit = ref["fit_s"].sum() / cur["fit_s"].sum()
            print(f"  {task} {name}: " + "; ".join(parts) + f"; s/epoch x{speed:.2f} faster, all fits x{fit:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

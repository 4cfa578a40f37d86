"""Benchmark: BoostHead training time per input width and task, with the default settings.

Data: ``--n`` (3,000) training + ``--n-val`` (300) validation vectors, random but learnable:
100 groups (tuples of 7 attribute values with realistic class counts), each vector = sum of
per-class prototypes of its group's attributes + noise, next to label-free nuisance columns; tags
are ~8 words from a 300-word vocabulary, partly determined by the classes and group, partly random.

Prints one row per (width, task): fit wall time and the process's CPU time (on a shared machine
the CPU time is the steadier of the two; with one torch thread, wall ~= CPU on a quiet machine),
epochs run, seconds per epoch, kept epoch and final validation loss. ``--repeat 3`` fits each
head three times and reports the minimum. ``--roofline`` adds, per head, the floating-point work of one
training step (the matmuls of forward and backward, counted from the head's shapes and the batch's tokens),
this CPU's measured float32 GEMM peak on the fit's threads, and the fastest the fit could be at that peak
with the same epochs (a lower bound: it ignores the optimiser, the loss and the validation scoring). Usage::

    python benchmarks/bench_heads.py [--widths 512 1280 2048] [--tasks task1 task2 task3]
                                     [--num-threads 1] [--max-epochs 200] [--repeat 1]
                                     [--decoder-dtype bfloat16|float32] [--roofline]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd
import torch

from attrboost.heads import TOKEN_DIM, BoostHead

CLASS_COUNTS = {"gender": 5, "masterCategory": 4, "subCategory": 20, "articleType": 40,
                "baseColour": 30, "season": 4, "usage": 6}
VOCAB_SIZE = 300
N_GROUPS = 100


def make_data(n: int, d: int, seed: int = 0):
    """(X, y DataFrame, tags) for ``n`` vectors of width ``d`` (see the module docstring).

    Features: 64 informative columns (sum of per-class prototypes of scale 0.4 for each of the
    7 attributes + unit noise) next to ``d - 64`` nuisance columns of scale 2; with 3,000 vectors
    a Task 1 head reaches ~70% mean validation accuracy in ~20 epochs, like a real backbone.
    Tags (~8 words): the gender, colour and article-type words of the vector's classes, 3 words
    of its group, 1-3 random words.
    """
    rng = np.random.default_rng(seed)
    groups = np.stack([rng.integers(0, k, N_GROUPS) for k in CLASS_COUNTS.values()], axis=1)
    g = rng.integers(0, N_GROUPS, n)
    codes = groups[g]
    n_info = 64
    info = rng.normal(size=(n, n_info))
    for j, k in enumerate(CLASS_COUNTS.values()):
        info += 0.4 * rng.normal(size=(k, n_info))[codes[:, j]]
    X = np.hstack([info, 2.0 * rng.normal(size=(n, d - n_info))]).astype(np.float32)
    y = pd.DataFrame({a: np.char.add(f"{a[:3]}_", codes[:, j].astype(str))
                      for j, a in enumerate(CLASS_COUNTS)})
    words = np.array([f"w{i:03d}" for i in range(VOCAB_SIZE)])
    attr_cols = list(CLASS_COUNTS)
    offsets = {"gender": 0, "baseColour": 5, "articleType": 35}  # words w000-w074 name classes
    group_words = rng.integers(75, VOCAB_SIZE, (N_GROUPS, 3))
    tags = []
    for i in range(n):
        named = [offsets[a] + codes[i, attr_cols.index(a)] for a in ("gender", "baseColour", "articleType")]
        extra = rng.integers(0, VOCAB_SIZE, rng.integers(1, 4))
        tags.append(words[np.concatenate([named, group_words[g[i]], extra])].tolist())
    return X, y, tags


def gemm_peak_gflops(num_threads: int, n: int = 2048, repeat: int = 5) -> float:
    """Measured float32 GEMM rate (n x n x n, best of ``repeat``) on ``num_threads`` torch threads."""
    from attrboost.training import torch_threads

    a, b = torch.randn(n, n), torch.randn(n, n)
    best = np.inf
    with torch_threads(num_threads):
        a @ b
        for _ in range(repeat):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def step_gflop(head: BoostHead, tags, batch_size: int) -> float:
    """Matmul work of one training step of ``head`` (GFLOP, forward + backward) at the mean tag length.

    Forward of a Linear (b x i -> o) is 2 b i o; backward 2 b i o for the weight gradient and 2 b i o for
    the input gradient (none for the first layer: its input needs no gradient). GRU: input and hidden
    projections (3 gates) at every non-padded step (the sequences are packed), backward twice the forward."""
    d, h, b = head.n_features_in_, head.hidden_dim_, batch_size
    flop = 2 * b * d * h * 2  # hidden layer: forward + weight gradient
    if head.task != "task2":
        c = sum(len(v) for v in head.classes_.values())
        flop += 2 * b * h * c * 3
    if head.task != "task1":
        g, v = head.gru_hidden, len(head.vocab_) + 3
        tokens = b * (np.mean([min(len(t), head.max_tag_len) for t in tags]) + 1)  # BOS/EOS + words
        flop += 2 * b * h * g * 3  # initial state
        flop += 2 * tokens * (TOKEN_DIM + g) * 3 * g * 3  # GRU gates, forward + backward
        flop += 2 * tokens * g * v * 3  # output projection
    return flop / 1e9


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[512, 1280, 2048])
    ap.add_argument("--tasks", nargs="+", default=["task1", "task2", "task3"])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--n-val", type=int, default=300)
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="fits per head; the minimum times are reported")
    ap.add_argument("--roofline", action="store_true", help="add the work per step and the GEMM-peak lower bound")
    ap.add_argument("--decoder-dtype", default=None,
                    help="BoostHead decoder_dtype (Tasks 2/3); default: BoostHead's default")
    args = ap.parse_args(argv)

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, num_threads={args.num_threads}")
    peak = gemm_peak_gflops(args.num_threads) if args.roofline else None
    if peak:
        print(f"float32 GEMM peak, 2048^3 on {args.num_threads} thread(s): {peak:.0f} GFLOP/s")
    rows = []
    for d in args.widths:
        X, y, tags = make_data(args.n + args.n_val, d)
        tr, va = slice(0, args.n), slice(args.n, None)
        for task in args.tasks:
            kw = {} if args.decoder_dtype is None else {"decoder_dtype": args.decoder_dtype}
            walls, cpus = [], []
            for _ in range(args.repeat):
                head = BoostHead(task=task, num_threads=args.num_threads, max_epochs=args.max_epochs, **kw)
                t0, c0 = time.perf_counter(), time.process_time()
                head.fit(X[tr], y.iloc[tr], tags[tr], X_val=X[va], y_val=y.iloc[va], tags_val=tags[va])
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            wall = min(walls)
            best = head.history_.loc[head.history_.selected].iloc[0]
            row = {"width": d, "task": task, "fit_s": round(wall, 1), "cpu_s": round(min(cpus), 1),
                   "epochs": head.n_epochs_,
                   "s_per_epoch": round(wall / head.n_epochs_, 2), "best_epoch": head.best_epoch_, "stop": head.stop_reason_,
                   "best_val_loss": round(float(best.val_loss), 3),
                   "load_avg": round(os.getloadavg()[0], 1)}
            if peak:
                steps = head.n_epochs_ * -(-args.n // head.batch_size)
                gf = step_gflop(head, tags[tr], head.batch_size)
                row.update(gflop_per_step=round(gf, 3), ms_per_step=round(1e3 * wall / steps, 1),
                           achieved_gflops=round(gf * steps / wall), bound_s=round(gf * steps / peak, 1))
            if task != "task2":
                accs = [best[f"val_acc_{a}"] for a in CLASS_COUNTS]
                row["mean_val_acc"] = round(float(np.mean(accs)), 3)
            rows.append(row)
            print(row, flush=True)
    print()
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()

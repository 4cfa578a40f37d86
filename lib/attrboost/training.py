"""What the torch-trained estimators (:class:`~attrboost.heads.BoostHead`,
:class:`~attrboost.metric_head.MetricHead`) share: thread and seed control, and the epoch loop.

* :func:`torch_threads`: torch's intra-op thread count for a block, restored afterwards.
* :func:`one_blas_thread`: BLAS/LAPACK (and OpenMP) on one thread for a block, so results do not
  depend on the thread count.
* :func:`deterministic`: a seeded, deterministic block that leaves the global RNG and flags alone.
* :func:`fit_epochs`: shuffle, train one epoch, score it, keep the best weights, stop early.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

__all__ = ["numerics", "torch_threads", "one_blas_thread", "deterministic", "fit_epochs", "EpochLog", "MAX_EPOCHS", "PATIENCE"]

#: The study's one model-selection rule, shared by every method that is trained by epochs (the boosting
#: heads, Tasks 1-3, and the metric-learning baselines): score the validation part's embedding by
#: MAP@R after every epoch, keep the best epoch, stop after PATIENCE epochs without a better score or
#: at MAX_EPOCHS. (Selection by validation loss with patience 5 stops at very early epochs and
#: under-trains the heads; see docs/protocol.md.)
MAX_EPOCHS = 200
PATIENCE = 10


def numerics() -> str:
    """The CPU code paths torch's arithmetic takes in this process (see ``attrboost._pin_numerics``), e.g.
    ``"aten=AVX2 mkl_cbwr=AVX2"``: part of the cache key of every trained model, since other code paths
    give other bits."""
    return f"aten={torch.backends.cpu.get_cpu_capability()} mkl_cbwr={os.environ.get('MKL_CBWR', 'unset')}"


@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """Temporarily set torch's intra-op thread count (None: unchanged)."""
    old = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def one_blas_thread():
    """Run BLAS/LAPACK (and OpenMP) calls in this block on one thread, so their result does not depend on
    the thread count.

    OpenBLAS's multi-threaded kernels split sums differently than its single-threaded ones (measured here:
    float32 GEMM and ``gesdd`` give different bits with 1 and 2 threads), and fits that amplify rounding
    (the near-degenerate trailing components of :class:`~attrboost.pixels.PixelPCA`, NCA's optimiser)
    turn that into different results. Libraries must already be loaded when the block is entered
    (threadpoolctl only limits loaded ones): import scikit-learn / scipy first.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@contextlib.contextmanager
def deterministic(seed: int):
    """Seeded, deterministic torch section that restores the global RNG and flags afterwards."""
    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_on, warn_only=was_warn)


@dataclass
class EpochLog:
    """What :func:`fit_epochs` did: one history row per epoch (``selected`` marks the kept one)."""

    history: pd.DataFrame
    best_epoch: int
    stop_reason: str  # "stop_loss", "patience" or "max_epochs"


def fit_epochs(net: torch.nn.Module, train_epoch: Callable[[torch.Tensor], dict],
               score_epoch: Callable[[int], tuple[dict, float | None]], *, n: int, seed: int,
               max_epochs: int, patience: int | None = None, stop_loss: float | None = None,
               name: str = "training", progress: str | None = None) -> EpochLog:
    """Train ``net`` for up to ``max_epochs`` epochs and load the weights of the best one.

    Each epoch: ``net.train()``; ``train_epoch(perm)`` with a fresh permutation of ``range(n)``
    (from a generator seeded with ``seed``, independent of the global RNG) runs the optimiser
    steps and returns the row's training columns, ``train_loss`` first (non-finite: RuntimeError);
    ``score_epoch(epoch)`` returns ``(validation columns, score)``, higher is better; a None score means
    "keep the last epoch" (the epoch number is the score, so it never counts as worse). The first
    epoch, then every strictly better one, is kept (its ``state_dict`` copied). Training stops
    when ``train_loss < stop_loss`` or after ``patience`` epochs in a row without a better score
    (None: never). ``progress``: a tqdm bar with this description. Rows also hold ``epoch``
    (1-based) and ``seconds``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    rows, best_state, best_score, best_epoch, bad = [], None, -np.inf, 0, 0
    bar = None
    if progress:  # epochs counted without a total: the fit usually stops long before the cap
        from tqdm.auto import tqdm
        bar = tqdm(desc=f"{progress} (epochs; at most {max_epochs})", unit="epoch", leave=False)
    stop_reason = "max_epochs"
    for epoch in range(1, max_epochs + 1):
        t0 = time.perf_counter()
        net.train()
        row = {"epoch": epoch, **train_epoch(torch.randperm(n, generator=gen))}
        if not np.isfinite(row["train_loss"]):
            raise RuntimeError(f"{name} diverged (non-finite loss) at epoch {epoch}; lower lr")
        val, score = score_epoch(epoch)
        row.update(val)
        score = float(epoch) if score is None else score
        if best_state is None or score > best_score:
            best_score, best_epoch, bad = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", val=f"{row.get('val_loss', np.nan):.4f}",
                            best=best_epoch, refresh=False)
            bar.update()
        if stop_loss is not None and row["train_loss"] < stop_loss:
            stop_reason = "stop_loss"
            break
        if patience is not None and bad >= patience:
            stop_reason = "patience"
            break
    if bar is not None:
        bar.close()
    net.load_state_dict(best_state)
    net.eval()
    history = pd.DataFrame(rows)
    history["selected"] = history["epoch"] == best_epoch
    return EpochLog(history, int(best_epoch), stop_reason)

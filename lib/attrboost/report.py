"""Reporting: the original report's table, results as the study wrote them, and the retrieval example.

    results = load_results("papermill_runs/synthetic")          # every results.csv of a run set
    ORIGINAL_TABLE, BACKBONE_ORDER, TASK_LABELS                 # reference numbers, table order, labels
    ex = retrieval_example(cfg, "efficientnet_lite0")           # one test query: raw vs boosted top-10
    fig = plot_retrieval_example(ex)

Notebooks 03-05 use it; the numbers themselves come from the cached steps in :mod:`attrboost.pipeline`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import pipeline as P

TASK_LABELS = {"raw": "raw", "task1": "Task 1: attributes", "task2": "Task 2: tags", "task3": "Task 3: both"}

BACKBONE_ORDER = ("pca", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18", "resnet34",
                  "resnet50", "resnet101", "vit_b_16")

#: The original report's table (mAP x100, their protocol; Task 1 is "Ours").
ORIGINAL_TABLE = pd.DataFrame(
    [[5.99, 6.09, 6.23, 6.71], [10.34, 13.05, 11.56, 12.08], [9.90, 12.04, 10.71, 11.85],
     [10.04, 13.26, 11.59, 12.55], [11.05, 14.90, 15.24, 13.39], [12.08, 16.24, 13.71, 14.78]],
    index=pd.Index(["pca", "resnet18", "resnet34", "resnet50", "resnet101", "vit_b_16"], name="backbone"),
    columns=["raw", "Task 1: attributes", "Task 2: tags", "Task 3: both"])


def load_results(runs: str | os.PathLike) -> pd.DataFrame:
    """All results of a run set: its aggregated ``results.csv``, else the per-backbone ones."""
    runs = Path(runs)
    agg = runs / "results.csv"
    # a backbone's own results, not those of a run set aside (<backbone>.previous/, .failed/)
    files = [agg] if agg.exists() else sorted(p for p in runs.glob("*/results.csv") if "." not in p.parent.name)
    if not files:
        raise FileNotFoundError(f"no results.csv under {runs}: run the study first "
                                f"(`python -m attrboost.study --dataset ...`, or `make study`)")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


# ----------------------------------------------------------------------------- retrieval example
def retrieval_example(cfg: P.DataConfig, backbone: str, *, seed: int = 0, task: str = "task1", k: int = 10,
                      query: int | None = None, **head_overrides) -> dict:
    """One test query with its paper-metric ground truth and the raw and boosted top-k (cached work).

    As ``paper_map@10`` computes them (:func:`attrboost.metrics.paper_map_at_10`): the truth is the
    original's ground truth (always k items, zero-similarity fillers included), the lists are the
    ``k + 1`` nearest with the first dropped, AP is divided by the truth's length. The query (unless
    given) is drawn among the queries with another test item of their group.
    """
    from .metrics import encode_attributes, group_codes, paper_ground_truth, paper_neighbours

    sample = P.get_sample(cfg, seed)
    X = P.get_features(sample, backbone, progress=False)
    run = P.get_boosted(sample, X, backbone, task, seed, **head_overrides)
    test = sample.part("test").reset_index(drop=True)
    raw, boosted = X[sample.mask("test")], run.emb["test"]
    labels = sample.labels("test")
    names = sample.names("test")
    gt = paper_ground_truth(labels, names if names is not None else [" ".join(t) for t in sample.tags("test")], k=k)
    groups = group_codes(encode_attributes(labels, len(labels)))
    valid = np.flatnonzero(np.bincount(groups)[groups] > 1)
    q = int(np.random.default_rng(seed).choice(valid)) if query is None else query
    out = {"query": q, "query_id": test["id"][q], "items": test, "truth": gt[q], "ap": {}}
    for name, emb in (("raw", raw), ("boosted", boosted)):
        idx = paper_neighbours(emb, k)
        out[name] = idx[q]
        hits = np.isin(idx[q], out["truth"])
        prec = np.cumsum(hits) / np.arange(1, hits.size + 1)
        out["ap"][name] = float(100 * (prec * hits).sum() / len(out["truth"]))
    return out


def plot_retrieval_example(ex: dict):
    """Rows: query | ground truth | raw top-k | boosted top-k; frames: green = hit, red = miss."""
    import matplotlib.pyplot as plt

    from .data import load_image

    items, k = ex["items"], len(ex["raw"])
    rows = [("ground truth", ex["truth"]), (f"raw (AP {ex['ap']['raw']:.0f})", ex["raw"]),
            (f"boosted (AP {ex['ap']['boosted']:.0f})", ex["boosted"])]
    fig, axes = plt.subplots(3, k + 1, figsize=(1.1 * (k + 1), 5.2))
    for r, (label, idx) in enumerate(rows):
        ax = axes[r, 0]
        ax.axis("off")
        if r == 0:
            ax.imshow(load_image(items["image_path"][ex["query"]]))
            ax.set_title("query", fontsize=8)
        ax.text(-0.1, 0.5 if r else -0.15, label, transform=ax.transAxes, ha="right", va="center", fontsize=8)
        for c in range(k):
            ax = axes[r, c + 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(idx):
                ax.axis("off")
                continue
            ax.imshow(load_image(items["image_path"][idx[c]]))
            hit = r == 0 or idx[c] in set(ex["truth"])
            for s in ax.spines.values():
                s.set_color("tab:green" if hit else "tab:red")
                s.set_linewidth(2.5)
    fig.suptitle(f"query {ex['query_id']}: {' / '.join(items.loc[ex['query'], ['articleType', 'baseColour']])}",
                 fontsize=9)
    fig.tight_layout()
    return fig

"""The study's steps as small cached functions; the notebooks call these and tell the story.

    sample   = get_sample(DataConfig(dataset="synthetic"), seed=0)       # 01 data
    X        = get_features(sample, "efficientnet_lite0")                # 02 embeddings (cached)
    run      = get_boosted(sample, X, "efficientnet_lite0", "task1", 0)  # 03 head (cached)
    scores   = evaluate(run.emb["test"], sample, "test")                 # 04 evaluation

Caching: features of a (dataset, backbone, weights) live in one *feature store* per backbone,
keyed by item id, that grows as samples (seeds) need more images, so overlapping seeds never
extract an image twice; a head's outputs (val/test embeddings and its learning curve) are cached
by the fingerprint of the sample, the features, the task, the seed and every hyper-parameter.
All writes are atomic (:mod:`attrboost.cache`), so an interrupted run resumes where it stopped;
every read is validated (key, checksum, arrays, shapes, ids), and a damaged file is moved to
``<cache>/quarantine/`` with a warning and recomputed.
"""
from __future__ import annotations

import functools
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .cache import atomic_write, cache_dir, check_embeddings, embeddings_expect, fingerprint, load_checked, save_checked
from .data import Catalogue, Sample, load_dataset, sample_protocol
from .params import TASKS, as_list, check_choice  # noqa: F401 - re-exported for the notebooks (P.TASKS, ...)

TASK_LABELS = {"raw": "raw", "task1": "Task 1: attributes", "task2": "Task 2: tags", "task3": "Task 3: both"}


@dataclass(frozen=True)
class DataConfig:
    """Which data and which protocol sample (STUDY.md defaults)."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    n_groups: int = 100
    per_group: int = 40
    n_test: int | None = None
    split: str = "random"
    val_fraction: float = 0.1


@functools.lru_cache(maxsize=4)
def get_catalogue(dataset: str = "synthetic", data_dir: str | None = None) -> Catalogue:
    return load_dataset(dataset, data_dir)


@functools.lru_cache(maxsize=16)
def get_sample(cfg: DataConfig, seed: int) -> Sample:
    """The protocol sample for one seed (the seed varies the groups, the images and the split)."""
    cat = get_catalogue(cfg.dataset, cfg.data_dir)
    return sample_protocol(cat, n_groups=cfg.n_groups, per_group=cfg.per_group, n_test=cfg.n_test,
                           split=cfg.split, val_fraction=cfg.val_fraction, seed=seed)


# ----------------------------------------------------------------------------- features
def get_features(sample: Sample, backbone: str, *, weights=None, device: str = "auto", batch_size: int = 32,
                 num_workers: int | str = "auto", progress: bool = True) -> np.ndarray:
    """Frozen features for every row of ``sample.items`` (float32, rows aligned).

    Pretrained CNN/ViT backbones read the per-backbone feature store and extract only the images
    it lacks (:func:`attrboost.extract.extract_features`). ``pca`` is fitted on the sample's training part
    only, so it is cached per sample.
    """
    from .backbones import get_spec, resolve_weights
    from .extract import embed, extract_features

    get_spec(backbone)  # clear error for unknown names before any work
    items = sample.items
    if backbone == "pca":
        return embed("pca", items, train_ids=sample.part("train")["id"].tolist(),
                     dataset_fp=sample.dataset_fingerprint, progress=progress)
    resolved = resolve_weights(backbone, weights)  # once: the store's key and the model both use it
    return extract_features(resolved, items["image_path"].tolist(), items["id"].tolist(), device=device,
                            batch_size=batch_size, num_workers=num_workers, dataset_fp=sample.dataset_fingerprint,
                            progress=progress)[1]


# ----------------------------------------------------------------------------- heads
@dataclass
class HeadRun:
    """What a trained head leaves behind: boosted embeddings per part and its learning curve."""

    task: str
    seed: int
    emb: dict[str, np.ndarray]
    history: pd.DataFrame
    best_epoch: int
    fit_seconds: float
    params: dict = field(default_factory=dict)


def head_params(**overrides) -> dict:
    """The head's hyper-parameters: the reported defaults (STUDY.md) with ``overrides`` applied."""
    from .heads import BoostHead

    params = BoostHead().get_params()
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown head parameter(s) {sorted(unknown)}; known: {sorted(params)}")
    params.update(overrides)
    for per_run in ("task", "seed", "progress"):  # given per call, not hyper-parameters
        params.pop(per_run, None)
    return params


def get_boosted(sample: Sample, X: np.ndarray, backbone: str, task: str, seed: int, *, progress: bool = False,
                **head_overrides) -> HeadRun:
    """Train (or load from cache) a head on the training part, selected on the validation part, and
    return the boosted embeddings of every part. The test part is only transformed, never used."""
    import time

    from .heads import BoostHead

    check_choice("task", task, TASKS)
    params = head_params(**head_overrides)
    key = fingerprint("head", __version__, sample.fingerprint, fingerprint(X), backbone, task, seed, params)
    path = cache_dir() / "heads" / backbone / f"{task}-{key}.npz"
    part = {p: sample.mask(p) for p in ("train", "val", "test")}
    d = load_checked(path, key, {**embeddings_expect(part), "history": ("U", ()), "best_epoch": ("i", ()),
                                 "fit_seconds": ("f", ())}, check=check_embeddings(json_field="history"))
    if d is not None:
        hist = pd.read_json(io.StringIO(str(d["history"])), orient="split")
        emb = {p: d[f"emb_{p}"] for p in ("train", "val", "test")}
        return HeadRun(task, seed, emb, hist, int(d["best_epoch"]), float(d["fit_seconds"]), params)
    head = BoostHead(task=task, **params, seed=seed, progress=progress)
    t0 = time.perf_counter()
    train, val = sample.part("train"), sample.part("val")
    # an attribute constant in the training part cannot be learned: leave it out of the head's targets
    attrs = [a for a in sample.attributes if train[a].nunique() > 1]
    # with split="by_group" validation groups are unseen, and may carry a value the head has no class
    # for; such rows cannot be scored by the classifiers and are left out of model selection
    known = np.ones(len(val), dtype=bool)
    for a in attrs:
        known &= val[a].isin(set(train[a])).to_numpy()
    val_rows = np.flatnonzero(part["val"])[known]
    head.fit(X[part["train"]], train[attrs], tags=sample.tags("train"),
             X_val=X[val_rows], y_val=val[attrs][known], tags_val=[t for t, k in zip(sample.tags("val"), known) if k])
    fit_s = time.perf_counter() - t0
    emb = {p: head.transform(X[m]) for p, m in part.items()}
    hist = head.history_.reset_index(drop=True)
    save_checked(path, key, **{f"emb_{p}": e for p, e in emb.items()}, history=np.array(hist.to_json(orient="split")),
                 best_epoch=np.array(head.best_epoch_), fit_seconds=np.array(fit_s))
    return HeadRun(task, seed, emb, hist, int(head.best_epoch_), fit_s, params)


# ----------------------------------------------------------------------------- evaluation
def evaluate(emb: np.ndarray, sample: Sample, part: str = "test") -> dict[str, float]:
    """Every retrieval metric for one embedding of one part (queries and gallery = that part)."""
    from .metrics import evaluate as _evaluate

    return _evaluate(emb, sample.labels(part), sample.tags(part))


def tidy(rows: list[dict]) -> pd.DataFrame:
    """Results as the tidy table every notebook and the study share."""
    cols = ["dataset", "split", "backbone", "embedding", "seed", "metric", "value"]
    return pd.DataFrame(rows, columns=cols)


def write_json(path: str | os.PathLike, obj) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def runs_dir(dataset: str, root: str | os.PathLike | None = None) -> Path:
    """``papermill_runs/<dataset>`` under the repository (or ``root``)."""
    from .cache import repo_root

    base = Path(root) if root else (repo_root() or Path.cwd()) / "papermill_runs"
    return base / dataset


def config_dict(cfg: DataConfig) -> dict:
    return asdict(cfg)


# ----------------------------------------------------------------------------- reference and results
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
    files = [agg] if agg.exists() else sorted(runs.glob("*/results.csv"))
    if not files:
        raise FileNotFoundError(f"no results.csv under {runs}: run the study first "
                                f"(`python -m attrboost.study --dataset ...`, or `make study`)")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def load_image(path: str | os.PathLike):
    from .data.catalogue import load_image as _load

    return _load(path)


# ----------------------------------------------------------------------------- backbone facts
@functools.lru_cache(maxsize=None)
def flops_per_image(backbone: str) -> float:
    """GFLOPs of one forward pass (multiply-adds counted as 2), from the architecture alone.

    Counted with ``torch.utils.flop_counter`` on a randomly initialised copy (weights do not change
    the count); ``pca`` is one projection of the 60x80x3 pixels onto 2048 components.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .backbones import create_backbone, get_spec

    spec = get_spec(backbone)
    if backbone == "pca":
        return 2 * 60 * 80 * 3 * spec.width / 1e9
    model, transform = create_backbone(backbone, pretrained=False)
    size = describe_backbone(backbone)["input size"]
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


@functools.lru_cache(maxsize=None)
def describe_backbone(backbone: str) -> dict:
    """Feature width, weights source and preprocessing of a registered backbone."""
    from .backbones import data_config, get_spec

    spec = get_spec(backbone)
    info = {"features": spec.width, "weights": spec.description}
    if backbone == "pca":
        info.update({"input size": "60x80 RGB pixels in [0, 1]", "fitted on": "training part only"})
        return info
    cfg = data_config(backbone)
    info.update({"input size": cfg["input_size"][-1], "interpolation": cfg["interpolation"],
                 "mean": tuple(round(m, 3) for m in cfg["mean"]), "std": tuple(round(s, 3) for s in cfg["std"])})
    return info


# ----------------------------------------------------------------------------- retrieval example
def retrieval_example(cfg: DataConfig, backbone: str, *, seed: int = 0, task: str = "task1", k: int = 10,
                      query: int | None = None, **head_overrides) -> dict:
    """One test query with its paper-metric ground truth and the raw and boosted top-k (cached work)."""
    from .metrics import knn, paper_ground_truth

    sample = get_sample(cfg, seed)
    X = get_features(sample, backbone, progress=False)
    run = get_boosted(sample, X, backbone, task, seed, **head_overrides)
    test = sample.part("test").reset_index(drop=True)
    raw, boosted = X[sample.mask("test")], run.emb["test"]
    gt = paper_ground_truth(sample.labels("test"), sample.tags("test"), k=k)
    valid = np.flatnonzero((gt >= 0).any(axis=1))
    q = int(np.random.default_rng(seed).choice(valid)) if query is None else query
    out = {"query": q, "query_id": test["id"][q], "items": test, "truth": gt[q][gt[q] >= 0], "ap": {}}
    for name, emb in (("raw", raw), ("boosted", boosted)):
        idx, _ = knn(emb, k)
        out[name] = idx[q]
        hits = np.isin(idx[q], out["truth"])
        prec = np.cumsum(hits) / np.arange(1, k + 1)
        out["ap"][name] = float(100 * (prec * hits).sum() / min(k, len(out["truth"])))
    return out


def plot_retrieval_example(ex: dict):
    """Rows: query | ground truth | raw top-k | boosted top-k; frames: green = hit, red = miss."""
    import matplotlib.pyplot as plt

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

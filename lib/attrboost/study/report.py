"""Reporting: the original report's table, results as the study wrote them, and the retrieval example.

    results = load_results("papermill_runs/synthetic")          # every results.csv of a run set
    ORIGINAL_TABLE, BACKBONE_ORDER, TASK_LABELS                 # reference numbers, table order, labels
    ex = retrieval_example(cfg, "efficientnet_lite0")           # one test query: raw vs boosted top-10
    fig = plot_retrieval_example(ex)

Notebooks 03-05 use it; the numbers themselves come from the cached steps in :mod:`attrboost.study.pipeline`.
"""
from __future__ import annotations

import os
import re
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


def run_parameters(runs: str | os.PathLike, backbone: str) -> dict:
    """The parameters a backbone's 04 ran with in a run set (``<runs>/<backbone>/run.json``, written by
    :mod:`attrboost.study`): its data (dataset, csv options, n_groups, per_group, split), seeds, weights,
    device and any head setting passed; ``{}`` when there is no such record."""
    import json

    try:
        info = json.loads((Path(runs) / backbone / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    params = ((info or {}).get("parameters") or {}).get("04_evaluate")
    return dict(params) if isinstance(params, dict) else {}


def head_overrides(params: dict) -> dict:
    """The head settings among ``params`` (a run's or a notebook's parameters): what
    :func:`attrboost.study.pipeline.get_boosted` takes, so the same head (and cache entry) as the run's is used."""
    names = set(P.head_params()) | {"device"}
    return {k: v for k, v in params.items() if k in names}


# ----------------------------------------------------------------------------- retrieval example
def retrieval_example(cfg: P.DataConfig, backbone: str, *, seed: int = 0, task: str = "task1", k: int = 10,
                      query: int | None = None, weights=None, **head_overrides) -> dict:
    """One test query with its paper-metric ground truth and the raw and boosted top-k (cached work).

    As ``paper_map@10`` computes them (:func:`attrboost.metrics.paper_map_at_10`): the truth is the
    original's ground truth (always k items, zero-similarity fillers included), the lists are the
    ``k + 1`` nearest with the first dropped, AP is divided by the truth's length. The query (unless
    given) is drawn among the queries with another test item of their group. ``weights`` (a local
    weights file) and ``head_overrides`` as the run had them (:func:`run_parameters`, :func:`head_overrides`).
    """
    from ..metrics import encode_attributes, group_codes, paper_ground_truth, paper_neighbours

    sample = P.get_sample(cfg, seed)
    X = P.get_features(sample, backbone, weights=weights, progress=False)
    run = P.get_boosted(sample, X, backbone, task, seed, **head_overrides)
    test = sample.part("test").reset_index(drop=True)
    raw, boosted = X[sample.mask("test")], run.emb["test"]
    labels = sample.labels("test")
    names = sample.names("test")
    gt = paper_ground_truth(labels, names if names is not None else [" ".join(t) for t in sample.tags("test")], k=k)
    groups = group_codes(encode_attributes(labels, len(labels)))
    valid = np.flatnonzero(np.bincount(groups)[groups] > 1)
    q = int(np.random.default_rng(seed).choice(valid)) if query is None else query
    out = {"query": q, "query_id": test["id"][q], "items": test, "attributes": list(sample.attributes),
           "truth": gt[q], "ap": {}}
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

    from ..data import load_image

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
    attrs = list(ex.get("attributes") or [c for c in ("articleType", "baseColour") if c in items.columns])
    shown = [a for a in ("articleType", "baseColour") if a in attrs] or attrs[:2]  # any catalogue's attributes
    fig.suptitle(f"query {ex['query_id']}: {' / '.join(map(str, items.loc[ex['query'], shown]))}", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- claims backed by paired CIs
def verdict(lo: float, hi: float, better: str = "better", worse: str = "worse") -> str:
    """How a paired difference's 95 % CI reads: ``better`` (excludes 0, above), ``worse`` (below), or
    "no detectable difference" (covers 0); "one seed: no CI" when there is no interval."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "one seed: no CI"
    return better if lo > 0 else worse if hi < 0 else "no detectable difference"


def ratio_verdict(lo: float, hi: float, better: str = "better", worse: str = "worse") -> str:
    """:func:`verdict` for a ratio's 95 % CI: against 1 instead of 0."""
    return verdict(lo - 1, hi - 1, better, worse)


class ClaimFailed(AssertionError):
    """A notebook's checked conclusion does not hold: the notebook (papermill and nbval alike) stops here."""


#: the data set the study's fixed conclusions were established on, and are enforced on
CHECKED_DATASET = "synthetic"


def claims_enforced(dataset: str) -> bool:
    """Whether a notebook's fixed conclusions ("every head beats raw", "Task 1 has the highest mean") stop the run.

    They are claims on the embedded synthetic catalogue, the data ``pytest --nbval`` and ``make study`` run, so
    there a conclusion that does not hold is a regression. On any other data (the real catalogue, a user's CSV)
    the same statements are findings, printed with ``yes``/``NO`` and not enforced (the study runner's summary
    lists them: :func:`claims_not_holding`). Regression bands derived from a
    committed run set (:mod:`attrboost.study.reference`) are enforced wherever that run set exists."""
    return dataset == CHECKED_DATASET


#: a line :func:`check_claims` prints for a claim that does not hold; group 1 is the claim
NOT_HOLDING = re.compile(r"^NO {3}(.+)$", re.MULTILINE)


def claims_not_holding(text: str) -> list[str]:
    """The claims that :func:`check_claims` printed as not holding in ``text`` (a notebook's output)."""
    return NOT_HOLDING.findall(text)


def check_claims(claims: dict[str, bool | None], *, enforce: bool = True) -> None:
    """Print every claim with ``yes`` / ``NO``, then raise :class:`ClaimFailed` naming each one that does not
    hold, so a run that breaks a conclusion fails instead of publishing it (the study runner's summary and
    ``failures.json`` carry the message). ``enforce=False`` (a user's own catalogue, where the study's
    conclusions are a question, not a claim): print only. A claim whose value is None cannot be checked on
    this run (a 95% CI with one seed) and is printed ``n/a``, neither held nor failed."""
    failed = [claim for claim, holds in claims.items() if holds is not None and not holds]
    for claim, holds in claims.items():
        mark = "n/a" if holds is None else "yes" if holds else "NO "
        print(f"{mark}  {claim}")  # the line format :data:`NOT_HOLDING` reads
    if failed and not enforce:
        print(f"(not enforced on this data: {len(failed)} of these conclusions do not hold here; a finding, not a failure)")
    elif failed:
        raise ClaimFailed(f"{len(failed)} of {len(claims)} checked conclusion(s) do not hold: " + "; ".join(failed))


def paired(results: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], metric: str) -> dict:
    """``a - b`` on ``metric``, paired by seed (the seed fixes the sample: every backbone and embedding of a
    seed is scored on the same test part). ``a``/``b``: (backbone, embedding). Mean, 95 % CI, verdict, n."""
    from .stats import mean_ci

    m = results[results["metric"] == metric]
    va = m[(m["backbone"] == a[0]) & (m["embedding"] == a[1])].set_index("seed")["value"]
    vb = m[(m["backbone"] == b[0]) & (m["embedding"] == b[1])].set_index("seed")["value"]
    for v, who in ((va, a), (vb, b)):
        if not v.index.is_unique:
            raise ValueError(f"{who} has several {metric} rows for one seed; pairing by seed needs one")
    seeds = va.index.intersection(vb.index)
    d = (va.loc[seeds] - vb.loc[seeds]).to_numpy()
    if d.size == 0:
        return dict(delta=np.nan, ci_low=np.nan, ci_high=np.nan, verdict="no paired seeds", n=0)
    mean, lo, hi = mean_ci(d)
    return dict(delta=mean, ci_low=lo, ci_high=hi, verdict=verdict(lo, hi), n=int(d.size))


def paired_ratio(results: pd.DataFrame, backbone: str, metric: str, task: str = "task1") -> dict:
    """``task / raw`` on ``metric`` for one backbone: the mean of the per-seed ratios, its 95 % CI, the verdict of
    the paired *difference* (so a ratio and its difference never read differently), and n."""
    from .stats import ratio_ci

    m = results[(results["metric"] == metric) & (results["backbone"] == backbone)]
    if not {task, "raw"} <= set(m["embedding"]):
        return dict(ratio=np.nan, ci_low=np.nan, ci_high=np.nan, verdict="no paired seeds", delta=None, n=0)
    w = m.pivot_table(index="seed", columns="embedding", values="value", aggfunc="first")[[task, "raw"]].dropna()
    mean, lo, hi = ratio_ci(w[task].to_numpy(), w["raw"].to_numpy())
    d = paired(results, (backbone, task), (backbone, "raw"), metric)
    return dict(ratio=mean, ci_low=lo, ci_high=hi, verdict=d["verdict"], delta=d, n=len(w))


def _fmt_ratio(r: dict) -> str:
    """``1.30 [1.26, 1.35]`` (no interval with one seed)."""
    return f"{r['ratio']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if np.isfinite(r["ci_low"]) else f"{r['ratio']:.2f}"


def cheap_boosted_vs_costly_raw(results: pd.DataFrame, cost: dict, metrics=("map@r", "paper_map@10"),
                                tasks=None) -> pd.DataFrame:
    """The study's claim, checked pair by pair: for every backbone ``small`` cheaper than ``big`` (GFLOPs in
    ``cost``), each boosted task of ``small`` minus raw ``big``, paired by seed, with its verdict. No task is
    picked on the test part: every task is listed (Task 1 is the pre-specified one)."""
    tasks = [t for t in (tasks or ("task1", "task2", "task3")) if t in set(results["embedding"])]
    rows = []
    for small in cost:
        for big in cost:
            if cost[small] < cost[big]:
                for task in tasks:
                    for metric in metrics:
                        rows.append(dict(small=small, big=big, task=task, metric=metric,
                                         **paired(results, (small, task), (big, "raw"), metric)))
    return pd.DataFrame(rows, columns=["small", "big", "task", "metric", "delta", "ci_low", "ci_high", "verdict", "n"])


def fmt_delta(d: dict | pd.Series) -> str:
    """``+1.23 [+0.45, +2.01]`` (no interval with one seed)."""
    if not np.isfinite(d["ci_low"]):
        return f"{d['delta']:+.2f}"
    return f"{d['delta']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


# ----------------------------------------------------------------------------- result tables from the CSVs (docs/results.md)
README_BEGIN = "<!-- results:begin (generated by `make readme` from the committed CSVs; do not edit) -->"
README_END = "<!-- results:end -->"
RESULTS_PAGE = "docs/results.md"  # the page that holds the generated block (make readme)
RUNSETS = ("synthetic", "fashion", "fashion-by_group")
HEADLINE_METRICS = ("map@r", "paper_map@10", "paper_ndcg@10", "paper_map@10_filtered")


STALE_NOTE = ("**Computed with an older metric and selection rule**: its `paper_map@10` is the "
              "`paper_map@10_filtered` and its heads were selected by validation loss (patience 5), so its numbers "
              "are not shown here. Re-run it with `python -m attrboost.study --dataset {dataset}{split} --seeds "
              "0,1,2,3,4 --publish` (real data needed).\n")


#: The original's stop rule: its report says a training loss below 0.002 within 200 epochs; its code stops at
#: 0.001 and allows up to 2,000 epochs (docs/protocol.md).
ORIGINAL_STOP = {"report": dict(stop_loss=0.002, max_epochs=200), "code": dict(stop_loss=0.001, max_epochs=2000)}


def stop_rule_here() -> str:
    """What "train to the stop rule" is in notebook 06 (from :data:`attrboost.study.beyond.SELECTION_RULES`)."""
    from ..training import MAX_EPOCHS
    from .beyond import SELECTION_RULES

    head, _, _ = SELECTION_RULES["train to the stop rule (last epoch)"]
    return (f"\"train to the stop rule\" = a training loss below {head['stop_loss']:g} or {MAX_EPOCHS} epochs, whichever "
            f"comes first (SupCon: {MAX_EPOCHS} epochs, no loss threshold)")


def stop_rule_text() -> str:
    """:func:`stop_rule_here` and the original's (:data:`ORIGINAL_STOP`), in one sentence fragment."""
    rep, code = ORIGINAL_STOP["report"], ORIGINAL_STOP["code"]
    return (f"{stop_rule_here()}; the original's report states a loss below {rep['stop_loss']:g} within "
            f"{rep['max_epochs']:,} epochs, its code {code['stop_loss']:g} and up to {code['max_epochs']:,} epochs")


def has_old_metrics(results: pd.DataFrame) -> bool:
    """A results table written before the original metric and the one selection rule (no
    ``paper_map@10_filtered`` rows: its ``paper_map@10`` is the old variant)."""
    return "paper_map@10_filtered" not in set(results["metric"])


def _fmt_ci(v) -> str:
    from .stats import mean_ci

    m, lo, hi = mean_ci(np.asarray(v, dtype=float))
    return f"{m:.2f} ± {(hi - lo) / 2:.2f}" if np.isfinite(lo) else f"{m:.2f}"


def _fmt_range(v, collapse: bool = False) -> str:
    """``median (min-max)`` of integer-valued ``v`` (``collapse``: just the median when min == max)."""
    lo, hi = int(v.min()), int(v.max())
    return f"{int(v.median())}" + ("" if collapse and lo == hi else f" ({lo}-{hi})")


def _md(df: pd.DataFrame, index: bool = True) -> str:
    return df.to_markdown(index=index) + "\n"


def runset_tables(root: str | os.PathLike, runset: str) -> str:
    """The results-page block of one committed run set: every task per backbone (MAP@R, paper_map@10 and the
    other readings of the paper metric), embedding widths, selected epochs, and the paired claims."""
    from ..backbones import describe_backbone, flops_per_image

    runs = Path(root) / "papermill_runs" / runset
    res = load_results(runs)
    backbones = [b for b in BACKBONE_ORDER if b in set(res["backbone"])]
    embs = [e for e in ("raw", "task1", "task2", "task3") if e in set(res["embedding"])]
    seeds = sorted(res["seed"].unique())
    out = [f"#### Run set `{runset}` ({len(seeds)} seeds; `papermill_runs/{runset}/results.csv`)\n"]
    if has_old_metrics(res):
        out.append(STALE_NOTE.format(runset=runset, dataset=runset.split("-")[0],
                                     split=" --split by_group" if runset.endswith("by_group") else ""))
        return "\n".join(out)
    for metric in [m for m in HEADLINE_METRICS if m in set(res["metric"])]:
        t = (res[res["metric"] == metric].groupby(["backbone", "embedding"])["value"].apply(_fmt_ci).unstack()
             .reindex(index=backbones, columns=embs))
        t.columns = [TASK_LABELS[e] for e in t.columns]
        out.append(f"`{metric}` (test, mean ± 95 % CI half-width):\n\n" + _md(t))
    width = {b: describe_backbone(b)["features"] for b in backbones}
    if "selected_epoch" in set(res["metric"]):
        ep = res[res["metric"] == "selected_epoch"].groupby(["backbone", "embedding"])["value"]
        ep = ep.apply(_fmt_range).unstack()
        ep = ep.reindex(index=backbones, columns=[e for e in embs if e != "raw"])
        ep.columns = [TASK_LABELS[e] for e in ep.columns]
        ep.insert(0, "embedding width", [width[b] for b in backbones])
        out.append("Selected epoch by validation MAP@R (the study's one rule: patience 10, at most 200 epochs), "
                   "median (min-max) over seeds; with the default hidden_dim every head's embedding is as wide as "
                   "its backbone's features:\n\n" + _md(ep))
    rows = []
    for b in backbones:
        for t in embs[1:]:
            rows.append({"backbone": b, "task": TASK_LABELS[t],
                         **{f"{m} minus raw": f"{fmt_delta(d)} {d['verdict']}" for m in ("map@r", "paper_map@10")
                            for d in [paired(res, (b, t), (b, "raw"), m)]}})
    out.append("Boosted minus raw, same backbone, paired by seed [95 % CI]:\n\n" + _md(pd.DataFrame(rows), index=False))
    if "task1" in embs:
        rt = pd.DataFrame([{"backbone": b, **{m: _fmt_ratio(paired_ratio(res, b, m)) for m in ("map@r", "paper_map@10")}}
                           for b in backbones])
        out.append("Task 1 / raw, same backbone, the per-seed ratio's mean [95 % CI]:\n\n" + _md(rt, index=False))
    pairs = [(x, y) for x, y in (("task1", "task2"), ("task1", "task3"), ("task3", "task2")) if x in embs and y in embs]
    if pairs:
        rows = [{"backbone": b, "heads": f"{TASK_LABELS[x].split(':')[0]} minus {TASK_LABELS[y].split(':')[0]}",
                 **{m: f"{fmt_delta(d)} {d['verdict']}" for m in ("map@r", "paper_map@10")
                    for d in [paired(res, (b, x), (b, y), m)]}} for b in backbones for x, y in pairs]
        out.append("Head against head, same backbone, paired by seed [95 % CI]:\n\n" + _md(pd.DataFrame(rows), index=False))
    cost = {b: flops_per_image(b) for b in backbones}
    raw_rows = [{"cheaper": s, "costlier": g, **{f"{m}: raw costlier minus raw cheaper": f"{fmt_delta(d)} {d['verdict']}"
                                                 for m in ("map@r", "paper_map@10")
                                                 for d in [paired(res, (g, "raw"), (s, "raw"), m)]}}
                for s in cost for g in cost if cost[s] < cost[g]]
    if raw_rows:
        out.append("Is a costlier raw backbone better? Paired by seed [95 % CI]:\n\n" + _md(pd.DataFrame(raw_rows), index=False))
    claims = cheap_boosted_vs_costly_raw(res, cost)
    if len(claims):
        claims["paired difference"] = [f"{fmt_delta(r)} {r['verdict']}" for _, r in claims.iterrows()]
        c = claims.pivot_table(index=["small", "big", "task"], columns="metric", values="paired difference",
                               aggfunc="first")
        c = c.reset_index().assign(task=lambda d: d["task"].map(TASK_LABELS))
        c.columns.name = None
        out.append("The claim, pair by pair: boosted cheaper backbone minus raw costlier backbone, paired by seed "
                   "[95 % CI]:\n\n" + _md(c, index=False))
    return "\n".join(out)


def beyond_tables(root: str | os.PathLike, runset: str) -> str:
    """The results-page block of one run set's 06: methods with their widths, SupCon minus Task 1, the selection
    sensitivity and the tag weight (paired by seed)."""
    from ..training import MAX_EPOCHS, PATIENCE
    from .beyond import BASELINE_LABELS, SELECTION_RULES, ablation_deltas, labels_needed, paired_deltas

    path = Path(root) / "papermill_runs" / runset / "beyond.csv"
    if not path.exists():
        return ""
    b = pd.read_csv(path)
    if has_old_metrics(b):
        return ""  # said once, by runset_tables
    out = [f"#### 06 on `{runset}` ({b['backbone'].iloc[0]}, `papermill_runs/{runset}/beyond.csv`)\n"]
    test = b[(b["experiment"] == "baselines") & (b["part"] == "test")]
    labels = {"raw": "raw", "task1": "Task 1 (boost)", **BASELINE_LABELS}
    order = [m for m in labels if m in set(test["method"])]
    metrics = [m for m in HEADLINE_METRICS[:3] if m in set(test["metric"])]
    t = test.groupby(["method", "metric"])["value"].apply(_fmt_ci).unstack().reindex(index=order, columns=metrics)
    extra = [c for c in ("embedding_width", "selected_epoch") if c in set(test["metric"])]
    for c in extra:
        v = test[test["metric"] == c].groupby("method")["value"]
        t[c.replace("_", " ")] = v.apply(_fmt_range, collapse=True).reindex(order)
    t.index = [labels[m] for m in t.index]
    rule = (f"every method trained by epochs selected by validation MAP@R, patience {PATIENCE}, at most {MAX_EPOCHS} "
            "epochs; PCA whitening's width chosen on validation; LDA, NCA and the linear probe not tuned; "
            if "selected_epoch" in extra else "")
    out.append(f"Test part, mean ± 95 % CI half-width ({rule}width and selected epoch: median (min-max) over seeds):"
               "\n\n" + _md(t.fillna("–")))
    d = paired_deltas(test, reference="task1", methods=[m for m in order if m != "task1"], metrics=metrics)
    d["minus Task 1"] = [f"{fmt_delta(r)} {verdict(r['ci_low'], r['ci_high'])}" for _, r in d.iterrows()]
    dd = d.pivot_table(index="method", columns="metric", values="minus Task 1", aggfunc="first").reindex(
        index=[m for m in order if m != "task1"], columns=metrics)
    dd.index = [labels[m] for m in dd.index]
    out.append("Each method minus Task 1, paired by seed [95 % CI]:\n\n" + _md(dd))
    sel = b[b["experiment"] == "selection"]
    if len(sel):
        s = sel[sel["metric"].isin(["map@r", "selected_epoch"])]
        s = s.assign(method_=s["method"].str.split(" \\| ").str[0], rule=s["method"].str.split(" \\| ").str[1])
        fmt = {"map@r": _fmt_ci, "selected_epoch": _fmt_range}
        st = s.groupby(["rule", "method_", "metric"])["value"].apply(
            lambda v: fmt[v.name[2]](v)).unstack(["method_", "metric"])
        st = st.reindex(list(SELECTION_RULES))
        st.columns = [f"{m}: {'test MAP@R' if k == 'map@r' else 'selected epoch'}" for m, k in st.columns]
        out.append("Selection sensitivity (test MAP@R and selected epoch; " + stop_rule_here() + "; test-selected "
                   "is optimistic by construction, never used for a claim):\n\n" + _md(st))
        default = next(iter(SELECTION_RULES))
        cols = {}
        for m in dict.fromkeys(s["method_"]):
            sm = s[(s["method_"] == m) & (s["metric"] == "map@r")].assign(method=lambda d: d["rule"])
            if default in set(sm["method"]):
                d = paired_deltas(sm, reference=default, metrics=["map@r"])
                cols[f"{m}: test MAP@R minus the default"] = {
                    r["method"]: f"{fmt_delta(r)} {verdict(r['ci_low'], r['ci_high'])}" for _, r in d.iterrows()}
        if cols:
            sd = pd.DataFrame(cols).reindex([r for r in SELECTION_RULES if r != default])
            out.append("Each rule minus the default rule (validation MAP@R), paired by seed [95 % CI]:\n\n" + _md(sd))
    abl = b[b["experiment"] == "ablation"]
    if len(abl) and {"raw", "task1"} <= set(test["method"]):
        a = ablation_deltas(abl[abl["metric"].isin(["map@r", "paper_map@10"])], test)
        a["cell"] = [f"{fmt_delta(r)} {verdict(r['ci_low'], r['ci_high'])}" for _, r in a.iterrows()]
        at = a.pivot_table(index="attribute", columns="metric", values="cell", aggfunc="first")
        attrs = list(dict.fromkeys(m.removeprefix("without ") for m in abl["method"]))
        at = at.reindex(index=attrs, columns=["map@r", "paper_map@10"])
        lost = a[a["metric"] == "map@r"].set_index("attribute")["gain_kept"].reindex(attrs)
        at["share of Task 1's MAP@R gain lost (no CI)"] = [f"{100 - v:.0f} %" if np.isfinite(v) else "–" for v in lost]
        at.index = [f"without {x}" for x in at.index]
        out.append("Attribute ablation: Task 1 without one attribute as a target minus Task 1, paired by seed "
                   "[95 % CI]:\n\n" + _md(at))
    bud = b[b["experiment"] == "budget"]
    if len(bud) and "raw" in set(test["method"]):
        raw_test = test[test["method"] == "raw"]
        methods = list(dict.fromkeys(bud["method"]))
        bm = bud[bud["metric"] == "map@r"].groupby(["n_train", "method"])["value"].apply(_fmt_ci).unstack()
        bm = bm.reindex(columns=methods)
        bm.index = [int(n) for n in bm.index]
        bm.index.name = "training labels"
        bm.columns = [labels.get(m, m) for m in bm.columns]
        top = int(bud["n_train"].max())
        need = "; ".join(f"{labels.get(m, m)} {f'only at the largest budget, {top:,}' if n is None or n == top else f'at {n}'}"
                         for m in methods for n in [labels_needed(bud, raw_test, m, metric="map@r")])
        out.append(f"Label budget, test MAP@R, mean ± 95 % CI half-width (raw: {_fmt_ci(raw_test[raw_test['metric'] == 'map@r']['value'])}; "
                   f"the best baseline chosen on validation). 90 % of the mean gain with every label is reached by "
                   f"{need} (means, no CI):\n\n" + _md(bm))
    tw = b[b["experiment"] == "tag_weight"]
    if len(tw):
        ref = "task3 | tag_weight=0.5"
        d = paired_deltas(tw, reference=ref, metrics=["map@r", "paper_map@10"])
        txt = "; ".join(f"{r['metric']} {fmt_delta(r)} ({verdict(r['ci_low'], r['ci_high'])})" for _, r in d.iterrows())
        out.append(f"Task 3 with tag weight 1/8 minus 0.5, paired by seed: {txt}.\n")
    return "\n".join(out)


def readme_block(root: str | os.PathLike, runsets=RUNSETS) -> str:
    """Every committed run set's generated tables, between :data:`README_BEGIN` and :data:`README_END`."""
    parts = [README_BEGIN, ""]
    for rs in runsets:
        if (Path(root) / "papermill_runs" / rs).exists():
            parts += [runset_tables(root, rs), beyond_tables(root, rs)]
    return "\n".join(parts).rstrip() + "\n" + README_END


def splice_readme(readme: str, block: str) -> str:
    """``readme`` with the text between the markers replaced by ``block`` (markers must exist once)."""
    if readme.count(README_BEGIN) != 1 or readme.count(README_END) != 1:
        raise ValueError(f"README must contain the markers {README_BEGIN!r} and {README_END!r} exactly once")
    head, rest = readme.split(README_BEGIN)
    _, tail = rest.split(README_END)
    return head + block + tail


# ----------------------------------------------------------------------------- generated sentences in the prose
#: A generated piece inside a page's prose: ``<!-- gen:NAME -->text<!-- /gen -->``; ``make readme`` rewrites the
#: text from :data:`SNIPPETS` [NAME], a test fails when it is stale.
SNIPPET = re.compile(r"<!-- gen:([\w@.-]+) -->(.*?)<!-- /gen -->", re.S)
#: Every page with generated pieces (the block between :data:`README_BEGIN` and :data:`README_END` is in
#: :data:`RESULTS_PAGE`).
PAGES = ("README.md", RESULTS_PAGE, "docs/protocol.md")
SHORT = {"pca": "pixel PCA", "efficientnet_lite0": "Lite0", "efficientnet_lite1": "Lite1", "efficientnet_lite2": "Lite2",
         "resnet18": "ResNet18", "resnet34": "ResNet34", "resnet50": "ResNet50", "resnet101": "ResNet101",
         "vit_b_16": "ViT-B/16"}
METRIC_NAMES = {"map@r": "MAP@R", "paper_map@10": "`paper_map@10`"}
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _span(lo: float, hi: float, fmt: str = "{:.2f}", sep: str = "-") -> str:
    """``1.15-1.22``, or ``1.30`` when both ends read the same."""
    a, b = fmt.format(lo), fmt.format(hi)
    return a if a == b else f"{a}{sep}{b}"


def _runset(root, runset: str) -> pd.DataFrame:
    return load_results(Path(root) / "papermill_runs" / runset)


def _backbones(res: pd.DataFrame) -> list[str]:
    return [b for b in BACKBONE_ORDER if b in set(res["backbone"])]


def boost_summary(res: pd.DataFrame, metric: str, task: str = "task1") -> dict:
    """Task / raw over the backbones of a run set: the range of the ratios, the envelope of their CIs, and the
    backbones whose paired difference is not "better" (with that difference)."""
    rs = {b: paired_ratio(res, b, metric, task) for b in _backbones(res)}
    return dict(lo=min(r["ratio"] for r in rs.values()), hi=max(r["ratio"] for r in rs.values()),
                ci_low=min(r["ci_low"] for r in rs.values()), ci_high=max(r["ci_high"] for r in rs.values()),
                n=len(rs), seeds=min(r["n"] for r in rs.values()),
                not_better={b: r["delta"] for b, r in rs.items() if r["verdict"] != "better"})


def _boost_phrase(res: pd.DataFrame, metric: str) -> str:
    s = boost_summary(res, metric)
    out = f"{METRIC_NAMES[metric]} ×{_span(s['lo'], s['hi'])} (95 % CIs within [{s['ci_low']:.2f}, {s['ci_high']:.2f}])"
    if s["not_better"]:
        out += "; no detectable difference for " + ", ".join(f"{SHORT.get(b, b)} (paired difference {fmt_delta(d)})"
                                                           for b, d in s["not_better"].items())
    return out


def snippet_headline(root) -> str:
    """README: the answer, split by split, as paired ratios with their CIs."""
    rand, grp = _runset(root, "fashion"), _runset(root, "fashion-by_group")
    sr = [boost_summary(rand, m) for m in METRIC_NAMES]
    n = sr[0]["n"]
    every = not any(s["not_better"] for s in sr)
    answer = "Yes, on the real catalogue's random split" if every else "Partly, on the real catalogue's random split"
    return (f"{answer} (test groups also seen in training): with the Task 1 head, "
            f"{_boost_phrase(rand, 'map@r')} and {_boost_phrase(rand, 'paper_map@10')} on "
            f"{'all ' + _NUMBERS[n] if n < 10 else n} backbones tested ({sr[0]['seeds']} seeds, Task 1 / raw paired by seed). "
            f"On test groups never seen in training (the `by_group` split, not paired with the random one): "
            f"{_boost_phrase(grp, 'map@r')}; "
            f"{_boost_phrase(grp, 'paper_map@10')}.")


def snippet_readme_table(root) -> str:
    """README: the random split's MAP@R per backbone, raw and Task 1, difference and ratio paired by seed."""
    from .stats import mean_ci

    res = _runset(root, "fashion")
    m = res[res["metric"] == "map@r"]

    def ci(b, e):
        mean, lo, hi = mean_ci(m[(m["backbone"] == b) & (m["embedding"] == e)]["value"].to_numpy())
        return f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"

    rows = [{"backbone": "pca (pixels)" if b == "pca" else b, "raw": ci(b, "raw"), "Task 1 head": ci(b, "task1"),
             "Task 1 − raw": fmt_delta(paired(res, (b, "task1"), (b, "raw"), "map@r")),
             "Task 1 / raw": _fmt_ratio(paired_ratio(res, b, "map@r"))} for b in _backbones(res)]
    n = res["seed"].nunique()
    return (f"\n\nFashion Product Images (Small), random split, test MAP@R, mean [95 % Student-t CI] over **n = {n} "
            "seeds**; the difference and the ratio are paired by seed (the seed fixes the sample, so raw and boosted "
            "are scored on the same test images):\n\n" + pd.DataFrame(rows).to_markdown(index=False, tablefmt="github")
            + "\n\n")


def _original_ratios() -> pd.Series:
    return ORIGINAL_TABLE["Task 1: attributes"] / ORIGINAL_TABLE["raw"]


def snippet_original_ratios(root) -> str:
    """results.md: the random split's Task 1 ratios on the original's metric beside the original's own."""
    s = boost_summary(_runset(root, "fashion"), "paper_map@10")
    o = _original_ratios().drop("pca")
    return (f"on `paper_map@10` Task 1 / raw is {_span(s['lo'], s['hi'])} here, the original's Task 1 / raw for its "
            f"ResNets and ViT {_span(o.min(), o.max())} (one run each, computed from its table)")


def snippet_pca_row(root) -> str:
    """results.md: the numbers of the PCA paragraph (the original's PCA ratios; pixel PCA's here)."""
    o = ORIGINAL_TABLE.loc["pca"]
    res = _runset(root, "fashion")
    r = {m: paired_ratio(res, "pca", m) for m in METRIC_NAMES}
    ep = res[(res["backbone"] == "pca") & (res["metric"] == "selected_epoch")]
    ep1 = ep[ep["embedding"] == "task1"]["value"]
    return (f"The original's PCA row gains ×{o['Task 1: attributes'] / o['raw']:.2f} with Task 1 "
            f"({o['raw']:.2f} to {o['Task 1: attributes']:.2f}; Task 2 ×{o['Task 2: tags'] / o['raw']:.2f}, Task 3 "
            f"×{o['Task 3: both'] / o['raw']:.2f}; one run, no CI), its CNN and ViT rows "
            f"×{_span(_original_ratios().drop('pca').min(), _original_ratios().drop('pca').max())}. Here pixel PCA's "
            f"Task 1 gains ×{_fmt_ratio(r['map@r'])} on MAP@R and ×{_fmt_ratio(r['paper_map@10'])} on `paper_map@10` "
            f"(random split, {r['map@r']['n']} seeds), as much as the Lite models, with its Task 1 head selected at "
            f"epoch {_fmt_range(ep1)} (median (min-max) over seeds)")


def _paper_variants(root) -> dict:
    """Per run set: per-(backbone, head) means over seeds of filtered / paper_map@10 - 1 (%) and of
    paper_map@10_rev - paper_map@10, and the extremes over single seeds."""
    out = {}
    for rs in RUNSETS:
        if not (Path(root) / "papermill_runs" / rs).exists():
            continue
        res = _runset(root, rs)
        if has_old_metrics(res) or "paper_map@10_rev" not in set(res["metric"]):
            continue
        w = res.pivot_table(index=["backbone", "embedding", "seed"], columns="metric", values="value")
        pct = 100 * (w["paper_map@10_filtered"] / w["paper_map@10"] - 1)
        rev = w["paper_map@10_rev"] - w["paper_map@10"]
        out[rs] = dict(pct=pct.groupby(level=[0, 1]).mean(), pct_seed=pct, rev=rev.groupby(level=[0, 1]).mean(),
                       rev_seed=rev)
    return out


def snippet_filtered(root) -> str:
    """results.md: how much higher `paper_map@10_filtered` reads than `paper_map@10`."""
    v = _paper_variants(root)
    parts = [f"on `{rs}` by {_span(d['pct'].min(), d['pct'].max(), '{:.0f}')} % (single seeds "
             f"{_span(d['pct_seed'].min(), d['pct_seed'].max(), '{:.0f}')} %)" for rs, d in v.items()]
    return ("reads higher than `paper_map@10`, per backbone and head (mean over seeds of the per-seed ratio): "
            + ", ".join(parts))


def snippet_readings(root) -> str:
    """results.md: how far the two readings of the query argument are apart."""
    v = _paper_variants(root)
    worst = max(float(d["rev"].abs().max()) for d in v.values())
    worst_seed = max(float(d["rev_seed"].abs().max()) for d in v.values())
    parts = [f"`{rs}` {_span(d['rev'].min(), d['rev'].max(), '{:+.2f}', ' to ')}" for rs, d in v.items()]
    return (f"`paper_map@10_rev` minus `paper_map@10` is at most {worst:.2f} points in absolute value as a mean over "
            f"seeds per backbone and head ({'; '.join(parts)}), and up to {worst_seed:.2f} points for a single seed")


_BLOCKS: dict = {}


def _block(root) -> str:
    """:func:`readme_block`, computed once per state of the committed CSVs (the census and the page share it)."""
    csvs = sorted((Path(root) / "papermill_runs").glob("*/*.csv"))
    key = (str(Path(root).resolve()), tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in csvs))
    if key not in _BLOCKS:
        _BLOCKS.clear()
        _BLOCKS[key] = readme_block(root)
    return _BLOCKS[key]


def ci_census(root) -> dict:
    """How many CIs the generated tables show: paired differences (of which the pre-specified comparisons), paired
    ratios, and means (± half-width)."""
    block = _block(root)
    diff = len(re.findall(r"[+-]\d+\.\d+ \[[+-]\d+\.\d+, [+-]\d+\.\d+\]", block))
    ratio = len(re.findall(r"(?<![+\-\d.])\d+\.\d+ \[\d+\.\d+, \d+\.\d+\]", block))
    means = len(re.findall(r"\d+\.\d+ ± \d+\.\d+", block))
    pre, runsets = 0, 0
    for rs in RUNSETS:
        if not (Path(root) / "papermill_runs" / rs).exists():
            continue
        res = _runset(root, rs)
        if has_old_metrics(res) or "task1" not in set(res["embedding"]):
            continue
        from ..backbones import flops_per_image

        cost = {b: flops_per_image(b) for b in _backbones(res)}
        pairs = sum(cost[s] < cost[g] for s in cost for g in cost)
        per = 2 * (len(cost) + pairs)  # Task 1 minus raw per backbone + cheap Task 1 minus costly raw, two metrics
        pre, runsets = pre + per, runsets + 1
    return dict(diff=diff, ratio=ratio, means=means, prespecified=pre, runsets=runsets)


def snippet_multiplicity(root) -> str:
    """results.md: which comparisons were pre-specified, how many CIs the tables show, and that none is adjusted."""
    c = ci_census(root)
    expl = c["diff"] - c["prespecified"]
    return (f"The generated tables at the end of this page show {c['diff']} CIs of paired differences, "
            f"{c['ratio']} of paired ratios and {c['means']} of means (mean ± half-width). "
            f"{c['prespecified']} of the paired differences are the pre-specified comparisons, on {c['runsets']} run "
            f"sets; the other {expl} are exploratory. Each CI is a 95 % interval for its own comparison, not adjusted "
            f"for multiplicity: among {expl} exploratory comparisons with no true difference, about "
            f"{round(0.05 * expl)} CIs (1 in 20) would still exclude 0")


SNIPPETS = {"headline": snippet_headline, "readme-table": snippet_readme_table,
            "original-ratios": snippet_original_ratios, "pca-row": snippet_pca_row, "filtered": snippet_filtered,
            "readings": snippet_readings, "multiplicity": snippet_multiplicity,
            "stop-rule": lambda root: stop_rule_text()}


def splice_snippets(text: str, root) -> str:
    """``text`` with every ``<!-- gen:NAME -->...<!-- /gen -->`` rewritten from :data:`SNIPPETS` (an unknown
    NAME raises)."""
    def sub(m):
        if m.group(1) not in SNIPPETS:
            raise ValueError(f"unknown generated piece {m.group(1)!r}; known: {sorted(SNIPPETS)}")
        return f"<!-- gen:{m.group(1)} -->{SNIPPETS[m.group(1)](root)}<!-- /gen -->"
    return SNIPPET.sub(sub, text)


def regenerate(text: str, root, page: str) -> str:
    """A page with its generated pieces rewritten (and, for :data:`RESULTS_PAGE`, its tables)."""
    if page == RESULTS_PAGE:
        text = splice_readme(text, _block(root))
    return splice_snippets(text, root)


def main(argv=None) -> int:
    """``python -m attrboost.study.report``: regenerate the result tables of docs/results.md and the generated
    sentences of README.md and docs/ (``make readme``)."""
    import argparse

    from ..cache import repo_root

    p = argparse.ArgumentParser(prog="python -m attrboost.study.report", description=main.__doc__)
    p.add_argument("--page", action="append", help="a page to update in place (repeatable; default: every page of "
                   f"{', '.join(PAGES)})")
    p.add_argument("--check", action="store_true", help="only check that the pages are in sync (exit 1 if not)")
    args = p.parse_args(argv)
    root = repo_root() or Path.cwd()
    stale = 0
    for page in args.page or PAGES:
        path = Path(page) if Path(page).is_absolute() else root / page
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else page
        text = path.read_text(encoding="utf-8")
        new = regenerate(text, root, rel)
        if args.check:
            stale += new != text
            print(f"{path}: {'out of sync with the committed CSVs: run `make readme`' if new != text else 'in sync'}")
            continue
        if new != text:
            from ..cache import atomic_write
            atomic_write(path, lambda tmp: Path(tmp).write_text(new, encoding="utf-8"))
        print(f"{path}: generated pieces {'updated' if new != text else 'already in sync'}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())

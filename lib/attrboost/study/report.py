"""Reporting: the original report's table, results as the study wrote them, and the retrieval example.

    results = load_results("papermill_runs/synthetic")          # every results.csv of a run set
    ORIGINAL_TABLE, BACKBONE_ORDER, TASK_LABELS                 # reference numbers, table order, labels
    ex = retrieval_example(cfg, "efficientnet_lite0")           # one test query: raw vs boosted top-10
    fig = plot_retrieval_example(ex)

Notebooks 03-05 use it; the numbers themselves come from the cached steps in :mod:`attrboost.study.pipeline`.
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


def check_claims(claims: dict[str, bool], *, enforce: bool = True) -> None:
    """Print every claim with ``yes`` / ``NO``, then raise :class:`ClaimFailed` naming each one that does not
    hold, so a run that breaks a conclusion fails instead of publishing it (the study runner's summary and
    ``failures.json`` carry the message). ``enforce=False`` (a user's own catalogue, where the study's
    conclusions are a question, not a claim): print only."""
    failed = [claim for claim, holds in claims.items() if not holds]
    for claim, holds in claims.items():
        print(f"{'yes' if holds else 'NO '}  {claim}")
    if failed and not enforce:
        print(f"(not enforced on this catalogue: {len(failed)} of the study's conclusions do not hold here)")
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
    from .beyond import BASELINE_LABELS, SELECTION_RULES, paired_deltas

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
    rule = ("every trained method selected by validation MAP@R, patience 10, at most 200 epochs; "
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
        out.append("Selection sensitivity (test MAP@R and selected epoch; test-selected is optimistic by "
                   "construction, never used for a claim):\n\n" + _md(st))
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


def main(argv=None) -> int:
    """``python -m attrboost.study.report``: regenerate the result tables of docs/results.md (``make readme``)."""
    import argparse

    from ..cache import repo_root

    p = argparse.ArgumentParser(prog="python -m attrboost.study.report", description=main.__doc__)
    p.add_argument("--page", default=RESULTS_PAGE, help="page to update in place, between its results markers "
                   "(default: %(default)s)")
    p.add_argument("--check", action="store_true", help="only check that the page is in sync (exit 1 if not)")
    args = p.parse_args(argv)
    root = repo_root() or Path.cwd()
    path = Path(args.page)
    if not path.is_absolute():
        path = root / path
    text = path.read_text(encoding="utf-8")
    new = splice_readme(text, readme_block(root))
    if args.check:
        if new != text:
            print(f"{path} is out of sync with the committed CSVs: run `make readme`")
            return 1
        print(f"{path}: result tables in sync")
        return 0
    if new != text:
        from ..cache import atomic_write
        atomic_write(path, lambda tmp: Path(tmp).write_text(new, encoding="utf-8"))
    print(f"{path}: result tables {'updated' if new != text else 'already in sync'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

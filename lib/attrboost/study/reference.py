"""The committed run set as a reference: a notebook's numbers checked against what the study published.

A notebook run with the parameters of a committed run set (``papermill_runs/<run set>/run.json``: same
dataset, split, ``n_groups`` and ``per_group``) must reproduce its conclusions, and its numbers must stay near
the published ones. Two regression checks, derived from the committed ``results.csv``, on the seeds both share:

* **band**: each embedding's mean test score within :data:`BAND` points of the committed mean. Bits differ
  between processors and training turns them into other selected epochs: on one AMD EPYC against the machine
  that published the synthetic run set, single Lite0 Task 1 seeds moved by -2.31 to +0.55 MAP@R; a mean over
  seeds moves less, so 3 points catch a broken head, not a processor;
* **boost kept**: each head's mean gain over raw at least :data:`BOOST_SHARE` of the committed gain (a head
  that lost half its boost fails even inside the band).

No matching run set (a user's catalogue, other parameters, an installed package without ``papermill_runs``):
no reference, no check (:func:`committed_results` returns None and says why).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..cache import repo_root

__all__ = ["BAND", "BOOST_SHARE", "RUNS_DIR", "committed_results", "reference_claims"]

BAND = 3.0
BOOST_SHARE = 0.5
RUNS_DIR = "papermill_runs"
_KEYS = ("dataset", "split", "n_groups", "per_group")


def committed_results(dataset: str, split: str, n_groups: int, per_group: int, *,
                      root: str | Path | None = None) -> tuple[pd.DataFrame | None, str]:
    """``(results, why)``: the committed ``results.csv`` of the run set made with these parameters (and
    ``data_dir`` the default), or ``(None, the reason there is none)``."""
    root = Path(root) if root is not None else repo_root()
    if root is None or not (root / RUNS_DIR).is_dir():
        return None, f"no {RUNS_DIR}/ beside the library (an installed package): no committed reference"
    want = dict(dataset=dataset, split=split, n_groups=int(n_groups), per_group=int(per_group))
    for run_json in sorted((root / RUNS_DIR).glob("*/run.json")):
        params = json.loads(run_json.read_text()).get("parameters", {})
        if params.get("data_dir") is None and {k: params.get(k) for k in _KEYS} == want:
            csv = run_json.parent / "results.csv"
            if csv.is_file():
                return pd.read_csv(csv), f"{RUNS_DIR}/{run_json.parent.name}/results.csv"
    return None, f"no committed run set has {want}: no reference"


def reference_claims(results: pd.DataFrame, committed: pd.DataFrame, backbone: str, tasks,
                     metrics=("map@r", "paper_map@10"), *, band: float = BAND,
                     boost_share: float = BOOST_SHARE) -> dict[str, bool]:
    """The two regression claims (module docstring) of ``results`` (columns embedding, seed, metric, value: one
    backbone) against ``committed`` (a run set's results.csv), over the seeds and embeddings both hold. Empty
    when they share no seed or the committed run set lacks ``backbone``."""
    ref = committed[committed["backbone"] == backbone]
    seeds = sorted(set(results["seed"]) & set(ref["seed"]))
    if not seeds:
        return {}
    embeddings = [e for e in ("raw", *tasks) if e in set(results["embedding"]) and e in set(ref["embedding"])]

    def means(df):
        d = df[df["seed"].isin(seeds) & df["metric"].isin(metrics) & df["embedding"].isin(embeddings)]
        return d.groupby(["embedding", "metric"])["value"].mean()

    here, there = means(results), means(ref)
    common = here.index.intersection(there.index)
    gap = (here[common] - there[common]).abs()
    off = [f"{e} {m} {here[(e, m)]:.2f} vs {there[(e, m)]:.2f}" for (e, m) in gap.index[gap > band]]
    claims = {f"every mean test score within {band:g} points of the committed run set (seeds {seeds})"
              + (f": not {', '.join(off)}" if off else ""): not off}
    kept = []
    for task in (t for t in tasks if t in embeddings):
        for metric in metrics:
            if (task, metric) in common and ("raw", metric) in common:
                gain, ref_gain = here[(task, metric)] - here[("raw", metric)], there[(task, metric)] - there[("raw", metric)]
                kept.append(ref_gain <= 0 or gain >= boost_share * ref_gain)
    if kept:
        claims[f"every head keeps at least {boost_share:.0%} of the committed gain over raw (seeds {seeds})"] = all(kept)
    return claims

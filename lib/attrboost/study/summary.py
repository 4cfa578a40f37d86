"""The summary of a study (the headline table) and ``--reproduce``: re-execute a committed run set and compare.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from ..cache import cache_dir
from .plan import COLD_TIME, HEADLINE_METRICS, REPRODUCE_OUT, RESULTS, RUN_JSON, StudyConfig, known_backbones, read_json
from .runsets import computed_here


# ----------------------------------------------------------------------------- summary and reproduce
def backbone_order(names: Iterable[str]) -> list[str]:
    names, known = set(names), known_backbones()
    return [b for b in known if b in names] + sorted(names - set(known))


def headline(table: pd.DataFrame, metrics: Sequence[str] = HEADLINE_METRICS) -> str:
    """Text tables, one per metric: per backbone, raw and each task, ``mean ± half-width`` of the
    95 % Student-t CI over seeds (:func:`attrboost.study.stats.summarise`, formatted as notebook 05 does)."""
    from .stats import summarise

    part = table[table["metric"].isin(metrics)] if len(table) else table
    if part.empty:
        return ""
    s = summarise(part, by=["metric", "backbone", "embedding"]).set_index(["metric", "backbone", "embedding"])
    present = set(part["embedding"])
    embeddings = ["raw"] * ("raw" in present) + sorted(present - {"raw"})
    backbones = backbone_order(part["backbone"])
    blocks = []
    for metric in [m for m in metrics if m in set(part["metric"])]:
        seeds = sorted(int(x) for x in part.loc[part["metric"] == metric, "seed"].unique())
        rows = [["backbone", *embeddings]]
        for b in backbones:
            cells = [b]
            for e in embeddings:
                if (metric, b, e) not in s.index:
                    cells.append("-")
                    continue
                r = s.loc[(metric, b, e)]
                half = (r["ci_high"] - r["ci_low"]) / 2
                cells.append(f"{r['mean']:.2f} ± {half:.2f}" if pd.notna(half) else f"{r['mean']:.2f}")
            rows.append(cells)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        blocks.append(f"{metric} (test part; mean ± 95% CI half-width over {len(seeds)} seed(s) {seeds}):\n"
                      + "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows))
    return "\n".join(blocks)


def summary_table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("backbone", "status", "wall", "note")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + ("  " + r[3] if r[3] else "")
             for r in [head, *rows]]
    return "\n".join(lines)


def report(cfg: StudyConfig, skipped: list[str]) -> pd.DataFrame:
    """Print the headline numbers, where things are, and whether the ``skipped`` (up to date) runs were
    computed elsewhere; returns the run set's results table."""
    runset_dir, figures = Path(cfg.runset_dir), Path(cfg.runset_figures)
    table = pd.read_csv(runset_dir / RESULTS) if (runset_dir / RESULTS).is_file() else pd.DataFrame()
    text = headline(table) if len(table) else ""
    if text:
        print(f"\nrun set {cfg.runset}: {runset_dir / RESULTS} ({len(table)} rows)\n{text}")
    if figures.is_dir():
        names = sorted(p.name for p in figures.iterdir() if p.is_file())
        print(f"figures and tables: {figures}/ ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")
    elsewhere = [b for b in skipped if not computed_here(read_json(runset_dir / b / RUN_JSON))]
    if elsewhere:
        print(f"note: the results of {', '.join(elsewhere)} were computed elsewhere (another machine or another "
              f"cache than {cache_dir()}), so nothing was re-executed here; to re-execute them: `make reproduce` "
              f"(into {REPRODUCE_OUT}/, compared with these) or `make study STUDY_ARGS=--force` "
              f"(replaces them), {COLD_TIME}")
    return table


def compare_results(committed_df: pd.DataFrame, new_df: pd.DataFrame, value: str = "value",
                    seed: str = "seed") -> dict:
    """Row-by-row comparison of a re-executed results table with the committed one.

    Rows are matched on every column but ``value``. Each committed row is ``identical`` (same value),
    ``within_ci`` (differs by at most the half-width of the committed 95 % CI over seeds of its
    configuration: the same columns but ``seed`` and ``value``), ``differing`` or ``missing`` (absent from
    the new table); ``new`` counts rows only in the new table. Returns the counts, ``rows`` (committed
    rows) and ``max_abs_diff`` (over matched rows).
    """
    from .stats import summarise

    for name, df in (("committed", committed_df), ("new", new_df)):
        missing = [c for c in (value, seed) if c not in df.columns]
        if missing:
            raise ValueError(f"compare_results: the {name} table has no column(s) {missing}; "
                             f"columns are {list(df.columns)}")
    if set(committed_df.columns) != set(new_df.columns):
        raise ValueError(f"compare_results: columns differ: committed {list(committed_df.columns)}, "
                         f"new {list(new_df.columns)}")
    keys = [c for c in committed_df.columns if c != value]
    for name, df in (("committed", committed_df), ("new", new_df)):
        dup = df.duplicated(keys)
        if dup.any():
            raise ValueError(f"compare_results: the {name} table has {int(dup.sum())} duplicate row key(s), "
                             f"e.g. {df.loc[dup, keys].iloc[0].to_dict()}")
    config = [c for c in keys if c != seed]
    ci = summarise(committed_df, by=config, value=value) if config else None
    m = committed_df.merge(new_df, on=keys, how="outer", suffixes=("_committed", "_new"), indicator=True)
    if ci is not None:
        ci = ci.assign(half=(ci["ci_high"] - ci["ci_low"]) / 2)[config + ["half"]]
        m = m.merge(ci, on=config, how="left")
    else:
        m["half"] = float("nan")
    both = m[m["_merge"] == "both"]
    old, new = both[f"{value}_committed"], both[f"{value}_new"]
    diff = (new - old).abs()
    identical = (old == new) | (old.isna() & new.isna())
    within = ~identical & (diff <= both["half"])
    return {"rows": len(committed_df), "identical": int(identical.sum()), "within_ci": int(within.sum()),
            "differing": int((~identical & ~within).sum()), "missing": int((m["_merge"] == "left_only").sum()),
            "new": int((m["_merge"] == "right_only").sum()),
            "max_abs_diff": float(diff.max()) if len(diff) and diff.notna().any() else 0.0}


def format_comparison(name: str, c: dict) -> str:
    verdict = ("reproduced exactly" if c["identical"] == c["rows"] and not c["new"] else
               "reproduced within the committed CI" if not (c["differing"] or c["missing"] or c["new"]) else
               "NOT reproduced")
    return (f"{name}: {c['rows']} committed rows: {c['identical']} identical, {c['within_ci']} within the "
            f"committed 95% CI, {c['differing']} differing, {c['missing']} missing, {c['new']} new "
            f"(largest difference {c['max_abs_diff']:.2f}): {verdict}")



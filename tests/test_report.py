"""Reporting: the retrieval example (its AP is the paper metric's per-query AP) and reading results."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from attrboost.study import pipeline as P
from attrboost.study import report as R
from attrboost.metrics import paper_ground_truth


pytestmark = pytest.mark.usefixtures("cache")  # a private, empty cache (conftest); `tiny`: conftest


def test_load_results_prefers_the_aggregate_and_names_the_folder(tmp_path):
    rows = lambda b: pd.DataFrame({"dataset": ["synthetic"], "split": ["random"], "backbone": [b],
                                   "embedding": ["raw"], "seed": [0], "metric": ["map@r"], "value": [1.0]})
    for b in ("pca", "resnet18"):
        (tmp_path / b).mkdir()
        rows(b).to_csv(tmp_path / b / "results.csv", index=False)
    assert sorted(R.load_results(tmp_path)["backbone"]) == ["pca", "resnet18"]
    rows("pca").to_csv(tmp_path / "results.csv", index=False)
    assert R.load_results(tmp_path)["backbone"].tolist() == ["pca"]
    with pytest.raises(FileNotFoundError, match=f"no results.csv under {tmp_path / 'none'}"):
        R.load_results(tmp_path / "none")


def test_retrieval_example_ap_matches_paper_metric_definition(tiny, monkeypatch):
    cfg = P.DataConfig(dataset="tiny", n_groups=6, per_group=8, n_test=16)
    monkeypatch.setattr(P, "get_catalogue", lambda *a, **k: tiny)
    P.get_sample.cache_clear()
    rng = np.random.default_rng(1)
    s = P.get_sample(cfg, 0)
    X = rng.normal(size=(len(s.items), 8)).astype(np.float32)
    monkeypatch.setattr(P, "get_features", lambda *a, **k: X)
    ex = R.retrieval_example(cfg, "toy", seed=0, task="task1", max_epochs=2)
    # the mean of the per-query AP over all queries is the paper metric; check this query against it
    test = s.part("test")
    gt = paper_ground_truth(s.labels("test"), s.names("test"))
    assert list(ex["truth"]) == list(gt[ex["query"]]) and len(ex["truth"]) == 10  # fillers included
    emb = X[s.mask("test")].astype(np.float64)
    q = ex["query"]
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = e @ e[q]
    top = sorted(range(len(e)), key=lambda i: (-np.float32(sims[i]), i))[:11][1:]  # the first dropped
    assert list(ex["raw"]) == top
    truth = set(ex["truth"])
    hits, ap = 0, 0.0
    for rank, i in enumerate(top, start=1):
        if i in truth:
            hits += 1
            ap += hits / rank
    assert ex["ap"]["raw"] == pytest.approx(100 * ap / 10)
    assert len(ex["boosted"]) == 10 and ex["query_id"] == test["id"].iloc[q]
    P.get_sample.cache_clear()


def test_load_results_ignores_run_dirs_set_aside(tmp_path):
    import pandas as pd

    from attrboost.study.report import load_results

    for name, value in (("pca", 1.0), ("pca.previous", 2.0), ("pca.failed", 3.0)):
        (tmp_path / name).mkdir()
        pd.DataFrame({"backbone": ["pca"], "value": [value]}).to_csv(tmp_path / name / "results.csv", index=False)
    assert load_results(tmp_path)["value"].tolist() == [1.0]


# ----------------------------------------------------------------------------- claims and README tables
def _results(values: dict) -> pd.DataFrame:
    """values: (backbone, embedding) -> per-seed list; one metric 'map@r'."""
    rows = [dict(dataset="d", split="random", backbone=b, embedding=e, seed=s, metric="map@r", value=v)
            for (b, e), vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_paired_difference_and_verdict_match_a_t_interval():
    from scipy import stats

    res = _results({("a", "task1"): [30.0, 31.5, 29.0, 33.0], ("b", "raw"): [28.0, 30.0, 29.5, 30.5]})
    d = R.paired(res, ("a", "task1"), ("b", "raw"), "map@r")
    diff = np.array([2.0, 1.5, -0.5, 2.5])
    half = stats.t.ppf(0.975, 3) * diff.std(ddof=1) / np.sqrt(4)
    assert d["delta"] == pytest.approx(diff.mean())
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert d["verdict"] == ("better" if diff.mean() - half > 0 else "no detectable difference")
    assert R.verdict(0.1, 2) == "better" and R.verdict(-2, -0.1) == "worse"
    assert R.verdict(-0.1, 2) == "no detectable difference" and R.verdict(np.nan, np.nan) == "one seed: no CI"
    # pairing uses the seeds both have
    res2 = _results({("a", "task1"): [1.0, 2.0, 3.0], ("b", "raw"): [0.0, 0.0]})
    assert R.paired(res2, ("a", "task1"), ("b", "raw"), "map@r")["n"] == 2


def test_cheap_boosted_vs_costly_raw_lists_every_task_of_every_cheaper_backbone():
    res = _results({("s", "raw"): [1, 2, 3], ("s", "task1"): [6, 7, 8.1], ("s", "task2"): [3, 2, 4],
                    ("g", "raw"): [4, 4, 4], ("g", "task1"): [9, 9, 9]})
    c = R.cheap_boosted_vs_costly_raw(res, {"s": 0.5, "g": 2.0}, metrics=("map@r",))
    assert list(zip(c["small"], c["big"], c["task"])) == [("s", "g", "task1"), ("s", "g", "task2")]
    assert c.iloc[0]["delta"] == pytest.approx(np.mean([2, 3, 4.1])) and c.iloc[0]["verdict"] == "better"
    assert c.iloc[1]["verdict"] == "no detectable difference"


def test_every_generated_piece_is_in_sync_with_the_committed_csvs():
    """`make readme` output == every page: the tables of docs/results.md and each generated sentence of README.md
    and docs/ (``<!-- gen:NAME -->``). A re-run whose CSV changes without `make readme` fails here."""
    from attrboost.cache import repo_root

    root = repo_root()
    for page in R.PAGES:
        text = (root / page).read_text(encoding="utf-8")
        assert R.regenerate(text, root, page) == text, f"{page} out of sync with the committed CSVs: run `make readme`"
    named = {m.group(1) for page in R.PAGES for m in R.SNIPPET.finditer((root / page).read_text(encoding="utf-8"))}
    assert named == set(R.SNIPPETS), "every generated piece is used, and only those"


_NUM = re.compile(r"(?<![\w.])[+-]?\d+\.\d\d(?!\d)")


def _numbers(text: str) -> set[str]:
    return set(_NUM.findall(text))


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end)]


def _unmatched(prose: str, source: str) -> list[str]:
    """Numbers quoted in ``prose`` (generated pieces removed) that ``source`` does not hold: a signed number must
    be there with its sign, an unsigned one with or without."""
    have = _numbers(source)
    have |= {n.lstrip("+-") for n in have}
    return sorted(n for n in _numbers(R.SNIPPET.sub("", prose)) if n not in have)


def test_numbers_quoted_in_the_prose_are_in_the_generated_tables():
    """Every 2-decimal number the prose of docs/results.md quotes for a run set (a mean, a paired difference, a CI
    bound) is in the generated tables: after a re-run, a sentence left with old numbers fails here."""
    from attrboost.cache import repo_root

    root = repo_root()
    text = (root / R.RESULTS_PAGE).read_text(encoding="utf-8")
    block = text[text.index(R.README_BEGIN):text.index(R.README_END)]
    prose = (_section(text, "### Fashion Product Images, random split", "### Over a whole catalogue")
             + _section(text, "### The embedded synthetic catalogue", "### A catalogue labelled in part"))
    assert not _unmatched(prose, block), "numbers in the prose that no generated table holds"


def test_whole_catalogue_numbers_in_the_prose_are_in_the_committed_summary():
    """Every 2-decimal number of the whole-catalogue section is a value of benchmarks/results/wholecat_*.csv
    (rounded to 2 decimals as printed; differences and their CI bounds signed)."""
    import pandas as pd

    from attrboost.cache import repo_root

    root = repo_root()
    text = (root / R.RESULTS_PAGE).read_text(encoding="utf-8")
    summary = pd.concat([pd.read_csv(root / "benchmarks" / "results" / f"wholecat_{name}.csv")
                         for name in ("fashion", "synthetic")])
    signed = summary[["diff", "diff_low", "diff_high"]].to_numpy().ravel()
    plain = summary[["reference_value", "value", "ratio", "ratio_low", "ratio_high"]].to_numpy().ravel()
    source = " ".join([f"{v:+.2f}" for v in signed] + [f"{v:.2f}" for v in plain])
    prose = _section(text, "### A catalogue labelled in part", "## Beyond the original")
    assert not _unmatched(prose, source), "whole-catalogue numbers in the prose the committed summary does not hold"


def test_notebook_07_numbers_in_the_prose_are_in_the_executed_notebooks():
    import json

    from attrboost.cache import repo_root

    root = repo_root()
    text = (root / R.RESULTS_PAGE).read_text(encoding="utf-8")
    outputs = []
    for nb in ("papermill_runs/07_search/fashion.ipynb", "notebooks/07_search.ipynb"):
        for cell in json.loads((root / nb).read_text(encoding="utf-8"))["cells"]:
            for o in cell.get("outputs", []):
                outputs.append("".join(o.get("text", [])) + "".join(o.get("data", {}).get("text/plain", [])))
    prose = _section(text, "### Over a whole catalogue", "### The embedded synthetic catalogue")
    assert not _unmatched(prose, "\n".join(outputs)), "notebook 07 numbers in the prose its outputs do not hold"


def test_generated_sentences_follow_the_paired_cis(tmp_path):
    """A ratio range says "no detectable difference" exactly for the backbones whose paired difference covers 0."""
    rows = [dict(dataset="d", split="random", backbone=b, embedding=e, seed=s, metric=m, value=v)
            for m in ("map@r", "paper_map@10")
            for b, gain in (("efficientnet_lite0", [2.0, 2.5, 3.0]), ("efficientnet_lite1", [-1.0, 0.5, 2.0]))
            for s in range(3) for e, v in (("raw", 10.0 + s), ("task1", 10.0 + s + gain[s]))]
    res = pd.DataFrame(rows)
    s = R.boost_summary(res, "map@r")
    assert list(s["not_better"]) == ["efficientnet_lite1"]
    assert s["lo"] == pytest.approx(np.mean([0.9, 0.5 / 11 + 1, 2.0 / 12 + 1]))
    phrase = R._boost_phrase(res, "map@r")
    assert "no detectable difference for Lite1 (paired difference +0.50 [" in phrase and "Lite0 (" not in phrase


def test_splice_snippets_rewrites_only_the_marked_text(monkeypatch):
    monkeypatch.setitem(R.SNIPPETS, "toy", lambda root: "NEW 1.23")
    text = "a <!-- gen:toy -->old 9.99<!-- /gen --> b <!-- gen:toy --><!-- /gen -->."
    assert R.splice_snippets(text, None) == "a <!-- gen:toy -->NEW 1.23<!-- /gen --> b <!-- gen:toy -->NEW 1.23<!-- /gen -->."
    with pytest.raises(ValueError, match="unknown generated piece 'nope'"):
        R.splice_snippets("<!-- gen:nope -->x<!-- /gen -->", None)


def test_splice_readme_replaces_only_the_block():
    text = f"intro\n{R.README_BEGIN}\nold\n{R.README_END}\noutro\n"
    assert R.splice_readme(text, f"{R.README_BEGIN}\nnew\n{R.README_END}") == \
        f"intro\n{R.README_BEGIN}\nnew\n{R.README_END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        R.splice_readme("no markers", "x")


def test_run_sets_from_before_the_metric_change_are_flagged_not_tabulated(tmp_path):
    old = _results({("efficientnet_lite0", "raw"): [1, 2], ("efficientnet_lite0", "task1"): [3, 4]})
    (tmp_path / "papermill_runs" / "fashion").mkdir(parents=True)
    old.to_csv(tmp_path / "papermill_runs" / "fashion" / "results.csv", index=False)
    text = R.runset_tables(tmp_path, "fashion")
    assert "Computed with an older metric" in text and "|" not in text
    new = pd.concat([old, old.assign(metric="paper_map@10_filtered")])
    new.to_csv(tmp_path / "papermill_runs" / "fashion" / "results.csv", index=False)
    text = R.runset_tables(tmp_path, "fashion")
    assert "Computed with an older metric" not in text and "| efficientnet_lite0 | 1.50 ± 6.35 | 3.50 ± 6.35" in text


def test_a_conclusion_that_does_not_hold_stops_the_run_only_where_it_is_enforced(capsys):
    R.check_claims({"holds": True, "does not hold": False}, enforce=False)  # printed, not raised
    out = capsys.readouterr().out
    assert "yes  holds" in out and "NO   does not hold" in out and "not enforced" in out
    with pytest.raises(R.ClaimFailed, match="does not hold"):
        R.check_claims({"holds": True, "does not hold": False})
    assert R.claims_enforced("synthetic")
    assert not R.claims_enforced("fashion") and not R.claims_enforced("csv")


def test_a_claim_that_cannot_be_checked_on_this_run_is_printed_n_a_and_neither_holds_nor_fails(capsys):
    R.check_claims({"holds": True, "a 95% CI with one seed": None})  # enforced, and nothing raised
    out = capsys.readouterr().out
    assert "n/a  a 95% CI with one seed" in out and not R.claims_not_holding(out)
    with pytest.raises(R.ClaimFailed, match="1 of 3"):
        R.check_claims({"holds": True, "n/a": None, "does not hold": False})


@pytest.mark.parametrize("name", ["04_evaluate", "06_beyond"])
def test_the_ci_claims_are_n_a_with_one_seed(name):
    """04's and 06's claims on a 95% CI are None (n/a) when the run has one seed, so a one-seed run on the
    synthetic catalogue is not failed by a CI it cannot compute."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / f"{name}.ipynb").read_text())
    check = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"
                 and "check_claims(" in "".join(c["source"]))
    ci_claims = [line for line in check.splitlines() if "CI" in line and line.strip().startswith('"')]
    assert ci_claims and "ci = len(seeds) > 1" in check
    assert check.count("if ci else None") == len(ci_claims), ci_claims


@pytest.mark.parametrize("name", ["03_train", "04_evaluate", "06_beyond", "07_search"])
def test_the_notebooks_enforce_fixed_conclusions_on_the_synthetic_catalogue_and_bands_everywhere(name):
    """The fixed conclusions of 03, 04, 06 and 07 stop the run on the synthetic catalogue only (a finding elsewhere);
    04's regression bands, derived from the committed run set of the same parameters, stop it on any data."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / f"{name}.ipynb").read_text())
    calls = [line.strip() for c in nb["cells"] if c["cell_type"] == "code"
             for line in "".join(c["source"]).splitlines() if re.match(r"\s*(R\.)?check_claims\(", line)]
    assert calls and all("claims_enforced(dataset)" in c or c.startswith("R.check_claims(bands)") for c in calls)
    assert any("claims_enforced(dataset)" in c for c in calls)
    assert (name == "04_evaluate") == any(c.startswith("R.check_claims(bands)") for c in calls)

"""Tests for the papermill study runner (attrboost.study).

All but one test use a throw-away repository under tmp_path and a fake executor, so no real
notebook runs; the last test executes tiny notebooks with papermill to prove the wiring.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from papermill.exceptions import PapermillExecutionError

from attrboost.data import DATASETS, SPLITS
from attrboost.heads import TASKS
from attrboost.study import runner as S

BACKBONES = list(S.DEFAULT_BACKBONES[:3])           # e.g. pca, efficientnet_lite0, efficientnet_lite1
BB_ARG = ",".join(BACKBONES)
BEYOND = [(S.BEYOND_NOTEBOOK, "efficientnet_lite0")]  # 06 runs when efficientnet_lite0 has a successful run
METRICS = ("paper_map@10", "map@r", "precision@1")


# ------------------------------------------------------------------------------ fixtures
def make_notebook(source: str, outputs: list | None = None) -> dict:
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": "c0", "metadata": {},
                       "outputs": outputs or [], "source": source}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def make_repo(root: Path) -> Path:
    (root / "notebooks").mkdir(parents=True)
    for name in S.COMMITTED_NOTEBOOKS:
        (root / "notebooks" / f"{name}.ipynb").write_text(json.dumps(make_notebook(f"# {name}\n")))
    return root


def fake_results(params: dict, seeds) -> pd.DataFrame:
    """A tidy table like 04's, rows deliberately out of order, values from a backbone-specific rng."""
    rng = np.random.default_rng(sum(map(ord, params["backbone"])))
    rows = [dict(dataset=params["dataset"], split=params["split"], backbone=params["backbone"], embedding=e,
                 seed=s, metric=m, value=float(rng.random()))
            for e in ("task1", "raw") for s in seeds for m in METRICS]
    return pd.DataFrame(rows).iloc[rng.permutation(len(rows))]


class FakeExecute:
    """Records calls; 04 writes results.csv into results_dir; fails where told."""

    def __init__(self, root: Path, fail: dict[str, str] | None = None):
        self.root, self.fail, self.calls = root, dict(fail or {}), []

    def __call__(self, input_path, output_path, parameters=None, cwd=None, kernel_name=None, progress_bar=None):
        assert Path.cwd() == self.root.resolve() and Path(cwd) == self.root.resolve()
        assert not os.path.isabs(input_path) and kernel_name == "python3" and progress_bar is False
        name = Path(input_path).stem
        backbone = Path(output_path).parent.name if name in S.BACKBONE_NOTEBOOKS and parameters else None
        if name == S.BEYOND_NOTEBOOK and parameters:
            backbone = parameters["backbone"]
            assert Path(output_path).parent == Path(parameters["results_dir"])
        assert parameters.get("backbone", backbone) == backbone
        self.calls.append((name, backbone, output_path, dict(parameters)))
        Path(output_path).write_text("{}")
        if name == "04_evaluate" and parameters:  # written before a failure in a later cell
            fake_results(parameters, parameters["seeds"]).to_csv(Path(parameters["results_dir"]) / "results.csv",
                                                                  index=False)
        if self.fail.get(backbone) == name:
            raise PapermillExecutionError(3, 3, "boom()", "RuntimeError", "boom " + "x" * 600, [])
        if name in ("05_figures", S.BEYOND_NOTEBOOK) and parameters:
            Path(parameters["figures_dir"]).mkdir(parents=True, exist_ok=True)
            (Path(parameters["figures_dir"]) / f"{name}.md").write_text(f"written by {name}\n")
        if name == S.BEYOND_NOTEBOOK and parameters:
            (Path(parameters["results_dir"]) / S.BEYOND_RESULTS).write_text("experiment\n")

    def executed(self):
        return [(n, b) for n, b, _, _ in self.calls]


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


# a private cache directory (conftest's `cache`), so the runner's cache id never touches the real cache
pytestmark = pytest.mark.usefixtures("cache")


@pytest.fixture(autouse=True)
def one_backbone_at_a_time(monkeypatch):
    """The tests that check the order of notebooks run one backbone at a time (``--jobs 1``);
    test_backbones_side_by_side_give_the_same_run_set checks ``--jobs 2``."""
    monkeypatch.setattr("attrboost.study.cli.DEFAULT_JOBS", 1)


def run(repo, argv, fail=None):
    ex = FakeExecute(repo, fail)
    return S.main(["--seeds", "0,1"] + argv, execute=ex, root=repo), ex


# ------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize("argv, option, known", [
    (["--backbones", "pca,nosuchnet"], "--backbones", S.known_backbones()),
    (["--backbones", ""], "--backbones", S.known_backbones()),
    (["--tasks", "task1,task9"], "--tasks", TASKS),
    (["--split", "diagonal"], "--split", SPLITS),
    (["--dataset", "imagenet"], "--dataset", DATASETS),
    (["--weights", "nosuchnet=w.pt"], "--weights", S.known_backbones()),
])
def test_invalid_choices_exit_with_option_and_known_values(repo, capsys, argv, option, known):
    with pytest.raises(SystemExit) as e:
        S.parse_args(argv, root=repo)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert option in err
    assert all(k in err for k in known)


@pytest.mark.parametrize("argv, option", [
    (["--seeds", "0,x"], "--seeds"), (["--seeds", "1,1"], "--seeds"), (["--n-groups", "0"], "--n-groups"),
    (["--weights", "pca"], "--weights"), (["--weights", "pca=/no/such/file.pt"], "--weights"),
])
def test_invalid_values_exit_with_option(repo, capsys, argv, option):
    with pytest.raises(SystemExit):
        S.parse_args(argv, root=repo)
    assert option in capsys.readouterr().err


# ------------------------------------------------------------------------------ plan
def test_plan_order_paths_and_parameters(repo, tmp_path):
    weights = repo / "w" / "lite1.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"w")
    args = S.parse_args(["--backbones", BB_ARG, "--tasks", "task1,task3", "--seeds", "3,4", "--n-groups", "7",
                         "--per-group", "5", "--weights", f"{BACKBONES[2]}={weights}",
                         "--data-dir", str(repo / "data" / "x")], root=repo)
    runs = S.plan_runs(args)
    assert [r.backbone for r in runs] == BACKBONES
    data = dict(dataset="synthetic", data_dir="data/x", n_groups=7, per_group=5, split="random")
    for r in runs:
        assert r.runset == "synthetic" and r.run_dir == f"runs/papermill_runs/synthetic/{r.backbone}"
        assert [s.notebook for s in r.steps] == list(S.BACKBONE_NOTEBOOKS)
        for s in r.steps:
            assert s.input_path == f"notebooks/{s.notebook}.ipynb"
            assert s.output_path == f"{r.run_dir}/{s.notebook}.ipynb"
            for k, v in data.items():
                assert s.parameters[k] == v
        p01, p02, p03, p04 = (s.parameters for s in r.steps)
        w = "w/lite1.pt" if r.backbone == BACKBONES[2] else None
        assert p01 == dict(data, seed=3)
        assert p02 == dict(data, seeds=[3, 4], backbone=r.backbone, weights=w, device="auto", batch_size=32)
        assert p03 == dict(data, backbone=r.backbone, weights=w, tasks=["task1", "task3"], seed=3, device="auto")
        assert p04 == dict(data, backbone=r.backbone, weights=w, tasks=["task1", "task3"], seeds=[3, 4],
                           results_dir=r.run_dir, device="auto")
    fig = S.plan_figures(args)
    assert fig.output_path == "runs/papermill_runs/synthetic/05_figures.ipynb"
    assert fig.parameters == dict(dataset="synthetic", runs_dir="runs/papermill_runs/synthetic",
                                  figures_dir="runs/figures/synthetic", data_dir="data/x")
    # nothing handed to a notebook is an absolute path
    for step in [s for r in runs for s in r.steps] + [fig]:
        assert not any(isinstance(v, str) and os.path.isabs(v) for v in step.parameters.values())


def test_plan_by_group_runset_and_out_dirs(repo, tmp_path):
    args = S.parse_args(["--dataset", "fashion", "--split", "by_group", "--backbones", "pca",
                         "--out", str(repo / "elsewhere"), "--figures-dir", str(tmp_path / "figs")], root=repo)
    (run,) = S.plan_runs(args)
    assert run.runset == "fashion-by_group" and run.run_dir == "elsewhere/fashion-by_group/pca"
    fig = S.plan_figures(args)
    assert fig.parameters["dataset"] == "fashion-by_group"
    assert fig.parameters["runs_dir"] == "elsewhere/fashion-by_group"
    # outside the repository a path cannot be relative to it: it stays absolute
    assert fig.parameters["figures_dir"] == str((tmp_path / "figs" / "fashion-by_group").resolve())


# ------------------------------------------------------------------------------ running
def test_main_runs_notebooks_in_order_and_aggregates(repo, capsys):
    code, ex = run(repo, ["--backbones", BB_ARG])
    assert code == 0
    expected = [(nb, b) for b in BACKBONES for nb in S.BACKBONE_NOTEBOOKS] + [("05_figures", None)] + BEYOND
    assert ex.executed() == expected
    beyond = ex.calls[-1][3]
    assert beyond["results_dir"] == "runs/papermill_runs/synthetic" and beyond["figures_dir"] == "runs/figures/synthetic"
    assert beyond["seeds"] == [0, 1] and beyond["split"] == "random"
    summary = json.loads((repo / "runs/papermill_runs/synthetic/run.json").read_text())
    assert summary["beyond_status"] == "ok" and summary["figures_status"] == "ok"
    out = capsys.readouterr().out
    assert f"[2/3 backbones] {BACKBONES[1]}: 02_embeddings ..." in out and "total wall time" in out
    for b in BACKBONES:
        info = json.loads((repo / "runs/papermill_runs/synthetic" / b / "run.json").read_text())
        assert info["status"] == "ok" and set(info["wall_s"]) == set(S.BACKBONE_NOTEBOOKS)
        assert info["parameters"]["04_evaluate"]["results_dir"] == f"runs/papermill_runs/synthetic/{b}"
    assert not (repo / "runs/papermill_runs/synthetic/failures.json").exists()
    table = pd.read_csv(repo / "runs/papermill_runs/synthetic/results.csv")
    assert sorted(table.backbone.unique()) == sorted(BACKBONES)


def test_second_invocation_skips_unchanged_runs(repo, capsys):
    argv = ["--backbones", BB_ARG]
    run(repo, argv)
    capsys.readouterr()
    code, ex = run(repo, argv)
    assert code == 0 and ex.calls == []
    assert capsys.readouterr().out.count("up to date (skipped)") == len(BACKBONES) + 2


def test_changed_parameter_reruns(repo):
    # (was: a changed run-set parameter silently re-ran into the same run set; now it needs --force)
    run(repo, ["--backbones", BB_ARG])
    code, ex = run(repo, ["--backbones", BB_ARG, "--n-groups", "50", "--force"])
    assert code == 0
    assert ex.executed() == [(nb, b) for b in BACKBONES for nb in S.BACKBONE_NOTEBOOKS] + [("05_figures", None)] + BEYOND
    assert all(p["n_groups"] == 50 for nb, b, _, p in ex.calls if nb != "05_figures")


def test_changed_notebook_code_reruns_but_new_outputs_do_not(repo):
    run(repo, ["--backbones", BB_ARG])
    nb03 = repo / "notebooks" / "03_train.ipynb"
    # executing a notebook in place changes only its outputs: still up to date
    nb03.write_text(json.dumps(make_notebook("# 03_train\n", outputs=[{"output_type": "stream", "name": "stdout",
                                                                          "text": "trained\n"}])))
    assert run(repo, ["--backbones", BB_ARG])[1].calls == []
    nb03.write_text(json.dumps(make_notebook("# 03_train\nlr = 1e-4\n")))
    code, ex = run(repo, ["--backbones", BB_ARG])
    assert code == 0 and len(ex.calls) == len(BACKBONES) * 4 + 2
    # a change to 05 only re-runs 05, a change to 06 only 06
    (repo / "notebooks" / "05_figures.ipynb").write_text(json.dumps(make_notebook("# 05\nimport seaborn\n")))
    assert run(repo, ["--backbones", BB_ARG])[1].executed() == [("05_figures", None)]
    (repo / "notebooks" / "06_beyond.ipynb").write_text(json.dumps(make_notebook("# 06\nimport sklearn\n")))
    assert run(repo, ["--backbones", BB_ARG])[1].executed() == BEYOND


def test_force_reruns(repo):
    run(repo, ["--backbones", BB_ARG])
    code, ex = run(repo, ["--backbones", BB_ARG, "--force"])
    assert code == 0 and len(ex.calls) == len(BACKBONES) * 4 + 2


def test_missing_results_is_not_up_to_date(repo):
    run(repo, ["--backbones", BB_ARG])
    (repo / "runs/papermill_runs/synthetic" / BACKBONES[0] / "results.csv").unlink()
    _, ex = run(repo, ["--backbones", BB_ARG])
    # the rerun reproduces the same results under the same fingerprint, so 05 has nothing new to draw
    assert ex.executed() == [(nb, BACKBONES[0]) for nb in S.BACKBONE_NOTEBOOKS]


@pytest.mark.parametrize("failing", ["02_embeddings", "04_evaluate"])
def test_failure_is_isolated_to_its_backbone(repo, capsys, failing):
    runset = repo / "runs/papermill_runs/synthetic"
    bad = BACKBONES[1]
    run(repo, ["--backbones", BB_ARG])                       # a first, successful run leaves results behind
    stale = pd.read_csv(runset / bad / "results.csv")
    assert len(stale)
    capsys.readouterr()
    code, ex = run(repo, ["--backbones", BB_ARG, "--force"], fail={bad: failing})
    assert code == 1
    ran_bad = list(S.BACKBONE_NOTEBOOKS[:S.BACKBONE_NOTEBOOKS.index(failing) + 1])
    assert ex.executed() == ([(nb, BACKBONES[0]) for nb in S.BACKBONE_NOTEBOOKS] + [(nb, bad) for nb in ran_bad]
                             + [(nb, BACKBONES[2]) for nb in S.BACKBONE_NOTEBOOKS] + [("05_figures", None)]
                             + BEYOND)  # (was: 06 not run; now bad's previous, successful run is still there)
    failures = json.loads((runset / "failures.json").read_text())
    assert [(f["backbone"], f["notebook"], f["ename"]) for f in failures] == [(bad, failing, "RuntimeError")]
    assert failures[0]["evalue"].startswith("boom") and len(failures[0]["evalue"]) == S.EVALUE_CHARS
    # (was: the failed attempt replaced the backbone's previous run; now the failed attempt goes to
    # <backbone>.failed/ and the previous, successful run stays, in the aggregate too)
    info = json.loads((runset / f"{bad}.failed" / "run.json").read_text())
    assert info["status"] == "failed" and info["failure"]["notebook"] == failing
    assert failures[0]["output"] == f"runs/papermill_runs/synthetic/{bad}.failed/{failing}.ipynb"
    assert (runset / f"{bad}.failed" / f"{failing}.ipynb").exists()
    assert not (runset / f"{bad}.failed" / "results.csv").exists()
    pd.testing.assert_frame_equal(pd.read_csv(runset / bad / "results.csv"), stale)
    assert json.loads((runset / bad / "run.json").read_text())["status"] == "ok"
    table = pd.read_csv(runset / "results.csv")
    assert set(table.backbone) == set(BACKBONES)
    out = capsys.readouterr().out
    assert "failed" in out and "total wall time" in out and f"{bad}.failed/; previous results kept" in out
    # the previous run is still current: nothing runs again, and the failure record is gone
    code, ex = run(repo, ["--backbones", BB_ARG])
    assert code == 0 and ex.executed() == []
    assert not (runset / "failures.json").exists()


def test_interrupted_rerun_restores_the_previous_run(repo):
    # (was: an interrupted rerun left no results at all; now the previous run is put back)
    run(repo, ["--backbones", "pca"])
    run_dir = repo / "runs/papermill_runs/synthetic/pca"
    before = {n: (run_dir / n).read_bytes() for n in ("results.csv", "run.json")}

    def interrupt(input_path, output_path, **kw):
        Path(output_path).write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # not swallowed as a notebook failure
        S.main(["--backbones", "pca", "--seeds", "0,1", "--force"], execute=interrupt, root=repo)
    assert {n: (run_dir / n).read_bytes() for n in before} == before
    assert (repo / "runs/papermill_runs/synthetic/pca.failed/01_data.ipynb").read_text() == "partial"
    assert run(repo, ["--backbones", "pca"])[1].executed() == []


def test_all_failed_skips_figures_and_exits_1(repo):
    code, ex = run(repo, ["--backbones", "pca"], fail={"pca": "01_data"})
    assert code == 1 and ex.executed() == [("01_data", "pca")]
    assert json.loads((repo / "runs/papermill_runs/synthetic/failures.json").read_text())[0]["notebook"] == "01_data"


def test_figures_failure_exits_1(repo):
    ex = FakeExecute(repo, fail={None: "05_figures"})
    code = S.main(["--backbones", "pca"], execute=ex, root=repo)
    assert code == 1
    failures = json.loads((repo / "runs/papermill_runs/synthetic/failures.json").read_text())
    assert [(f["backbone"], f["notebook"]) for f in failures] == [(None, "05_figures")]
    # the backbone itself stays up to date; 05 is retried
    ex = FakeExecute(repo)
    assert S.main(["--backbones", "pca"], execute=ex, root=repo) == 0 and ex.executed() == [("05_figures", None)]


def test_figures_only_uses_existing_successful_runs(repo):
    run(repo, ["--backbones", BB_ARG], fail={BACKBONES[2]: "03_train"})
    code, ex = run(repo, ["--backbones", BB_ARG, "--figures-only", "--force"])
    assert code == 0 and ex.executed() == [("05_figures", None)]
    table = pd.read_csv(repo / "runs/papermill_runs/synthetic/results.csv")
    assert set(table.backbone) == set(BACKBONES[:2])


def test_figures_only_describes_the_run_set_as_it_was_computed(repo, capsys):
    """--figures-only on a named run set takes its dataset and split from its runs, not from this call's
    defaults: 05 is told the run set's own split, and run.json keeps its parameters."""
    assert run(repo, ["--backbones", "pca", "--runset", "other", "--split", "by_group", "--no-beyond"])[0] == 0
    runset = repo / "runs/papermill_runs/other"
    before = json.loads((runset / "run.json").read_text())["parameters"]
    code, ex = run(repo, ["--backbones", "pca", "--runset", "other", "--figures-only", "--force"])
    assert code == 0 and ex.executed() == [("05_figures", None)]
    assert ex.calls[0][3]["dataset"] == "synthetic-by_group"
    assert "computed with split='by_group'" in capsys.readouterr().out
    after = json.loads((runset / "run.json").read_text())
    assert after["parameters"] == before and after["figures_status"] == "ok", after


def test_a_second_study_into_a_run_set_being_written_is_refused(repo, capsys):
    """Two studies into one run set (other seeds, say) would both pass the run-set check; the run set's writer
    lock refuses the second at once, naming the first."""
    import subprocess
    import sys

    runset = repo / "runs/papermill_runs/synthetic"
    hold = ("import sys, time\nfrom attrboost.locks import writer_lock\n"
            "with writer_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(runset)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, ex = run(repo, ["--backbones", "pca"])
        assert code == 2 and ex.executed() == []
        assert f"being written by another attrboost process (PID {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert run(repo, ["--backbones", "pca"])[0] == 0  # the lock is free again


def test_beyond_step_options_and_failures(repo, capsys):
    # no efficientnet_lite0 run in the run set: 06 is not run, and that is not a failure
    code, ex = run(repo, ["--backbones", "pca"])
    assert code == 0 and (S.BEYOND_NOTEBOOK, "efficientnet_lite0") not in ex.executed()
    # another backbone can be chosen; --no-beyond skips the step
    code, ex = run(repo, ["--backbones", "pca", "--beyond-backbone", "pca"])
    assert code == 0 and ex.executed() == [(S.BEYOND_NOTEBOOK, "pca")]
    code, ex = run(repo, ["--backbones", "pca", "--beyond-backbone", "pca", "--force", "--no-beyond"])
    assert code == 0 and S.BEYOND_NOTEBOOK not in [n for n, _ in ex.executed()]
    # a failing 06 is recorded and exits 1; the backbones stay up to date and 06 is retried next time
    code, ex = run(repo, ["--backbones", "pca", "--beyond-backbone", "pca", "--force"], fail={"pca": S.BEYOND_NOTEBOOK})
    assert code == 1
    failures = json.loads((repo / "runs/papermill_runs/synthetic/failures.json").read_text())
    assert [(f["backbone"], f["notebook"]) for f in failures] == [("pca", S.BEYOND_NOTEBOOK)]
    # (was: beyond.csv deleted; now the previous one stays, the failed notebook is kept aside)
    assert (repo / "runs/papermill_runs/synthetic" / S.BEYOND_RESULTS).read_text() == "experiment\n"
    assert (repo / "runs/papermill_runs/synthetic/06_beyond.failed.ipynb").exists()
    code, ex = run(repo, ["--backbones", "pca", "--beyond-backbone", "pca"])
    assert code == 0 and ex.executed() == [(S.BEYOND_NOTEBOOK, "pca")]
    with pytest.raises(SystemExit):
        run(repo, ["--beyond-backbone", "nosuchnet"])
    assert "--beyond-backbone: unknown backbone 'nosuchnet'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ aggregate
def test_aggregate_matches_manual_concat(tmp_path):
    runset = tmp_path / "runs" / "synthetic"
    frames = {}
    for i, (b, status) in enumerate([("zeta", "ok"), ("alpha", "ok"), ("mid", "failed"), ("nojson", None)]):
        d = runset / b
        d.mkdir(parents=True)
        df = fake_results(dict(dataset="synthetic", split="random", backbone=b), seeds=[2, 0, 1])
        df.to_csv(d / "results.csv", index=False)
        frames[b] = pd.read_csv(d / "results.csv")
        if status:
            (d / "run.json").write_text(json.dumps({"status": status}))
    (runset / "okbutnoresults").mkdir()
    (runset / "okbutnoresults" / "run.json").write_text(json.dumps({"status": "ok"}))

    keys = ["backbone", "embedding", "seed", "metric"]
    expected = pd.concat([frames["alpha"], frames["zeta"]]).sort_values(keys).reset_index(drop=True)
    got = S.aggregate(runset)
    pd.testing.assert_frame_equal(got, expected)
    assert list(got.columns[:2]) == ["dataset", "split"]
    pd.testing.assert_frame_equal(S.aggregate(runset, ["zeta"]),
                                  frames["zeta"].sort_values(keys).reset_index(drop=True))
    S.write_aggregate(runset, got)
    pd.testing.assert_frame_equal(pd.read_csv(runset / "results.csv"), expected)
    assert S.aggregate(tmp_path / "empty").empty


def test_aggregate_rejects_tables_missing_columns(tmp_path):
    d = tmp_path / "pca"
    d.mkdir()
    pd.DataFrame({"dataset": ["s"], "embedding": ["raw"], "seed": [0], "value": [1.0]}).to_csv(d / "results.csv")
    (d / "run.json").write_text(json.dumps({"status": "ok"}))
    with pytest.raises(ValueError, match="metric"):
        S.aggregate(tmp_path)


# ------------------------------------------------------------------------------ refresh
def test_refresh_notebooks_in_place_in_order_and_restores_on_failure(repo):
    ex = FakeExecute(repo)
    assert S.main(["--refresh-notebooks"], execute=ex, root=repo) == 0
    assert [(n, out, p) for n, _, out, p in ex.calls] == [
        (n, f"notebooks/{n}.ipynb", {}) for n in S.COMMITTED_NOTEBOOKS]
    for n in S.COMMITTED_NOTEBOOKS:  # the fake overwrote them
        (repo / "notebooks" / f"{n}.ipynb").write_text(json.dumps(make_notebook(f"# {n}\n")))
    before = (repo / "notebooks" / "03_train.ipynb").read_bytes()
    ex = FakeExecute(repo, fail={None: "03_train"})
    assert S.main(["--refresh-notebooks"], execute=ex, root=repo) == 1
    assert [n for n, _ in ex.executed()] == ["01_data", "02_embeddings", "03_train"]
    assert (repo / "notebooks" / "03_train.ipynb").read_bytes() == before


# ------------------------------------------------------------------------------ papermill
NB_PARAMS = ("dataset = 'synthetic'\ndata_dir = None\nn_groups = 100\nper_group = 40\nsplit = 'random'\n"
             "seed = 0\nseeds = [0]\nbackbone = 'pca'\nweights = None\ndevice = 'auto'\nbatch_size = 32\n"
             "tasks = ['task1']\nresults_dir = None\nruns_dir = 'papermill_runs'\nfigures_dir = 'figures'\nquick = True\n")
NB_BODY = {
    "02_embeddings": "if backbone == 'efficientnet_lite0':\n    raise ValueError('no weights for ' + backbone)\n",
    "04_evaluate": ("import csv, os\nwith open(os.path.join(results_dir, 'results.csv'), 'w', newline='') as f:\n"
                    "    w = csv.writer(f)\n    w.writerow(['dataset', 'split', 'backbone', 'embedding', 'seed', "
                    "'metric', 'value'])\n    for s in seeds:\n"
                    "        w.writerow([dataset, split, backbone, 'raw', s, 'map@r', n_groups + s])\n"),
    "05_figures": ("import os\nos.makedirs(figures_dir, exist_ok=True)\n"
                   "open(os.path.join(figures_dir, 'cwd.txt'), 'w').write(os.getcwd())\n"),
}


def test_papermill_integration(tmp_path):
    """Really executes 2-cell notebooks (a `parameters`-tagged cell, then code) with papermill."""
    nbformat = pytest.importorskip("nbformat")
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for name in S.NOTEBOOKS:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(NB_PARAMS, metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(NB_BODY.get(name, "x = 1\n"))]
        nbformat.write(nb, repo / "notebooks" / f"{name}.ipynb")

    code = S.main(["--publish", "--backbones", "pca,efficientnet_lite0", "--seeds", "3,5", "--n-groups", "7"],
                  root=repo)
    assert code == 1                                      # efficientnet_lite0 fails in 02 on purpose
    runset = repo / "papermill_runs" / "synthetic"
    failures = json.loads((runset / "failures.json").read_text())
    assert [(f["backbone"], f["notebook"], f["ename"]) for f in failures] == [
        ("efficientnet_lite0", "02_embeddings", "ValueError")]
    assert "no weights for efficientnet_lite0" in failures[0]["evalue"]
    # the failed attempt is kept aside for debugging; nothing waits in *.previous
    assert (runset / "efficientnet_lite0.failed" / "02_embeddings.ipynb").is_file()
    assert not (runset / "efficientnet_lite0").exists() and side_files(repo) == []

    table = pd.read_csv(runset / "results.csv")
    assert table[["backbone", "seed", "value"]].values.tolist() == [["pca", 3, 10], ["pca", 5, 12]]
    out = nbformat.read(runset / "pca" / "04_evaluate.ipynb", as_version=4)
    injected = [c for c in out.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'results_dir = "papermill_runs/synthetic/pca"' in injected[0].source
    assert str(tmp_path) not in json.dumps(out)           # no machine-specific path in the executed notebook
    # the kernel ran in the repository root, and 05 wrote where it was told
    assert Path((repo / "figures" / "synthetic" / "cwd.txt").read_text()).resolve() == repo.resolve()


# ------------------------------------------------------------------------------ never lose a result
RUNSET = "runs/papermill_runs/synthetic"
FIGS = "runs/figures/synthetic"


def snapshot(root: Path, *dirs: str) -> dict[str, bytes]:
    """Every file under ``dirs`` (relative to root) except failed attempts kept for debugging."""
    files = {}
    for d in dirs:
        for p in sorted((root / d).rglob("*")):
            if p.is_file() and ".failed" not in p.relative_to(root).as_posix():
                files[p.relative_to(root).as_posix()] = p.read_bytes()
    return files


def side_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if ".previous" in p.name or ".replaced" in p.name)


def test_failing_seeds_keep_previous_results(repo, capsys):
    """(a) `--seeds -1` once deleted every results.csv before failing; now nothing is lost."""
    run(repo, ["--backbones", BB_ARG])
    before = snapshot(repo, "runs")
    assert sum(n.endswith("/results.csv") for n in before) == len(BACKBONES) + 1
    everyone_fails = {b: "02_embeddings" for b in BACKBONES}
    code, ex = run(repo, ["--backbones", BB_ARG, "--seeds", "5"], fail=everyone_fails)
    assert code == 2 and ex.calls == []                       # other run-set parameters: refused
    assert snapshot(repo, "runs") == before
    code, ex = run(repo, ["--backbones", BB_ARG, "--seeds", "5", "--force"], fail=everyone_fails)
    assert code == 1 and len(ex.calls) == len(BACKBONES) * 2  # it did run, and every backbone failed
    assert snapshot(repo, "runs") == before and side_files(repo) == []
    assert (repo / "runs/papermill_runs/synthetic.failed/pca.failed/02_embeddings.ipynb").exists()
    out = capsys.readouterr().out
    assert "the old run set is back in place" in out and "synthetic.failed" in out


@pytest.mark.parametrize("argv, change", [
    (["--backbones", "pca", "--n-groups", "12"], "n_groups: 100 -> 12"),
    (["--backbones", BB_ARG, "--seeds", "0"], "seeds: [0, 1] -> [0]"),
    (["--backbones", BB_ARG, "--tasks", "task1"], "tasks: ['task1', 'task2', 'task3'] -> ['task1']"),
])
def test_other_runset_parameters_refused_then_forced(repo, capsys, argv, change):
    """(b) a call with other run-set parameters refuses before any work; --force replaces the run set."""
    run(repo, ["--backbones", BB_ARG])
    before = snapshot(repo, "runs")
    capsys.readouterr()
    code, ex = run(repo, argv)
    assert code == 2 and ex.calls == []
    assert snapshot(repo, "runs") == before
    err = capsys.readouterr().err
    assert f"run set 'synthetic' ({RUNSET})" in err and change in err
    assert "--force" in err and "--runset NAME" in err and "Nothing was run" in err
    code, ex = run(repo, argv + ["--force"])
    assert code == 0 and side_files(repo) == []
    new = S.parse_args(["--seeds", "0,1"] + argv, root=repo)
    table = pd.read_csv(repo / RUNSET / "results.csv")
    assert sorted(table.backbone.unique()) == sorted(new.backbones)
    assert sorted(table.seed.unique()) == new.seeds
    assert sorted(p.name for p in (repo / RUNSET).iterdir() if p.is_dir()) == sorted(new.backbones)
    for b in new.backbones:
        info = json.loads((repo / RUNSET / b / "run.json").read_text())
        assert S.runset_parameters(info) == new.runset_parameters()
    assert json.loads((repo / RUNSET / "run.json").read_text())["parameters"] == new.runset_parameters()


def test_failing_forced_replacement_keeps_the_old_run_set(repo, capsys):
    """(c) --force with other parameters swaps the new run set in only when every step succeeded."""
    run(repo, ["--backbones", BB_ARG])
    before = snapshot(repo, "runs")
    for fail in ({BACKBONES[1]: "03_train"}, {None: "05_figures"}, {"efficientnet_lite0": S.BEYOND_NOTEBOOK}):
        code, ex = run(repo, ["--backbones", BB_ARG, "--n-groups", "12", "--force"], fail=fail)
        assert code == 1 and ex.calls
        assert snapshot(repo, "runs") == before and side_files(repo) == []
        assert (repo / "runs/papermill_runs/synthetic.failed").is_dir()
    # the new attempt is kept for debugging, with its own failure record
    failures = json.loads((repo / "runs/papermill_runs/synthetic.failed/failures.json").read_text())
    assert [f["notebook"] for f in failures] == [S.BEYOND_NOTEBOOK]
    assert "details in runs/papermill_runs/synthetic.failed/failures.json" in capsys.readouterr().out


def test_default_output_is_not_the_tracked_tree(repo):
    """(d) ad-hoc runs (the README's quick version too) go to runs/; only --publish writes the tracked dirs."""
    args = S.parse_args([], root=repo)
    assert (args.out, args.figures_dir) == ("runs/papermill_runs", "runs/figures")
    args = S.parse_args(["--publish"], root=repo)
    assert (args.out, args.figures_dir) == ("papermill_runs", "figures")
    code, _ = run(repo, ["--publish", "--backbones", BB_ARG])
    assert code == 0
    committed = snapshot(repo, "papermill_runs", "figures")
    assert any(n.startswith("papermill_runs/synthetic/") for n in committed)
    assert "figures/synthetic/05_figures.md" in committed
    code, ex = run(repo, ["--backbones", "pca,efficientnet_lite0", "--tasks", "task1"])
    assert code == 0 and ex.calls and all(out.startswith("runs/") for _, _, out, _ in ex.calls)
    assert snapshot(repo, "papermill_runs", "figures") == committed
    assert (repo / RUNSET / "results.csv").exists() and (repo / FIGS).is_dir()
    ignored = (Path(S.__file__).resolve().parents[3] / ".gitignore").read_text().split()
    assert "/runs/" in ignored and "*.failed" in ignored and "*.previous" in ignored
    with pytest.raises(SystemExit):
        S.parse_args(["--publish", "--out", "x"], root=repo)


class Unwritten(FakeExecute):
    """04 and 06 'succeed' but leave no results file (results.csv, beyond.csv)."""

    def __call__(self, input_path, output_path, parameters=None, **kw):
        super().__call__(input_path, output_path, parameters=parameters, **kw)
        name = {"04_evaluate": "results.csv", S.BEYOND_NOTEBOOK: S.BEYOND_RESULTS}.get(Path(input_path).stem)
        if name:
            (Path(parameters["results_dir"]) / name).unlink()


def test_beyond_and_figures_survive_a_failed_rerun(repo):
    """(e) 06 once deleted beyond.csv before re-running; 05 and 06 now keep their outputs until they succeed."""
    argv = ["--seeds", "0,1", "--backbones", "pca", "--beyond-backbone", "pca"]
    assert S.main(argv, execute=FakeExecute(repo), root=repo) == 0
    (repo / RUNSET / S.BEYOND_RESULTS).write_text("experiment,value\ncommitted,1\n")
    (repo / FIGS / "beyond_baselines.png").write_bytes(b"png")
    status = (f"{RUNSET}/run.json", f"{RUNSET}/failures.json")   # the run set's status records the failure

    def unchanged(before):
        after = snapshot(repo, "runs")
        return ({k: v for k, v in after.items() if k not in status} == {k: v for k, v in before.items()
                                                                        if k not in status}
                and side_files(repo) == [])

    # a change to 06's code re-runs only 06, which fails / writes no beyond.csv: everything stays
    for i, ex in enumerate([FakeExecute(repo, fail={"pca": S.BEYOND_NOTEBOOK}), Unwritten(repo)]):
        (repo / "notebooks/06_beyond.ipynb").write_text(json.dumps(make_notebook(f"# 06 v{i}\n")))
        before = snapshot(repo, "runs")
        assert S.main(argv, execute=ex, root=repo) == 1 and ex.executed() == [(S.BEYOND_NOTEBOOK, "pca")]
        assert unchanged(before)
        assert (repo / RUNSET / S.BEYOND_RESULTS).read_text() == "experiment,value\ncommitted,1\n"
        assert (repo / RUNSET / "06_beyond.failed.ipynb").exists() and (repo / "runs/figures/synthetic.failed").is_dir()
        failures = json.loads((repo / RUNSET / "failures.json").read_text())
        assert [(f["notebook"], f["ename"]) for f in failures] == [(S.BEYOND_NOTEBOOK, "RuntimeError")]
    # a failing 05 keeps the previous figures (06's included) and the previous 05 notebook
    (repo / "notebooks/05_figures.ipynb").write_text(json.dumps(make_notebook("# 05 v2\n")))
    before = snapshot(repo, "runs")
    ex = FakeExecute(repo, fail={None: "05_figures"})
    assert S.main(argv + ["--no-beyond"], execute=ex, root=repo) == 1 and ex.executed() == [("05_figures", None)]
    assert unchanged(before) and (repo / FIGS / "beyond_baselines.png").read_bytes() == b"png"
    assert (repo / RUNSET / "05_figures.failed.ipynb").exists()
    assert json.loads((repo / RUNSET / "run.json").read_text())["figures_status"] == "failed"
    # and a successful 05 rerun keeps 06's figures, which 05 does not write
    assert S.main(argv + ["--no-beyond"], execute=FakeExecute(repo), root=repo) == 0
    assert (repo / FIGS / "beyond_baselines.png").read_bytes() == b"png"


def test_subset_of_backbones_keeps_the_others_in_the_aggregate(repo):
    """(f) a call with fewer backbones and the same run-set parameters once shrank the aggregate to them."""
    run(repo, ["--backbones", BB_ARG])
    full = pd.read_csv(repo / RUNSET / "results.csv")
    for argv in (["--backbones", "pca", "--force"], ["--backbones", "pca"], ["--backbones", BACKBONES[2], "--force"]):
        code, ex = run(repo, argv)
        assert code == 0
        pd.testing.assert_frame_equal(pd.read_csv(repo / RUNSET / "results.csv"), full)
    assert set(json.loads((repo / RUNSET / "run.json").read_text())["backbones"]) == set(BACKBONES)


def test_killed_run_is_recovered_on_the_next_call(repo, capsys):
    run(repo, ["--backbones", "pca"])
    run_dir = repo / RUNSET / "pca"
    before = snapshot(repo, "runs")
    os.replace(run_dir, repo / RUNSET / "pca.previous")      # what a SIGKILL during pca's rerun leaves
    run_dir.mkdir()
    (run_dir / "01_data.ipynb").write_text("partial")
    code, ex = run(repo, ["--backbones", "pca"])
    assert code == 0 and ex.calls == [] and snapshot(repo, "runs") == before
    assert (repo / RUNSET / "pca.failed/01_data.ipynb").read_text() == "partial"
    assert f"restored {RUNSET}/pca from {RUNSET}/pca.previous" in capsys.readouterr().out


def test_custom_runset_name(repo, capsys):
    run(repo, ["--backbones", "pca"])
    code, ex = run(repo, ["--backbones", "pca", "--n-groups", "12", "--runset", "small"])
    assert code == 0 and all(out.startswith("runs/papermill_runs/small/") for _, _, out, _ in ex.calls[:4])
    fig = [p for n, _, _, p in ex.calls if n == "05_figures"][0]
    assert fig == dict(dataset="synthetic", runs_dir="runs/papermill_runs/small", figures_dir="runs/figures/small",
                       data_dir=None)
    assert set(pd.read_csv(repo / RUNSET / "results.csv").backbone) == {"pca"}
    for bad in ("a/b", "x.failed", ""):
        with pytest.raises(SystemExit):
            S.parse_args(["--runset", bad], root=repo)
        assert "--runset" in capsys.readouterr().err


# ------------------------------------------------------------------------------ what a newcomer sees
def test_summary_prints_headline_numbers_and_where_things_are(repo, capsys):
    from scipy import stats as st

    code, _ = run(repo, ["--backbones", BB_ARG])
    assert code == 0
    out = capsys.readouterr().out
    table = pd.read_csv(repo / RUNSET / "results.csv")
    for metric in ("paper_map@10", "map@r"):
        assert f"{metric} (test part; mean ± 95% CI half-width over 2 seed(s) [0, 1]):" in out
    # one cell against an independent computation
    v = table[(table.backbone == "pca") & (table.embedding == "task1") & (table.metric == "map@r")]["value"].to_numpy()
    half = st.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    assert f"{v.mean():.2f} ± {half:.2f}" in out
    assert f"run set synthetic: {RUNSET}/results.csv ({len(table)} rows)" in out
    assert f"figures and tables: {FIGS}/" in out


def test_headline_table():
    df = pd.DataFrame([dict(backbone=b, embedding=e, seed=s, metric=m, value=v)
                       for b, base in (("efficientnet_lite0", 10.0), ("pca", 0.0))
                       for e, add in (("task1", 5.0), ("raw", 0.0))
                       for m in ("paper_map@10", "map@r", "recall@10")
                       for s, v in zip((0, 1, 2), (base + add + 1, base + add + 2, base + add + 3))])
    text = S.headline(df)
    half = 4.302652729911275 / np.sqrt(3)                  # t(0.975, 2) * sd 1 / sqrt(3)
    lines = text.splitlines()
    assert lines[0].startswith("paper_map@10") and "recall@10" not in text
    assert lines[1].split() == ["backbone", "raw", "task1"]
    assert lines[2].split()[0] == "pca" and lines[3].split()[0] == "efficientnet_lite0"   # study order
    assert f"2.00 ± {half:.2f}" in lines[2] and f"17.00 ± {half:.2f}" in lines[3]
    assert S.headline(df.iloc[:0]) == ""
    one_seed = df[df.seed == 0]
    assert "11.00 ±" not in S.headline(one_seed) and "11.00" in S.headline(one_seed)


def test_computed_elsewhere_hint(repo, capsys, cache, monkeypatch, tmp_path):
    run(repo, ["--backbones", BB_ARG])
    capsys.readouterr()
    assert run(repo, ["--backbones", BB_ARG])[1].calls == []
    assert "computed elsewhere" not in capsys.readouterr().out     # same cache: computed here
    monkeypatch.setenv("ATTRBOOST_CACHE", str(tmp_path / "fresh-clone-cache"))
    assert run(repo, ["--backbones", BB_ARG])[1].calls == []
    lines = [l for l in capsys.readouterr().out.splitlines() if "computed elsewhere" in l]
    assert len(lines) == 1 and all(b in lines[0] for b in BACKBONES)
    assert "make reproduce" in lines[0] and "STUDY_ARGS=--force" in lines[0] and "docs/performance.md" in lines[0]
    # a run.json from before cache ids: computed here unless the cache is empty
    assert S.computed_here({}) is False
    (tmp_path / "fresh-clone-cache" / "features").mkdir()
    assert S.computed_here({}) is True


def test_reproduce_reexecutes_the_committed_run_set_elsewhere(repo, capsys):
    code, _ = run(repo, ["--publish", "--backbones", BB_ARG, "--n-groups", "30"])
    assert code == 0
    committed = snapshot(repo, "papermill_runs", "figures")
    capsys.readouterr()
    ex = FakeExecute(repo)
    code = S.main(["--reproduce"], execute=ex, root=repo)
    assert code == 0 and snapshot(repo, "papermill_runs", "figures") == committed
    assert {out.split("/")[0] for _, _, out, _ in ex.calls} == {"runs"}
    assert all(p["n_groups"] == 30 and p.get("seeds", [0, 1]) == [0, 1] for n, _, _, p in ex.calls if n != "05_figures")
    assert ex.executed()[-1] == BEYOND[0]
    rows = len(pd.read_csv(repo / "papermill_runs/synthetic/results.csv"))
    out = capsys.readouterr().out
    assert (f"results.csv: {rows} committed rows: {rows} identical, 0 within the committed 95% CI, 0 differing, "
            f"0 missing, 0 new (largest difference 0.00): reproduced exactly") in out
    with pytest.raises(SystemExit):
        S.parse_args(["--reproduce", "--out", "x"], root=repo)


def test_compare_results_counts_each_category():
    committed = pd.DataFrame({"backbone": ["a"] * 3 + ["z"] * 3 + ["b"], "metric": ["m"] * 7,
                              "seed": [0, 1, 2, 0, 1, 2, 0], "value": [10.0, 12.0, 14.0, 1.0, 1.0, 1.0, 5.0]})
    # (a, m): 10, 12, 14: mean 12, sd 2, CI half-width t(.975, 2) * 2 / sqrt(3) = 4.97; (z, m): zero width
    half = 4.302652729911275 * 2 / np.sqrt(3)
    new = pd.DataFrame({"backbone": ["a"] * 3 + ["z"] * 3 + ["c"], "metric": ["m"] * 7,
                        "seed": [0, 1, 2, 0, 1, 2, 0],
                        "value": [10.0,             # identical
                                  12.0 + 4.9,       # within the committed CI (4.97)
                                  14.0 - 5.1,       # outside it
                                  1.0, 1.0 + 1e-9,  # identical; differing (zero-width CI)
                                  1.0, 3.0]})       # identical; (c, m, 0) is new, (b, m, 0) missing
    assert 4.9 < half < 5.1
    c = S.compare_results(committed, new.sample(frac=1, random_state=0))
    assert c == {"rows": 7, "identical": 3, "within_ci": 1, "differing": 2, "missing": 1, "new": 1,
                 "max_abs_diff": pytest.approx(5.1)}
    assert "NOT reproduced" in S.format_comparison("results.csv", c)
    same = S.compare_results(committed, committed.iloc[::-1])
    assert same["identical"] == 7 and "reproduced exactly" in S.format_comparison("x", same)
    close = S.compare_results(committed, committed.assign(value=committed.value + np.r_[0.1, 0, 0, 0, 0, 0, 0]))
    assert (close["within_ci"], close["identical"]) == (1, 6)
    assert "reproduced within the committed CI" in S.format_comparison("x", close)
    # NaN keys (beyond.csv's n_train) match each other
    nan = committed.assign(n_train=float("nan"))
    assert S.compare_results(nan, nan)["identical"] == 7
    with pytest.raises(ValueError, match="columns differ"):
        S.compare_results(committed, committed.drop(columns="metric"))
    with pytest.raises(ValueError, match="duplicate"):
        S.compare_results(committed, pd.concat([committed, committed.iloc[:1]]))


# ------------------------------------------------------------------------------ one step runner
def test_config_is_one_frozen_dataclass(repo):
    """parse_args returns a frozen StudyConfig (was: a mutable argparse.Namespace, changed on the way)."""
    cfg = S.parse_args(["--backbones", "pca,pca,efficientnet_lite0", "--seeds", "2,1", "--runset", "small",
                        "--data-dir", str(repo / "data")], root=repo)
    assert dataclasses.is_dataclass(cfg) and cfg.root == repo.resolve()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_groups = 12
    assert cfg.backbones == ["pca", "efficientnet_lite0"] and cfg.seeds == [2, 1]
    assert (cfg.runset_dir, cfg.runset_figures) == ("runs/papermill_runs/small", "runs/figures/small")
    assert cfg.runset_parameters() == dict(dataset="synthetic", data_dir="data", split="random", n_groups=100,
                                           per_group=40, seeds=[2, 1], tasks=list(TASKS))


class WritesThenFails(FakeExecute):
    """06 writes beyond.csv before a later cell fails (as the fake 04 writes results.csv)."""

    def __call__(self, input_path, output_path, parameters=None, **kw):
        if Path(input_path).stem == S.BEYOND_NOTEBOOK:
            (Path(parameters["results_dir"]) / S.BEYOND_RESULTS).write_text("partial\n")
        super().__call__(input_path, output_path, parameters=parameters, **kw)


def test_results_files_are_checked_and_dropped_alike_for_every_job(repo):
    """One step runner: a backbone (results.csv) and 06 (beyond.csv) fail alike when their notebook leaves
    no results file (was: MissingResults for a backbone, RuntimeError for 06), and a failed attempt never
    keeps a results file (was: a failed 06's beyond.csv stayed as beyond.failed.csv)."""
    argv = ["--seeds", "0,1", "--backbones", "pca", "--beyond-backbone", "pca", "--force"]
    assert S.main(argv, execute=FakeExecute(repo), root=repo) == 0
    before = snapshot(repo, "runs")
    assert S.main(argv, execute=Unwritten(repo), root=repo) == 1
    failures = json.loads((repo / RUNSET / "failures.json").read_text())
    assert [(f["backbone"], f["notebook"], f["ename"], f["evalue"]) for f in failures] == [
        ("pca", "04_evaluate", "RuntimeError", f"{RUNSET}/pca/results.csv was not written"),
        ("pca", S.BEYOND_NOTEBOOK, "RuntimeError", f"{RUNSET}/{S.BEYOND_RESULTS} was not written")]
    assert [f["output"] for f in failures] == [f"{RUNSET}/pca.failed/04_evaluate.ipynb",
                                               f"{RUNSET}/06_beyond.failed.ipynb"]
    ex = WritesThenFails(repo, fail={"pca": S.BEYOND_NOTEBOOK})
    assert S.main(argv, execute=ex, root=repo) == 1
    assert (repo / RUNSET / S.BEYOND_RESULTS).read_text() == before[f"{RUNSET}/{S.BEYOND_RESULTS}"].decode()
    assert not (repo / RUNSET / "beyond.failed.csv").exists() and (repo / RUNSET / "06_beyond.failed.ipynb").exists()
    assert not (repo / RUNSET / "pca.failed" / "results.csv").exists()


def test_run_json_layout_is_unchanged(repo):
    """The records keep their keys and order (the committed run.json files are diffed on every publish)."""
    run(repo, ["--backbones", "pca", "--beyond-backbone", "pca"])
    assert list(json.loads((repo / RUNSET / "pca" / "run.json").read_text())) == [
        "backbone", "runset", "status", "fingerprint", "parameters", "inputs", "attrboost_version", "lib_sha256",
        "cache_id", "wall_s", "total_wall_s", "finished", "failure"]
    assert list(json.loads((repo / RUNSET / "run.json").read_text())) == [
        "runset", "parameters", "backbones", "figures_status", "figures_fingerprint", "figures_parameters",
        "figures_wall_s", "finished", "beyond_status", "beyond_fingerprint", "beyond_parameters", "beyond_wall_s"]


def test_notebooks_run_alone_do_not_write_the_committed_figures():
    """05 and 06 run without the runner (papermill, JupyterLab, nbval) write their figures under runs/
    (git-ignored), never into the tracked figures/ folder."""
    import nbformat

    root = Path(S.__file__).resolve().parents[3]
    for name in ("05_figures", "06_beyond"):
        source = "\n".join(c.source for c in nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4).cells
                           if c.cell_type == "code")
        defaults = [line for line in source.splitlines() if line.startswith("figs = Path(figures_dir) if figures_dir")]
        assert defaults, name
        assert all('root / "runs" / "figures"' in line for line in defaults), (name, defaults)


def test_swap_refusal_moves_nothing(tmp_path):
    """A step whose second output still has a leftover .previous is refused before the first is moved."""
    a, b = tmp_path / "a.csv", tmp_path / "b"
    a.write_text("old a")
    b.mkdir()
    S.side_path(b, S.PREVIOUS).mkdir()  # left by an interrupted run
    with pytest.raises(FileExistsError):
        with S.Swap([a, b]):
            pass
    assert a.read_text() == "old a" and not S.side_path(a, S.PREVIOUS).exists()


class SideBySide(FakeExecute):
    """FakeExecute that holds each backbone notebook a moment and records how many ran at once and the
    thread variables the kernels would inherit."""

    def __init__(self, root, fail=None):
        super().__init__(root, fail)
        import threading

        self.lock, self.running, self.most, self.env, self.beyond_env = threading.Lock(), 0, 0, set(), "not run"

    def __call__(self, input_path, output_path, parameters=None, **kw):
        import time

        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.env.add(os.environ.get("OMP_NUM_THREADS"))
            if Path(input_path).stem == S.BEYOND_NOTEBOOK:
                self.beyond_env = os.environ.get("OMP_NUM_THREADS")
        try:
            if Path(input_path).stem in S.BACKBONE_NOTEBOOKS:
                time.sleep(0.1)
            return super().__call__(input_path, output_path, parameters, **kw)
        finally:
            with self.lock:
                self.running -= 1


def test_backbones_side_by_side_give_the_same_run_set(tmp_path, monkeypatch, capsys):
    """--jobs 2: two backbones' notebooks at a time, each backbone's in order, 06 ahead of the queue once its
    backbone is done, 05 alone after all of them, one thread per kernel on 2 CPUs; the run set (results,
    failures, summary) is the one --jobs 1 gives."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    fail = {"efficientnet_lite1": "03_train"}
    out, out_text = {}, {}
    for jobs in (1, 2):
        repo = make_repo(tmp_path / f"repo{jobs}")
        ex = SideBySide(repo, fail)
        code = S.main(["--seeds", "0,1", "--backbones", BB_ARG, "--jobs", str(jobs)], execute=ex, root=repo)
        out_text[jobs] = capsys.readouterr().out
        failures = json.loads((repo / "runs/papermill_runs/synthetic" / S.FAILURES_JSON).read_text())
        out[jobs] = (code, ex, (repo / "runs/papermill_runs/synthetic/results.csv").read_text(),
                     [{k: v for k, v in f.items() if k != "output"} for f in failures])
    (code1, ex1, res1, fail1), (code2, ex2, res2, fail2) = out[1], out[2]
    assert code1 == code2 == 1 and res1 == res2 and fail1 == fail2 and fail2[0]["backbone"] == "efficientnet_lite1"
    assert ex1.most == 1 and ex2.most == 2
    assert ex1.env == {None} and ex2.env == {"1", None}  # 05 runs alone, with the user's settings
    assert os.environ.get("OMP_NUM_THREADS") is None
    calls = ex2.executed()
    for bb in BACKBONES:
        mine = [n for n, b in calls if b == bb and n in S.BACKBONE_NOTEBOOKS]
        want = list(S.BACKBONE_NOTEBOOKS) if bb != "efficientnet_lite1" else list(S.BACKBONE_NOTEBOOKS)[:3]
        assert mine == want
    # 06 starts after its backbone's 04, before the last backbone notebook: beside the others, not after them
    beyond_at, lite0_done = calls.index(BEYOND[0]), calls.index(("04_evaluate", "efficientnet_lite0"))
    last_backbone = max(i for i, (n, _) in enumerate(calls) if n in S.BACKBONE_NOTEBOOKS)
    assert lite0_done < beyond_at < last_backbone
    assert calls[-1] == ("05_figures", None) and ex2.beyond_env == "1"
    assert ex1.executed()[-2:] == [("05_figures", None), *BEYOND]
    assert sorted(calls) == sorted(ex1.executed())
    summary = [line.split()[0] for line in out_text[2].splitlines() if line.split()[:1] in ([S.FIGURES_NOTEBOOK],
                                                                                           [S.BEYOND_NOTEBOOK])]
    assert summary == [S.FIGURES_NOTEBOOK, S.BEYOND_NOTEBOOK] == [
        line.split()[0] for line in out_text[1].splitlines()
        if line.split()[:1] in ([S.FIGURES_NOTEBOOK], [S.BEYOND_NOTEBOOK])]


def test_conclusions_that_do_not_hold_unenforced_are_named_in_the_summary(repo, capsys):
    """On data where the fixed conclusions are findings (report.claims_enforced), a notebook that printed a NO
    still succeeds, and the run's summary names each such claim."""
    class Printing(FakeExecute):
        def __call__(self, input_path, output_path, **kw):
            super().__call__(input_path, output_path, **kw)
            if Path(input_path).stem == "04_evaluate":
                stream = {"output_type": "stream", "name": "stdout",
                          "text": ["yes  every head beats raw\n", "NO   Task 1 has the highest mean\n"]}
                Path(output_path).write_text(json.dumps(make_notebook("x = 1\n", [stream])))

    ex = Printing(repo)
    code = S.main(["--seeds", "0,1", "--backbones", "pca", "--beyond-backbone", "pca"], execute=ex, root=repo)
    out = capsys.readouterr().out
    assert code == 0
    assert "pca: 1 checked conclusion(s) do not hold on this data (findings, not enforced): " \
           "04_evaluate: Task 1 has the highest mean" in out
    assert "1 finding(s)" in out and "every head beats raw" not in out
    assert S.findings([repo / "nowhere.ipynb"]) == []

"""Notebook 06's experiments in the library: baselines over seeds, label budget, ablation, paired deltas,
the written table. Tiny data (helpers.toy_sample), a few seconds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from attrboost.study import beyond as B
from attrboost.study import pipeline as P
from attrboost.data import subsample_train, without_attribute
from attrboost.metrics import METRICS, evaluate
from helpers import toy_sample


pytestmark = pytest.mark.usefixtures("cache")  # a private, empty cache (conftest)


@pytest.fixture
def toy(monkeypatch):
    """Two seeds of the toy sample served by get_sample/get_features, as the notebook's cfg would be."""
    data = {seed: toy_sample(seed) for seed in (0, 1)}
    monkeypatch.setattr(P, "get_sample", lambda cfg, seed: data[seed][0])
    monkeypatch.setattr(P, "get_features", lambda sample, backbone, **kw: data[int(sample.fingerprint[-1])][1])
    return data


HEAD = dict(max_epochs=2, batch_size=32)


def scores_of(emb, sample, part):
    return evaluate(emb, sample.labels(part), sample.tags(part), sample.names(part))


def test_run_baselines_scores_raw_task1_and_each_baseline_on_val_and_test(toy):
    base = B.run_baselines(P.DataConfig(), "toy", [0, 1], ["lda", "pca_whiten"], progress=False, **HEAD)
    res = base.scores
    assert list(res.columns) == ["experiment", "method", "n_train", "seed", "part", "metric", "value"]
    assert set(res["method"]) == {"raw", "task1", "lda", "pca_whiten"} and set(res["part"]) == {"val", "test"}
    scores = res[res["metric"].isin(METRICS)]
    assert len(scores) == 2 * 4 * 2 * len(METRICS)  # seeds, methods, parts
    # each method's embedding width, and the epoch selection kept for the trained ones (Task 1 here)
    width = res[res["metric"] == "embedding_width"].set_index(["method", "seed"])["value"]
    assert width[("raw", 0)] == toy[0][1].shape[1] and width[("task1", 1)] == toy[1][1].shape[1]
    assert width[("pca_whiten", 0)] == B.get_baseline(toy[0][0], toy[0][1], "toy", "pca_whiten", 0).emb["test"].shape[1]
    epochs = res[res["metric"] == "selected_epoch"]
    assert set(epochs["method"]) == {"task1"}
    assert epochs[epochs["seed"] == 0]["value"].iloc[0] == P.get_boosted(toy[0][0], toy[0][1], "toy", "task1", 0, **HEAD).best_epoch
    assert set(res["metric"]) == set(METRICS) | {"embedding_width", "selected_epoch"}
    res = scores
    for seed, (sample, X) in toy.items():
        raw = res[(res["method"] == "raw") & (res["seed"] == seed) & (res["part"] == "test")]
        assert dict(zip(raw["metric"], raw["value"])) == scores_of(X[sample.mask("test")], sample, "test")
        lda = B.get_baseline(sample, X, "toy", "lda", seed).emb["val"]
        got = res[(res["method"] == "lda") & (res["seed"] == seed) & (res["part"] == "val")]
        assert dict(zip(got["metric"], got["value"])) == scores_of(lda, sample, "val")
    assert base.samples[1] is toy[1][0] and base.features[0] is toy[0][1]
    assert sorted(zip(base.fit_seconds["method"], base.fit_seconds["seed"])) == sorted(
        (m, s) for m in ("task1", "lda", "pca_whiten") for s in (0, 1))


def test_label_budget_and_ablation_score_the_right_heads(toy):
    samples, feats = {s: v[0] for s, v in toy.items()}, {s: v[1] for s, v in toy.items()}
    bud = B.label_budget(samples, feats, "toy", [30, 100], "lda", progress=False, **HEAD)
    assert set(bud["experiment"]) == {"budget"} and set(bud["part"]) == {"test"}
    assert sorted(set(zip(bud["seed"], bud["n_train"]))) == [(0, 30), (0, 100), (1, 30), (1, 100)]
    sub, Xs = subsample_train(samples[1], feats[1], 30, 1)
    want = scores_of(P.get_boosted(sub, Xs, "toy", "task1", 1, **HEAD).emb["test"], sub, "test")
    got = bud[(bud["seed"] == 1) & (bud["n_train"] == 30) & (bud["method"] == "task1")]
    assert dict(zip(got["metric"], got["value"])) == want

    abl = B.ablation(samples, feats, "toy", ["kind"], progress=False, **HEAD)
    assert set(abl["method"]) == {"without kind"} and abl["n_train"].isna().all()
    run = P.get_boosted(without_attribute(samples[0], "kind"), feats[0], "toy", "task1", 0, **HEAD)
    got = abl[abl["seed"] == 0]  # scored against every attribute: the original sample's labels
    assert dict(zip(got["metric"], got["value"])) == scores_of(run.emb["test"], samples[0], "test")
    assert B.ablation(samples, feats, "toy", [], progress=False).empty


def tidy(values: dict) -> pd.DataFrame:
    """{(method, seed, metric): value} -> rows, in a scrambled order."""
    rows = [dict(method=m, seed=s, metric=k, value=v) for (m, s, k), v in values.items()]
    return pd.DataFrame(rows).sample(frac=1, random_state=0)


def t_ci(d):
    d = np.asarray(d, float)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def test_paired_deltas_pair_by_seed():
    ref, other = [10.0, 20.0, 30.0], [11.0, 23.0, 30.5]
    scores = tidy({**{("task1", s, "map@r"): v for s, v in enumerate(ref)},
                   **{("lda", s, "map@r"): v for s, v in enumerate(other)},
                   **{("task1", s, "ndcg@10"): 1.0 for s in range(3)}, **{("lda", s, "ndcg@10"): 1.0 for s in range(3)}})
    d = B.paired_deltas(scores, reference="task1")
    assert list(d.columns) == ["method", "metric", "delta", "ci_low", "ci_high"] and set(d["method"]) == {"lda"}
    row = d.set_index("metric").loc["map@r"]
    np.testing.assert_allclose(row[["delta", "ci_low", "ci_high"]].to_numpy(float), t_ci([1.0, 3.0, 0.5]))
    assert d.set_index("metric").loc["ndcg@10", "delta"] == 0.0
    d = B.paired_deltas(scores, reference="task1", methods=["task1", "lda"], metrics=["map@r"])
    assert d[["method", "metric"]].values.tolist() == [["task1", "map@r"], ["lda", "map@r"]]


def test_ablation_deltas_and_gain_kept():
    test = tidy({**{("raw", s, "map@r"): 10.0 for s in range(3)}, **{("task1", s, "map@r"): 20.0 + s for s in range(3)},
                 **{("raw", s, "p@1"): 5.0 for s in range(3)}, **{("task1", s, "p@1"): 5.0 for s in range(3)}})
    abl = tidy({**{("without kind", s, "map@r"): 15.0 + s for s in range(3)},
                **{("without kind", s, "p@1"): 4.0 for s in range(3)}})
    out = B.ablation_deltas(abl, test).set_index("metric")
    assert list(out.columns) == ["attribute", "delta", "ci_low", "ci_high", "gain_kept"]
    assert (out["attribute"] == "kind").all()
    assert out.loc["map@r", "delta"] == -5.0 and out.loc["map@r", "gain_kept"] == pytest.approx(100 * 6 / 11)
    assert out.loc["p@1", "delta"] == -1.0 and np.isnan(out.loc["p@1", "gain_kept"])  # no gain to keep


def test_labels_needed_is_the_first_budget_reaching_the_share():
    raw = pd.DataFrame({"metric": ["m"] * 2, "value": [10.0, 10.0]})
    bud = pd.DataFrame({"metric": "m", "method": "task1", "n_train": [50, 100, 200, 400],
                        "value": [12.0, 18.0, 19.5, 20.0]})
    assert B.labels_needed(bud, raw, "task1", metric="m") == 200      # 9.5 >= 0.9 * 10
    assert B.labels_needed(bud, raw, "task1", metric="m", share=0.8) == 100
    flat = bud.assign(value=9.0)
    assert B.labels_needed(flat, raw, "task1", metric="m") is None    # no gain over raw to reach


def test_write_results_adds_the_run_and_rounds(tmp_path):
    scores = pd.DataFrame({"experiment": ["budget"], "method": ["task1"], "n_train": [30], "seed": [0],
                           "part": ["test"], "metric": ["map@r"], "value": [1 / 3]})
    keep = B.write_results(scores, tmp_path / "out", dataset="synthetic", split="by_group", backbone="pca")
    back = pd.read_csv(tmp_path / "out" / "beyond.csv")
    assert list(back.columns) == [*scores.columns, "dataset", "split", "backbone"] and len(keep) == 1
    assert back.loc[0, "value"] == 0.333333 and back.loc[0, "split"] == "by_group"


# ----------------------------------------------------------------------------- fits in worker processes, device
def test_06s_fits_in_two_processes_give_the_serial_bits(toy, tmp_path, monkeypatch):
    import attrboost.study.baselines as BL
    import attrboost.heads as H

    samples, feats = {s: v[0] for s, v in toy.items()}, {s: v[1] for s, v in toy.items()}

    def experiments(n_jobs):
        base = B.run_baselines(P.DataConfig(), "toy", [0, 1], ["supcon", "lda"], n_jobs=n_jobs, progress=False, **HEAD)
        bud = B.label_budget(samples, feats, "toy", [30], "supcon", n_jobs=n_jobs, progress=False, **HEAD)
        abl = B.ablation(samples, feats, "toy", ["kind"], n_jobs=n_jobs, progress=False, **HEAD)
        embs = {(m, s): B.get_baseline(samples[s], feats[s], "toy", m, s, **B._rule(m, HEAD)).emb
                for m in ("supcon", "lda") for s in (0, 1)}
        return pd.concat([base.scores, bud, abl]), embs

    serial, serial_emb = experiments(1)
    monkeypatch.setenv("ATTRBOOST_CACHE", str(tmp_path / "cache2"))  # an empty cache: fit everything again
    in_parent = []
    for cls in (H.BoostHead, BL.MetricHead, BL.GroupLDA):
        real = cls.fit
        monkeypatch.setattr(cls, "fit", lambda self, *a, _real=real, **k: in_parent.append(self) or _real(self, *a, **k))
    parallel, parallel_emb = experiments(2)
    assert not in_parent  # every fit ran in a worker process
    pd.testing.assert_frame_equal(parallel, serial)
    for key, emb in serial_emb.items():
        assert all(np.array_equal(emb[p], parallel_emb[key][p]) for p in ("train", "val", "test")), key


def test_device_reaches_every_head_and_baseline_and_a_gpu_fits_in_one_process(toy, monkeypatch):
    """device="cuda" (faked: no GPU needed) reaches the Task 1 heads and the baselines of the three
    experiments; n_jobs "auto" is 1 on a GPU; the device is in the cache keys of the torch fits only."""
    samples, feats = {s: v[0] for s, v in toy.items()}, {s: v[1] for s, v in toy.items()}
    monkeypatch.setattr(P, "device_name", lambda d: "cuda" if d in ("auto", "cuda") else d)
    seen, pools = [], []
    real_run_fits = P.run_fits
    monkeypatch.setattr(P, "run_fits", lambda calls, n, **kw: pools.append(n) or real_run_fits(calls, n, **kw))

    def fake_head(sample, X, backbone, task, seed, **kw):
        seen.append(("task1", kw["device"]))
        return P.HeadRun(task, seed, {p: X[sample.mask(p)] for p in ("train", "val", "test")}, pd.DataFrame(), 1, 0.0)

    def fake_baseline(sample, X, backbone, name, seed, **kw):
        seen.append((name, kw["device"]))
        return B.BaselineRun(name, seed, {p: X[sample.mask(p)] for p in ("train", "val", "test")}, 0.0)

    monkeypatch.setattr(P, "get_boosted", fake_head)
    monkeypatch.setattr(B, "get_baseline", fake_baseline)
    B.run_baselines(P.DataConfig(), "toy", [0, 1], ["supcon", "lda"], device="cuda", progress=False, **HEAD)
    B.label_budget(samples, feats, "toy", [30], "supcon", device="cuda", progress=False, **HEAD)
    B.ablation(samples, feats, "toy", ["kind"], device="cuda", progress=False, **HEAD)
    assert seen and {d for _, d in seen} == {"cuda"} and {m for m, _ in seen} == {"task1", "supcon", "lda"}
    assert pools and set(pools) == {1}  # one process on a GPU

    s, X = toy[0]
    key = {dev: B._baseline_entry(s, X, "toy", name, 0, {}, dev)[1] for dev in ("cpu", "cuda") for name in ("supcon",)}
    assert key["cpu"] != key["cuda"]
    assert B._baseline_entry(s, X, "toy", "lda", 0, {}, "cpu")[1] == B._baseline_entry(s, X, "toy", "lda", 0, {}, "cuda")[1]
    head = {dev: P._head_entry(s, X, "toy", "task1", 0, P.head_params(device=dev))[1] for dev in ("cpu", "cuda")}
    assert head["cpu"] != head["cuda"]


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_metric_head_baselines_train_on_the_gpu(toy):
    s, X = toy[0]
    gpu = B.get_baseline(s, X, "toy", "supcon", 0, device="cuda", max_epochs=3)
    cpu = B.get_baseline(s, X, "toy", "supcon", 0, device="cpu", max_epochs=3)
    from attrboost.study.baselines import MetricHead

    est = MetricHead(device="cuda", max_epochs=2)
    est.fit(X[s.mask("train")], s.part("train")[list(s.attributes)])
    assert next(est.model_.parameters()).device.type == "cuda"
    assert gpu.emb["test"].dtype == np.float32 and gpu.emb["test"].shape == cpu.emb["test"].shape
    assert np.abs(gpu.emb["test"] - cpu.emb["test"]).mean() < 0.05 * np.abs(cpu.emb["test"]).mean()  # close


# ----------------------------------------------------------------------------- selection rules, tag weight
def test_selection_sensitivity_applies_each_rule_and_only_test_selected_looks_at_test(toy):
    from attrboost.heads import BoostHead
    from attrboost.metrics import map_at_r

    samples, feats = {s: v[0] for s, v in toy.items()}, {s: v[1] for s, v in toy.items()}
    head = dict(max_epochs=6, batch_size=32)
    res = B.selection_sensitivity(samples, feats, "toy", methods=("task1", "supcon"), progress=False, n_jobs=1,
                                  **head)
    assert set(res["experiment"]) == {"selection"}
    assert {m.split(" | ")[1] for m in res["method"]} == set(B.SELECTION_RULES)
    sample, X = toy[0]
    tr, va, te = (sample.mask(p) for p in ("train", "val", "test"))
    attrs = list(sample.attributes)
    y_tr = sample.part("train")[attrs]

    def row(method, metric, seed=0):
        r = res[(res["method"] == method) & (res["metric"] == metric) & (res["seed"] == seed)]
        assert len(r) == 1
        return float(r["value"].iloc[0])

    # the default rule is the study's own cached Task 1 head
    run = P.get_boosted(sample, X, "toy", "task1", 0, **head)
    assert row("task1 | val_map@r (default)", "map@r") == pytest.approx(map_at_r(run.emb["test"], sample.labels("test")))
    assert row("task1 | val_map@r (default)", "selected_epoch") == run.best_epoch
    # test-selected = the best *test* MAP@R epoch up to the stop rule: recomputed independently
    ref = BoostHead("task1", **{**P.head_params(**head), "stop_loss": 0.002, "patience": None}, seed=0).fit(
        X[tr], y_tr, X_val=X[te], y_val=sample.part("test")[attrs])
    assert row("task1 | test-selected (optimistic)", "selected_epoch") == ref.best_epoch_
    assert row("task1 | test-selected (optimistic)", "map@r") == pytest.approx(ref.history_["val_map@r"].max())
    assert row("task1 | test-selected (optimistic)", "map@r") >= row("task1 | val_map@r (default)", "map@r") - 1e-9 \
        or ref.n_epochs_ != run.history.shape[0]
    # the stop rule keeps the last epoch; val_loss keeps the lowest validation loss
    old = BoostHead("task1", **{**P.head_params(**head), "selection": "val_loss", "patience": 5}, seed=0).fit(
        X[tr], y_tr, X_val=X[va], y_val=sample.part("val")[attrs])
    assert row("task1 | val_loss, patience 5 (old default)", "selected_epoch") == old.best_epoch_
    assert row("task1 | train to the stop rule (last epoch)", "selected_epoch") == \
        row("task1 | train to the stop rule (last epoch)", "epochs_run")
    assert row("supcon | train to the stop rule (last epoch)", "epochs_run") == head["max_epochs"]



@pytest.mark.parametrize("method", ["task1", "supcon"])
def test_one_run_gives_the_stop_rule_and_test_selected_arms_of_two_separate_fits(toy, method):
    """_stop_run trains once and reads two arms; each must be bit for bit the fit that rule used to make alone."""
    sample, X = toy[0]
    head = dict(max_epochs=7, batch_size=32)
    te = sample.mask("test")
    one = B._stop_run(sample, X, method, 0, "cpu", head)
    for rule, arm in ((B._STOP_RULE, "last"), (B._TEST_SELECTED, "best")):
        est = B._rule_estimator(method, rule, 0, "cpu", head)
        B._fit_on(est, sample, X, "test" if B.SELECTION_RULES[rule][2] else "val")
        np.testing.assert_array_equal(one[f"{arm}_emb_test"], est.transform(X[te]), err_msg=rule)
        assert int(one[f"{arm}_best_epoch"]) == est.best_epoch_ and int(one[f"{arm}_n_epochs"]) == len(est.history_)
    assert int(one["last_best_epoch"]) == 7  # toy data never reaches the stop loss: trained to the cap
    assert not np.array_equal(one["last_emb_test"], one["best_emb_test"]) or int(one["best_best_epoch"]) == 7



def test_the_stop_rule_and_test_selected_arms_train_once(toy, monkeypatch):
    """Both arms read one cached training run: asking for the second after the first trains nothing."""
    sample, X = toy[0]
    runs = []
    real = B._stop_run
    monkeypatch.setattr(B, "_stop_run", lambda *a, **k: runs.append(1) or real(*a, **k))
    head = dict(max_epochs=4, batch_size=32)
    for rule in (B._STOP_RULE, B._TEST_SELECTED):
        B._rule_fit(sample, X, "toy", "task1", rule, 0, "cpu", head)
    assert len(runs) == 1

def test_the_default_rules_sensitivity_arms_are_section_1s_fits(toy):
    """Task 1 and SupCon under the default rule are the cached heads of section 1 (no refit), equal to a fit of
    their own rule."""
    sample, X = toy[0]
    head = dict(max_epochs=5, batch_size=32)
    for method in ("task1", "supcon"):
        got = B._sensitivity_fit(sample, X, "toy", method, B._DEFAULT_RULE, 0, "cpu", head)
        alone = B._rule_fit(sample, X, "toy", method, B._DEFAULT_RULE, 0, "cpu", head)
        np.testing.assert_array_equal(got["emb_test"], alone["emb_test"], err_msg=method)
        assert int(got["best_epoch"]) == int(alone["best_epoch"]) and int(got["n_epochs"]) == int(alone["n_epochs"])


def test_tag_weight_runs_fit_task3_with_each_weight(toy):
    samples, feats = {s: v[0] for s, v in toy.items()}, {s: v[1] for s, v in toy.items()}
    res = B.tag_weight_runs(samples, feats, "toy", progress=False, n_jobs=1, max_epochs=2, gru_hidden=8)
    assert set(res["method"]) == {"task3 | tag_weight=0.5", "task3 | tag_weight=0.125"}
    sample, X = toy[1]
    embs = []
    for w in (0.5, 0.125):
        embs.append(P.get_boosted(sample, X, "toy", "task3", 1, max_epochs=2, gru_hidden=8, tag_weight=w).emb["test"])
        got = res[(res["method"] == f"task3 | tag_weight={w:g}") & (res["seed"] == 1)]
        assert dict(zip(got["metric"], got["value"])) == scores_of(embs[-1], sample, "test")
    assert not np.array_equal(*embs)  # the weight reaches the fit



def test_sweep_config_quick_runs_fewer_fits_and_full_runs_every_one():
    quick = B.sweep_config(True, [3, 1, 2], [250, 500, 2000])
    assert quick.seeds == (3,) and quick.budgets == tuple(B.QUICK["budgets"]) and quick.n_attributes == 2
    full = B.sweep_config(False, [3, 1, 2], [250, 500, 2000])
    assert full.seeds == (3, 1, 2) and full.budgets == (250, 500, 2000) and full.n_attributes is None
    assert B.sweep_config(True, [0], ablation=False).n_attributes == 0
    assert B.sweep_config(False, [0, 1], ablation=False).n_attributes == 0
    per_seed = {1: "a", 2: "b", 3: "c"}
    assert list(quick.subset(per_seed)) == [3] and list(full.subset(per_seed)) == [3, 1, 2]
    assert "quick" in quick.describe() and "every attribute" in full.describe()
    with pytest.raises(ValueError, match="seeds is empty"):
        B.sweep_config(True, [])
    sample, _ = toy_sample(seed=0)
    attrs = list(sample.attributes)
    one = B.Sweep(True, (0,), (250,), 1)
    assert one.attributes(sample) == attrs[:1] and len(attrs) > 1  # a proper subset, the first ones
    assert quick.attributes(sample) == attrs[:B.QUICK["attributes"]]
    assert full.attributes(sample) == attrs
    assert B.sweep_config(False, [0], ablation=False).attributes(sample) == []


def test_the_study_runner_runs_06_in_its_full_configuration():
    """The committed notebook's parameter cell holds the quick configuration (what nbval runs); the run sets
    that feed README and docs/ must be the full one, so the runner passes quick=False explicitly."""
    from pathlib import Path
    from attrboost.study import params
    from attrboost.study import runner as S
    REPO = Path(__file__).resolve().parents[1]
    assert params.PARAMS["quick"].default is True
    step = S.plan(S.parse_args(["--dataset", "synthetic"], root=REPO)).beyond
    assert step.parameters["quick"] is False
    assert "budgets" not in step.parameters and params.PARAMS["budgets"].default == list(B.BUDGETS)

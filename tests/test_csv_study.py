"""The study on a catalogue of your own (``--dataset csv``): parameters and their errors, DataConfig, the
pca width capped by a small training part, 05's retrieval example on the run's own parameters, and one
end-to-end run of the study runner (real notebooks, papermill) on a tiny catalogue whose attributes
are not the fashion ones."""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _shapes import write_shapes
from attrboost.study import params
from attrboost.study import pipeline as P
from attrboost.study import report as R
from attrboost.study import runner as S
from attrboost.data import DataError, load_dataset
from attrboost.study.embed import embed, pca_width

REPO = Path(__file__).resolve().parents[1]
ATTRS = ["colour", "shape", "size"]


pytestmark = pytest.mark.usefixtures("cache")  # a private, empty cache (conftest)


def write_catalogue(folder: Path, n: int = 96) -> tuple[Path, Path]:
    """``n`` coloured shapes with three non-fashion attributes: colour, shape and size (12 groups of 8 for 96)."""
    csv, images = write_shapes(folder, n=n)
    df = pd.read_csv(csv)
    df["size"] = ["small" if (i // 6) % 2 else "large" for i in range(len(df))]
    df.to_csv(csv, index=False)
    return csv, images


@pytest.fixture
def catalogue(tmp_path) -> tuple[Path, Path]:
    return write_catalogue(tmp_path / "shapes")


def csv_values(csv, images, **kw) -> dict:
    return dict(dataset="csv", csv=str(csv), images=str(images), attributes=list(ATTRS), id_column="id",
                text_column="name", **kw)


# ------------------------------------------------------------------------------ parameters and their errors
def test_notebook_parameters_accept_a_csv_catalogue(catalogue):
    csv, images = catalogue
    values = {**params.defaults("03_train"), **csv_values(csv, images), "attributes": "colour, shape,size"}
    out = params.validate(values, notebook="03_train")
    assert out["attributes"] == ATTRS and out["dataset"] == "csv"
    for nb in params.NOTEBOOKS:  # every notebook declares the csv options
        assert set(params.CSV) <= set(params.spec(nb)), nb


@pytest.mark.parametrize("change, shown", [
    (dict(csv=None), ["csv: missing", "catalogue file"]),
    (dict(attributes=None), ["attributes: missing", "attribute columns"]),
    (dict(attributes=["colour", "weight"]), ["attributes", "['weight']", "not in", "'colour', 'shape', 'name'"]),
    (dict(id_column="sku"), ["id_column", "['sku']", "not in"]),
    (dict(text_column="title"), ["text_column", "['title']", "not in"]),
    (dict(text_column=None), ["tasks=", "task2, task3", "text_column"]),
    (dict(attributes=["colour", "group"]), ["attributes=", "the study's own columns"]),
    (dict(images="/no/such/folder"), ["images='/no/such/folder'", "existing folder"]),
])
def test_csv_parameter_errors_name_what_is_wrong(catalogue, change, shown):
    csv, images = catalogue
    values = dict(params.defaults("04_evaluate"), **{**csv_values(csv, images), **change})
    with pytest.raises(ValueError) as e:
        params.validate(values, notebook="04_evaluate")
    msg = str(e.value)
    assert all(s in msg for s in shown), msg
    if "not in" in shown:
        assert str(csv) in msg


def test_missing_csv_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"csv='/no/such/cat\.csv': expected an existing file"):
        params.validate(dict(params.defaults("01_data"), dataset="csv", csv="/no/such/cat.csv", attributes="a"),
                        notebook="01_data")


def test_csv_options_refused_with_another_dataset(catalogue):
    with pytest.raises(ValueError, match=r"csv, attributes: only read with dataset csv.*dataset='synthetic'"):
        params.validate(dict(params.defaults("01_data"), csv=str(catalogue[0]), attributes="colour"),
                        notebook="01_data")


@pytest.mark.parametrize("argv, shown", [
    (["--dataset", "csv", "--tasks", "task1"], ["--csv: missing", "--attributes: missing"]),
    (["--dataset", "csv", "--csv", "/no/such.csv", "--attributes", "colour"], ["--csv='/no/such.csv'", "no such file"]),
    (["--dataset", "csv", "--csv", "{csv}", "--attributes", "colour,weight"], ["--attributes", "['weight']", "{csv}"]),
    (["--dataset", "csv", "--csv", "{csv}", "--attributes", "colour"], ["--tasks=", "--text-column"]),
    (["--csv", "{csv}"], ["--csv: only read with dataset csv"]),
])
def test_study_cli_refuses_bad_csv_options_before_any_work(catalogue, capsys, argv, shown):
    csv = str(catalogue[0])
    with pytest.raises(SystemExit) as e:
        S.parse_args([a.replace("{csv}", csv) for a in argv], root=REPO)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert all(s.replace("{csv}", csv) in err for s in shown), err


def test_load_dataset_csv_needs_its_file_and_attributes(catalogue):
    with pytest.raises(DataError, match="dataset 'csv' needs the catalogue file"):
        load_dataset("csv")
    with pytest.raises(DataError, match="needs its attribute columns"):
        load_dataset("csv", csv=catalogue[0])
    with pytest.raises(DataError, match=r"attribute column\(s\) \['text'\].*rename them"):
        load_dataset("csv", csv=catalogue[0], attributes=["colour", "text"])
    cat = load_dataset("csv", csv=catalogue[0], images=catalogue[1], attributes=ATTRS, text_column="name")
    assert cat.attributes == tuple(ATTRS) and len(cat) == 96 and cat.items["text"].iloc[0] == "red square thing"


# ------------------------------------------------------------------------------ DataConfig
def test_data_config_carries_the_csv_options_into_sample_and_fingerprints(catalogue):
    csv, images = catalogue
    with pytest.raises(ValueError, match="dataset='csv'.*csv.*attributes"):
        P.DataConfig(dataset="csv")
    with pytest.raises(ValueError, match="csv, attributes given with dataset='synthetic'"):
        P.DataConfig(csv=str(csv), attributes=["colour"])
    cfg = P.DataConfig.from_params(dict(csv_values(csv, images), n_groups=6, per_group=8, backbone="pca", x=1))
    assert cfg.attributes == tuple(ATTRS) and hash(cfg) == hash(P.DataConfig(**{**cfg.__dict__, "attributes": ATTRS}))
    sample = P.get_sample(cfg, 0)
    assert sample.attributes == tuple(ATTRS) and len(sample.items) == 48
    assert sample.items.groupby(ATTRS).ngroups == 6
    assert sample.part("train")["tags"].map(len).max() > 0  # the text column gives tags
    # the catalogue's fingerprint (every cache's key) sees the attributes and the text column
    two = P.get_sample(P.DataConfig(**{**cfg.__dict__, "attributes": ("colour", "shape"), "per_group": 16}), 0)
    untagged = P.get_sample(P.DataConfig(**{**cfg.__dict__, "text_column": None}), 0)
    assert len({sample.dataset_fingerprint, two.dataset_fingerprint, untagged.dataset_fingerprint}) == 3
    assert untagged.vocab == [] and (untagged.items["text"] == "").all()


# ------------------------------------------------------------------------------ pca on a small catalogue
def test_pca_width_is_capped_by_the_training_size(capsys):
    assert pca_width(2700, 2048) == 2048 and pca_width(2048, 2048) == 2048  # the study's sizes: unchanged
    assert capsys.readouterr().out == ""
    assert pca_width(32, 2048) == 31
    assert "pca: width capped at 31 (the training part has 32 images" in capsys.readouterr().out
    with pytest.raises(ValueError, match="training part has 1 image"):
        pca_width(1, 2048)


def test_pca_features_of_a_small_catalogue_match_sklearn(catalogue, capsys):
    from sklearn.decomposition import PCA

    from attrboost.pixels import load_pixels

    csv, images = catalogue
    cfg = P.DataConfig(**csv_values(csv, images), n_groups=6, per_group=8)
    sample = P.get_sample(cfg, 0)
    X = P.get_features(sample, "pca", progress=False)
    train = sample.mask("train")
    assert X.shape == (48, int(train.sum()) - 1) == (48, 31)
    assert "width capped at 31" in capsys.readouterr().out
    pixels = load_pixels(sample.items["image_path"].tolist(), progress=False)
    ref = PCA(n_components=31, svd_solver="full").fit(pixels[train]).transform(pixels)
    # components are defined up to sign: compare each column's absolute correlation
    corr = [abs(np.corrcoef(X[:, j], ref[:, j])[0, 1]) for j in range(31)]
    assert min(corr) > 0.999
    same = embed("pca", sample.items, sample.part("train")["id"], dataset_fp=sample.dataset_fingerprint,
                 n_components=8, progress=False)
    assert same.shape == (48, 8)  # an explicit width is kept


# ------------------------------------------------------------------------------ the runner's plan and 05
def test_plan_passes_the_csv_options_to_every_notebook(catalogue, tmp_path):
    csv, images = catalogue
    cfg = S.parse_args(["--dataset", "csv", "--csv", str(csv), "--images", str(images), "--attributes",
                        "colour,shape,size", "--text-column", "name", "--n-groups", "6", "--per-group", "8",
                        "--backbones", "pca,efficientnet_lite0", "--out", str(tmp_path / "out")], root=REPO)
    p = S.plan(cfg)
    want = dict(csv=str(csv), images=str(images), attributes=ATTRS, id_column="id", text_column="name")
    for step in p.steps:
        assert {k: step.parameters[k] for k in want} == want, step.notebook
    assert p.runs[0].steps[0].parameters["n_groups"] == 6 and p.beyond.parameters["per_group"] == 8
    assert cfg.runset == "csv" and cfg.runset_parameters()["attributes"] == ATTRS
    with contextlib.chdir(REPO):
        assert S.unknown_parameters(cfg) is None  # the real notebooks declare them
    other = S.parse_args(["--dataset", "synthetic"], root=REPO)
    assert "csv" not in S.plan(other).runs[0].steps[0].parameters  # other data sets: as before
    assert set(other.runset_parameters()) == set(S.RUNSET_KEYS)


def test_05_reads_the_run_parameters(tmp_path):
    run = {"parameters": {"04_evaluate": dict(dataset="csv", csv="c.csv", attributes=ATTRS, n_groups=6, per_group=8,
                                               split="random", seeds=[3, 4], weights=None, device="cpu",
                                               max_epochs=7, results_dir="x")}}
    (tmp_path / "pca").mkdir()
    (tmp_path / "pca" / "run.json").write_text(json.dumps(run))
    got = R.run_parameters(tmp_path, "pca")
    assert got == run["parameters"]["04_evaluate"] and R.run_parameters(tmp_path, "efficientnet_lite0") == {}
    assert R.head_overrides(got) == {"device": "cpu", "max_epochs": 7}
    cfg = P.DataConfig.from_params(got)
    assert (cfg.n_groups, cfg.per_group, cfg.attributes, cfg.csv) == (6, 8, tuple(ATTRS), "c.csv")


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow  # the study runner executes the real notebooks (about 70 s on 2 cores)
def test_study_runs_end_to_end_on_a_csv_catalogue(tmp_path, monkeypatch):
    """01..05 with papermill on 192 shapes (colour, shape, size): 6 groups of 16 (so the 7-item validation part
    holds two items of a group: model selection's MAP@R needs pairs), two seeds, pca (capped by the training
    size) and efficientnet_lite0 (offline weights), Task 1. Before, --dataset csv did not exist, 05's
    retrieval example sampled 100 groups ("Lower n_groups") and its title read articleType/baseColour."""
    csv, images = write_catalogue(tmp_path / "shapes", n=192)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, figs = tmp_path / "out", tmp_path / "figs"
    with contextlib.chdir(tmp_path):
        code = S.main(["--dataset", "csv", "--csv", str(csv), "--images", str(images), "--attributes", "colour,shape,size",
                       "--text-column", "name", "--backbones", "pca,efficientnet_lite0", "--tasks", "task1",
                       "--seeds", "0,1", "--n-groups", "6", "--per-group", "16", "--no-beyond",
                       "--out", str(out), "--figures-dir", str(figs)], root=REPO)
    assert code == 0, (out / "csv" / "failures.json").read_text() if (out / "csv" / "failures.json").exists() else code
    res = pd.read_csv(out / "csv" / "results.csv")
    scores = res[res["metric"] != "selected_epoch"]
    assert set(res["dataset"]) == {"csv"} and set(res["split"]) == {"random"}
    assert set(scores["backbone"]) == {"pca", "efficientnet_lite0"} and set(scores["embedding"]) == {"raw", "task1"}
    assert set(scores["seed"]) == {0, 1}
    metrics = {"map@r", "precision@1", "recall@10", "ndcg@10", "paper_map@10"}
    assert metrics <= set(scores["metric"])
    counts = scores.groupby(["backbone", "embedding", "seed", "metric"]).size()
    assert (counts == 1).all() and len(counts) == 2 * 2 * 2 * scores["metric"].nunique()
    assert scores["value"].between(0, 100).all()
    assert len(res[res["metric"] == "selected_epoch"]) == 2 * 2
    for name in ("raw_vs_boosted.png", "cost_vs_quality.png", "retrieval_example.png", "table_paper_map.md",
                 "summary.csv"):
        assert (figs / "csv" / name).stat().st_size > 0, name
    text = lambda p: json.dumps(json.loads(p.read_text())["cells"])  # noqa: E731
    assert re.search(r"pca: width capped at \d+", text(out / "csv" / "pca" / "02_embeddings.ipynb"))
    assert "backbone efficientnet_lite0, query s" in text(out / "csv" / "05_figures.ipynb")
    info = json.loads((out / "csv" / "pca" / "run.json").read_text())
    assert info["parameters"]["04_evaluate"]["attributes"] == ATTRS
    assert os.path.isabs(info["parameters"]["04_evaluate"]["csv"])  # outside the repository: kept absolute

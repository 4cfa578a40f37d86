"""Tests for attrboost.study.params: every parameter checked at the door (CLI and notebooks), unknown
parameter names caught, the spec's defaults equal to the notebooks' parameter cells, and a quiet
kernel in the study runner."""
from __future__ import annotations

import ast
import contextlib
import json
import os
import types
import warnings
from pathlib import Path

import numpy as np
import papermill
import pytest

from attrboost.study import params
from attrboost.study import runner as S
from attrboost.backbones import list_backbones
from attrboost.study.baselines import BASELINES

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"


pytestmark = pytest.mark.usefixtures("cache")  # a private, empty cache (conftest)


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A directory path that cannot be created or written: a read-only folder where permissions
    are enforced, else (as root) a path below a regular file."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        (ro / "probe").write_text("x")
    except OSError:
        return ro / "out"
    (ro / "probe").unlink()
    ro.chmod(0o700)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    return blocker / "sub"


def check_bad(notebook, name, value, *allowed):
    values = dict(params.defaults(notebook), **{name: value})
    with pytest.raises(ValueError) as e:
        params.validate(values, notebook=notebook)
    msg = str(e.value)
    assert f"{name}={value!r}" in msg, msg
    for a in allowed:
        assert str(a) in msg, (a, msg)
    return msg


# ------------------------------------------------------------------------------ values
@pytest.mark.parametrize("notebook, name, value, allowed", [
    ("01_data", "seed", 1.5, ["integer >= 0"]),            # papermill -p seed 1.5 passes a float
    ("01_data", "seed", -1, ["integer >= 0"]),              # numpy's default_rng rejects negative seeds
    ("01_data", "seed", True, ["integer >= 0"]),
    ("02_embeddings", "seeds", "-1", ["integers >= 0"]),
    ("02_embeddings", "seeds", [0, 0], ["distinct"]),
    ("02_embeddings", "seeds", "a,b", ["integers >= 0"]),
    ("03_train", "lr", "fast", ["number >= 0"]),             # a string for a float
    ("03_train", "lr", -0.1, ["number >= 0"]),
    ("03_train", "weight_decay", -1e-5, ["number >= 0"]),
    ("03_train", "stop_loss", float("nan"), ["number >= 0"]),
    ("01_data", "n_groups", 0, ["integer >= 1"]),
    ("01_data", "per_group", 2.5, ["integer >= 1"]),
    ("02_embeddings", "batch_size", "32", ["integer >= 1"]),
    ("03_train", "max_epochs", 0, ["integer >= 1"]),
    ("03_train", "patience", -1, ["integer >= 1"]),
    ("03_train", "hidden_dim", 0, ["integer >= 1 or None"]),
    ("01_data", "split", "diagonal", params.SPLITS),
    ("01_data", "dataset", "imagenet", params.DATASETS),
    ("05_figures", "dataset", "synthetic-diagonal", ["synthetic-by_group", "fashion"]),
    ("02_embeddings", "backbone", "nosuchnet", list_backbones()),
    ("03_train", "tasks", "task1,task9", params.TASKS),
    ("03_train", "tasks", [], params.TASKS),
    ("03_train", "selection", "best", ["val_loss", "last"]),
    ("02_embeddings", "device", "tpu", ["auto", "cpu", "cuda"]),
    ("06_beyond", "budgets", [1, 250], ["integers >= 2"]),
    ("06_beyond", "baselines", ["lda", "pca"], BASELINES),
    ("06_beyond", "ablation", "yes", ["True or False"]),
    ("01_data", "show_images", 1, ["True or False or None"]),
    ("05_figures", "example_backbone", "nosuchnet", list_backbones()),
    ("03_train", "weights", "/no/such/weights.pt", ["no such file"]),
])
def test_bad_value_names_parameter_value_and_allowed(notebook, name, value, allowed):
    check_bad(notebook, name, value, *allowed)


def test_cuda_without_gpu_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_bad("02_embeddings", "device", "cuda", "no CUDA GPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert params.validate({"device": "cuda:0"})["device"] == "cuda:0"
    check_bad("02_embeddings", "device", "cuda:1", "1 CUDA GPU")


def test_unwritable_output_dirs(unwritable):
    check_bad("04_evaluate", "results_dir", str(unwritable), "writable directory")
    check_bad("06_beyond", "figures_dir", str(unwritable), "writable directory")
    assert params.validate({"figures_dir": str(unwritable.parent.parent / "new" / "deeper")})


def test_unwritable_cache_dir(tmp_path, monkeypatch):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    monkeypatch.setenv("ATTRBOOST_CACHE", str(blocker / "cache"))
    with pytest.raises(ValueError) as e:
        params.validate(params.defaults("01_data"), notebook="01_data")
    assert "$ATTRBOOST_CACHE" in str(e.value) and str(blocker / "cache") in str(e.value)


def test_every_bad_value_is_reported_at_once(unwritable):
    bad = dict(seed=1.5, lr="fast", split="diagonal", patience=0, weights="/no/such.pt", tasks="task9")
    with pytest.raises(ValueError) as e:
        params.validate(dict(params.defaults("03_train"), **bad), notebook="03_train")
    msg = str(e.value)
    assert "03_train" in msg
    for name, value in bad.items():
        assert f"{name}={value!r}" in msg
    assert len(msg.splitlines()) == 1 + len(bad)


def test_missing_and_unknown_names():
    values = params.defaults("01_data")
    del values["seed"]
    with pytest.raises(ValueError, match=r"seed: missing \(default 0\)"):
        params.validate(values, notebook="01_data")
    with pytest.raises(ValueError, match=r"n_grups: unknown parameter \(did you mean 'n_groups'\?\)"):
        params.validate({"n_grups": 12})


def test_values_are_normalised():
    out = params.validate({"seeds": "0,1,2", "seed": 1.0, "lr": 1, "tasks": "task1, task3", "budgets": "[3, 4]",
                           "n_groups": np.int64(7), "baselines": "lda"})
    assert out == {"seeds": [0, 1, 2], "seed": 1, "lr": 1.0, "tasks": ["task1", "task3"], "budgets": [3, 4],
                   "n_groups": 7, "baselines": ["lda"]}
    assert type(out["seed"]) is int and type(out["lr"]) is float and type(out["n_groups"]) is int


def test_every_default_is_the_librarys():
    """One home per default: the spec reads the head's from BoostHead, the sample's from
    sample_protocol, 06's from beyond/baselines; DataConfig and head_params agree with them."""
    import inspect

    from attrboost import heads
    from attrboost.study import beyond, pipeline
    from attrboost.data import sampling

    head = inspect.signature(heads.BoostHead).parameters
    assert head["patience"].default == 10  # the study's one selection rule (training.PATIENCE; was 5 on val loss)
    assert head["selection"].default == "val_map@r"
    for name in params._HEAD:  # the head's hyper-parameters in the notebooks
        assert params.PARAMS[name].default == head[name].default == pipeline.head_params()[name], name
    sample = inspect.signature(sampling.sample_protocol).parameters
    cfg = pipeline.DataConfig()
    for name in ("n_groups", "per_group", "split"):
        assert params.PARAMS[name].default == sample[name].default == getattr(cfg, name), name
    assert (cfg.n_test, cfg.val_fraction) == (sample["n_test"].default, sample["val_fraction"].default)
    assert params.PARAMS["tasks"].default == list(heads.TASKS)
    assert params.PARAMS["baselines"].default == list(BASELINES)
    assert params.PARAMS["budgets"].default == list(beyond.BUDGETS)
    # 05's retrieval example calls get_boosted without overrides: the same head (and cache key) as 03/04's
    cell = params.defaults("04_evaluate")
    assert pipeline.head_params() == pipeline.head_params(**{n: cell[n] for n in params._HEAD})
    # one home per name
    assert params.TASKS is heads.TASKS and params.SPLITS is sampling.SPLITS and params.SELECTIONS is heads.SELECTIONS


# ------------------------------------------------------------------------------ notebooks
def notebook_json(name: str) -> dict:
    return json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text(encoding="utf-8"))


def cell_source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("notebook", list(params.NOTEBOOKS))
def test_spec_defaults_equal_the_notebooks_parameter_cells(notebook):
    declared = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb"))
    spec = params.spec(notebook)
    assert list(declared) == list(spec)
    assert {n: ast.literal_eval(p["default"]) for n, p in declared.items()} == params.defaults(notebook)
    head = {n: v for n, v in params.defaults(notebook).items() if n in params._HEAD}
    assert head == {n: params.HEAD_DEFAULTS[n] for n in head}  # the cells' head settings are BoostHead's
    params.validate(params.defaults(notebook), notebook=notebook)  # the defaults are valid


def run_validation_cell(notebook: str, injected: dict):
    """Execute a notebook's parameter cell, papermill-style injected values, and the lines of its
    validation cell up to ``params.validate``, in a fresh namespace that looks like IPython's."""
    cells = [c for c in notebook_json(notebook)["cells"] if c["cell_type"] == "code"]
    param_cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    check_cell = cell_source(next(c for c in cells if "params.validate(globals()" in cell_source(c)))
    lines = check_cell.splitlines()
    head = "\n".join(lines[:next(i for i, line in enumerate(lines) if "params.validate(" in line) + 1])
    assert f'notebook="{notebook}"' in head
    ns = {"__name__": "__main__", "In": [""], "Out": {}, "_i1": "", "get_ipython": lambda: None, "np": np,
          "P": types.ModuleType("attrboost.study.pipeline")}
    exec(cell_source(param_cell), ns)
    ns.update(injected)
    exec(head, ns)
    return ns


@pytest.mark.parametrize("notebook", list(params.NOTEBOOKS))
def test_notebook_validation_cells_use_the_spec(notebook, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ns = run_validation_cell(notebook, {})
    assert {n: ns[n] for n in params.NOTEBOOKS[notebook]} == params.defaults(notebook)
    assert capsys.readouterr().out == ""
    name = next(n for n in ("seed", "seeds", "show_images") if n in params.NOTEBOOKS[notebook])
    with pytest.raises(ValueError, match=f"{name}='-1'"):
        run_validation_cell(notebook, {name: "-1"})
    with pytest.warns(UserWarning, match=f"not a parameter of {notebook}"):
        run_validation_cell(notebook, {"runs_dri" if notebook == "05_figures" else "n_grups": 12})
    assert "!!!!" in capsys.readouterr().out


def test_warn_unknown_flags_only_stray_values(capsys):
    ns = dict(params.defaults("01_data"), n_grups=12, sede=3, np=np, os=os, f=lambda: 0, Path=Path,
              In=[""], Out={}, get_ipython=lambda: None, exit=object(), quit=object(), _i1="x", __name__="__main__")
    with pytest.warns(UserWarning) as w:
        assert params.warn_unknown(ns, notebook="01_data") == ["n_grups", "sede"]
    text = str(w[0].message)
    assert "n_grups = 12 is not a parameter of 01_data (did you mean 'n_groups'?)" in text
    assert "sede = 3" in text and "'seed'" in text
    assert "n_grups" in capsys.readouterr().out
    with warnings.catch_warnings():  # a re-run of the cell in the same session does not warn again
        warnings.simplefilter("error")
        assert params.warn_unknown(ns, notebook="01_data") == []
        assert params.warn_unknown(params.defaults("01_data"), notebook="01_data") == []


# ------------------------------------------------------------------------------ the study CLI
class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, input_path, output_path, **kw):
        self.calls.append((input_path, kw.get("parameters")))
        Path(output_path).write_text("{}")


def make_repo(root: Path, rename: dict[str, tuple[str, str]] | None = None) -> Path:
    """Notebooks whose parameter cells declare the spec's parameters (``rename``: notebook -> (old, new))."""
    (root / "notebooks").mkdir(parents=True)
    for nb in S.NOTEBOOKS:
        names = list(params.spec(nb))
        if rename and nb in rename:
            old, new = rename[nb]
            names[names.index(old)] = new
        src = "\n".join(f"{n} = None" for n in names)
        doc = {"cells": [{"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
                          "outputs": [], "source": src}],
               "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
                            "language_info": {"name": "python"}},
               "nbformat": 4, "nbformat_minor": 5}
        (root / "notebooks" / f"{nb}.ipynb").write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize("argv, shown", [
    (["--seeds", "-1"], ["--seeds='-1'", "integers >= 0"]),
    (["--seeds", "0,1.5"], ["--seeds='0,1.5'"]),
    (["--device", "tpu"], ["--device='tpu'", "'auto', 'cpu', 'cuda'"]),
    (["--n-groups", "0", "--per-group", "-3", "--device", "tpu"], ["--n-groups=0", "--per-group=-3", "--device='tpu'"]),
])
def test_cli_refuses_bad_values_before_any_work(tmp_path, capsys, argv, shown):
    repo, ex = make_repo(tmp_path / "repo"), Recorder()
    with pytest.raises(SystemExit) as e:
        S.main(["--backbones", "pca"] + argv, execute=ex, root=repo)
    assert e.value.code == 2 and ex.calls == []
    err = capsys.readouterr().err
    assert all(s in err for s in shown), err


@pytest.mark.parametrize("option", ["--out", "--figures-dir"])
def test_cli_refuses_unwritable_output(tmp_path, capsys, unwritable, option):
    repo, ex = make_repo(tmp_path / "repo"), Recorder()
    with pytest.raises(SystemExit) as e:
        S.main(["--backbones", "pca", "--seeds", "0", option, str(unwritable)], execute=ex, root=repo)
    assert e.value.code == 2 and ex.calls == []
    err = capsys.readouterr().err
    assert f"{option}=" in err and "writable directory" in err


def test_cli_refuses_unwritable_cache(tmp_path, capsys, monkeypatch):
    repo, ex = make_repo(tmp_path / "repo"), Recorder()
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.setenv("ATTRBOOST_CACHE", str(tmp_path / "file.txt" / "cache"))
    with pytest.raises(SystemExit) as e:
        S.main(["--backbones", "pca", "--seeds", "0"], execute=ex, root=repo)
    assert e.value.code == 2 and ex.calls == [] and "$ATTRBOOST_CACHE" in capsys.readouterr().err


def test_runner_refuses_a_parameter_the_notebook_does_not_declare(tmp_path, capsys):
    repo, ex = make_repo(tmp_path / "repo", rename={"02_embeddings": ("device", "devise")}), Recorder()
    code = S.main(["--backbones", "pca", "--seeds", "0"], execute=ex, root=repo)
    assert code == 2 and ex.calls == []
    err = capsys.readouterr().err
    assert "notebooks/02_embeddings.ipynb: unknown parameter 'device' (did you mean 'devise'?)" in err

    repo, ex = make_repo(tmp_path / "ok"), Recorder()  # every name declared: the run goes ahead
    S.main(["--backbones", "pca", "--seeds", "0"], execute=ex, root=repo)
    assert [Path(c[0]).stem for c in ex.calls][:4] == list(S.BACKBONE_NOTEBOOKS)


@pytest.mark.parametrize("extra", [[], ["--figures-only"], ["--split", "by_group", "--no-beyond"]])
def test_the_runners_parameters_are_declared_by_the_real_notebooks(extra, tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    args = S.parse_args(["--backbones", ",".join(S.DEFAULT_BACKBONES), "--weights", f"efficientnet_lite1={weights}",
                         "--data-dir", str(tmp_path), *extra], root=REPO)
    with contextlib.chdir(REPO):
        assert S.unknown_parameters(args) is None


# ------------------------------------------------------------------------------ a quiet kernel
def test_runner_kernel_is_quiet(tmp_path, capfd):
    """No 'running over TCP without encryption' warning and no 'KeyboardInterrupt caught in kernel'
    error from a successful run. The notebook widens the window in which the shutdown interrupt hits
    the kernel still handling papermill's last kernel_info request (it happens by chance otherwise)."""
    slow_info = ("import time\n"
                 "kernel = get_ipython().kernel\n"
                 "reply_info = kernel.shell_handlers['kernel_info_request']\n"
                 "async def slow_kernel_info(*args):\n"
                 "    await reply_info(*args)\n"
                 "    time.sleep(0.5)\n"
                 "kernel.shell_handlers['kernel_info_request'] = slow_kernel_info\n"
                 "print(x + 1)")
    doc = {"cells": [{"cell_type": "code", "execution_count": None, "id": "a", "metadata": {"tags": ["parameters"]},
                      "outputs": [], "source": "x = 1"},
                     {"cell_type": "code", "execution_count": None, "id": "b", "metadata": {}, "outputs": [],
                      "source": slow_info}],
           "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
                        "language_info": {"name": "python"}},
           "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "tiny.ipynb").write_text(json.dumps(doc))
    nb = S.papermill_execute(str(tmp_path / "tiny.ipynb"), str(tmp_path / "out.ipynb"), parameters={"x": 3})
    assert nb.cells[-1].outputs[0]["text"] == "4\n"
    captured = capfd.readouterr()
    noise = captured.out + captured.err
    assert "without encryption" not in noise and "KeyboardInterrupt" not in noise, noise


def test_patience_none_means_never_stop_early_as_boosthead_allows():
    assert params.validate({"patience": None})["patience"] is None
    with pytest.raises(ValueError, match="patience=0"):
        params.validate({"patience": 0})


def test_notebook_index_kinds_are_the_search_wings():
    from attrboost.search.index import KINDS

    assert params.INDEX_KINDS == KINDS

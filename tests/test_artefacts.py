"""The tool never loses a model or an index (attrboost.search.artefacts): --out is checked before any work,
one writer at a time (two real processes), a failed or killed save leaves the previous artefact, an id is
its file too; and every bad argument or catalogue is a clear error before any image is encoded."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _shapes import write_shapes
from helpers import SHAPES_FIT

from attrboost.search.cli import main
from attrboost.search.index import VectorIndex

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ix(shapes_model, tmp_path, cache):
    """A fresh flat index of the 40 shapes (in tmp_path / "ix"), the shapes model's."""
    out = tmp_path / "ix"
    assert main(["index", "--model", str(shapes_model.model), "--images", str(shapes_model.images), "--out",
                 str(out), "-q"]) == 0
    return out


@pytest.fixture
def no_encoding(monkeypatch):
    """Any image encoded from here on fails the test: the errors below must come before the work."""
    def refuse(*a, **k):
        raise AssertionError("an image was encoded before the error")
    monkeypatch.setattr("attrboost.features.forward_files", refuse)
    monkeypatch.setattr("attrboost.search.encoder.forward_files", refuse)


def _err(capsys) -> str:
    return capsys.readouterr().err


def _fit(shapes_model, out, *extra):
    return main(["fit", "--csv", str(shapes_model.csv), "--images", str(shapes_model.images), "--out", str(out),
                 *SHAPES_FIT, *extra])


# ---------------------------------------------------------------------------------------------- --out
def test_fit_never_writes_over_an_index_or_a_users_folder(shapes_model, ix, tmp_path, capsys, no_encoding):
    n = len(VectorIndex.load(ix))
    assert _fit(shapes_model, ix) == 2
    assert "holds an index" in _err(capsys)
    assert len(VectorIndex.load(ix)) == n
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"my": "own"}')
    (mine / "metrics.json").write_text("[1, 2]")
    assert _fit(shapes_model, mine) == 2
    assert "not an attrboost artefact" in _err(capsys)
    assert (mine / "manifest.json").read_text() == '{"my": "own"}' and (mine / "metrics.json").read_text() == "[1, 2]"
    assert main(["index", "--model", str(shapes_model.model), "--images", str(shapes_model.images), "--out",
                 str(mine), "-q"]) == 2
    assert "not an attrboost artefact" in _err(capsys)


def test_a_model_is_replaced_only_with_overwrite(shapes_model, tmp_path, cache, capsys):
    model = shutil.copytree(shapes_model.model, tmp_path / "model")
    before = json.loads((model / "manifest.json").read_text())["files"]
    assert _fit(shapes_model, model, "--seed", "1") == 2
    assert "already holds a model bundle: pass --overwrite" in _err(capsys)
    assert json.loads((model / "manifest.json").read_text())["files"] == before
    assert _fit(shapes_model, model, "--seed", "1", "--overwrite") == 0
    assert json.loads((model / "manifest.json").read_text())["files"] != before  # another seed, other weights
    import attrboost
    attrboost.load_model(model)


# ---------------------------------------------------------------------------------------------- failed saves
def test_a_disk_full_during_add_leaves_the_previous_index(shapes_model, ix, tmp_path, capsys, monkeypatch):
    more = tmp_path / "more"
    write_shapes(more, n=6, seed=5, prefix="m")
    n = len(VectorIndex.load(ix))
    real = VectorIndex.save

    def full(self, directory):
        (Path(directory) / "faiss.index").write_bytes(b"half")  # the first file written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(VectorIndex, "save", full)
    assert main(["index", "--model", str(shapes_model.model), "--images", str(more / "images"), "--out", str(ix),
                 "--add", "-q"]) == 2
    err = _err(capsys)
    assert "No space left on device" in err and "is unchanged" in err and "Traceback" not in err
    assert len(VectorIndex.load(ix)) == n
    assert not list(tmp_path.glob(".ix.tmp-*"))
    assert (tmp_path / ".ix.encode-partial").is_dir()  # the encoded images are kept for the next attempt
    monkeypatch.setattr(VectorIndex, "save", real)
    monkeypatch.setattr("attrboost.search.encoder.forward_files",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("encoded again")))
    assert main(["index", "--model", str(shapes_model.model), "--images", str(more / "images"), "--out", str(ix),
                 "--add", "-q"]) == 0
    assert len(VectorIndex.load(ix)) == n + 6 and not (tmp_path / ".ix.encode-partial").exists()


def test_a_disk_full_during_a_refit_leaves_the_previous_model(shapes_model, tmp_path, cache, capsys, monkeypatch):
    import attrboost

    model = shutil.copytree(shapes_model.model, tmp_path / "model")
    before = (model / "head.safetensors").read_bytes()
    from attrboost.search import bundle

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundle, "write_json", full)  # after the head's files, before backbone.json
    assert _fit(shapes_model, model, "--seed", "1", "--overwrite") == 2
    assert "No space left on device" in _err(capsys)
    assert (model / "head.safetensors").read_bytes() == before
    attrboost.load_model(model)
    assert not list(tmp_path.glob(".model.tmp-*"))


SLOW_SAVE = """
import sys, time
from attrboost.search.index import VectorIndex
real = VectorIndex.save
def slow(self, directory):
    real(self, directory)
    print("saved", flush=True)
    time.sleep(120)
VectorIndex.save = slow
from attrboost.search.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env(cache):
    return {**os.environ, "ATTRBOOST_CACHE": str(cache), "PYTHONPATH": str(ROOT / "lib")}


def test_kill_9_in_the_middle_of_a_save_leaves_the_previous_index(shapes_model, ix, tmp_path, cache):
    more = tmp_path / "more"
    write_shapes(more, n=6, seed=5, prefix="m")
    n = len(VectorIndex.load(ix))
    cmd = ["index", "--model", str(shapes_model.model), "--images", str(more / "images"), "--out", str(ix), "--add",
           "-q"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, *cmd], env=_env(cache), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "saved"  # the new index is written, not yet swapped in
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert len(VectorIndex.load(ix)) == n
    assert list(tmp_path.glob(".ix.tmp-*"))  # the dead writer's work is left behind ...
    assert main(cmd) == 0  # ... and cleaned up by the next writer, which finishes the job
    assert len(VectorIndex.load(ix)) == n + 6 and not list(tmp_path.glob(".ix.tmp-*"))


# ---------------------------------------------------------------------------------------------- one writer
HOLD_LOCK = """
import sys, time
from attrboost.search.artefacts import writer_lock
with writer_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_naming_the_holder(shapes_model, ix, tmp_path, cache, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(ix)], env=_env(cache), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["index", "--model", str(shapes_model.model), "--images", str(shapes_model.images), "--out",
                     str(ix), "--add", "-q"]) == 2
        err = _err(capsys)
        assert f"being written by another attrboost process (PID {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait(timeout=60)


def test_two_index_commands_into_one_out_lose_nothing(shapes_model, tmp_path, cache):
    out = tmp_path / "both"
    cmd = [sys.executable, "-m", "attrboost.search.cli", "index", "--model", str(shapes_model.model), "--images",
           str(shapes_model.images), "--out", str(out), "-q"]
    procs = [subprocess.Popen(cmd, env=_env(cache), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "being written by another attrboost process" in loser or "already holds an index" in loser
    index = VectorIndex.load(out)
    assert len(index) == 40 and sorted(index.ids.tolist()) == sorted(f"s{i}" for i in range(40))


# ---------------------------------------------------------------------------------------------- ids are files
def test_add_refuses_other_files_under_known_ids_and_takes_a_prefix(shapes_model, ix, tmp_path, capsys):
    other = tmp_path / "other"
    write_shapes(other, n=40, seed=9)  # s0.jpg .. s39.jpg again, other pictures
    cmd = ["index", "--model", str(shapes_model.model), "--images", str(other / "images"), "--out", str(ix), "--add",
           "-q"]
    assert main(cmd) == 2
    err = _err(capsys)
    assert "40 image(s) have ids already in" in err and "--id-prefix" in err
    assert len(VectorIndex.load(ix)) == 40
    assert main([*cmd, "--id-prefix", "b/"]) == 0
    index = VectorIndex.load(ix)
    assert len(index) == 80 and "b/s7" in set(index.ids.tolist())
    # the same folder again: the same files under the same ids, nothing to add
    assert main(["index", "--model", str(shapes_model.model), "--images", str(shapes_model.images), "--out",
                 str(ix), "--add", "-q"]) == 0
    assert len(VectorIndex.load(ix)) == 80


# ---------------------------------------------------------------------------------------------- errors first
@pytest.fixture
def catalogue(tmp_path):
    csv_path, images = write_shapes(tmp_path / "cat", n=40)
    return csv_path, images


@pytest.mark.parametrize("content, expect", [
    ('id,colour,shape,name\ns0,red,square,"an unbalanced quote\ns1,red,disc,x\n', "not a well-formed CSV"),
    ("", "the file is empty"),
])
def test_unreadable_csvs_are_clear_errors(shapes_model, catalogue, tmp_path, capsys, no_encoding, content,
                                         expect):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    for cmd in (["fit", "--csv", str(bad), "--images", str(catalogue[1]), "--attributes", "colour,shape", "--out",
                 str(tmp_path / "m"), "-q"],
                ["index", "--model", str(shapes_model.model), "--csv", str(bad), "--images", str(catalogue[1]),
                 "--out", str(tmp_path / "i"), "-q"]):
        code = main(cmd)
        err = _err(capsys)
        assert code == 2 and "Traceback" not in err
        assert expect in err and str(bad) in err


def test_catalogue_problems_are_all_reported_before_encoding(catalogue, tmp_path, capsys, no_encoding):
    csv_path, images = catalogue
    df = pd.read_csv(csv_path).assign(season="Summer")
    df.to_csv(tmp_path / "one_value.csv", index=False)
    assert main(["fit", "--csv", str(tmp_path / "one_value.csv"), "--images", str(images), "--attributes",
                 "colour,shape,season", "--out", str(tmp_path / "m"), "-q"]) == 2
    assert "attribute 'season' has one value ('Summer')" in _err(capsys)
    df.head(5).to_csv(tmp_path / "five.csv", index=False)
    assert main(["fit", "--csv", str(tmp_path / "five.csv"), "--images", str(images), "--attributes",
                 "colour,shape", "--out", str(tmp_path / "m"), "-q"]) == 2
    err = _err(capsys)
    assert "5 labelled rows; a fit needs at least 8" in err and "val-fraction" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("args, expect", [
    (["fit", "--backbone", "nope"], "--backbone nope: expected one of"),
    (["fit", "--device", "tpu"], "--device tpu"),
    (["fit", "--batch-size", "0"], "--batch-size 0: expected an integer >= 1"),
    (["fit", "--val-fraction", "1.5"], "--val-fraction 1.5"),
    (["search", "-k", "0"], "-k 0: expected an integer >= 1"),
])
def test_bad_arguments_are_reported_together_at_the_door(catalogue, tmp_path, capsys, no_encoding, args, expect):
    csv_path, images = catalogue
    base = {"fit": ["--csv", str(csv_path), "--attributes", "colour,shape", "--out", str(tmp_path / "m")],
            "search": ["--index", str(tmp_path), str(images / "s0.jpg")]}[args[0]]
    more = ["--seed", "-1"] if args[0] == "fit" else []  # a second problem, reported with the first
    assert main([args[0], *base, *args[1:], *more]) == 2
    err = _err(capsys)
    assert expect in err and "Traceback" not in err
    if args[0] == "fit":
        assert "--seed -1" in err  # every problem at once


def test_cuda_without_a_gpu_is_refused_at_the_door(catalogue, tmp_path, capsys, no_encoding):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["fit", "--csv", str(catalogue[0]), "--attributes", "colour,shape", "--out", str(tmp_path / "m"),
                 "--device", "cuda"]) == 2
    assert "CUDA is not available" in _err(capsys)


def test_images_default_to_the_folder_beside_the_csv(catalogue, tmp_path, cache, capsys):
    csv_path, images = catalogue  # catalogue.csv with images/ beside it (the Kaggle layout)
    assert main(["fit", "--csv", str(csv_path), "--out", str(tmp_path / "m"), *SHAPES_FIT]) == 0
    shutil.rmtree(images)
    assert main(["fit", "--csv", str(csv_path), "--out", str(tmp_path / "m2"), *SHAPES_FIT]) == 2
    err = _err(capsys)
    assert str(csv_path.parent / "s0.jpg") in err  # the path it looked for


def test_all_images_undecodable_says_so(catalogue, tmp_path, cache, capsys):
    csv_path, images = catalogue
    for p in images.iterdir():
        p.write_bytes(b"\xff\xd8 not a jpeg")
    assert main(["fit", "--csv", str(csv_path), "--out", str(tmp_path / "m"), *SHAPES_FIT]) == 2
    err = _err(capsys)
    assert "0 of 40 labelled rows have an image that decodes" in err and "val-fraction" not in err


def test_demo_data_into_an_unwritable_place_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert main(["demo-data", str(tmp_path / "a_file" / "demo"), "-q"]) == 2
    err = _err(capsys)
    assert "cannot write" in err and "Traceback" not in err


def test_help_has_no_raw_markup(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out

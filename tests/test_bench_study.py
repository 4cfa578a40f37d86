"""benchmarks/bench_study.py: its table, ratio and papermill-metadata arithmetic, on fake numbers (seconds)."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_study.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_study", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ratio_is_this_over_other_and_undefined_without_both(bench):
    assert bench.ratio(3.0, 12.0) == pytest.approx(0.25)
    assert bench.ratio(None, 1.0) is None
    assert bench.ratio(1.0, None) is None
    assert bench.ratio(1.0, 0.0) is None
    assert bench.ratio(math.nan, 1.0) is None


def test_min_over_runs_takes_each_stage_minimum_in_first_seen_order(bench):
    runs = [{"b": 5.0, "a": 2.0}, {"a": 1.5, "b": 7.0, "c": math.nan}, {"c": 4.0}]
    assert bench.min_over_runs(runs) == {"b": 5.0, "a": 1.5, "c": 4.0}
    assert list(bench.min_over_runs(runs)) == ["b", "a", "c"]


def test_format_table_two_columns_adds_the_ratio_and_dashes_for_missing_stages(bench):
    text = bench.format_table({"this": {"extract": 30.0, "heads": 10.0},
                               "other": {"extract": 60.0, "06": 5.0}})
    lines = text.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["stage", "this (s)", "other (s)", "this/other"]
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in ln.split("|")[1:-1]] for ln in lines[2:])}
    assert list(rows) == ["extract", "heads", "06"]  # first-seen order over the columns
    assert rows["extract"] == ["30.0", "60.0", "0.50"]
    assert rows["heads"] == ["10.0", "-", "-"]
    assert rows["06"] == ["-", "5.0", "-"]


def test_format_table_one_column_has_no_ratio(bench):
    text = bench.format_table({"this": {"total": 12.345}})
    assert "this/other" not in text and "12.3" in text


def _cell(kind, source, start, duration, tags=()):
    return {"cell_type": kind, "source": source, "metadata": {"tags": list(tags), "papermill": {
        "start_time": f"2026-01-01T00:00:{start:09.6f}+00:00", "duration": duration}},
        **({"outputs": [], "execution_count": 1} if kind == "code" else {})}


def test_notebook_timing_splits_kernel_start_imports_cells_and_rest(bench, tmp_path):
    # papermill starts at 0 s; the kernel is up when the first cell starts (2.5 s); the notebook lasts 20 s
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"papermill": {
        "start_time": "2026-01-01T00:00:00.000000+00:00", "duration": 20.0}}, "cells": [
        _cell("markdown", "# title", 2.5, 0.01),
        _cell("code", "seed = 0", 2.6, 0.02, tags=["parameters"]),
        _cell("code", "seed = 1", 2.7, 0.03, tags=["injected-parameters"]),
        _cell("code", "%matplotlib inline\nimport numpy as np", 2.8, 4.0),
        _cell("code", "import time\nx = 1", 6.8, 10.0),
    ]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    t = bench.notebook_timing(path)
    assert t["kernel_start"] == pytest.approx(2.5)
    assert t["imports"] == pytest.approx(4.0)  # the first code cell after the parameter cells
    assert t["cells"] == pytest.approx(0.01 + 0.02 + 0.03 + 10.0)
    assert t["rest"] == pytest.approx(20.0 - 2.5 - (4.0 + 10.06))
    assert [c[0] for c in t["per_cell"]] == [0, 1, 2, 3, 4]


def test_notebook_timing_without_papermill_metadata_says_so(bench, tmp_path):
    path = tmp_path / "stripped.ipynb"
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}))
    assert "no papermill metadata" in bench.notebook_timing(path)["error"]

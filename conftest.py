"""Shared pytest set-up for the whole repository (tests/ and the notebooks that nbval re-executes).

nbval compares the text of notebook outputs, not their HTML/widget renderings. Every notebook is marked
``slow`` (as are the Ray-cluster and browser tests), so ``make test-fast`` (``-m "not slow"``) leaves them out.
``make test`` runs on both cores (``-n 2 --dist loadfile``: a notebook's cells stay on one worker, in order).
"""
import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2: one BLAS / OpenMP / torch thread per worker and per notebook kernel it starts (the kernels
    # inherit this environment), so two workers fill two cores without oversubscribing them. Results do not
    # depend on it: head fits, baselines and pixel PCA run on one thread anyway, and the features are bitwise
    # the same for any thread count (tests/test_extract.py, tests/test_determinism.py).
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "application/javascript")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)

"""Shared pytest set-up for the whole repository (tests/ and the notebooks that nbval re-executes).

nbval compares the text of notebook outputs, not their HTML/widget renderings. Every notebook is marked
``slow`` (as are the Ray-cluster and browser tests), so ``make test-fast`` (``-m "not slow"``) leaves them out.
``make test`` runs on both cores (``-n 2 --dist loadgroup``: a file's tests stay on one worker, a notebook's cells
in order, and the notebooks of :data:`CHAINED_NOTEBOOKS` on one worker one after the other).
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


#: notebooks nbval runs one after the other on one worker, in this order, so each finds the features and heads
#: the one before it cached (06's Task 1 and Task 3 heads are 04's; 03's and 04's features are 02's) instead
#: of fitting them again at the same time on the other core
CHAINED_NOTEBOOKS = ("02_embeddings", "03_train", "04_evaluate", "06_beyond")


def pytest_collection_modifyitems(items):
    # `make test` runs `-n 2 --dist loadgroup`: one group per file (as --dist loadfile) except the chained notebooks
    for item in items:
        group = item.path.name
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
            if item.path.stem in CHAINED_NOTEBOOKS:
                group = "chained-notebooks"
        item.add_marker(pytest.mark.xdist_group(group))
    # the chain in its order (collection sorts by path already; keep it explicit)
    chain = [i for i in items if i.path.stem in CHAINED_NOTEBOOKS and i.path.suffix == ".ipynb"]
    if chain:
        rank = {name: k for k, name in enumerate(CHAINED_NOTEBOOKS)}
        chain.sort(key=lambda i: rank[i.path.stem])  # stable: cells keep their order
        slots = [k for k, i in enumerate(items) if i in chain]
        for k, item in zip(slots, chain):
            items[k] = item

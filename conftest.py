"""Shared pytest set-up for the whole repository (tests/ and the notebooks that nbval re-executes).

nbval compares the text of notebook outputs, not their HTML/widget renderings. Every notebook is marked
``slow`` (as are the Ray-cluster and browser tests), so ``make test-fast`` (``-m "not slow"``) leaves them out.
``make test`` runs on both cores (``-n 2 --dist loadfile``: a notebook's cells stay on one worker, in order),
taking whole files in the order of :data:`LONGEST_FIRST`.
"""
import os
import re

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


#: The files collected first, in this order (each file's tests keep theirs; the other files follow in collection
#: order). ``make test`` runs ``--dist loadfile --no-loadscope-reorder``, so its two workers take whole files in
#: this order: the longest first, so that both cores stay busy to the end (longest-processing-time-first)
#: instead of one running a long notebook alone after the short files are done. The notebooks share cached
#: features and heads, computed once whichever asks first (``attrboost.cache.computing``); so the second
#: worker starts with the Ray tests, which need none of them, instead of waiting for the first worker to draw
#: the synthetic images and extract their features (a core idle for ~85 s). Timings: docs/performance.md.
LONGEST_FIRST = ("notebooks/06_beyond.ipynb", "tests/test_scale.py", "notebooks/04_evaluate.ipynb",
                 "notebooks/07_search.ipynb", "notebooks/03_train.ipynb", "tests/test_csv_study.py")


#: The last state of a tqdm progress bar as nbval sees it (carriage returns folded), e.g.
#: ``seeds: 100%|██████████| 2/2 [00:02<00:00,  1.27s/it]`` or ``head fits: 0it [00:00, ?it/s]``.
PROGRESS_BAR = re.compile(r"^[^\n]*\[(?:\d+:)?\d\d:\d\d(?:<(?:(?:\d+:)?\d\d:\d\d|\?))?, [^\]\n]*\][^\n]*(?:\n|$)", re.M)


def without_progress_bars(outputs):
    """A cell's outputs without the progress bars on stderr: which bars a cell draws depends on what the cache
    already holds (a cold run draws every fit's), so nbval compares what remains, warnings included, and
    drops a stderr output that held bars only."""
    kept = []
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            text = PROGRESS_BAR.sub("", out["text"])
            if not text.strip():
                continue
            out = type(out)(dict(out, text=text))
        kept.append(out)
    return kept


def _compare_without_progress_bars(item):
    compare = item.compare_outputs
    item.compare_outputs = lambda test, ref, skip_compare=None: compare(
        without_progress_bars(test), without_progress_bars(ref), skip_compare)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
            _compare_without_progress_bars(item)
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable sort

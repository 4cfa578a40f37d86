"""Shared pytest set-up for the whole repository (tests/ and the notebooks that nbval re-executes).

nbval compares the text of notebook outputs, not their HTML/widget renderings. Every notebook is marked
``slow`` (as are the Ray-cluster and browser tests), so ``make test-fast`` (``-m "not slow"``) leaves them out.
"""
import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "application/javascript")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)

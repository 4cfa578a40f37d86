"""Shared pytest set-up: nbval compares the text of notebook outputs, not their HTML/widget renderings."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "application/javascript")

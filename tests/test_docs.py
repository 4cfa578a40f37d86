"""The project speaks of itself as it is: a README a newcomer reads in one screen's worth of scrolling, no
work-history wording anywhere a reader looks, and every relative link in README.md and docs/ resolves."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HISTORY = re.compile(r"\bsession [0-9]|\bissue #?[0-9]+", re.IGNORECASE)


def _files():
    yield ROOT / "README.md"
    for folder, pattern in (("docs", "*.md"), ("notebooks", "*.ipynb"), ("lib", "*.py"), ("tests", "*.py"),
                            ("benchmarks", "*.py")):
        yield from sorted((ROOT / folder).rglob(pattern))


def test_no_work_history_wording():
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()[:80]}" for p in _files() if p != Path(__file__)
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if HISTORY.search(line)]
    assert not found, "\n".join(found)


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_relative_links_resolve():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


#: Phrasings stronger than their CIs, or with no committed measurement behind them, that the docs once had.
OVERCLAIMS = {
    r"1\.3-fold on all|x1\.3, every backbone": "the ratio per split, with its CIs, is generated (README headline)",
    r"not (?:to )?new groups|no (?:gain|effect|boost) (?:on|for) (?:new|unseen) groups":
        "one seed's +0.18 [-0.03, +0.39] is 'no detectable difference', not an absence of effect",
    r"raw Lite models? (?:are |is )?no better|costlier raw backbones are not better":
        "raw Lite1 minus raw Lite0 is +0.54 [+0.13, +0.95] on the random split",
    r"14-18 ?%": "the filtered variant's excess is generated from the CSVs",
    r"±\s?0\.5(?![\d])|under 0\.7\b": "no committed measurement of the tie spread or a bound between readings",
    r"the original's stop rule": "state the rule: here 0.002 / 200 epochs, the original's code 0.001 / up to 2,000",
    r"one rule for every method(?! trained by epochs)|trained baselines alike": "LDA and NCA are not trained by epochs",
    r"every sentence below is backed": "not every number on the page is a paired CI",
    r"gain is smaller": "the two splits are not paired: no CI compares their gains",
}


def test_overclaims_do_not_come_back():
    found = [f"{p.relative_to(ROOT)}: {m.group(0)!r}: {why}"
             for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
             for pattern, why in OVERCLAIMS.items()
             for m in re.finditer(pattern, " ".join(p.read_text(encoding="utf-8").split()), re.IGNORECASE)]
    assert not found, "\n".join(found)


def test_the_longest_first_order_names_files_that_exist_and_make_test_keeps_it():
    """conftest.LONGEST_FIRST orders make test's files; a renamed file would silently drop out of it, and
    without --no-loadscope-reorder xdist would re-sort the files by their number of tests."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.LONGEST_FIRST and all((ROOT / p).is_file() for p in mod.LONGEST_FIRST), mod.LONGEST_FIRST
    assert mod.LONGEST_FIRST[0] == "notebooks/06_beyond.ipynb"
    make = (ROOT / "Makefile").read_text()
    test_recipe = make.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "--dist loadfile" in test_recipe and "--no-loadscope-reorder" in test_recipe

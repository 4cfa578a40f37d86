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

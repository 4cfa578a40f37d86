"""The house rules (pyproject.toml, [tool.importlinter]): the core imports neither wing, the wings do not
import each other, and each layer imports only the layers below it, so no import cycle can form.

The contracts are checked on the real package, and shown to fail on a copy with one bad import added."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def lint(lib: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(lib)}
    return subprocess.run([*LINT, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=lib, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_contracts():
    out = lint(ROOT / "lib")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("search/items.py", "from ..study import stats", "wings are independent"),          # wing -> other wing
    ("study/stats.py", "from ..search import items", "wings are independent"),         # the other way
    ("metrics.py", "from .study import stats", "wings are independent"),                # core -> a wing
    ("cache.py", "from . import heads", "wings are independent"),                       # a cycle in the core
    ("search/encoder.py", "from . import bundle", "Search wing"),                       # a cycle in a wing
])
def test_a_bad_import_breaks_a_contract(tmp_path, module, line, contract):
    lib = tmp_path / "lib"
    shutil.copytree(ROOT / "lib" / "attrboost", lib / "attrboost", ignore=shutil.ignore_patterns("__pycache__"))
    path = lib / "attrboost" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    out = lint(lib)
    assert out.returncode != 0, out.stdout
    broken = out.stdout.split("Broken contracts")[-1]
    assert contract in broken.replace("\n", " ") and "BROKEN" in out.stdout

"""What nbval compares: the progress-bar filter of the root conftest.py (docs/reproducibility.md, nbval)."""
import importlib.util
from pathlib import Path

import nbformat

_spec = importlib.util.spec_from_file_location("root_conftest", Path(__file__).resolve().parent.parent / "conftest.py")
root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(root_conftest)


def _stream(name, text):
    return nbformat.NotebookNode(output_type="stream", name=name, text=text)


def test_progress_bars_on_stderr_are_dropped_whatever_their_state():
    cold = _stream("stderr", "fits: 100%|██████████| 14/14 [1:02:03<00:00, 12.10s/it]\n"
                             "seeds:  50%|█████     | 1/2 [00:01<?, ?it/s]\n")
    warm = _stream("stderr", "head fits: 0it [00:00, ?it/s]\n")
    assert root_conftest.without_progress_bars([cold]) == []
    assert root_conftest.without_progress_bars([warm]) == []


def test_warnings_on_stderr_and_everything_on_stdout_are_kept():
    mixed = _stream("stderr", "fits: 100%|█| 2/2 [00:02<00:00,  1.27s/it]\n<PATH>:3: UserWarning: odd\n  warn()\n")
    out = _stream("stdout", "seed 0: 4000 images [00:02, 3it/s]\n")
    kept = root_conftest.without_progress_bars([mixed, out])
    assert [o["text"] for o in kept] == ["<PATH>:3: UserWarning: odd\n  warn()\n", out["text"]]
    assert kept[0]["name"] == "stderr"


def test_the_collection_hook_filters_both_sides_of_every_notebook_comparison():
    from pathlib import PurePath

    class Cell:  # what the hook touches of nbval's IPyNbCell
        path, nodeid, marks = PurePath("notebooks/x.ipynb"), "notebooks/x.ipynb::Cell 0", []

        def add_marker(self, mark):
            self.marks.append(mark)

        def compare_outputs(self, test, ref, skip_compare=None):
            return test == ref

    cell = Cell()
    root_conftest.pytest_collection_modifyitems([cell])
    printed = _stream("stdout", "4000 images\n")
    cold = [_stream("stderr", "fits: 100%|█| 3/3 [00:09<00:00,  3.00s/it]\n"), printed]
    assert cell.compare_outputs(cold, [printed])  # a cold run's bars against a committed warm run's none
    assert not cell.compare_outputs(cold, [_stream("stdout", "4001 images\n")])

"""Nothing the tool writes is lost: one writer at a time, atomic replacement, refusals before the work.

* :func:`writer_lock`: an exclusive lock per artefact (a model bundle or an index directory), held for the
  whole command (:func:`attrboost.locks.writer_lock`). A second writer is refused at once with the holder's
  PID and command.
* :func:`atomic_directory`: the artefact is written into a temporary sibling (``.<name>.tmp-<pid>``), every
  file and the directory fsync'ed, then swapped in by renames; the old version stays until the new one is
  complete, and a failure (disk full, an exception, ``kill -9``) leaves the old one in place. A swap cut
  between its two renames is finished by the next writer (:func:`recover`).
* :func:`check_out`: what an ``--out`` may be: absent, an empty folder, or the same kind of artefact (with
  ``--overwrite`` to replace it, or ``--add`` for an index); anything else is refused, naming what is there.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from .. import locks
from ..manifest import FORMAT, MANIFEST

__all__ = ["ArtefactError", "kind_of", "check_out", "writer_lock", "atomic_directory", "recover", "INDEX_FORMAT"]

INDEX_FORMAT = "attrboost-index"
KINDS = {"model": "a model bundle (attrboost fit)", "head": "a head bundle (BoostHead.save)",
         "index": "an index (attrboost index)"}


class ArtefactError(Exception):
    """An ``--out`` that cannot be written: another kind of content, a replacement not asked for, or another
    writer at work. The message says what is there and what to do."""


#: what an interrupted ``attrboost index --engine ray`` leaves in its ``--out``: the finished shards (resumed)
PARTIAL_ENTRIES = frozenset({"shards"})


def kind_of(directory: str | os.PathLike) -> str:
    """``"absent"``, ``"empty"``, ``"partial"`` (only what an interrupted index run leaves, resumed by the next),
    ``"model"``, ``"head"``, ``"index"`` or ``"other"`` (a file, or a folder with content that is not an
    attrboost artefact)."""
    directory = Path(directory)
    if not directory.exists():
        return "absent"
    if not directory.is_dir():
        return "other"
    entries = {p.name for p in directory.iterdir()}
    if not entries:
        return "empty"
    if entries <= PARTIAL_ENTRIES:
        return "partial"
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "other"
    if not isinstance(manifest, dict):
        return "other"
    if manifest.get("format") == INDEX_FORMAT:
        return "index"
    if manifest.get("format") == FORMAT:
        return "head" if manifest.get("contents") == "head" else "model"
    return "other"


def check_out(directory: str | os.PathLike, kind: str, *, overwrite: bool = False, add: bool = False) -> str:
    """Check that ``directory`` may receive a ``kind`` artefact (``"model"`` or ``"index"``) before any work;
    returns what is there now. ``add``: an index is appended to (it must exist); ``overwrite``: an existing
    artefact of the same kind is replaced. Check again under the writer lock, after :func:`recover`."""
    directory = Path(directory)
    there = kind_of(directory)
    what = KINDS.get(kind, kind)
    if add:
        if there != kind:
            found = "nothing" if there in ("absent", "empty", "partial") else KINDS.get(there, "other files")
            raise ArtefactError(f"--add: {directory} holds {found}, not {what}; drop --add to create it")
        return there
    if there in ("absent", "empty") or (there == "partial" and kind == "index"):
        return there
    if there == kind:
        if overwrite:
            return there
        short = {"model": "a model bundle", "index": "an index"}.get(kind, what)
        remedy = "--add to append to it, --overwrite" if kind == "index" else "--overwrite"
        raise ArtefactError(f"{directory} already holds {short}: pass {remedy} to replace it, or choose another "
                            f"--out")
    found = KINDS.get(there) or ("a file" if directory.is_file() else "files that are not an attrboost artefact")
    raise ArtefactError(f"{directory} holds {found}; it is not replaced by {what} (nothing is written there): "
                        f"choose a new or empty --out")


@contextlib.contextmanager
def writer_lock(directory: str | os.PathLike):
    """:func:`attrboost.locks.writer_lock` for an ``--out``: a second writer is an :class:`ArtefactError`. Once
    the lock is held, a swap that a killed writer left half done is finished or undone (:func:`recover`)."""
    try:
        with locks.writer_lock(directory, "the new one"):
            recover(directory)
            yield
    except locks.LockedError as exc:
        raise ArtefactError(f"{exc} (choose another --out)") from None


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def recover(directory: str | os.PathLike) -> None:
    """Finish or undo a swap that was cut between its renames (call with the writer lock held, or before any
    writer starts): a missing ``directory`` whose old version is still set aside gets it back; temporary
    siblings of dead writers are removed."""
    directory = Path(directory)
    old = locks.sibling(directory, "old")
    if old.exists() and not directory.exists():
        os.replace(old, directory)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)
    if directory.parent.is_dir():
        for tmp in directory.parent.glob(f".{directory.name}.tmp-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike, *, keep: tuple[str, ...] = ()):
    """Yield a temporary sibling directory to write the new ``directory`` into; when the block succeeds, make
    it durable and swap it in (the previous ``directory``, if any, is removed only then); when it fails,
    remove the temporary directory and leave ``directory`` as it was. ``keep``: names of entries of the old
    directory carried over into the new one when the block did not write them (e.g. Ray shards)."""
    directory = Path(directory)
    recover(directory)
    tmp = locks.sibling(directory, f"tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for name in keep:
            if (directory / name).exists() and not (tmp / name).exists():
                os.replace(directory / name, tmp / name)
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = locks.sibling(directory, "old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    fd = os.open(directory.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    shutil.rmtree(old, ignore_errors=True)

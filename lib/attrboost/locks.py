"""One writer at a time: an exclusive lock per artefact (a model, an index, a run set), held for a whole command.

:func:`writer_lock` holds a :mod:`filelock` lock on ``.<name>.lock`` beside the artefact, and writes who holds
it (PID, command, since when) to ``.<name>.lock.owner``, so that a second writer is refused at once with a
message naming the holder (:class:`LockedError`) instead of racing the first.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

__all__ = ["LockedError", "writer_lock", "sibling"]


class LockedError(RuntimeError):
    """Another process is writing the artefact; the message names it and what to do."""


def sibling(path: Path, tag: str) -> Path:
    """``.<name>.<tag>`` beside ``path``: where a lock, its owner or a swap's temporary folders live."""
    return path.parent / f".{path.name}.{tag}"


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike, what: str = "it"):
    """Hold the exclusive writer lock of ``path`` (a file or folder, existing or not) for the block; raise
    :class:`LockedError` at once when another process holds it."""
    from filelock import FileLock, Timeout

    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock, owner = FileLock(str(sibling(path, "lock")), timeout=0), sibling(path, "lock.owner")
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = owner.read_text(encoding="utf-8").strip()
        except OSError:
            holder = "holder unknown"
        raise LockedError(f"{path} is being written by another attrboost process ({holder}); wait for it to "
                          f"finish, or write {what} somewhere else") from None
    try:
        command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv else "python"
        owner.write_text(f"PID {os.getpid()}: {command}, since {time.strftime('%Y-%m-%d %H:%M:%S')}",
                         encoding="utf-8")
        yield
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()

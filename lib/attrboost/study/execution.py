"""Executing one notebook: papermill with a quiet kernel, failure records and progress lines.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from jupyter_client.manager import AsyncKernelManager

from .plan import EVALUE_CHARS, KERNEL, Execute, Step


# ----------------------------------------------------------------------------- executing a notebook
def quiet_kernel() -> dict:
    """nbclient options (for :func:`papermill.execute_notebook`) that keep a successful run quiet
    without hiding errors, each by removing a message's cause:

    * ``Kernel is running over TCP without encryption``: the kernel manager provisions CurveZMQ keys
      (jupyter_client's ``transport_encryption="auto"``; ipykernel supports ``curve``);
    * ``KeyboardInterrupt caught in kernel``: jupyter_client interrupts (SIGINT) every kernel it shuts
      down, and papermill shuts down right after the reply to its last ``kernel_info`` request, while the
      kernel is still in that request's handler. :class:`BatchKernelManager` skips that interrupt: papermill
      shuts a kernel down once its cells have finished or one failed, so it is idle; a busy one (Ctrl-C)
      still gets the shutdown request and is killed after ``shutdown_wait_time`` (5 s).
    """
    import zmq
    from traitlets.config import Config

    kw = {"kernel_manager_class": BatchKernelManager}
    if zmq.has("curve"):
        kw["config"] = Config({"KernelManager": {"transport_encryption": "auto"}})
    return kw


class BatchKernelManager(AsyncKernelManager):
    """jupyter_client's AsyncKernelManager, without the interrupt it sends a kernel it shuts down."""

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()


def papermill_execute(input_path, output_path, parameters=None, cwd=None, kernel_name=KERNEL,
                      progress_bar=False, **kw):
    """The default executor: :func:`papermill.execute_notebook` with a :func:`quiet_kernel`."""
    import papermill

    return papermill.execute_notebook(input_path, output_path, parameters=parameters, cwd=cwd,
                                      kernel_name=kernel_name, progress_bar=progress_bar, **{**quiet_kernel(), **kw})


def execute_step(execute: Execute, step: Step, root: Path) -> None:
    Path(step.output_path).parent.mkdir(parents=True, exist_ok=True)
    execute(step.input_path, step.output_path, parameters=dict(step.parameters), cwd=str(root),
            kernel_name=KERNEL, progress_bar=False)


def failure_info(exc: BaseException) -> dict:
    """``ename``/``evalue`` of a papermill execution error (or of any exception)."""
    ename = getattr(exc, "ename", None) or type(exc).__name__
    evalue = getattr(exc, "evalue", None)
    evalue = str(exc) if evalue is None else str(evalue)
    return {"ename": str(ename), "evalue": evalue[:EVALUE_CHARS]}


def fmt_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(round(s)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m{s:02d}s"


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def missing_notebooks(paths: Iterable[str]) -> list[str]:
    return [p for p in dict.fromkeys(paths) if not Path(p).is_file()]


class Progress:
    """Prints progress lines (through tqdm.write, so an optional bar stays intact) with elapsed time."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.t0, self.write = time.perf_counter(), tqdm.write
        self.bar = tqdm(total=total, unit="nb", desc="study", disable=None, leave=False)
        self.update, self.close = self.bar.update, self.bar.close

    def say(self, text: str) -> None:
        self.write(f"{text}  [elapsed {fmt_seconds(self.elapsed)}]")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0



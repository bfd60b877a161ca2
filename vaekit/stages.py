"""Run the two stages of a hand-in's code (encode, then decode), each task on its share of the time.

Each stage runs in its own sandboxed process (``vaekit.protocol``). Here: what each stage's process reads and is
sent, its clock (each task's share of the time), and the checks on the codes an encoder returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .course import SubmissionError
from .intake import private_copy
from .judge import npz_bytes
from .protocol import FrameReader, Worker, WorkerRun, reply_int, task_reply

if TYPE_CHECKING:
    from .intake import Prepared


def stage_files(prepared: list[Prepared], dest: Path) -> Path:
    """One private, read-only copy of what a stage's process reads: ``submission.py`` and ``<task>/epoch.pth``,
    ``<task>/hyperparameters.txt`` for each task."""
    for p in prepared:
        private_copy({"submission.py": p.sources["submission.py"]}, dest)
        private_copy({name: p.sources[name] for name in ("epoch.pth", "hyperparameters.txt")}, dest / p.task)
    return dest


def stage_request(tasks: list[str], **arrays: np.ndarray) -> bytes:
    """What a stage's process is sent: the tasks to do now, in order, and their inputs (a process started for both
    tasks may be asked for one)."""
    return npz_bytes(tasks=np.array(tasks), **arrays)


EXIT_GRACE_S = 10.0  # how long a process may take to exit after its last reply


class StageClock:
    """Each task's share of a stage's time, from the worker's frames as they arrive: a task's clock runs from the
    end of the one before it (or the start of the stage) to its own reply; the worker is stopped when the task it
    is on has used its budget. The replies are kept as they come (``replies``)."""

    def __init__(self, tasks: list[str], budgets: dict[str, float]):
        self.tasks, self.budgets = tasks, budgets
        self.since = time.monotonic()
        self.spent: dict[str, float] = {}
        self.replies: dict[str, bytes] = {}
        self.reader = FrameReader(tasks)

    def deadline(self, chunks: list[bytes]) -> float:
        for kind, task, payload in self.reader.feed(chunks):
            if kind == "done":
                now = time.monotonic()
                self.spent[task] = now - self.since
                self.since = now
                self.replies[task] = payload
        current = next((t for t in self.tasks if t not in self.spent), None)
        return self.since + (self.budgets[current] if current else EXIT_GRACE_S)


def run_stage(mode: str, first: Worker, start: Callable[[list[str]], Worker], request: Callable[[list[str]], bytes],
              tasks: list[str], budgets: dict[str, float], timeout: float
              ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str], dict[str, float], set[str]]:
    """Run one stage (``encode`` or ``decode``) for ``tasks`` in one process, in order; returns (replies, errors,
    seconds spent) per task and the tasks that timed out. A task that hangs, dies or floods has the error; the tasks
    after it get a fresh process, so one task's failure never costs the other its grade."""
    what = {"encode": "encoding the test images", "decode": "decoding"}[mode]
    replies: dict[str, dict[str, np.ndarray]] = {}
    errors: dict[str, str] = {}
    spent: dict[str, float] = {}
    timed_out: set[str] = set()
    remaining, worker = list(tasks), first
    while remaining:
        clock = StageClock(remaining, budgets)
        run = worker.run(request(remaining), clock.deadline)
        clock.deadline(worker.out)  # the frames that came after the last look
        for i, task in enumerate(remaining):
            spent[task] = clock.spent.get(task, time.monotonic() - clock.since)
            if task not in clock.replies:
                errors[task] = stage_failure(run, what, timeout)
                if run.timed_out:  # a hang, or a machine too busy: not a verdict (is_final)
                    timed_out.add(task)
                remaining = remaining[i + 1:]
                break
            try:
                replies[task] = task_reply(clock.replies[task], what)
            except SubmissionError as e:
                errors[task] = str(e)
        else:
            remaining = []
        if remaining:
            worker = start(remaining)
    return replies, errors, spent, timed_out


def check_codes(enc: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The codes of the test images from an encoder's reply, checked."""
    latent_dim = reply_int(enc, "latent_dim")
    mu = enc.get("mu")
    if not isinstance(mu, np.ndarray) or mu.dtype != np.float32 or mu.ndim != 2 or len(mu) != n:
        raise SubmissionError("encoding must give mu shaped [N, latent_dim] for the N test images.")
    if mu.shape[1] != latent_dim:
        raise SubmissionError(f"encoding gave mu of width {mu.shape[1]}, but latent_dim is {latent_dim}.")
    if not np.isfinite(mu).all():
        raise SubmissionError("encoding gave NaN or infinite values in mu.")
    return mu


def stage_failure(run: WorkerRun, what: str, timeout: float) -> str:
    """Why the task a worker was on when it stopped has no reply, in one sentence."""
    if run.timed_out:
        return f"timed out after {timeout:g} s while {what} (the submission hung or was too slow)."
    if run.overflow:
        return f"the submission's process sent back more than the grader accepts while {what}."
    how = f"killed by signal {-run.returncode}" if run.returncode < 0 else f"exit status {run.returncode}"
    return f"the submission's process died while {what} ({how}): {run.stderr_tail}"[:1500]

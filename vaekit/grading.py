"""Grade a submission folder or zip: run its models in sandboxed workers, score their outputs here (``vaekit.scoring``).

The grader holds the test set and the classifier (a "judge"). The submission's code runs twice per task, each
time in a fresh sandbox (``vaekit.isolation``; the process and its replies: ``vaekit.protocol``), on a private copy
of its files (``vaekit.intake``): an encoding process that gets the test images through a
pipe and returns only ``mu``, and a decoding process that never sees a test image and turns those codes
(and N(0, I) noise) into images. Every failure becomes a per-task ``error`` with score 0.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .checkpoint import CheckpointError
from .course import GradingMachineError, SubmissionError
from .grade_record import TaskGrade, error_results, write_result
from .intake import Prepared, copy_hand_in, prepare_task, safe_extract
from .isolation import SubmissionCgroup, resolve_isolation
from .judge import Judge
from .protocol import Worker
from .scoring import Replies, score_task
from .settings import GradeSettings
from .stages import check_codes, run_stage, stage_files, stage_request

__all__ = ["GradeSettings", "grade_submission", "grade_tasks"]


def grade_tasks(judge: Judge, root: Path, tasks: list[str], work: Path, settings: GradeSettings, isolation: str,
                cgroup: SubmissionCgroup | None, preview_dir: Path) -> dict[str, TaskGrade]:
    """Grade the tasks of one submission: one encoding process for all of them, then — once it has exited — one
    decoding process per task that never saw a test image nor another task's codes, then the scores here."""
    t0 = time.perf_counter()
    prepared: dict[str, Prepared] = {}
    errors: dict[str, str] = {}
    for task in tasks:
        try:
            prepared[task] = prepare_task(root, task, settings)
        except (SubmissionError, CheckpointError) as e:
            errors[task] = str(e)
        except OSError as e:
            errors[task] = f"could not read the task's files: {e}"
    ok = [t for t in tasks if t in prepared]
    timing: dict[str, dict[str, float]] = {t: {} for t in tasks}
    machine: set[str] = set()  # tasks that failed for the machine's sake (timed out)
    enc: dict[str, dict[str, np.ndarray]] = {}
    dec: dict[str, dict[str, np.ndarray]] = {}
    if ok:
        files = {mode: stage_files([prepared[t] for t in ok], work / mode) for mode in ("encode", "decode")}
        job = {"per_label": settings.per_label, "threads": settings.threads,
               "memory_bytes": int(settings.memory_gb * 2**30)}

        def worker(mode: str, names: list[str]) -> Worker:
            specs = [{"task": t, "seed": prepared[t].seed} for t in names]
            try:
                return Worker(mode, {**job, "tasks": specs}, files[mode], isolation, settings.threads, cgroup)
            except OSError as e:
                raise GradingMachineError(f"a grading process could not start ({e}).") from e

        # The processes start now and import torch side by side; a decoder runs no student code before its input.
        # One decoder per task: each gets its own task's codes only (a code carries what latent_dim numbers carry).
        workers = {"encode": worker("encode", ok)}
        try:
            workers.update({f"decode {t}": worker("decode", [t]) for t in ok})
            budgets = {t: settings.timeout for t in ok}
            enc, enc_errors, spent, machine = run_stage("encode", workers["encode"], partial(worker, "encode"),
                                               lambda names: stage_request(names, x=judge.test_u8, y=judge.test_y),
                                               ok, budgets, settings.timeout)
            errors.update(enc_errors)
            mus: dict[str, np.ndarray] = {}
            for t in enc:
                timing[t]["encode_s"] = round(spent[t], 2)
                try:
                    mus[t] = check_codes(enc[t], len(judge.test))
                except SubmissionError as e:
                    errors[t] = str(e)
            for t in enc_errors:
                timing[t]["encode_s"] = round(spent[t], 2)
            # The encoder has exited (run_stage waits for it): only now does any decoder get input.
            for t in (t for t in ok if t in mus):
                codes = lambda names, t=t: stage_request(names, y=judge.test_y, **{f"{t}.mu": mus[t]})  # noqa: E731
                replies, dec_errors, dec_spent, late = run_stage(
                    "decode", workers[f"decode {t}"], partial(worker, "decode"), codes, [t],
                    {t: max(1.0, settings.timeout - spent[t])}, settings.timeout)
                machine |= late
                dec.update(replies)
                errors.update(dec_errors)
                timing[t]["decode_s"] = round(dec_spent[t], 2)
        finally:
            for w in workers.values():
                w.kill()
    # The tasks are scored side by side: the two cores stay busy. numpy's BLAS gets one thread while they do: with
    # its own thread per core each, the two tasks' matrix work ran a third slower than with one (measured).
    memory_cap = cgroup.kind if cgroup else "per-process"
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max(1, len(tasks))) as pool:
        futures = {t: pool.submit(score_task, judge, Replies(t, prepared.get(t), enc.get(t), dec.get(t),
                                                             errors.get(t), t in machine),
                                  settings, isolation, memory_cap, preview_dir) for t in tasks}
        results = {t: f.result() for t, f in futures.items()}
    for t, grade in results.items():
        grade.timing = {**timing[t], "total_s": round(time.perf_counter() - t0, 2)}
    return results


def grade_submission(judge: Judge, submission: Path, out_dir: Path, tasks: list[str],
                     settings: GradeSettings) -> dict[str, TaskGrade]:
    """Grade a folder or zip; write ``out_dir/<task folder>/grade_result.json`` for each task. Never raises for
    what the submission holds: a zip or folder that cannot be read is every task's error."""
    out_dir, submission = Path(out_dir).resolve(), Path(submission).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fresh, uniquely named work folder: nothing the submission placed in out_dir (a folder graded in place) is
    # ever followed, written into or deleted.
    work = Path(tempfile.mkdtemp(prefix=".grade_work-", dir=out_dir))
    results: dict[str, TaskGrade] = {}
    cgroup = None
    try:
        isolation, isolation_warning = resolve_isolation(settings.isolation)
        if submission.is_file() and submission.suffix == ".zip":
            root = copy_hand_in(safe_extract(submission, work / "unzipped"), work / "copy")
        elif submission.is_dir():
            root = copy_hand_in(submission, work / "copy")
        else:
            raise SubmissionError(f"{submission.name} is neither a folder nor a .zip file.")
        # All the submission's processes share one memory cap and one process count.
        if isolation == "bubblewrap":
            cgroup = SubmissionCgroup(int(settings.memory_gb * 2**30))
        results = grade_tasks(judge, root, tasks, work, settings, isolation, cgroup, out_dir)
        for grade in results.values():
            if isolation_warning:
                grade.warnings = [*(grade.warnings or []), isolation_warning]
    except Exception as e:  # noqa: BLE001 - one hand-in never stops a batch: whatever reading it raised is its error
        error = str(e) if isinstance(e, SubmissionError) else (
            f"the submission could not be read ({type(e).__name__}: {str(e)[:300]}).")
        results.update(error_results(tasks, error, machine=isinstance(e, GradingMachineError)))
    finally:
        if cgroup is not None:
            cgroup.close()
        shutil.rmtree(work, ignore_errors=True)
    for res in results.values():
        write_result(out_dir, res)
    return results

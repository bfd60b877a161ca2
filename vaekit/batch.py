"""Grade a class: every zip or folder in a folder, on this machine or on a Dask cluster, resumable.

Each submission is first *staged* on the machine that runs ``grade.py``: the files the grader reads, as one
deterministic stored zip (a folder's links and special files are refused here, as in single grading). Its sha256 and
the grading settings make its *key*. A submission whose output folder already holds results under the same key is
not graded again (an interrupted batch resumes; a late or changed hand-in is graded on the next run); ``regrade``
grades all.

The staged zip then goes to a grader: a thread of this process (``--scheduler local``) or one task on a Dask
cluster (``vaekit.cluster``, imported only then), where each worker builds the judge once (the test set and the
classifier travel once per worker, not once per task) and runs the submission's sandbox itself. Either way the grader
returns the task results and the files it wrote, and only this process writes them, with the CSV and the page. A
worker that dies mid-task has its submission graded elsewhere (Dask retries it); one that dies on every try leaves an
error row.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .course import TASKS, SubmissionError
from .data import dataset_sha256, load_test_data
from .escape import output_names
from .grade_record import TaskGrade, error_results, is_final, write_result
from .gradepage import RECON_PNG, SAMPLES_PNG
from .grading import GradeSettings, grade_submission
from .intake import MAX_ZIP_BYTES, copy_hand_in
from .judge import Judge
from .outputs import output_path, write_atomic, write_text
from .progress import Progress
from .settings import BatchSettings

KEY_FILE = ".grade_key"  # in each submission's output folder, written last: its results are complete


@dataclass
class Staged:
    name: str
    payload: bytes | None  # a stored zip of what the grader reads; None when the hand-in could not be read
    error: str | None = None
    sha256: str = ""


def stage(entry: Path, name: str) -> Staged:
    """The hand-in as the bytes every grader gets (the same bytes for the same files, whatever their timestamps);
    ``name`` is its output folder's (``escape.output_names``)."""
    try:
        if entry.is_file():
            if entry.stat().st_size > MAX_ZIP_BYTES:
                raise SubmissionError(f"{entry.name} is larger than {MAX_ZIP_BYTES // 2**20} MiB.")
            payload = entry.read_bytes()
        else:
            with tempfile.TemporaryDirectory() as tmp:
                copy = copy_hand_in(entry, Path(tmp) / "copy")
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                    for path in sorted(p for p in copy.rglob("*") if p.is_file()):
                        zf.writestr(zipfile.ZipInfo(path.relative_to(copy).as_posix()), path.read_bytes())
                payload = buf.getvalue()
    except SubmissionError as e:
        return Staged(name, None, str(e))
    except OSError as e:
        return Staged(name, None, f"the submission could not be read ({type(e).__name__}: {str(e)[:300]}).")
    return Staged(name, payload, None, hashlib.sha256(payload).hexdigest())


def settings_key(settings: GradeSettings, tasks: list[str], test_sha256: str, classifier_sha256: str) -> str:
    """What a grade depends on besides the submission: the test set, the classifier, the seed and secret, the
    counts and limits, and the kit's version."""
    fields = {**asdict(settings), "secret": hashlib.sha256(settings.secret.encode()).hexdigest(), "tasks": tasks,
              "test_sha256": test_sha256, "classifier_sha256": classifier_sha256, "kit": kit_version()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def kit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vaekit")
    except PackageNotFoundError:
        return "unknown"


def grade_staged(judge: Judge, staged: Staged, tasks: list[str], settings: GradeSettings
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    """Grade one staged submission; returns (results per task, the files written: relative path -> bytes)."""
    with tempfile.TemporaryDirectory(prefix="vaekit-batch-") as tmp:
        handin = Path(tmp) / "handin.zip"
        handin.write_bytes(staged.payload)
        out = Path(tmp) / "out"
        results = grade_submission(judge, handin, out, tasks, settings)
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
                 if p.is_file() and not p.is_symlink()}
    return results, files


# -- the batch ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    results: dict[str, TaskGrade]
    final: bool  # a verdict on the submission (graded, or its own error), kept for a resumed batch


def read_done(out: Path, name: str, key: str, tasks: list[str]) -> dict[str, TaskGrade] | None:
    """The results a previous run left for ``name`` under ``key``, or None when it must be graded."""
    folder = out / name
    try:
        if (folder / KEY_FILE).read_text() != key:
            return None
        return {t: TaskGrade.read(folder / TASKS[t].folder / "grade_result.json") for t in tasks}
    except (OSError, ValueError, TypeError):
        return None


def write_outcome(out: Path, outcome: Outcome, files: dict[str, bytes], key: str) -> None:
    """Replace the submission's output folders with what its grader wrote; the key last, only for a verdict."""
    folder = out / outcome.name
    (folder / KEY_FILE).unlink(missing_ok=True)
    for r in outcome.results.values():
        shutil.rmtree(folder / r.folder, ignore_errors=True)
    for rel, data in files.items():
        write_atomic(output_path(folder, rel), lambda p, d=data: p.write_bytes(d))
    for r in outcome.results.values():
        write_result(folder, r)
    if outcome.final:
        write_text(folder, KEY_FILE, key)


def accepted(reply: Any, tasks: list[str]) -> tuple[dict[str, TaskGrade], dict[str, bytes]]:
    """What a grader (a thread here, or a cluster's worker) sent back, kept only where it is what a grader writes:
    one result per task, each in its own task folder, and the preview images by their names, nothing else (no other
    name or path reaches ``--out``; each ``grade_result.json`` is written here from its result). Raises ``ValueError``
    for anything else."""
    results, files = reply
    if not isinstance(results, dict) or sorted(results) != sorted(tasks):
        raise ValueError("the grader sent back results for other tasks")
    grades = {}
    for task, r in results.items():  # a fresh record made here from the fields sent (nothing else of theirs kept)
        if not isinstance(r, TaskGrade) or r.folder != TASKS[task].folder or r.task != task:
            raise ValueError(f"the grader sent back a {task} result for another folder")
        grades[task] = TaskGrade.from_dict(r.to_dict())
    known = {f"{TASKS[t].folder}/{name}" for t in tasks for name in (SAMPLES_PNG, RECON_PNG)}
    return grades, {rel: data for rel, data in files.items() if rel in known and isinstance(data, bytes)}


class BatchRun:
    """One pass over a class's hand-ins: resume what is done (unless ``regrade``), stage each of the rest only when
    a slot frees, write each outcome as it arrives. ``grade(staged)`` returns a future of ``(results, files)``;
    ``key_of(sha256)`` is a submission's key; ``cluster_errors``: what a lost worker raises."""

    def __init__(self, entries: list[Path], out: Path, tasks: list[str], key_of: Callable[[str], str],
                 grade: Callable[[Staged], Any], batch: BatchSettings,
                 cluster_errors: tuple[type[BaseException], ...] = ()):
        self.entries, self.out, self.tasks, self.key_of, self.grade = entries, out, tasks, key_of, grade
        self.batch, self.cluster_errors = batch, cluster_errors
        self.names = output_names(entries)  # each hand-in's folder under out: safe and unique
        self.outcomes: dict[str, Outcome] = {}
        self.pending: dict[Any, tuple[Staged, str]] = {}
        self.graded = 0

    def run(self) -> tuple[list[Outcome], int]:
        """(one outcome per entry, in order; how many were graded now)."""
        todo = []
        for entry in self.entries:
            name = self.names[entry]
            done = None if self.batch.regrade else _resumable(self.out, entry, name, self.tasks, self.key_of)
            if done is not None:
                self.outcomes[name] = Outcome(name, done, True)
            else:
                todo.append(entry)
        self.progress = Progress(len(self.entries), len(self.outcomes))
        self.started, self.queue = time.monotonic(), iter(todo)
        try:
            while len(self.pending) < self.batch.slots and self.submit_next():
                pass
            while self.pending:
                for future in _completed(self.pending):
                    staged, key = self.pending.pop(future)
                    self.finish(*self.collect(staged, future), key)
                    self.submit_next()
        finally:
            for future in self.pending:
                future.cancel()
            self.progress.close()
        return [self.outcomes[self.names[e]] for e in self.entries], self.graded

    def submit_next(self) -> bool:
        """Stage the next hand-in and send it to a grader; False when none is left."""
        budget = self.batch.budget
        for entry in self.queue:
            staged = stage(entry, self.names[entry])
            key = self.key_of(staged.sha256)
            if staged.payload is None:
                self.finish(Outcome(staged.name, error_results(self.tasks, staged.error), True), {}, key)
                continue
            if budget is not None and time.monotonic() - self.started > budget:
                error = (f"not graded: the batch's budget of {budget:g} s (--batch-budget) ran out before this "
                         "submission started.")
                self.finish(Outcome(staged.name, error_results(self.tasks, error), False), {}, key)
                continue
            self.pending[self.grade(staged)] = (staged, key)
            return True
        return False

    def collect(self, staged: Staged, future: Any) -> tuple[Outcome, dict[str, bytes]]:
        """A finished grader's outcome; a lost worker or a grader bug is this hand-in's row, not the batch's end."""
        try:
            results, files = accepted(future.result(), self.tasks)
            return Outcome(staged.name, results, is_final(results)), files
        except self.cluster_errors as e:
            return Outcome(staged.name, error_results(self.tasks, (
                f"not graded: every worker that took this submission died ({type(e).__name__}); it may "
                "kill its grader, or the cluster lost workers. Rerun to retry it.")), False), {}
        except Exception as e:  # noqa: BLE001 - a grader bug on one hand-in is that hand-in's row
            return Outcome(staged.name, error_results(
                self.tasks, f"grader error: {type(e).__name__}: {str(e)[:300]}"), False), {}

    def finish(self, outcome: Outcome, files: dict[str, bytes], key: str) -> None:
        write_outcome(self.out, outcome, files, key)
        self.outcomes[outcome.name] = outcome
        self.graded += 1
        self.progress.update(outcome.name, any(r.error for r in outcome.results.values()))


def run_batch(entries: list[Path], out: Path, tasks: list[str], key_of: Callable[[str], str],
              grade: Callable[[Staged], Any], batch: BatchSettings | None = None,
              cluster_errors: tuple[type[BaseException], ...] = ()) -> tuple[list[Outcome], int]:
    """Grade ``entries`` into ``out`` (see ``BatchRun``); returns (one outcome per entry, in order; how many were
    graded now)."""
    return BatchRun(entries, out, tasks, key_of, grade, batch or BatchSettings(), cluster_errors).run()


def _resumable(out: Path, entry: Path, name: str, tasks: list[str], key_of: Callable[[str], str]
               ) -> dict[str, TaskGrade] | None:
    if not (out / name / KEY_FILE).is_file():
        return None  # never graded: no need to stage it twice
    staged = stage(entry, name)
    return read_done(out, name, key_of(staged.sha256), tasks)


def _completed(pending: dict[Any, Any]) -> list[Any]:
    """The finished futures among ``pending`` (concurrent.futures or Dask ones), waiting for at least one."""
    futures = list(pending)
    if futures and type(futures[0]).__module__.startswith("distributed"):
        from distributed import wait as dask_wait

        return list(dask_wait(futures, return_when="FIRST_COMPLETED").done)
    return list(wait(futures, return_when=FIRST_COMPLETED).done)


def local_grader(judge: Judge, tasks: list[str], settings: GradeSettings, jobs: int
                 ) -> tuple[Callable[[Staged], Any], ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(jobs)

    def grade(staged: Staged) -> Any:
        return pool.submit(grade_staged, judge, staged, tasks, settings)

    return grade, pool


def test_set_sha256(test_data: str | None) -> str:
    return dataset_sha256(load_test_data(test_data))


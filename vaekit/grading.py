"""Grade a submission folder or zip: run its models in sandboxed workers, score their outputs here (``vaekit.scoring``).

The grader holds the test set and the classifier (a "judge"). The submission's code runs twice per task, each
time in a fresh sandbox (``vaekit.isolation``; the process and its replies: ``vaekit.protocol``), on a private copy
of its files (``vaekit.intake``): an encoding process that gets the test images through a
pipe and returns only ``mu``, and a decoding process that never sees a test image and turns those codes
(and N(0, I) noise) into images. Every failure becomes a per-task ``error`` with score 0.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import course_inference, metrics
from .checkpoint import CheckpointError, file_sha256, library_versions, model_spec, read_hyperparameters
from .course import (
    MODEL_FILES,
    TASKS,
    TRAINER_HYPERPARAMETERS,
    GradingMachineError,
    SubmissionError,
    model_files,
    stale_reason,
)
from .gradepage import save_previews
from .intake import copy_hand_in, private_copy, safe_extract
from .isolation import SubmissionCgroup, resolve_isolation
from .judge import Judge, npz_bytes
from .protocol import FrameReader, Worker, reply_array, reply_int, reply_warnings, stage_failure, task_reply
from .results import error_results, round_floats, write_result
from .scoring import course_fields, flag, score_gen, score_vae, split_fields
from .worker import repeat_picks

MAX_SUBMISSION_PY = 2**20  # bytes; a submission.py is a few kB
MAX_HYPERPARAMETERS = 2**20


@dataclass(frozen=True)
class GradeSettings:
    seed: int = 0  # with the secret and the submission's files, seeds its sampling noise (see sampling_seed)
    per_label: int = 1000  # generated images per digit for the classifier metrics (the course replay: 10 / 100)
    timeout: float = 300.0  # seconds for all the processes of one task together (encoding, then decoding)
    memory_gb: float = 8.0  # the submission's memory: all its processes' resident memory together (a cgroup,
    # where the grader may make one) and each process's address space (torch alone maps about 4 GB)
    secret: str = ""  # a TA's secret mixed into the sampling seed, so no student can compute their noise
    threads: int = 1  # CPU threads of the judge and of each worker: one, as the tasks already run side by side
    isolation: str = "auto"  # auto | required | none (see isolation.resolve_isolation)
    derived: bool = False  # ``secret`` already holds sampling_key(secret): what a cluster's worker gets

    def for_workers(self) -> GradeSettings:
        """What a cluster's worker is sent: the secret replaced by the key derived from it, which seeds the same
        noise but tells a worker (or whoever runs one) nothing of the secret itself."""
        return self if self.derived else replace(self, secret=sampling_key(self.secret), derived=True)


def sampling_key(secret: str) -> str:
    """The key the sampling seeds are made with: an HMAC of the TA's secret (none without one)."""
    return hmac.new(secret.encode(), b"vaekit sampling seed", "sha256").hexdigest() if secret else ""


def sampling_seed(settings: GradeSettings, *file_hashes: str) -> int:
    """The seed of a submission's sampling noise: fixed for the same files (a regrade is byte-identical), different
    for different files, and unknowable without the TA's ``secret`` — samples cannot be tuned to the grader's noise."""
    key = settings.secret if settings.derived else sampling_key(settings.secret)
    data = "\0".join([str(settings.seed), key, *file_hashes]).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big") >> 1


# -- the two stages -------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A task whose files passed the checks, ready for its workers."""

    task: str
    class_name: str
    sources: dict[str, Path]  # the hand-in's submission.py, checkpoint and hyperparameters file
    files: dict[str, str]  # the file names graded (the brief's or the course trainer's)
    epoch_sha256: str
    seed: int  # of the sampling noise
    stale: str | None = None  # the folder records another submission.py than this one (``course.stale_reason``)


def prepare_task(root: Path, task: str, settings: GradeSettings) -> Prepared:
    """Check one task's files; raises ``SubmissionError`` / ``CheckpointError`` for a bad submission."""
    spec = TASKS[task]
    folder = root / spec.folder
    ckpt, hp_file = model_files(folder)
    missing = [name for name, path in ((f"{MODEL_FILES[0]} (or an epoch_<N>.pth)", ckpt),
                                        (f"{MODEL_FILES[1]} (or {TRAINER_HYPERPARAMETERS})", hp_file)) if path is None]
    if not (root / "submission.py").is_file():
        missing.insert(0, "submission.py")
    if missing:
        raise SubmissionError(f"missing {', '.join(missing)} in {spec.folder}/ (see the required layout).")
    for path, cap in ((root / "submission.py", MAX_SUBMISSION_PY), (hp_file, MAX_HYPERPARAMETERS)):
        if path.stat().st_size > cap:
            raise SubmissionError(f"{path.name} is larger than {cap // 1024} KiB.")
    class_name, _ = model_spec(read_hyperparameters(hp_file), spec.model_class)
    sources = {"submission.py": root / "submission.py", "epoch.pth": ckpt, "hyperparameters.txt": hp_file}
    hashes = {name: file_sha256(path) for name, path in sources.items()}
    return Prepared(task, class_name, sources, {"checkpoint": ckpt.name, "hyperparameters": hp_file.name},
                    hashes["epoch.pth"], sampling_seed(settings, *hashes.values()),
                    stale_reason(folder, task, sources["submission.py"], submission_sha256=hashes["submission.py"],
                                 epoch_sha256=hashes["epoch.pth"]))


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


def grade_tasks(judge: Judge, root: Path, tasks: list[str], work: Path, settings: GradeSettings, isolation: str,
                cgroup: SubmissionCgroup | None, preview_dir: Path) -> dict[str, dict[str, Any]]:
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
    # The tasks are scored side by side: the two cores stay busy.
    with ThreadPoolExecutor(max(1, len(tasks))) as pool:
        futures = {t: pool.submit(score_task, judge, t, prepared.get(t), enc.get(t), dec.get(t), errors.get(t),
                                  settings, isolation, cgroup, preview_dir, t in machine) for t in tasks}
        results = {t: f.result() for t, f in futures.items()}
    for t, r in results.items():
        r["timing"] = {**timing[t], "total_s": round(time.perf_counter() - t0, 2)}
    return results


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


def repeat_difference(dec: dict[str, np.ndarray], recon: np.ndarray, samples: np.ndarray) -> float:
    """Mean gray levels between the images graded and the same codes and noise decoded once more (a deterministic
    decoder: 0), computed here from both, to three decimals (float noise between batch sizes reads 0)."""
    n, pick = repeat_picks(len(recon), len(samples))
    again = reply_array(dec, "repeat", (n + len(pick), 28, 28), np.uint8).astype(np.int16)
    first = np.concatenate([recon[:n], samples[pick.numpy()]]).astype(np.int16)
    return round(float(np.abs(again - first).mean()), 3)


def builds_nothing(error: str, class_name: str) -> bool:
    """The error says the submission could not rebuild the folder's model: its constructor refused the recorded
    arguments (``course.build_model``), the weights do not fit (``checkpoint.load_weights``), or the class is gone."""
    return (error.startswith(f"{class_name}(**") or "checkpoint does not fit the model" in error
            or "has no nn.Module class" in error)


def score_task(judge: Judge, task: str, prepared: Prepared | None, enc: dict[str, np.ndarray] | None,
               dec: dict[str, np.ndarray] | None, error: str | None, settings: GradeSettings, isolation: str,
               cgroup: SubmissionCgroup | None, preview_dir: Path | None, machine: bool = False) -> dict[str, Any]:
    """One task's result from its workers' replies (or the error that stopped it; ``machine``: for the grading
    machine's sake, recorded as ``machine_failure``); never raises."""
    spec = TASKS[task]
    result: dict[str, Any] = {"task": task, "folder": spec.folder, "isolation": isolation, "max_score": spec.max_score}
    settings_rec = {"seed": settings.seed, "samples_per_label": settings.per_label,
                    "course_replay": {"seed": course_inference.SEED, "batch_size": course_inference.BATCH_SIZE,
                                      "samples_per_digit": course_inference.SAMPLES_PER_DIGIT[task]},
                    "n_reconstructions": len(judge.test),
                    **({"test_set": "hidden"} if judge.hidden else {"test_sha256": judge.test_sha256}),
                    "classifier_sha256": judge.classifier_sha256, "versions": library_versions()}
    if prepared is not None:
        settings_rec["epoch_sha256"] = prepared.epoch_sha256  # lets pack.py spot a stale grade
        settings_rec["sampling_seed"] = prepared.seed
        settings_rec["memory_cap"] = cgroup.kind if cgroup else "per-process"
    stale = prepared.stale if prepared is not None else None
    try:
        if error is not None:
            # A folder trained from another submission.py that this one cannot rebuild fails for that reason, not for
            # the arguments or weights it records; any other failure keeps its own sentence, the stale one after it.
            if stale and builds_nothing(error, prepared.class_name):
                raise SubmissionError(stale)
            raise SubmissionError(f"{error} ({stale})" if stale else error)
        latent_dim = reply_int(enc, "latent_dim")
        if reply_int(dec, "latent_dim") != latent_dim:
            raise SubmissionError("the encoding and decoding processes built models of different latent_dim.")
        labels = np.repeat(np.arange(10), settings.per_label)
        recon = reply_array(dec, "recon", judge.test_u8.shape, np.uint8)
        samples = reply_array(dec, "samples", (len(labels), 28, 28), np.uint8)
        warnings = reply_warnings(dec)
        recorded = reply_int(enc, "latent_dim_recorded")
        names = prepared.files
        if recorded >= 0:
            warnings.append(
                f"{names['hyperparameters']} records latent_dim {recorded}, but {names['checkpoint']} holds "
                f"a model of latent_dim {latent_dim} (the course's train.py records 20 whatever the size): "
                f"graded with {latent_dim}. The course's grade.py takes its bonus from latent_dim {recorded} "
                f"(bonus {metrics.latent_bonus(recorded):.4f} instead of {metrics.latent_bonus(latent_dim):.4f}).")
        if stale:
            warnings.append(f"{stale[:-1]}; graded as it is, since this submission.py loads it.")
        if names["checkpoint"] != MODEL_FILES[0] or names["hyperparameters"] != MODEL_FILES[1]:
            warnings.append(f"graded {names['checkpoint']} and {names['hyperparameters']}; the "
                            f"brief asks for {MODEL_FILES[0]} and {MODEL_FILES[1]} in {spec.folder}/.")
        scored = (score_gen(judge, latent_dim, recon, samples, labels, settings.seed) if spec.conditional
                  else score_vae(judge, latent_dim, recon, samples, settings.seed))
        scored.update(course_fields(judge, task, latent_dim, enc))
        scored["split"] = split_fields(judge, task, latent_dim, recon, samples, labels)
        if scored["course_error"] and (spec.conditional or scored["ssim"] is None):
            error = scored["course_error"]  # the course's own harness fails here: its score is 0 (metrics kept)
        elif scored["course_error"]:
            warnings.append(scored["course_error"])  # a VAE whose samples fail keeps its reconstruction score
        scored["repeat_difference"] = repeat_difference(dec, recon, samples)
        scored["task"] = task  # the fid factor's curve is the task's
        result.update(scored)
        result["model_class"] = prepared.class_name
        result["files"] = prepared.files
        result["flags"] = flag(scored)
        result["fair_factors"] = metrics.fair_factors(scored)
        result["fair_score"] = metrics.fair_score(scored)
        result["warnings"] = warnings + result["flags"]
        if preview_dir is not None:
            save_previews(preview_dir, spec.folder, samples, labels, recon, None if judge.hidden else judge.test_u8)
    except (SubmissionError, CheckpointError) as e:
        error = str(e)
    except Exception as e:  # noqa: BLE001 - a grader bug must still not kill the batch
        error = f"grader error while scoring: {type(e).__name__}: {e}"
    if error is not None:
        result.update({"error": error, "score": 0.0, "fair_score": 0.0})
        if machine:
            result["machine_failure"] = True
    else:
        result["error"] = None
    result["settings"] = settings_rec
    return result


def grade_submission(judge: Judge, submission: Path, out_dir: Path, tasks: list[str],
                     settings: GradeSettings) -> dict[str, dict[str, Any]]:
    """Grade a folder or zip; write ``out_dir/<task folder>/grade_result.json`` for each task. Never raises for
    what the submission holds: a zip or folder that cannot be read is every task's error."""
    out_dir, submission = Path(out_dir).resolve(), Path(submission).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fresh, uniquely named work folder: nothing the submission placed in out_dir (a folder graded in place) is
    # ever followed, written into or deleted.
    work = Path(tempfile.mkdtemp(prefix=".grade_work-", dir=out_dir))
    results: dict[str, dict[str, Any]] = {}
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
        for r in results.values():
            if isolation_warning:
                r.setdefault("warnings", []).append(isolation_warning)
        results = {t: round_floats(r) for t, r in results.items()}
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

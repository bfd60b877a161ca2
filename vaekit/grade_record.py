"""One task's grade as one typed record (``TaskGrade``) and its forms: JSON, a CSV row, a page row.

The JSON's field names are the record's field names; ``FIELDS`` documents each one (``docs/grading.md`` is written
from it). A grade is read back from its JSON with ``TaskGrade.from_dict``, so a resumed batch, ``pack.py`` and the
page handle the same type as the grader made.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .course import TASKS
from .escape import csv_cell
from .outputs import write_text


def _f(doc: str, default: Any = None, *, group: str = "outcome", task: str | None = None) -> Any:
    """A field with its documentation; ``group`` says when it is written (see ``TaskGrade.to_dict``), ``task``
    that only that task's grades have it."""
    return field(default=default, metadata={"doc": doc, "group": group, "task": task})


@dataclass(eq=False)
class TaskGrade(Mapping):
    """One task of one hand-in, graded (or the reason it could not be). Reads like its JSON (``grade["score"]``) as
    well as by attribute."""

    # -- what every grade has ---------------------------------------------------------------------------------
    task: str = _f("`vae` or `gen`")
    folder: str = _f("the hand-in's folder of the task (`VAEwolabel`, `Genwithlabel`)")
    max_score: float = _f("the course's points for the task")
    score: float = _f("the course's score: what its own grade.py gives (0 with an error)", 0.0)
    fair_score: float = _f("the course score (or the isolated path's, where lower) times the fair factors", 0.0)
    error: str | None = _f("why the task could not be graded (score 0); null when graded")
    machine_failure: bool = _f("the grading machine failed (a timeout, a process that could not start), not the "
                               "hand-in: a resumed batch grades it again; written only when true", False)
    # -- where the workers ran ---------------------------------------------------------------------------------
    isolation: str | None = _f("how the hand-in's code ran: `bubblewrap`, or `none` (with a warning) where the "
                               "OS offers no sandbox", group="run")
    settings: dict | None = _f("the grading settings, seeds, test set and classifier hashes, library versions",
                               group="run")
    timing: dict | None = _f("seconds: `encode_s`, `decode_s`, `total_s` (not compared between gradings)",
                             group="run")
    warnings: list[str] | None = _f("what a TA should read: stale folders, file names, the flags", group="run")
    # -- the course's numbers, from its own inference replayed -------------------------------------------------
    ssim: float | None = _f("mean SSIM of the course's reconstructions of the test images", group="scored")
    mse: float | None = _f("mean squared error of the same, images in [0, 1]", group="scored")
    fid: float | None = _f("the course's pixel-statistics FID of its samples (gen only; null for vae)", group="scored")
    course_error: str | None = _f("why the course's own harness would fail on this model", group="scored")
    # -- the isolated path: codes decoded by a process that never saw a test image ---------------------------------
    model_class: str | None = _f("the class the folder's hyperparameters name", group="scored")
    files: dict | None = _f("the checkpoint and hyperparameters files graded", group="scored")
    latent_dim: int | None = _f("the size of the code, from the checkpoint", group="scored")
    bonus: float | None = _f("the course's latent-size bonus, 1.2 − latent_dim / 784", group="scored")
    split: dict | None = _f("the course's formulas (`ssim`, `mse`, `fid`, `score`) on the isolated path",
                            group="scored")
    fid_ratio: float | None = _f("classifier-feature FID of the samples over that of as many real training images "
                                 "(gen: the mean over digits); 1 is real-image quality", group="scored")
    classifier_fid: float | None = _f("classifier-feature FID of the samples to the test images", group="scored")
    classifier_fid_real: float | None = _f("the same for real training images (the ratio's denominator)",
                                           group="scored")
    diversity: float | None = _f("mean pairwise feature distance of the samples over the test images' (gen: per "
                                 "digit, averaged); about 1 for real images", group="scored")
    diversity_within_class: float | None = _f("the same within each class the classifier reads", group="scored")
    label_factor: float | None = _f("vae: 1 − total variation of the class histogram from uniform; gen: "
                                    "cond_accuracy", group="scored")
    memorization: float | None = _f("share of samples nearer to a training image (in classifier features) than 95 % of "
                                     "test images are (about 0.05 when honest)", group="scored")
    memorization_heldout: float | None = _f("the same against held-out images (validation, official test, the "
                                            "grader's test set): copies of the test set",
                                            group="scored")
    memorization_threshold: float | None = _f("the feature distance under which a sample is a copy",
                                              group="scored")
    recon_copies: float | None = _f("share of reconstructions within MSE 2·10⁻⁴ of their input: a lookup, "
                                    "not what a small code carries",
                                    group="scored")
    repeat_difference: float | None = _f("mean gray levels between two decodings of the same codes and noise "
                                         "(0: a deterministic decoder)", group="scored")
    fair_factors: dict | None = _f("the factors of fair_score, each in [0, 1]", group="scored")
    flags: list[str] | None = _f("what the numbers say a model did that an honest one would not", group="scored")
    class_histogram: list[float] | None = _f("share of samples the classifier reads as each digit", group="scored",
                                             task="vae")
    histogram_max_deviation: float | None = _f("the largest relative deviation of that histogram from 0.1",
                                               group="scored", task="vae")
    cond_accuracy: float | None = _f("share of samples the classifier reads as the digit asked for",
                                     group="scored", task="gen")
    per_class: dict | None = _f("per digit: cond_accuracy, classifier FIDs, fid_ratio, diversity", group="scored",
                                task="gen")
    scored: bool = field(default=False, repr=False, metadata={"group": "internal"})  # the metrics were computed

    # -- made ----------------------------------------------------------------------------------------------------

    @classmethod
    def failed(cls, task: str, error: str, machine: bool = False) -> TaskGrade:
        """A task that could not be graded: score 0 and the reason; ``machine``: the grading machine's failure."""
        return cls(task=task, folder=TASKS[task].folder, max_score=TASKS[task].max_score, error=error,
                   machine_failure=machine)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskGrade:
        """A grade read back from its JSON (unknown keys ignored); ``ValueError`` for what is not a grade's."""
        if not isinstance(data, Mapping) or not isinstance(data.get("task"), str) or data["task"] not in TASKS:
            raise ValueError("not a task's grade")
        known = {f.name for f in fields(cls) if f.name != "scored"}
        return cls(**{k: v for k, v in data.items() if k in known}, scored="latent_dim" in data)

    @classmethod
    def read(cls, path: Path) -> TaskGrade:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # -- its forms -----------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON's fields, floats rounded: the outcome always; where the workers ran once grading began; the
        metrics once computed (the other task's fields left out); ``machine_failure`` only when true."""
        out: dict[str, Any] = {}
        for f in fields(self):
            group, value = f.metadata["group"], getattr(self, f.name)
            if (group == "internal" or (f.name == "machine_failure" and not value)
                    or (group == "run" and value is None)
                    or (group == "scored" and not self.scored)
                    or (f.metadata["task"] not in (None, self.task))):
                continue
            out[f.name] = value
        return round_floats(out)

    def csv_row(self, submission: str) -> dict[str, Any]:
        """Its row of ``grades.csv`` (cells escaped against spreadsheet formulas)."""
        data = self.to_dict()
        row = {k: csv_cell(data.get(k)) for k in CSV_FIELDS if k not in ("submission", "flags")}
        return {"submission": csv_cell(submission), **row, "flags": len(self.flags or [])}

    def notes(self) -> tuple[list[str], list[str]]:
        """(flags, the warnings that are not flags): what the page and the terminal show beside the numbers."""
        flags = list(self.flags or [])
        return flags, [w for w in self.warnings or [] if w not in flags]

    @property
    def is_final(self) -> bool:
        """A verdict on the hand-in, not the grading machine's failure (a timeout, a process that could not start,
        a grader error): a resumed batch keeps it."""
        return not (self.machine_failure or str(self.error or "").startswith("grader error"))

    # -- read like its JSON ----------------------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


FIELDS = {f.name: f.metadata["doc"] + (f" ({f.metadata['task']} only)" if f.metadata["task"] else "")
          for f in fields(TaskGrade) if f.metadata["group"] != "internal"}


def round_floats(x: Any) -> Any:
    """Round floats to 6 decimals everywhere, so two gradings give byte-identical JSON; NaN and infinities become
    null (JSON has no word for them, and a page or a sheet would choke on ``NaN``)."""
    if isinstance(x, float):
        return round(x, 6) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: round_floats(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [round_floats(v) for v in x]
    return x


def error_results(tasks: list[str], error: str, machine: bool = False) -> dict[str, TaskGrade]:
    """Every task of a submission that could not be graded."""
    return {t: TaskGrade.failed(t, error, machine) for t in tasks}


def is_final(results: Mapping[str, TaskGrade]) -> bool:
    """No task failed for the grading machine's sake: the hand-in's grade, kept by a resumed batch."""
    return all(r.is_final for r in results.values())


def write_result(out_dir: Path, grade: TaskGrade) -> Path:
    """``out_dir/<task folder>/grade_result.json``."""
    data = grade.to_dict()
    return write_text(out_dir, f"{grade.folder}/grade_result.json",
                      json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


CSV_FIELDS = ("submission", "task", "score", "max_score", "fair_score", "ssim", "mse", "fid", "cond_accuracy",
              "fid_ratio", "diversity", "memorization", "memorization_heldout", "recon_copies", "latent_dim",
              "isolation", "flags", "error")


def write_csv(path: Path, rows: list[tuple[str, TaskGrade]]) -> None:
    """One row per (submission, task)."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for name, grade in rows:
        w.writerow(grade.csv_row(name))
    write_text(path.parent, path.name, buf.getvalue())


def batch_grades(out: Path) -> dict[str, dict[str, Any]]:
    """Every ``<submission>/<task folder>/grade_result.json`` of a batch's output, without its timing block: what
    two gradings of the same class must agree on to the byte."""
    found = {}
    for path in sorted(Path(out).glob("*/*/grade_result.json")):
        result = json.loads(path.read_text())
        result.pop("timing", None)
        found[path.relative_to(out).as_posix()] = result
    return found


def fields_table() -> str:
    """The Markdown table of ``grade_result.json``'s fields, from the type (``docs/grading.md`` shows it)."""
    return "| field | meaning |\n|---|---|\n" + "\n".join(f"| `{k}` | {v} |" for k, v in FIELDS.items()) + "\n"


if __name__ == "__main__":  # python -m vaekit.grade_record: rewrite the table in docs/grading.md
    from .readme import replace_block

    replace_block("grade-fields", fields_table())

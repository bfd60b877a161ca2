"""A grade's files: ``grade_result.json`` per task (floats rounded, so two gradings give the same bytes), the error
row of a task that could not be graded, and the class's ``grades.csv``."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from .course import TASKS
from .escape import csv_cell
from .outputs import write_text


def error_results(tasks: list[str], error: str, machine: bool = False) -> dict[str, dict[str, Any]]:
    """Every task of a submission that could not be graded: score 0 and the reason; ``machine``: the grading
    machine's failure (``machine_failure``: not final, a resumed batch grades it again)."""
    return {t: {"task": t, "folder": TASKS[t].folder, "error": error, "score": 0.0, "max_score": TASKS[t].max_score,
                "fair_score": 0.0, **({"machine_failure": True} if machine else {})} for t in tasks}


def is_final(results: dict[str, dict[str, Any]]) -> bool:
    """A verdict on the hand-in, kept by a resumed batch: no task failed for the grading machine's sake (a timeout,
    a sandbox or process that could not start, a grader error)."""
    return not any(r.get("machine_failure") or str(r.get("error") or "").startswith("grader error")
                   for r in results.values())


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


def write_result(out_dir: Path, result: dict[str, Any]) -> Path:
    return write_text(out_dir, f"{result['folder']}/grade_result.json",
                      json.dumps(round_floats(result), indent=2, sort_keys=True, allow_nan=False) + "\n")


CSV_FIELDS = ("submission", "task", "score", "max_score", "fair_score", "ssim", "mse", "fid", "cond_accuracy",
              "fid_ratio", "diversity", "memorization", "memorization_heldout", "recon_copies", "latent_dim",
              "isolation", "flags", "error")


def write_csv(path: Path, rows: list[tuple[str, dict[str, Any]]]) -> None:
    """One row per (submission, task)."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for name, res in rows:
        row = {k: csv_cell(res.get(k)) for k in CSV_FIELDS if k != "submission"}
        row["flags"] = len(res.get("flags") or [])
        w.writerow({"submission": csv_cell(name), **row})
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

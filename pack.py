"""Pack G<N>-FINAL.zip in the course's exact layout, refusing (with every problem listed) when something
is missing, failed, or stale.

    python pack.py --group 7            # -> G7-FINAL.zip
    python pack.py --group 7 --check    # only list the problems

Layout: VAEwolabel/{epoch.pth, hyperparameters.txt, grade_result.json}, Genwithlabel/{same},
submission.py, report.pdf (taken from report/report.pdf). A grade is stale when the epoch.pth it graded
(sha256 recorded by grade.py) is not the one on disk; regrade with `python grade.py`. Each model is also
loaded the course's way (built from latent_dim alone, weights loaded strictly, one 0-dim-label decode). The
report must be built from a filled report/student.toml whose group is --group.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import torch

from vaekit import contract
from vaekit.checkpoint import CheckpointError, file_sha256, read_hyperparameters
from vaekit.cli import HelpFormatter
from vaekit.course import HANDIN_FILES, TASKS, SubmissionError, load_submission, stale_reason
from vaekit.course_inference import harness_model
from vaekit.grade_record import TaskGrade
from vaekit.outputs import write_atomic
from vaekit.paths import ROOT
from vaekit.student import StudentFileError, read_student, unfilled


def layout(root: Path) -> dict[str, Path]:
    """Archive name -> file on disk."""
    files = {f"{t.folder}/{name}": root / t.folder / name for t in TASKS.values() for name in HANDIN_FILES}
    files["submission.py"] = root / "submission.py"
    files["report.pdf"] = root / "report" / "report.pdf"
    return files


def course_load_problems(root: Path) -> list[str]:
    """Each task loaded the course's way: ``VAE(latent_dim=d)`` / ``GenModel(latent_dim=d)`` from submission.py,
    ``torch.load(epoch.pth)["model_state_dict"]`` loaded strictly, one ``decode(torch.randn(1, d), torch.tensor(0))``.
    A model the course's harness cannot load or sample scores 0 there, however well it grades here."""
    try:
        sub = load_submission(root / "submission.py")
    except SubmissionError as e:
        return [f"submission.py: {e}"]
    found = []
    for spec in TASKS.values():
        folder = root / spec.folder
        if not ((folder / "epoch.pth").is_file() and (folder / "hyperparameters.txt").is_file()):
            continue  # reported as missing
        stale = stale_reason(folder, spec.name, root / "submission.py")
        if stale:  # trained from another file: retraining is the advice, not the arguments it records
            found.append(stale)
            continue
        try:
            latent_dim = read_hyperparameters(folder / "hyperparameters.txt")["latent_dim"]
            state = torch.load(folder / "epoch.pth", map_location="cpu", weights_only=True)["model_state_dict"]
            contract.decode_one(harness_model(sub, spec.name, latent_dim, state), latent_dim, 0)
        except (SubmissionError, CheckpointError, KeyError, OSError, RuntimeError) as e:
            found.append(f"{spec.folder}/: the course's harness cannot use this model: {e}")
    return found


def student_problems(root: Path, group: int | None) -> list[str]:
    """The report's authors and feedback: report/student.toml filled, for this group, and built into the PDF."""
    path = root / "report" / "student.toml"
    try:
        details = read_student(path)
    except StudentFileError as e:
        return [f"report/student.toml: {e}"]
    found = []
    todo = unfilled(details)
    if todo:
        found.append(f"report/student.toml: fill in {', '.join(todo)}, then rebuild with `python report/build.py`")
    elif group is not None and details["group"] != group:
        found.append(f"report/student.toml: says group {details['group']}, but you pack for --group {group}")
    info = root / "report" / "build_info.json"
    if not todo and info.is_file() and json.loads(info.read_text()).get("unfilled"):
        found.append("report.pdf: built before report/student.toml was filled (it shows FILL IN); "
                     "rebuild with `python report/build.py`")
    return found


def problems(root: Path, group: int | None = None) -> list[str]:
    """Everything that would make the zip incomplete, failed, stale, or unloadable by the course."""
    found = student_problems(root, group)
    for arcname, path in layout(root).items():
        if not path.is_file():
            found.append(f"{arcname}: missing ({path.relative_to(root)})")
    found += course_load_problems(root)
    for folder in (t.folder for t in TASKS.values()):
        result_path, ckpt = root / folder / "grade_result.json", root / folder / "epoch.pth"
        if not (result_path.is_file() and ckpt.is_file()):
            continue
        try:
            grade = TaskGrade.read(result_path)
        except (ValueError, TypeError):
            found.append(f"{folder}/grade_result.json: not a grade (not valid JSON, or unknown fields); regrade with "
                         "`python grade.py`")
            continue
        if grade.error:
            found.append(f"{folder}/grade_result.json: grading failed: {grade.error}")
        recorded = (grade.settings or {}).get("epoch_sha256")
        if recorded != file_sha256(ckpt):
            found.append(f"{folder}/grade_result.json: stale (it graded another epoch.pth); "
                         "regrade with `python grade.py`")
    report_info = root / "report" / "build_info.json"
    if (root / "report" / "report.pdf").is_file() and report_info.is_file():
        info = json.loads(report_info.read_text())
        for rel, digest in info.get("inputs", {}).items():
            if not (root / rel).is_file() or file_sha256(root / rel) != digest:
                found.append(f"report.pdf: stale ({rel} changed since it was built); "
                             "rebuild with `python report/build.py`")
    return found


def pack(root: Path, group: int, out_dir: Path) -> Path:
    out = out_dir / f"G{group}-FINAL.zip"

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for arcname, path in layout(root).items():
                zf.write(path, arcname)
        with zipfile.ZipFile(tmp) as zf:  # read back: exactly the layout, nothing else
            assert sorted(zf.namelist()) == sorted(layout(root)), zf.namelist()

    return write_atomic(out, write)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--group", type=int, required=True, help="your group number N >= 0 (the zip is G<N>-FINAL.zip)")
    p.add_argument("--root", default=str(ROOT), help="project folder holding the files to pack")
    p.add_argument("--out", default=".", help="folder to write the zip into")
    p.add_argument("--check", action="store_true", help="only list problems; write nothing")
    args = p.parse_args(argv)
    if args.group < 0:
        p.error("--group must be a group number, 0 or more.")
    root = Path(args.root).resolve()
    found = problems(root, args.group)
    if found:
        print(f"cannot pack G{args.group}-FINAL.zip; {len(found)} problem(s):", file=sys.stderr)
        for f in found:
            print(f"  - {f}", file=sys.stderr)
        return 1
    if args.check:
        print("ready to pack: every file is present, graded without error and up to date.")
        return 0
    out = pack(root, args.group, Path(args.out))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB); check it with "
          f"`python grade.py --submission {out}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())

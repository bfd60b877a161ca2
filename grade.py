"""Grade submissions: course-exact scores plus what a pretrained MNIST classifier sees.

    python grade.py                                   # ./submission.py with ./VAEwolabel and ./Genwithlabel
    python grade.py --submission G7-FINAL.zip --out graded/G7
    python grade.py --batch submissions/ --out graded/ -j 2   # one JSON per task + graded/grades.csv
    python grade.py --batch submissions/ --isolation required --test-data hidden.npz   # how a TA grades

The submission's code runs only inside a bubblewrap sandbox (no network, no files of the grader), in two
processes per task: one encodes the test images, a fresh one decodes codes and noise.

The course fields (ssim, mse, fid, score) replay the course's own inference and grading on the same files;
split.* are the same formulas on the sandboxed encode/decode path, and fair_score rests on the lower of the two.

Writes <out>/<task folder>/grade_result.json. Exit status: 0 when every task of every submission was graded,
1 when any task failed (its error is in its JSON and in the summary), 2 for misuse of the command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vaekit.checkpoint import CheckpointError
from vaekit.course import TASKS
from vaekit.data import DataError
from vaekit.gradepage import write_page
from vaekit.grading import GradeSettings, Judge, grade_submission, write_csv, write_result
from vaekit.sandbox import ISOLATION_MODES

DEFAULT = GradeSettings()


def summary(name: str, results: dict[str, dict]) -> str:
    lines = [f"{name}:"]
    for task, r in results.items():
        if r.get("error"):
            lines.append(f"  {task:4s} ERROR  score 0 — {r['error']}")
            continue
        extra = (f"cond_acc {r['cond_accuracy']:.4f}  " if task == "gen"
                 else f"hist_dev {r['histogram_max_deviation']:.2f}  ")
        course = " ".join(f"{k} {r[k]:.{d}f}" for k, d in (("ssim", 4), ("mse", 5), ("fid", 4)) if r.get(k) is not None)
        lines.append(f"  {task:4s} course {r['score']:.2f}/{r['max_score']:.0f} ({course or 'not graded'})  "
                     f"fair {r['fair_score']:.2f}  split ssim {r['split']['ssim']:.4f}  {extra}"
                     f"fid_ratio {r['fid_ratio']:.2f}  "
                     f"diversity {r['diversity']:.3f}  memorization {r['memorization']:.3f}  "
                     f"latent {r['latent_dim']}  isolation {r['isolation']}  ({r['timing']['total_s']:.0f} s)")
        lines += [f"       warning: {w}" for w in r.get("warnings", [])]
    return "\n".join(lines)


def exit_status(results: list[dict]) -> int:
    """0 when every task was graded, 1 when any failed."""
    return 1 if any(r.get("error") for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--submission", default=".", help="a folder or a G<N>-FINAL.zip in the course layout")
    p.add_argument("--out", default=None, help="output folder (default: the submission folder itself, or "
                   "graded/<zip name> for a zip)")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="tasks to grade")
    p.add_argument("--test-data", default=None, help="hidden test set: an .npz with x, y or an IDX pair "
                   "(default: the official MNIST test split)")
    p.add_argument("--classifier", default=None, help="private classifier weights (default: the shipped, "
                   "sha256-pinned vaekit/assets/classifier.pt)")
    p.add_argument("--seed", type=int, default=DEFAULT.seed, help="with --secret and each submission's files, seeds "
                   "its sampling noise (a regrade of the same files is identical; different files get other noise)")
    p.add_argument("--secret", default=os.environ.get("VAEKIT_SECRET", DEFAULT.secret),
                   help="a TA's secret mixed into every sampling seed, so no student can compute the noise their "
                   "samples will be drawn from (default: $VAEKIT_SECRET, which keeps it off the command line)")
    p.add_argument("--samples-per-label", type=int, default=DEFAULT.per_label,
                   help="generated images per digit for the classifier metrics (the course fields always replay "
                   "the course's own 10 / 100 per digit)")
    p.add_argument("--timeout", type=float, default=DEFAULT.timeout,
                   help="seconds for all the processes of one task together (encoding, then decoding)")
    p.add_argument("--memory-gb", type=float, default=DEFAULT.memory_gb,
                   help="memory of one submission: the resident memory of all its processes together (a cgroup, "
                   "where the grader may make one) and the address space of each")
    p.add_argument("--isolation", choices=ISOLATION_MODES, default=DEFAULT.isolation,
                   help="auto: a bubblewrap sandbox where the OS allows one, else a plain child process with a "
                   "warning in every result; required: refuse to run submissions without the sandbox (for "
                   "TAs); none: never sandbox")
    p.add_argument("--batch", default=None, metavar="DIR", help="grade every zip or folder in DIR; writes "
                   "OUT/<name>/... and OUT/grades.csv")
    p.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded in parallel (batch mode)")
    p.add_argument("--batch-budget", type=float, default=None, metavar="SECONDS",
                   help="wall-clock budget of the whole batch: a submission not started when it runs out gets an "
                   "error row (rerun for those); default: none")
    args = p.parse_args(argv)
    if (args.jobs < 1 or args.timeout <= 0 or args.memory_gb <= 0 or args.samples_per_label < 2
            or (args.batch_budget is not None and args.batch_budget <= 0)):
        p.error("-j, --timeout, --memory-gb and --batch-budget must be positive and --samples-per-label at least 2.")

    settings = GradeSettings(seed=args.seed, per_label=args.samples_per_label, timeout=args.timeout,
                             memory_gb=args.memory_gb, isolation=args.isolation, secret=args.secret)
    try:
        judge = Judge(args.test_data, args.classifier, threads=settings.threads)
    except (DataError, CheckpointError, OSError, ValueError) as e:
        p.exit(2, f"grade.py: error: {e}\n")

    if args.batch:
        batch = Path(args.batch)
        if not batch.is_dir():
            p.error(f"--batch {batch} is not a folder.")
        out = Path(args.out or "graded")
        entries = sorted(e for e in batch.iterdir() if e.is_dir() or e.suffix == ".zip")
        if not entries:
            p.error(f"--batch {batch} holds no .zip files or folders.")

        started = time.monotonic()

        def one(entry: Path) -> tuple[str, dict]:
            try:
                if args.batch_budget is not None and time.monotonic() - started > args.batch_budget:
                    error = (f"not graded: the batch's budget of {args.batch_budget:g} s (--batch-budget) ran out "
                             "before this submission started.")
                    results = {t: {"task": t, "folder": TASKS[t].folder, "error": error, "score": 0.0,
                                   "fair_score": 0.0} for t in args.tasks}
                    for r in results.values():
                        write_result(out / entry.stem, r)
                    return entry.stem, results
                return entry.stem, grade_submission(judge, entry, out / entry.stem, args.tasks, settings)
            except Exception as e:  # noqa: BLE001 - a grader bug on one hand-in is that hand-in's row, not the batch's end
                error = f"grader error: {type(e).__name__}: {e}"
                return entry.stem, {t: {"task": t, "folder": TASKS[t].folder, "error": error, "score": 0.0,
                                        "fair_score": 0.0} for t in args.tasks}

        with ThreadPoolExecutor(args.jobs) as pool:
            graded = list(pool.map(one, entries))
        for name, results in graded:
            print(summary(name, results))
        write_csv(out / "grades.csv", [(name, r) for name, results in graded for r in results.values()])
        page = write_page(out / "index.html", graded, [f"{name}/" for name, _ in graded], f"Grades of {batch.name}")
        print(f"wrote {out}/<name>/<task>/grade_result.json, {out}/grades.csv and {page} for {len(graded)} "
              "submissions")
        return exit_status([r for _, results in graded for r in results.values()])

    sub = Path(args.submission)
    if not sub.exists():
        p.error(f"--submission {sub} does not exist.")
    out = Path(args.out) if args.out else (sub if sub.is_dir() else Path("graded") / sub.stem)
    results = grade_submission(judge, sub, out, args.tasks, settings)
    print(summary(str(sub), results))
    page = write_page(out / "grade_report.html", [(sub.resolve().name, results)], [""], f"Grade of {sub}")
    print("wrote " + ", ".join(str(out / r["folder"] / "grade_result.json") for r in results.values())
          + f" and {page} (open it in a browser)")
    return exit_status(list(results.values()))


if __name__ == "__main__":
    sys.exit(main())

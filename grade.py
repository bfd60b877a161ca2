"""Grade submissions: course-exact scores plus what a pretrained MNIST classifier sees.

    python grade.py                                   # ./submission.py with ./VAEwolabel and ./Genwithlabel
    python grade.py --submission G7-FINAL.zip --out graded/G7
    python grade.py --batch submissions/ --out graded/ -j 2   # one JSON per task + graded/grades.csv
    python grade.py --batch submissions/ --isolation required --test-data hidden.npz   # how a TA grades
    python grade.py --batch submissions/ --scheduler tls://HOST:8786 --tls DIR ...   # on a Dask cluster's workers

A batch resumes: a submission graded before with the same files and settings keeps its grade (--regrade: all again),
so an interrupted batch or one with late hand-ins grades only what is new.

The submission's code runs only inside a bubblewrap sandbox (no network, no files of the grader), in two
processes: one encodes the test images for each task, then a fresh one decodes codes and noise.

The course fields (ssim, mse, fid, score) replay the course's own inference and grading on the same files;
split.* are the same formulas on the sandboxed encode/decode path, and fair_score rests on the lower of the two.

Writes <out>/<task folder>/grade_result.json. Exit status: 0 when every task of every submission was graded,
1 when any task failed (its error is in its JSON and in the summary), 2 for misuse of the command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vaekit.batch import local_grader, run_batch, settings_key, test_set_sha256
from vaekit.checkpoint import CheckpointError
from vaekit.classifier import load_classifier
from vaekit.cli import HelpFormatter
from vaekit.course import TASKS, SubmissionError
from vaekit.data import DataError
from vaekit.escape import terminal_text
from vaekit.grade_record import TaskGrade, write_csv
from vaekit.gradepage import write_page
from vaekit.grading import GradeSettings, grade_submission
from vaekit.isolation import ISOLATION_MODES
from vaekit.judge import Judge
from vaekit.settings import BatchSettings

DEFAULT = GradeSettings()


def summary(name: str, results: dict[str, TaskGrade]) -> str:
    """The terminal's lines for one hand-in; what the hand-in wrote (names, errors, warnings) without control
    characters."""
    lines = [f"{name}:"]
    for task, r in results.items():
        if r.error:
            lines.append(f"  {task:4s} ERROR  score 0 — {r.error}")
            continue
        extra = (f"cond_acc {r.cond_accuracy:.4f}  " if task == "gen"
                 else f"hist_dev {r.histogram_max_deviation:.2f}  ")
        course = " ".join(f"{k} {getattr(r, k):.{d}f}" for k, d in (("ssim", 4), ("mse", 5), ("fid", 4))
                          if getattr(r, k) is not None)
        lines.append(f"  {task:4s} course {r.score:.2f}/{r.max_score:.0f} ({course or 'not graded'})  "
                     f"fair {r.fair_score:.2f}  split ssim {r.split['ssim']:.4f}  {extra}"
                     f"fid_ratio {r.fid_ratio:.2f}  diversity {r.diversity:.3f}  memorization {r.memorization:.3f}  "
                     f"latent {r.latent_dim}  isolation {r.isolation}  ({r.timing['total_s']:.0f} s)")
        lines += [f"       warning: {w}" for w in r.warnings or []]
    return "\n".join(terminal_text(line) for line in lines)


def exit_status(results: list[TaskGrade]) -> int:
    """0 when every task was graded, 1 when any failed."""
    return 1 if any(r.error for r in results) else 0


def grade_batch(p: argparse.ArgumentParser, args: argparse.Namespace, settings: GradeSettings,
                judge: Judge | None, hashes: tuple[str, str]) -> int:
    """Every zip or folder in ``--batch``, here or on the cluster at ``--scheduler``; resumes unless ``--regrade``."""
    batch = Path(args.batch)
    if not batch.is_dir():
        p.error(f"--batch {batch} is not a folder.")
    out = Path(args.out or "graded")
    entries = sorted(e for e in batch.iterdir() if e.is_dir() or e.suffix == ".zip")
    if not entries:
        p.error(f"--batch {batch} holds no .zip files or folders.")
    key = settings_key(settings, args.tasks, *hashes)
    client, pool, errors = None, None, ()
    try:
        if judge is not None:
            grade, pool = local_grader(judge, args.tasks, settings, args.jobs)
            slots = args.jobs
        else:
            from distributed import KilledWorker

            from vaekit.cluster import connect, dask_grader, prepare_cluster, security

            client = connect(args.scheduler, security(args.tls) if args.tls else None)
            prepare_cluster(client, args.test_data, args.classifier, settings)
            grade, errors = dask_grader(client, args.tasks, settings), (KilledWorker,)
            slots = 2 * max(1, sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()))
        outcomes, graded = run_batch(entries, out, args.tasks, lambda sha: f"{key}:{sha}", grade,
                                     BatchSettings(slots, args.regrade, args.batch_budget), errors)
    except (ConnectionError, SubmissionError, FileNotFoundError) as e:
        p.exit(2, f"grade.py: error: {e}\n")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if client is not None:
            client.close()
    for o in outcomes:
        print(summary(o.name, o.results))
    rows = [(o.name, r) for o in outcomes for r in o.results.values()]
    write_csv(out / "grades.csv", rows)
    page = write_page(out / "index.html", [(o.name, o.results) for o in outcomes], [f"{o.name}/" for o in outcomes],
                      f"Grades of {batch.name}")
    print(f"graded {graded} of {len(outcomes)} submissions ({len(outcomes) - graded} unchanged since the last run); "
          f"wrote {out}/<name>/<task>/grade_result.json, {out}/grades.csv and {page}")
    return exit_status([r for _, r in rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
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
    p.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded in parallel here (batch mode with "
                   "--scheduler local)")
    p.add_argument("--scheduler", default="local", metavar="ADDRESS",
                   help="batch mode: 'local' grades on this machine; tls://HOST:PORT sends each submission to that "
                   "Dask scheduler's workers (each needs this kit installed, the cluster's certificates and, with "
                   "--isolation required, user namespaces for the sandbox)")
    p.add_argument("--tls", default=None, metavar="DIR", help="the cluster's certificates (ca.pem, node.pem, "
                   "node-key.pem: python -m vaekit.cluster certs DIR); only their holders can join or connect")
    p.add_argument("--insecure", action="store_true", help="allow a plain tcp:// scheduler: anyone who reaches its "
                   "port could join as a worker and receive the hidden test set and every hand-in")
    p.add_argument("--regrade", action="store_true", help="batch mode: grade every submission again (by default one "
                   "already graded with the same files and settings keeps its grade)")
    p.add_argument("--batch-budget", type=float, default=None, metavar="SECONDS",
                   help="wall-clock budget of the whole batch: a submission not started when it runs out gets an "
                   "error row (rerun for those)")
    args = p.parse_args(argv)
    if (args.jobs < 1 or args.timeout <= 0 or args.memory_gb <= 0 or args.samples_per_label < 2
            or (args.batch_budget is not None and args.batch_budget <= 0)):
        p.error("-j, --timeout, --memory-gb and --batch-budget must be positive and --samples-per-label at least 2.")

    settings = GradeSettings(seed=args.seed, per_label=args.samples_per_label, timeout=args.timeout,
                             memory_gb=args.memory_gb, isolation=args.isolation, secret=args.secret)
    if args.scheduler != "local" and not args.batch:
        p.error("--scheduler needs --batch (a single submission is graded here).")
    if args.scheduler != "local" and not args.insecure and not (args.scheduler.startswith("tls://") and args.tls):
        p.error(f"--scheduler {args.scheduler}: a cluster is reached over TLS with the cluster's certificates "
                "(tls://HOST:PORT and --tls DIR; see python -m vaekit.cluster certs), or with --insecure on a network "
                "only the TA's machines reach.")
    try:  # on a cluster the workers build the judge; here only the hashes that key the grades are needed
        judge = (Judge(args.test_data, args.classifier, threads=settings.threads) if args.scheduler == "local"
                 else None)
        hashes = ((judge.test_sha256, judge.classifier_sha256) if judge else
                  (test_set_sha256(args.test_data), load_classifier(args.classifier)[1]))
    except (DataError, CheckpointError, OSError, ValueError) as e:
        p.exit(2, f"grade.py: error: {e}\n")

    if args.batch:
        return grade_batch(p, args, settings, judge, hashes)

    sub = Path(args.submission)
    if not sub.exists():
        p.error(f"--submission {sub} does not exist.")
    out = Path(args.out) if args.out else (sub if sub.is_dir() else Path("graded") / sub.stem)
    results = grade_submission(judge, sub, out, args.tasks, settings)
    name = sub.resolve().name  # the hand-in's own name, also for "." (the working folder)
    print(summary(name, results))
    page = write_page(out / "grade_report.html", [(name, results)], [""], f"Grade of {name}")
    print("wrote " + ", ".join(str(out / r["folder"] / "grade_result.json") for r in results.values())
          + f" and {page} (open it in a browser)")
    return exit_status(list(results.values()))


if __name__ == "__main__":
    sys.exit(main())

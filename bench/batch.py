"""The batch benchmark: a class of real, varied submissions graded by ``grade.py --batch`` through one and two local
workers and through a real Dask scheduler with two workers on localhost.

    python -m bench.batch                # 8 submissions, 3 runs: writes bench/batch.{json,md}, the README's table
                                         # and the projection in docs/benchmark.md
    python -m bench.batch --copies 1     # 4 submissions

The class: the kit's default models and the textbook MLP of ``bench/reference/mlp``, each as a folder and as a zip,
``--copies`` times (the copies differ by a comment in ``submission.py``, so each is its own hand-in with its own
sampling noise). Every run grades all of them (``--regrade``) with the default settings; the grades of the three runs
must be the same to the byte (timing aside), or the benchmark fails. The projection to k machines assumes each
machine runs what one machine ran here, with the scheduler and the copying of ~15 MB per hand-in as the only shared
cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench.cluster import LocalDaskCluster
from vaekit.cluster import make_certificates
from vaekit.grade_record import batch_grades
from vaekit.paths import ROOT
from vaekit.readme import replace_block

SOURCES = {"default": ROOT, "mlp": ROOT / "bench" / "reference" / "mlp"}
CLASSES = (300, 3000)  # class sizes the projection is given for


def make_class(folder: Path, copies: int) -> list[str]:
    """``copies`` × (each source as a folder and as a zip); returns the submission names."""
    names = []
    for i in range(copies):
        for label, src in SOURCES.items():
            for kind in ("folder", "zip"):
                name = f"{label}-{kind}-{i + 1}"
                tree = folder / ".trees" / name
                tree.mkdir(parents=True)
                shutil.copy(src / "submission.py", tree)
                with open(tree / "submission.py", "a") as f:
                    f.write(f"\n# hand-in {name}\n")
                for task in ("VAEwolabel", "Genwithlabel"):
                    (tree / task).mkdir()
                    for file in ("epoch.pth", "hyperparameters.txt"):
                        shutil.copy(src / task / file, tree / task / file)
                if kind == "folder":
                    shutil.move(tree, folder / name)
                else:
                    with zipfile.ZipFile(folder / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
                        for path in sorted(tree.rglob("*")):
                            zf.write(path, path.relative_to(tree).as_posix())
                names.append(name)
    shutil.rmtree(folder / ".trees")
    return names


def run(batch: Path, out: Path, *flags: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "grade.py", "--batch", str(batch), "--out", str(out), "--regrade", *flags],
                       cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"grade.py {' '.join(flags)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return wall


def markdown(result: dict) -> tuple[str, str]:
    """(the measured table with its note, for the README; the projection to k machines, for docs/benchmark.md)."""
    n = result["submissions"]
    best = min(v["s_per_submission"] for v in result["runs"].values())
    lines = ["| how | wall s | s per submission | submissions per minute |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['wall_s']:.0f} | {v['s_per_submission']:.1f} | {v['per_minute']:.2f} |"
              for k, v in result["runs"].items()]
    proj = ["| machines like this one | " + " | ".join(f"class of {c}" for c in CLASSES) + " |",
            "|---|" + "---|" * len(CLASSES)]
    for k in (1, 4, 16, 64):
        proj.append(f"| {k} | " + " | ".join(f"{c * best / k / 60:.0f} min" for c in CLASSES) + " |")
    measured = ("\n".join(lines) + "\n\n"
                f"{n} submissions (the default models and the textbook MLP, as folders and zips), both tasks, default "
                f"settings (10 000 test images, 1 000 samples per digit); {result['machine']}, {result['date']}; the "
                "three runs gave the same grades to the byte.\n")
    projection = ("\n".join(proj) + "\n\nThe best run's seconds per submission, divided among k machines (measured "
                  f"{result['date']}).\n")
    return measured, projection


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--copies", type=int, default=2, help="copies of each (source, folder or zip) pair")
    p.add_argument("--out", default=str(ROOT / "bench"), help="folder for batch.json and batch.md")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vaekit-batch-bench-") as tmp:
        tmp = Path(tmp)
        batch = tmp / "class"
        batch.mkdir()
        names = make_class(batch, args.copies)
        n = len(names)
        runs: dict[str, float] = {}
        # The judge's caches are warm after the first run; the first run warms them for everyone.
        subprocess.run([sys.executable, "grade.py", "--submission", str(ROOT), "--out", str(tmp / "warm"),
                        "--samples-per-label", "2", "--tasks", "vae"], cwd=ROOT, capture_output=True)
        runs["1 local worker (-j 1)"] = run(batch, tmp / "j1", "-j", "1")
        runs["2 local workers (-j 2)"] = run(batch, tmp / "j2", "-j", "2")
        certs = make_certificates(tmp / "certs")  # the cluster as the README sets it up: TLS
        with LocalDaskCluster(tmp / "cluster", ROOT, tls=certs) as cluster:
            for name in ("w1", "w2"):
                cluster.add_worker(name)
            cluster.wait_for_workers(2)
            runs["Dask: scheduler + 2 workers on localhost"] = run(batch, tmp / "dask", "--scheduler",
                                                                   cluster.address, "--tls", str(certs))
        reference = batch_grades(tmp / "j1")
        same = all(batch_grades(tmp / d) == reference for d in ("j2", "dask"))
        if len(reference) != 2 * n or not same:
            raise SystemExit("the three runs did not give the same grades: see " + str(tmp))
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "submissions": n, "sources": list(SOURCES), "copies": args.copies,
              "runs": {k: {"wall_s": w, "s_per_submission": w / n, "per_minute": 60 * n / w} for k, w in runs.items()},
              "identical_grades": same}
    measured, projection = markdown(result)
    table = measured + "\n" + projection
    out = Path(args.out)
    (out / "batch.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "batch.md").write_text(table)
    if out.resolve() == (ROOT / "bench").resolve():
        replace_block("batch", measured)  # the README
        replace_block("batch-projection", projection)  # docs/benchmark.md
    print(table)


if __name__ == "__main__":
    main()

"""Ablations for the report: latent_dim sweep, σ² (var) sweep, MLP vs conv vs attention.

    python report/experiments.py                 # 13 runs of --budget seconds each
    python report/experiments.py --budget 10     # a quick look (10 s of training per run)

Each run trains the unconditional VAE for a fixed wall-clock budget with train_vae.py's machinery, grades it
with the grader's code, and the summary goes to report/results/sweeps.json (committed, so the report
builds in seconds without retraining). Checkpoints go to report/runs/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from vaekit.checkpoint import read_hyperparameters
from vaekit.grading import GradeSettings, Judge, grade_submission
from vaekit.paths import ROOT

ARCH_FILES = {"mlp": ROOT / "bench" / "mlp_submission.py", "conv": ROOT / "submission.py",
              "attention": ROOT / "bench" / "attention_submission.py"}
SWEEPS = {
    "latent_dim": [dict(latent_dim=d) for d in (2, 4, 8, 16, 32)],
    "var": [dict(var=v) for v in (0.001, 0.003, 0.01, 0.03, 0.1)],
    "arch": [dict(arch=a) for a in ("mlp", "conv", "attention")],
}
KEEP = ("score", "ssim", "mse", "fid_ratio", "diversity", "histogram_max_deviation", "memorization", "fair_score")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--budget", type=float, default=60.0, help="training seconds per run")
    p.add_argument("--out", default=str(ROOT / "report" / "results" / "sweeps.json"), help="summary JSON")
    args = p.parse_args(argv)

    judge = Judge()
    settings = GradeSettings()
    done: dict[tuple, dict] = {}  # the default setting appears in every sweep: train it once

    def train_and_grade(arch: str, flags: dict) -> dict:
        key = (arch, *sorted(flags.items()))
        if key not in done:
            folder = ROOT / "report" / "runs" / "-".join(f"{k}{v}" for k, v in [("", arch), *sorted(flags.items())])
            cmd = [sys.executable, "train_vae.py", "--submission", str(ARCH_FILES[arch]), "--epochs", "1000",
                   "--time-budget", str(args.budget), "--out", str(folder / "VAEwolabel")]
            cmd += [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
            subprocess.run(cmd, cwd=ROOT, check=True)  # train_vae.py's own defaults for everything else
            (folder / "submission.py").write_text(ARCH_FILES[arch].read_text())
            graded = grade_submission(judge, folder, folder / "graded", ["vae"], settings)["vae"]
            hp = read_hyperparameters(folder / "VAEwolabel" / "hyperparameters.txt")
            done[key] = {"arch": arch, "latent_dim": hp["latent_dim"], "var": hp["training"]["var"],
                         "epochs": hp["epochs_run"], "train_s": hp["wall_time_s"], "valid_loss": hp["valid"]["loss"],
                         "error": graded.get("error"), **{k: graded.get(k) for k in KEEP}}
        return done[key]

    t_all = time.perf_counter()
    base = train_and_grade("conv", {})
    results: dict[str, list[dict]] = {}
    for sweep, variants in SWEEPS.items():
        results[sweep] = []
        for variant in variants:
            arch = variant.get("arch", "conv")
            flags = {k: v for k, v in variant.items() if k != "arch" and v != base[k]}
            results[sweep].append(train_and_grade(arch, flags))
    summary = {"budget_s": args.budget, "cpu_minutes": round((time.perf_counter() - t_all) / 60, 1),
               "base": {"latent_dim": base["latent_dim"], "var": base["var"], "arch": "conv"},
               "sweeps": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

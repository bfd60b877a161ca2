"""Ablations for the report: latent_dim sweep, σ² (var) sweep, MLP vs conv vs attention.

    python report/experiments.py                 # about 15 minutes on 2 CPU cores
    python report/experiments.py --budget 10     # a quick look (10 s of training per run)

Each run trains the unconditional VAE for a fixed wall-clock budget with train_vae.py's machinery, grades it
with the grader's code, and the summary goes to report/results/sweeps.json (committed, so the report
builds in seconds without retraining). Checkpoints go to report/runs/ (not committed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train_vae import DEFAULTS  # noqa: E402
from vaekit.experiment import TrainConfig, run  # noqa: E402
from vaekit.grading import GradeSettings, Judge, grade_submission  # noqa: E402

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
    results: dict[str, list[dict]] = {}
    done: dict[str, dict] = {}  # the default setting appears in every sweep: train it once
    t_all = time.perf_counter()
    for sweep, variants in SWEEPS.items():
        results[sweep] = []
        for variant in variants:
            setting = {"latent_dim": DEFAULTS["latent_dim"], "var": DEFAULTS["var"], "arch": "conv", **variant}
            key = f"{setting['arch']}-d{setting['latent_dim']}-v{setting['var']}"
            if key not in done:
                folder = ROOT / "report" / "runs" / key
                cfg = dataclasses.replace(TrainConfig(), **{**DEFAULTS, "latent_dim": setting["latent_dim"],
                                          "var": setting["var"], "epochs": 1000, "time_budget": args.budget,
                                          "out": str(folder / "VAEwolabel"),
                                          "submission": str(ARCH_FILES[setting["arch"]])})
                if setting["arch"] == "mlp":
                    cfg = dataclasses.replace(cfg, hidden=400)
                run("vae", cfg)
                (folder / "submission.py").write_text(ARCH_FILES[setting["arch"]].read_text())
                graded = grade_submission(judge, folder, folder / "graded", ["vae"], settings)["vae"]
                hp = json.loads((folder / "VAEwolabel" / "hyperparameters.txt").read_text())
                done[key] = {**setting, "epochs": hp["epochs_run"], "train_s": hp["wall_time_s"],
                             "valid_loss": hp["valid"]["loss"], "error": graded.get("error"),
                             **{k: graded.get(k) for k in KEEP}}
            results[sweep].append(done[key])
    summary = {"budget_s": args.budget, "cpu_minutes": round((time.perf_counter() - t_all) / 60, 1),
               "base": {"latent_dim": DEFAULTS["latent_dim"], "var": DEFAULTS["var"], "arch": "conv"},
               "sweeps": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""The conditional GAN lab's losses side by side: the default (non-saturating), WGAN with weight clipping and
WGAN with gradient penalty, each trained by ``labs/cgan.py`` for the same time budget, graded by ``grade.py``'s
code, and put in one table.

    python labs/cgan_variants.py                      # -> labs/results/cgan_variants/
    python labs/cgan_variants.py --time-budget 300    # a shorter race (each loss gets 300 s of GAN training)
    python labs/cgan_variants.py --nsgan-from labs/results/cgan   # reuse the lab's default run for the nsgan row
    python labs/cgan_variants.py --dry-run            # a smoke test

Writes ``OUT/<loss>/`` (each a gradable submission; its ``Genwithlabel/progress.png`` shows the samples after
every epoch), and ``OUT/table.json`` and ``OUT/table.md``: wall time, epochs, conditional accuracy, fid ratio,
diversity, memorisation, course score, and the largest drop in per-epoch accuracy (a collapse shows there).
The checkpoints and submission.py copies are removed after grading unless ``--keep-checkpoints`` (the command
remakes them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from vaekit.cli import HelpFormatter
from vaekit.paths import ROOT

VARIANTS = ("nsgan", "wgan-clip", "wgan-gp")
COLUMNS = [("loss", "loss"), ("gan_s", "GAN s"), ("wall_s", "wall s"), ("epochs", "epochs"),
           ("cond_accuracy", "cond acc"), ("fid_ratio", "fid ratio"), ("diversity", "diversity"),
           ("memorization", "memorisation"), ("score", "course score"), ("worst_drop", "worst accuracy drop")]


def variant_row(folder: Path, loss: str) -> dict:
    """One table row from a trained and graded variant's ``hyperparameters.txt`` and ``grade_result.json``."""
    hp = json.loads((folder / "hyperparameters.txt").read_text())
    grade = json.loads((folder / "grade_result.json").read_text())
    acc = hp.get("sample_accuracy_per_epoch") or []
    drops = [a - b for a, b in zip(acc, acc[1:])]
    return {"loss": loss, "gan_s": hp["gan_seconds"], "wall_s": hp["wall_time_s"], "epochs": hp["epochs_run"],
            "n_critic": hp["training"]["n_critic"], "lr": hp["training"]["lr"],
            "sample_accuracy_per_epoch": acc, "worst_drop": round(max([0.0, *drops]), 4),
            **{k: grade.get(k) for k in ("cond_accuracy", "fid_ratio", "diversity", "memorization", "score",
                                           "max_score", "error")}}


def reused_row(folder: Path, args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The nsgan row from an existing graded run, refused unless it ran with the race's loss, budget and seed."""
    try:
        training = json.loads((folder / "hyperparameters.txt").read_text())["training"]
        row = variant_row(folder, "nsgan")
    except (OSError, KeyError, ValueError) as e:
        parser.error(f"--nsgan-from: {folder} is not a graded labs/cgan.py run ({e}).")
    ran = (training.get("loss"), training.get("time_budget"), training.get("seed"), training.get("dry_run"))
    if ran != ("nsgan", args.time_budget, args.seed, args.dry_run):
        parser.error(f"--nsgan-from: {folder} ran with loss, time budget, seed, dry run = {ran}, not "
                     f"('nsgan', {args.time_budget}, {args.seed}, {args.dry_run}).")
    return {**row, "from": str(folder.parent)}


def markdown(rows: list[dict], budget: float, dry_run: bool = False) -> str:
    def cell(key: str, r: dict) -> str:
        v = r.get(key)
        if v is None:
            return "–"
        if key in ("cond_accuracy", "memorization", "worst_drop"):
            return f"{100 * v:.1f} %"
        if key == "score":
            return f"{v:.2f}/{r.get('max_score') or 30:.0f}"
        return f"{v:.3f}" if key == "diversity" else f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(k, r) for k, _ in COLUMNS) + " |" for r in rows]
    lines.append("")
    lines.append(f"Each loss trained by `labs/cgan.py --loss LOSS --time-budget {budget:g}` (GAN s: the adversarial "
                 f"phase; wall s adds the inversion encoder) and graded with {50 if dry_run else 1000} samples per "
                 "digit" + (" (a dry run: a smoke test, not a measurement)" if dry_run else "") + ". Worst accuracy "
                 "drop: the largest fall, between two epochs, of the share of 500 samples read as the requested digit.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--time-budget", type=float, default=960.0,
                   help="seconds of GAN training per loss (labs/cgan.py's default)")
    p.add_argument("--losses", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="which losses to run")
    p.add_argument("--seed", type=int, default=0, help="the same seed for every loss")
    p.add_argument("--nsgan-from", default=None, metavar="DIR",
                   help="take the nsgan row from this graded run of labs/cgan.py (same time budget and seed, e.g. "
                   "labs/results/cgan) instead of training it again")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each variant's epoch.pth and submission.py")
    p.add_argument("--dry-run", action="store_true", help="each loss with labs/cgan.py --dry-run (a smoke test)")
    p.add_argument("--out", default=str(ROOT / "labs" / "results" / "cgan_variants"), metavar="DIR",
                   help="folder for the variants and the table")
    args = p.parse_args(argv)
    if args.time_budget <= 0:
        p.error("--time-budget must be positive: the variants race for the same time.")
    out = Path(args.out)
    rows = []
    for loss in args.losses:
        sub = out / loss
        if loss == "nsgan" and args.nsgan_from:
            rows.append(reused_row(Path(args.nsgan_from) / "Genwithlabel", args, p))
            continue
        cmd = [sys.executable, str(ROOT / "labs" / "cgan.py"), "--loss", loss, "--out", str(sub), "--seed",
               str(args.seed), "--time-budget", f"{args.time_budget:g}"] + (["--dry-run"] if args.dry_run else [])
        print(f"== {loss}: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True)
        rows.append(variant_row(sub / "Genwithlabel", loss))
        if not args.keep_checkpoints:  # the graded numbers and figures stay; the hand-in itself the command remakes
            (sub / "Genwithlabel" / "epoch.pth").unlink(missing_ok=True)
            (sub / "submission.py").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps({"time_budget": args.time_budget, "seed": args.seed,
                                                "dry_run": args.dry_run, "rows": rows}, indent=2) + "\n")
    table = markdown(rows, args.time_budget, args.dry_run)
    (out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()

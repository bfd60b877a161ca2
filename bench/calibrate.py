"""Calibrate and check the fair score: grade honest reference models, degenerate generators and cheats.

    python bench/calibrate.py            # about 20 minutes on 2 CPU cores -> bench/calibration.{json,md}
    python bench/calibrate.py --dry-run  # 500 test images, 50 samples per digit, results in bench/runs/
    python bench/calibrate.py --rescore  # recompute the fair scores of the last run's grades (new constants)

Subjects: the kit's defaults (./VAEwolabel, ./Genwithlabel), the textbook MLP VAE / CVAE a student writes from
the lecture (bench/reference/mlp, trained by the command in bench/README.md), the kit's defaults with a
degenerate sampler (bench/cheats/degenerate_patch.py: reconstructions stay honest; "adversarial" is a gradient
attack on the shipped classifier), and the red team's cheats (bench/cheats/cheat_submission.py). The textbook
model and the adversarial sampler are graded again with a private classifier (train_classifier.py with another
seed, 2 epochs), as a TA would grade. The targets checked: the textbook model earns at least half the points,
the kit's defaults at least 90 %, every degenerate or cheating submission at most a quarter of the textbook
model's fair score under the same classifier. docs/grading.md's calibration table is rewritten from
bench/calibration.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from vaekit import checkpoint
from vaekit.building import load_model
from vaekit.cli import HelpFormatter
from vaekit.course import TASKS
from vaekit.data import load_mnist
from vaekit.grading import GradeSettings, grade_submission
from vaekit.judge import Judge
from vaekit.metrics import fair_factors, fair_score, quantize
from vaekit.paths import ROOT
from vaekit.readme import replace_block

BENCH = ROOT / "bench"
CHEAT = BENCH / "cheats" / "cheat_submission.py"
PATCH = BENCH / "cheats" / "degenerate_patch.py"
DEGENERATE = {"noise": ("vae", "gen"), "one_per_digit": ("vae", "gen"), "label_permuted": ("gen",),
              "train_copier": ("vae", "gen"), "test_copier": ("vae", "gen"), "adversarial": ("vae", "gen")}
CHEATS = ("reads_grader_files", "stash_memory", "stash_files", "writes_outside", "socket", "rewrites_output",
          "pass_through", "weights_lookup")


def set_constants(source: str, **values) -> str:
    """Rewrite module-level ``NAME = ...`` lines of a submission's source."""
    for name, value in values.items():
        source, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", source, count=1, flags=re.M)
        assert n == 1, name
    return source


def write_task(folder: Path, task: str, state: dict[str, torch.Tensor], kwargs: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = TASKS[task].model_class
    checkpoint.save_checkpoint(folder / "epoch.pth", state, task=task, model_class=name, model_kwargs=kwargs)
    checkpoint.write_hyperparameters(folder / "hyperparameters.txt",
                                     {"task": task, "model_class": name, "model_kwargs": kwargs,
                                      "latent_dim": kwargs["latent_dim"]})


def bank(split, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(quantize(split.x)).reshape(len(split), 784)
    return (x, split.y) if n is None else (x[:n], split.y[:n])


def adversarial_bank(train, noise: float = 0.05, eps: float = 0.3, steps: int = 200,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per digit, the training mean plus one perturbation (at most ``eps`` per pixel) that makes the shipped
    classifier read mean + perturbation + N(0, noise²) pixel noise as that digit: a gradient attack on the public
    classifier, done once, that any noise the grader draws keeps working on. Returns (uint8 [10, 784], labels)."""
    from vaekit.classifier import load_classifier

    classifier, _ = load_classifier()
    classifier.eval().requires_grad_(False)
    means = torch.stack([train.x[train.y == c].mean(0) for c in range(10)])  # [10, 1, 28, 28]
    delta = torch.zeros_like(means, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=0.01)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(32)
    for _ in range(steps):
        base = (means + delta.clamp(-eps, eps)).repeat_interleave(32, 0)
        x = (base + noise * torch.randn(base.shape, generator=gen)).clamp(0, 1)
        loss = torch.nn.functional.cross_entropy(classifier(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    images = (means + delta.detach().clamp(-eps, eps)).clamp(0, 1)
    return torch.from_numpy(quantize(images)).reshape(10, 784), torch.arange(10)


def degenerate(out: Path, base: Path, mode: str, tasks: tuple[str, ...], images: dict) -> Path:
    """The honest submission at ``base`` with a degenerate sampler appended (``mode``)."""
    x, y = images.get(mode, (torch.zeros(1, 784, dtype=torch.uint8), torch.zeros(1, dtype=torch.long)))
    source = (base / "submission.py").read_text() + "\n\n" + set_constants(PATCH.read_text(), MODE=mode,
                                                                           BANK_SIZE=len(x))
    out.mkdir(parents=True, exist_ok=True)
    (out / "submission.py").write_text(source)
    for task in tasks:
        model, hp = load_model(base / TASKS[task].folder, base / "submission.py")
        state = {**model.state_dict(), "copy_bank": x, "copy_labels": y}
        write_task(out / TASKS[task].folder, task, state, {**hp["model_kwargs"], "bank_size": len(x)})
    return out


def cheat(out: Path, attack: str, tasks: tuple[str, ...], test_bank: tuple, **constants) -> Path:
    """The red team's submission with ``ATTACK = attack``."""
    out.mkdir(parents=True, exist_ok=True)
    x, y = test_bank if attack == "weights_lookup" else (torch.zeros(1, 784, dtype=torch.uint8),
                                                          torch.zeros(1, dtype=torch.long))
    (out / "submission.py").write_text(set_constants(CHEAT.read_text(), ATTACK=attack, BANK_SIZE=len(x),
                                                     **constants))
    latent = 784 if attack == "pass_through" else 1
    for task in tasks:
        write_task(out / TASKS[task].folder, task, {"bank": x, "bank_labels": y},
                   {"latent_dim": latent, "bank_size": len(x)})
    return out


def markdown(rows: list[dict]) -> str:
    head = ["submission", "kind", "task", "classifier", "course score", "fair score", "fair ÷ textbook", "target",
            "met", "label", "diversity", "novelty", "recon", "fid", "flags"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        f = r.get("fair_factors") or {}
        lines.append("| " + " | ".join([
            r["name"], r["kind"], r["task"], r["classifier"], f"{r['score']:.2f}/{TASKS[r['task']].max_score:.0f}",
            f"{r['fair_score']:.2f}", f"{r['relative']:.2f}", r["target"], "yes" if r["met"] else "**no**",
            *(f"{f[k]:.2f}" if k in f else "–" for k in ("label", "diversity", "novelty", "reconstruction", "fid")),
            str(len(r.get("flags") or [])) if not r.get("error") else "error"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="500 test images and 50 samples per digit; writes "
                   "only under bench/runs/calibration_dry_run/")
    p.add_argument("--reference", default=str(BENCH / "reference" / "mlp"), help="the textbook submission folder")
    p.add_argument("--rescore", action="store_true", help="no grading: recompute fair scores from the grades of "
                   "the last full run (bench/runs/calibration/graded/) with the current fair-score constants")
    args = p.parse_args(argv)
    if args.rescore:
        rows = json.loads((BENCH / "calibration.json").read_text())
        for r in rows:
            graded = "graded" if r.get("classifier", "public") == "public" else "graded_private"
            res = json.loads((BENCH / "runs" / "calibration" / graded / re.sub(r"\W+", "_", r["name"]) /
                              TASKS[r["task"]].folder / "grade_result.json").read_text())
            if not res.get("error"):
                r["fair_factors"], r["fair_score"] = fair_factors(res), fair_score(res)
        return report(rows, BENCH, update_readme=True)

    runs = BENCH / "runs" / ("calibration_dry_run" if args.dry_run else "calibration")
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    test_data = None
    if args.dry_run:
        import numpy as np

        t = load_mnist("test").subset(500)
        test_data = runs / "test_subset.npz"
        np.savez(test_data, x=quantize(t.x), y=t.y.numpy())
    judge = Judge(str(test_data) if test_data else None)
    settings = GradeSettings(per_label=50 if args.dry_run else 1000)
    test_bank = (torch.from_numpy(judge.test_u8).reshape(-1, 784), torch.from_numpy(judge.test_y))
    train = load_mnist("train")
    images = {"train_copier": bank(train, 5000), "test_copier": test_bank, "adversarial": adversarial_bank(train)}

    subjects = [("kit defaults", "honest", ROOT, ("vae", "gen")),
                ("textbook MLP", "honest", Path(args.reference), ("vae", "gen"))]
    for mode, tasks in DEGENERATE.items():
        subjects.append((mode, "degenerate", degenerate(runs / mode, ROOT, mode, tasks, images), tasks))
    for attack in CHEATS:  # the blocked ones are blank either way: one task each
        tasks = ("vae", "gen") if attack in ("weights_lookup", "pass_through") else ("vae",)
        subjects.append((attack, "cheat", cheat(runs / attack, attack, tasks, test_bank), tasks))

    rows = grade_all(judge, subjects, settings, runs / "graded", "public")
    # The attack on the shipped classifier, judged by a private one (another seed, as a TA would train it).
    private = runs / "private_classifier.pt"
    subprocess.run([sys.executable, str(ROOT / "train_classifier.py"), "--seed", "1", "--out", str(private),
                    *(["--dry-run"] if args.dry_run else ["--epochs", "2"])], cwd=ROOT, check=True)
    judge = Judge(str(test_data) if test_data else None, str(private))
    rows += grade_all(judge, [s for s in subjects if s[0] in ("textbook MLP", "adversarial")], settings,
                      runs / "graded_private", "private")
    report(rows, runs if args.dry_run else BENCH, update_readme=not args.dry_run)


def grade_all(judge: Judge, subjects: list, settings: GradeSettings, out: Path, classifier: str) -> list[dict]:
    rows = []
    for name, kind, folder, tasks in subjects:
        graded = grade_submission(judge, folder, out / re.sub(r"\W+", "_", name), list(tasks), settings)
        for task, r in graded.items():
            rows.append({"name": name, "kind": kind, "task": task, "classifier": classifier, **{k: r.get(k) for k in (
                "score", "fair_score", "fair_factors", "flags", "error", "ssim", "fid_ratio", "cond_accuracy",
                "memorization", "memorization_heldout", "recon_copies", "diversity_within_class")}})
            print(f"{name:22s} {task} {classifier:7s} course {r['score']:6.2f}  fair {r['fair_score']:6.2f}  "
                  f"{r.get('error') or ''}", flush=True)
    return rows


def report(rows: list[dict], out: Path, update_readme: bool) -> None:
    """Check each row against its target; write calibration.{json,md} (and docs/grading.md's table)."""
    textbook = {(r["task"], r["classifier"]): r["fair_score"] for r in rows if r["name"] == "textbook MLP"}
    for r in rows:
        top = TASKS[r["task"]].max_score
        ref = textbook[r["task"], r["classifier"]]
        r["relative"] = r["fair_score"] / ref if ref else float("inf")
        if r["name"] == "kit defaults":
            r["target"], r["met"] = "≥ 90 % of max", r["fair_score"] >= 0.9 * top
        elif r["kind"] == "honest":
            r["target"], r["met"] = "≥ 50 % of max", r["fair_score"] >= 0.5 * top
        else:
            r["target"], r["met"] = "≤ 0.25 × textbook", r["relative"] <= 0.25
    (out / "calibration.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = markdown(rows)
    (out / "calibration.md").write_text(table)
    print(table)
    print(f"{sum(r['met'] for r in rows)}/{len(rows)} targets met")
    if update_readme:
        replace_block("calibration", table)


if __name__ == "__main__":
    main()

"""Benchmark: train the default models with the default commands, grade them, and compare with the
canonical MLP VAE / CVAE (784-400-20, BCE, Adam 1e-3, batch 128), trained for the same wall time, and the
conditional GAN lab (``labs/cgan.py``) with its own defaults (a GAN needs more steps than a VAE; its row shows what
they cost); the defaults without the adversarial sharpening of the decoder; and two prior ablations on the
default weights (N(0, I), and one Gaussian instead of the mixture).

Every row shows the fid_ratio of the model's samples beside that of its reconstructions of 10 000 training
images (the ceiling a prior can reach with that decoder), and every wall time also as a multiple of 10 epochs
of the canonical MLP VAE (machines of the same kind differ; the ratios travel). The yardstick is timed just
before and just after each default training and the ratio takes their mean: one shared VM ran the same 10
epochs in 29 s and 38 s a minute apart, so a yardstick timed once, half an hour away, says little.

    python bench/run.py            # writes bench/results.{json,md}
    python bench/run.py --dry-run  # a smoke test: every train script with --dry-run, results in bench/runs/dry_run/
    python bench/run.py --only cgan  # retrain and regrade the conditional GAN's row alone, keep the others

Every model is graded by the same code as grade.py (official test set, shipped classifier). The README's
table between the bench markers is rewritten from bench/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from vaekit import checkpoint, metrics
from vaekit.building import load_model
from vaekit.cli import HelpFormatter
from vaekit.course import TASKS, TRAIN_SCRIPTS
from vaekit.data import Split, load_mnist
from vaekit.generation import fast_layout, quantize, reconstruct, sample
from vaekit.grading import GradeSettings, grade_submission
from vaekit.judge import Judge
from vaekit.paths import ROOT
from vaekit.priors import refit_prior
from vaekit.readme import replace_block
from vaekit.scoring import feature_fids

PY = sys.executable
MLP = ROOT / "bench" / "mlp_submission.py"
MLP_FLAGS = ["--submission", str(MLP), "--latent-dim", "20", "--lr", "1e-3", "--batch-size", "128", "--epochs",
             "1000", "--prior", "standard"]
COLUMNS = [("model", "model"), ("task", "task"), ("train_s", "train s"), ("train_x", "× canonical"),
           ("epochs", "epochs"), ("score", "course score"), ("cond_accuracy", "cond acc"),
           ("fid_ratio", "fid ratio samples"), ("fid_ratio_recon", "fid ratio recon"), ("diversity", "diversity"),
           ("histogram_max_deviation", "hist dev"), ("memorization", "memorization"), ("mse", "recon MSE"),
           ("ssim", "SSIM"), ("latent_dim", "latent"), ("samples_per_s", "samples/s")]
CANONICAL_EPOCHS = 10
GAN_ROW = "conditional GAN (labs/cgan.py)"



def reconstruction_fid_ratio(judge: Judge, recon_u8: np.ndarray, labels: np.ndarray, conditional: bool,
                             seed: int = 0) -> float:
    """``fid_ratio`` of reconstructions of training images, as ``score_gen`` (per digit, averaged) or
    ``score_vae`` (all together) measures samples: the ceiling a prior can reach with this decoder."""
    feats = judge.features(recon_u8)[0]
    if not conditional:
        fid, real = feature_fids(judge, feats, seed)
        return fid / real
    pairs = [feature_fids(judge, feats[labels == c], seed + c, label=c) for c in range(10)]
    return float(np.mean([g for g, _ in pairs]) / np.mean([r for _, r in pairs]))


def train(script: str, out: Path, flags: list[str]) -> float:
    """Run a train script as a student would; return its wall time."""
    t0 = time.perf_counter()
    subprocess.run([PY, script, "--out", str(out), *flags], cwd=ROOT, check=True)
    return time.perf_counter() - t0


def canonical_seconds(dry_run: bool) -> float:
    """Wall time of 10 epochs of the canonical MLP VAE (784-400-20, BCE, Adam 1e-3, batch 128) on all 60 000
    training images with 2 threads: the yardstick every wall time is divided by."""
    from vaekit.course import load_submission
    from vaekit.settings import FitSettings
    from vaekit.training_loop import fit

    mlp = load_submission(MLP)
    train, valid = load_mnist("train"), load_mnist("valid")
    data = Split(torch.cat([train.x, valid.x]), torch.cat([train.y, valid.y]))
    torch.manual_seed(0)
    model = mlp.VAE(20, hidden=400)

    def loss_fn(m, x, y):
        recon, mu, logvar = m(x)
        return {"loss": mlp.vae_loss(recon, x, mu, logvar)}

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    fit(model, loss_fn, data, valid.subset(1000),
        FitSettings(CANONICAL_EPOCHS, 1e-3, 128, max_steps=5 if dry_run else None, desc="canonical MLP"))
    seconds = time.perf_counter() - t0
    torch.set_num_threads(threads)
    return seconds


def recon_ceiling(judge: Judge, folder: Path, submission: Path, task: str, train: Split, n: int = 10000) -> float:
    """fid_ratio of the reconstructions of the first ``n`` training images (in-process: our own models)."""
    model, _ = load_model(folder, submission)
    images, _ = reconstruct(model, train.x[:n], train.y[:n])
    return reconstruction_fid_ratio(judge, quantize(images), train.y[:n].numpy(), TASKS[task].conditional)


def decode_rate(folder: Path, submission: Path, n: int = 10000) -> float:
    """Images per second of ``decode`` on this machine (``n`` samples, eval mode, no grad)."""
    model, hp = load_model(folder, submission)
    fast_layout(model)  # as grade.py's worker decodes
    labels = torch.arange(10).repeat_interleave(n // 10)
    latent_dim = hp["model_kwargs"]["latent_dim"]
    sample(model, labels[:n // 5], latent_dim, seed=0)  # warm-up
    t0 = time.perf_counter()
    sample(model, labels, latent_dim, seed=0)
    return len(labels) / (time.perf_counter() - t0)


def row(name: str, task: str, result: dict, train_s: float, folder: Path, submission: Path, canonical_s: float,
        ceiling: float, n: int = 10000) -> dict:
    hp = json.loads((folder / "hyperparameters.txt").read_text())
    r = {"model": name, "task": task, "train_s": round(train_s, 1), "train_x": round(train_s / canonical_s, 2),
         "epochs": hp.get("epochs_run"), "samples_per_s": round(decode_rate(folder, submission, n)),
         "fid_ratio_recon": ceiling}
    for key in ("score", "max_score", "fair_score", "cond_accuracy", "fid_ratio", "diversity", "memorization",
                "mse", "ssim", "fid", "latent_dim", "class_histogram", "histogram_max_deviation", "error"):
        if key in result:
            r[key] = result[key]
    return r


def markdown(rows: list[dict], machine: dict) -> str:
    def fmt(key: str, r: dict) -> str:
        v = r.get(key)
        if v is None:
            return "–"
        if key == "score":
            return f"{v:.2f}/{r['max_score']:.0f}"
        if key in ("cond_accuracy",):
            return f"{100 * v:.2f} %"
        if key == "histogram_max_deviation":
            return f"{100 * v:.0f} %"
        if isinstance(v, float):
            return f"{v:.4f}" if key in ("mse", "ssim") else f"{v:.3f}" if key == "diversity" else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(k, r) for k, _ in COLUMNS) + " |" for r in rows]
    lines.append("")
    canon = {task: " / ".join(f"{t:.1f}" for t in times) for task, times in machine["canonical_s"].items()}
    lines.append(f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
                 f"{machine['date']}. Canonical MLP VAE, {CANONICAL_EPOCHS} epochs, timed just before and just "
                 f"after each default training: {canon['vae']} s around `train_vae.py`, {canon['gen']} s around "
                 f"`train_cond.py`"
                 + (f", {canon['cgan']} s around `labs/cgan.py` (its row's 1 ×"
                    + (f"; that row rerun on {machine['gan_row_date']} by `--only cgan`" if "gan_row_date" in machine
                       else "") + ")" if "cgan" in canon else "")
                 + "; each task's mean is its rows' 1 ×"
                 + "".join(f"; the {t} rows rerun on {machine[f'{t}_rows_date']} by `--only {t}`"
                           for t in ("vae", "gen") if f"{t}_rows_date" in machine)
                 + f". `grade.py` on both default models: "
                 f"{machine['grade_s']:.0f} s. The training images' own digit histogram deviates "
                 f"{100 * machine['real_histogram_max_deviation']:.0f} % from uniform "
                 "(what hist dev reads for a model that samples digits as often as the data has them).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every script with --dry-run (a smoke test); writes only "
                   "under bench/runs/dry_run/ (or OUT)")
    p.add_argument("--only", choices=["vae", "gen", "cgan"], default=None,
                   help="retrain and regrade one task's rows (vae, gen: the default, its ablations and the MLP, "
                   "each default training bracketed by the yardstick) or the conditional GAN lab's row (cgan), and "
                   "replace them in the existing results, keeping every other row")
    p.add_argument("--out", default=None, help="results folder, with the trained models under OUT/runs (default: "
                   "bench/ and bench/runs/full, or bench/runs/dry_run for both with --dry-run)")
    args = p.parse_args(argv)

    default_runs = ROOT / "bench" / "runs" / ("dry_run" if args.dry_run else "full")
    out_dir = Path(args.out) if args.out else (default_runs if args.dry_run else ROOT / "bench")
    runs = out_dir / "runs" if args.out else default_runs
    if args.only:
        return only_rows(args.only, out_dir, runs, args.dry_run)
    shutil.rmtree(runs, ignore_errors=True)
    canonical: dict[str, list[float]] = {}  # task -> 10 canonical epochs just before and just after its training
    train_split = load_mnist("train").subset(5000 if args.dry_run else None)  # the dry run refits on a subset
    models = []  # (name, task, submission dir, submission.py, s)
    for task in TASKS:
        models += task_models(task, runs, args.dry_run, canonical, train_split)
        if task == "gen":  # the conditional GAN lab with its own defaults, bracketed by its own yardstick
            models.append(train_gan(runs, args.dry_run, canonical))

    # -- grade: the real grade.py command on the defaults (timed), the same code in-process for the rest --
    test_data = dry_run_test_data(runs) if args.dry_run else None
    t0 = time.perf_counter()
    subprocess.run([PY, "grade.py", "--submission", str(runs / "default"), "--out", str(runs / "default_graded")]
                   + (["--samples-per-label", "20", "--test-data", str(test_data)] if args.dry_run else []),
                   cwd=ROOT, check=True)
    grade_s = time.perf_counter() - t0
    rows = grade_rows(models, runs, test_data, canonical, train_split, args.dry_run)
    real_hist = metrics.class_histogram(train_split.y.numpy())
    machine = {"cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
               "cpu": _cpu_name(), "threads": torch.get_num_threads(), "grade_s": round(grade_s, 1),
               "canonical_s": {t: [round(s, 1) for s in times] for t, times in canonical.items()},
               "real_histogram_max_deviation": round(max(abs(h - 0.1) / 0.1 for h in real_hist), 4),
               "date": time.strftime("%Y-%m-%d")}
    write_results(out_dir, machine, rows, args.dry_run)


def task_models(task: str, runs: Path, dry_run: bool, canonical: dict[str, list[float]],
                train_split: Split) -> list[tuple[str, str, Path, Path, float]]:
    """Train one task's rows: the default command (bracketed by the yardstick), without sharpening, the textbook MLP
    for as long as the default took; then the ablations on the default's weights (N(0, I) prior for the GenModel, one
    Gaussian, no volume cap), which cost no training."""
    script, folder = TRAIN_SCRIPTS[task], TASKS[task].folder
    extra = ["--epochs", "1", "--time-budget", "1"] if dry_run else []
    subsets = ["--dry-run"] if dry_run else []
    default = runs / "default"
    before = canonical_seconds(dry_run)
    seconds = train(script, default / folder, subsets + extra)
    canonical[task] = [before, canonical_seconds(dry_run)]
    shutil.copy(ROOT / "submission.py", default / "submission.py")
    models = [("default conv", task, default, ROOT / "submission.py", seconds)]
    plain = runs / "no_sharpening"
    plain_s = train(script, plain / folder, subsets + extra + ["--sharpen-epochs", "0"])
    shutil.copy(ROOT / "submission.py", plain / "submission.py")
    models.append(("default conv, no sharpening", task, plain, ROOT / "submission.py", plain_s))
    mlp = runs / "mlp"
    mlp_s = train(script, mlp / folder, subsets + MLP_FLAGS + ["--time-budget", f"{seconds:.0f}"] + extra[:2])
    shutil.copy(MLP, mlp / "submission.py")
    models.append(("canonical MLP", task, mlp, MLP, mlp_s))
    if task == "gen":  # the default GenModel sampled from N(0, I) instead of its fitted prior
        std = runs / "standard_prior"
        shutil.rmtree(std / folder, ignore_errors=True)
        shutil.copytree(default / folder, std / folder)
        shutil.copy(ROOT / "submission.py", std / "submission.py")
        ckpt = checkpoint.load_checkpoint(std / folder / "epoch.pth")
        sd = ckpt["model_state_dict"]
        sd["prior.mean"].zero_()
        sd["prior.chol"].copy_(torch.eye(sd["prior.chol"].shape[-1]).expand_as(sd["prior.chol"]))
        checkpoint.save_checkpoint(std / folder / "epoch.pth", sd,
                                   **{k: v for k, v in ckpt.items() if k not in ("model_state_dict", "format_version")})
        models.append(("default conv, N(0,I) prior", "gen", std, ROOT / "submission.py", seconds))
    # The same trained weights with one Gaussian (per digit) instead of the mixture, and with every mixture
    # component at its full width (no volume cap).
    one, uncapped = runs / "one_gaussian", runs / "no_volume_cap"
    refit_prior(default, one, task, train_split.x, train_split.y, components=1)
    models.append(("default conv, one-Gaussian prior", task, one, ROOT / "submission.py", seconds))
    refit_prior(default, uncapped, task, train_split.x, train_split.y, volume_quantile=1.0)
    models.append(("default conv, no volume cap", task, uncapped, ROOT / "submission.py", seconds))
    return models


def dry_run_test_data(runs: Path) -> Path:
    """The dry run grades on 300 test images."""
    test_data = runs / "test_subset.npz"
    if not test_data.is_file():
        t = load_mnist("test").subset(300)
        np.savez(test_data, x=quantize(t.x), y=t.y.numpy())
    return test_data


def train_gan(runs: Path, dry_run: bool, canonical: dict[str, list[float]]) -> tuple[str, str, Path, Path, float]:
    """Train the conditional GAN lab with its defaults, the yardstick timed just before and after (``canonical``
    gets them under ``cgan``); return its model entry."""
    gan = runs / "cgan"
    before = canonical_seconds(dry_run)
    gan_s = train("labs/cgan.py", gan, ["--no-grade"] + (["--dry-run"] if dry_run else []))
    canonical["cgan"] = [before, canonical_seconds(dry_run)]
    return GAN_ROW, "gen", gan, gan / "submission.py", gan_s


def grade_rows(models: list[tuple[str, str, Path, Path, float]], runs: Path, test_data: Path | None,
               canonical: dict[str, list[float]], train_split: Split, dry_run: bool) -> list[dict]:
    """Grade every trained model with grade.py's code and make its row (sorted: VAE rows first)."""
    judge = Judge(str(test_data) if test_data else None)
    n_images = 500 if dry_run else 10000  # reconstructed (the ceiling) and decoded (the rate) per model
    settings = GradeSettings(per_label=20 if dry_run else 1000)
    def grade(model: tuple[str, str, Path, Path, float]):
        name, task, sub_dir = model[:3]
        slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
        return grade_submission(judge, sub_dir, runs / "graded" / slug, [task], settings)[task]

    # The grades, two at a time (they measure no time); then each row's timed measurements, one at a time.
    with ThreadPoolExecutor(2) as pool:
        grades = list(pool.map(grade, models))
    rows = []
    for (name, task, sub_dir, sub_py, seconds), result in zip(models, grades):
        folder = sub_dir / result.folder
        ceiling = recon_ceiling(judge, folder, sub_py, task, train_split, n_images)
        yardstick = canonical["cgan" if name == GAN_ROW else task]
        rows.append(row(name, task, result, seconds, folder, sub_py, sum(yardstick) / 2, ceiling, n_images))
    return sorted(rows, key=lambda r: (r["task"] != "vae", r["model"]))


def write_results(out_dir: Path, machine: dict, rows: list[dict], dry_run: bool) -> None:
    """results.json, results.md and (not for a dry run) the README's bench table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    table = markdown(rows, machine)
    (out_dir / "results.md").write_text(table)
    print(table)
    if not dry_run:
        replace_block("bench", table)


def only_rows(which: str, out_dir: Path, runs: Path, dry_run: bool) -> None:
    """``--only vae|gen|cgan``: retrain and regrade those rows and put them in place of the old ones in
    OUT/results.json, every other row kept as it was (the machine block records the date of the rerun)."""
    results_file = out_dir / "results.json"
    if not results_file.exists():
        flags = (" --dry-run" if dry_run else "") + (f" --out {out_dir}" if out_dir != ROOT / "bench" else "")
        raise SystemExit(f"{results_file} does not exist: run the whole bench first (python bench/run.py{flags}).")
    results = json.loads(results_file.read_text())
    test_data = dry_run_test_data(runs) if dry_run else None  # the dry run's 300 test images, as the full run's
    canonical: dict[str, list[float]] = {}
    train_split = load_mnist("train").subset(5000 if dry_run else None)
    if which == "cgan":
        shutil.rmtree(runs / "cgan", ignore_errors=True)
        models = [train_gan(runs, dry_run, canonical)]
        replaced = lambda r: r["model"] == GAN_ROW  # noqa: E731
    else:
        models = task_models(which, runs, dry_run, canonical, train_split)
        replaced = lambda r: r["task"] == which and r["model"] != GAN_ROW  # noqa: E731
    new = grade_rows(models, runs, test_data, canonical, train_split, dry_run)
    rows = sorted([r for r in results["rows"] if not replaced(r)] + new, key=lambda r: (r["task"] != "vae", r["model"]))
    machine = results["machine"]
    machine["canonical_s"][which] = [round(s, 1) for s in canonical[which]]
    machine["gan_row_date" if which == "cgan" else f"{which}_rows_date"] = time.strftime("%Y-%m-%d")
    write_results(out_dir, machine, rows, dry_run)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()

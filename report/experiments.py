"""The report's experiments, one command each; every number the report quotes comes from their JSON files.

    python report/experiments.py q1 --epochs 2 --jobs 2   # VAE: learning rate, latent size, σ_x², short runs
    python report/experiments.py q1 --knob latent_dim=16,32 --knob lr=2e-3,8e-3   # the same at the default epochs
    python report/experiments.py q2 --epochs 2 --jobs 2   # MLP vs conv vs attention: same epochs, N(0, I), speeds
    python report/experiments.py q2 --jobs 2   # the same at equal training time, each with its own prior; and three
                                               # ways of feeding the label to the GenModel
    python report/experiments.py gen --epochs 2 --jobs 2  # GenModel: σ_x², prior components, shrink, volume cap
    python report/experiments.py gen --knob components=10,30,100 --knob volume_quantile=0.3,1.0
    python report/experiments.py label-swap   # shipped GenModel: one code decoded with each of the ten labels

A sweep at each script's own epochs (the shipped models') writes report/results/<name>.json; one at ``--epochs N``
writes <name>_e<N>.json, so a short sweep over many values and a decisive one over a few stand side by side.

Each run trains with train_vae.py / train_cond.py for a fixed number of epochs (not a wall-clock budget, so
a busy machine changes the seconds but not the result), without the adversarial sharpening, and is graded
with the grader's own code and settings. A finished run's result is kept in report/runs/<run>/result.json,
so an interrupted command resumes where it stopped. Summaries (mean, sample std, per-seed values, CPU time)
go to report/results/<experiment>.json, which are committed: the report builds in seconds without them
being rerun.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.checkpoint import file_sha256, read_hyperparameters
from vaekit.cli import HelpFormatter
from vaekit.paths import ROOT

RUNS = ROOT / "report" / "runs"
RESULTS = ROOT / "report" / "results"
ARCH_FILES = {"mlp": ROOT / "bench" / "mlp_submission.py", "conv": ROOT / "submission.py",
              "attention": ROOT / "bench" / "attention_submission.py"}
# Other ways for the GenModel to take its label: submission.py with a subclass appended that overrides how the label
# reaches the networks (the prior stays one mixture per digit). "conv" itself feeds it to the encoder and decoder.
LABEL_FEEDS = {
    "decoder-only": '''

class GenModel(GenModel):  # report variant: only the decoder sees the label
    def __init__(self, latent_dim: int = 16, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.encoder = ConvEncoder(latent_dim, kwargs.get("channels", 32), kwargs.get("hidden", 256))

    def encode_latent(self, x, labels=None):
        self.group(labels, len(x), x.device)  # the labels are still checked
        return self.encoder(x)
''',
    "prior-only": '''

class GenModel(GenModel):  # report variant: neither network sees the label; it only picks the digit's prior mixture
    def __init__(self, latent_dim: int = 16, **kwargs):
        super().__init__(latent_dim, **kwargs)
        channels, hidden = kwargs.get("channels", 32), kwargs.get("hidden", 256)
        self.encoder = ConvEncoder(latent_dim, channels, hidden)
        self.decoder = ConvDecoder(latent_dim, channels, hidden)

    def onehot(self, labels, n, device):
        self.group(labels, n, device)  # the labels are still checked
        return None
''',
}
# One knob changed at a time from the baseline (the kit's defaults when the sweeps were run; the VAE now ships with
# latent size 32, which Q1 chose); each value trained with every seed.
Q1_BASE = {"lr": 2e-3, "latent_dim": 16, "var": 0.01}
Q1 = {"lr": (5e-4, 2e-3, 8e-3), "latent_dim": (2, 4, 8, 16, 32), "var": (0.001, 0.01, 0.1)}
# Q2 at equal training time: each architecture trains for the epochs that fit this many seconds on one thread, at the
# seconds per epoch its short (2-epoch) runs measured (q2_e2.json), with the shipped VAE's settings.
Q2_BUDGET_S = 300
Q2_BASE = {"lr": 2e-3, "latent_dim": 32, "var": 0.01, "batch_size": 128}
GEN_VAR = (0.001, 0.003, 0.01)
# The conditional prior refitted on the same weights (the σ_x² = 0.003 runs): one change at a time.
GEN_PRIOR = {"components": (1, 10, 30, 100), "prior_shrink": (0.8, 1.0), "volume_quantile": (0.3, 1.0)}
GEN_PRIOR_BASE = {"components": 30, "prior_shrink": 1.0, "volume_quantile": 0.3}
VAE_KEYS = ("score", "ssim", "mse", "fid_ratio", "diversity", "fair_score", "unreadable", "params")
GEN_KEYS = ("score", "cond_accuracy", "fid", "fid_ratio", "diversity", "memorization", "fair_score", "unreadable",
            "params", "label_decides")
MEASURED = ("unreadable", "params", "label_decides")  # from a run's files (``Lab._complete``), not its grade
SAMPLES = RESULTS / "samples"  # a strip of each run's samples, drawn as the course draws them (the report shows them)
CURVE_KEYS = ("train_kl", "train_loss", "valid_loss", "valid_recon")  # what a run's summary keeps of each epoch


def _settings(threads: int):
    from vaekit.grading import GradeSettings

    return GradeSettings(threads=threads)


class Lab:
    """Trains and grades runs, each once (results cached on disk), ``jobs`` at a time on ``threads`` each."""

    def __init__(self, epochs: int | None, seeds: int, jobs: int, knobs: tuple[str, ...] = ()):
        from vaekit.judge import Judge

        # None: each task's own default (the number of epochs the shipped models were trained for).
        self.epochs = {task: epochs or script_defaults(task)["epochs"] for task in ("vae", "gen")}
        self.short = epochs is not None  # a sweep at other epochs than the shipped models'
        self.seeds, self.jobs, self.knobs = list(range(seeds)), jobs, knobs
        self.cores = torch.get_num_threads() or 1  # before any run sets its own thread count
        self.threads = max(1, self.cores // jobs)
        self.judge = Judge(threads=self.threads)
        self.core_seconds = 0.0  # training and grading of the runs asked for, cached ones included

    @functools.cached_property
    def train(self):
        """The training split, loaded once (prior refits encode it)."""
        from vaekit.data import load_mnist

        return load_mnist("train")

    def run(self, task: str, seed: int, arch: str = "conv", base: dict | None = None, epochs: int | None = None,
            **flags: Any) -> dict:
        """Train (unless done) and grade one run; ``flags`` are train-script options, named in the run's folder;
        ``base``: the sweep's baseline, passed too (so a later change of the shipped defaults cannot move it);
        ``epochs``: this run's own (default: the lab's for the task)."""
        epochs = epochs or self.epochs[task]
        knobs = (f"{k}{v}" for k, v in sorted(flags.items()))
        name = "-".join([task, arch, f"e{epochs}", *knobs, f"s{seed}"])
        folder = RUNS / name
        done = folder / "result.json"
        if done.is_file():
            return self._complete(folder, task, json.loads(done.read_text()))
        out = folder / ("VAEwolabel" if task == "vae" else "Genwithlabel")
        script = "train_vae.py" if task == "vae" else "train_cond.py"
        code = folder / "submission.py"  # the file the run trains from, kept beside it for grading
        folder.mkdir(parents=True, exist_ok=True)
        code.write_text(source(arch))
        cmd = [sys.executable, script, "--submission", str(code), "--epochs", str(epochs),
               "--sharpen-epochs", "0", "--seed", str(seed), "--workers", str(self.threads), "--out", str(out)]
        cmd += [f"--{k.replace('_', '-')}={v}" for k, v in {**(base or {}), **flags}.items()]
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return self._grade(folder, task, {"arch": arch, "seed": seed, **flags}, t)

    def refit(self, base: Path, seed: int, components: int, prior_shrink: float, volume_quantile: float) -> dict:
        """Refit the GenModel's per-digit prior on trained weights with other settings, then grade it."""
        from vaekit.priors import refit_prior

        flags = {"components": components, "prior_shrink": prior_shrink, "volume_quantile": volume_quantile}
        if flags == GEN_PRIOR_BASE:  # the trained run's own prior
            return {**self._complete(base, "gen", json.loads((base / "result.json").read_text())), **flags,
                    "run_s": 0.0}
        folder = RUNS / "-".join([base.name, "prior", *(f"{k}{v}" for k, v in flags.items())])
        if (folder / "result.json").is_file():
            return self._complete(folder, "gen", json.loads((folder / "result.json").read_text()))
        t = time.perf_counter()
        torch.set_num_threads(self.threads)
        refit_prior(base, folder, "gen", self.train.x, self.train.y, **flags)
        return self._grade(folder, "gen", {"arch": "conv", "seed": seed, "var": 0.003, **flags}, t)

    def _grade(self, folder: Path, task: str, config: dict, started: float) -> dict:
        from vaekit.grading import grade_submission

        t = time.perf_counter()
        graded = grade_submission(self.judge, folder, folder / "graded", [task], _settings(self.threads))[task]
        if graded.get("error"):
            raise RuntimeError(f"{folder.name}: {graded['error']}")
        sub = folder / ("VAEwolabel" if task == "vae" else "Genwithlabel")
        hp = read_hyperparameters(sub / "hyperparameters.txt")
        keys = VAE_KEYS if task == "vae" else GEN_KEYS
        result = {**config, "epochs": hp["epochs_run"], "train_s": hp["wall_time_s"],
                  "s_per_epoch": round(hp["wall_time_s"] / hp["epochs_run"], 1), "threads": self.threads,
                  "grade_s": round(time.perf_counter() - t, 1),
                  "run_s": round(time.perf_counter() - started, 1),
                  **{k: graded.get(k) for k in keys if k not in MEASURED}}
        (folder / "result.json").write_text(json.dumps(result, indent=1) + "\n")
        return self._complete(folder, task, result)

    def _complete(self, folder: Path, task: str, result: dict) -> dict:
        """What a run's files say beyond its grade, added once to its result.json: the share of unreadable samples
        (``unreadable_share``), the model's parameter count, for a GenModel how often a code decoded with another
        digit's label draws that label (``label_decides``), the per-epoch curves, and a strip of samples."""
        sub = folder / ("VAEwolabel" if task == "vae" else "Genwithlabel")
        code = folder / "submission.py" if (folder / "submission.py").is_file() else ARCH_FILES["conv"]
        before = dict(result)
        strip = SAMPLES / f"{folder.name}.png"
        measured = [k for k in MEASURED if k in (VAE_KEYS if task == "vae" else GEN_KEYS)]
        wanted = any(result.get(k) is None for k in measured) or not strip.is_file()
        if wanted and (sub / "epoch.pth").is_file():  # one load of the model serves all
            from vaekit.building import load_model

            model, hp = load_model(sub, code)
            if result.get("unreadable") is None:
                result["unreadable"] = unreadable_share(model, hp, task)
            if result.get("params") is None:
                result["params"] = sum(p.numel() for p in model.parameters())
            if task == "gen" and result.get("label_decides") is None:
                result["label_decides"] = round(swap_shares(model, self.judge.classifier)["prior_swapped_as_label"], 4)
            if not strip.is_file():
                sample_strip(model, hp, strip)
        if "history" not in result and (sub / "history.json").is_file():
            h = json.loads((sub / "history.json").read_text())
            h = h.get("vae", []) if isinstance(h, dict) else h
            result["history"] = [{k: round(e[k], 4) for k in ("epoch", *CURVE_KEYS) if k in e} for e in h]
        if strip.is_file():
            result["samples"] = strip.relative_to(RESULTS).as_posix()
        if result != before and (folder / "result.json").is_file():
            (folder / "result.json").write_text(json.dumps(result, indent=1) + "\n")
        return result

    def sweep(self, knobs: dict[str, tuple]) -> dict[str, tuple]:
        """The knobs of ``knobs`` asked for by ``--knob`` (all when none was), with the values asked for."""
        if not self.knobs:
            return knobs
        asked = dict(k.split("=", 1) if "=" in k else (k, "") for k in self.knobs)
        return {k: tuple(type(v[0])(x) for x in asked[k].split(",")) if asked[k] else v
                for k, v in knobs.items() if k in asked}

    def many(self, calls: list[tuple]) -> list[dict]:
        """Run ``(method, args, kwargs)`` calls ``jobs`` at a time, in order; count their core-seconds."""
        with ThreadPoolExecutor(self.jobs) as pool:
            results = list(pool.map(lambda c: c[0](*c[1], **c[2]), calls))
        self.core_seconds += sum(r.get("run_s", 0) * r["threads"] for r in results)
        return results


def source(arch: str) -> str:
    """The submission file an architecture trains from: a file of its own, or submission.py with a label variant."""
    if arch in LABEL_FEEDS:
        return ARCH_FILES["conv"].read_text() + LABEL_FEEDS[arch]
    return ARCH_FILES[arch].read_text()


def unreadable_share(model: torch.nn.Module, hp: dict, task: str, per_digit: int = 100) -> float:
    """The share of samples, drawn as the course draws them (``per_digit`` per digit), that the grading classifier
    reads with less confidence than ``samplecheck.CONFIDENT``: what a prior's malformed digits show up in. Measured
    here, not read from the run's hyperparameters (a refitted prior's would be its base run's)."""
    from vaekit.samplecheck import check_samples

    check = check_samples(model, task == "gen", hp["model_kwargs"]["latent_dim"], hp["training"]["var"], "fitted",
                          per_digit=per_digit)
    return round(check.unreadable, 4)


def sample_strip(model: torch.nn.Module, hp: dict, path: Path, per_digit: int = 2) -> None:
    """Two samples per digit (GenModel: row by digit asked; VAE: twenty draws), as the course draws them."""
    from vaekit.plots import save_grid
    from vaekit.samplecheck import draw_course_way

    images, _ = draw_course_way(model, hp["model_kwargs"]["latent_dim"], per_digit, seed=0)
    order = np.arange(len(images)).reshape(10, per_digit).T.ravel()  # row r: the r-th sample of each digit
    save_grid(torch.from_numpy(images[order]).float().div(255), path, nrow=10)


def script_defaults(task: str) -> dict[str, Any]:
    """``DEFAULTS`` of ``train_vae.py`` / ``train_cond.py``: what the shipped models were trained with."""
    import importlib.util

    path = ROOT / ("train_vae.py" if task == "vae" else "train_cond.py")
    spec = importlib.util.spec_from_file_location(f"_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DEFAULTS


def summarise(runs: list[dict], knob: str, keys: tuple[str, ...]) -> list[dict]:
    """One row per value of ``knob``: each metric's mean, sample std and per-seed values, in run order."""
    rows: dict[Any, list[dict]] = {}
    for r in runs:
        rows.setdefault(r[knob], []).append(r)
    out = []
    for value, group in rows.items():
        row: dict[str, Any] = {knob: value, "seeds": len(group), "epochs": group[0]["epochs"],
                               "threads": group[0]["threads"]}
        for k in (*keys, "train_s", "s_per_epoch"):
            xs = [g[k] for g in group if g.get(k) is not None]
            row[k] = {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                      "runs": xs} if xs else None
        row["histories"] = [g.get("history") for g in group]
        row["samples"] = [g.get("samples") for g in group]
        out.append(row)
    return out


def q1(lab: Lab) -> dict:
    defaults = Q1_BASE
    sweeps = {}
    for knob, values in lab.sweep(Q1).items():
        calls = [(lab.run, ("vae", s), {"base": Q1_BASE, **{k: v for k, v in {knob: x}.items() if v != defaults[k]}})
                 for x in values for s in lab.seeds]
        runs = [{**r, knob: x} for r, x in zip(lab.many(calls), [x for x in values for _ in lab.seeds])]
        sweeps[knob] = summarise(runs, knob, VAE_KEYS)
    return {"defaults": defaults, "sweeps": sweeps}


def q2(lab: Lab) -> dict:
    if lab.short:  # the same epochs, seeds, σ_x², N(0, I) prior for all (the MLP and attention files have none)
        calls = [(lab.run, ("vae", s), {"arch": a, "base": Q1_BASE, "prior": "standard"}) for a in ARCH_FILES
                 for s in lab.seeds]
        return {"arch": summarise(lab.many(calls), "arch", VAE_KEYS)}
    # Equal training time, each with the prior it is graded with (a fitted one where the file offers fit_prior).
    speed = {r["arch"]: r["s_per_epoch"]["mean"] for r in json.loads((RESULTS / "q2_e2.json").read_text())["arch"]}
    epochs = {a: max(1, round(Q2_BUDGET_S / speed[a])) for a in ARCH_FILES}
    calls = [(lab.run, ("vae", s), {"arch": a, "base": Q2_BASE, "epochs": epochs[a]}) for a in ARCH_FILES
             for s in lab.seeds]
    arch = summarise(lab.many(calls), "arch", VAE_KEYS)
    # The GenModel's label fed three ways, at its own epochs and settings (the shipped one's runs are Gen's).
    calls = [(lab.run, ("gen", s), {"arch": a, "base": {"var": 0.003}}) for a in ("conv", *LABEL_FEEDS)
             for s in lab.seeds]
    label = summarise(lab.many(calls), "arch", GEN_KEYS)
    return {"budget_s": Q2_BUDGET_S, "s_per_epoch": speed, "base": Q2_BASE, "arch": arch,
            "label_epochs": lab.epochs["gen"], "label": label}


def gen(lab: Lab) -> dict:
    # The refits below reuse the default σ_x²'s runs, so those are trained even when σ_x² is not swept.
    var = lab.sweep({"var": GEN_VAR}).get("var", ())
    trained = sorted({*var, 0.003}, key=GEN_VAR.index)
    calls = [(lab.run, ("gen", s), {"base": {"var": 0.003}, **({"var": v} if v != 0.003 else {})}) for v in trained
             for s in lab.seeds]
    runs = [{**r, "var": v} for r, v in zip(lab.many(calls), [v for v in trained for _ in lab.seeds])]
    result: dict[str, Any] = {"defaults": {"var": 0.003, **GEN_PRIOR_BASE}}
    if var:
        result["var"] = summarise([r for r in runs if r["var"] in var], "var", GEN_KEYS)
    bases = {s: RUNS / "-".join(["gen", "conv", f"e{lab.epochs['gen']}", f"s{s}"]) for s in lab.seeds}
    for knob, values in lab.sweep(GEN_PRIOR).items():
        calls = [(lab.refit, (bases[s], s), {**GEN_PRIOR_BASE, knob: x}) for x in values for s in lab.seeds]
        result[knob] = summarise(lab.many(calls), knob, GEN_KEYS)
    return result


@torch.no_grad()
def swap_shares(model: torch.nn.Module, clf: torch.nn.Module, n: int = 1000) -> dict:
    """Decode each code with each of the ten labels and classify: how often the requested label is drawn.

    ``standard``: z ~ N(0, I) fed straight to the decoder (no prior). ``prior``: z drawn from digit c's fitted
    prior, decoded as digit y; the matrix ``[c][y]`` is the share classified as y (the label won) and
    ``as_source[c][y]`` the share classified as c (the code won).
    """
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(10)

    def classify(z: torch.Tensor, y: int) -> torch.Tensor:
        return clf(model.decode_latent(z, torch.full((len(z),), y))).argmax(1)

    eps = torch.randn(n, model.latent_dim, generator=gen)
    standard = [float((classify(eps, y) == y).float().mean()) for y in labels.tolist()]
    as_label, as_source = [], []
    for c in labels.tolist():
        z = model.prior.to_latent(torch.randn(n // 10, model.latent_dim, generator=gen),
                                  torch.full((n // 10,), c))
        preds = [classify(z, y) for y in labels.tolist()]
        as_label.append([float((p == y).float().mean()) for y, p in enumerate(preds)])
        as_source.append([float((p == c).float().mean()) for p in preds])
    off = [(c, y) for c in range(10) for y in range(10) if c != y]
    return {"codes_per_label": n, "standard": standard, "standard_mean": statistics.fmean(standard),
            "prior": as_label, "prior_as_source": as_source,
            "prior_own_digit": statistics.fmean(as_label[c][c] for c in range(10)),
            "prior_swapped_as_label": statistics.fmean(as_label[c][y] for c, y in off),
            "prior_swapped_as_source": statistics.fmean(as_source[c][y] for c, y in off)}


def label_swap(lab: Lab, n: int = 1000) -> dict:
    """``swap_shares`` of the shipped GenModel."""
    from vaekit.building import load_model

    model, _ = load_model(ROOT / "Genwithlabel")
    return swap_shares(model, lab.judge.classifier, n)


EXPERIMENTS = {"q1": q1, "q2": q2, "gen": gen, "label-swap": label_swap}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("experiment", choices=[*EXPERIMENTS, "all"], help="which experiment to run")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs per run, no sharpening (default: each script's own, as the shipped models)")
    p.add_argument("--knob", action="append", default=[], metavar="NAME[=V1,V2]",
                   help="sweep only this knob (repeatable), optionally only these values; the result file keeps "
                        "the other knobs' rows from earlier runs")
    p.add_argument("--seeds", type=int, default=3, help="seeds per setting (0, 1, ...)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each gets cores / jobs threads)")
    args = p.parse_args(argv)
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1) or args.jobs < 1:
        p.error("--epochs, --seeds and --jobs must be at least 1.")
    known = {*Q1, "var", *GEN_PRIOR}
    if bad := [k for k in args.knob if k.split("=")[0] not in known]:
        p.error(f"unknown --knob {bad[0]!r}; known: {', '.join(sorted(known))}")
    lab = Lab(args.epochs, args.seeds, args.jobs, tuple(args.knob))
    for name in EXPERIMENTS if args.experiment == "all" else [args.experiment]:
        lab.core_seconds, t = 0.0, time.perf_counter()
        result = EXPERIMENTS[name](lab)
        # What the experiment costs from scratch: each run's training and grading seconds × its threads.
        core_seconds = lab.core_seconds or (time.perf_counter() - t) * lab.cores
        # At each script's own epochs: <name>.json; a shorter (or longer) sweep keeps its own file, <name>_e<N>.json.
        suffix = f"_e{args.epochs}" if args.epochs and name != "label-swap" else ""
        path = RESULTS / f"{name.replace('-', '_')}{suffix}.json"
        command = " ".join(["python report/experiments.py", name, *([f"--epochs {args.epochs}"] if suffix else []),
                            *(f"--knob {k}" for k in args.knob)])
        if name != "label-swap":  # the others train
            result.update(epochs=lab.epochs["vae" if name in ("q1", "q2") else "gen"], seeds=args.seeds,
                          jobs=args.jobs)
        if args.knob and path.is_file():  # a partial rerun: keep the other knobs' rows
            old = json.loads(path.read_text())
            swept = {k: result[k] for k in ("sweeps", "var", *GEN_PRIOR) if k in result}
            if "sweeps" in swept:
                swept["sweeps"] = {**old.get("sweeps", {}), **swept["sweeps"]}
            commands = list(dict.fromkeys([*old.get("commands", [old.get("command")]), command]))
            result = {**old, **result, **swept, "commands": commands}
        result.update(command=command, cpu_minutes=round(core_seconds / 60, 1),
                      cores=lab.cores, submission_sha256=file_sha256(ROOT / "submission.py"))
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT)} ({result['cpu_minutes']} CPU-minutes)")


if __name__ == "__main__":
    main()

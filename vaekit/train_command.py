"""What ``train_vae.py`` and ``train_cond.py`` share: their flags and the run, submission.py to course folder.

What ``train_vae.py`` and ``train_cond.py`` share: their flags (each script passes the kit's tuned values; the
defaults a run uses belong to the model, ``vaekit.defaults``) and the run itself, from ``submission.py``'s classes to
a finished course folder.

Any submission written to the course's template trains here: the model is built as the course builds it
(``VAE(latent_dim=d)``), each step calls ``model(images, labels)`` and ``vae_loss(..., var=var)`` as the
course's trainer does, and the kit's extras (fitted prior, sharpening, named loss terms) run only where the
submission offers the kit's optional API (``vaekit.contract.KitModel``, checked once), each skipped with one line
naming what it lacks otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint, contract, defaults, plots
from .adversarial import sharpen_decoder
from .building import course_model
from .cli import HelpFormatter, add_run_flags, setup_run
from .course import TASKS, SubmissionError, load_submission, trained_from
from .generation import fast_layout, grid_labels, reconstruct, sample
from .paths import ROOT
from .priors import fit_class_prior
from .samplecheck import PER_DIGIT, check_samples
from .settings import FitSettings
from .training_loop import FitHooks, fit

# Training settings recorded under "training" in hyperparameters.txt (the rest describe the model or the machine).
TRAINING_KEYS = ("epochs", "lr", "batch_size", "var", "prior", "prior_shrink", "sharpen_epochs",
                 "sharpen_weight", "sharpen_lr", "seed", "time_budget", "dry_run")


SCRIPT_DEFAULTS = (*defaults.SHARED, *defaults.KIT_ONLY)  # the kit's tuned values, at each script's top


def train_parser(task: str, doc: str, kit_defaults: dict[str, Any]) -> argparse.ArgumentParser:
    """The train scripts' flags. ``kit_defaults`` (the script's own, listed at its top) are what the kit's models are
    tuned for; the shared flags default to None (not passed) and are resolved per model (``vaekit.defaults``)."""
    missing = [k for k in SCRIPT_DEFAULTS if k not in kit_defaults]
    if missing:
        raise ValueError(f"the train script gives no default for {', '.join(missing)}.")
    folder = TASKS[task].folder
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    own = lambda key: defaults.flag_help(key, kit_defaults)  # noqa: E731
    p.add_argument("--epochs", type=int, help=f"passes over the 50 000 training images {own('epochs')}")
    p.add_argument("--latent-dim", type=int, help=f"size of z (smaller earns the course's latent bonus) "
                   f"{own('latent_dim')}")
    p.add_argument("--lr", type=float, help=f"peak Adam learning rate (cosine-decayed to 0) {own('lr')}")
    p.add_argument("--batch-size", type=int, help=f"images per step {own('batch_size')}")
    p.add_argument("--var", type=float, help="passed to vae_loss(..., var=VAR), as the course's trainer "
                   f"does: σ_x² of the Gaussian likelihood, loss = KL + ||x-x̂||²/(2σ_x²) {own('var')}")
    p.add_argument("--prior", choices=["fitted", "standard"], default="fitted",
                   help="'fitted' fits the model's prior (one mixture, or one per digit for GenModel) to the codes "
                   "after training, where the model offers fit_prior; 'standard' keeps N(0, I)")
    kit = lambda key: f"(default: {kit_defaults[key]:g}; read only for a model with the kit's API)"  # noqa: E731
    p.add_argument("--prior-shrink", type=float,
                   help=f"scale of the fitted prior's std (< 1 trades diversity for fidelity) {kit('prior_shrink')}")
    p.add_argument("--sharpen-epochs", type=int, help="epochs of adversarial decoder fine-tuning after the VAE "
                   f"(encoder and prior frozen; 0 = none) {kit('sharpen_epochs')}")
    p.add_argument("--sharpen-weight", type=float, help="adversarial gradient at the decoded images, as a multiple "
                   f"of the reconstruction's {kit('sharpen_weight')}")
    p.add_argument("--sharpen-lr", type=float, help=f"peak Adam learning rate of the fine-tuning {kit('sharpen_lr')}")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="stop the VAE after the epoch that passes this many seconds (0 = no limit)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/train_state.pth and OUT/sharpen_state.pth (Ctrl-C leaves them)")
    p.add_argument("--tensorboard", default="", metavar="DIR", help="log scalars and image grids to this folder")
    p.add_argument("--submission", default="", metavar="FILE",
                   help="train the classes of another submission file (default: ./submission.py); the model's "
                   "shape comes from that file's defaults, as the course builds it from latent_dim alone")
    add_run_flags(p, out_default="", out_help=f"output folder (default: {folder}/, or runs/dry_run/{folder}/ "
                  "with --dry-run)")
    return p


def parse_train_args(task: str, doc: str, kit_defaults: dict[str, Any], argv: list[str] | None
                     ) -> argparse.Namespace:
    """Parse and check the train script's flags (``args.kit_defaults`` keeps the script's tuned values)."""
    p = train_parser(task, doc, kit_defaults)
    args = p.parse_args(argv)
    args.kit_defaults = dict(kit_defaults)
    for name in ("epochs", "latent_dim", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1.")
    if (args.latent_dim or 0) > 784:
        p.error("--latent-dim must be at most 784 (the course bonus 1.2 - d/784 assumes it).")
    given = lambda name: getattr(args, name) is not None  # noqa: E731
    if any(given(k) and getattr(args, k) <= 0 for k in ("lr", "var", "prior_shrink", "sharpen_lr")):
        p.error("--lr, --var, --prior-shrink and --sharpen-lr must be positive.")
    if any(given(k) and getattr(args, k) < 0 for k in ("sharpen_epochs", "sharpen_weight")):
        p.error("--sharpen-epochs and --sharpen-weight must be at least 0.")
    return args


def make_loss(sub, var: float, terms: bool):
    """``loss_fn(model, x, y)`` for the training loop: the course trainer's two calls, ``model(images, labels)``
    and ``vae_loss(recon_x, images, mu, log_var, var=var)``, each failure one sentence (``ContractError``).
    ``terms``: also log the named terms of the submission's ``vae_loss_terms`` (computed without a graph)."""
    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        recon, mu, logvar = contract.forward(model, x, y)
        loss = contract.loss(sub, recon, x, mu, logvar, var)
        if not terms:
            return {"loss": loss}
        with torch.no_grad():
            named = sub.vae_loss_terms(recon, x, mu, logvar, var=var)
        return {**{k: v.detach() for k, v in named.items() if k != "loss"}, "loss": loss}
    return loss_fn


def train(task: str, args: argparse.Namespace) -> Path:
    """Train one task's model and write its course folder. Returns the folder. A submission that breaks the
    course's contract stops with one sentence (``SystemExit``), before anything is trained."""
    try:
        return _train(task, args)
    except SubmissionError as e:
        raise SystemExit(f"submission.py: {e}") from None


def _train(task: str, args: argparse.Namespace) -> Path:
    spec = TASKS[task]
    out = Path(args.out) if args.out else (ROOT / "runs" / "dry_run" / spec.folder if args.dry_run
                                           else ROOT / spec.folder)
    run = setup_run(args)
    source = Path(args.submission) if args.submission else ROOT / "submission.py"
    sub = load_submission(source)
    probe = run.train.subset(8)
    # The course's calls, once. Whether the model offers the kit's API decides its defaults (vaekit.defaults), so
    # the first check runs at the sizes the model's own signature or the course's train.py give.
    given = {k: getattr(args, k) for k in SCRIPT_DEFAULTS}
    first = defaults.resolve(task, given, sub, args.kit_defaults, kit_model=False)
    extras = contract.check(sub, task, first["latent_dim"].value, probe.x, probe.y, var=first["var"].value)
    settings = defaults.resolve(task, given, sub, args.kit_defaults, kit_model=extras.kit_model)
    if any(settings[k].value != first[k].value for k in ("latent_dim", "var")):
        extras = contract.check(sub, task, settings["latent_dim"].value, probe.x, probe.y, var=settings["var"].value)
    for key, setting in settings.items():
        setattr(args, key, setting.value)
    fallback = defaults.FROM_KIT if extras.kit_model else defaults.FROM_COURSE
    print(f"settings (a flag, else submission.py's own default, else {fallback}): {defaults.describe(settings)}")
    # Built as the course builds it (latent_dim alone); every other size is a default in submission.py.
    torch.manual_seed(args.seed)
    model = course_model(sub, task, args.latent_dim)
    model_kwargs = checkpoint.constructor_kwargs(type(model), {"latent_dim": args.latent_dim})
    model = fast_layout(model.to(run.device))  # channels-last convs: faster
    print(f"{spec.model_class}: latent_dim {args.latent_dim}, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, {len(run.train):,} train / {len(run.valid):,} valid images on {run.device} -> {out}/")
    if not extras.terms:
        print(f"loss terms: only the total is logged ({spec.model_class}'s submission has no vae_loss_terms).")

    fixed = run.valid.subset(16)

    def log_images(m: nn.Module) -> dict[str, torch.Tensor]:
        recon, _ = reconstruct(m, fixed.x, fixed.y)
        samples = sample(m, grid_labels(), args.latent_dim, seed=args.seed)
        m.train()
        return {"reconstructions": plots.image_grid(torch.cat([fixed.x, recon]), 16),
                "samples": plots.image_grid(samples, 10)}

    result = fit(model, make_loss(sub, args.var, extras.terms), run.train, run.valid,
                 FitSettings(args.epochs, args.lr, args.batch_size, args.seed, run.device,
                             time_budget=args.time_budget or None, max_steps=run.max_steps, desc=task, fused=True),
                 FitHooks(state_path=out / "train_state.pth", resume=args.resume, tensorboard=args.tensorboard or None,
                          log_images=log_images if args.tensorboard else None))
    if result.best_state is None:
        raise SystemExit("stopped before the first epoch finished: nothing to save.")
    done: dict[str, str] = {}  # what happened to each extra, for hyperparameters.txt
    if args.prior == "standard":
        done["prior"] = "standard: N(0, I), as asked"
    elif not extras.kit_model:
        done["prior"] = (f"skipped: needs {extras.lacking(spec.model_class)} (vaekit.contract.KitModel), which this "
                         "submission lacks; decode samples N(0, I)")
        print(f"prior: {done['prior']}.")
    else:
        fit_class_prior(model, run.train.x, run.train.y, args.prior_shrink)
        done["prior"] = "fitted"
    history: list[dict] | dict[str, list[dict]] = result.history
    final = result.history[result.best_epoch - 1]
    seconds = result.seconds
    sharpened: dict = {}
    if not args.sharpen_epochs:
        done["sharpen"] = "off (--sharpen-epochs 0)"
    elif not (extras.kit_model and extras.terms):
        done["sharpen"] = (f"skipped: needs {extras.lacking(spec.model_class, terms=True)}, which this submission "
                           "lacks")
        print(f"--sharpen-epochs: {done['sharpen']}.")
    elif args.prior == "standard":
        done["sharpen"] = "skipped: sharpening decodes samples through a fitted prior (--prior standard)"
        print(f"--sharpen-epochs: {done['sharpen']}.")
    elif result.stopped_by != "interrupted":
        done["sharpen"] = "run"
        # -- adversarial fine-tuning of the decoder: same codes, sharper digits ---------------------
        sharp = sharpen_decoder(model, sub, run.train, run.valid,
                                FitSettings(args.sharpen_epochs, args.sharpen_lr, args.batch_size, args.seed,
                                            run.device, max_steps=run.max_steps),
                                conditional=spec.conditional, weight=args.sharpen_weight, var=args.var,
                                hooks=FitHooks(state_path=out / "sharpen_state.pth", resume=args.resume))
        history = {"vae": result.history, "sharpen": sharp.history}
        seconds += sharp.seconds
        sharpened = {"epochs_run": sharp.epochs_run, "seconds": round(sharp.seconds, 1), "stopped_by": sharp.stopped_by,
                     **({"valid_recon": round(sharp.history[-1]["valid_recon"], 4)} if sharp.history else {})}
    # -- the course's own samples, read by the grading classifier: are they digits? --------------------------
    check = check_samples(model, spec.conditional, args.latent_dim, args.var, done["prior"],
                          seed=args.seed, per_digit=3 if args.dry_run else PER_DIGIT)
    print(check.line)
    write_course_folder(out, model, task=task, model_kwargs=model_kwargs, history=history,
                        shown=(fixed.x, fixed.y), seed=args.seed, submission=source,
                        title=f"{spec.model_class} (latent {args.latent_dim})",
                        checkpoint_meta={"epoch": result.best_epoch, "valid_loss": result.best_valid},
                        hyperparameters={
                            "training": {k: getattr(args, k) for k in TRAINING_KEYS},
                            "seed": args.seed,
                            "device": str(run.device),
                            "threads": torch.get_num_threads(),
                            "epochs_run": result.epochs_run,
                            "best_epoch": result.best_epoch,
                            "stopped_by": result.stopped_by,
                            "valid": {k.removeprefix("valid_"): round(v, 4) for k, v in final.items()
                                      if k.startswith("valid_")},
                            "train_images": len(run.train),
                            "sharpen": sharpened,
                            "extras": done,
                            "settings_from": {k: v.source for k, v in settings.items()},
                            "sample_check": check.record(),
                            "wall_time_s": round(seconds, 1),
                        })
    print(f"best epoch {result.best_epoch}/{result.epochs_run}, valid loss {result.best_valid:.4f}, "
          f"{seconds:.0f} s ({result.stopped_by}). Wrote {out}/epoch.pth, hyperparameters.txt, "
          "loss_curves.png, samples.png, reconstructions.png")
    return out


def write_course_folder(folder: str | Path, model: nn.Module, *, task: str, model_kwargs: dict[str, Any],
                        hyperparameters: dict[str, Any], history: list[dict] | dict[str, list[dict]],
                        shown: tuple[torch.Tensor, torch.Tensor], seed: int, title: str, submission: str | Path,
                        checkpoint_meta: dict[str, Any] | None = None) -> Path:
    """Write a trained model as a course folder: ``epoch.pth``, ``hyperparameters.txt``, ``history.json``
    and the figures ``loss_curves.png``, ``samples.png`` (row c = digit c) and ``reconstructions.png``
    (originals over reconstructions of ``shown`` = (images, labels)). ``history`` is the per-epoch log, or
    several named logs (the first is plotted). ``hyperparameters.txt`` records the sha256 of ``submission`` (the
    file the model was trained from) and is written last, after its old copy is removed: a write that fails
    leaves no folder that looks current.
    """
    folder = Path(folder)
    spec = TASKS[task]
    model.eval()
    (folder / "hyperparameters.txt").unlink(missing_ok=True)
    checkpoint.save_checkpoint(folder / "epoch.pth", model.state_dict(), task=task, model_class=spec.model_class,
                               model_kwargs=model_kwargs, **(checkpoint_meta or {}))
    (folder / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    curves = history if isinstance(history, list) else next(iter(history.values()))
    if curves:
        plots.loss_curves(curves, folder / "loss_curves.png", title=title)
    plots.save_grid(sample(model, grid_labels(), model_kwargs["latent_dim"], seed=seed), folder / "samples.png",
                    nrow=10)
    x, y = shown
    plots.reconstruction_grid(x, reconstruct(model, x, y)[0], folder / "reconstructions.png")
    checkpoint.write_hyperparameters(folder / "hyperparameters.txt", {
        "task": task, "model_class": spec.model_class, "model_kwargs": model_kwargs,
        "latent_dim": model_kwargs["latent_dim"], **hyperparameters, "versions": checkpoint.library_versions(),
        "trained_from": trained_from(submission, folder / "epoch.pth")})
    return folder

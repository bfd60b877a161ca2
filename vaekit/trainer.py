"""What ``train_vae.py`` and ``train_cond.py`` share: their flags (each script passes its own defaults)
and the run itself, from ``submission.py``'s classes to a finished course folder.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint, plots
from .adversarial import SHARPEN_NEEDS, sharpen_decoder
from .cli import add_run_flags, setup_run
from .course import TASKS, load_submission, write_course_folder
from .generation import fast_layout, grid_labels, reconstruct, sample
from .paths import ROOT
from .training import fit

# Training settings recorded under "training" in hyperparameters.txt (the rest describe the model or the machine).
TRAINING_KEYS = ("epochs", "lr", "batch_size", "var", "likelihood", "prior", "prior_shrink", "sharpen_epochs",
                 "sharpen_weight", "sharpen_lr", "seed", "time_budget", "dry_run")


def train_parser(task: str, doc: str, defaults: dict[str, Any]) -> argparse.ArgumentParser:
    """The train scripts' flags; ``defaults`` (the script's own, listed at its top) override the ones here."""
    folder = TASKS[task].folder
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=10, help="passes over the 50 000 training images")
    p.add_argument("--latent-dim", type=int, default=16, help="size of z (smaller earns the course's latent bonus)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate (cosine-decayed to 0)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--var", type=float, default=0.01, help="σ² of the Gaussian likelihood: loss = KL + ||x-x̂||²/(2σ²)")
    p.add_argument("--likelihood", choices=["gaussian", "bernoulli"], default="gaussian", help="reconstruction term")
    p.add_argument("--channels", type=int, default=32, help="conv channels of the first layer (the second has 2x)")
    p.add_argument("--hidden", type=int, default=256, help="width of the fully-connected layer")
    p.add_argument("--prior", choices=["fitted", "standard"], default="fitted",
                   help="'fitted' fits a Gaussian mixture (one per digit for GenModel) to the codes after training; "
                   "'standard' keeps N(0, I)")
    p.add_argument("--components", type=int, default=0, help="Gaussians in each fitted prior mixture (0: the model's "
                   "default, 400 for VAE and 30 per digit for GenModel; 2 with --dry-run)")
    p.add_argument("--prior-shrink", type=float, default=1.0,
                   help="scale of the fitted prior's std (< 1 trades diversity for fidelity)")
    p.add_argument("--sharpen-epochs", type=int, default=0,
                   help="epochs of adversarial decoder fine-tuning after the VAE (encoder and prior frozen; 0 = none)")
    p.add_argument("--sharpen-weight", type=float, default=1.0,
                   help="adversarial gradient at the decoded images (at their logits under the Bernoulli "
                   "likelihood), as a multiple of the reconstruction's")
    p.add_argument("--sharpen-lr", type=float, default=5e-4, help="peak Adam learning rate of the fine-tuning")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="stop the VAE after the epoch that passes this many seconds (0 = no limit)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/train_state.pth and OUT/sharpen_state.pth (Ctrl-C leaves them)")
    p.add_argument("--tensorboard", default="", metavar="DIR", help="log scalars and image grids to this folder")
    p.add_argument("--submission", default="", metavar="FILE",
                   help="train the classes of another submission file (default: ./submission.py)")
    add_run_flags(p, out_default="", out_help=f"output folder (default: {folder}/, or runs/dry_run/{folder}/ "
                  "with --dry-run)")
    p.set_defaults(**defaults)
    return p


def parse_train_args(task: str, doc: str, defaults: dict[str, Any], argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the train script's flags."""
    p = train_parser(task, doc, defaults)
    args = p.parse_args(argv)
    for name in ("epochs", "latent_dim", "batch_size", "channels", "hidden"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1.")
    if args.latent_dim > 784:
        p.error("--latent-dim must be at most 784 (the course bonus 1.2 - d/784 assumes it).")
    if args.lr <= 0 or args.var <= 0 or args.prior_shrink <= 0 or args.components < 0:
        p.error("--lr, --var and --prior-shrink must be positive, --components at least 0.")
    if args.sharpen_epochs < 0 or args.sharpen_weight < 0 or args.sharpen_lr <= 0:
        p.error("--sharpen-epochs and --sharpen-weight must be at least 0, --sharpen-lr positive.")
    return args


def make_loss(sub, args: argparse.Namespace):
    """``loss_fn(model, x, y)`` for the training loop, built on the submission's ``vae_loss``."""
    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        recon, mu, logvar = model(x, y)
        return sub.vae_loss(recon, x, mu, logvar, var=args.var, likelihood=args.likelihood)
    return loss_fn


@torch.no_grad()
def fit_class_prior(model: nn.Module, x: torch.Tensor, y: torch.Tensor, shrink: float, **options: float) -> None:
    """Fit the model's prior (one mixture, or one per digit) to the encoder's codes of the training set;
    ``options`` go to ``fit_prior`` as they are (the kit's: ``volume_quantile``)."""
    model.eval()
    device = next(model.parameters()).device
    mus, logvars = [], []
    for i in range(0, len(x), 2000):
        mu, logvar = model.encode_latent(x[i:i + 2000].to(device), y[i:i + 2000].to(device))
        mus.append(mu)
        logvars.append(logvar)
    model.fit_prior(torch.cat(mus), torch.cat(logvars), y.to(device), shrink=shrink, **options)


def train(task: str, args: argparse.Namespace) -> Path:
    """Train one task's model and write its course folder. Returns the folder."""
    spec = TASKS[task]
    out = Path(args.out) if args.out else (ROOT / "runs" / "dry_run" / spec.folder if args.dry_run
                                           else ROOT / spec.folder)
    run = setup_run(args)
    sub = load_submission(args.submission or None)
    cls = getattr(sub, spec.model_class)
    wanted = {"latent_dim": args.latent_dim, "channels": args.channels, "hidden": args.hidden}
    if args.components:
        wanted["components"] = args.components
    elif args.dry_run:
        wanted["components"] = 2  # a dry run's 512 images cannot fill a default mixture of 30 per digit
    params = inspect.signature(cls.__init__).parameters
    model_kwargs = checkpoint.constructor_kwargs(cls, {k: v for k, v in wanted.items() if k in params})
    torch.manual_seed(args.seed)
    model = fast_layout(cls(**model_kwargs).to(run.device))  # channels-last convs: about 25 % faster on CPU
    print(f"{spec.model_class}: latent_dim {args.latent_dim}, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, {len(run.train):,} train / {len(run.valid):,} valid images on {run.device} -> {out}/")

    fixed = run.valid.subset(16)

    def log_images(m: nn.Module) -> dict[str, torch.Tensor]:
        recon, _ = reconstruct(m, fixed.x, fixed.y, spec.conditional)
        samples = sample(m, grid_labels(), args.latent_dim, seed=args.seed)
        m.train()
        return {"reconstructions": plots.image_grid(torch.cat([fixed.x, recon]), 16),
                "samples": plots.image_grid(samples, 10)}

    result = fit(model, make_loss(sub, args), run.train, run.valid, epochs=args.epochs, lr=args.lr,
                 batch_size=args.batch_size, seed=args.seed, device=run.device, state_path=out / "train_state.pth",
                 resume=args.resume, time_budget=args.time_budget or None, max_steps=run.max_steps,
                 tensorboard=args.tensorboard or None, log_images=log_images if args.tensorboard else None,
                 desc=task, fused=True)
    if result.best_state is None:
        raise SystemExit("stopped before the first epoch finished: nothing to save.")
    if args.prior == "fitted" and hasattr(model, "fit_prior"):
        fit_class_prior(model, run.train.x, run.train.y, args.prior_shrink)
    history: list[dict] | dict[str, list[dict]] = result.history
    final = result.history[result.best_epoch - 1]
    seconds = result.seconds
    sharpened: dict = {}
    missing = [a for a in SHARPEN_NEEDS if not hasattr(model, a)]
    if args.sharpen_epochs and missing:
        print(f"--sharpen-epochs skipped: {spec.model_class} has no {', '.join(missing)} (the kit's models do).")
    elif args.sharpen_epochs and result.stopped_by != "interrupted":
        # -- adversarial fine-tuning of the decoder: same codes, sharper digits ---------------------
        sharp = sharpen_decoder(model, sub, run.train, run.valid, conditional=spec.conditional,
                                epochs=args.sharpen_epochs, weight=args.sharpen_weight, lr=args.sharpen_lr,
                                var=args.var, likelihood=args.likelihood, batch_size=args.batch_size,
                                seed=args.seed, device=run.device, max_steps=run.max_steps,
                                state_path=out / "sharpen_state.pth", resume=args.resume)
        history = {"vae": result.history, "sharpen": sharp.history}
        seconds += sharp.seconds
        sharpened = {"epochs_run": sharp.epochs_run, "seconds": round(sharp.seconds, 1), "stopped_by": sharp.stopped_by,
                     **({"valid_recon": round(sharp.history[-1]["valid_recon"], 4)} if sharp.history else {})}
    write_course_folder(out, model, task=task, model_kwargs=model_kwargs, history=history,
                        shown=(fixed.x, fixed.y), seed=args.seed,
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
                            "wall_time_s": round(seconds, 1),
                        })
    print(f"best epoch {result.best_epoch}/{result.epochs_run}, valid loss {result.best_valid:.4f}, "
          f"{seconds:.0f} s ({result.stopped_by}). Wrote {out}/epoch.pth, hyperparameters.txt, "
          "loss_curves.png, samples.png, reconstructions.png")
    return out

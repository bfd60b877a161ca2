"""What ``train_vae.py`` and ``train_cond.py`` share: config, the run itself, and the files it writes."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint, plots
from .config import add_dataclass_args, from_namespace
from .data import load_mnist
from .generation import TASKS, grid_labels, load_submission, reconstruct, sample
from .training import fit, pick_device, set_threads

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class TrainConfig:
    """Every flag of the train scripts. Task-specific defaults are set by each script."""

    epochs: int = field(default=10, metadata={"help": "passes over the 50 000 training images"})
    latent_dim: int = field(default=16, metadata={"help": "size of z (smaller earns the course's latent bonus)"})
    lr: float = field(default=2e-3, metadata={"help": "peak Adam learning rate (cosine-decayed to 0)"})
    batch_size: int = field(default=128, metadata={"help": "images per step"})
    var: float = field(default=0.01, metadata={"help": "σ² of the Gaussian likelihood: loss = KL + ||x-x̂||²/(2σ²)"})
    likelihood: str = field(default="gaussian", metadata={"help": "reconstruction term",
                                                          "choices": ["gaussian", "bernoulli"]})
    channels: int = field(default=32, metadata={"help": "conv channels of the first layer (second has 2x)"})
    hidden: int = field(default=256, metadata={"help": "width of the fully-connected layer"})
    prior: str = field(default="fitted", metadata={"help": "'fitted' fits a Gaussian mixture (one per digit for "
                                                   "GenModel) to the codes after training; 'standard' keeps "
                                                   "N(0, I)",
                                                   "choices": ["fitted", "standard"]})
    components: int = field(default=0, metadata={"help": "Gaussians in each fitted prior mixture (0: the model's "
                                                 "default, 100 for VAE and 10 per digit for GenModel)"})
    prior_shrink: float = field(default=1.0, metadata={"help": "scale of the fitted prior's std "
                                                       "(<1 trades diversity for fidelity)"})
    seed: int = field(default=0, metadata={"help": "seed for weights, shuffling and noise (same seed+device "
                                           "-> same weights)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    workers: int = field(default=0, metadata={"help": "CPU threads for tensor ops (0 = all cores); data are "
                                              "in-memory tensors, so no loader processes are needed"})
    out: str = field(default="", metadata={"help": "output folder (default: the task's course folder)",
                                           "metavar": "DIR"})
    time_budget: float = field(default=0.0, metadata={"help": "stop after the epoch that passes this many "
                                                      "seconds (0 = no limit)"})
    resume: bool = field(default=False, metadata={"help": "continue from OUT/train_state.pth"})
    tensorboard: str = field(default="", metadata={"help": "log scalars and image grids to this folder",
                                                   "metavar": "DIR"})
    submission: str = field(default="", metadata={"help": "train the classes of another submission file "
                                                  "(default: ./submission.py)", "metavar": "FILE"})
    dry_run: bool = field(default=False, metadata={"help": "5 steps on 512 images, writes to runs/dry_run/ "
                                                   "(a smoke test)"})


def parse_config(task: str, description: str, argv: list[str] | None, **defaults: Any) -> TrainConfig:
    """Parse the flags of ``TrainConfig`` with the task's own defaults."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_args(parser, TrainConfig)
    parser.set_defaults(**defaults)
    cfg = from_namespace(TrainConfig, parser.parse_args(argv))
    for name in ("epochs", "latent_dim", "batch_size", "channels", "hidden"):
        if getattr(cfg, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1.")
    if cfg.latent_dim > 784:
        parser.error("--latent-dim must be at most 784 (the course bonus 1.2 - d/784 assumes it).")
    if cfg.lr <= 0 or cfg.var <= 0 or cfg.prior_shrink <= 0 or cfg.components < 0:
        parser.error("--lr, --var and --prior-shrink must be positive, --components at least 0.")
    return cfg


def make_loss(sub, cfg: TrainConfig):
    """``loss_fn(model, x, y)`` for the training loop, built on the submission's ``vae_loss``."""
    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        recon, mu, logvar = model(x, y)
        return sub.vae_loss(recon, x, mu, logvar, var=cfg.var, likelihood=cfg.likelihood)
    return loss_fn


@torch.no_grad()
def fit_class_prior(model: nn.Module, x: torch.Tensor, y: torch.Tensor, shrink: float) -> None:
    """Fit the model's prior (one mixture, or one per digit) to the encoder's codes of the training set."""
    model.eval()
    device = next(model.parameters()).device
    mus, logvars = [], []
    for i in range(0, len(x), 2000):
        mu, logvar = model.encode_latent(x[i:i + 2000].to(device), y[i:i + 2000].to(device))
        mus.append(mu)
        logvars.append(logvar)
    model.fit_prior(torch.cat(mus), torch.cat(logvars), y.to(device), shrink=shrink)


def run(task: str, cfg: TrainConfig) -> Path:
    """Train one task's model and write ``epoch.pth``, ``hyperparameters.txt`` and figures. Returns the folder."""
    folder, class_name = TASKS[task]
    out = Path(cfg.out) if cfg.out else (ROOT / "runs" / "dry_run" / folder if cfg.dry_run else ROOT / folder)
    set_threads(cfg.workers)
    device = pick_device(cfg.device)
    sub = load_submission(cfg.submission or None)
    cls = getattr(sub, class_name)
    wanted = {"latent_dim": cfg.latent_dim, "channels": cfg.channels, "hidden": cfg.hidden}
    if cfg.components:
        wanted["components"] = cfg.components
    params = inspect.signature(cls.__init__).parameters
    model_kwargs = checkpoint.constructor_kwargs(cls, {k: v for k, v in wanted.items() if k in params})
    torch.manual_seed(cfg.seed)
    model = cls(**model_kwargs).to(device)

    train, valid = load_mnist("train"), load_mnist("valid")
    max_steps = None
    if cfg.dry_run:
        train, valid, max_steps = train.subset(512), valid.subset(256), 5
    print(f"{class_name}: latent_dim {cfg.latent_dim}, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, {len(train):,} train / {len(valid):,} valid images on {device} -> {out}/")

    conditional = task == "gen"
    fixed = valid.subset(16)

    def log_images(m: nn.Module) -> dict[str, torch.Tensor]:
        recon, _ = reconstruct(m, fixed.x, fixed.y, conditional)
        samples = sample(m, grid_labels(), cfg.latent_dim, seed=cfg.seed)
        m.train()
        return {"reconstructions": plots.image_grid(torch.cat([fixed.x, recon]), 16),
                "samples": plots.image_grid(samples, 10)}

    result = fit(model, make_loss(sub, cfg), train, valid, epochs=cfg.epochs, lr=cfg.lr,
                 batch_size=cfg.batch_size, seed=cfg.seed, device=device, state_path=out / "train_state.pth",
                 resume=cfg.resume, time_budget=cfg.time_budget or None, max_steps=max_steps,
                 tensorboard=cfg.tensorboard or None, log_images=log_images if cfg.tensorboard else None,
                 desc=task)
    if result.best_state is None:
        raise SystemExit("stopped before the first epoch finished: nothing to save.")
    if cfg.prior == "fitted" and hasattr(model, "fit_prior"):
        fit_class_prior(model, train.x, train.y, cfg.prior_shrink)

    # -- the course files -------------------------------------------------------------------------
    final = result.history[result.best_epoch - 1]
    checkpoint.save_checkpoint(out / "epoch.pth", model.state_dict(), task=task, model_class=class_name,
                               model_kwargs=model_kwargs, epoch=result.best_epoch,
                               valid_loss=result.best_valid)
    hp = {
        "task": task,
        "model_class": class_name,
        "model_kwargs": model_kwargs,
        "latent_dim": cfg.latent_dim,
        "training": {k: v for k, v in dataclasses.asdict(cfg).items()
                     if k not in ("out", "resume", "tensorboard", "device", "workers", "latent_dim",
                                  "channels", "hidden", "components", "submission")},
        "seed": cfg.seed,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_by": result.stopped_by,
        "valid": {k.removeprefix("valid_"): round(v, 4) for k, v in final.items() if k.startswith("valid_")},
        "train_images": len(train),
        "wall_time_s": round(result.seconds, 1),
        "versions": checkpoint.library_versions(),
    }
    checkpoint.write_hyperparameters(out / "hyperparameters.txt", hp)
    (out / "history.json").write_text(json.dumps(result.history, indent=1) + "\n")

    # -- figures ------------------------------------------------------------------------------------
    plots.loss_curves(result.history, out / "loss_curves.png", title=f"{class_name} (latent {cfg.latent_dim})")
    plots.save_grid(sample(model, grid_labels(), cfg.latent_dim, seed=cfg.seed), out / "samples.png", nrow=10)
    recon, _ = reconstruct(model, fixed.x, fixed.y, conditional)
    plots.reconstruction_grid(fixed.x, recon, out / "reconstructions.png")
    print(f"best epoch {result.best_epoch}/{result.epochs_run}, valid loss {result.best_valid:.4f}, "
          f"{result.seconds:.0f} s ({result.stopped_by}). Wrote {out}/epoch.pth, hyperparameters.txt, "
          "loss_curves.png, samples.png, reconstructions.png")
    return out

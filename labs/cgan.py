"""Conditional GAN lab: a DCGAN generator against a discriminator with a label projection and an auxiliary digit
classifier, trained with one of four losses, then an encoder fitted to invert the generator, written as a gradable
course submission.

    python labs/cgan.py                      # non-saturating loss, about 18 minutes on 2 cores -> labs/results/cgan/
    python labs/cgan.py --loss wgan-clip     # WGAN with weight clipping (RMSprop, 5 critic steps per G step)
    python labs/cgan.py --loss wgan-gp       # WGAN with gradient penalty (Adam β=(0, 0.9), 5 critic steps)
    python labs/cgan.py --dry-run            # a few steps on a small subset (a smoke test)

The output folder is a submission like a student's: ``submission.py`` (a copy of ``labs/cgan_submission.py``)
and ``Genwithlabel/{epoch.pth, hyperparameters.txt, samples.png, reconstructions.png, loss_curves.png,
progress.png}``; it is then graded by the same code as ``grade.py`` (``Genwithlabel/grade_result.json``; skip with
``--no-grade``). ``progress.png`` shows the same noise decoded after every epoch, each row labelled with the share
of its samples the grading classifier reads as the requested digit: training progress, and a collapse when one
happens. Sampling uses an exponential moving average of the generator's weights (the usual fix for a GAN's
last-step jitter) with its batch-norm statistics recomputed for those weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vaekit import checkpoint
from vaekit.cli import HelpFormatter, add_run_flags, setup_run
from vaekit.course import load_submission
from vaekit.data import Split
from vaekit.paths import ROOT
from vaekit.settings import FitSettings
from vaekit.train_command import write_course_folder
from vaekit.training_loop import fit

# The lab's model is a submission file, loaded the way the grader loads one.
SUBMISSION = Path(__file__).resolve().parent / "cgan_submission.py"
C = load_submission(SUBMISSION)

EMA_DECAY = 0.999
PROGRESS_PER_DIGIT = 2  # samples per digit in each epoch's row of progress.png
CHECK_PER_DIGIT = 50  # samples per digit read by the classifier after each epoch


@dataclass(frozen=True)
class LossRecipe:
    """How one loss trains: critic steps per generator step, optimiser, learning rate and Adam's betas."""

    n_critic: int
    optimiser: str  # adam | rmsprop
    lr: float
    betas: tuple[float, float] = (0.5, 0.999)
    about: str = ""


# Each loss with the settings its paper used (DCGAN; SNGAN's hinge; Arjovsky et al. 2017; Gulrajani et al. 2017).
LOSSES = {
    "nsgan": LossRecipe(1, "adam", 2e-4, about="non-saturating log-loss (Goodfellow et al., 2014; DCGAN settings)"),
    "hinge": LossRecipe(1, "adam", 2e-4, about="hinge loss (Lim & Ye, 2017; used by SNGAN and BigGAN)"),
    "wgan-clip": LossRecipe(5, "rmsprop", 5e-5, about="Wasserstein loss with weight clipping (Arjovsky et al., 2017)"),
    "wgan-gp": LossRecipe(5, "adam", 1e-4, (0.0, 0.9),
                          about="Wasserstein loss with gradient penalty (Gulrajani et al., 2017)"),
}


def gradient_penalty(disc: C.Discriminator, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al., 2017): (‖∇ D(x̂)‖ − 1)² at random points between real and fake images."""
    t = torch.rand(len(real), 1, 1, 1, device=real.device)
    mixed = (t * real + (1 - t) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(disc(mixed, y)[0].sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def discriminator_loss(loss: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """The realness part of the discriminator's (critic's) loss; lower is better for it."""
    if loss == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    if loss == "nsgan":  # log-loss on real vs fake
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    return d_fake.mean() - d_real.mean()  # both WGANs: the critic's estimate of the Wasserstein distance, negated


def generator_loss(loss: str, d_gen: torch.Tensor) -> torch.Tensor:
    """The realness part of the generator's loss: non-saturating for nsgan, −D(G(z)) for the others."""
    return F.softplus(-d_gen).mean() if loss == "nsgan" else -d_gen.mean()


def clip_weights(disc: C.Discriminator, bound: float) -> None:
    """WGAN's Lipschitz constraint by clipping: every critic weight into [−bound, bound]."""
    with torch.no_grad():
        for p in disc.critic_parameters():
            p.clamp_(-bound, bound)


def update_ema(ema: nn.Module, gen: nn.Module, step: int) -> None:
    """Move the averaged weights towards the live ones; the decay warms up, so the first epochs count at once."""
    decay = min(EMA_DECAY, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), gen.parameters()):
            pe.lerp_(p, 1 - decay)


@torch.no_grad()
def standing_statistics(gen: nn.Module, latent_dim: int, device: torch.device, batches: int = 25,
                        batch_size: int = 256, seed: int = 0) -> nn.Module:
    """Recompute the batch-norm statistics for the generator's current (averaged) weights, in place.

    The running statistics were gathered for the live weights; the averaged ones need their own, or eval-mode
    samples come out washed out. Cumulative averages over ``batches`` batches of random digits."""
    norms = [m for m in gen.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    gen.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        y = torch.randint(0, 10, (batch_size,), generator=g)
        gen(torch.randn(batch_size, latent_dim, generator=g).to(device), F.one_hot(y, 10).float().to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return gen.eval()


class Progress:
    """After each epoch: the same noise decoded per digit (a row of ``progress.png``) and the share of
    ``CHECK_PER_DIGIT`` fresh samples per digit that the grading classifier reads as the requested digit."""

    def __init__(self, latent_dim: int, device: torch.device, seed: int):
        from vaekit.classifier import load_classifier

        self.classifier = load_classifier()[0]
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(10).repeat_interleave(PROGRESS_PER_DIGIT)
        self.noise = torch.randn(len(self.labels), latent_dim, generator=g)
        self.check_labels = torch.arange(10).repeat_interleave(CHECK_PER_DIGIT)
        self.check_noise = torch.randn(len(self.check_labels), latent_dim, generator=g)
        self.device, self.latent_dim = device, latent_dim
        self.rows: list[torch.Tensor] = []
        self.accuracy: list[float] = []

    @torch.no_grad()
    def __call__(self, ema: nn.Module) -> float:
        def draw(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return ema(z.to(self.device), F.one_hot(y, 10).float().to(self.device)).cpu()

        standing_statistics(ema, self.latent_dim, self.device)
        self.rows.append(draw(self.noise, self.labels))
        images = (draw(self.check_noise, self.check_labels) * 255).to(torch.uint8).float() / 255  # as graded
        read = self.classifier(images).argmax(1)
        self.accuracy.append(float((read == self.check_labels).float().mean()))
        return self.accuracy[-1]

    def save(self, path: Path, title: str, max_rows: int = 14) -> None:
        """One row per epoch (digits 0-9, ``PROGRESS_PER_DIGIT`` each), labelled with that epoch's accuracy; at
        most ``max_rows`` rows, evenly spaced, the first and last epochs always among them."""
        if not self.rows:
            return
        import matplotlib.pyplot as plt

        from vaekit.plots import image_grid

        shown = sorted({round(i) for i in np.linspace(0, len(self.rows) - 1, min(max_rows, len(self.rows)))})
        n = len(shown)
        grid = image_grid(torch.cat([self.rows[i] for i in shown]), nrow=len(self.labels))[0].numpy()
        fig, ax = plt.subplots(figsize=(8, 7 * grid.shape[0] / grid.shape[1] + 1.1))  # image width ~7 in
        ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
        ax.set_yticks([30 * k + 15 for k in range(n)],
                      [f"epoch {i + 1}: {100 * self.accuracy[i]:.0f} %" for i in shown], fontsize=7)
        ax.set_xticks([30 * (PROGRESS_PER_DIGIT * d + PROGRESS_PER_DIGIT / 2) for d in range(10)],
                      [str(d) for d in range(10)], fontsize=8)
        ax.set_xlabel("digit asked for (the same noise every epoch)")
        ax.set_title(f"{title}: samples after each epoch, with the share read as the digit asked for", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def optimiser(recipe: LossRecipe, params, lr: float) -> torch.optim.Optimizer:
    if recipe.optimiser == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, betas=recipe.betas)


def train_gan(model: C.GenModel, disc: C.Discriminator, train: Split, args: argparse.Namespace,
              device: torch.device, max_steps: int | None, progress: Progress | None = None,
              ) -> tuple[nn.Module, list[dict[str, float]], str, float]:
    """Alternate discriminator and generator steps; return (EMA generator, per-epoch history, why it stopped, s)."""
    recipe = LOSSES[args.loss]
    n_critic = args.n_critic or recipe.n_critic
    lr = args.lr or recipe.lr
    gen = model.generator
    opt_g, opt_d = optimiser(recipe, gen.parameters(), lr), optimiser(recipe, disc.parameters(), lr)
    ema = copy.deepcopy(gen).eval().requires_grad_(False)
    x_all, y_all = train.x.reshape(-1, 1, 28, 28).to(device), train.y.to(device)
    steps_per_epoch = max(1, len(train) // args.batch_size)
    history: list[dict[str, float]] = []
    stopped_by, step, t0 = "epochs", 0, time.perf_counter()

    def batch(order: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order[(i % steps_per_epoch) * args.batch_size:(i % steps_per_epoch + 1) * args.batch_size]
        return x_all[idx], y_all[idx]

    try:
        for epoch in range(args.epochs):
            shuffle = torch.Generator().manual_seed(args.seed * 1000 + epoch)
            order = torch.randperm(len(train), generator=shuffle).to(device)
            sums, done = {"d_loss": 0.0, "g_loss": 0.0}, 0
            gen.train()
            bar = tqdm(range(max(1, steps_per_epoch // n_critic)), desc=f"GAN {epoch + 1}/{args.epochs}", disable=None,
                       leave=False)
            for b in bar:
                # -- discriminator (critic) steps: real and fake in one batch ------------------------------
                for k in range(n_critic):
                    x, y = batch(order, b * n_critic + k)
                    with torch.no_grad():
                        fake = gen(torch.randn(len(x), args.latent_dim, device=device), F.one_hot(y, 10).float())
                    score, logits = disc(torch.cat([x, fake]), torch.cat([y, y]))
                    d_loss = discriminator_loss(args.loss, score[:len(x)], score[len(x):])
                    if args.loss == "wgan-gp":
                        d_loss = d_loss + args.gp_weight * gradient_penalty(disc, x, fake, y)
                    d_loss = d_loss + args.aux_weight * F.cross_entropy(logits[:len(x)], y)  # digits of real images
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                    if args.loss == "wgan-clip":
                        clip_weights(disc, args.clip)
                # -- generator step -------------------------------------------------------------------------
                y = y_all[torch.randint(len(train), (args.batch_size,), device=device)]
                fake = gen(torch.randn(len(y), args.latent_dim, device=device), F.one_hot(y, 10).float())
                d_gen, c_gen = disc(fake, y)
                g_loss = generator_loss(args.loss, d_gen) + args.aux_weight * F.cross_entropy(c_gen, y)  # draw them
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                update_ema(ema, gen, step)
                sums["d_loss"] += float(d_loss.detach())
                sums["g_loss"] += float(g_loss.detach())
                step, done = step + 1, done + 1
                if b % 20 == 0:
                    bar.set_postfix(d=f"{float(d_loss.detach()):.3f}", g=f"{float(g_loss.detach()):.3f}")
                if max_steps is not None and step >= max_steps:
                    break
            bar.close()
            seconds = time.perf_counter() - t0
            record = {"epoch": epoch + 1, "seconds": round(seconds, 1),
                      **{f"train_{k}": v / max(done, 1) for k, v in sums.items()}}
            if progress is not None:
                record["sample_accuracy"] = round(progress(ema), 4)
            history.append(record)
            read = f", {100 * record['sample_accuracy']:.1f} % read as asked" if progress is not None else ""
            tqdm.write(f"GAN epoch {epoch + 1}/{args.epochs}: D loss {record['train_d_loss']:.4f}, "
                       f"G loss {record['train_g_loss']:.4f}{read} ({seconds:.0f} s)")
            if max_steps is not None and step >= max_steps:
                stopped_by = "max_steps"
                break
            if args.time_budget and seconds >= args.time_budget:
                stopped_by = "time_budget"
                break
    except KeyboardInterrupt:
        stopped_by = "interrupted"
        tqdm.write(f"\ninterrupted after {len(history)} finished GAN epoch(s); fitting the encoder to what there is")
    return standing_statistics(ema, args.latent_dim, device), history, stopped_by, time.perf_counter() - t0


def inversion_loss(model: C.GenModel, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fit only the encoder: pixel error of G(E(x)) on real images plus the z error of E(G(z)) on fakes."""
    model.generator.eval()  # frozen, and its batch-norm statistics must stay the standing ones
    y1h = F.one_hot(y, 10).float()
    recon = (model.generator(model.encoder(x, y1h), y1h) - x).pow(2).flatten(1).sum(1).mean()
    z = torch.randn(len(x), model.latent_dim, device=x.device)
    with torch.no_grad():
        fake = model.generator(z, y1h)
    cycle = (model.encoder(fake, y1h) - z).pow(2).sum(1).mean()
    return {"loss": recon + cycle, "recon": recon, "cycle": cycle}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--loss", choices=list(LOSSES), default="nsgan",
                   help="; ".join(f"{k}: {v.about}" for k, v in LOSSES.items()))
    p.add_argument("--spectral-norm", action="store_true",
                   help="spectrally normalise the discriminator's realness path (nsgan/hinge; slower to learn here)")
    p.add_argument("--epochs", type=int, default=60, help="most GAN epochs (over the 50 000 training images)")
    p.add_argument("--time-budget", type=float, default=960.0,
                   help="stop the GAN phase after the epoch that crosses this many seconds (0 = no limit); "
                   "with the encoder fit and the grading the default run takes under 20 minutes on 2 cores")
    p.add_argument("--lr", type=float, default=0.0,
                   help="learning rate of both networks (0 = the loss's own: 2e-4 nsgan/hinge, 5e-5 wgan-clip, "
                   "1e-4 wgan-gp)")
    p.add_argument("--batch-size", type=int, default=64, help="images per discriminator step")
    p.add_argument("--latent-dim", type=int, default=16, help="size of the generator's noise z")
    p.add_argument("--channels", type=int, default=32, help="conv width (generator and discriminator)")
    p.add_argument("--n-critic", type=int, default=0,
                   help="discriminator steps per generator step (0 = the loss's own: 1, or 5 for both WGANs)")
    p.add_argument("--aux-weight", type=float, default=1.0,
                   help="weight of the auxiliary digit-classification loss (AC-GAN); 0 = label projection only, "
                   "which learns the digits far more slowly")
    p.add_argument("--clip", type=float, default=0.01, help="weight-clipping bound (wgan-clip)")
    p.add_argument("--gp-weight", type=float, default=10.0, help="gradient-penalty weight (wgan-gp)")
    p.add_argument("--encoder-epochs", type=int, default=3, help="epochs fitting the inversion encoder")
    p.add_argument("--no-grade", action="store_true", help="skip grading the result with grade.py's code")
    add_run_flags(p, out_default=str(ROOT / "labs" / "results" / "cgan"),
                  out_help="submission folder to write (submission.py + Genwithlabel/)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.latent_dim < 1 or args.lr < 0 or args.n_critic < 0:
        p.error("--epochs, --batch-size and --latent-dim must be at least 1, --lr and --n-critic not negative.")
    if args.clip <= 0:
        p.error("--clip must be positive.")

    run = setup_run(args)
    device, train, valid, max_steps = run.device, run.train, run.valid, run.max_steps
    out = Path(args.out)
    folder = out / "Genwithlabel"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = C.GenModel(args.latent_dim, channels=args.channels).to(device)
    disc = C.Discriminator(args.channels, spectral=args.spectral_norm and args.loss in ("nsgan", "hinge")).to(device)
    print(f"conditional GAN ({LOSSES[args.loss].about}): generator "
          f"{sum(p.numel() for p in model.generator.parameters()):,} / discriminator "
          f"{sum(p.numel() for p in disc.parameters()):,} parameters on {device} -> {out}/")

    t0 = time.perf_counter()
    progress = Progress(args.latent_dim, device, args.seed)
    ema, history, stopped_by, gan_s = train_gan(model, disc, train, args, device, max_steps, progress)
    model.generator.load_state_dict(ema.state_dict())  # what is saved and sampled: the averaged generator
    model.generator.requires_grad_(False)
    enc = fit(model, inversion_loss, train, valid,
              FitSettings(args.encoder_epochs, 1e-3, 128, args.seed, device, max_steps=max_steps, desc="encoder"))
    seconds = time.perf_counter() - t0
    model = model.cpu().eval()

    # -- the course files, exactly as a student would hand them in ------------------------------------
    kwargs = checkpoint.constructor_kwargs(C.GenModel, {"latent_dim": args.latent_dim, "channels": args.channels})
    training = {k: v for k, v in vars(args).items() if k not in ("out", "device", "workers", "no_grade")}
    training["lr"] = args.lr or LOSSES[args.loss].lr
    training["n_critic"] = args.n_critic or LOSSES[args.loss].n_critic
    fixed = valid.subset(16)
    # The width as the copy's default: the course builds GenModel(latent_dim=d) and loads the weights strictly.
    out.mkdir(parents=True, exist_ok=True)
    (out / "submission.py").write_text(re.sub(r"^CHANNELS = \d+", f"CHANNELS = {args.channels}",
                                              SUBMISSION.read_text(), count=1, flags=re.M))
    title = f"conditional GAN ({args.loss})"
    progress.save(folder / "progress.png", title)
    write_course_folder(folder, model, task="gen", model_kwargs=kwargs, seed=args.seed,
                        submission=out / "submission.py",
                        history={"gan": history, "encoder": enc.history}, shown=(fixed.x, fixed.y),
                        title=title, checkpoint_meta={"epoch": len(history)},
                        hyperparameters={
                            "training": training, "seed": args.seed, "epochs_run": len(history),
                            "stopped_by": stopped_by, "gan_seconds": round(gan_s, 1), "wall_time_s": round(seconds, 1),
                            "sample_accuracy_per_epoch": [h["sample_accuracy"] for h in history],
                            "encoder_valid": {k: round(v, 4) for k, v in enc.history[-1].items()
                                              if k.startswith("valid_")} if enc.history else {}})
    print(f"{len(history)} GAN epochs in {gan_s:.0f} s ({stopped_by}), {seconds:.0f} s in all. Wrote "
          f"{out}/submission.py and {folder}/epoch.pth, hyperparameters.txt, samples.png, progress.png, "
          "reconstructions.png")

    if not args.no_grade:
        from vaekit.grading import GradeSettings, grade_submission
        from vaekit.judge import Judge

        res = grade_submission(Judge(), out, out, ["gen"], GradeSettings(per_label=50 if args.dry_run else 1000))
        res = res["gen"]
        keys = ("score", "cond_accuracy", "fid_ratio", "diversity", "memorization", "ssim", "mse", "error")
        print("grade:", json.dumps({k: res.get(k) for k in keys}))


if __name__ == "__main__":
    main()

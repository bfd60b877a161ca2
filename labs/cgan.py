"""Conditional GAN lab: a DCGAN generator against a projection discriminator with an auxiliary digit
classifier (non-saturating or hinge loss with spectral norm, or WGAN-GP), then an encoder fitted to invert
the generator, written as a gradable course submission.

    python labs/cgan.py                    # -> labs/results/cgan/
    python labs/cgan.py --loss wgan-gp     # Wasserstein loss with gradient penalty (5 critic steps per G step)
    python labs/cgan.py --dry-run          # a few steps on a small subset (a smoke test)

The output folder is a submission like a student's: ``submission.py`` (a copy of ``labs/cgan_submission.py``)
and ``Genwithlabel/{epoch.pth, hyperparameters.txt, samples.png, reconstructions.png, loss_curves.png}``; it is
then graded by the same code as ``grade.py`` (``Genwithlabel/grade_result.json``; skip with ``--no-grade``), so
its conditional accuracy and classifier FID sit beside the VAEs' in ``bench/``. Sampling uses an exponential
moving average of the generator's weights, the usual fix for a GAN's last-step jitter.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vaekit import checkpoint
from vaekit.cli import HelpFormatter, add_run_flags, setup_run
from vaekit.course import load_submission, write_course_folder
from vaekit.data import Split
from vaekit.paths import ROOT
from vaekit.training import fit

# The lab's model is a submission file, loaded the way the grader loads one.
SUBMISSION = Path(__file__).resolve().parent / "cgan_submission.py"
C = load_submission(SUBMISSION)

EMA_DECAY = 0.999


def gradient_penalty(disc: C.Discriminator, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al., 2017): (‖∇ D(x̂)‖ − 1)² at random points between real and fake images."""
    t = torch.rand(len(real), 1, 1, 1, device=real.device)
    mixed = (t * real + (1 - t) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(disc(mixed, y)[0].sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def train_gan(model: C.GenModel, disc: C.Discriminator, train: Split, args: argparse.Namespace,
              device: torch.device, max_steps: int | None) -> tuple[nn.Module, list[dict[str, float]], str, float]:
    """Alternate discriminator and generator steps; return (EMA generator, per-epoch history, why it stopped, s)."""
    wgan = args.loss == "wgan-gp"
    n_critic = args.n_critic or (5 if wgan else 1)
    betas = (0.0, 0.9) if wgan else (0.5, 0.999)
    gen = model.generator
    opt_g = torch.optim.Adam(gen.parameters(), lr=args.lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=betas)
    ema = copy.deepcopy(gen).eval().requires_grad_(False)
    x_all, y_all = train.x.to(device), train.y.to(device)
    steps_per_epoch = len(train) // args.batch_size
    history: list[dict[str, float]] = []
    stopped_by, step, t0 = "epochs", 0, time.perf_counter()

    def batch(order: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order[(i % steps_per_epoch) * args.batch_size:(i % steps_per_epoch + 1) * args.batch_size]
        return x_all[idx], y_all[idx]

    try:
        for epoch in range(args.epochs):
            shuffle = torch.Generator().manual_seed(args.seed * 1000 + epoch)
            order = torch.randperm(len(train), generator=shuffle).to(device)
            sums = {"d_loss": 0.0, "g_loss": 0.0}
            bar = tqdm(range(steps_per_epoch // n_critic), desc=f"GAN {epoch + 1}/{args.epochs}", disable=None,
                       leave=False)
            for b in bar:
                # -- discriminator (critic) steps ---------------------------------------------------
                for k in range(n_critic):
                    x, y = batch(order, b * n_critic + k)
                    with torch.no_grad():
                        fake = gen(torch.randn(len(x), args.latent_dim, device=device), F.one_hot(y, 10).float())
                    (d_real, c_real), (d_fake, _) = disc(x, y), disc(fake, y)
                    if wgan:
                        d_loss = d_fake.mean() - d_real.mean() + args.gp_weight * gradient_penalty(disc, x, fake, y)
                    elif args.loss == "hinge":
                        d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
                    else:  # non-saturating: log-loss on real vs fake
                        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
                    d_loss = d_loss + args.aux_weight * F.cross_entropy(c_real, y)  # learn digits on real images
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                # -- generator step -----------------------------------------------------------------
                y = y_all[torch.randint(len(train), (args.batch_size,), device=device)]
                fake = gen(torch.randn(len(y), args.latent_dim, device=device), F.one_hot(y, 10).float())
                d_gen, c_gen = disc(fake, y)
                g_loss = F.softplus(-d_gen).mean() if args.loss == "nsgan" else -d_gen.mean()
                g_loss = g_loss + args.aux_weight * F.cross_entropy(c_gen, y)  # ...and draw them
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                with torch.no_grad():
                    for pe, p in zip(ema.parameters(), gen.parameters()):
                        pe.lerp_(p, 1 - EMA_DECAY)
                    for be, bg in zip(ema.buffers(), gen.buffers()):
                        be.copy_(bg)
                sums["d_loss"] += float(d_loss.detach())
                sums["g_loss"] += float(g_loss.detach())
                step += 1
                if b % 20 == 0:
                    bar.set_postfix(d=f"{float(d_loss.detach()):.3f}", g=f"{float(g_loss.detach()):.3f}")
                if max_steps is not None and step >= max_steps:
                    break
            bar.close()
            seconds = time.perf_counter() - t0
            history.append({"epoch": epoch + 1, "seconds": round(seconds, 1),
                            **{f"train_{k}": v / (b + 1) for k, v in sums.items()}})
            tqdm.write(f"GAN epoch {epoch + 1}/{args.epochs}: D loss {history[-1]['train_d_loss']:.4f}, "
                       f"G loss {history[-1]['train_g_loss']:.4f} ({seconds:.0f} s)")
            if max_steps is not None and step >= max_steps:
                stopped_by = "max_steps"
                break
            if args.time_budget and seconds >= args.time_budget:
                stopped_by = "time_budget"
                break
    except KeyboardInterrupt:
        stopped_by = "interrupted"
        tqdm.write(f"\ninterrupted after {len(history)} finished GAN epoch(s); fitting the encoder to what there is")
    return ema, history, stopped_by, time.perf_counter() - t0


def inversion_loss(model: C.GenModel, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fit only the encoder: pixel error of G(E(x)) on real images plus the z error of E(G(z)) on fakes."""
    model.generator.eval()  # frozen, and its batch-norm statistics must stay the trained ones
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
    p.add_argument("--loss", choices=["nsgan", "hinge", "wgan-gp"], default="nsgan",
                   help="non-saturating log-loss or hinge loss (both with a spectrally normalised "
                   "discriminator), or WGAN with gradient penalty")
    p.add_argument("--no-spectral-norm", action="store_true",
                   help="plain discriminator layers for nsgan/hinge (wgan-gp never uses spectral norm)")
    p.add_argument("--epochs", type=int, default=12, help="most GAN epochs (over the 50 000 training images)")
    p.add_argument("--time-budget", type=float, default=210.0,
                   help="stop the GAN phase after the epoch that crosses this many seconds (0 = no limit)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate of generator and discriminator")
    p.add_argument("--batch-size", type=int, default=64, help="images per discriminator step")
    p.add_argument("--latent-dim", type=int, default=16, help="size of the generator's noise z")
    p.add_argument("--channels", type=int, default=32, help="conv width (generator and discriminator)")
    p.add_argument("--n-critic", type=int, default=0,
                   help="discriminator steps per generator step (0: 1 for hinge, 5 for wgan-gp)")
    p.add_argument("--aux-weight", type=float, default=0.3,
                   help="weight of the auxiliary digit-classification loss (AC-GAN); 0 = projection only, "
                   "1 collapses each digit to one style within this budget")
    p.add_argument("--gp-weight", type=float, default=10.0, help="gradient-penalty weight (wgan-gp)")
    p.add_argument("--encoder-epochs", type=int, default=3, help="epochs fitting the inversion encoder")
    p.add_argument("--no-grade", action="store_true", help="skip grading the result with grade.py's code")
    add_run_flags(p, out_default=str(ROOT / "labs" / "results" / "cgan"),
                  out_help="submission folder to write (submission.py + Genwithlabel/)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.latent_dim < 1 or args.lr <= 0:
        p.error("--epochs, --batch-size and --latent-dim must be at least 1 and --lr positive.")

    run = setup_run(args)
    device, train, valid, max_steps = run.device, run.train, run.valid, run.max_steps
    out = Path(args.out)
    folder = out / "Genwithlabel"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = C.GenModel(args.latent_dim, channels=args.channels).to(device)
    disc = C.Discriminator(args.channels, spectral=args.loss != "wgan-gp" and not args.no_spectral_norm).to(device)
    print(f"conditional GAN ({args.loss}): generator {sum(p.numel() for p in model.generator.parameters()):,} / "
          f"discriminator {sum(p.numel() for p in disc.parameters()):,} parameters on {device} -> {out}/")

    t0 = time.perf_counter()
    ema, history, stopped_by, gan_s = train_gan(model, disc, train, args, device, max_steps)
    model.generator.load_state_dict(ema.state_dict())
    model.generator.requires_grad_(False)
    enc = fit(model, inversion_loss, train, valid, epochs=args.encoder_epochs, lr=1e-3, batch_size=128,
              seed=args.seed, device=device, max_steps=max_steps, desc="encoder")
    seconds = time.perf_counter() - t0
    model = model.cpu().eval()

    # -- the course files, exactly as a student would hand them in ------------------------------------
    kwargs = checkpoint.constructor_kwargs(C.GenModel, {"latent_dim": args.latent_dim, "channels": args.channels})
    training = {k: v for k, v in vars(args).items() if k not in ("out", "device", "workers", "no_grade")}
    fixed = valid.subset(16)
    # The width as the copy's default: the course builds GenModel(latent_dim=d) and loads the weights strictly.
    out.mkdir(parents=True, exist_ok=True)
    (out / "submission.py").write_text(re.sub(r"^CHANNELS = \d+", f"CHANNELS = {args.channels}",
                                              SUBMISSION.read_text(), count=1, flags=re.M))
    write_course_folder(folder, model, task="gen", model_kwargs=kwargs, seed=args.seed,
                        submission=out / "submission.py",
                        history={"gan": history, "encoder": enc.history}, shown=(fixed.x, fixed.y),
                        title=f"conditional GAN ({args.loss})", checkpoint_meta={"epoch": len(history)},
                        hyperparameters={
                            "training": training, "seed": args.seed, "epochs_run": len(history),
                            "stopped_by": stopped_by, "gan_seconds": round(gan_s, 1), "wall_time_s": round(seconds, 1),
                            "encoder_valid": {k: round(v, 4) for k, v in enc.history[-1].items()
                                              if k.startswith("valid_")} if enc.history else {}})
    print(f"{len(history)} GAN epochs in {gan_s:.0f} s ({stopped_by}), {seconds:.0f} s in all. "
          f"Wrote {out}/submission.py and {folder}/epoch.pth, hyperparameters.txt, samples.png, reconstructions.png")

    if not args.no_grade:
        from vaekit.grading import GradeSettings, grade_submission
        from vaekit.judge import Judge

        res = grade_submission(Judge(), out, out, ["gen"], GradeSettings(per_label=50 if args.dry_run else 1000))
        res = res["gen"]
        keys = ("score", "cond_accuracy", "fid_ratio", "diversity", "memorization", "ssim", "mse", "error")
        print("grade:", json.dumps({k: res.get(k) for k in keys}))


if __name__ == "__main__":
    main()

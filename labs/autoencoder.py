"""Autoencoder lab: a deep fully-connected autoencoder with a 2-D bottleneck, trained with binary cross-entropy.

    python labs/autoencoder.py                 # -> labs/results/autoencoder/
    python labs/autoencoder.py --dry-run       # a few steps on a small subset (a smoke test)

Figures: the test set's 2-D codes coloured by digit; a denoising autoencoder (trained on x + 0.4·N(0,1),
clipped to [0,1]) showing original / noisy / denoised for one test image of each digit with the mean PSNR
before and after; uniform sampling of a grid over the 2-D latent range decoded into a mosaic; the same
autoencoder trained with L2 weight regularisation, its latent map and mosaic beside the plain one's.
Numbers (losses, PSNRs) go to results.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from vaekit import plots
from vaekit.cli import HelpFormatter, add_run_flags, setup_run
from vaekit.metrics import psnr
from vaekit.paths import ROOT
from vaekit.settings import FitSettings
from vaekit.training_loop import evaluate, fit

plt.switch_backend("Agg")  # no display on a CI box or a laptop over SSH

NOISE = 0.4


class DeepAutoencoder(nn.Module):
    """784-512-256-64-2 encoder and its mirror as decoder (sigmoid output, for BCE)."""

    def __init__(self, widths: tuple[int, ...] = (512, 256, 64), bottleneck: int = 2):
        super().__init__()
        dims = (784, *widths, bottleneck)
        enc: list[nn.Module] = []
        dec: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            enc += [nn.Linear(a, b), nn.ReLU()]
        for a, b in zip(dims[::-1][:-1], dims[::-1][1:]):
            dec += [nn.Linear(a, b), nn.ReLU()]
        self.encoder = nn.Sequential(*enc[:-1])  # linear bottleneck
        self.decoder = nn.Sequential(*dec[:-1], nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x.reshape(-1, 784))).reshape(-1, 1, 28, 28)


def add_noise(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """x + 0.4·N(0,1), clipped to [0, 1] (the lab's corruption)."""
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    return (x + NOISE * noise).clamp(0, 1)


def bce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Binary cross-entropy summed over pixels, mean over the batch; the target is always the clean image."""
    return {"loss": F.binary_cross_entropy(model(x), x, reduction="sum") / len(x)}


def denoising_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    # Validation sees noise too; a fixed generator would repeat the same noise each epoch, which is fine.
    return {"loss": F.binary_cross_entropy(model(add_noise(x)), x, reduction="sum") / len(x)}


@torch.no_grad()
def codes(model: DeepAutoencoder, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model.encoder(x.reshape(-1, 784))


@torch.no_grad()
def mosaic(model: DeepAutoencoder, z: torch.Tensor, n: int = 20) -> torch.Tensor:
    """Decode an n×n uniform grid over the bounding box of the codes ``z``."""
    lo, hi = z.min(0).values, z.max(0).values
    a = torch.linspace(float(lo[0]), float(hi[0]), n)
    b = torch.linspace(float(hi[1]), float(lo[1]), n)  # top row = high z2, like a plot's y axis
    grid = torch.stack(torch.meshgrid(b, a, indexing="ij")[::-1], -1).reshape(-1, 2)
    return model.decoder(grid).reshape(-1, 1, 28, 28)


def scatter(ax, z: torch.Tensor, y: torch.Tensor, title: str) -> None:
    sc = ax.scatter(z[:, 0], z[:, 1], c=y, cmap="tab10", s=2, alpha=0.6)
    ax.set_title(title)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    return sc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--epochs", type=int, default=8, help="epochs for each of the three autoencoders")
    p.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate")
    p.add_argument("--batch-size", type=int, default=256, help="images per step")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="L2 coefficient of the regularised model")
    add_run_flags(p, out_default=str(ROOT / "labs" / "results" / "autoencoder"),
                  seed_help="seed for weights, shuffling and noise")
    args = p.parse_args(argv)

    run = setup_run(args)
    device, train, valid, test, max_steps = run.device, run.train, run.valid, run.test, run.max_steps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = FitSettings(args.epochs, args.lr, args.batch_size, args.seed, device, max_steps=max_steps)

    # -- three autoencoders: plain, denoising, L2-regularised -----------------------------------------
    models, numbers = {}, {}
    for name, loss_fn, wd in (("plain", bce_loss, 0.0), ("denoising", denoising_loss, 0.0),
                              ("l2", bce_loss, args.weight_decay)):
        torch.manual_seed(args.seed)
        model = DeepAutoencoder()
        result = fit(model, loss_fn, train, valid, replace(common, weight_decay=wd, desc=f"AE {name}"))
        model = model.cpu().eval()
        models[name] = model
        numbers[name] = {"epochs": result.epochs_run, "train_seconds": round(result.seconds, 1),
                         "valid_bce": result.best_valid,
                         "test_bce": evaluate(model, bce_loss, test, 1000, torch.device("cpu"))["loss"]}

    # -- 2-D latent maps and uniform-grid mosaics, plain vs L2 ---------------------------------------
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    zs = {}
    for ax, name, title in ((axes[0], "plain", "plain"), (axes[1], "l2", f"L2 weight decay {args.weight_decay}")):
        zs[name] = codes(models[name], test.x)
        sc = scatter(ax, zs[name], test.y, f"test codes — {title}")
    fig.colorbar(sc, ax=axes, ticks=range(10), label="digit")
    fig.savefig(out / "latent_maps.png", dpi=120)
    plt.close(fig)
    for name in ("plain", "l2"):
        with torch.no_grad():
            plots.save_grid(mosaic(models[name], zs[name]), out / f"mosaic_{name}.png", nrow=20)
        numbers[name]["latent_range"] = [zs[name].min(0).values.tolist(), zs[name].max(0).values.tolist()]

    # -- denoising: one test image per digit, original / noisy / denoised ------------------------------
    gen = torch.Generator().manual_seed(args.seed)
    noisy = add_noise(test.x, gen)
    with torch.no_grad():
        denoised = models["denoising"](noisy)
    numbers["denoising"]["psnr_noisy_db"] = float(psnr(noisy, test.x).mean())
    numbers["denoising"]["psnr_denoised_db"] = float(psnr(denoised, test.x).mean())
    idx = [int((test.y == c).nonzero()[0]) for c in range(10) if (test.y == c).any()]
    plots.save_grid(torch.cat([test.x[idx], noisy[idx], denoised[idx]]), out / "denoising.png", nrow=len(idx))

    (out / "results.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(json.dumps({k: {m: v for m, v in d.items() if m != "latent_range"} for k, d in numbers.items()}, indent=2))
    print(f"wrote {out}/latent_maps.png, mosaic_plain.png, mosaic_l2.png, denoising.png, results.json")


if __name__ == "__main__":
    main()

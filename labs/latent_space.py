"""Latent-space lab: a conv autoencoder with an 8×8×16 code on 64×64 colour photos, what its code looks like,
whether a Gaussian fitted to codes generates images, and whether a noisy channel makes the code generative.

    python labs/latent_space.py                  # -> labs/results/latent_space/ (about 10 minutes on 2 cores)
    python labs/latent_space.py --data DIR       # any image folder (recursively), resized and centre-cropped
    python labs/latent_space.py --dry-run        # a few steps on a small subset (a smoke test)

Without ``--data`` the lab trains on random 64×64 crops (random scale and place, flipped half the time) of the
colour sample photos that scikit-image and scikit-learn ship (``vaekit/photos.py``), with two whole photos
held out for evaluation: the course's "Dog" photos cannot be downloaded here.

Task 1: the autoencoder (MSE). Task 2: nine held-out images, their reconstructions and the code's 16 channels.
Task 3: mean and covariance (full and diagonal) of 256 codes, nine samples decoded. Task 4: the nine codes
perturbed by Gaussian noise of several sizes, decoded. Task 5: codes power-normalised (unit average power per
code) and sent through additive white Gaussian noise while training, for three noise variances: held-out PSNR
per variance and samples from each model's latent Gaussian beside the plain model's.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid

from vaekit.cli import DRY_RUN_IMAGES, DRY_RUN_STEPS, HelpFormatter, add_run_flags, setup_device
from vaekit.data import Split
from vaekit.metrics import psnr
from vaekit.paths import ROOT
from vaekit.photos import default_photo_set, load_image_folder
from vaekit.settings import FitSettings
from vaekit.training_loop import fit

plt.switch_backend("Agg")  # no display on a CI box or a laptop over SSH

SIZE = 64  # images are SIZE × SIZE × 3
CODE_SHAPE = (16, 8, 8)  # the course's code: 8×8×16 = 1024 numbers
NOISE_VARS = (0.05, 0.1, 0.15)  # channel noise variances of task 5 (the code has unit average power)
PERTURB = (0.1, 0.25, 0.5, 1.0)  # task 4: noise std as a fraction of each code's RMS


class ConvAutoencoder(nn.Module):
    """``[B,3,64,64]`` -> code ``[B,16,8,8]`` -> ``[B,3,64,64]`` in [0, 1]; three stride-2 convs each way.

    With ``noise_var`` > 0 the code goes through a channel: scaled to unit average power per code, then (in
    training) additive white Gaussian noise of that variance — the signal-to-noise ratio is 1/noise_var.
    """

    def __init__(self, width: int = 32, noise_var: float = 0.0):
        super().__init__()
        w, c = width, CODE_SHAPE[0]
        self.noise_var = noise_var
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.ReLU(),  # 64 -> 32
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),  # 32 -> 16
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(),  # 16 -> 8
            nn.Conv2d(4 * w, c, 3, 1, 1),  # the code: 16 channels of 8×8
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(c, 4 * w, 3, 1, 1), nn.ReLU(),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(),  # 8 -> 16
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),  # 16 -> 32
            nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Sigmoid(),  # 32 -> 64
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code as the decoder sees it without channel noise (power-normalised for a channel model)."""
        code = self.encoder(x)
        return power_normalize(code) if self.noise_var > 0 else code

    def forward(self, x: torch.Tensor, noisy: bool | None = None) -> torch.Tensor:
        """Reconstruction; the channel adds noise in training (``noisy`` overrides)."""
        code = self.encode(x)
        if self.noise_var > 0 and (self.training if noisy is None else noisy):
            code = code + math.sqrt(self.noise_var) * torch.randn_like(code)
        return self.decoder(code)


def power_normalize(code: torch.Tensor) -> torch.Tensor:
    """Scale each code to unit average power: mean of its squared entries = 1."""
    return code / code.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(1e-12).sqrt()


def snr_db(noise_var: float) -> float:
    """Signal-to-noise ratio of a unit-power code under noise of this variance, in dB."""
    return 10 * math.log10(1 / noise_var)


def mse_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean squared error per pixel and channel (the course's loss)."""
    return {"loss": F.mse_loss(model(x), x)}


def fit_gaussian(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean ``[D]``, covariance ``[D,D]``) of flattened codes ``[N, D]`` (N − 1 normalisation)."""
    flat = codes.flatten(1).double()
    return flat.mean(0), torch.cov(flat.T)


def sample_gaussian(mean: torch.Tensor, cov: torch.Tensor, n: int, gen: torch.Generator,
                    diagonal: bool = False) -> torch.Tensor:
    """``n`` draws ``[n, D]`` from N(mean, cov), or from N(mean, diag(cov)). With fewer codes than dimensions
    the covariance is singular, so the draw goes through its eigen-decomposition (negative round-off clipped)."""
    eps = torch.randn(n, len(mean), generator=gen, dtype=torch.float64)
    if diagonal:
        return (mean + eps * cov.diagonal().clamp_min(0).sqrt()).float()
    vals, vecs = torch.linalg.eigh(cov)
    return (mean + (eps * vals.clamp_min(0).sqrt()) @ vecs.T).float()


@torch.no_grad()
def codes_of(model: ConvAutoencoder, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model.encode(x[i:i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def decode(model: ConvAutoencoder, codes: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model.decoder(codes.reshape(-1, *CODE_SHAPE))


@torch.no_grad()
def heldout_psnr(model: ConvAutoencoder, x: torch.Tensor, noisy: bool, seed: int) -> float:
    """Mean PSNR (dB) of reconstructions of ``x``; through the noisy channel when ``noisy``."""
    model.eval()
    torch.manual_seed(seed)
    return float(torch.cat([psnr(model(x[i:i + 256], noisy=noisy), x[i:i + 256])
                            for i in range(0, len(x), 256)]).mean())


# -- figures --------------------------------------------------------------------------------------


def show(ax, img: torch.Tensor, title: str = "") -> None:
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy() if img.shape[0] == 3 else img[0].numpy(),
              cmap=None if img.shape[0] == 3 else "viridis", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def code_mosaic(code: torch.Tensor) -> torch.Tensor:
    """The 16 channels of one 8×8 code as a 4×4 mosaic ``[1, H, W]``, each channel min-max scaled."""
    ch = code.reshape(CODE_SHAPE[0], 1, 8, 8)
    lo, hi = ch.amin(dim=(1, 2, 3), keepdim=True), ch.amax(dim=(1, 2, 3), keepdim=True)
    return make_grid((ch - lo) / (hi - lo + 1e-8), nrow=4, padding=1, pad_value=1.0)[:1]


def figure_codes(x: torch.Tensor, recon: torch.Tensor, codes: torch.Tensor, path: Path) -> None:
    """Task 2: a row per image: original, reconstruction, the code's 16 channels."""
    n = len(x)
    fig, axes = plt.subplots(n, 3, figsize=(5, 1.7 * n))
    for i in range(n):
        show(axes[i, 0], x[i], "original" if i == 0 else "")
        show(axes[i, 1], recon[i], "reconstruction" if i == 0 else "")
        show(axes[i, 2], code_mosaic(codes[i]), "code: 16 channels of 8×8" if i == 0 else "")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_rows(rows: list[tuple[str, torch.Tensor]], path: Path, title: str) -> None:
    """One labelled row of images per entry."""
    n = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.45 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            if c < len(imgs):
                show(axes[r, c], imgs[c])
            else:
                axes[r, c].axis("off")
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the lab --------------------------------------------------------------------------------------


def load_photos(args: argparse.Namespace) -> tuple[Split, Split, str]:
    """(train, held-out, description) as Splits of ``[N,3,64,64]`` images (labels unused, zero)."""
    if args.data:
        images = load_image_folder(args.data, SIZE)
        gen = torch.Generator().manual_seed(args.seed)
        images = images[torch.randperm(len(images), generator=gen)]
        n_held = max(1, len(images) // 10)
        if len(images) < 20:
            raise SystemExit(f"--data {args.data}: {len(images)} images; the lab needs at least 20.")
        train, held = images[n_held:], images[:n_held]
        source = f"{len(images)} images from {args.data} (10 % held out)"
    else:
        n_train, n_held = ((DRY_RUN_IMAGES, DRY_RUN_IMAGES // 4) if args.dry_run
                           else (args.train_images, args.heldout_images))
        train, held = default_photo_set(n_train, n_held, SIZE, args.seed)
        source = ("random 64×64 crops of the colour sample photos shipped by scikit-image and scikit-learn "
                  "(two whole photos held out)")
    if args.dry_run:
        train, held = train[:DRY_RUN_IMAGES], held[:DRY_RUN_IMAGES // 4]
    zeros = lambda t: torch.zeros(len(t), dtype=torch.long)
    return Split(train, zeros(train)), Split(held, zeros(held)), source


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data", default="", metavar="DIR", help="image folder (recursively; any size, resized and "
                   "centre-cropped to 64×64 RGB); default: crops of the sample photos shipped with the packages")
    p.add_argument("--train-images", type=int, default=6000, help="crops in the default training set")
    p.add_argument("--heldout-images", type=int, default=600, help="crops of the held-out photos")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv (then 2x, 4x)")
    p.add_argument("--epochs", type=int, default=40, help="at most this many epochs for each of the four models")
    p.add_argument("--time-budget", type=float, default=520.0,
                   help="seconds of training for all four models together (0 = no limit: --epochs each)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate (cosine-decayed)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    add_run_flags(p, out_default=str(ROOT / "labs" / "results" / "latent_space"),
                  seed_help="seed for weights, crops, shuffling and noise")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.time_budget < 0 or args.train_images < 20:
        p.error("--epochs and --batch-size must be at least 1, --train-images 20, --time-budget at least 0.")
    device = setup_device(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train, held, source = load_photos(args)
    print(f"latent-space lab: {len(train)} training / {len(held)} held-out images ({source}) -> {out}/")

    # -- task 1 (and the three channel models of task 5): train --------------------------------------
    budget = args.time_budget / (1 + len(NOISE_VARS)) if args.time_budget else None
    models: dict[str, ConvAutoencoder] = {}
    numbers: dict = {"data": source, "train_images": len(train), "heldout_images": len(held), "models": {}}
    for noise_var in (0.0, *NOISE_VARS):
        name = "plain" if noise_var == 0 else f"channel σ²={noise_var}"
        torch.manual_seed(args.seed)
        model = ConvAutoencoder(args.width, noise_var)
        result = fit(model, mse_loss, train, held,
                     FitSettings(args.epochs, args.lr, args.batch_size, args.seed, device, time_budget=budget,
                                 max_steps=DRY_RUN_STEPS if args.dry_run else None, desc=name))
        models[name] = model.cpu().eval()
        numbers["models"][name] = {
            "noise_var": noise_var, "snr_db": round(snr_db(noise_var), 2) if noise_var else None,
            "epochs": result.epochs_run, "train_seconds": round(result.seconds, 1),
            "heldout_psnr_db": heldout_psnr(model, held.x, noisy=noise_var > 0, seed=args.seed),
            "heldout_psnr_noise_free_db": heldout_psnr(model, held.x, noisy=False, seed=args.seed)}
    plain = models["plain"]
    gen = torch.Generator().manual_seed(args.seed)
    nine = held.x[torch.randperm(len(held), generator=gen)[:9]]

    # -- task 2: nine images, their reconstructions and codes ----------------------------------------
    codes9 = codes_of(plain, nine)
    figure_codes(nine, decode(plain, codes9), codes9, out / "codes.png")

    # -- task 3: a Gaussian fitted to 256 codes, nine samples (full and diagonal covariance) ---------
    fit_idx = torch.randperm(len(train), generator=gen)[:256]
    gaussians = {name: fit_gaussian(codes_of(m, train.x[fit_idx])) for name, m in models.items()}
    mean, cov = gaussians["plain"]
    figure_rows([("full Σ", decode(plain, sample_gaussian(mean, cov, 9, gen))),
                 ("diagonal Σ", decode(plain, sample_gaussian(mean, cov, 9, gen, diagonal=True)))],
                out / "gaussian_samples.png", "Task 3: codes drawn from N(μ, Σ) of 256 training codes, decoded")

    # -- task 4: the nine codes perturbed -------------------------------------------------------------
    rms = codes9.flatten(1).pow(2).mean(1).sqrt()[:, None, None, None]
    perturbed = {s: decode(plain, codes9 + s * rms * torch.randn(codes9.shape, generator=gen)) for s in PERTURB}
    rows = [("codes", decode(plain, codes9))] + [(f"σ = {s}·RMS", imgs) for s, imgs in perturbed.items()]
    figure_rows(rows, out / "perturbations.png", "Task 4: the nine codes plus Gaussian noise, decoded")
    numbers["perturbation_psnr_db"] = {str(s): float(psnr(imgs, nine).mean()) for s, imgs in perturbed.items()}

    # -- task 5: samples of each model's latent Gaussian, beside the plain model's --------------------
    rows = []
    for name, model in models.items():
        m, c = gaussians[name]
        rows.append((name, decode(model, sample_gaussian(m, c, 9, torch.Generator().manual_seed(args.seed + 5)))))
    figure_rows(rows, out / "channel_samples.png",
                "Task 5: nine draws from each model's latent Gaussian (full Σ), decoded")
    recon_rows = [("original", nine)] + [(name, decode(model, codes_of(model, nine))) for name, model in
                                         models.items()]
    figure_rows(recon_rows, out / "channel_reconstructions.png", "Task 5: held-out reconstructions (no noise)")
    numbers["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    numbers["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "device", "workers")}
    (out / "results.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print("\n| model | SNR dB | held-out PSNR dB (through the channel) | noise-free | epochs |")
    for name, r in numbers["models"].items():
        print(f"| {name} | {r['snr_db'] or '∞'} | {r['heldout_psnr_db']:.2f} | {r['heldout_psnr_noise_free_db']:.2f} "
              f"| {r['epochs']} |")
    print(f"wrote {out}/codes.png, gaussian_samples.png, perturbations.png, channel_samples.png, "
          f"channel_reconstructions.png, results.json ({numbers['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()

"""Figures written beside every checkpoint: loss curves, sample grids, reconstruction grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid, save_image

plt.switch_backend("Agg")  # no display on a CI box or a laptop over SSH

def loss_curves(history: list[dict[str, float]], path: str | Path, title: str = "") -> None:
    """One panel per loss term (train vs valid per epoch)."""
    terms = [k.removeprefix("train_") for k in history[0] if k.startswith("train_")] if history else []
    fig, axes = plt.subplots(1, max(len(terms), 1), figsize=(4 * max(len(terms), 1), 3.2), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, term in zip(axes[0], terms):
        ax.plot(epochs, [h[f"train_{term}"] for h in history], "o-", label="train")
        if f"valid_{term}" in history[0]:
            ax.plot(epochs, [h[f"valid_{term}"] for h in history], "s--", label="valid")
        ax.set_xlabel("epoch")
        ax.set_title(term)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """``[N,1,28,28]`` in [0,1] -> a ``[3,H,W]`` grid (for PNG and TensorBoard)."""
    return make_grid(images.reshape(-1, 1, 28, 28).clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(image_grid(images, nrow), path)


def reconstruction_grid(x: torch.Tensor, recon: torch.Tensor, path: str | Path, n: int = 16) -> None:
    """Two rows: originals on top, reconstructions below."""
    save_grid(torch.cat([x[:n], recon[:n]]), path, nrow=n)

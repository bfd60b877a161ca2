"""Sampling and reconstruction through the ``submission.py`` contract — shared by training, grading and plots.

Everything runs in ``eval()`` under ``torch.no_grad()`` with noise from a seeded ``torch.Generator``,
in chunks of ``CHUNK`` images: memory stays flat whatever the sample count, and the chunk is the fastest the
benchmark measured for the default decoder (docs/benchmark.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .contract import missing_members

CHUNK = 500


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def as_image_batch(out: torch.Tensor, n: int, what: str) -> torch.Tensor:
    """Check that ``decode`` returned ``n`` images of 784 pixels; return them as ``[n,1,28,28]`` on CPU."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"{what}: decode returned {type(out).__name__}, not a tensor.")
    if out.numel() != n * 784:
        raise ValueError(f"{what}: expected {n} images of 28x28 from decode, got shape {tuple(out.shape)}.")
    return out.reshape(n, 1, 28, 28).cpu()


@torch.no_grad()
def sample(model: nn.Module, labels: torch.Tensor, latent_dim: int, seed: int, chunk: int = CHUNK) -> torch.Tensor:
    """``decode(z, label)`` with ``z ~ N(0, I)`` from ``torch.Generator(seed)``; returns ``[N,1,28,28]``.

    ``labels`` go to ``decode`` positionally, as the course passes them (the VAE's decode ignores them).
    """
    return decode_noise(model, sample_noise(len(labels), latent_dim, seed), labels, chunk)


def sample_noise(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """``z ~ N(0, I)``, ``[n, latent_dim]``, from ``torch.Generator(seed)``."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def decode_noise(model: nn.Module, z: torch.Tensor, labels: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """``decode(z, labels)`` in chunks; returns ``[N,1,28,28]``."""
    model.eval()
    device = model_device(model)
    out = [as_image_batch(model.decode(z[i:i + chunk].to(device), labels[i:i + chunk].to(device)),
                          len(labels[i:i + chunk]), "samples")
           for i in range(0, len(labels), chunk)]
    return torch.cat(out) if out else torch.empty(0, 1, 28, 28)


def split_path(model: nn.Module) -> tuple[str, str]:
    """(how codes are taken, how they are decoded) for ``model``: ``forward``'s own halves, ``encode_latent`` /
    ``decode_latent``, where the model offers the kit's API (``contract.KitModel``: its ``decode`` maps noise
    through a fitted prior); else the course's own calls, ``forward(x, labels)[1]`` and ``decode(z, labels)``,
    which every template hand-in supports."""
    return ("forward", "decode") if missing_members(model) else ("encode_latent", "decode_latent")


@torch.no_grad()
def encode_means(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """``mu`` of each image ``x`` ``[N,1,28,28]`` as float32 ``[N, width]`` on CPU (the grader's encoding process).

    ``encode_latent(x, y)`` where the model has it; else ``forward(x, y)``'s second output — a template's
    ``encode`` may expect flattened input, but its ``forward`` takes what the course's trainer gives it.
    """
    model.eval()
    device = model_device(model)
    how = split_path(model)[0]
    out = []
    for i in range(0, len(x), chunk):
        xb, yb = x[i:i + chunk].to(device), y[i:i + chunk].to(device)
        codes = model.encode_latent(xb, yb) if how == "encode_latent" else model(xb, yb)[1:]
        mu = codes[0] if isinstance(codes, (tuple, list)) and codes else codes
        if not isinstance(mu, torch.Tensor) or mu.dim() != 2 or len(mu) != len(xb):
            raise ValueError(f"{how} must give mu shaped [B, latent_dim]; got "
                             f"{tuple(mu.shape) if isinstance(mu, torch.Tensor) else type(mu).__name__} "
                             f"for a batch of {len(xb)}.")
        out.append(mu.detach().float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def decode_codes(model: nn.Module, mu: torch.Tensor, y: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Codes from ``encode_means`` back to images ``[N,1,28,28]`` on CPU (the grader's decoding process):
    ``decode_latent(mu, y)`` where the model has it, else ``decode(mu, y)``."""
    model.eval()
    device = model_device(model)
    decode = model.decode_latent if split_path(model)[1] == "decode_latent" else model.decode
    out = []
    for i in range(0, len(mu), chunk):
        zb, yb = mu[i:i + chunk].to(device), y[i:i + chunk].to(device)
        out.append(as_image_batch(decode(zb, yb), len(zb), "reconstructions"))
    return torch.cat(out) if out else torch.empty(0, 1, 28, 28)


def reconstruct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = CHUNK) -> tuple[torch.Tensor, int]:
    """Images through the split path (``encode_means`` then ``decode_codes``); returns (images ``[N,1,28,28]``,
    the width of ``mu``). The code, not the input, is all the decoder gets: a model cannot pass its input through.
    """
    mu = encode_means(model, x, y, chunk)
    return decode_codes(model, mu, y, chunk), mu.shape[1]


def quantize(images: torch.Tensor) -> np.ndarray:
    """Float images in [0,1] -> uint8 ``[N,28,28]``, rounded as ``torchvision.utils.save_image`` writes PNGs."""
    x = images.detach().reshape(-1, 28, 28).float().cpu()
    return x.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()


def fast_layout(model: nn.Module) -> nn.Module:
    """Convert conv weights to channels-last in place: same outputs bit for bit on CPU, faster convs."""
    return model.to(memory_format=torch.channels_last)


def grid_labels(rows: int = 10, per_row: int = 10) -> torch.Tensor:
    """Labels for a digit grid: row ``c`` asks for digit ``c``."""
    return torch.arange(rows).repeat_interleave(per_row)

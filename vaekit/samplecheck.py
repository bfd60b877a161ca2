"""A look at a freshly trained model's samples, drawn the course's way and read by the grading classifier (seconds).

The course samples ``model.decode(torch.randn(1, d), torch.tensor(c))`` one image at a time and never asks whether a
7 came out when 7 was asked. Right after training, the train scripts draw ``PER_DIGIT`` samples per digit that way
and say in one sentence when they are not digits: for ``GenModel`` the share the classifier reads as the requested
digit, for ``VAE`` the share it cannot read with confidence (real test digits: about 1 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .classifier import load_classifier

PER_DIGIT = 30  # samples per digit: 300 in all, a second or two on a CPU
MIN_REQUESTED = 0.80  # GenModel: below this share read as the requested digit, the check speaks up
CONFIDENT = 0.9  # a sample the classifier reads with less confidence than this is "unreadable"
MAX_UNREADABLE = 0.5  # VAE: above this share of unreadable samples, the check speaks up


@dataclass(frozen=True)
class SampleCheck:
    conditional: bool
    n: int  # samples read
    requested: float  # share read as the requested digit (GenModel; for the VAE, 0 = not asked)
    unreadable: float  # share read with confidence below CONFIDENT
    advice: str | None  # one sentence when the samples are not digits, else None

    @property
    def line(self) -> str:
        what = (f"{100 * self.requested:.1f} % read as the requested digit" if self.conditional
                else f"{100 * self.unreadable:.1f} % unreadable (the classifier's confidence below {CONFIDENT:g})")
        return (f"sample check: {self.n} samples drawn as the course draws them (decode(torch.randn(1, d), "
                f"torch.tensor(c))): {what}." + (f" {self.advice}" if self.advice else ""))

    def record(self) -> dict[str, float | int | bool]:
        """What ``hyperparameters.txt`` keeps of it."""
        out: dict[str, float | int | bool] = {"samples": self.n, "unreadable": round(self.unreadable, 4)}
        if self.conditional:
            out["requested_digit"] = round(self.requested, 4)
        return {**out, "ok": self.advice is None}


def draw_course_way(model: nn.Module, latent_dim: int, per_digit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images ``[10·per_digit, 28, 28]``, their requested digits): ``decode(randn(1, d), tensor(c))`` per
    image, quantised as the course's inference saves them (``(img * 255).astype(uint8)``), from a seeded generator."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    images, labels = [], []
    model.eval()
    with torch.no_grad():
        for c in range(10):
            for _ in range(per_digit):
                z = torch.randn(1, latent_dim, generator=gen).to(device)
                img = model.decode(z, torch.tensor(c, device=device)).float().cpu().reshape(28, 28)
                images.append((img.clamp(0, 1).numpy() * 255).astype(np.uint8))
                labels.append(c)
    return np.stack(images), np.array(labels)


def advice_for(conditional: bool, share: float, var: float, prior: str) -> str | None:
    """The sentence for samples that are not digits: the likely cause and what to try; None when they are."""
    if (share >= MIN_REQUESTED) if conditional else (share <= MAX_UNREADABLE):
        return None
    what = (f"fewer than {MIN_REQUESTED:.0%} read as the digit asked for" if conditional
            else f"more than {MAX_UNREADABLE:.0%} are not readable digits")
    if prior == "fitted":  # the kit's trainer fitted the model's prior to its codes
        return f"Of these samples {what}: train longer (--epochs) or shrink the fitted prior (--prior-shrink below 1)."
    return (f"Of these samples {what}: noise from N(0, I) decodes between the digits the decoder learned; train "
            f"longer (--epochs), set --var (now {var:g}) where samples are sharpest (a small var lets the codes drift "
            "away from N(0, I), a large one blurs; the course's train.py uses 0.5), or fit a prior to the codes (the "
            "kit's models offer fit_prior).")


def check_samples(model: nn.Module, conditional: bool, latent_dim: int, var: float, prior: str, seed: int = 0,
                  per_digit: int = PER_DIGIT) -> SampleCheck:
    """Draw ``per_digit`` samples per digit the course's way and read them with the shipped classifier."""
    images, labels = draw_course_way(model, latent_dim, per_digit, seed)
    classifier, _ = load_classifier()
    with torch.no_grad():
        probs = torch.softmax(classifier(torch.from_numpy(images).float().div(255).unsqueeze(1)), 1)
    confidence, digit = probs.max(1)
    requested = float((digit.numpy() == labels).mean()) if conditional else 0.0
    unreadable = float((confidence < CONFIDENT).float().mean())
    share = requested if conditional else unreadable
    return SampleCheck(conditional, len(labels), requested, unreadable, advice_for(conditional, share, var, prior))

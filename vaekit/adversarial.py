"""Adversarial fine-tuning of a trained VAE's decoder: the same codes, sharper digits.

A Gaussian likelihood makes the decoder return the *mean* of every digit a code could stand
for, so strokes blur; a classifier's features see that blur as distance from real digits. After the VAE has
trained and its prior is fitted, the encoder and the prior are frozen and only the decoder keeps learning,
now also against a small patch discriminator (hinge loss, spectral norm — Miyato et al., 2018; a label
projection for the conditional model — Miyato & Koyama, 2018). The discriminator sees reconstructions *and*
decoded prior samples, so samples sharpen too, not only reconstructions.

The reconstruction term stays and dominates: each step the adversarial term is weighted so that its gradient
at the decoded images is ``weight`` times the reconstruction's (the adaptive weight of Esser et al., 2021,
"Taming transformers", eq. 7, taken at the decoder's output so it works for any submission's decoder).
Frozen encoder and prior mean ``encode`` and the fitted prior stay exact for the new decoder.
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from .contract import KitModel
from .data import Split
from .generation import model_device
from .settings import FitSettings
from .training_loop import FitHooks, FitResult, fit, fused_kernel

spectral_norm = nn.utils.parametrizations.spectral_norm


class PatchDiscriminator(nn.Module):
    """Images ``[B,1,28,28]`` (+ labels) -> one realness score per 8×8 patch, ``[B, 49]``.

    Two strided convs to a 7×7 map, a 3×3 conv to a score per cell; with ``num_labels`` the score adds the
    projection ``<embed(y), h>`` of the label onto each cell's features, so a sharp 3 asked to be a 7 scores low.
    """

    def __init__(self, channels: int, num_labels: int = 0):
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(1, c, 4, 2, 1)), nn.LeakyReLU(0.2),  # 28 -> 14
            spectral_norm(nn.Conv2d(c, 2 * c, 4, 2, 1)), nn.LeakyReLU(0.2),  # 14 -> 7
        )
        self.score = spectral_norm(nn.Conv2d(2 * c, 1, 3, 1, 1))
        self.embed = spectral_norm(nn.Embedding(num_labels, 2 * c)) if num_labels else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x)
        s = self.score(h)
        if self.embed is not None:
            s = s + (self.embed(y)[:, :, None, None] * h).sum(1, keepdim=True)
        return s.flatten(1)


class DecoderCritic:
    """The discriminator and its optimiser; ``step`` is its half of the game (``training_loop.Critic``).

    ``step`` decodes the batch's fakes once, with their graph: reconstructions of the real images (codes
    sampled from the frozen q(z|x)) and half as many prior samples; the discriminator learns on them detached,
    and the decoder's loss (``adversarial_loss``) then takes the same fakes from ``take_fakes``, so each step
    decodes once. ``channels``: the discriminator's width; 16 sharpened as much as 32 in less time per step.
    """

    def __init__(self, model: nn.Module, conditional: bool, *, channels: int = 16, lr: float = 4e-4,
                 seed: int = 0):
        torch.manual_seed(seed)
        self.conditional = conditional
        device = model_device(model)
        self.disc = PatchDiscriminator(channels, 10 if conditional else 0).to(device)
        self.disc.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.9), fused=fused_kernel(device))
        self._fakes: tuple[torch.Tensor, ...] | None = None

    def labels(self, y: torch.Tensor) -> torch.Tensor | None:
        return y if self.conditional else None

    def fakes(self, model: KitModel, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(decoded ``[B + B/2, 1, 28, 28]``: reconstructions then prior samples, their labels, mu, logvar)."""
        mu, logvar = frozen_codes(model, x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if model.training else mu
        half = y[: (len(y) + 1) // 2]
        group = half if self.conditional else torch.zeros_like(half)
        z_prior = model.prior.to_latent(torch.randn(len(half), mu.shape[1], device=mu.device), group)
        labels = torch.cat([y, half])
        return model.decode_latent(torch.cat([z, z_prior]), labels), labels, mu, logvar

    def take_fakes(self, model: KitModel, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The fakes ``step`` decoded for this batch (fresh ones outside training, e.g. in validation)."""
        fakes, self._fakes = self._fakes, None
        return fakes if fakes is not None and torch.is_grad_enabled() else self.fakes(model, x, y)

    def step(self, model: KitModel, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self._fakes = self.fakes(model, x, y)
        fake, labels = self._fakes[:2]
        real_score = self.disc(x, self.labels(y))
        fake_score = self.disc(fake.detach(), self.labels(labels))
        loss = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()  # hinge
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "real": real_score.mean().detach(), "fake": fake_score.mean().detach()}

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt"])


@torch.no_grad()
def frozen_codes(model: KitModel, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z|x) of the frozen encoder, always in eval mode (its batch-norm statistics stay as trained)."""
    model.encoder.eval()
    return model.encode_latent(x, y)


def adversarial_loss(sub: ModuleType, critic: DecoderCritic, *, weight: float, var: float):
    """``loss_fn(model, x, y)`` for the decoder: the submission's reconstruction term (``vae_loss_terms``'s
    ``recon``) plus the adaptively weighted hinge generator loss. In validation (no grad) the first alone."""

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        fake, labels, mu, logvar = critic.take_fakes(model, x, y)
        recon = sub.vae_loss_terms(fake[:len(x)], x, mu, logvar, var=var)["recon"]
        if not torch.is_grad_enabled():
            return {"loss": recon, "recon": recon}
        adv = -critic.disc(fake, critic.labels(labels)).mean()
        # Both gradients at the decoded images; the adversarial one scaled to `weight` times the reconstruction's.
        g_rec, = torch.autograd.grad(recon, fake, retain_graph=True)
        g_adv, = torch.autograd.grad(adv, fake, retain_graph=True)
        scale = (weight * g_rec.norm() / (g_adv.norm() + 1e-8)).detach()
        # A surrogate whose gradient is g_rec + scale·g_adv (one discriminator backward, not two) and whose
        # value is the loss it stands for.
        surrogate = (fake * (g_rec + scale * g_adv)).sum()
        total = recon + scale * adv
        return {"loss": total.detach() + (surrogate - surrogate.detach()), "recon": recon.detach(), "adv": adv.detach(),
                "adv_scale": scale}

    return loss_fn


def sharpen_decoder(model: KitModel, sub: ModuleType, train: Split, valid: Split, settings: FitSettings, *,
                    conditional: bool, weight: float, var: float, hooks: FitHooks | None = None) -> FitResult:
    """Fine-tune ``model``'s decoder adversarially with encoder and prior frozen; returns the run's record.
    ``settings``: the sharpening's epochs, learning rate and limits (its seed is offset from training's; it keeps
    the last epoch, as a game's validation loss ranks nothing).

    ``model`` is a ``KitModel`` with a fitted prior and ``sub`` defines ``vae_loss_terms``: the trainer runs this
    only where ``contract.check``'s ``Extras`` say so.
    """
    in_decoder = {id(p) for p in model.decoder.parameters()}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in in_decoder]
    for p in frozen:
        p.requires_grad_(False)
    critic = DecoderCritic(model, conditional, seed=settings.seed)
    try:
        return fit(model, adversarial_loss(sub, critic, weight=weight, var=var), train, valid,
                   replace(settings, seed=settings.seed + 1, keep="last", desc="sharpen", fused=True),
                   replace(hooks or FitHooks(), critic=critic))
    finally:
        for p in frozen:
            p.requires_grad_(True)


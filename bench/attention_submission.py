"""A self-attention VAE / CVAE for the report's architecture comparison (MLP vs conv vs attention).

Self-contained (imports only torch), with the same contract as ``submission.py``: a conv stem turns
the image into 7x7 = 49 tokens, two Transformer
encoder layers mix them globally, and the decoder mirrors it. Train it with
``python train_vae.py --submission bench/attention_submission.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def vae_loss(recon_x, x, mu, logvar, var: float = 0.01) -> torch.Tensor:
    """The course's negative ELBO: KL + ||x - recon||² / (2·var), summed over pixels, mean over the batch."""
    return vae_loss_terms(recon_x, x, mu, logvar, var)["loss"]


def vae_loss_terms(recon_x, x, mu, logvar, var: float = 0.01) -> dict[str, torch.Tensor]:
    """``vae_loss``'s named terms."""
    recon = (recon_x.reshape(len(x), -1) - x.reshape(len(x), -1)).pow(2).sum() / (2 * var) / len(x)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
    return {"loss": recon + kl, "recon": recon, "kl": kl}


class VAE(nn.Module):
    label_dims = 0

    def __init__(self, latent_dim: int = 16, *, channels: int = 64, hidden: int = 256):
        super().__init__()
        self.latent_dim, self.c = latent_dim, channels
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 4, 2, 1), nn.GELU(),
                                  nn.Conv2d(channels, channels, 4, 2, 1))  # 28 -> 7
        self.pos = nn.Parameter(torch.zeros(1, 49, channels))
        layer = dict(d_model=channels, nhead=4, dim_feedforward=2 * channels, batch_first=True, norm_first=True)
        self.enc_attn = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), 2, enable_nested_tensor=False)
        self.to_stats = nn.Linear(49 * channels + self.label_dims, 2 * latent_dim)
        self.from_z = nn.Linear(latent_dim + self.label_dims, 49 * channels)
        self.dec_attn = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), 2, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1), nn.GELU(),
                                  nn.ConvTranspose2d(channels // 2, 1, 4, 2, 1))

    def _cond(self, h: torch.Tensor, label) -> torch.Tensor:
        return h

    def encode(self, x: torch.Tensor, label=None) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.stem(x.reshape(-1, 1, 28, 28).float()).flatten(2).transpose(1, 2) + self.pos
        h = self.enc_attn(tokens).flatten(1)
        mu, logvar = self.to_stats(self._cond(h, label)).chunk(2, dim=1)
        return mu, logvar

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu

    def decode(self, z: torch.Tensor, label=None) -> torch.Tensor:
        z = z.reshape(-1, self.latent_dim).float()
        tokens = self.from_z(self._cond(z, label)).view(-1, 49, self.c) + self.pos
        h = self.dec_attn(tokens).transpose(1, 2).reshape(-1, self.c, 7, 7)
        return torch.sigmoid(self.head(h))

    def forward(self, x: torch.Tensor, label=None):
        mu, logvar = self.encode(x, label)
        return self.decode(self.reparameterize(mu, logvar), label), mu, logvar


class GenModel(VAE):
    label_dims = 10

    def _cond(self, h: torch.Tensor, label) -> torch.Tensor:
        y = torch.as_tensor(label, device=h.device).long().reshape(-1).expand(len(h))
        return torch.cat([h, F.one_hot(y, 10).float()], dim=1)

"""The textbook MLP VAE and CVAE (784-400-20, as in pytorch/examples' vae/main.py): the bench's yardstick
and the honest reference the fair score is calibrated on.

A self-contained submission file (imports only torch, like a student's), so the same train scripts
(``--submission bench/mlp_submission.py``) and the same ``grade.py`` handle it. Its likelihood is Bernoulli
(binary cross-entropy), as in pytorch/examples: ``var`` is accepted, as the course's trainer passes it, and unused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VAE(nn.Module):
    """784 -> 400 -> (mu, logvar) of size latent_dim; z -> 400 -> 784 (sigmoid)."""

    label_dims = 0  # the CVAE appends a one-hot label to both inputs

    def __init__(self, latent_dim: int = 20, *, hidden: int = 400):
        super().__init__()
        self.latent_dim = latent_dim
        self.fc1 = nn.Linear(784 + self.label_dims, hidden)
        self.fc_mu = nn.Linear(hidden, latent_dim)
        self.fc_logvar = nn.Linear(hidden, latent_dim)
        self.fc3 = nn.Linear(latent_dim + self.label_dims, hidden)
        self.fc4 = nn.Linear(hidden, 784)

    def _cond(self, h: torch.Tensor, label) -> torch.Tensor:
        return h

    def encode(self, x: torch.Tensor, label=None) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(self._cond(x.reshape(-1, 784).float(), label)))
        return self.fc_mu(h), self.fc_logvar(h)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu

    def decode(self, z: torch.Tensor, label=None) -> torch.Tensor:
        z = z.reshape(-1, self.latent_dim).float()
        return torch.sigmoid(self.fc4(F.relu(self.fc3(self._cond(z, label))))).reshape(-1, 1, 28, 28)

    def forward(self, x: torch.Tensor, label=None):
        mu, logvar = self.encode(x, label)
        return self.decode(self.reparameterize(mu, logvar), label), mu, logvar


class GenModel(VAE):
    """The same MLP with the one-hot label concatenated to the encoder's and the decoder's input."""

    label_dims = 10

    def _cond(self, h: torch.Tensor, label) -> torch.Tensor:
        y = torch.as_tensor(label, device=h.device).long().reshape(-1).expand(len(h))
        return torch.cat([h, F.one_hot(y, 10).float()], dim=1)


def vae_loss(recon_x, x, mu, logvar, var: float = 0.5) -> torch.Tensor:
    """Negative ELBO summed over pixels and latent dims, mean over the batch (Kingma & Welling, 2014)."""
    return vae_loss_terms(recon_x, x, mu, logvar, var)["loss"]


def vae_loss_terms(recon_x, x, mu, logvar, var: float = 0.5) -> dict[str, torch.Tensor]:
    """``vae_loss``'s named terms: binary cross-entropy and KL."""
    recon = F.binary_cross_entropy(recon_x.reshape(len(x), -1), x.reshape(len(x), -1), reduction="sum") / len(x)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
    return {"loss": recon + kl, "recon": recon, "kl": kl}

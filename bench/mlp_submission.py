"""The canonical MLP VAE and CVAE (784-400-20, as in pytorch/examples' vae/main.py): the bench's yardstick.

A self-contained submission file with the same contract as ``submission.py``, so the same train scripts
(``--submission bench/mlp_submission.py --likelihood bernoulli``) and the same ``grade.py`` handle it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from submission import VAE as ConvVAE
from submission import as_images, as_labels, vae_loss  # noqa: F401 - vae_loss is part of the contract


class VAE(nn.Module):
    """784 -> 400 -> (mu, logvar) of size latent_dim; z -> 400 -> 784 (sigmoid)."""

    def __init__(self, latent_dim: int = 20, *, hidden: int = 400):
        super().__init__()
        self.latent_dim = latent_dim
        self.fc1 = nn.Linear(784 + self.label_dims, hidden)
        self.fc_mu = nn.Linear(hidden, latent_dim)
        self.fc_logvar = nn.Linear(hidden, latent_dim)
        self.fc3 = nn.Linear(latent_dim + self.label_dims, hidden)
        self.fc4 = nn.Linear(hidden, 784)

    label_dims = 0

    def _cond(self, h: torch.Tensor, label) -> torch.Tensor:
        return h

    def encode(self, x: torch.Tensor, label=None) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(self._cond(as_images(x).reshape(-1, 784), label)))
        return self.fc_mu(h), self.fc_logvar(h)

    reparameterize = ConvVAE.reparameterize

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
        y = as_labels(label, h.shape[0], h.device)
        return torch.cat([h, F.one_hot(y, 10).float()], dim=1)

"""A hand-in written to the course's template: a small convolutional VAE and CVAE.

``forward`` takes ``[B,1,28,28]`` and returns ``[B,1,28,28]``; ``decode(z, labels)`` accepts a 0-dim label
(it expands it to the batch); ``reparameterize`` samples even in eval mode.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _onehot(labels, n):
    return F.one_hot(labels.reshape(-1).expand(n), 10).float()


class VAE(nn.Module):
    num_classes = 0

    def __init__(self, latent_dim=20, channels=8):
        super().__init__()
        self.latent_dim, self.c = latent_dim, channels
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 4, 2, 1), nn.ReLU(),
                                  nn.Conv2d(channels, 2 * channels, 4, 2, 1), nn.ReLU(), nn.Flatten())
        self.fc_mu = nn.Linear(2 * channels * 49 + self.num_classes, latent_dim)
        self.fc_var = nn.Linear(2 * channels * 49 + self.num_classes, latent_dim)
        self.fc_dec = nn.Linear(latent_dim + self.num_classes, 2 * channels * 49)
        self.deconv = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1), nn.ReLU(),
                                    nn.ConvTranspose2d(channels, 1, 4, 2, 1), nn.Sigmoid())

    def _cond(self, h, labels):
        return h

    def encode(self, x, labels=None):
        h = self._cond(self.conv(x), labels)
        return self.fc_mu(h), self.fc_var(h)

    def reparameterize(self, mu, log_var):
        return mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)

    def decode(self, z, labels):
        h = self.fc_dec(self._cond(z, labels)).view(-1, 2 * self.c, 7, 7)
        return self.deconv(h)

    def forward(self, x, labels):
        mu, log_var = self.encode(x, labels)
        return self.decode(self.reparameterize(mu, log_var), labels), mu, log_var


class GenModel(VAE):
    num_classes = 10

    def _cond(self, h, labels):
        return torch.cat([h, _onehot(labels, len(h))], 1)


def vae_loss(recon_x, x, mu, log_var, var=0.5):
    recon = F.mse_loss(recon_x.view(x.size(0), -1), x.view(x.size(0), -1), reduction="sum") / (2 * var)
    kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
    return (recon + kl) / x.size(0)

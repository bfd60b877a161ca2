"""A hand-in written to the course's template: an MLP VAE and CVAE, as students write them.

Its ``encode`` takes flattened ``[B, 784]`` input (``forward`` flattens), ``decode(z, labels)`` requires its
labels, ``reparameterize`` samples even in eval mode, and ``GenModel.decode`` concatenates a one-hot of its
labels to ``z`` — which fails for the 0-dim label the course's own inference passes.
"""

import torch
import torch.nn.functional as F
from torch import nn


class VAE(nn.Module):
    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def encode(self, x):
        h = F.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def reparameterize(self, mu, log_var):
        std = torch.exp(0.5 * log_var)
        return mu + torch.randn_like(std) * std

    def decode(self, z, labels):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x, labels):
        mu, log_var = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, log_var)
        return self.decode(z, labels), mu, log_var


class GenModel(nn.Module):
    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, num_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(input_dim + num_classes, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim + num_classes, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def encode(self, x, labels):
        h = F.relu(self.fc1(torch.cat([x, F.one_hot(labels, 10).float()], 1)))
        return self.fc21(h), self.fc22(h)

    def reparameterize(self, mu, log_var):
        std = torch.exp(0.5 * log_var)
        return mu + torch.randn_like(std) * std

    def decode(self, z, labels):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(torch.cat([z, F.one_hot(labels, 10).float()], 1)))))

    def forward(self, x, labels):
        mu, log_var = self.encode(x.view(-1, 784), labels)
        z = self.reparameterize(mu, log_var)
        return self.decode(z, labels), mu, log_var


def vae_loss(recon_x, x, mu, log_var, var=0.5):
    recon = ((recon_x - x.view(-1, 784)) ** 2).sum() / (2 * var)
    kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
    return (recon + kl) / x.size(0)

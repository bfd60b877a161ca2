"""A template-shaped hand-in as students write it: MLP VAE and a one-hot MLP CVAE (its one-hot takes a 0-dim label
too), and the course's ``vae_loss(..., var=0.5)``: a Gaussian likelihood summed over pixels, averaged over the batch."""

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
        return mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)

    def decode(self, z, labels):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x, labels):
        mu, log_var = self.encode(x.view(-1, 784))
        return self.decode(self.reparameterize(mu, log_var), labels), mu, log_var


class GenModel(nn.Module):
    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, num_classes=10):
        super().__init__()
        self.num_classes = num_classes
        self.fc1 = nn.Linear(input_dim + num_classes, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim + num_classes, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def onehot(self, labels):
        return F.one_hot(labels.view(-1).long(), self.num_classes).float()

    def encode(self, x, labels):
        h = F.relu(self.fc1(torch.cat([x, self.onehot(labels)], 1)))
        return self.fc21(h), self.fc22(h)

    def reparameterize(self, mu, log_var):
        return mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)

    def decode(self, z, labels):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(torch.cat([z, self.onehot(labels)], 1)))))

    def forward(self, x, labels):
        mu, log_var = self.encode(x.view(-1, 784), labels)
        return self.decode(self.reparameterize(mu, log_var), labels), mu, log_var


def vae_loss(recon_x, x, mu, log_var, var=0.5):
    recon = ((recon_x - x.view(-1, 784)) ** 2).sum() / (2 * var)
    kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
    return (recon + kl) / x.size(0)

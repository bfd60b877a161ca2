"""A conditional GAN as a course submission: the generator is ``decode``, an inversion encoder is ``encode``.

Self-contained (imports only torch) and with the ``submission.py`` contract, so ``grade.py`` grades it like
any student's file: ``labs/cgan.py`` copies it next to the trained ``Genwithlabel/`` folder as
``submission.py``. ``Discriminator`` is here too but is not part of ``GenModel``: the graded checkpoint
holds only what sampling and reconstruction need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

NUM_CLASSES = 10
CHANNELS = 32  # conv width; labs/cgan.py writes the value it trained with here (the course builds from latent_dim)


def as_images(x: torch.Tensor) -> torch.Tensor:
    """Accept ``[B,28,28]``, ``[B,1,28,28]`` or ``[B,784]``; return float ``[B,1,28,28]``."""
    if x.dim() == 0 or x.numel() % 784 != 0 or x.shape[-1] not in (28, 784):
        raise ValueError(f"expected images shaped [B,28,28], [B,1,28,28] or [B,784]; got {tuple(x.shape)}.")
    return x.float().reshape(-1, 1, 28, 28)


def onehot(label: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    """One-hot ``[B,10]``; a 0-dim label is repeated for the whole batch."""
    label = torch.as_tensor(label, device=device).long()
    label = label.expand(batch) if label.dim() == 0 else label.reshape(-1)
    if label.numel() != batch:
        raise ValueError(f"got {label.numel()} labels for a batch of {batch}.")
    if label.numel() and (label.min() < 0 or label.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be digits 0-{NUM_CLASSES - 1}.")
    return F.one_hot(label, NUM_CLASSES).float()


class Generator(nn.Module):
    """DCGAN generator: (z, one-hot y) -> 2c×7×7 -> c×14×14 -> 1×28×28 in [0, 1]."""

    def __init__(self, latent_dim: int, channels: int):
        super().__init__()
        c = channels
        self.c = c
        self.fc = nn.Sequential(nn.Linear(latent_dim + NUM_CLASSES, 2 * c * 49), nn.BatchNorm1d(2 * c * 49),
                                nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(),  # 7 -> 14
            nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Sigmoid(),  # 14 -> 28
        )

    def forward(self, z: torch.Tensor, y1h: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(torch.cat([z, y1h], 1)).view(-1, 2 * self.c, 7, 7))


class Discriminator(nn.Module):
    """Two strided convolutions, then on the flattened c·2×7×7 features: a realness score with a projection of
    the label (Miyato & Koyama, 2018), ``w·h + ⟨embed(y), h⟩``, and an auxiliary digit classifier (AC-GAN,
    Odena et al., 2017) trained on real images only, which teaches the generator the labels within the
    first epochs. Flattening keeps where the strokes are; a global pooling here cost most of the labels.

    ``forward`` returns (realness ``[B]``, digit logits ``[B,10]``). ``spectral=True`` wraps the realness
    path in spectral normalisation (a Lipschitz bound; on this small network it makes the discriminator too
    weak to teach the generator, so the default is plain layers).
    """

    def __init__(self, channels: int, spectral: bool = False):
        super().__init__()
        sn = spectral_norm if spectral else (lambda m: m)
        c = channels
        self.features = nn.Sequential(
            sn(nn.Conv2d(1, c, 4, 2, 1)), nn.LeakyReLU(0.2),  # 28 -> 14
            sn(nn.Conv2d(c, 2 * c, 4, 2, 1)), nn.LeakyReLU(0.2),  # 14 -> 7
            nn.Flatten(),
        )
        self.out = sn(nn.Linear(2 * c * 49, 1))
        self.embed = sn(nn.Embedding(NUM_CLASSES, 2 * c * 49))
        self.classify = nn.Linear(2 * c * 49, NUM_CLASSES)  # never spectral: a bound would cap the logits

    def critic_parameters(self) -> list[nn.Parameter]:
        """The parameters of the realness score (what WGAN's weight clipping bounds), not the classifier's."""
        return [p for name, p in self.named_parameters() if not name.startswith("classify.")]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.out(h).squeeze(1) + (self.embed(y) * h).sum(1), self.classify(h)


class InversionEncoder(nn.Module):
    """(image, one-hot y) -> the z that the generator maps closest to the image."""

    def __init__(self, latent_dim: int, channels: int):
        super().__init__()
        c = channels // 2
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(2 * c * 49 + NUM_CLASSES, 256), nn.LeakyReLU(0.2),
                                nn.Linear(256, latent_dim))

    def forward(self, x: torch.Tensor, y1h: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.features(x), y1h], 1))


class GenModel(nn.Module):
    """Conditional GAN generator plus an encoder fitted afterwards to invert it (for the course's
    reconstruction scores). ``decode(z ~ N(0, I), y)`` samples; ``encode`` is deterministic."""

    def __init__(self, latent_dim: int = 16, *, channels: int = CHANNELS):
        super().__init__()
        self.latent_dim = latent_dim
        self.generator = Generator(latent_dim, channels)
        self.encoder = InversionEncoder(latent_dim, channels)

    def encode(self, x: torch.Tensor, label) -> tuple[torch.Tensor, torch.Tensor]:
        """Images, labels -> (z, logvar); the inversion is a point estimate, so logvar is a constant log(1e-4)."""
        x = as_images(x)
        mu = self.encoder(x, onehot(label, x.shape[0], x.device))
        return mu, torch.full_like(mu, -9.21)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu

    def decode(self, z: torch.Tensor, label) -> torch.Tensor:
        """Noise ``z ~ N(0, I)`` ``[B, latent_dim]`` and labels -> images ``[B,1,28,28]`` in [0, 1]."""
        z = z.reshape(-1, self.latent_dim).float()
        return self.generator(z, onehot(label, z.shape[0], z.device))

    def forward(self, x: torch.Tensor, label):
        mu, logvar = self.encode(x, label)
        return self.decode(mu, label), mu, logvar

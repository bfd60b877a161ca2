"""Models and loss for the MNIST VAE coursework: the only file you edit.

The course calls this file in four ways, and only these:

    model = VAE(latent_dim=d)            # or GenModel(latent_dim=d); every other size is a default
    recon_x, mu, log_var = model(images, labels)   # float [B,1,28,28] in [0, 1], int64 [B]
    loss = vae_loss(recon_x, images, mu, log_var, var=var); loss.backward()   # one scalar tensor
    image = model.decode(torch.randn(1, d), torch.tensor(c)).view(28, 28)     # in [0, 1]

It imports only torch: the course's grader receives it alone. The titled sections after the loss are the
kit's optional extras (named loss terms to log, a prior fitted after training); the course never calls them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10


class VAE(nn.Module):
    """Convolutional VAE (Kingma & Welling, 2014), trained against the prior N(0, I).

    After training, the kit's trainer replaces N(0, I) by a mixture of ``components`` Gaussians fitted to the
    training codes (``fit_prior``); ``decode`` maps standard-normal noise through it, so the course's
    ``decode(torch.randn(1, d))`` samples where the decoder was trained instead of the holes between digits.
    """

    num_labels = 0  # the one-hot label width the networks take: none here, 10 for GenModel

    def __init__(self, latent_dim: int = 32, *, channels: int = 32, hidden: int = 256, components: int = 400):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(latent_dim, channels, hidden, self.num_labels)
        self.decoder = ConvDecoder(latent_dim, channels, hidden, self.num_labels)
        self.prior = FittedPrior(max(self.num_labels, 1), latent_dim, components)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        """Images -> (recon ``[B,1,28,28]``, mu, log_var), mu and log_var of q(z|x) ``[B, latent_dim]``."""
        mu, logvar = self.encode_latent(x, labels)
        return self.decode_latent(self.reparameterize(mu, logvar), labels), mu, logvar

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps while training; the mean in eval mode, so reconstructions are deterministic."""
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Noise ``z ~ N(0, I)`` ``[B, latent_dim]`` -> images ``[B,1,28,28]`` in [0, 1], through the prior."""
        z = z.reshape(-1, self.latent_dim).float()
        return self.decode_latent(self.prior.to_latent(z, self.group(labels, len(z), z.device)), labels)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (mu, log_var) in ``decode``'s noise coordinates: ``decode(encode(x)[0])`` reconstructs x."""
        mu, logvar = self.encode_latent(x, labels)
        return self.prior.to_noise(mu, logvar, self.group(labels, len(mu), mu.device))

    # -- the kit's trainer API (optional: see vaekit.contract.KitModel) ---------------------------------------
    def encode_latent(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (mu, log_var) of q(z|x) in the decoder's own z coordinates: ``forward``'s first half."""
        x = as_images(x)
        return self.encoder(x, self.onehot(labels, len(x), x.device))

    def decode_latent(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z in the decoder's own coordinates ``[B, latent_dim]`` -> images: ``forward``'s second half."""
        z = z.reshape(-1, self.latent_dim).float()
        return self.decoder(z, self.onehot(labels, len(z), z.device))

    def fit_prior(self, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor | None = None,
                  **options: float) -> None:
        """Fit the prior to the training codes from ``encode_latent``; ``options``: see ``FittedPrior.fit``."""
        self.prior.fit(mu, logvar, self.group(labels, len(mu), mu.device), **options)

    def group(self, labels, n: int, device: torch.device) -> torch.Tensor:
        """Which of the prior's mixtures each of ``n`` codes belongs to: one for the VAE, one per digit."""
        if not self.num_labels:
            return torch.zeros(n, dtype=torch.long, device=device)
        if labels is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass each image's digit label.")
        return as_labels(labels, n, device)

    def onehot(self, labels, n: int, device: torch.device) -> torch.Tensor | None:
        """The networks' label input ``[n, num_labels]`` (None for the unconditional VAE)."""
        return F.one_hot(self.group(labels, n, device), self.num_labels).float() if self.num_labels else None


class GenModel(VAE):
    """Conditional VAE: the digit's one-hot label enters the encoder and the decoder, and the prior is one
    fitted mixture per digit, so ``decode(torch.randn(1, d), torch.tensor(7))`` draws a 7."""

    num_labels = NUM_CLASSES

    def __init__(self, latent_dim: int = 16, *, channels: int = 32, hidden: int = 256, components: int = 30):
        super().__init__(latent_dim, channels=channels, hidden=hidden, components=components)


class ConvEncoder(nn.Module):
    """``[B,1,28,28]`` (+ optional one-hot label) -> (mu, logvar), each ``[B, latent_dim]``."""

    def __init__(self, latent_dim: int, channels: int, hidden: int, num_labels: int = 0):
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2),  # 28 -> 14
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2),  # 14 -> 7
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(2 * c * 49 + num_labels, hidden), nn.LeakyReLU(0.2))
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor, onehot: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=1)
        h = self.fc(h)
        return self.mu(h), self.logvar(h)


class ConvDecoder(nn.Module):
    """``[B, latent_dim]`` (+ optional one-hot label) -> images ``[B,1,28,28]`` in [0, 1]."""

    def __init__(self, latent_dim: int, channels: int, hidden: int, num_labels: int = 0):
        super().__init__()
        c = channels
        self.c = c
        self.fc = nn.Sequential(
            nn.Linear(latent_dim + num_labels, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * c * 49), nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(),  # 7 -> 14
            nn.ConvTranspose2d(c, 1, 4, 2, 1),  # 14 -> 28
        )

    def forward(self, z: torch.Tensor, onehot: torch.Tensor | None = None) -> torch.Tensor:
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)
        return torch.sigmoid(self.deconv(self.fc(z).view(-1, 2 * self.c, 7, 7)))


def vae_loss(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
             var: float) -> torch.Tensor:
    """The negative ELBO, one scalar tensor: ``reconstruction_term + kl_term``. ``var`` has no default here: the
    trainer passes the one each model is tuned for (a default written here would be used for both models)."""
    return reconstruction_term(recon_x, x, var) + kl_term(mu, log_var)


def reconstruction_term(recon_x: torch.Tensor, x: torch.Tensor, var: float = 0.01) -> torch.Tensor:
    """-log p(x|z) of a Gaussian likelihood with variance ``var``, constants dropped: ``||x - recon_x||² / (2·var)``
    summed over pixels, averaged over the batch."""
    recon_x, x = as_images(recon_x), as_images(x)
    if var <= 0:
        raise ValueError(f"var must be positive, got {var}.")
    return (recon_x - x).pow(2).sum() / (2 * var) / x.shape[0]


def kl_term(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) in closed form, ``-½ Σ (1 + log_var - mu² - exp(log_var))`` (Kingma & Welling, 2014,
    App. B), summed over latent dims, averaged over the batch."""
    return -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp()) / mu.shape[0]


def gaussian_kl(mu1: float, var1: float, mu2: float, var2: float) -> float:
    """KL(N(mu1, var1) || N(mu2, var2)) for 1-D Gaussians, the closed form proved in the report."""
    return 0.5 * (math.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1)


# =================================================================================================================
# The kit's extras: the named loss terms its trainer logs (``vae_loss`` is their sum).
# =================================================================================================================


def vae_loss_terms(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
                   var: float = 0.01) -> dict[str, torch.Tensor]:
    """``{"loss", "recon", "kl"}``: ``vae_loss`` and its two terms."""
    recon, kl = reconstruction_term(recon_x, x, var), kl_term(mu, log_var)
    return {"loss": recon + kl, "recon": recon, "kl": kl}


# =================================================================================================================
# The kit's extras: the fitted prior. After training, the train scripts call ``fit_prior`` with the codes from
# ``encode_latent``; ``decode`` / ``encode`` then map noise to and from the fitted mixture. Nothing above needs
# reading this to use the models.
# =================================================================================================================


class FittedPrior(nn.Module):
    """Gaussian-mixture priors over z, one mixture per group (one group, or one per digit).

    Group g's prior is ``Σ_k weight[g,k]·N(mean[g,k], L L^T)`` with ``L = chol[g,k]``. It starts as N(0, I) and
    is fitted to the encoder's codes after training (``fit``), so samples come from where the decoder was
    trained. ``to_latent`` maps standard-normal noise to z *exactly*: the first noise coordinate picks the
    component (through its CDF) and is then stretched back to a fresh N(0, 1) draw, so the other coordinates
    and the within-component noise stay standard normal. ``to_noise`` inverts it for the encoder's codes, so
    decoding ``to_noise(encode(x))`` reconstructs x.
    """

    def __init__(self, groups: int, latent_dim: int, components: int = 1):
        super().__init__()
        self.latent_dim, self.components = latent_dim, components
        g, k, d = groups, components, latent_dim
        self.register_buffer("weight", torch.full((g, k), 1.0 / k))
        self.register_buffer("mean", torch.zeros(g, k, d))
        self.register_buffer("chol", torch.eye(d).expand(g, k, d, d).clone())

    def _segments(self, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each component's share of [0, 1]: (lower end, width), ``[B, K]`` in float64."""
        w = self.weight[group].double()
        return w.cumsum(-1) - w, w

    def to_latent(self, eps: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        k = torch.zeros_like(group)
        if self.components > 1:
            lo, w = self._segments(group)
            u = torch.special.ndtr(eps[:, 0].double())
            k = ((u.unsqueeze(1) >= lo) & (w > 0)).long().cumsum(1).argmax(1)  # last segment starting below u
            lo_k, w_k = lo.gather(1, k[:, None])[:, 0], w.gather(1, k[:, None])[:, 0]
            eps0 = torch.special.ndtri(((u - lo_k) / w_k).clamp(1e-12, 1 - 1e-12))
            eps = torch.cat([eps0.to(eps.dtype)[:, None], eps[:, 1:]], 1)
        return self.mean[group, k] + (self.chol[group, k] @ eps.unsqueeze(-1)).squeeze(-1)

    def to_noise(self, mu: torch.Tensor, logvar: torch.Tensor, group: torch.Tensor):
        linv = torch.linalg.inv(self.chol)[group]  # [B, K, d, d]
        white = (linv @ (mu.unsqueeze(1) - self.mean[group]).unsqueeze(-1)).squeeze(-1)  # [B, K, d]
        # The most likely component (log-density up to a shared constant) holds each code.
        logp = self.weight[group].log() - 0.5 * white.pow(2).sum(-1) + linv.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        k = logp.argmax(1)
        eps = white[torch.arange(len(mu)), k]
        # Only the diagonal of L⁻¹ diag(σ²) L⁻ᵀ is kept: logvar is reported, never used for decoding.
        out_logvar = (linv[torch.arange(len(mu)), k].pow(2) * logvar.exp().unsqueeze(1)).sum(-1).log()
        if self.components > 1:
            lo, w = self._segments(group)
            lo_k, w_k = lo.gather(1, k[:, None])[:, 0], w.gather(1, k[:, None])[:, 0]
            e0 = eps[:, 0].double()
            z0 = torch.special.ndtri((lo_k + w_k * torch.special.ndtr(e0)).clamp(1e-12, 1 - 1e-12))
            # d z0 / d e0 = w·φ(e0)/φ(z0): the variance of coordinate 0 scales by its square.
            out_logvar[:, 0] += (2 * w_k.log() + z0.pow(2) - e0.pow(2)).to(mu.dtype)
            eps = torch.cat([z0.to(mu.dtype)[:, None], eps[:, 1:]], 1)
        return eps, out_logvar

    @torch.no_grad()
    def fit(self, mu: torch.Tensor, logvar: torch.Tensor, group: torch.Tensor, shrink: float = 1.0,
            volume_quantile: float = 0.3) -> None:
        """Fit each group's mixture to the aggregate posterior of its codes ``[N, latent_dim]``.

        The codes are split into ``components`` clusters by k-means; each cluster's Gaussian takes the
        covariance of its means plus their mean posterior variance (the moments of that mixture of
        posteriors), its weight the cluster's share. ``shrink`` scales the standard deviations (< 1 trades
        diversity for fidelity). No component keeps a volume (``det L``) above the ``volume_quantile``
        quantile of its group's: the widest clusters gather a few odd codes spread thin, and a Gaussian over
        them fills the space between them with malformed digits (1 turns this off).
        """
        eye = torch.eye(self.latent_dim, device=mu.device, dtype=torch.float64)
        for g in range(len(self.mean)):
            sel = group == g
            if sel.sum() < 2:
                raise ValueError(f"fitting the prior needs at least two codes in group {g}.")
            m, v = mu[sel].double(), logvar[sel].double().exp()
            # Two codes per cluster at least (a dry run's few codes fill fewer; the rest keep weight 0).
            cluster = kmeans(m, min(self.components, len(m) // 2))
            for k in range(self.components):
                mk, vk = m[cluster == k], v[cluster == k]
                if len(mk) == 0:  # never sampled, never chosen by to_noise
                    self.weight[g, k], self.mean[g, k], self.chol[g, k] = 0.0, 0.0, eye.float()
                    continue
                cov = (torch.cov(mk.T) if len(mk) > 1 else 0 * eye) + torch.diag(vk.mean(0)) + 1e-6 * eye
                self.weight[g, k] = len(mk) / len(m)
                self.mean[g, k] = mk.mean(0).float()
                self.chol[g, k] = (torch.linalg.cholesky(cov) * shrink).float()
            used = self.weight[g] > 0
            if volume_quantile < 1 and used.sum() > 1:
                logdet = self.chol[g].diagonal(dim1=-2, dim2=-1).log().sum(-1)
                cap = torch.quantile(logdet[used], volume_quantile)
                scale = torch.exp((cap - logdet).clamp(max=0) / self.latent_dim)  # ≤ 1, equal in every direction
                self.chol[g] *= torch.where(used, scale, torch.ones_like(scale))[:, None, None]


def kmeans(x: torch.Tensor, k: int, iters: int = 30, seed: int = 0) -> torch.Tensor:
    """Cluster index ``[N]`` of each row of ``x`` (Lloyd's algorithm; an emptied cluster restarts at the point
    farthest from its centre, so every cluster keeps at least one member)."""
    if k == 1:
        return torch.zeros(len(x), dtype=torch.long, device=x.device)
    gen = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=gen)[:k].to(x.device)].clone()
    for _ in range(iters):
        dist = torch.cdist(x, centres)
        assign = dist.argmin(1)
        counts = torch.bincount(assign, minlength=k)
        for empty in torch.nonzero(counts == 0).flatten():
            far = dist.min(1).values.argmax()
            assign[far] = empty
            dist[far] = 0
        counts = torch.bincount(assign, minlength=k).clamp(min=1).unsqueeze(1)
        centres = torch.zeros_like(centres).index_add_(0, assign, x) / counts
    return assign


# =================================================================================================================
# Input helpers: the shapes the course's calls may pass.
# =================================================================================================================


def as_images(x: torch.Tensor) -> torch.Tensor:
    """Accept ``[B,28,28]``, ``[B,1,28,28]`` or ``[B,784]``; return float ``[B,1,28,28]``."""
    if x.dim() == 0 or x.numel() % 784 != 0 or x.shape[-1] not in (28, 784):
        raise ValueError(f"expected images shaped [B,28,28], [B,1,28,28] or [B,784]; got {tuple(x.shape)}.")
    return x.float().reshape(-1, 1, 28, 28)


def as_labels(label: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    """Int labels ``[B]``; a 0-dim tensor or a Python int is repeated for the whole batch."""
    label = torch.as_tensor(label, device=device).long()
    if label.dim() == 0:
        label = label.expand(batch)
    label = label.reshape(-1)
    if label.numel() != batch:
        raise ValueError(f"got {label.numel()} labels for a batch of {batch}.")
    if label.numel() and (label.min() < 0 or label.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be digits 0-{NUM_CLASSES - 1}.")
    return label

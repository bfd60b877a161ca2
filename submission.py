"""Models and losses for the MNIST VAE coursework — the only file you edit.

The course's harness calls this file only so (and so does our ``grade.py``'s course replay):

* ``VAE(latent_dim=d)`` / ``GenModel(latent_dim=d)``: built from ``latent_dim`` alone, so every other
  constructor default must match the saved weights.
* ``model(images, labels) -> (recon_x, mu, log_var)``: images float ``[B,1,28,28]`` in [0, 1], labels int ``[B]``.
* ``model.decode(z, labels)``: ``z = torch.randn(1, d)`` and a 0-dim label ``torch.tensor(c)``; images in [0, 1].
* ``loss = vae_loss(recon_x, x, mu, log_var, var=var); loss.backward()``: one scalar tensor.

Reading order: ``VAE``, ``GenModel``, their networks, the loss. The kit's extras (a prior fitted to the codes
after training, so ``decode`` of N(0, I) noise lands where the decoder was trained; adversarial sharpening;
the named loss terms it logs) sit after them and in the titled sections at the end of the file.
This file imports only torch: the course grader receives it alone, without our package.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10


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


class VAE(nn.Module):
    """Unconditional convolutional VAE (Kingma & Welling, 2014).

    Trained against N(0, I); afterwards a mixture of ``components`` Gaussians is fitted to the training codes
    (``fit_prior``) and ``decode`` maps standard-normal noise through it, so ``decode(torch.randn(n, d))``
    samples where the decoder was trained (one Gaussian leaves holes between the digits' clusters).
    ``encode`` returns codes in the same noise coordinates.
    """

    def __init__(self, latent_dim: int = 16, *, channels: int = 32, hidden: int = 256, components: int = 400):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(latent_dim, channels, hidden)
        self.decoder = ConvDecoder(latent_dim, channels, hidden)
        self.prior = FittedPrior(1, latent_dim, components)

    def _group(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.long, device=device)

    def encode(self, x: torch.Tensor, labels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (mu, logvar) in noise coordinates, each ``[B, latent_dim]``. ``labels`` are ignored."""
        mu, logvar = self.encode_latent(x)
        return self.prior.to_noise(mu, logvar, self._group(len(mu), mu.device))

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps while training; the mean in eval mode so reconstructions are deterministic."""
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Noise ``z ~ N(0, I)`` ``[B, latent_dim]`` -> images ``[B,1,28,28]`` in [0, 1]. ``labels`` are ignored."""
        z = z.reshape(-1, self.latent_dim).float()
        return self.decode_latent(self.prior.to_latent(z, self._group(len(z), z.device)))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        """Images -> (recon ``[B,1,28,28]``, mu, logvar), mu/logvar of q(z|x) in z coordinates."""
        mu, logvar = self.encode_latent(x)
        return self.decode_latent(self.reparameterize(mu, logvar)), mu, logvar

    # -- trainer only: the decoder's own z coordinates (trained against N(0, I)) and the prior fit ----
    def encode_latent(self, x: torch.Tensor, labels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (mu, logvar) of q(z|x), each ``[B, latent_dim]``. ``labels`` are ignored."""
        return self.encoder(as_images(x))

    def decode_latent(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        """z in the decoder's own coordinates ``[B, latent_dim]`` -> images ``[B,1,28,28]``."""
        return self.decoder(z.reshape(-1, self.latent_dim).float())

    def fit_prior(self, mu: torch.Tensor, logvar: torch.Tensor, labels=None, **options: float) -> None:
        """Fit the prior to training codes from ``encode_latent``; ``options``: see ``FittedPrior.fit``."""
        self.prior.fit(mu, logvar, self._group(len(mu), mu.device), **options)


class GenModel(VAE):
    """Conditional VAE: label-aware encoder and decoder, plus a fitted Gaussian-mixture prior per digit.

    ``decode(eps, y)`` maps standard-normal noise through digit y's prior; ``encode(x, y)`` returns codes
    in those noise coordinates, so ``decode(encode(x, y)[0], y)`` reconstructs x.
    """

    def __init__(self, latent_dim: int = 16, *, channels: int = 32, hidden: int = 256, components: int = 30):
        nn.Module.__init__(self)
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(latent_dim, channels, hidden, NUM_CLASSES)
        self.decoder = ConvDecoder(latent_dim, channels, hidden, NUM_CLASSES)
        self.prior = FittedPrior(NUM_CLASSES, latent_dim, components)

    def _onehot(self, labels, batch: int, device: torch.device) -> torch.Tensor:
        return F.one_hot(as_labels(labels, batch, device), NUM_CLASSES).float()

    def encode(self, x: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Images, labels -> (mu, logvar) in noise coordinates, each ``[B, latent_dim]``."""
        mu, logvar = self.encode_latent(x, labels)
        return self.prior.to_noise(mu, logvar, as_labels(labels, len(mu), mu.device))

    def decode(self, z: torch.Tensor, labels) -> torch.Tensor:
        """Noise ``z ~ N(0, I)`` ``[B, latent_dim]`` and labels (``[B]`` or 0-dim) -> images ``[B,1,28,28]``."""
        z = z.reshape(-1, self.latent_dim).float()
        y = as_labels(labels, z.shape[0], z.device)
        return self.decode_latent(self.prior.to_latent(z, y), y)

    def forward(self, x: torch.Tensor, labels):
        """Images, labels -> (recon ``[B,1,28,28]``, mu, logvar), mu/logvar of q(z|x,y) in z coordinates."""
        mu, logvar = self.encode_latent(x, labels)
        return self.decode_latent(self.reparameterize(mu, logvar), labels), mu, logvar

    # -- trainer only ---------------------------------------------------------------------------------
    def encode_latent(self, x: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Images, labels -> (mu, logvar) of q(z|x,y) in the decoder's own z coordinates."""
        x = as_images(x)
        return self.encoder(x, self._onehot(labels, x.shape[0], x.device))

    def decode_latent(self, z: torch.Tensor, labels) -> torch.Tensor:
        """z in the decoder's own coordinates and labels -> images ``[B,1,28,28]``."""
        z = z.reshape(-1, self.latent_dim).float()
        return self.decoder(z, self._onehot(labels, z.shape[0], z.device))

    def fit_prior(self, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor, **options: float) -> None:
        """Fit digit c's mixture to the training codes of digit c; ``options``: see ``FittedPrior.fit``."""
        self.prior.fit(mu, logvar, labels, **options)


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
        h = self.fc(z).view(-1, 2 * self.c, 7, 7)
        if not (self.training or torch.is_grad_enabled()):
            return decode_layers_fast(self.deconv, h)  # the same map, faster: see the last section
        return torch.sigmoid(self.deconv(h))


def vae_loss(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
             var: float = 0.01) -> torch.Tensor:
    """Negative ELBO ``KL(q(z|x) || N(0,I)) + ||x - recon_x||² / (2·var)``: one scalar tensor, summed over
    pixels and latent dims, averaged over the batch. The course's trainer calls ``.backward()`` on it."""
    return vae_loss_terms(recon_x, x, mu, log_var, var)["loss"]


def gaussian_kl(mu1: float, var1: float, mu2: float, var2: float) -> float:
    """KL(N(mu1, var1) || N(mu2, var2)) for 1-D Gaussians, the closed form proved in the report."""
    return 0.5 * (math.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1)


# ===================================================================================================
# Trainer only: the loss's named terms, which the kit's trainer logs (``vae_loss`` is their sum).
# ===================================================================================================


def vae_loss_terms(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
                   var: float = 0.01) -> dict[str, torch.Tensor]:
    """``{"loss", "recon", "kl"}``, each a scalar summed over pixels / latent dims and averaged over the batch.

    ``recon`` = ``||x - recon_x||² / (2·var)`` (a Gaussian likelihood with variance ``var``, constants dropped);
    ``kl`` = ``-½ Σ (1 + log_var - mu² - exp(log_var))``, the closed form of Kingma & Welling (2014), App. B.
    """
    recon_x, x = as_images(recon_x), as_images(x)
    if var <= 0:
        raise ValueError(f"var must be positive, got {var}.")
    batch = x.shape[0]
    recon = (recon_x - x).pow(2).sum() / (2 * var) / batch
    kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp()) / batch
    return {"loss": recon + kl, "recon": recon, "kl": kl}


# ===================================================================================================
# Trainer only: the fitted prior. After training, ``fit_prior`` (called by the train scripts with the
# codes from ``encode_latent``) replaces N(0, I) by a Gaussian mixture fitted to the training codes;
# ``decode`` / ``encode`` map noise to and from it. Nothing above needs reading this to use the models.
# ===================================================================================================


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


# ===================================================================================================
# Inference speed: how ``ConvDecoder`` decodes when nothing differentiates through it (eval mode, no grad).
# The same map from the same weights, equal to float rounding; training never runs it.
# ===================================================================================================


@torch.no_grad()
def decode_layers_fast(deconv: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    """``torch.sigmoid(deconv(h))`` for ``ConvDecoder.deconv`` in eval mode, computed faster (1.4x per decode
    on 2 CPU cores). Change the decoder's layers and change this too, or drop the call: it is only speed.

    * The batch norm, an affine map in eval mode, is folded into the first transposed convolution's weights
      and bias: one pass less over the decoder's largest activation.
    * The last layer runs in its sub-pixel form (Shi et al., 2016): one 2×2 convolution to the four output
      phases, interleaved. Its transposed form with one output channel is a slow case for oneDNN on CPU
      (5.4 ms per 250 images here; this form 1.5 ms).
    """
    up, bn, _, last = deconv  # ConvTranspose2d(4, 2, 1), BatchNorm2d, ReLU, ConvTranspose2d(4, 2, 1)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    h = F.conv_transpose2d(h, up.weight * scale[None, :, None, None], (up.bias - bn.running_mean) * scale + bn.bias,
                           stride=2, padding=1)
    return torch.sigmoid_(subpixel_conv_transpose(torch.relu_(h), last.weight, last.bias))


def subpixel_conv_transpose(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride=2, padding=1)`` for a 4×4 kernel, as one 2×2 convolution to
    the four output phases, interleaved. Output row 2i + a reads input rows (i-1+a, i+a) through kernel rows
    (3, 1) for a = 0 and (2, 0) for a = 1; columns likewise."""
    n, _, h, w = x.shape
    c_in, c = weight.shape[:2]
    taps = torch.tensor([[3, 1], [2, 0]], device=weight.device)
    phases = weight[:, :, taps[:, None, :, None], taps[None, :, None, :]]  # [in, out, a, b, r, s]
    phases = phases.permute(2, 3, 1, 0, 4, 5).reshape(4 * c, c_in, 2, 2)
    y = F.conv2d(x, phases, bias.repeat(4), padding=1).view(n, 2, 2, c, h + 1, w + 1)
    # Phase (a, b) of the 2×2 window with top-left input (i-1+a, j-1+b) is output pixel (2i + a, 2j + b).
    rows = [torch.stack([y[:, a, b, :, a:a + h, b:b + w] for b in (0, 1)], -1) for a in (0, 1)]
    return torch.stack(rows, 3).reshape(n, c, 2 * h, 2 * w)

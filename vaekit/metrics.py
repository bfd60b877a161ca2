"""Metric definitions (DESIGN.md "Metrics"): the course's own numbers and the classifier-based ones.

Images enter as uint8 arrays ``[N,28,28]`` (quantised as a PNG would be) unless said otherwise.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch
from skimage.metrics import structural_similarity

# -- course-exact --------------------------------------------------------------------------------


def quantize(images: torch.Tensor) -> np.ndarray:
    """Float images in [0,1] -> uint8 ``[N,28,28]``, rounded as ``torchvision.utils.save_image`` writes PNGs."""
    x = images.detach().reshape(-1, 28, 28).float().cpu()
    return x.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()


def ssim_mean(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of scikit-image SSIM with ``data_range=255`` (the course grader's call)."""
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs equal shapes, got {a.shape} and {b.shape}.")
    return float(np.mean([structural_similarity(x, y, data_range=255) for x, y in zip(a, b)]))


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error of the /255 values."""
    return float(np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2))


def latent_bonus(latent_dim: int) -> float:
    return 0.2 + 1 - latent_dim / 784


def course_vae_score(ssim: float, mse_value: float, latent_dim: int) -> float:
    """min((ssim·5 + max(0.1−mse, 0)·50)·bonus, 10)."""
    return min((ssim * 5 + max(0.1 - mse_value, 0) * 50) * latent_bonus(latent_dim), 10.0)


def course_gen_score(ssim: float, mse_value: float, fid: float, latent_dim: int) -> float:
    """min((ssim·10 + max(0.1−mse, 0)·100 + max(10−fid, 0))·bonus, 30)."""
    return min((ssim * 10 + max(0.1 - mse_value, 0) * 100 + max(10 - fid, 0)) * latent_bonus(latent_dim), 30.0)


def pixel_fid(gen: np.ndarray, real: np.ndarray) -> float:
    """The course's "FID" for one label: ‖μg−μa‖² + Σ(vg + va − 2√(vg·va)) over pixels, on /255 values.

    This is the Fréchet distance between diagonal Gaussians fitted to the pixels (variances, not stds).
    """
    g = gen.reshape(len(gen), -1).astype(np.float64) / 255
    a = real.reshape(len(real), -1).astype(np.float64) / 255
    mg, ma, vg, va = g.mean(0), a.mean(0), g.var(0), a.var(0)
    return float(np.sum((mg - ma) ** 2) + np.sum(vg + va - 2 * np.sqrt(vg * va)))


def course_fid(gen: np.ndarray, gen_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray) -> float:
    """``pixel_fid`` per label, averaged over the 10 digits."""
    return float(np.mean([pixel_fid(gen[gen_labels == c], real[real_labels == c]) for c in range(10)]))


# -- classifier-based ----------------------------------------------------------------------------


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """‖μ1−μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) between two Gaussians (Heusel et al., 2017)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            covmean = scipy.linalg.sqrtm(cov1 @ cov2)
            ok = np.isfinite(covmean).all()
        except scipy.linalg.LinAlgWarning:
            ok = False
    if not ok:
        # Singular product (fewer samples than feature dims): regularise both covariances slightly,
        # as the reference FID code does.
        eps = 1e-6 * np.eye(len(cov1))
        covmean = scipy.linalg.sqrtm((cov1 + eps) @ (cov2 + eps))
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def feature_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets ``[N, D]``."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def mean_pairwise_distance(f: np.ndarray, max_n: int = 1000) -> float:
    """Mean Euclidean distance over distinct pairs of the first ``max_n`` rows."""
    f = torch.as_tensor(f[:max_n], dtype=torch.float64)
    n = len(f)
    if n < 2:
        return 0.0
    return float(torch.cdist(f, f).sum() / (n * (n - 1)))


def nearest_distances(query: np.ndarray, reference: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row."""
    ref = torch.as_tensor(reference, dtype=torch.float32)
    out = [torch.cdist(torch.as_tensor(query[i:i + chunk], dtype=torch.float32), ref).min(1).values
           for i in range(0, len(query), chunk)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def memorization(gen_feats: np.ndarray, train_feats: np.ndarray, test_feats: np.ndarray,
                 quantile: float = 0.05) -> tuple[float, float]:
    """Share of generated images closer to their nearest training image than 95 % of test images are.

    Returns (share, threshold). A generator whose samples are as new as unseen test digits scores about
    ``quantile`` (0.05); one that copies training images scores near 1.
    """
    threshold = float(np.quantile(nearest_distances(test_feats, train_feats), quantile))
    return float(np.mean(nearest_distances(gen_feats, train_feats) < threshold)), threshold


def class_histogram(predicted: np.ndarray) -> list[float]:
    """Share of samples the classifier assigns to each digit 0-9."""
    return (np.bincount(predicted, minlength=10)[:10] / max(len(predicted), 1)).tolist()


def fair_score(course_score: float, label_factor: float, diversity: float, memorization_share: float,
               fid_ratio: float, memorization_baseline: float = 0.05) -> float:
    """The course score pulled down by what the course grader cannot see (formula in the README).

    course_score · label_factor · min(1, diversity) · (1 − max(0, memorization − baseline)) · min(1, 2 / fid_ratio)
    """
    if not np.isfinite(fid_ratio) or fid_ratio <= 0:
        return 0.0
    return float(course_score * label_factor * min(1.0, diversity)
                 * (1 - max(0.0, memorization_share - memorization_baseline)) * min(1.0, 2.0 / fid_ratio))

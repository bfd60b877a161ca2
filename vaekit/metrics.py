"""Metric definitions: the course's own numbers and the classifier-based ones (README, "Grading").

Images enter as uint8 arrays ``[N,28,28]`` (quantised as a PNG would be) unless said otherwise.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch

from .generation import quantize  # noqa: F401 - the course's quantisation is part of the metric definitions

# -- course-exact --------------------------------------------------------------------------------


def ssim_mean(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of scikit-image SSIM with ``data_range=255`` (the course grader's call)."""
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs equal shapes, got {a.shape} and {b.shape}.")
    return float(np.mean(ssim_per_image(a, b))) if len(a) else float("nan")


SSIM_WINDOW = 7  # scikit-image's default (uniform window, sample covariance)


def ssim_per_image(a: np.ndarray, b: np.ndarray, data_range: float = 255) -> list[float]:
    """``structural_similarity(a[i], b[i], data_range=255)`` for every image, equal to scikit-image's to the last bit.

    scikit-image's formula, step for step in float64, on batches of images: its uniform filter filters each image's
    rows and columns the same way inside a batch (``size`` 1 along the batch axis is skipped), and each image's mean
    is taken over its own cropped view, as scikit-image does (tests/test_metrics.py holds it to scikit-image's numbers
    exactly). Batches of ``SSIM_CHUNK`` keep the float64 temporaries in cache."""
    return [v for i in range(0, len(a), SSIM_CHUNK) for v in _ssim_batch(a[i:i + SSIM_CHUNK], b[i:i + SSIM_CHUNK],
                                                                        data_range)]


SSIM_CHUNK = 256


def _ssim_batch(a: np.ndarray, b: np.ndarray, data_range: float) -> list[float]:
    x, y = a.astype(np.float64), b.astype(np.float64)
    size = (1,) + (SSIM_WINDOW,) * (x.ndim - 1)
    mean = lambda im: scipy.ndimage.uniform_filter(im, size=size)  # noqa: E731
    cov_norm = SSIM_WINDOW ** (x.ndim - 1) / (SSIM_WINDOW ** (x.ndim - 1) - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (SSIM_WINDOW - 1) // 2
    inner = (slice(pad, -pad),) * (x.ndim - 1)
    return [float(img[inner].mean(dtype=np.float64)) for img in s]


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


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, for float images in [0, 1] (the labs' measure)."""
    err = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / err)


# -- classifier-based ----------------------------------------------------------------------------

def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """‖μ1−μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) between two Gaussians (Heusel et al., 2017).

    Tr((Σ1Σ2)^½) is the sum of the square roots of the eigenvalues of Σ1Σ2, which are those of the symmetric
    √Σ1 Σ2 √Σ1 (both covariances are positive semi-definite): two symmetric eigendecompositions instead of a
    general matrix square root, about 20 times faster, and exact for singular covariances (fewer samples than
    feature dimensions) where the square root of the product needs regularising."""
    w, v = np.linalg.eigh(cov1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ cov2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_root)


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


class NearestNeighbours:
    """Euclidean distance from query rows to their nearest ``reference`` row, as ``torch.cdist(q, ref).min(1)``
    gives it to the last bit, for a fraction of its time and memory.

    ``torch.cdist`` (float32, p=2, more than 25 rows) multiplies ``[-2q, |q|², 1]`` by ``[ref, 1, |ref|²]``, clamps at
    0 and takes the square root of every one of the N × M entries. Here the padded reference is built once, the
    minimum is taken before the clamp and the root (both are monotone, so it is the same number), and the queries go
    in small chunks whose products stay in cache (tests/test_metrics.py holds it equal to ``torch.cdist``)."""

    CHUNK = 128

    def __init__(self, reference: np.ndarray):
        ref = torch.as_tensor(np.asarray(reference), dtype=torch.float32)
        norm = ref.pow(2).sum(-1, keepdim=True)
        self.padded = torch.cat([ref, torch.ones_like(norm), norm], -1).mT.contiguous()

    @torch.no_grad()
    def distances(self, query: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(query), self.CHUNK):
            q = torch.as_tensor(query[i:i + self.CHUNK], dtype=torch.float32)
            norm = q.pow(2).sum(-1, keepdim=True)
            out.append((torch.cat([q.mul(-2), norm, torch.ones_like(norm)], -1) @ self.padded).amin(1))
        return torch.cat(out).clamp_min(0).sqrt().numpy() if out else np.zeros(0, np.float32)


def nearest_distances(query: np.ndarray, reference: np.ndarray | NearestNeighbours) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row."""
    index = reference if isinstance(reference, NearestNeighbours) else NearestNeighbours(reference)
    return index.distances(query)


def memorization(gen_feats: np.ndarray, train_feats: np.ndarray, test_feats: np.ndarray,
                 quantile: float = 0.05) -> tuple[float, float]:
    """Share of generated images closer to their nearest training image than 95 % of test images are.

    Returns (share, threshold). A generator whose samples are as new as unseen test digits scores about
    ``quantile`` (0.05); one that copies training images scores near 1.
    """
    threshold = memorization_threshold(test_feats, train_feats, quantile)
    return copy_share(gen_feats, train_feats, threshold), threshold


def memorization_threshold(test_feats: np.ndarray, train_feats: np.ndarray | NearestNeighbours,
                           quantile: float = 0.05) -> float:
    """The ``quantile`` of the distances from unseen real images to their nearest training image."""
    return float(np.quantile(nearest_distances(test_feats, train_feats), quantile))


def copy_share(gen_feats: np.ndarray, reference: np.ndarray | NearestNeighbours, threshold: float) -> float:
    """Share of generated images whose nearest ``reference`` image lies closer than ``threshold``."""
    return float(np.mean(nearest_distances(gen_feats, reference) < threshold)) if len(gen_feats) else 0.0


RECON_COPY_MSE = 2e-4  # per-image MSE on /255 values; an honest model at latent_dim ≤ 64 stays far above it
RECON_COPY_WARN = 0.05
SUSPICIOUS_FID_RATIO = 0.5
# The course path (forward) against the isolated one (decode of the code): an honest forward reconstructs from
# the same code (a sampled one in a template, so no better); one that passes its input through is far better.
PASS_THROUGH_SSIM_GAP = 0.05
PASS_THROUGH_MSE_RATIO = 0.5


def recon_copy_share(recon: np.ndarray, originals: np.ndarray) -> float:
    """Share of reconstructions that are (near-)pixel-exact copies of their inputs (per-image MSE below
    ``RECON_COPY_MSE``): what a lookup of the public test set returns, not what a small code can carry."""
    a = recon.reshape(len(recon), -1).astype(np.float64) / 255
    b = originals.reshape(len(originals), -1).astype(np.float64) / 255
    return float(np.mean(((a - b) ** 2).mean(1) < RECON_COPY_MSE)) if len(a) else 0.0


def within_class_diversity(gen_feats: np.ndarray, gen_pred: np.ndarray, real_feats: np.ndarray,
                           real_labels: np.ndarray) -> float:
    """Mean over the digits the samples are read as of (pairwise feature distance of the samples of that
    digit ÷ that of real images of it); a digit read in fewer than 2 samples counts 0. One image per
    digit scores 0 however many digits it covers."""
    ratios = []
    for c in range(10):
        g = gen_feats[gen_pred == c]
        ratios.append(mean_pairwise_distance(g) / mean_pairwise_distance(real_feats[real_labels == c])
                      if len(g) >= 2 else 0.0)
    return float(np.mean(ratios))


def class_histogram(predicted: np.ndarray) -> list[float]:
    """Share of samples the classifier assigns to each digit 0-9."""
    return (np.bincount(predicted, minlength=10)[:10] / max(len(predicted), 1)).tolist()


# fair_score calibration (README, "fair_score"; bench/calibrate.py). The fid factor is 1 up to the first number of
# the task's curve and falls as a power of the ratio beyond. For the VAE it falls gently: a textbook VAE's N(0, I)
# samples sit at a ratio of about 400 themselves, so there it only ranks honest models. For the conditional task it
# falls to a quarter at twice its threshold: a textbook CVAE sits near 130, a generator of class means plus noise at
# 300 and beyond. Diversity counts in full from DIVERSITY_OK up and falls with its square below (class means plus a
# little noise: about 0.3). Every degenerate sampler is caught by a factor that falls to about 0.
FID_RATIO_CURVE = {"vae": (30.0, 0.12), "gen": (150.0, 2.0)}  # (ratio where the factor starts to fall, power)
DIVERSITY_OK = 0.8
DIVERSITY_POWER = 2.0
MEMORIZATION_BASELINE = 0.05
REPEAT_TOLERANCE = 0.5  # mean gray levels between two decodings of the same input (float noise: ~0)


def fid_factor(ratio: float, task: str = "vae") -> float:
    ok, power = FID_RATIO_CURVE[task]
    return float(min(1.0, (ok / ratio) ** power)) if np.isfinite(ratio) and ratio > 0 else 0.0


def fair_factors(res: dict) -> dict[str, float]:
    """The factors ``fair_score`` multiplies the course score by, each in [0, 1] and monotone in its metric."""
    copied = max(res["memorization"], res["memorization_heldout"])
    diversity = min(1.0, max(0.0, res["diversity_within_class"]) / DIVERSITY_OK) ** DIVERSITY_POWER
    return {"label": float(min(1.0, max(0.0, res["label_factor"]))),
            "diversity": float(diversity),
            "novelty": float(1 - max(0.0, copied - MEMORIZATION_BASELINE)),
            # Copies are what a full-size code carries honestly; below a quarter of the pixels they are a lookup.
            "reconstruction": float(1 - res["recon_copies"]) if res["latent_dim"] < 784 // 4 else 1.0,
            "fid": fid_factor(res["fid_ratio"], res.get("task", "vae"))}


def fair_score(res: dict) -> float:
    """The course score — or the same formula on the isolated path (``res["split"]``), where that is lower: a
    ``forward`` that passes its input through wins the course's own number, not this one — times what the course
    grader cannot see (formula and calibration in docs/grading.md)."""
    base = min(res["score"], res["split"]["score"]) if "split" in res else res["score"]
    return float(base * np.prod(list(fair_factors(res).values())))

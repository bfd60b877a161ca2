"""Scoring a graded task: the course's formulas on the course replay and on the isolated path, the classifier's
metrics (class coverage or conditional accuracy, FID ratio, diversity, copy checks) and the flags.

Everything here reads the judge (``vaekit.judge``) and uint8 images the sandboxed workers returned; nothing runs
the submission's code. ``vaekit.metrics`` holds the formulas themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import course_inference, metrics
from .course import TASKS
from .judge import Judge


def feature_fids(judge: Judge, feats: np.ndarray, seed: int, label: int | None = None) -> tuple[float, float]:
    """(Fréchet distance of ``feats`` to the test images' features, the same for as many real training images):
    over all test images, or over those of digit ``label``. Their ratio is ``fid_ratio``."""
    test = judge.test_feats if label is None else judge.test_feats[judge.test_y == label]
    real = judge.real_reference(len(feats), seed, label=label)
    return metrics.feature_fid(feats, test), metrics.feature_fid(real, test)


def _course_images(out: dict[str, np.ndarray], key: str, n: int) -> np.ndarray | None:
    a = out.get(key)
    return a if isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.shape == (n, 28, 28) else None


def course_fields(judge: Judge, task: str, latent_dim: int, enc: dict[str, np.ndarray]) -> dict[str, Any]:
    """The numbers the course's own ``grade.py`` writes (``ssim``, ``mse``, ``fid``, ``score``), from the replay of
    its inference in the encoding process; ``course_error`` says why the course's harness would fail (score 0).
    A VAE whose generation fails still has its reconstruction score, as in the course (its grade reads no samples).
    """
    res: dict[str, Any] = {"ssim": None, "mse": None, "fid": None, "score": 0.0, "course_error": None}
    per_digit = course_inference.SAMPLES_PER_DIGIT[task]
    recon = _course_images(enc, "course_recon", len(judge.test))
    samples = _course_images(enc, "course_samples", 10 * per_digit)
    error = str(enc["course_error"])[:1000] if "course_error" in enc else None
    if recon is None and error is None:
        error = "course replay: the encoding process returned no reconstructions of the right shape."
    if task == "gen" and samples is None and error is None:
        error = "course replay: the encoding process returned no samples of the right shape."
    res["course_error"] = error
    if recon is None:
        return res
    res["ssim"], res["mse"] = metrics.ssim_mean(recon, judge.test_u8), metrics.mse(recon, judge.test_u8)
    if task == "vae":
        res["score"] = metrics.course_vae_score(res["ssim"], res["mse"], latent_dim)
    elif samples is not None:
        res["fid"] = metrics.course_fid(samples, np.repeat(np.arange(10), per_digit), judge.test_u8, judge.test_y)
        res["score"] = metrics.course_gen_score(res["ssim"], res["mse"], res["fid"], latent_dim)
    return res


def split_fields(judge: Judge, task: str, latent_dim: int, recon: np.ndarray, samples: np.ndarray,
                 labels: np.ndarray) -> dict[str, Any]:
    """The course's formulas on the isolated path: reconstructions decoded from the codes alone by a process
    that never saw a test image, and the course's pixel FID on the first (at most) 100 samples per digit."""
    per = min(100, int(np.sum(labels == 0)))
    keep = np.concatenate([np.flatnonzero(labels == c)[:per] for c in range(10)])
    res = {"ssim": metrics.ssim_mean(recon, judge.test_u8), "mse": metrics.mse(recon, judge.test_u8),
           "fid": metrics.course_fid(samples[keep], labels[keep], judge.test_u8, judge.test_y),
           "fid_samples_per_label": per}
    res["score"] = (metrics.course_vae_score(res["ssim"], res["mse"], latent_dim) if task == "vae" else
                    metrics.course_gen_score(res["ssim"], res["mse"], res["fid"], latent_dim))
    return res


def score_common(judge: Judge, latent_dim: int, recon: np.ndarray, feats: np.ndarray) -> dict[str, Any]:
    """What both tasks measure on the isolated path: the copy checks."""
    res: dict[str, Any] = {"latent_dim": latent_dim}
    res["bonus"] = metrics.latent_bonus(latent_dim)
    res["memorization_threshold"] = judge.copy_threshold
    res["memorization"] = metrics.copy_share(feats, judge.train_index, judge.copy_threshold)
    res["memorization_heldout"] = metrics.copy_share(feats, judge.heldout_index, judge.copy_threshold)
    res["recon_copies"] = metrics.recon_copy_share(recon, judge.test_u8)
    return res


def score_vae(judge: Judge, latent_dim: int, recon: np.ndarray, samples: np.ndarray, seed: int) -> dict[str, Any]:
    """Unconditional task, isolated path: class coverage of the samples, FID ratio, diversity."""
    feats, preds = judge.features(samples)
    res = score_common(judge, latent_dim, recon, feats)
    res["max_score"] = TASKS["vae"].max_score
    hist = metrics.class_histogram(preds)
    res["class_histogram"] = hist
    res["histogram_max_deviation"] = max(abs(h - 0.1) / 0.1 for h in hist)
    res["classifier_fid"], res["classifier_fid_real"] = feature_fids(judge, feats, seed)
    res["fid_ratio"] = res["classifier_fid"] / res["classifier_fid_real"]
    res["diversity"] = metrics.mean_pairwise_distance(feats[::5]) / metrics.mean_pairwise_distance(
        judge.test_feats[::5])
    res["diversity_within_class"] = metrics.within_class_diversity(feats, preds, judge.test_feats, judge.test_y)
    res["label_factor"] = 1 - 0.5 * sum(abs(h - 0.1) for h in hist)  # 1 − total-variation from uniform
    return res


def score_gen(judge: Judge, latent_dim: int, recon: np.ndarray, samples: np.ndarray, labels: np.ndarray,
              seed: int) -> dict[str, Any]:
    """Conditional task, isolated path: conditional accuracy and per-class FID ratio and diversity."""
    feats, preds = judge.features(samples)
    res = score_common(judge, latent_dim, recon, feats)
    res["max_score"] = TASKS["gen"].max_score
    res["cond_accuracy"] = float(np.mean(preds == labels))
    per_acc, per_gen, per_real, per_div = [], [], [], []
    for c in range(10):
        g, t = feats[labels == c], judge.test_feats[judge.test_y == c]
        per_acc.append(float(np.mean(preds[labels == c] == c)))
        fid, fid_real = feature_fids(judge, g, seed + c, label=c)
        per_gen.append(fid)
        per_real.append(fid_real)
        per_div.append(metrics.mean_pairwise_distance(g) / metrics.mean_pairwise_distance(t))
    res["per_class"] = {"cond_accuracy": per_acc, "classifier_fid": per_gen, "classifier_fid_real": per_real,
                        "fid_ratio": [g / r for g, r in zip(per_gen, per_real)], "diversity": per_div}
    res["classifier_fid"], res["classifier_fid_real"] = float(np.mean(per_gen)), float(np.mean(per_real))
    res["fid_ratio"] = res["classifier_fid"] / res["classifier_fid_real"]
    res["diversity"] = res["diversity_within_class"] = float(np.mean(per_div))
    res["label_factor"] = res["cond_accuracy"]
    return res


def flag(res: dict[str, Any]) -> list[str]:
    """Warnings for what the numbers say a model did that an honest one would not."""
    found = []
    if res["recon_copies"] > metrics.RECON_COPY_WARN and res["latent_dim"] < 784 // 4:
        found.append(f"{100 * res['recon_copies']:.0f} % of the reconstructions are (near-)exact copies of the "
                     f"test images, through only {res['latent_dim']} numbers per image: a lookup, not a model.")
    if res["memorization"] > 0.2:
        found.append(f"{100 * res['memorization']:.0f} % of the samples are near-copies of training images.")
    if res["memorization_heldout"] > 0.2:
        found.append(f"{100 * res['memorization_heldout']:.0f} % of the samples are near-copies of held-out "
                     "(validation or test) images.")
    if res["fid_ratio"] < metrics.SUSPICIOUS_FID_RATIO:
        found.append(f"fid_ratio {res['fid_ratio']:.2f} is far below real images' 1.0: samples that close to "
                     "the test set are copies, not generations.")
    if res.get("repeat_difference", 0.0) > metrics.REPEAT_TOLERANCE:
        found.append(f"decoding the same codes and noise twice gave images {res['repeat_difference']:.1f} gray levels "
                     "apart on average: the decoder is random, so this grade would change from run to run.")
    split = res["split"]
    if res["ssim"] is not None and (res["ssim"] - split["ssim"] > metrics.PASS_THROUGH_SSIM_GAP
                                    or res["mse"] < metrics.PASS_THROUGH_MSE_RATIO * split["mse"]):
        found.append(f"model(images, labels) reconstructs far better (ssim {res['ssim']:.3f}, mse {res['mse']:.4f}) "
                     f"than decoding its {res['latent_dim']}-number code alone (ssim {split['ssim']:.3f}, mse "
                     f"{split['mse']:.4f}): forward passes more than the code to its output.")
    return found

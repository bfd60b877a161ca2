"""Metric functions against closed forms and scikit-image / scipy references."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from vaekit import metrics


def test_quantize_rounds_like_save_image():
    x = torch.tensor([0.0, 0.5, 1.0, 1.2, -0.1, 0.999] + [0.0] * 778).reshape(1, 1, 28, 28)
    q = metrics.quantize(x)
    assert q.dtype == np.uint8 and q.shape == (1, 28, 28)
    assert q.reshape(-1)[:6].tolist() == [0, 128, 255, 255, 0, 255]


def test_ssim_and_mse_match_references():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    ref = np.mean([structural_similarity(x, y, data_range=255) for x, y in zip(a, b)])
    assert metrics.ssim_mean(a, b) == pytest.approx(ref, abs=1e-12)
    assert metrics.ssim_mean(a, a) == pytest.approx(1.0)
    assert metrics.mse(a, b) == pytest.approx(np.mean((a / 255.0 - b / 255.0) ** 2))
    with pytest.raises(ValueError, match="equal shapes"):
        metrics.ssim_mean(a, b[:3])


def test_batched_ssim_is_scikit_images_to_the_last_bit():
    # Digit-like images (mostly black, a bright stroke) and their blurred, noisy "reconstructions", as graded.
    rng = np.random.default_rng(1)
    a = np.zeros((300, 28, 28), np.uint8)
    for img in a:
        r, c = rng.integers(4, 20, 2)
        img[r:r + rng.integers(3, 8), c:c + rng.integers(2, 8)] = rng.integers(120, 256)
    b = np.clip(a.astype(int) // 2 + rng.integers(-20, 60, a.shape), 0, 255).astype(np.uint8)
    b[:50] = a[:50]  # exact copies: ssim 1
    b[50:60] = 0  # a blank output
    got = metrics.ssim_per_image(a, b)
    want = [structural_similarity(x, y, data_range=255) for x, y in zip(a, b)]
    assert got == want  # bit for bit, not approximately
    assert metrics.ssim_mean(a, b) == np.mean(want)


def test_classifier_features_are_the_same_bits_in_any_batch():
    from vaekit.classifier import features_and_digits, load_classifier
    from vaekit.data import load_mnist

    model = load_classifier()[0]
    images = metrics.quantize(load_mnist("test").x[:700])
    feats, digits = features_and_digits(model, images)
    with torch.no_grad():
        whole = model.features(torch.from_numpy(images).float().div(255).unsqueeze(1))
    assert feats.shape == (700, 128) and np.array_equal(feats, whole.numpy())
    assert np.array_equal(digits, model.head(whole[:700]).argmax(1).numpy())
    assert features_and_digits(model, images[:0])[0].shape == (0, 128)


def test_nearest_neighbours_are_torch_cdists_to_the_last_bit():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(3000, 128)).astype(np.float32)
    query = np.concatenate([ref[:100] + 1e-4, rng.normal(size=(700, 128)).astype(np.float32)])
    want = torch.cdist(torch.from_numpy(query), torch.from_numpy(ref)).min(1).values.numpy()
    got = metrics.NearestNeighbours(ref).distances(query)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert len(metrics.nearest_distances(query[:0], ref)) == 0


def test_course_scores_on_hand_checked_inputs():
    # bonus(16) = 1.2 - 16/784 = 1.179592; (0.8*5 + 0.09*50) * bonus = 8.5 * 1.179592 = 10.0265 -> capped 10
    assert metrics.latent_bonus(16) == pytest.approx(1.2 - 16 / 784)
    assert metrics.course_vae_score(0.8, 0.01, 16) == 10.0
    assert metrics.course_vae_score(0.5, 0.05, 392) == pytest.approx((2.5 + 2.5) * 0.7)
    assert metrics.course_vae_score(0.5, 0.2, 392) == pytest.approx(2.5 * 0.7)  # mse > 0.1 adds nothing
    # (0.6*10 + 0.05*100 + (10-4)) * 0.7 = 17 * 0.7 = 11.9; cap is 30
    assert metrics.course_gen_score(0.6, 0.05, 4.0, 392) == pytest.approx(11.9)
    assert metrics.course_gen_score(0.99, 0.0, 0.0, 1) == 30.0
    assert metrics.course_gen_score(0.0, 0.5, 12.0, 392) == 0.0


def test_pixel_fid_on_toy_arrays():
    # Two pixels: gen values {0, 255} / {0, 0}; real {255, 255} / {0, 255}.
    g = np.array([[0, 0], [255, 0]], dtype=np.uint8)  # rows: images; pixel means 0.5, 0; vars 0.25, 0
    a = np.array([[255, 0], [255, 255]], dtype=np.uint8)  # means 1, 0.5; vars 0, 0.25
    expected = (0.5 - 1) ** 2 + (0 - 0.5) ** 2 + (0.25 + 0 - 0) + (0 + 0.25 - 0)
    assert metrics.pixel_fid(g, a) == pytest.approx(expected)
    assert metrics.pixel_fid(a, a) == pytest.approx(0.0)


def test_pixel_fid_is_frechet_distance_of_diagonal_gaussians():
    rng = np.random.default_rng(1)
    g = rng.integers(0, 256, (300, 6), dtype=np.uint8)
    a = rng.integers(0, 200, (400, 6), dtype=np.uint8)
    gf, af = g / 255.0, a / 255.0
    fd = metrics.frechet_distance(gf.mean(0), np.diag(gf.var(0)), af.mean(0), np.diag(af.var(0)))
    assert metrics.pixel_fid(g, a) == pytest.approx(fd, rel=1e-9)


def test_course_fid_averages_over_labels():
    rng = np.random.default_rng(2)
    gen = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    real = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    gl, rl = np.repeat(np.arange(10), 10), np.repeat(np.arange(10), 5)
    expected = np.mean([metrics.pixel_fid(gen[gl == c], real[rl == c]) for c in range(10)])
    assert metrics.course_fid(gen, gl, real, rl) == pytest.approx(expected)


def test_frechet_distance_closed_forms():
    mu, cov = np.array([1.0, 2.0]), np.array([[2.0, 0.5], [0.5, 1.0]])
    assert metrics.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
    # 1-D: (m1 - m2)² + (s1 - s2)²
    assert metrics.frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([3.0]),
                                    np.array([[1.0]])) == pytest.approx(9 + 1)
    # A non-symmetric product (the transpose bug seen in the wild would change this value).
    c2 = np.array([[1.0, -0.3], [-0.3, 0.5]])
    from scipy.linalg import sqrtm

    s = sqrtm(cov)
    ref = np.trace(cov) + np.trace(c2) - 2 * np.trace(np.real(sqrtm(s @ c2 @ s)))
    assert metrics.frechet_distance(mu, cov, mu, c2) == pytest.approx(ref, rel=1e-7)


@pytest.mark.parametrize("n", [2000, 20])  # more samples than feature dimensions, and fewer (singular covariances)
def test_frechet_distance_matches_scipy_sqrtm_at_the_graders_feature_size(n):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, 128)) @ rng.normal(size=(128, 128))
    b = rng.normal(size=(n, 128)) @ rng.normal(size=(128, 128)) + 0.5
    from scipy.linalg import sqrtm

    (ma, ca), (mb, cb) = [(f.mean(0), np.cov(f, rowvar=False)) for f in (a, b)]
    ref = np.sum((ma - mb) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.trace(np.real(sqrtm(ca @ cb)))
    assert metrics.feature_fid(a, b) == pytest.approx(ref, rel=1e-6 if n > 128 else 1e-3)


def test_feature_fid_of_same_distribution_is_small_and_of_shifted_is_shift():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(20000, 4))
    b = rng.normal(size=(20000, 4))
    assert metrics.feature_fid(a, b) < 0.01
    assert metrics.feature_fid(a, b + 2.0) == pytest.approx(16.0, rel=0.02)


def test_pairwise_and_memorization():
    f = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert metrics.mean_pairwise_distance(f) == pytest.approx((5 + 0 + 5) / 3)
    rng = np.random.default_rng(4)
    train, test = rng.normal(size=(2000, 8)), rng.normal(size=(500, 8))
    copies, share_new = train[:300] + 1e-4, rng.normal(size=(300, 8))
    assert metrics.memorization(copies, train, test)[0] == 1.0
    assert metrics.memorization(share_new, train, test)[0] < 0.15


def test_histogram_and_fair_score():
    assert metrics.class_histogram(np.array([0, 0, 3, 9])) == [0.5, 0, 0, 0.25, 0, 0, 0, 0, 0, 0.25]
    honest = {"score": 30.0, "label_factor": 1.0, "diversity_within_class": 0.9, "memorization": 0.05,
              "memorization_heldout": 0.03, "recon_copies": 0.0, "fid_ratio": 1.5, "latent_dim": 16}
    assert metrics.fair_score(honest) == 30.0
    assert metrics.fair_score({**honest, "fid_ratio": float("nan")}) == 0.0
    # Each factor by hand: label 0.5, diversity (0.4/0.8)², novelty 1-(0.25-0.05), reconstruction 1-0.5,
    # fid (30/900)^0.12 for the VAE.
    bad = {**honest, "label_factor": 0.5, "diversity_within_class": 0.4, "memorization_heldout": 0.25,
           "recon_copies": 0.5, "fid_ratio": 900.0}
    assert metrics.fair_score(bad) == pytest.approx(30 * 0.5 * 0.25 * 0.8 * 0.5 * (30 / 900) ** 0.12)
    assert metrics.fair_score({**honest, "fid_ratio": 29.0}) == 30.0
    # The conditional task's fid factor: 1 up to 150, a quarter at 300, under a fifth at the red team's 365.
    assert metrics.fid_factor(150.0, "gen") == 1.0 and metrics.fid_factor(300.0, "gen") == pytest.approx(0.25)
    assert metrics.fid_factor(365.0, "gen") < 0.2 and metrics.fid_factor(365.0, "vae") > 0.7
    # Copies through a full-size code are what it carries honestly.
    assert metrics.fair_factors({**bad, "latent_dim": 784})["reconstruction"] == 1.0
    # The course score rests on forward(x, labels); the isolated path's score, where lower, is what counts.
    assert metrics.fair_score({**honest, "split": {"score": 12.5}}) == 12.5
    assert metrics.fair_score({**honest, "score": 8.0, "split": {"score": 12.5}}) == 8.0


@pytest.mark.parametrize("key,worse", [("label_factor", 0.2), ("diversity_within_class", 0.1),
                                       ("memorization", 0.6), ("memorization_heldout", 0.6),
                                       ("recon_copies", 0.3), ("fid_ratio", 400.0)])
def test_fair_score_is_monotone_in_each_metric(key, worse):
    base = {"score": 10.0, "label_factor": 0.9, "diversity_within_class": 0.5, "memorization": 0.1,
            "memorization_heldout": 0.1, "recon_copies": 0.1, "fid_ratio": 20.0, "latent_dim": 16}
    scores = [metrics.fair_score({**base, key: v}) for v in np.linspace(base[key], worse, 6)]
    assert all(a >= b for a, b in zip(scores, scores[1:])) and scores[0] > scores[-1]


def test_copy_checks():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(500, 8))
    assert metrics.copy_share(ref[:100] + 1e-3, ref, 0.1) == 1.0
    assert metrics.copy_share(rng.normal(size=(100, 8)), ref, 0.1) == 0.0
    imgs = rng.integers(0, 256, (10, 28, 28)).astype(np.uint8)
    near = imgs.copy()
    near[:4, 0, 0] ^= 1  # one grey level off: still a copy
    assert metrics.recon_copy_share(near, imgs) == 1.0
    assert metrics.recon_copy_share(255 - imgs, imgs) == 0.0


def test_within_class_diversity_sees_one_image_per_digit():
    rng = np.random.default_rng(0)
    real, labels = rng.normal(size=(1000, 4)), np.repeat(np.arange(10), 100)
    assert metrics.within_class_diversity(real, labels, real, labels) == pytest.approx(1.0)
    one_each = np.repeat(rng.normal(size=(10, 4)), 100, axis=0)  # globally diverse, no variety within a digit
    assert metrics.within_class_diversity(one_each, labels, real, labels) == pytest.approx(0.0, abs=1e-6)

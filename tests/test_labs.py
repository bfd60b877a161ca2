"""Every lab runs end to end on a tiny budget and writes its figures and numbers."""

import json
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow


def run_lab(root, script, out):
    r = subprocess.run([sys.executable, script, "--dry-run", "--out", str(out)], cwd=root, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


def test_autoencoder_lab(root, tmp_path):
    numbers = run_lab(root, "labs/autoencoder.py", tmp_path)
    for fig in ("latent_maps.png", "mosaic_plain.png", "mosaic_l2.png", "denoising.png"):
        assert (tmp_path / fig).stat().st_size > 1000, fig
    assert set(numbers) == {"plain", "denoising", "l2"}
    assert numbers["denoising"]["psnr_noisy_db"] > 0 and "test_bce" in numbers["l2"]


def test_classifier_lab(root, tmp_path):
    numbers = run_lab(root, "labs/classifier.py", tmp_path)
    for fig in ("learning_curves.png", "projections_lenet5.png", "projections_small.png"):
        assert (tmp_path / fig).stat().st_size > 1000, fig
    assert numbers["LeNet-5"]["parameters"] == 61706  # the classic LeNet-5 count with 28x28 padded input
    assert numbers["small"]["parameters"] < numbers["LeNet-5"]["parameters"] / 5


def test_denoising_psnr_and_noise():
    sys.path.insert(0, "labs")
    from labs.autoencoder import add_noise, psnr

    x = torch.full((2, 1, 28, 28), 0.5)
    assert torch.allclose(psnr(x, x + 0.1), torch.full((2,), 20.0), atol=1e-4)  # 10·log10(1/0.01)
    noisy = add_noise(x, torch.Generator().manual_seed(0))
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1
    # Clipping at 0.5 ± 0.5 censors 0.4·N(0,1) beyond ±1.25σ: compare with the censored normal's std.
    from scipy import integrate, stats

    second_moment, _ = integrate.quad(lambda t: min(max(0.4 * t, -0.5), 0.5) ** 2 * stats.norm.pdf(t), -10, 10)
    assert float((noisy - x).std()) == pytest.approx(second_moment**0.5, rel=0.02)

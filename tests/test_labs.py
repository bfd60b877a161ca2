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
    from labs.autoencoder import add_noise, psnr

    x = torch.full((2, 1, 28, 28), 0.5)
    assert torch.allclose(psnr(x, x + 0.1), torch.full((2,), 20.0), atol=1e-4)  # 10·log10(1/0.01)
    noisy = add_noise(x, torch.Generator().manual_seed(0))
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1
    # Clipping at 0.5 ± 0.5 censors 0.4·N(0,1) beyond ±1.25σ: compare with the censored normal's std.
    from scipy import integrate, stats

    second_moment, _ = integrate.quad(lambda t: min(max(0.4 * t, -0.5), 0.5) ** 2 * stats.norm.pdf(t), -10, 10)
    assert float((noisy - x).std()) == pytest.approx(second_moment**0.5, rel=0.02)


@pytest.mark.parametrize("loss", ["nsgan", "wgan-gp"])
def test_cgan_lab_writes_a_submission_that_grade_py_grades(root, tmp_path, loss):
    r = subprocess.run([sys.executable, "labs/cgan.py", "--dry-run", "--loss", loss, "--out", str(tmp_path)],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    folder = tmp_path / "Genwithlabel"
    for name in ("epoch.pth", "hyperparameters.txt", "samples.png", "reconstructions.png", "loss_curves.png"):
        assert (folder / name).stat().st_size > 100, name
    assert (tmp_path / "submission.py").read_text() == (root / "labs" / "cgan_submission.py").read_text()
    hp = json.loads((folder / "hyperparameters.txt").read_text())
    assert hp["model_class"] == "GenModel" and hp["training"]["loss"] == loss
    # Graded in the sandbox like a student's submission: no error, and every classifier field present.
    grade = json.loads((folder / "grade_result.json").read_text())
    assert grade["error"] is None, grade["error"]
    assert grade["latent_dim"] == 16 and 0 <= grade["cond_accuracy"] <= 1 and grade["fid_ratio"] > 0


def test_gradient_penalty_is_zero_for_a_unit_slope_critic():
    from labs.cgan import gradient_penalty

    class Linear(torch.nn.Module):  # D(x) = <w, x> with ||w|| = 1 has gradient norm 1 everywhere
        def forward(self, x, y):
            w = torch.zeros_like(x)
            w.view(len(x), -1)[:, 0] = 1.0
            return (w * x).flatten(1).sum(1), None

    real, fake, y = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    assert float(gradient_penalty(Linear(), real, fake, y)) == pytest.approx(0.0, abs=1e-10)

    class Steep(Linear):  # slope 3 -> penalty (3 - 1)² = 4
        def forward(self, x, y):
            return 3 * super().forward(x, y)[0], None

    assert float(gradient_penalty(Steep(), real, fake, y)) == pytest.approx(4.0, rel=1e-6)

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
    from labs.autoencoder import add_noise
    from vaekit.metrics import psnr

    x = torch.full((2, 1, 28, 28), 0.5)
    assert torch.allclose(psnr(x, x + 0.1), torch.full((2,), 20.0), atol=1e-4)  # 10·log10(1/0.01)
    noisy = add_noise(x, torch.Generator().manual_seed(0))
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1
    # Clipping at 0.5 ± 0.5 censors 0.4·N(0,1) beyond ±1.25σ: compare with the censored normal's std.
    from scipy import integrate, stats

    second_moment, _ = integrate.quad(lambda t: min(max(0.4 * t, -0.5), 0.5) ** 2 * stats.norm.pdf(t), -10, 10)
    assert float((noisy - x).std()) == pytest.approx(second_moment**0.5, rel=0.02)


def test_cgan_lab_writes_a_submission_that_grade_py_grades(root, tmp_path):
    """With WGAN weight clipping (the bench's dry run trains the default nsgan end to end)."""
    loss = "wgan-clip"
    r = subprocess.run([sys.executable, "labs/cgan.py", "--dry-run", "--loss", loss, "--out", str(tmp_path)],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    folder = tmp_path / "Genwithlabel"
    for name in ("epoch.pth", "hyperparameters.txt", "samples.png", "reconstructions.png", "loss_curves.png",
                 "progress.png"):
        assert (folder / name).stat().st_size > 100, name
    assert (tmp_path / "submission.py").read_text() == (root / "labs" / "cgan_submission.py").read_text()
    hp = json.loads((folder / "hyperparameters.txt").read_text())
    assert hp["model_class"] == "GenModel" and hp["training"]["loss"] == loss
    # The loss's own recipe is what ran and what is recorded: RMSprop at 5e-5, 5 critic steps.
    assert hp["training"]["lr"] == 5e-5 and hp["training"]["n_critic"] == 5
    assert len(hp["sample_accuracy_per_epoch"]) == hp["epochs_run"]
    assert all(0 <= a <= 1 for a in hp["sample_accuracy_per_epoch"])
    # Graded in the sandbox like a student's submission: no error, and every classifier field present.
    grade = json.loads((folder / "grade_result.json").read_text())
    assert grade["error"] is None, grade["error"]
    assert grade["latent_dim"] == 16 and 0 <= grade["cond_accuracy"] <= 1 and grade["fid_ratio"] > 0


def small_gan(loss: str, steps: int = 3, **flags):
    """Run the lab's real training loop for a few steps on 256 images; return (model, disc, ema, history, args)."""
    import argparse

    import labs.cgan as lab
    from vaekit.data import load_mnist

    args = argparse.Namespace(loss=loss, epochs=10, batch_size=32, latent_dim=8, n_critic=0, lr=0.0, aux_weight=1.0,
                              clip=0.01, gp_weight=10.0, seed=0, time_budget=0, **flags)
    torch.manual_seed(0)
    model, disc = lab.C.GenModel(8, channels=8), lab.C.Discriminator(8)
    ema, history, stopped_by, _ = lab.train_gan(model, disc, load_mnist("train").subset(256), args,
                                                torch.device("cpu"), max_steps=steps)
    assert stopped_by == "max_steps"
    return model, disc, ema, history, args


@pytest.mark.parametrize("loss", ["nsgan", "hinge", "wgan-clip", "wgan-gp"])
def test_each_gan_loss_trains_both_networks(loss):
    """A dry run of each loss: finite losses, and both networks' weights moved."""
    import labs.cgan as lab

    torch.manual_seed(0)
    g0, d0 = lab.C.GenModel(8, channels=8).generator.state_dict(), lab.C.Discriminator(8).state_dict()
    model, disc, _, history, _ = small_gan(loss)
    assert all(torch.isfinite(torch.tensor(history[0][k])) for k in ("train_d_loss", "train_g_loss"))
    assert not torch.equal(model.generator.state_dict()["fc.0.weight"], g0["fc.0.weight"])
    assert not torch.equal(disc.state_dict()["out.weight"], d0["out.weight"])


def test_weight_clipping_keeps_the_critic_in_range_and_leaves_the_classifier_alone():
    _, disc, _, _, args = small_gan("wgan-clip")
    critic = disc.critic_parameters()
    assert critic and all(float(p.detach().abs().max()) <= args.clip for p in critic)
    assert float(disc.classify.weight.detach().abs().max()) > args.clip  # the digit head is not part of the critic
    assert not any(p is disc.classify.weight for p in critic)


def test_the_saved_generator_is_the_weight_average_with_its_own_batch_statistics(root, tmp_path, monkeypatch):
    """labs/cgan.py saves the EMA generator (not the last step's), its batch norms recomputed for those weights."""
    import labs.cgan as lab
    from vaekit.checkpoint import load_checkpoint

    seen = {}
    real_train_gan = lab.train_gan

    def spy(model, disc, *a, **k):
        ema, *rest = real_train_gan(model, disc, *a, **k)
        seen["live"] = {n: t.clone() for n, t in model.generator.state_dict().items()}
        seen["ema"] = {n: t.clone() for n, t in ema.state_dict().items()}
        return (ema, *rest)

    monkeypatch.setattr(lab, "train_gan", spy)
    lab.main(["--dry-run", "--no-grade", "--encoder-epochs", "1", "--out", str(tmp_path)])
    saved = load_checkpoint(tmp_path / "Genwithlabel" / "epoch.pth")["model_state_dict"]
    saved_gen = {n.removeprefix("generator."): t for n, t in saved.items() if n.startswith("generator.")}
    assert saved_gen.keys() == seen["ema"].keys()
    assert all(torch.equal(saved_gen[n], seen["ema"][n]) for n in saved_gen)
    assert not torch.equal(saved_gen["fc.0.weight"], seen["live"]["fc.0.weight"])
    # Standing statistics: the EMA's running variance is not the live generator's.
    assert not torch.equal(saved_gen["fc.1.running_var"], seen["live"]["fc.1.running_var"])


def test_ema_decay_warms_up_then_holds():
    import labs.cgan as lab

    ema, live = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    ema.weight.data.fill_(0.0)
    live.weight.data.fill_(1.0)
    lab.update_ema(ema, live, step=0)  # decay 1/10: the first step moves 90 % of the way
    assert float(ema.weight) == pytest.approx(0.9)
    ema.weight.data.fill_(0.0)
    lab.update_ema(ema, live, step=10**6)  # decay capped at EMA_DECAY
    assert float(ema.weight) == pytest.approx(1 - lab.EMA_DECAY)


def test_cgan_variants_table_rows_read_the_graded_folders(tmp_path):
    from labs.cgan_variants import markdown, variant_row

    folder = tmp_path / "Genwithlabel"
    folder.mkdir()
    (folder / "hyperparameters.txt").write_text(json.dumps({
        "gan_seconds": 100.0, "wall_time_s": 120.0, "epochs_run": 3, "training": {"n_critic": 5, "lr": 5e-5},
        "sample_accuracy_per_epoch": [0.5, 0.9, 0.7]}))
    (folder / "grade_result.json").write_text(json.dumps({
        "cond_accuracy": 0.8, "fid_ratio": 12.5, "diversity": 0.9, "memorization": 0.0, "score": 20.0,
        "max_score": 30, "error": None}))
    row = variant_row(folder, "wgan-clip")
    assert row["worst_drop"] == pytest.approx(0.2) and row["epochs"] == 3 and row["cond_accuracy"] == 0.8
    table = markdown([row], 300)
    assert "| wgan-clip | 100.0 | 120.0 | 3 | 80.0 % | 12.5 | 0.900 | 0.0 % | 20.00/30 | 20.0 % |" in table


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


def test_latent_space_lab_writes_every_figure_and_the_psnr_table(root, tmp_path):
    numbers = run_lab(root, "labs/latent_space.py", tmp_path)
    for fig in ("codes.png", "gaussian_samples.png", "perturbations.png", "channel_samples.png",
                "channel_reconstructions.png"):
        assert (tmp_path / fig).stat().st_size > 1000, fig
    models = numbers["models"]
    assert list(models) == ["plain", "channel σ²=0.05", "channel σ²=0.1", "channel σ²=0.15"]
    assert [m["snr_db"] for m in models.values()] == [None, 13.01, 10.0, 8.24]
    assert all(m["heldout_psnr_db"] > 0 for m in models.values())


def test_latent_space_channel_and_gaussian():
    from labs.latent_space import ConvAutoencoder, fit_gaussian, power_normalize, sample_gaussian

    code = torch.randn(5, 16, 8, 8) * torch.arange(1, 6).view(5, 1, 1, 1)
    assert torch.allclose(power_normalize(code).pow(2).mean(dim=(1, 2, 3)), torch.ones(5))
    model = ConvAutoencoder(width=4, noise_var=0.1)
    x = torch.rand(2, 3, 64, 64)
    assert model.encode(x).shape == (2, 16, 8, 8) and model(x).shape == x.shape
    model.eval()
    assert torch.equal(model(x), model(x))  # no channel noise outside training
    assert not torch.equal(model(x, noisy=True), model(x, noisy=True))
    # Draws from a fitted (singular: 3 codes in 6 dims) Gaussian reproduce its mean and covariance.
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(3, 6, generator=g)
    mean, cov = fit_gaussian(codes)
    draws = sample_gaussian(mean, cov, 200_000, g).double()
    torch.testing.assert_close(draws.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), cov, atol=0.03, rtol=0)
    diag = sample_gaussian(mean, cov, 200_000, g, diagonal=True).double()
    torch.testing.assert_close(torch.cov(diag.T), torch.diag(cov.diagonal()), atol=0.03, rtol=0)


def test_adain_matches_the_style_statistics_and_alpha_zero_keeps_the_content():
    from labs.adain import StyleTransfer, adain, load_encoder, mean_std

    g = torch.Generator().manual_seed(0)
    content, style = torch.randn(2, 8, 5, 5, generator=g), 3 + 2 * torch.randn(2, 8, 5, 5, generator=g)
    out = adain(content, style)
    for a, b in zip(mean_std(out), mean_std(style)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    model = StyleTransfer(load_encoder("")[0])
    c, s = torch.rand(1, 3, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g)
    assert model.features(c)[-1].shape == (1, 512, 2, 2)
    torch.testing.assert_close(model.target(c, s, alpha=0.0), model.features(c)[-1])
    assert model(c, s).shape == c.shape
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_adain_loads_the_reference_vgg_layout_and_names_a_wrong_file(tmp_path):
    from labs.adain import load_encoder, vgg_encoder

    full = vgg_encoder()  # the reference file holds all of VGG-19; keys past relu4_1 are dropped
    state = {**full.state_dict(), "40.weight": torch.zeros(1)}
    torch.save(state, tmp_path / "vgg.pth")
    enc, note = load_encoder(str(tmp_path / "vgg.pth"))
    assert "vgg.pth" in note and torch.equal(enc[2].weight, full[2].weight)
    torch.save({"2.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(SystemExit, match="not the normalised VGG-19"):
        load_encoder(str(tmp_path / "bad.pth"))


def test_adain_lab_checkpoints_at_four_fractions_and_stylizes(root, tmp_path):
    numbers = run_lab(root, "labs/adain.py", tmp_path)
    assert [c["fraction"] for c in numbers["checkpoints"]] == [0.1, 0.5, 0.8, 1.0]
    assert numbers["random_encoder"] and "RANDOM" in numbers["encoder"]
    for name in ("decoder_10.pth", "decoder_50.pth", "decoder_80.pth", "decoder_100.pth", "checkpoints.png",
                 "alpha.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert any((tmp_path / "tensorboard").iterdir())
    from torchvision.utils import save_image

    save_image(torch.rand(3, 24, 32), tmp_path / "c.png")
    save_image(torch.rand(3, 40, 40), tmp_path / "s.png")
    r = subprocess.run([sys.executable, "labs/adain.py", "stylize", "--checkpoint", str(tmp_path / "decoder_100.pth"),
                        "--content", str(tmp_path / "c.png"), "--style", str(tmp_path / "s.png"), "--alpha", "0.5",
                        "--output", str(tmp_path / "out.png")], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image

    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (32, 24)  # the content's size (a multiple of 8)


def test_image_folder_is_resized_centre_cropped_and_limited(tmp_path):
    from PIL import Image

    from vaekit.photos import load_image_folder

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (80, 40), (255, 0, 0)).save(tmp_path / "wide.png")
    Image.new("L", (30, 60), 128).save(tmp_path / "sub" / "tall.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    x = load_image_folder(tmp_path, 16)
    assert x.shape == (2, 3, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.allclose(x[1, 0], torch.ones(16, 16), atol=0.01) and float(x[1, 1].max()) < 0.01  # red
    assert load_image_folder(tmp_path, 16, limit=1).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="no readable image"):
        load_image_folder(tmp_path, 16, limit=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing", 16)

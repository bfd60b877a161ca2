"""The submission.py contract, including the course harness's own calls."""

import math

import pytest
import torch
from scipy import stats

import submission as S
from vaekit.contract import Extras, missing_members

SHAPES = [(4, 28, 28), (4, 1, 28, 28), (4, 784)]


@pytest.fixture(params=["VAE", "GenModel"])
def model(request):
    torch.manual_seed(0)
    return getattr(S, request.param)(latent_dim=8).eval()


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_accepts_all_input_shapes(model, shape):
    x = torch.rand(shape)
    y = torch.tensor([0, 3, 7, 9])
    with torch.no_grad():
        recon, mu, logvar = model(x, y)
    assert recon.shape == (4, 1, 28, 28) and mu.shape == logvar.shape == (4, 8)
    assert float(recon.min()) >= 0 and float(recon.max()) <= 1
    assert recon.reshape(4, 28, 28).shape == (4, 28, 28)


def test_course_harness_calls(model, tmp_path):
    # The course harness builds from latent_dim alone, loads ['model_state_dict'], calls model(x, labels)
    # and decode(torch.randn(1, d), torch.tensor(label)) with a 0-dim label.
    path = tmp_path / "epoch.pth"
    torch.save({"model_state_dict": model.state_dict()}, path)
    fresh = type(model)(latent_dim=8)
    fresh.load_state_dict(torch.load(path)["model_state_dict"])
    fresh.eval()
    images, labels = torch.rand(5, 1, 28, 28), torch.randint(0, 10, (5,))
    assert torch.allclose(fresh(images, labels)[0], model(images, labels)[0])
    for label in range(10):
        out = fresh.decode(torch.randn(1, 8), torch.tensor(label))
        assert out.reshape(-1, 28, 28).shape == (1, 28, 28)


def test_eval_reconstruction_is_deterministic_and_equals_decode_of_mu(model):
    x, y = torch.rand(6, 784), torch.arange(6)
    # A fitted (non-identity) prior must not change reconstructions: encode and decode invert it.
    # Enough codes for the default mixtures (400 components; 30 per digit), two per component.
    codes, logvar = model.encode_latent(torch.rand(1000, 784), torch.arange(10).repeat(100))
    model.fit_prior(codes * 3 + 1, logvar, torch.arange(10).repeat(100))
    with torch.no_grad():
        r1, _, _ = model(x, y)
        r2, _, _ = model(x, y)
        assert torch.equal(r1, r2)
        assert torch.allclose(model.decode(model.encode(x, y)[0], y), r1, atol=1e-5)


def test_training_mode_samples_z():
    torch.manual_seed(0)
    m = S.VAE(latent_dim=4).train()
    mu, logvar = torch.zeros(1000, 4), torch.zeros(1000, 4)
    z = m.reparameterize(mu, logvar)
    assert abs(float(z.std()) - 1.0) < 0.05


def test_labels_are_validated():
    m = S.GenModel(latent_dim=4)
    with pytest.raises(ValueError, match="digits 0-9"):
        m.decode(torch.randn(2, 4), torch.tensor([1, 10]))
    with pytest.raises(ValueError, match="2 labels for a batch of 3"):
        m.decode(torch.randn(3, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"\[B,28,28\]"):
        m.encode(torch.rand(2, 30, 30), torch.tensor([1, 2]))


def test_fitted_prior_maps_noise_to_class_gaussian_and_encode_inverts_it():
    torch.manual_seed(0)
    m = S.GenModel(latent_dim=3, components=1).eval()
    y = torch.arange(10).repeat_interleave(500)
    mean = torch.randn(10, 3) * 3
    mu = mean[y] + torch.randn(5000, 3) @ torch.tensor([[1.0, 0, 0], [0.5, 2, 0], [0, 0, 0.5]])
    m.fit_prior(mu, torch.full((5000, 3), -20.0), y)
    assert torch.allclose(m.prior.mean[:, 0], torch.stack([mu[y == c].mean(0) for c in range(10)]), atol=1e-5)
    cov = m.prior.chol[2, 0] @ m.prior.chol[2, 0].T
    assert torch.allclose(cov, torch.cov(mu[y == 2].T), atol=1e-3)
    # decode(eps) uses z = mean + L eps, so encode must return L^-1 (mu_z - mean).
    x = torch.rand(4, 1, 28, 28)
    lab = torch.tensor([2, 2, 5, 9])
    mu_z, _ = m.encode_latent(x, lab)
    eps, _ = m.encode(x, lab)
    z_back = m.prior.mean[lab, 0] + (m.prior.chol[lab, 0] @ eps.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(z_back, mu_z, atol=1e-4)


def test_mixture_prior_fits_clusters_samples_their_shares_and_inverts_exactly():
    torch.manual_seed(0)
    m = S.VAE(latent_dim=4, components=3).eval()
    centres = torch.tensor([[8.0, 0, 0, 0], [0, 8.0, 0, 0], [0, 0, 0, -8.0]])
    shares = torch.tensor([0.5, 0.3, 0.2])
    which = torch.multinomial(shares, 6000, replacement=True, generator=torch.Generator().manual_seed(1))
    codes = centres[which] + 0.5 * torch.randn(6000, 4)
    m.fit_prior(codes, torch.full((6000, 4), -20.0))
    order = torch.cdist(centres, m.prior.mean[0]).argmin(1)  # k-means numbers clusters arbitrarily
    assert torch.allclose(m.prior.mean[0, order], centres, atol=0.05)
    assert torch.allclose(m.prior.weight[0, order], torch.bincount(which).float() / 6000, atol=1e-6)
    # Standard-normal noise lands in each component as often as its weight says...
    group = torch.zeros(20000, dtype=torch.long)
    z = m.prior.to_latent(torch.randn(20000, 4), group)
    landed = torch.bincount(torch.cdist(z, centres).argmin(1), minlength=3).float() / 20000
    assert torch.allclose(landed, shares, atol=0.015)
    # ...and the noise the encoder's codes map to is standard normal again (KS test per coordinate).
    eps, _ = m.prior.to_noise(codes, torch.full((6000, 4), -20.0), group[:6000])
    for j in range(4):
        assert stats.kstest(eps[:, j].numpy(), "norm").pvalue > 1e-3
    assert torch.allclose(m.prior.to_latent(eps, group[:6000]), codes, atol=1e-3)


def test_vae_loss_matches_hand_computation():
    x = torch.zeros(2, 784)
    x[0, :4] = 1.0
    recon = torch.full((2, 784), 0.5)
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    terms = S.vae_loss_terms(recon, x, mu, logvar, var=0.5)
    # Squared error: each image 784 * 0.25 = 196; sum 392; / (2 * 0.5) / batch 2 = 196.
    assert terms["recon"].item() == pytest.approx(196.0)
    # KL per dim: 0.5 * (mu² + σ² - 1 - log σ²): (0.5 + 0.5(2-1-log2)) + (2.0) = 0.5 + 0.1534 + 2.0; / 2
    expected_kl = (0.5 + 0.5 * (1 - math.log(2.0)) + 2.0) / 2
    assert terms["kl"].item() == pytest.approx(expected_kl, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(196.0 + expected_kl, rel=1e-6)
    # vae_loss is the course's: one scalar tensor, the same total, backpropagated as the course's trainer does.
    mu.requires_grad_(True)
    loss = S.vae_loss(recon, x, mu, logvar, var=0.5)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0
    assert loss.item() == pytest.approx(196.0 + expected_kl, rel=1e-6)
    loss.backward()
    assert torch.allclose(mu.grad, mu.detach() / 2)  # d KL / d mu = mu, averaged over the batch of 2


def test_vae_loss_rejects_a_non_positive_variance():
    recon, x, mu = torch.full((1, 784), 0.25), torch.zeros(1, 784), torch.zeros(1, 2)
    with pytest.raises(ValueError, match="var must be positive"):
        S.vae_loss(recon, x, mu, mu, var=0.0)


def test_gaussian_kl_closed_form_against_numeric_integral():
    import numpy as np
    from scipy import integrate, stats

    m1, v1, m2, v2 = 0.3, 0.5, -1.0, 2.0
    p, q = stats.norm(m1, v1**0.5), stats.norm(m2, v2**0.5)
    numeric, _ = integrate.quad(lambda t: p.pdf(t) * (p.logpdf(t) - q.logpdf(t)), -np.inf, np.inf)
    assert S.gaussian_kl(m1, v1, m2, v2) == pytest.approx(numeric, rel=1e-7)
    assert S.gaussian_kl(0.0, 1.0, 0.0, 1.0) == 0.0


def test_submission_is_self_contained(root):
    import ast
    import subprocess
    import sys

    tree = ast.parse((root / "submission.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"torch", "numpy", "math", "__future__", "typing"}, imported
    probe = "import sys, submission; assert not [m for m in sys.modules if m.startswith('vaekit')]"
    subprocess.run([sys.executable, "-c", probe], cwd=root, check=True)


def test_no_mixture_component_is_wider_than_the_volume_quantile():
    torch.manual_seed(0)
    centres = torch.tensor([[8.0, 0, 0], [0, 8.0, 0], [0, 0, 8.0], [-30.0, 0, 0]])
    spread = torch.tensor([0.3, 0.4, 0.5, 3.0])  # the last: a few odd codes spread thin
    which = torch.arange(4).repeat_interleave(torch.tensor([3000, 3000, 3000, 300]))
    codes = centres[which] + spread[which, None] * torch.randn(len(which), 3)
    logvar = torch.full_like(codes, -20.0)
    free, capped = S.VAE(latent_dim=3, components=4).eval(), S.VAE(latent_dim=3, components=4).eval()
    free.prior.fit(codes, logvar, torch.zeros(len(codes), dtype=torch.long), volume_quantile=1.0)
    capped.prior.fit(codes, logvar, torch.zeros(len(codes), dtype=torch.long), volume_quantile=0.5)
    logdet = {name: m.prior.chol[0].diagonal(dim1=-2, dim2=-1).log().sum(-1) for name, m in
              (("free", free), ("capped", capped))}
    wide = int(logdet["free"].argmax())
    assert torch.allclose(free.prior.mean[0, wide], centres[3], atol=0.5)
    assert float(logdet["free"][wide]) == pytest.approx(3 * math.log(3.0), abs=0.2)  # untouched without a cap
    assert torch.all(logdet["capped"] <= torch.quantile(logdet["free"], 0.5) + 1e-5)
    # Capped components shrink equally in every direction; the others, the means and weights stay.
    ratio = capped.prior.chol[0, wide] / free.prior.chol[0, wide]
    assert torch.allclose(ratio[free.prior.chol[0, wide] != 0], ratio[0, 0].expand(6), rtol=1e-4)
    narrow = logdet["free"] <= torch.quantile(logdet["free"], 0.5)
    assert torch.equal(capped.prior.chol[0, narrow], free.prior.chol[0, narrow])
    assert torch.equal(capped.prior.mean, free.prior.mean) and torch.equal(capped.prior.weight, free.prior.weight)


def test_the_kit_model_protocol_names_exactly_what_a_model_lacks():
    """The kit's optional API is stated once (``contract.KitModel``) and checked once: the kit's models offer all
    of it, and for any other model the check names each missing member, nested ones by dotted name."""
    assert missing_members(S.VAE(4)) == () and missing_members(S.GenModel(4)) == ()
    assert missing_members(torch.nn.Linear(2, 2)) == ("encoder", "decoder", "prior", "encode_latent",
                                                      "decode_latent", "fit_prior")
    partial = S.VAE(4)
    partial.prior = torch.nn.Identity()  # a prior with no to_latent
    partial.fit_prior = None
    assert missing_members(partial) == ("prior.to_latent", "fit_prior")
    extras = Extras.of(S, partial)
    assert not extras.kit_model and extras.terms
    assert extras.lacking("VAE") == "VAE.prior.to_latent, VAE.fit_prior"


def test_forward_is_encode_latent_then_decode_latent(model):
    """``forward``'s two halves are the trainer API's ``encode_latent`` / ``decode_latent``: the grader's split
    encoding and decoding processes reproduce the course's ``forward`` bit for bit."""
    torch.manual_seed(1)
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
    recon, mu, logvar = model(x, y)
    mu2, logvar2 = model.encode_latent(x, y)
    assert torch.equal(mu, mu2) and torch.equal(logvar, logvar2)
    assert torch.equal(recon, model.decode_latent(mu2, y))


def test_the_conditional_model_asks_for_labels():
    with pytest.raises(ValueError, match="GenModel is conditional: pass each image's digit label"):
        S.GenModel(4).decode(torch.randn(2, 4))

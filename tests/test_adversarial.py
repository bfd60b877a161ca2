"""Adversarial decoder fine-tuning: the discriminator's shape, the surrogate gradient, what stays frozen."""

import pytest
import torch

import submission as S
from vaekit.adversarial import DecoderCritic, PatchDiscriminator, adversarial_loss, sharpen_decoder
from vaekit.data import Split
from vaekit.settings import FitSettings


def _toy(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 1, 28, 28, generator=g).round(), torch.randint(0, 10, (n,), generator=g))


def test_patch_discriminator_scores_each_patch_and_projects_the_label():
    d = PatchDiscriminator(8, num_labels=10)
    x = torch.rand(5, 1, 28, 28)
    s = d(x, torch.arange(5))
    assert s.shape == (5, 49)
    # The label projection is the only label path: other labels, other scores for the same images.
    assert not torch.allclose(s, d(x, torch.arange(5) + 5))
    assert PatchDiscriminator(8)(x).shape == (5, 49)


def test_adversarial_term_is_scaled_to_weight_times_the_reconstruction_gradient():
    torch.manual_seed(0)
    model = S.GenModel(latent_dim=4, channels=8, hidden=16, components=1).train()
    critic = DecoderCritic(model, conditional=True, channels=8)
    data = _toy(16)
    loss_fn = adversarial_loss(S, critic, weight=0.7, var=0.01)
    critic.step(model, data.x, data.y)
    fake, labels, mu, logvar = critic._fakes  # what loss_fn will take
    terms = loss_fn(model, data.x, data.y)
    recon = S.vae_loss_terms(fake[:16], data.x, mu, logvar, var=0.01)["recon"]
    g_rec = torch.autograd.grad(recon, fake, retain_graph=True)[0]
    g_adv = torch.autograd.grad(-critic.disc(fake, labels).mean(), fake, retain_graph=True)[0]
    # rel 1e-3: spectral norm's power iteration moves the discriminator's weights a hair on each forward.
    assert float(terms["adv_scale"]) == pytest.approx(float(0.7 * g_rec.norm() / (g_adv.norm() + 1e-8)), rel=1e-3)
    # The logged loss is the loss the surrogate's gradient stands for.
    logged = {k: float(v.detach()) for k, v in terms.items()}
    assert logged["loss"] == pytest.approx(logged["recon"] + logged["adv_scale"] * logged["adv"], rel=1e-5)
    # In validation (no grad) only the reconstruction term is reported.
    with torch.no_grad():
        assert set(loss_fn(model.eval(), data.x, data.y)) == {"loss", "recon"}


def test_surrogate_gradient_is_exact_for_fixed_fakes():
    torch.manual_seed(0)
    dec = torch.nn.Linear(4, 784)
    z = torch.randn(6, 4)
    disc = PatchDiscriminator(4)
    fake = torch.sigmoid(dec(z)).reshape(6, 1, 28, 28)
    x = torch.rand(6, 1, 28, 28)
    recon = (fake - x).pow(2).sum() / 6
    adv = -disc(fake).mean()
    g_rec = torch.autograd.grad(recon, fake, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, fake, retain_graph=True)[0]
    surrogate = (fake * (g_rec + 2.0 * g_adv)).sum()
    surrogate.backward(retain_graph=True)
    got = dec.weight.grad.clone()
    dec.zero_grad()
    (recon + 2.0 * adv).backward()
    torch.testing.assert_close(got, dec.weight.grad)


@pytest.mark.parametrize("cls,conditional", [(S.VAE, False), (S.GenModel, True)])
def test_sharpen_changes_only_the_decoder(cls, conditional):
    torch.manual_seed(0)
    model = cls(latent_dim=4, channels=8, hidden=16, components=2)
    data = _toy(64)
    data = Split(data.x, torch.arange(64) % 10)  # every digit at least six times: two components each
    model.eval()
    with torch.no_grad():
        mu, logvar = model.encode_latent(data.x, data.y)
    model.fit_prior(mu, logvar, data.y if conditional else None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = sharpen_decoder(model, S, data, data, FitSettings(2, 1e-3, 16), conditional=conditional, weight=1.0,
                          var=0.01)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("decoder.") for k in changed), changed
    assert res.epochs_run == 2 and "train_critic_loss" in res.history[-1] and "train_adv" in res.history[-1]
    assert all(p.requires_grad for p in model.parameters())  # the freeze is undone afterwards

"""Checkpoint round trips, the training loop, and the train scripts end to end on a tiny budget."""

import json

import pytest
import torch
from conftest import ctrl_c_reaches_python, run_main

import submission as S
from vaekit import checkpoint
from vaekit.data import Split
from vaekit.settings import FitSettings
from vaekit.training_loop import FitHooks, fit


def test_save_load_round_trip_rebuilds_from_hyperparameters_alone(tmp_path):
    torch.manual_seed(0)
    kwargs = checkpoint.constructor_kwargs(S.GenModel, {"latent_dim": 6})
    assert kwargs == {"latent_dim": 6, "channels": 32, "hidden": 256, "components": 30}
    model = S.GenModel(**kwargs).eval()
    model.prior.mean.normal_()  # non-default buffers must survive too
    checkpoint.save_checkpoint(tmp_path / "epoch.pth", model.state_dict(), task="gen", model_kwargs=kwargs)
    checkpoint.write_hyperparameters(tmp_path / "hyperparameters.txt",
                                     {"model_class": "GenModel", "model_kwargs": kwargs, "latent_dim": 6})
    hp = checkpoint.read_hyperparameters(tmp_path / "hyperparameters.txt")
    name, kw = checkpoint.model_spec(hp, "GenModel")
    rebuilt = getattr(S, name)(**kw)
    checkpoint.load_weights(rebuilt, checkpoint.load_checkpoint(tmp_path / "epoch.pth")["model_state_dict"])
    rebuilt.eval()
    x, y = torch.rand(3, 784), torch.tensor([1, 4, 8])
    z = torch.randn(3, 6)
    assert torch.equal(rebuilt(x, y)[0], model(x, y)[0])
    assert torch.equal(rebuilt.decode(z, y), model.decode(z, y))
    # weights_only load of the raw file works, and so does the course harness's plain torch.load.
    assert "model_state_dict" in torch.load(tmp_path / "epoch.pth", weights_only=True)


def test_constructor_kwargs_of_a_class_taking_star_kwargs_rebuild_it():
    # A student's (or a subclass's) ``__init__(self, latent_dim=16, *args, **kwargs)``: the recorded kwargs are the
    # keywords it was built with, never {"args": (), "kwargs": {}}, which would not build it again.
    class Wrapped(S.GenModel):
        def __init__(self, latent_dim: int = 16, *args, **kwargs):
            super().__init__(latent_dim, **kwargs)

    assert checkpoint.constructor_kwargs(Wrapped, {"latent_dim": 6}) == {"latent_dim": 6}
    kwargs = checkpoint.constructor_kwargs(Wrapped, {"latent_dim": 6, "hidden": 64})
    assert kwargs == {"latent_dim": 6, "hidden": 64}
    assert Wrapped(**kwargs).decoder.fc[0].out_features == 64


def test_compile_prefix_is_stripped_and_mismatches_are_named(tmp_path):
    model = S.VAE(latent_dim=4)
    sd = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_state_dict": sd}, tmp_path / "c.pth")
    loaded = checkpoint.load_checkpoint(tmp_path / "c.pth")["model_state_dict"]
    checkpoint.load_weights(S.VAE(latent_dim=4), loaded)
    with pytest.raises(checkpoint.CheckpointError, match="wrong shape: decoder.fc.0.weight"):
        checkpoint.load_weights(S.VAE(latent_dim=5), loaded)


def test_hyperparameters_errors(tmp_path):
    p = tmp_path / "hyperparameters.txt"
    p.write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="not valid JSON"):
        checkpoint.read_hyperparameters(p)
    p.write_text(json.dumps({"model_kwargs": {"channels": 3}}))
    with pytest.raises(checkpoint.CheckpointError, match="no integer latent_dim"):
        checkpoint.read_hyperparameters(p)
    p.write_text(json.dumps({"latent_dim": 12}))
    assert checkpoint.model_spec(checkpoint.read_hyperparameters(p), "VAE") == ("VAE", {"latent_dim": 12})


def _toy_split(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def _loss(model, x, y):
    recon, mu, logvar = model(x, y)
    return S.vae_loss_terms(recon, x, mu, logvar, var=0.1)


def test_fit_is_seeded_and_keeps_best_weights_and_resumes(tmp_path):
    data = _toy_split()

    def train(epochs, state, resume=False, seed=1, max_steps=None):
        torch.manual_seed(123)  # fit must reseed itself: the outer state must not matter
        m = S.VAE(latent_dim=4)
        r = fit(m, _loss, data, data, FitSettings(epochs, 1e-3, 64, seed, max_steps=max_steps),
                FitHooks(state_path=state, resume=resume))
        return m, r

    m1, r1 = train(3, tmp_path / "a.pth")
    m2, _ = train(3, tmp_path / "b.pth")
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert r1.epochs_run == 3 and len(r1.history) == 3
    assert r1.best_valid == min(h["valid_loss"] for h in r1.history)
    assert {"train_loss", "train_recon", "train_kl", "valid_loss", "valid_kl"} <= set(r1.history[0])
    # Stopped after two of three epochs (4 steps each), then resumed: same weights as three straight.
    _, r2 = train(3, tmp_path / "c.pth", max_steps=8)
    assert r2.epochs_run == 2 and r2.stopped_by == "max_steps"
    m3, r3 = train(3, tmp_path / "c.pth", resume=True)
    assert r3.epochs_run == 3
    assert all(torch.allclose(a, b) for a, b in zip(m1.state_dict().values(), m3.state_dict().values()))


def test_fused_adam_is_the_same_rule_and_reproducible(monkeypatch):
    """The train scripts use the fused Adam kernel: it must really run, repeat bit for bit, and take the steps the
    default loop takes (to float rounding)."""
    used = []
    adam_init = torch.optim.Adam.__init__

    def spy(self, params, **kwargs):
        adam_init(self, params, **kwargs)
        used.append(self.defaults["fused"])

    monkeypatch.setattr(torch.optim.Adam, "__init__", spy)

    def train(fused):
        torch.manual_seed(0)
        m = S.VAE(latent_dim=4, channels=8, hidden=16, components=1)
        fit(m, _loss, _toy_split(), _toy_split(64), FitSettings(2, 1e-3, 64, fused=fused))
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    fused_a, fused_b, plain = train(True), train(True), train(False)
    assert used == [True, True, None]
    assert torch.equal(fused_a, fused_b)
    # Adam steps about ±lr whatever a gradient's size, so a parameter whose gradient is ~0 can go either way on a
    # rounding difference: all but a few in a thousand must agree to 1e-5 (measured: 0.08 % do not).
    assert (fused_a - plain).abs().le(1e-5).float().mean() > 0.995


def test_fit_stops_on_max_steps():
    r = fit(S.VAE(latent_dim=2), _loss, _toy_split(), _toy_split(64), FitSettings(5, 1e-3, 32, max_steps=3))
    assert r.steps == 3 and r.stopped_by == "max_steps" and r.epochs_run == 1


@pytest.mark.parametrize("script,folder,cls", [("train_vae.py", "VAEwolabel", "VAE"),
                                                ("train_cond.py", "Genwithlabel", "GenModel")])
def test_train_scripts_dry_run_write_course_files(root, tmp_path, script, folder, cls):
    import subprocess
    import sys

    out = tmp_path / folder
    subprocess.run([sys.executable, script, "--dry-run", "--out", str(out), "--latent-dim", "6",
                    "--workers", "2"], cwd=root, check=True, capture_output=True)
    for name in ("epoch.pth", "hyperparameters.txt", "loss_curves.png", "samples.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 0, name
    hp = json.loads((out / "hyperparameters.txt").read_text())
    assert hp["model_class"] == cls and hp["model_kwargs"]["latent_dim"] == 6 and hp["seed"] == 0
    assert hp["training"]["dry_run"] is True and hp["versions"]["torch"] == torch.__version__
    ckpt = torch.load(out / "epoch.pth", weights_only=True)
    model = getattr(S, cls)(**hp["model_kwargs"])
    model.load_state_dict(ckpt["model_state_dict"])
    assert ckpt["format_version"] == 1 and ckpt["model_class"] == cls
    # The prior was fitted: per group, the model's default number of components, of which the dry run's few
    # codes (two at least per cluster) fill the first ones; their weights are the clusters' shares.
    weight = model.prior.weight
    assert hp["model_kwargs"]["components"] == weight.shape[-1] == getattr(S, cls)().prior.components
    assert hp["extras"] == {"prior": "fitted", "sharpen": "run"}
    assert torch.allclose(weight.sum(-1), torch.ones(len(weight), dtype=weight.dtype))
    assert bool((weight > 0).sum(-1).ge(2).all())
    # The decoder was sharpened after the VAE: both phases are in the history, the sharpening's last.
    history = json.loads((out / "history.json").read_text())
    assert list(history) == ["vae", "sharpen"] and hp["training"]["sharpen_epochs"] == 2
    assert "train_adv" in history["sharpen"][-1] and "train_critic_loss" in history["sharpen"][-1]


def test_train_script_rejects_bad_flags(root, capsys):
    status, _, err = run_main(root, "train_vae.py", "--latent-dim", "0", capsys=capsys)
    assert status == 2 and "--latent-dim must be at least 1" in err
    status, _, err = run_main(root, "train_vae.py", "--no-such-flag", capsys=capsys)
    assert status == 2 and "unrecognized arguments" in err
    status, _, err = run_main(root, "train_cond.py", "--sharpen-epochs", "-1", capsys=capsys)
    assert status == 2 and "--sharpen-epochs and --sharpen-weight must be at least 0" in err


def test_ctrl_c_leaves_a_resumable_state_and_tensorboard_logs(root, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out, tb = tmp_path / "VAEwolabel", tmp_path / "tb"
    # 2 000 images per epoch, many epochs: interrupt after the first epoch's state is on disk.
    cmd = [sys.executable, "-c", "import sys, train_vae; from vaekit import data;"
           "orig = data.load_mnist; data.load_mnist = lambda s, *a: orig(s, *a).subset(2000);"
           "import vaekit.cli as c; c.load_mnist = data.load_mnist;"
           f"train_vae.main(['--out', r'{out}', '--epochs', '50', '--tensorboard', r'{tb}', '--latent-dim', '4'])"]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=ctrl_c_reaches_python)
    deadline = time.time() + 120
    while not (out / "train_state.pth").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log[-2000:]
    assert "interrupted after" in log and "resume with --resume" in log
    hp = json.loads((out / "hyperparameters.txt").read_text())
    assert hp["stopped_by"] == "interrupted" and 1 <= hp["epochs_run"] < 50
    state = torch.load(out / "train_state.pth", weights_only=True)
    assert state["epoch"] == hp["epochs_run"]
    assert list(tb.glob("events.out.tfevents.*"))


def test_dry_run_means_the_same_everywhere(root, capsys):
    """--dry-run's help and meaning come from one place (vaekit.cli) for train scripts, labs and the bench."""
    from vaekit.cli import DRY_RUN_HELP

    for script in ("train_vae.py", "train_cond.py", "train_classifier.py", "labs/autoencoder.py",
                   "labs/classifier.py", "labs/cgan.py", "labs/latent_space.py", "labs/adain.py"):
        status, out, _ = run_main(root, script, "--help", capsys=capsys)
        assert status == 0 and " ".join(DRY_RUN_HELP.split()) in " ".join(out.split()), script


def test_each_train_script_is_the_one_source_of_its_kit_defaults(root):
    """The kit's own models train with exactly the values at the top of each script (no flag passes any)."""
    import train_cond
    import train_vae
    from vaekit import defaults
    from vaekit.course import load_submission
    from vaekit.train_command import SCRIPT_DEFAULTS, train_parser

    sub = load_submission(root / "submission.py")
    for task, script in (("vae", train_vae), ("gen", train_cond)):
        p = train_parser(task, script.__doc__, script.DEFAULTS)
        assert all(p.get_default(k) is None for k in SCRIPT_DEFAULTS)  # None = not passed: resolved per model
        settings = defaults.resolve(task, {}, sub, script.DEFAULTS, kit_model=True)
        assert {k: s.value for k, s in settings.items()} == {k: script.DEFAULTS[k] for k in SCRIPT_DEFAULTS}
    with pytest.raises(ValueError, match="no default for epochs"):
        train_parser("vae", "doc", {k: v for k, v in train_vae.DEFAULTS.items() if k != "epochs"})

"""What a ``submission.py`` must offer (the course's calls) and what the kit may use when it is there.

The course calls a student's file in exactly four ways (``VAE(latent_dim=d)``, ``model(images, labels)``,
``vae_loss(...)`` then ``.backward()``, ``model.decode(torch.randn(1, d), torch.tensor(c))``). ``check``
makes each call once on a few real images before anything is trained or packed, and says in one sentence
which call failed and what the course expects. Everything else is an optional extra (``Extras``), detected
once; the train scripts skip a missing one with one line saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from .course import TASKS, SubmissionError

# The kit's extras: the model attributes / submission functions each one needs.
PRIOR_NEEDS = ("encode_latent", "fit_prior")  # a prior fitted to the training codes after training
SHARPEN_NEEDS = ("encoder", "decoder", "encode_latent", "decode_latent", "prior")  # adversarial decoder sharpening
TERMS_FUNCTION = "vae_loss_terms"  # named loss terms to log (and sharpening's reconstruction term)


class ContractError(SubmissionError):
    """A course call failed on the student's file; the message names the call and what the course expects."""


@dataclass(frozen=True)
class Extras:
    """Which of the kit's optional extras a submission's model offers (and, for each missing one, what it lacks)."""

    prior: tuple[str, ...]  # missing names; empty = offered
    sharpen: tuple[str, ...]
    terms: bool  # the submission defines vae_loss_terms

    @classmethod
    def of(cls, sub: ModuleType, model: nn.Module) -> Extras:
        missing = lambda names: tuple(n for n in names if not hasattr(model, n))  # noqa: E731
        terms = callable(getattr(sub, TERMS_FUNCTION, None))
        return cls(missing(PRIOR_NEEDS), missing(SHARPEN_NEEDS) + (() if terms else (TERMS_FUNCTION,)), terms)


def model_class(sub: ModuleType, task: str) -> type:
    name = TASKS[task].model_class
    cls = getattr(sub, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ContractError(f"submission.py has no nn.Module class {name}: the course imports {name} from it.")
    return cls


def build(sub: ModuleType, task: str, latent_dim: int) -> nn.Module:
    """``VAE(latent_dim=d)`` / ``GenModel(latent_dim=d)``, as the course builds it."""
    cls = model_class(sub, task)
    try:
        return cls(latent_dim=latent_dim)
    except Exception as e:  # noqa: BLE001 - the student's constructor
        raise ContractError(f"{cls.__name__}(latent_dim={latent_dim}) failed ({type(e).__name__}: {e}); the course "
                            "builds the model from latent_dim alone.") from e


def forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``recon_x, mu, log_var = model(images, labels)`` with the shapes the course relies on."""
    name = type(model).__name__
    expected = ("the course passes float images [B,1,28,28] in [0, 1] and int64 labels [B] and expects "
                "(recon_x, mu, log_var)")
    try:
        out = model(x, y)
        recon_x, mu, log_var = out
    except Exception as e:  # noqa: BLE001
        raise ContractError(f"{name}(images, labels) failed ({type(e).__name__}: {e}); {expected}.") from e
    for what, t in (("recon_x", recon_x), ("mu", mu), ("log_var", log_var)):
        if not isinstance(t, torch.Tensor):
            raise ContractError(f"{name}(images, labels) returned {what} as {type(t).__name__}; {expected}.")
    if recon_x.numel() != x.numel():
        raise ContractError(f"{name}(images, labels) returned recon_x of shape {tuple(recon_x.shape)} for "
                            f"{len(x)} images; the course views it as [B,1,28,28].")
    if mu.dim() != 2 or len(mu) != len(x) or log_var.shape != mu.shape:
        raise ContractError(f"{name}(images, labels) returned mu {tuple(mu.shape)} and log_var "
                            f"{tuple(log_var.shape)}; both must be [B, latent_dim].")
    return recon_x, mu, log_var


def loss(sub: ModuleType, recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
         var: float) -> torch.Tensor:
    """``vae_loss(recon_x, x, mu, log_var, var=var)``: one scalar tensor the course's trainer can backpropagate."""
    fn = getattr(sub, "vae_loss", None)
    if not callable(fn):
        raise ContractError("submission.py has no function vae_loss: the course's trainer calls "
                            "vae_loss(recon_x, images, mu, log_var, var=var).")
    try:
        value = fn(recon_x, x, mu, log_var, var=var)
    except Exception as e:  # noqa: BLE001
        raise ContractError(f"vae_loss(recon_x, images, mu, log_var, var={var}) failed ({type(e).__name__}: {e}); "
                            "the course's trainer calls it so.") from e
    if not (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()):
        got = type(value).__name__ if not isinstance(value, torch.Tensor) else f"a tensor of shape {tuple(value.shape)}"
        raise ContractError(f"vae_loss returned {got}; the course's trainer calls loss.backward() on what it "
                            "returns, so it must be one scalar tensor (named terms belong in a separate function).")
    if torch.is_grad_enabled() and not value.requires_grad:
        raise ContractError("vae_loss returned a tensor with no gradient: loss.backward() would train nothing.")
    return value.reshape(())


@torch.no_grad()
def decode_one(model: nn.Module, latent_dim: int, label: int) -> torch.Tensor:
    """``model.decode(torch.randn(1, d), torch.tensor(label)).view(28, 28)``, as the course's inference samples."""
    try:
        return model.decode(torch.randn(1, latent_dim), torch.tensor(label)).cpu().view(28, 28)
    except Exception as e:  # noqa: BLE001
        raise ContractError(f"{type(model).__name__}.decode(torch.randn(1, {latent_dim}), torch.tensor({label})) "
                            f"failed ({type(e).__name__}: {e}); the course's inference.py passes each label as a "
                            "0-dim tensor and views the result as one 28x28 image.") from e


def check(sub: ModuleType, task: str, latent_dim: int, x: torch.Tensor, y: torch.Tensor,
          var: float = 0.01) -> Extras:
    """Each course call once on ``x`` ``[B,1,28,28]`` and ``y`` ``[B]``; raises ``ContractError`` on the first
    that fails. Returns the extras the model offers. The model is built under a fixed seed and thrown away."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        model = build(sub, task, latent_dim)
        model.train()
        recon_x, mu, log_var = forward(model, x, y)
        loss(sub, recon_x, x, mu, log_var, var=var)
        model.eval()
        decode_one(model, latent_dim, int(y[0]))
        return Extras.of(sub, model)
    finally:
        torch.random.set_rng_state(state)


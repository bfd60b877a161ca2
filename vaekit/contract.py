"""What a ``submission.py`` must offer (the course's calls) and what the kit may use when it is there.

The course calls a student's file in exactly four ways (``VAE(latent_dim=d)``, ``model(images, labels)``,
``vae_loss(...)`` then ``.backward()``, ``model.decode(torch.randn(1, d), torch.tensor(c))``). ``check``
makes each call once on a few real images before anything is trained or packed, and says in one sentence
which call failed and what the course expects. Everything else is the kit's optional API (``KitModel``),
checked once (``Extras``); the train scripts skip an extra the model lacks with one line naming what it lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, get_type_hints

import torch
from torch import nn

from .building import course_model
from .course import SubmissionError, place

TERMS_FUNCTION = "vae_loss_terms"  # named loss terms to log (and sharpening's reconstruction term)


class LatentPrior(Protocol):
    def to_latent(self, eps: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """Standard-normal noise ``[B, d]`` -> z in the decoder's coordinates, through group ``[B]``'s prior."""


class KitModel(Protocol):
    """The optional model API the kit's trainer uses beyond the course's four calls. The kit's ``VAE`` and
    ``GenModel`` offer it; a model that lacks any of it trains and grades without the extras below.

    * ``encode_latent`` / ``decode_latent``: ``forward``'s two halves, in the decoder's own z coordinates (those
      it was trained in against N(0, I)); the grader's encoding and decoding processes use them too.
    * ``fit_prior``: after training, fit ``prior`` to the training set's codes (``--prior fitted``).
    * ``encoder``, ``decoder`` and ``prior.to_latent``: sharpening fine-tunes ``decoder`` with ``encoder``
      frozen and decodes prior samples (it also needs the submission's ``vae_loss_terms``).
    """

    encoder: nn.Module
    decoder: nn.Module
    prior: LatentPrior

    def encode_latent(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode_latent(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor: ...

    def fit_prior(self, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor | None,
                  **options: float) -> None: ...


def missing_members(obj: object, protocol: type = KitModel, prefix: str = "") -> tuple[str, ...]:
    """The members of ``protocol`` that ``obj`` lacks (a method must be callable), nested protocols by dotted name:
    ``("fit_prior", "prior.to_latent")``. Empty when ``obj`` offers all of it."""
    hints = get_type_hints(protocol)
    methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    missing: list[str] = []
    for name in [*hints, *methods]:
        value = getattr(obj, name, None)
        if value is None or (name in methods and not callable(value)):
            missing.append(prefix + name)
        elif getattr(hints.get(name), "_is_protocol", False):
            missing += missing_members(value, hints[name], f"{prefix}{name}.")
    return tuple(missing)


class ContractError(SubmissionError):
    """A course call failed on the student's file; the message names the call and what the course expects."""


@dataclass(frozen=True)
class Extras:
    """What of the kit's optional API a submission offers, checked once (``check``) before training."""

    missing: tuple[str, ...]  # the ``KitModel`` members the model lacks; empty = it offers them all
    terms: bool  # the submission defines vae_loss_terms

    @classmethod
    def of(cls, sub: ModuleType, model: nn.Module) -> Extras:
        return cls(missing_members(model), callable(getattr(sub, TERMS_FUNCTION, None)))

    @property
    def kit_model(self) -> bool:
        return not self.missing

    def lacking(self, class_name: str, *, terms: bool = False) -> str:
        """What an extra needs and the submission lacks, by name: ``VAE.fit_prior, VAE.prior.to_latent``
        (``terms``: with ``submission.vae_loss_terms`` too where that is missing)."""
        parts = [f"{class_name}.{n}" for n in self.missing]
        parts += [f"submission.{TERMS_FUNCTION}"] if terms and not self.terms else []
        return ", ".join(parts)


def source_of(model: nn.Module) -> str:
    """The file that defines the model's ``forward`` (the student's submission), for ``place``."""
    code = getattr(getattr(type(model), "forward", None), "__code__", None)
    return code.co_filename if code else "submission.py"


def forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``recon_x, mu, log_var = model(images, labels)`` with the shapes the course relies on."""
    name = type(model).__name__
    expected = ("the course passes float images [B,1,28,28] in [0, 1] and int64 labels [B] and expects "
                "(recon_x, mu, log_var)")
    try:
        out = model(x, y)
        recon_x, mu, log_var = out
    except Exception as e:  # noqa: BLE001
        raise ContractError(f"{name}(images, labels) failed{place(e, source_of(model))}: {type(e).__name__}: {e}; "
                            f"{expected}.") from e
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
        raise ContractError(f"vae_loss(recon_x, images, mu, log_var, var={var}) failed{place(e, sub)}: "
                            f"{type(e).__name__}: {e}; the course's trainer calls it so.") from e
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
                            f"failed{place(e, source_of(model))}: {type(e).__name__}: {e}; the course's inference.py "
                            "passes each label as a 0-dim tensor and views the result as one 28x28 image.") from e


def check(sub: ModuleType, task: str, latent_dim: int, x: torch.Tensor, y: torch.Tensor,
          var: float = 0.01) -> Extras:
    """Each course call once on ``x`` ``[B,1,28,28]`` and ``y`` ``[B]``; raises ``ContractError`` on the first
    that fails. Returns the extras the model offers. The model is built under a fixed seed and thrown away."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        model = course_model(sub, task, latent_dim)
        model.train()
        recon_x, mu, log_var = forward(model, x, y)
        loss(sub, recon_x, x, mu, log_var, var=var)
        model.eval()
        decode_one(model, latent_dim, int(y[0]))
        return Extras.of(sub, model)
    finally:
        torch.random.set_rng_state(state)


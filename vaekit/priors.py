"""Fit a trained model's prior to its training codes, or refit a trained folder's prior with other settings.

The train scripts fit it once after training (``fit_class_prior``); the bench's ablations and the report's
experiments refit a trained folder's prior on the same weights (``refit_prior``), which costs no training.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from torch import nn

from . import checkpoint
from .building import load_model
from .course import TASKS, trained_from


@torch.no_grad()
def fit_class_prior(model: nn.Module, x: torch.Tensor, y: torch.Tensor, shrink: float, **options: float) -> None:
    """Fit the model's prior (one mixture, or one per digit) to the encoder's codes of the training set;
    ``options`` go to ``fit_prior`` as they are (the kit's: ``volume_quantile``)."""
    model.eval()
    device = next(model.parameters()).device
    mus, logvars = [], []
    for i in range(0, len(x), 2000):
        mu, logvar = model.encode_latent(x[i:i + 2000].to(device), y[i:i + 2000].to(device))
        mus.append(mu)
        logvars.append(logvar)
    model.fit_prior(torch.cat(mus), torch.cat(logvars), y.to(device), shrink=shrink, **options)


def refit_prior(src: Path, dst: Path, task: str, x: torch.Tensor, y: torch.Tensor, components: int | None = None,
                prior_shrink: float | None = None, **options: float) -> None:
    """Copy a trained submission folder to ``dst`` and refit its prior to the codes of ``x`` (no retraining):
    ``components`` Gaussians and ``prior_shrink`` (default: as trained) and ``fit_prior`` ``options``."""
    folder = TASKS[task].folder
    shutil.copytree(src / folder, dst / folder, ignore=shutil.ignore_patterns("*_state.pth"), dirs_exist_ok=True)
    source = (src / "submission.py").read_text()
    if components:  # as a default: the course builds the model from latent_dim alone and loads it strictly
        source = re.sub(r"components: int = \d+", f"components: int = {components}", source)
    (dst / "submission.py").write_text(source)
    overrides = {"components": components} if components else None
    model, hp = load_model(dst / folder, dst / "submission.py", overrides=overrides, weights=False)
    weights = checkpoint.load_checkpoint(dst / folder / "epoch.pth")["model_state_dict"]
    model.load_state_dict({k: v for k, v in weights.items() if not k.startswith("prior.")}, strict=False)
    if prior_shrink is not None:
        hp["training"]["prior_shrink"] = prior_shrink
    fit_class_prior(model, x, y, hp["training"]["prior_shrink"], **options)
    checkpoint.save_checkpoint(dst / folder / "epoch.pth", model.state_dict(), task=task,
                               model_class=hp["model_class"], model_kwargs=hp["model_kwargs"])
    hp["trained_from"] = trained_from(dst / "submission.py", dst / folder / "epoch.pth")
    checkpoint.write_hyperparameters(dst / folder / "hyperparameters.txt", hp)

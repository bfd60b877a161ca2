"""The training defaults that belong to the model being trained, and where each one came from.

Each of ``train_vae.py`` / ``train_cond.py``'s settings is, in this order of precedence:

1. the flag the student passed;
2. the default the student wrote into their own signatures: ``vae_loss(..., var=0.5)``, ``VAE(latent_dim=20)``;
3. for a model that offers the kit's API (``vaekit.contract.KitModel``), what the kit's models are tuned for (each
   script's ``DEFAULTS``); for any other model, what the course's own ``train.py`` trains it with
   (``vaekit.course.COURSE_TRAINING``).

The kit-only settings (the fitted prior's shrink, sharpening) have only the flag and the kit's value.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .course import COURSE_TRAINING, TASKS

SHARED = tuple(COURSE_TRAINING)  # epochs, latent_dim, lr, batch_size, var: every model has them
KIT_ONLY = ("prior_shrink", "sharpen_epochs", "sharpen_weight", "sharpen_lr")  # only the kit's extras read them
FROM_COURSE = "the course's train.py"
FROM_KIT = "the kit's tuning"


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # "--var", "vae_loss(..., var=0.5) in submission.py", FROM_COURSE or FROM_KIT


def _default(fn: Any, name: str) -> Any:
    """The default of parameter ``name`` of ``fn``; None where it has none (or ``fn`` has no readable signature)."""
    try:
        param = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return None
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def signature_defaults(sub: ModuleType, task: str) -> dict[str, Setting]:
    """The defaults the student wrote themselves: ``var`` of ``vae_loss`` (a positive number) and ``latent_dim`` of the
    task's class (an integer in 1..784). The course's harness passes both explicitly, so these are the student's
    intent, not the course's."""
    found: dict[str, Setting] = {}
    var = _default(getattr(sub, "vae_loss", None), "var")
    if isinstance(var, (int, float)) and not isinstance(var, bool) and var > 0:
        found["var"] = Setting(float(var), f"vae_loss(..., var={var:g}) in submission.py")
    name = TASKS[task].model_class
    cls = getattr(sub, name, None)
    d = _default(cls.__init__, "latent_dim") if isinstance(cls, type) else None
    if isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 784:
        found["latent_dim"] = Setting(d, f"{name}(latent_dim={d}) in submission.py")
    return found


def resolve(task: str, given: dict[str, Any], sub: ModuleType, kit_defaults: dict[str, Any],
            kit_model: bool) -> dict[str, Setting]:
    """Every setting of ``SHARED`` and ``KIT_ONLY`` with its source. ``given``: the flags (None = not passed);
    ``kit_defaults``: the script's own tuned values; ``kit_model``: the submission offers the kit's API."""
    own = signature_defaults(sub, task)
    settings: dict[str, Setting] = {}
    for key in (*SHARED, *KIT_ONLY):
        if given.get(key) is not None:
            settings[key] = Setting(given[key], f"--{key.replace('_', '-')}")
        elif key in own:
            settings[key] = own[key]
        elif kit_model or key in KIT_ONLY:
            settings[key] = Setting(kit_defaults[key], FROM_KIT)
        else:
            settings[key] = Setting(COURSE_TRAINING[key], FROM_COURSE)
    return settings


def describe(settings: dict[str, Setting], keys: tuple[str, ...] = SHARED) -> str:
    """``epochs 10 (the course's train.py), var 0.5 (vae_loss(..., var=0.5) in submission.py), ...``"""
    return ", ".join(f"{k} {settings[k].value:g} ({settings[k].source})" for k in keys)


OWN = {"var": "vae_loss's own default for var", "latent_dim": "the class's own default for latent_dim"}


def flag_help(key: str, kit_defaults: dict[str, Any]) -> str:
    """The ``(default: ...)`` of a shared flag's help: its sources, in their order."""
    own = f"{OWN[key]} where it has one, else " if key in OWN else ""
    return (f"(default: {own}{kit_defaults[key]:g} for a model with the kit's API, else {COURSE_TRAINING[key]:g} as "
            "the course's train.py)")

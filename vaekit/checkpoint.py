"""Checkpoint and ``hyperparameters.txt`` I/O — the one place that reads or writes them.

``epoch.pth`` holds ``{"model_state_dict": ..., "format_version": 1, ...primitive metadata}``: no pickled
objects, so ``torch.load(path, weights_only=True)`` reads it, and so does the course harness's
``torch.load(path)["model_state_dict"]``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .outputs import write_atomic

FORMAT_VERSION = 1
COMPILE_PREFIX = "_orig_mod."


class CheckpointError(RuntimeError):
    """A checkpoint or hyperparameters file is missing, unreadable or does not fit the model."""


def constructor_kwargs(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """Every keyword of ``cls.__init__``: the given values plus the defaults of the rest."""
    sig = inspect.signature(cls.__init__)
    bound = sig.bind_partial(None, **given)  # None stands for self
    bound.apply_defaults()
    found: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:  # ``**kwargs``: its keys, not a keyword named "kwargs"
            found.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL and name != "self" and not name.startswith("_"):
            found[name] = value
    return found


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], **meta: Any) -> None:
    """Save weights plus primitive metadata (numbers, strings, lists, dicts of those)."""
    json.dumps(meta)  # Fails loudly on anything that is not plain data.
    payload = {"model_state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
               "format_version": FORMAT_VERSION, **meta}
    write_atomic(Path(path), lambda p: torch.save(payload, p))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True`` on CPU; strip a ``torch.compile`` prefix from the keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise CheckpointError(f"{path.name} is not a weights-only checkpoint ({type(e).__name__}: {e}).") from e
    if isinstance(ckpt, dict) and "model_state_dict" not in ckpt and ckpt and all(
        isinstance(v, torch.Tensor) for v in ckpt.values()
    ):
        ckpt = {"model_state_dict": ckpt}  # A bare state dict, as some students save it.
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state_dict"), dict):
        raise CheckpointError(f"{path.name} has no 'model_state_dict' entry.")
    ckpt["model_state_dict"] = {
        k.removeprefix(COMPILE_PREFIX): v for k, v in ckpt["model_state_dict"].items()
    }
    return ckpt


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Strict load with an error that names the mismatched keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError("checkpoint does not fit the model (" + "; ".join(parts) + ").")
    model.load_state_dict(state_dict)


def file_sha256(path: str | Path) -> str:
    """Content hash of a file (checkpoints, the classifier, report inputs)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
    import numpy

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}


def write_hyperparameters(path: str | Path, hp: dict[str, Any]) -> None:
    """One pretty-printed JSON object, keys sorted so two runs diff cleanly."""
    write_atomic(Path(path), lambda p: p.write_text(json.dumps(hp, indent=2, sort_keys=True) + "\n"))


def read_hyperparameters(path: str | Path) -> dict[str, Any]:
    """Parse ``hyperparameters.txt``; it must be a JSON object with an integer ``latent_dim``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.name} does not exist.")
    try:
        hp = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path.name} is not valid JSON ({e}).") from e
    if not isinstance(hp, dict):
        raise CheckpointError(f"{path.name} must hold a JSON object.")
    latent = hp.get("model_kwargs", {}).get("latent_dim", hp.get("latent_dim"))
    if not isinstance(latent, int) or isinstance(latent, bool) or not 1 <= latent <= 784:
        raise CheckpointError(f"{path.name} has no integer latent_dim in 1..784 (got {latent!r}).")
    return hp


def model_spec(hp: dict[str, Any], default_class: str) -> tuple[str, dict[str, Any]]:
    """(class name, constructor kwargs) from hyperparameters; a bare ``latent_dim`` works too."""
    kwargs = hp.get("model_kwargs")
    if not isinstance(kwargs, dict):
        kwargs = {"latent_dim": hp["latent_dim"]}
    return str(hp.get("model_class", default_class)), dict(kwargs)

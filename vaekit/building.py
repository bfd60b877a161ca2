"""Build a submission's model, the one place its class is called.

``load_model`` rebuilds a course folder's model (class, kwargs and latent size from its hyperparameters, weights
from its checkpoint) for training, the grader's worker, pack, the bench and the report; ``course_model`` builds it
from ``latent_dim`` alone, as the course's harness does, for a fresh training run and the course replay."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from . import checkpoint
from .checkpoint import CheckpointError
from .course import MODEL_FILES, TASKS, TRAINER_HYPERPARAMETERS, SubmissionError, load_submission, model_files, place


def instantiate(sub: ModuleType, class_name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``sub.<class_name>(**kwargs)``, as a folder's hyperparameters name it, with a sentence-long error for every way
    that can fail (the grader's ``scoring.builds_nothing`` reads its start)."""
    if not class_name.isidentifier():
        raise SubmissionError(f"hyperparameters.txt names model_class {class_name!r}, not a class name.")
    cls = _module_class(sub, class_name, "(named in hyperparameters.txt).")
    try:
        return cls(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise SubmissionError(f"{class_name}(**{kwargs}) failed{place(e, sub)}: {type(e).__name__}: {e}") from e


def course_model(sub: ModuleType, task: str, latent_dim: int) -> nn.Module:
    """``VAE(latent_dim=d)`` / ``GenModel(latent_dim=d)``, as the course builds it: what the train scripts start
    from and what the course replay loads its weights into."""
    name = TASKS[task].model_class
    cls = _module_class(sub, name, f": the course imports {name} from it.")
    try:
        return cls(latent_dim=latent_dim)
    except Exception as e:  # noqa: BLE001 - the student's constructor
        raise SubmissionError(f"{name}(latent_dim={latent_dim}) failed{place(e, sub)}: {type(e).__name__}: "
                              f"{e}; the course builds the model from latent_dim alone.") from e


def _module_class(sub: ModuleType, name: str, why: str) -> type[nn.Module]:
    cls = getattr(sub, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        sep = "" if why.startswith(":") else " "
        raise SubmissionError(f"submission.py has no nn.Module class {name}{sep}{why}")
    return cls


def _fitting_latent_dim(sub: ModuleType, class_name: str, kwargs: dict[str, Any],
                      state: dict[str, torch.Tensor], seed: int = 0) -> tuple[nn.Module, int] | None:
    """The model whose ``latent_dim`` makes ``state`` load strictly, trying each size the checkpoint's tensors
    have (the course trainer records ``latent_dim: 20`` whatever the model's size); None if none does."""
    sizes = sorted({n for t in state.values() for n in t.shape if 1 <= n <= 784} - {kwargs.get("latent_dim")})
    for d in sizes[:64]:
        torch.manual_seed(seed)
        try:
            model = instantiate(sub, class_name, {**kwargs, "latent_dim": d})
            checkpoint.load_weights(model, state)
        except (SubmissionError, CheckpointError):
            continue
        return model, d
    return None


def load_model(folder: str | Path, submission: str | Path | ModuleType | None = None, *,
               overrides: dict[str, Any] | None = None, weights: bool = True,
               default_class: str | None = None, seed: int = 0,
               detect_latent: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a course folder from its hyperparameters file and load its checkpoint into it
    (``model_files``: the brief's names or the course trainer's).

    ``submission`` is a path or an imported module (default: the project's ``submission.py``);
    ``overrides`` replaces constructor kwargs; ``weights=False`` skips loading. ``detect_latent``: when the
    recorded ``latent_dim`` does not fit the weights, use the one that does (``_fitting_latent_dim``) and keep the
    recorded one as ``latent_dim_recorded``. Returns (model in eval mode, hyperparameters with the kwargs
    actually used). Raises ``CheckpointError`` / ``SubmissionError``.
    """
    folder = Path(folder)
    ckpt, hp_file = model_files(folder)
    if hp_file is None:
        raise CheckpointError(f"{folder.name}/ has neither {MODEL_FILES[1]} nor {TRAINER_HYPERPARAMETERS}.")
    hp = checkpoint.read_hyperparameters(hp_file)
    task = TASKS.get(hp.get("task"), TASKS["vae"])
    class_name, kwargs = checkpoint.model_spec(hp, default_class or task.model_class)
    kwargs.update(overrides or {})
    sub = submission if isinstance(submission, ModuleType) else load_submission(submission)
    if weights:
        if ckpt is None:
            raise CheckpointError(f"{folder.name}/ has neither {MODEL_FILES[0]} nor an epoch_<N>.pth.")
        state = checkpoint.load_checkpoint(ckpt)["model_state_dict"]
    torch.manual_seed(seed)  # a constructor that draws random buffers builds the same model every time
    model = instantiate(sub, class_name, kwargs)
    extra: dict[str, Any] = {}
    if weights:
        try:
            checkpoint.load_weights(model, state)
        except CheckpointError:
            found = _fitting_latent_dim(sub, class_name, kwargs, state, seed) if detect_latent else None
            if found is None:
                raise
            (model, d), recorded = found, kwargs["latent_dim"]
            kwargs["latent_dim"] = extra["latent_dim"] = d
            extra["latent_dim_recorded"] = recorded
    return model.eval(), {**hp, "model_class": class_name, "model_kwargs": kwargs, **extra}

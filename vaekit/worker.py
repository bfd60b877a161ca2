"""Child process that runs a submission's code: ``python -m vaekit.worker JOB.json``.

It imports the untrusted ``submission.py``, rebuilds the model from ``hyperparameters.txt``, loads
``epoch.pth`` with ``weights_only=True``, reconstructs the test images and draws the samples, checks
every output, and writes uint8 arrays to ``job["output"]`` (an ``.npz``). Failures go to
``job["error_file"]`` as one sentence; the parent turns them into the task's ``error``. The classifier
and all scoring stay in the parent, out of the submission's reach.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, load_checkpoint, load_weights, model_spec, read_hyperparameters
from .generation import TASKS, fast_layout, load_submission, reconstruct, sample
from .metrics import quantize
from .sandbox import SubmissionError


def check_images(images: torch.Tensor, what: str, warnings: list[str]) -> torch.Tensor:
    """Pixels must be finite; values outside [0,1] are clamped *and recorded*. (Shapes are checked per
    ``decode`` call by ``generation.as_image_batch``.)"""
    images = images.detach().float()
    if not torch.isfinite(images).all():
        raise SubmissionError(f"{what}: the model produced NaN or infinite pixels.")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-4 or hi > 1 + 1e-4:
        warnings.append(f"{what}: pixel values spanned [{lo:.3g}, {hi:.3g}] and were clamped to [0, 1].")
    return images.clamp(0, 1)


def run_job(job: dict) -> None:
    torch.set_num_threads(job["threads"])
    task, folder = job["task"], Path(job["folder"])
    _, default_class = TASKS[task]
    hp = read_hyperparameters(folder / "hyperparameters.txt")
    class_name, kwargs = model_spec(hp, default_class)
    if not class_name.isidentifier():
        raise SubmissionError(f"hyperparameters.txt names model_class {class_name!r}, not a class name.")
    ckpt = load_checkpoint(folder / "epoch.pth")

    try:
        sub = load_submission(job["submission"])
    except Exception as e:  # noqa: BLE001 - the student's import error is reported, not raised
        raise SubmissionError(f"importing submission.py failed: {type(e).__name__}: {e}") from e
    cls = getattr(sub, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise SubmissionError(f"submission.py has no nn.Module class {class_name} (named in hyperparameters.txt).")
    try:
        torch.manual_seed(job["seed"])
        model = cls(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise SubmissionError(f"{class_name}(**{kwargs}) failed: {type(e).__name__}: {e}") from e
    load_weights(model, ckpt["model_state_dict"])
    fast_layout(model.eval())
    latent_dim = int(kwargs["latent_dim"])

    with np.load(job["test"], allow_pickle=False) as f:
        x = torch.from_numpy(f["x"]).float().div(255).unsqueeze(1)
        y = torch.from_numpy(f["y"]).long()

    warnings: list[str] = []
    conditional = task == "gen"
    try:
        recon, width = reconstruct(model, x, y, conditional)
    except Exception as e:  # noqa: BLE001
        raise SubmissionError(f"reconstructing test images failed: {type(e).__name__}: {e}") from e
    if width != latent_dim:
        raise SubmissionError(f"encode returned mu of width {width}, but latent_dim is {latent_dim}.")
    recon = check_images(recon, "reconstructions", warnings)

    labels = torch.arange(10).repeat_interleave(job["per_label"])
    try:
        samples = sample(model, labels, latent_dim, seed=job["seed"])
    except Exception as e:  # noqa: BLE001
        raise SubmissionError(f"sampling decode(z, label) failed: {type(e).__name__}: {e}") from e
    samples = check_images(samples, "samples", warnings)

    np.savez(job["output"], recon=quantize(recon), samples=quantize(samples), sample_labels=labels.numpy(),
             latent_dim=np.int64(latent_dim), model_class=np.str_(class_name),
             warnings=np.array(warnings, dtype=np.str_))


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (job["memory_bytes"], job["memory_bytes"]))
    try:
        run_job(job)
    except (SubmissionError, CheckpointError) as e:
        Path(job["error_file"]).write_text(str(e))
        sys.exit(3)
    except MemoryError:
        Path(job["error_file"]).write_text("the submission ran out of memory (over the grader's memory cap).")
        sys.exit(3)
    except Exception as e:  # noqa: BLE001 - whatever the submission raised
        tb = traceback.extract_tb(e.__traceback__)
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        Path(job["error_file"]).write_text(f"{type(e).__name__}: {e}{where}")
        sys.exit(3)


if __name__ == "__main__":
    main()

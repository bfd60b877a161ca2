"""The course harness's inference, replayed call for call, so the course fields of ``grade_result.json`` are
the numbers the course's own ``inference.py`` + ``grade.py`` print on the same files.

What the harness does, in order (and so this module):

1. seed 42 for Python's ``random``, NumPy and torch (cuDNN deterministic) — *before* the model is built,
   so a model's own initialisation draws from that stream;
2. ``VAE(latent_dim=d)`` or ``GenModel(latent_dim=d)``, the checkpoint's ``model_state_dict`` loaded strictly,
   ``eval()``;
3. the test set through ``DataLoader(batch_size=4096, shuffle=False)`` (starting its iteration draws one
   number from torch's global generator) and ``recon_x, _, _ = model(images, labels)`` under ``no_grad``;
   each image saved as ``torchvision.utils.save_image`` writes it: ×255, +0.5, clamp, uint8;
4. continuing the same random stream, for each digit ``c`` and ``per_digit`` times:
   ``model.decode(torch.randn(1, d), torch.tensor(c)).view(28, 28)``, saved as ``(img.numpy() * 255)``
   cast to uint8 (truncation). 10 per digit for the VAE task, 100 for the conditional one.

It runs inside the grader's sandbox, in the process that already holds the test images; its images serve
only the course fields. Each failure is one sentence naming the call and what the course expects.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import contract
from .building import course_model
from .course import SubmissionError

SEED = 42
BATCH_SIZE = 4096
SAMPLES_PER_DIGIT = {"vae": 10, "gen": 100}  # inference.py's inf_num // 10: 100 and 1000 images in all
THREADS = 1


def set_random_seed(seed: int = SEED) -> None:
    """Every generator the harness seeds."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _fail(call: str, e: BaseException, expected: str) -> SubmissionError:
    return SubmissionError(f"course replay: {call} failed ({type(e).__name__}: {str(e)[:300]}); {expected}")


def harness_model(sub: Any, task: str, latent_dim: int, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Steps 1-2: the model exactly as the harness builds and loads it (``pack.py`` checks a hand-in with it too)."""
    set_random_seed()
    model = course_model(sub, task, latent_dim)
    name = type(model).__name__
    try:
        model.load_state_dict(state_dict)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{name}(latent_dim={latent_dim}).load_state_dict", e,
                    "the course loads epoch.pth's model_state_dict strictly into the model built from latent_dim "
                    "alone: keep every other size a default in submission.py, then retrain.") from e
    return model.eval()


@torch.no_grad()
def reconstructions(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Step 3: uint8 ``[N,28,28]`` of ``model(images, labels)`` over the test set, as the harness saves them."""
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH_SIZE, shuffle=False)
    out = []
    for images, labels in loader:  # the loader's own draw from torch's generator happens here, as in the harness
        try:
            recon_x = model(images, labels)[0]
            recon = recon_x.cpu().view(-1, 1, 28, 28)
        except Exception as e:  # noqa: BLE001
            raise _fail(f"recon_x, mu, log_var = model(images, labels) on images {tuple(images.shape)}", e,
                        "the course passes float images [B,1,28,28] in [0, 1] and int64 labels [B], and views "
                        "recon_x as [B,1,28,28].") from e
        if len(recon) != len(images):
            raise SubmissionError(f"course replay: model(images, labels) returned {len(recon)} images for a batch "
                                  f"of {len(images)}.")
        out.append(recon.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)[:, 0].numpy())
    return np.concatenate(out)


@torch.no_grad()
def samples(model: nn.Module, latent_dim: int, per_digit: int) -> np.ndarray:
    """Step 4: uint8 ``[10 * per_digit, 28, 28]``, digit by digit, one ``decode`` call per image."""
    return np.stack([(contract.decode_one(model, latent_dim, label).numpy() * 255).astype(np.uint8)
                     for label in range(10) for _ in range(per_digit)])


def replay(sub: Any, task: str, latent_dim: int, state_dict: dict[str, torch.Tensor], x: torch.Tensor,
           y: torch.Tensor) -> dict[str, np.ndarray]:
    """Steps 1-4 for one task: ``{"course_recon", "course_samples"}``, or ``{"course_error"}`` with the sentence
    (with reconstructions where they were made before generation failed, as the harness leaves its files).

    On one CPU thread (``THREADS``): a convolution's float result depends on how many threads share it (between 1
    and 2 threads, 1 pixel in 784 000 of a template model's samples lands on the other side of a uint8 boundary),
    so one fixed count makes the replay the same on every machine; run the course's harness with
    ``OMP_NUM_THREADS=1`` to compare to the last bit. One thread is also the fast way for 1000 single-image decodes
    beside the grader's other processes: two threads on two busy cores wait on each other at every call."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _replay(sub, task, latent_dim, state_dict, x, y)
    finally:
        torch.set_num_threads(threads)


def _replay(sub: Any, task: str, latent_dim: int, state_dict: dict[str, torch.Tensor], x: torch.Tensor,
            y: torch.Tensor) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    try:
        model = harness_model(sub, task, latent_dim, state_dict)
        out["course_recon"] = reconstructions(model, x, y)
        out["course_samples"] = samples(model, latent_dim, SAMPLES_PER_DIGIT[task])
    except SubmissionError as e:
        out["course_error"] = np.str_(str(e) if str(e).startswith("course replay:") else f"course replay: {e}")
    return out

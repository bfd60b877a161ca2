"""The grading classifier: a small MNIST CNN whose logits judge digits and whose features feed the metrics.

Its 128-d penultimate features feed the classifier-FID, diversity and memorisation metrics.

Weights ship in ``vaekit/assets/classifier.pt`` (trained by ``train_classifier.py``); the sha256 of
the file is checked at load so a grade always names exactly the judge it used.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, file_sha256, load_checkpoint, load_weights

ASSET = Path(__file__).resolve().parent / "assets" / "classifier.pt"
# sha256 of the shipped weights; train_classifier.py prints the new value when it retrains them.
ASSET_SHA256 = "2a6971319a3ba6ee6a233d0fe354a91a6f8af740c65f35f0aa7ee443d9206a84"
FEATURE_DIM = 128


class MnistClassifier(nn.Module):
    """``[B,1,28,28]`` in [0,1] -> logits ``[B,10]``; ``features`` gives the 128-d penultimate layer."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        w = width
        self.body = nn.Sequential(
            *block(1, w), nn.MaxPool2d(2),  # 28 -> 14 (one conv at full size keeps grading fast)
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),  # 14 -> 7
            *block(2 * w, FEATURE_DIM), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # Centre the [0,1] input; MNIST's mean pixel is about 0.13.
        return self.body(x.reshape(-1, 1, 28, 28) - 0.13)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


FEATURE_CHUNK = 64  # images per convolution call: small enough to stay in cache (bench/profile_grading.py times it
# against 1000; each image's features are the same bits in any batch: tests/test_metrics.py checks it)
HEAD_CHUNK = 1000  # rows per call of the linear head, as ever: a matrix product of another shape could round otherwise


@torch.no_grad()
def features_and_digits(model: MnistClassifier, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features ``[N,128]`` float32, predicted digits ``[N]``) of uint8 images ``[N,28,28]``."""
    if not len(images_u8):
        return np.zeros((0, FEATURE_DIM), np.float32), np.zeros(0, np.int64)
    feats = torch.cat([model.features(torch.from_numpy(images_u8[i:i + FEATURE_CHUNK]).float().div(255).unsqueeze(1))
                       for i in range(0, len(images_u8), FEATURE_CHUNK)])
    preds = torch.cat([model.head(feats[i:i + HEAD_CHUNK]).argmax(1) for i in range(0, len(feats), HEAD_CHUNK)])
    return feats.numpy(), preds.numpy()


def classifier_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy (mean over the batch) and accuracy, for the shared training loop."""
    logits = model(x)
    return {"loss": F.cross_entropy(logits, y), "accuracy": (logits.argmax(1) == y).float().mean()}


def random_affine(x: torch.Tensor, gen: torch.Generator, degrees: float = 10.0, shift: float = 0.1,
                  scale: float = 0.1) -> torch.Tensor:
    """Batch augmentation: random rotation, scale and shift per image, in one ``grid_sample`` call."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(x.device)

    angle = uniform(-degrees, degrees) * math.pi / 180
    s = uniform(1 - scale, 1 + scale)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, uniform(-2 * shift, 2 * shift)], 1),
                         torch.stack([sin, cos, uniform(-2 * shift, 2 * shift)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def load_classifier(path: str | Path | None = None, expected_sha256: str | None = None) -> tuple[MnistClassifier, str]:
    """Load the shipped classifier (sha256 checked) or a TA's private one; returns (model in eval mode, sha256)."""
    path = Path(path) if path else ASSET
    if not path.is_file():
        raise CheckpointError(f"classifier weights {path} not found; run `python train_classifier.py` to rebuild them.")
    digest = file_sha256(path)
    expected = expected_sha256 if expected_sha256 is not None else (ASSET_SHA256 if path == ASSET else None)
    if expected is not None and digest != expected:
        raise CheckpointError(f"{path} has sha256 {digest[:12]}…, expected {expected[:12]}…: the grading "
                              "classifier was changed; retrain it with train_classifier.py or restore it from git.")
    ckpt = load_checkpoint(path)
    model = MnistClassifier(**ckpt.get("model_kwargs", {}))
    load_weights(model, {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model_state_dict"].items()})
    return model.eval(), digest

"""The options of grading, training and a class's batch, each as one typed object with its defaults here.

``GradeSettings`` (how a hand-in is graded, and the seed of its sampling noise), ``FitSettings`` (how the training
loop optimises) and ``BatchSettings`` (how a class is graded: slots, resuming, a time budget).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class GradeSettings:
    """How one hand-in is graded; ``grade.py``'s flags fill it."""

    seed: int = 0  # with the secret and the submission's files, seeds its sampling noise (see sampling_seed)
    per_label: int = 1000  # generated images per digit for the classifier metrics (the course replay: 10 / 100)
    timeout: float = 300.0  # seconds for all the processes of one task together (encoding, then decoding)
    memory_gb: float = 8.0  # the submission's memory: all its processes' resident memory together (a cgroup,
    # where the grader may make one) and each process's address space (torch alone maps about 4 GB)
    secret: str = ""  # a TA's secret mixed into the sampling seed, so no student can compute their noise
    threads: int = 1  # CPU threads of the judge and of each worker: one, as the tasks already run side by side
    isolation: str = "auto"  # auto | required | none (see isolation.resolve_isolation)
    derived: bool = False  # ``secret`` already holds sampling_key(secret): what a cluster's worker gets

    def for_workers(self) -> GradeSettings:
        """What a cluster's worker is sent: the secret replaced by the key derived from it, which seeds the same
        noise but tells a worker (or whoever runs one) nothing of the secret itself."""
        return self if self.derived else replace(self, secret=sampling_key(self.secret), derived=True)


def sampling_key(secret: str) -> str:
    """The key the sampling seeds are made with: an HMAC of the TA's secret (none without one)."""
    return hmac.new(secret.encode(), b"vaekit sampling seed", "sha256").hexdigest() if secret else ""


def sampling_seed(settings: GradeSettings, *file_hashes: str) -> int:
    """The seed of a submission's sampling noise: fixed for the same files (a regrade is byte-identical), different
    for different files, and unknowable without the TA's ``secret`` — samples cannot be tuned to the grader's noise."""
    key = settings.secret if settings.derived else sampling_key(settings.secret)
    data = "\0".join([str(settings.seed), key, *file_hashes]).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big") >> 1


@dataclass(frozen=True)
class FitSettings:
    """How ``training_loop.fit`` optimises: Adam with a cosine schedule, for ``epochs`` or until a limit."""

    epochs: int
    lr: float
    batch_size: int
    seed: int = 0
    device: torch.device = torch.device("cpu")
    weight_decay: float = 0.0
    time_budget: float | None = None  # seconds: stop after the epoch that crosses it
    max_steps: int | None = None  # stop mid-epoch (smoke tests)
    keep: str = "best"  # "best" on validation, or "last" (an adversarial game's validation loss ranks nothing)
    desc: str = "train"  # the progress bar's label
    fused: bool = False  # PyTorch's fused Adam kernel on CPU and CUDA (the train scripts; the labs keep the loop)

    def __post_init__(self) -> None:
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}.")


@dataclass(frozen=True)
class BatchSettings:
    """How a class is graded: ``slots`` hand-ins in flight, resuming unless ``regrade``, within ``budget`` seconds."""

    slots: int = 1
    regrade: bool = False
    budget: float | None = None  # seconds for the whole class; what is left ungraded is said, not silently dropped

"""The judge: what the grader holds and a submission never sees (test set, classifier, reference features).

Loaded once per grading process and kept in the data cache between runs."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import torch

from . import metrics
from .classifier import features_and_digits, load_classifier
from .data import Split, dataset_sha256, load_mnist, load_test_data
from .outputs import save_npy, write_atomic
from .paths import CACHE_DIR
from .process_env import keep_freed_memory


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class Judge:
    """The test set, the classifier and the real-data reference features, computed once per session."""

    def __init__(self, test_data: str | None = None, classifier: str | None = None, threads: int = 1):
        torch.set_num_threads(threads)
        keep_freed_memory()
        self.classifier, self.classifier_sha256 = load_classifier(classifier)
        self.test = load_test_data(test_data)
        self.test_sha256 = dataset_sha256(self.test)
        # A TA's hidden test set (--test-data): what a student sees of it is their model's outputs, nothing more.
        self.hidden = test_data is not None
        self.test_u8 = metrics.quantize(self.test.x)
        self.test_y = self.test.y.numpy()
        self.test_feats = self._cached_features(self.test)
        train = load_mnist("train")
        self.train_feats = self._cached_features(train)
        self.train_y = train.y.numpy()
        # Held-out real images a sample must not copy either: validation, the official test set, the judge's.
        heldout = [self._cached_features(load_mnist("valid")), self.test_feats]
        official = load_mnist("test")
        if dataset_sha256(official) != self.test_sha256:
            heldout.append(self._cached_features(official))
        self.heldout_feats = np.concatenate(heldout)
        self.train_index = metrics.NearestNeighbours(self.train_feats)
        self.heldout_index = metrics.NearestNeighbours(self.heldout_feats)
        # How close an unseen real digit typically comes to a training image: the copy threshold, once.
        self.copy_threshold = float(self._cached(f"threshold-{self.test_sha256[:16]}", lambda: np.array(
            metrics.memorization_threshold(self.test_feats, self.train_index))))

    def features(self, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(penultimate features ``[N,128]``, predicted digits ``[N]``) of uint8 images."""
        return features_and_digits(self.classifier, images_u8)

    def _cached_features(self, split: Split) -> np.ndarray:
        """Features of a split (``[N,128]``), cached on disk per (classifier, data) pair."""
        return self._cached(f"features-{dataset_sha256(split)[:16]}",
                            lambda: self.features(metrics.quantize(split.x))[0])

    def _cached(self, name: str, compute) -> np.ndarray:
        """An array computed once per classifier and kept in the data cache (a read-only checkout recomputes)."""
        key = hashlib.sha256((self.classifier_sha256 + name).encode()).hexdigest()[:16]
        path = CACHE_DIR / f"judge-{key}.npy"
        if path.exists():
            return np.load(path)
        value = compute()
        try:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda p: save_npy(p, value))
        except OSError:
            pass
        return value

    def real_reference(self, n: int, seed: int, label: int | None = None) -> np.ndarray:
        """Features of ``n`` training images (of one digit if ``label``), a fixed seeded draw."""
        idx = np.arange(len(self.train_y)) if label is None else np.flatnonzero(self.train_y == label)
        rng = np.random.default_rng(seed)
        return self.train_feats[np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))]

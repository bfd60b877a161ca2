"""MNIST from the IDX files shipped in ``data/MNIST/raw`` — verified, split 5:1:1, cached.

Images come back as float32 tensors ``[N, 1, 28, 28]`` in [0, 1] and labels as int64 ``[N]``.
Splits follow the course: train = first 50 000 of the official train set, valid = the last 10 000,
test = the official 10 000 test images.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .outputs import save_npy, write_atomic
from .paths import CACHE_DIR, MNIST_RAW

# md5 of the *decompressed* IDX files (the .gz wrappers differ between mirrors).
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
N_TRAIN = 50_000
SPLITS = ("train", "valid", "test")


class DataError(RuntimeError):
    """The data files are missing, corrupt or malformed."""


@dataclass(frozen=True)
class Split:
    """One split: ``x`` float32 ``[N,1,28,28]`` in [0,1], ``y`` int64 ``[N]``."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else Split(self.x[:n], self.y[:n])


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes (uint8 payload) into an array of the declared shape."""
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{name} is not an unsigned-byte IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"{name} declares shape {shape} but holds {len(raw) - header} bytes.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_file(path: Path, md5: str | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain); check the md5 of its decompressed bytes if given."""
    if not path.exists():
        raise DataError(f"{path} is missing. The four MNIST files ship in the checkout's data/MNIST/raw/: run from "
                        "the checkout, or point $VAEKIT_DATA (or $VAEKIT_ROOT) at them.")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}).") from e
    if md5 is not None and hashlib.md5(raw).hexdigest() != md5:
        raise DataError(f"{path} is corrupt: md5 of its decompressed bytes is not {md5}.")
    return parse_idx(raw, str(path))


def _load_official(raw_dir: Path) -> dict[str, np.ndarray]:
    """The four official arrays, md5-verified, through a ``.npy`` cache beside the raw folder."""
    cache = CACHE_DIR if raw_dir == MNIST_RAW else raw_dir.parent / "cache"
    out = {}
    for stem, md5 in MD5.items():
        gz = raw_dir / f"{stem}.gz"
        # The cache name holds the verified md5 and the .gz size, so a replaced file misses the cache.
        size = gz.stat().st_size if gz.exists() else "missing"
        cached = cache / f"{stem}-{md5}-{size}.npy"
        if cached.exists():
            out[stem] = np.load(cached, mmap_mode="r")
            continue
        arr = read_idx_file(gz, md5)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            write_atomic(cached, lambda p, a=arr: save_npy(p, a))
        except OSError:
            pass  # A read-only checkout still works, just without the cache.
        out[stem] = arr
    return out


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).float().div_(255.0).unsqueeze(1)
    return Split(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def load_mnist(split: str, raw_dir: str | Path | None = None) -> Split:
    """Load one of ``train`` (50 000), ``valid`` (10 000) or ``test`` (10 000)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    arrays = _load_official(Path(raw_dir) if raw_dir else MNIST_RAW)
    if split == "test":
        return _to_split(arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"])
    sl = slice(0, N_TRAIN) if split == "train" else slice(N_TRAIN, None)
    return _to_split(arrays["train-images-idx3-ubyte"][sl], arrays["train-labels-idx1-ubyte"][sl])


def load_test_data(path: str | Path | None) -> Split:
    """A grader's test set: ``None`` (the official test split), an ``.npz`` with ``x`` and ``y``,
    or a folder / images-file path of an IDX pair (``*images*`` beside ``*labels*``).

    ``x`` may be uint8 in [0, 255] or float in [0, 1], shaped ``[N,28,28]``, ``[N,1,28,28]`` or ``[N,784]``.
    """
    if path is None:
        return load_mnist("test")
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f or "y" not in f:
                raise DataError(f"{path} must hold arrays named 'x' and 'y'.")
            x, y = f["x"], f["y"]
    else:
        if path.is_dir():
            imgs = sorted(path.glob("*images*"))
            labs = sorted(path.glob("*labels*"))
            if len(imgs) != 1 or len(labs) != 1:
                raise DataError(f"{path} must hold exactly one '*images*' and one '*labels*' IDX file.")
            img_path, lab_path = imgs[0], labs[0]
        else:
            img_path = path
            lab_path = path.with_name(path.name.replace("images", "labels").replace("idx3", "idx1"))
        x, y = read_idx_file(img_path), read_idx_file(lab_path)
    x = np.asarray(x)
    if x.ndim == 0 or len(x) == 0 or x.size != len(x) * 784:
        raise DataError(f"{path}: images must be 28x28 ([N,28,28], [N,1,28,28] or [N,784]).")
    x = (x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)).reshape(-1, 1, 28, 28)
    if len(x) != len(y) or np.asarray(y).ndim != 1:
        raise DataError(f"{path}: {len(x)} images but labels of shape {np.asarray(y).shape}.")
    if not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        raise DataError(f"{path}: float images must lie in [0, 1].")
    y = np.asarray(y).astype(np.int64)
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{path}: labels must be digits 0-9.")
    return Split(torch.from_numpy(x), torch.from_numpy(y))


def dataset_sha256(split: Split) -> str:
    """Content hash of a split (uint8 images + labels), recorded in every grade result."""
    h = hashlib.sha256()
    h.update((split.x * 255).round().to(torch.uint8).numpy().tobytes())
    h.update(split.y.numpy().astype(np.int64).tobytes())
    return h.hexdigest()

"""A submission that tries to earn grade.py's marks without a model: the grader's red team.

Each ``ATTACK`` is something a student who wants the marks without the work could write in fifty lines.
None learns anything: ``encode`` returns an index (latent_dim 1) and ``decode`` hands back an image found
some other way, or blank images when the trick fails. The tests (``tests/test_attacks.py``) and the
fair-score calibration (``bench/calibrate.py``) write this file with ``ATTACK`` (and ``HOST_DIR``, ``PORT``)
set, and check that the grader stops it (blank, chance-level scores) or flags it (a low ``fair_score``).

* ``reads_grader_files`` — look for the test images on disk: the repo's MNIST, any ``.npz`` in /tmp, the
  working folder, $HOME, the grader's folders, other processes' working folders.
* ``stash_memory`` — ``encode`` keeps the images it is shown; ``decode`` of the returned index gives them back.
* ``stash_files`` — the same through files in /tmp, $HOME, the working folder and the submission's folder.
* ``writes_outside`` — the same through ``HOST_DIR`` and the project folder (and it leaves a marker there).
* ``socket`` — the same through a server on the grader's loopback (``PORT``).
* ``rewrites_output`` — make the worker send the test images back as the reconstructions.
* ``pass_through`` — latent_dim 784: ``encode`` returns the image, ``decode`` returns its input (the
  course's bonus falls to 0.2, and noise decodes to noise).
* ``weights_lookup`` — carry test images in ``epoch.pth`` (uint8 buffers load with weights_only=True) and
  reconstruct and sample by lookup; no sandbox can stop this one, only the metrics.

Attacks on the sandbox itself (``tests/test_attacks.py`` checks each is stopped):

* ``lock_channel`` — the encoder holds a kernel lock on a file every sandbox can open (numpy's own source) for
  ``HOLD`` seconds after it has seen the images; a decoder that is alive meanwhile hears it (one bit here; a
  byte-range lock per pixel carries a whole test set) and raises to say so.
* ``fork_bomb`` — at import, fork up to 500 sleeping children, then raise saying how many it got.
* ``memory_hog`` — at import, fork 8 children that each fill 0.75 GiB and hold it, then raise saying how many
  held their memory at once (each process's own address-space cap lets every one of them do it).
* ``sleeper`` — sleep ``HOLD`` seconds in every process, to stretch the grading of its task.
* ``random_decode`` — decode ignores its input and draws fresh noise: a different grade on every run.
"""

from __future__ import annotations

import fcntl
import glob
import gzip
import os
import socket
import sys
import threading
import time

import numpy as np
import torch
from torch import nn

ATTACK = "stash_memory"
HOST_DIR = "/tmp"
PORT = 0
BANK_SIZE = 1  # images weights_lookup carries in epoch.pth: a default, as the course builds VAE(latent_dim=d)
STASH_NAME = "cheat_stash.npy"
HOLD = 3.0  # seconds: lock_channel's hold, sleeper's sleep
_memory: list[np.ndarray] = []
_heard: list[bool] = []
_locks: list = []
MODE = sys.argv[1] if len(sys.argv) > 1 else ""  # the grader's worker: "encode" or "decode"
TASK = "gen" if '"task": "gen"' in " ".join(sys.argv) else "vae"  # the job the worker was given


def vae_loss(recon_x, x, mu, logvar, var=0.5):
    """Never trained; here because the contract asks for it."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)


# -- where the images come from -------------------------------------------------------------------------


def _read_idx(path: str) -> np.ndarray:
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _places():
    """Where the grader's test images could be, the cheapest look first (a glob of $HOME can take seconds)."""
    try:
        from vaekit.paths import MNIST_RAW  # the grader's own package says where the data live

        yield str(MNIST_RAW / "t10k-images-idx3-ubyte.gz")
    except ImportError:
        pass
    for root in ("/tmp", os.getcwd(), os.path.expanduser("~")):
        yield from glob.glob(os.path.join(root, "**", "*.npz"), recursive=True)[:200]
        yield from glob.glob(os.path.join(root, "**", "t10k-images*"), recursive=True)[:20]
    yield from glob.glob("/proc/[0-9]*/cwd/*.npz") + glob.glob("/proc/[0-9]*/cwd/*/*.npz")  # other processes


def _found_on_disk() -> np.ndarray | None:
    """Every place the grader's test images could be: returns them ``[N, 784]`` uint8, or None."""
    for path in _places():
        try:
            if path.endswith(".npz"):
                with np.load(path) as f:
                    if "x" in f:
                        return f["x"].reshape(len(f["x"]), -1).astype(np.uint8)
            else:
                return _read_idx(path).reshape(-1, 784)
        except Exception:  # noqa: BLE001, S112 - a cheat tries the next place
            continue
    return None


def _stash_paths() -> list[str]:
    dirs = ["/tmp", os.path.expanduser("~"), os.getcwd(), os.path.dirname(os.path.abspath(__file__))]
    if ATTACK == "writes_outside":
        dirs = [HOST_DIR, os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *dirs]
    return [os.path.join(d, STASH_NAME) for d in dirs]


def _remember(x: np.ndarray) -> None:
    """Keep the images ``encode`` was shown where ``decode`` might find them."""
    if ATTACK == "stash_memory":
        _memory.append(x)
    elif ATTACK in ("stash_files", "writes_outside"):
        _memory.append(x)  # everything this process was shown, rewritten whole at each call
        for path in _stash_paths():
            try:
                np.save(path, np.concatenate(_memory))
            except OSError:
                pass
    elif ATTACK == "socket":
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=2) as s:
                s.sendall(b"PUT" + x.tobytes())
        except OSError:
            pass


def _recall() -> np.ndarray | None:
    """What ``decode`` can get back of the images ``encode`` saw."""
    if ATTACK == "stash_memory" and _memory:
        return np.concatenate(_memory)
    if ATTACK in ("stash_files", "writes_outside"):
        for path in _stash_paths():
            if os.path.exists(path):
                return np.load(path)
    if ATTACK == "socket":
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=2) as s:
                s.sendall(b"GET")
                data = b"".join(iter(lambda: s.recv(1 << 16), b""))
            return np.frombuffer(data, np.uint8).reshape(-1, 784) if data else None
        except OSError:
            return None
    if ATTACK == "reads_grader_files":
        return _found_on_disk()
    return None


if ATTACK == "writes_outside":
    for _d in (HOST_DIR, "/tmp", os.path.expanduser("~")):
        try:
            open(os.path.join(_d, "ESCAPED"), "w").write("written by a submission")
        except OSError:
            pass

def _shared_file() -> str:
    return os.path.realpath(np.__file__)  # the same inode in every sandbox: the runtime is bound read-only


if ATTACK == "lock_channel" and MODE == "decode":
    def _listen() -> None:  # a live decoder polls the lock: taken means the encoder is talking
        with open(_shared_file(), "rb") as f:
            for _ in range(int(HOLD * 200)):
                try:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails only while a writer holds it
                    fcntl.flock(f, fcntl.LOCK_UN)
                except OSError:
                    _heard.append(True)
                    return
                time.sleep(0.005)

    threading.Thread(target=_listen, daemon=True).start()

if ATTACK == "fork_bomb":
    _children = 0
    for _ in range(500):
        try:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            _children += 1
        except OSError:
            break
    raise RuntimeError(f"fork_bomb forked {_children} children")

if ATTACK == "memory_hog":
    _pids = []
    for _ in range(8):
        _pid = os.fork()
        if _pid == 0:
            try:
                _block = b"\x01" * (3 << 28)  # 0.75 GiB, every page touched
                time.sleep(HOLD)
                os._exit(0)
            except MemoryError:
                os._exit(1)
        _pids.append(_pid)
    _held = sum(os.waitpid(_pid, 0)[1] == 0 for _pid in _pids)
    raise RuntimeError(f"memory_hog held {_held} x 0.75 GiB at once")

if ATTACK == "sleeper":
    time.sleep(HOLD)

if ATTACK == "rewrites_output":  # every array the worker sends back carries the last images encode saw
    _savez = np.savez

    def _forged_savez(file, **arrays):
        if _memory:
            arrays["recon"] = arrays.get("recon", _memory[-1].reshape(-1, 28, 28))
        return _savez(file, **arrays)

    np.savez = _forged_savez


class VAE(nn.Module):
    """latent_dim 1: the 'code' is an index into images obtained by the ``ATTACK``."""

    def __init__(self, latent_dim: int = 1, *, bank_size: int = BANK_SIZE):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("bank", torch.zeros(bank_size, 784, dtype=torch.uint8))  # weights_lookup's images
        self.register_buffer("bank_labels", torch.zeros(bank_size, dtype=torch.long))
        self.seen = 0

    def _images(self) -> np.ndarray | None:
        return self.bank.numpy() if ATTACK == "weights_lookup" else _recall()

    def encode(self, x: torch.Tensor, label=None) -> tuple[torch.Tensor, torch.Tensor]:
        if ATTACK == "pass_through":
            return x.reshape(len(x), 784).float(), torch.zeros(len(x), 784)
        x = (x.reshape(len(x), 784) * 255).round().to(torch.uint8).numpy()
        if ATTACK == "lock_channel" and not _locks:
            _locks.append(open(_shared_file(), "rb"))  # held until the process ends, HOLD seconds from now
            try:
                fcntl.flock(_locks[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass  # this process holds it already: the module was imported again for the next task
            time.sleep(HOLD * (3 if TASK == "gen" else 1))  # the VAE's decoder could start meanwhile
        if ATTACK == "weights_lookup":  # nearest stored image
            dist = torch.cdist(torch.from_numpy(x).float(), self.bank.float())
            index = dist.argmin(1).float()
        else:
            _memory.append(x) if ATTACK == "rewrites_output" else _remember(x)
            index = torch.arange(self.seen, self.seen + len(x)).float()
            self.seen += len(x)
        return index[:, None].repeat(1, self.latent_dim), torch.zeros(len(x), self.latent_dim)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu

    def decode(self, z: torch.Tensor, label=None) -> torch.Tensor:
        if ATTACK == "pass_through":
            return z.reshape(-1, 1, 28, 28).clamp(0, 1)
        if _heard:
            raise RuntimeError("lock_channel: the decoder heard the encoder")
        if ATTACK == "random_decode":
            return torch.rand(len(z), 1, 28, 28)
        z = z.reshape(len(z), -1)[:, 0]
        out = torch.zeros(len(z), 784)
        images = self._images()
        if images is not None and len(images):
            images = torch.from_numpy(np.asarray(images, np.uint8)).float() / 255
            codes = z.round().long()
            exact = (z == z.round()) & (codes >= 0) & (codes < len(images))
            # Index codes give the remembered image back; noise picks one (of the asked digit, if known).
            pick = (z.abs() * 7919).long() % len(images)
            if label is not None and ATTACK == "weights_lookup":
                pool = [torch.nonzero(self.bank_labels == c).flatten() for c in range(10)]
                y = torch.as_tensor(label).long().expand(len(z))
                pick = torch.stack([pool[c][p % max(len(pool[c]), 1)] if len(pool[c]) else p
                                    for c, p in zip(y.tolist(), pick)])
            out = images[torch.where(exact, codes, pick)]
        return out.reshape(-1, 1, 28, 28)

    def forward(self, x: torch.Tensor, label=None):
        mu, logvar = self.encode(x, label)
        return self.decode(mu, label), mu, logvar


class GenModel(VAE):
    """The same trick; ``label`` only picks which stored digit a noise code returns."""

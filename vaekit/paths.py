"""Where the kit keeps its files, however it is installed.

``ROOT`` is the checkout the course scripts run in: ``$VAEKIT_ROOT``, else the folder above this package when it holds
the shipped MNIST files (an editable install, ``pip install -e .``), else the working folder (a wheel or a venv from
another copy, run from a checkout). The MNIST files are ``$VAEKIT_DATA`` or ``ROOT/data/MNIST/raw``. The cache of
decoded arrays and classifier features is ``$VAEKIT_CACHE``, else ``ROOT/data/MNIST/cache`` where that can be
written, else the per-user cache folder (``$XDG_CACHE_HOME/vaekit``, ``~/.cache/vaekit``).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_SHIPPED = Path("data") / "MNIST" / "raw"


def _root() -> Path:
    if os.environ.get("VAEKIT_ROOT"):
        return Path(os.environ["VAEKIT_ROOT"]).resolve()
    if (PACKAGE_DIR.parent / _SHIPPED).is_dir():
        return PACKAGE_DIR.parent
    return Path.cwd().resolve()


def _cache(root: Path) -> Path:
    if os.environ.get("VAEKIT_CACHE"):
        return Path(os.environ["VAEKIT_CACHE"])
    data = root / "data" / "MNIST"
    if data.is_dir() and os.access(data, os.W_OK):
        return data / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vaekit"


ROOT = _root()
MNIST_RAW = Path(os.environ["VAEKIT_DATA"]) if os.environ.get("VAEKIT_DATA") else ROOT / _SHIPPED
CACHE_DIR = _cache(ROOT)  # decoded arrays and classifier features, never committed

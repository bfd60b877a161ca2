"""Where the project keeps its files: the repository root, the shipped MNIST files and their cache.

The package is installed in editable mode (``pip install -e .``), so the root is the folder above it.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
MNIST_RAW = ROOT / "data" / "MNIST" / "raw"
CACHE_DIR = ROOT / "data" / "MNIST" / "cache"  # decoded arrays and classifier features, never committed

"""Where the kit keeps its files, however it is installed.

``ROOT`` is the checkout the course scripts run in: ``$VAEKIT_ROOT``, else the checkout that holds the script being
run (``python report/build.py`` acts on the checkout it lies in, whichever venv runs it), else the folder above this
package when it holds the shipped MNIST files (an editable install, ``pip install -e .``), else the working folder (a
wheel or a venv from another copy, run from a checkout). The MNIST files are ``$VAEKIT_DATA`` or
``ROOT/data/MNIST/raw``. The cache of decoded arrays and classifier features is ``$VAEKIT_CACHE``, else
``ROOT/data/MNIST/cache`` where that can be written, else the per-user cache folder (``$XDG_CACHE_HOME/vaekit``,
``~/.cache/vaekit``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_SHIPPED = Path("data") / "MNIST" / "raw"


def is_checkout(folder: Path) -> bool:
    """A copy of the kit: the course's top-level files beside the package."""
    return (folder / "submission.py").is_file() and (folder / "vaekit" / "__init__.py").is_file()


def script_checkout() -> Path | None:
    """The checkout holding the Python script this interpreter runs (``__main__``'s ``.py`` file, up to two folders
    down: a top-level script, ``report/build.py``, ``bench/cheats/x.py``); None for anything else (pytest,
    ``python -c``, a venv's console script such as ``dask``)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main or not main.endswith(".py"):
        return None
    return next((p for p in Path(main).resolve().parents[:3] if is_checkout(p)), None)


def _root() -> Path:
    if os.environ.get("VAEKIT_ROOT"):
        return Path(os.environ["VAEKIT_ROOT"]).resolve()
    if (home := script_checkout()) is not None:
        return home
    if (PACKAGE_DIR.parent / _SHIPPED).is_dir():
        return PACKAGE_DIR.parent
    return Path.cwd().resolve()


def run_own_code() -> None:
    """Re-run a script of one checkout that imported another checkout's package (a venv with an editable install of
    another copy) with its own checkout's package first on the path, so that its code and its files are one copy's.
    Once only: a second run that still imports the other copy goes on, on this checkout's files."""
    home = script_checkout()
    if home is None or os.environ.get("VAEKIT_ROOT") or (home / "vaekit").resolve() == PACKAGE_DIR:
        return
    if os.environ.get("VAEKIT_OWN_CODE") or not hasattr(os, "execve"):
        return
    path = os.pathsep.join(p for p in (str(home), os.environ.get("PYTHONPATH", "")) if p)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              {**os.environ, "PYTHONPATH": path, "VAEKIT_OWN_CODE": "1"})


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

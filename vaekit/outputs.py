"""Write the grader's outputs into a folder it does not trust (links where the outputs go are never followed).

A submission folder graded in place may hold links where the outputs go (``VAEwolabel/grade_result.json`` -> a host
file, ``VAEwolabel`` -> a host folder).

``output_path`` makes every folder between ``--out`` and the file a real folder of its own (a link on the way is
replaced, never followed), and ``write_atomic`` writes through a freshly created temporary file renamed over the
target, so a link at the target itself is replaced too and an interrupted write leaves the old file whole.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def output_path(root: Path, rel: str | Path) -> Path:
    """``root / rel`` with every folder below ``root`` a real folder (links and files in the way are removed)."""
    here = Path(root)
    here.mkdir(parents=True, exist_ok=True)
    rel = Path(rel)
    for part in rel.parts[:-1]:
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            here.unlink()
        here.mkdir(exist_ok=True)
    return here / rel.name


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a new file beside ``path`` (created exclusively: no link is followed), then rename
    it over ``path``: an interrupted write leaves the old file whole. The one way the kit writes a file it keeps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_npy(path: Path, array) -> None:
    """``np.save`` to exactly ``path`` (``np.save`` given a name appends ``.npy`` to it)."""
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, array)


def write_text(root: Path, rel: str | Path, text: str) -> Path:
    """Write ``text`` to ``root / rel`` as above."""
    return write_atomic(output_path(root, rel), lambda p: p.write_text(text))

"""How the grader's processes are set up: each worker's whole environment, and glibc's malloc told to keep memory.

The workers get it at their start (``vaekit.protocol`` and, sandboxed, ``vaekit.isolation``); the grading process
itself tunes its malloc when it loads the judge (``vaekit.judge``)."""

from __future__ import annotations

from .paths import PACKAGE_DIR

# glibc's malloc, told to keep freed memory instead of returning each large block to the OS: every 30 MB batch of
# activations would otherwise be mapped afresh and page-faulted in, a fifth of a grading's CPU time as system time.
MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296"


def keep_freed_memory() -> None:
    """The same malloc settings for this process, where the C library is glibc (elsewhere nothing changes)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-4, 0)  # M_MMAP_MAX: no block of its own mapping
    mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: keep up to 2 GiB of freed memory


def worker_env(home: str, threads: int) -> dict[str, str]:
    """The worker's whole environment, sandboxed or not. ``PYTHONPATH`` names the kit's own folder (inside the sandbox
    its parent holds nothing else): a venv whose editable install points at another checkout imports this kit."""
    return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "OMP_NUM_THREADS": str(threads),
            "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": "", "GLIBC_TUNABLES": MALLOC_TUNABLES,
            "PYTHONPATH": str(PACKAGE_DIR.parent)}

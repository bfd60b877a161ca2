import os
import runpy
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
# The suite runs in parallel processes (pytest-xdist, -n in pyproject.toml): each gets its share of the cores.
SHARE = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
torch.set_num_threads(SHARE)
threadpool_limits(SHARE)  # numpy's BLAS too: a thread per core in every worker would oversubscribe the cores


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests that train tiny models (deselect with -m 'not slow')")


def pytest_collection_modifyitems(config, items):
    """The end-to-end tests first: the parallel workers start on the long ones and fill in with the short ones,
    so the suite does not end waiting on a long test that started last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def small_test(tmp_path_factory):
    from vaekit.data import load_mnist

    t = load_mnist("test")
    path = tmp_path_factory.mktemp("data") / "small_test.npz"
    np.savez(path, x=(t.x[:300, 0] * 255).round().to(torch.uint8).numpy(), y=t.y[:300].numpy())
    return path


@pytest.fixture(scope="session")
def judge(small_test):
    from vaekit.judge import Judge

    return Judge(str(small_test))


@pytest.fixture(scope="session")
def good(tmp_path_factory, root):
    """A complete submission folder with models trained for a few steps (latent_dim 4), trained once for all the
    test processes (pytest -n): the first to need it trains it under a lock, the others wait and read it."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each process's own
    d = shared / "good"
    with FileLock(str(d) + ".lock"):
        if not (shared / "good.trained").exists():
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            shutil.copy(root / "submission.py", d)
            for script, folder in (("train_vae.py", "VAEwolabel"), ("train_cond.py", "Genwithlabel")):
                subprocess.run([sys.executable, script, "--dry-run", "--latent-dim", "4", "--out", str(d / folder)],
                               cwd=root, check=True, capture_output=True)
            (shared / "good.trained").touch()
    return d


# A filled report/student.toml (the kit ships it with FILL IN in every field).
FILLED = """group = 7
hours_spent = 41.5
[[authors]]
name = "Ada Lovelace"
student_id = "s1815"
[[authors]]
name = "Alan Turing"
student_id = "s1912"
[feedback]
learned = "How a fitted prior decides sample quality."
suggestions = "Grade conditional accuracy with a classifier."
"""


def ctrl_c_reaches_python() -> None:
    """``preexec_fn`` of a child a test interrupts with SIGINT, as a terminal's Ctrl-C would: a background job of a
    non-interactive shell (how CI may run) starts with SIGINT ignored, and Python keeps an ignored SIGINT ignored,
    so the child gets the default disposition back and Python's KeyboardInterrupt with it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_main(root, script: str, *argv: str, capsys=None) -> tuple[int, str, str]:
    """Run a script's own main(argv) in this process (the code `python SCRIPT ...` runs, without paying for a
    fresh interpreter and torch import each time); returns (exit status, stdout, stderr)."""
    main = runpy.run_path(str(root / script))["main"]
    try:
        status = main(list(argv)) or 0
    except SystemExit as e:
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err

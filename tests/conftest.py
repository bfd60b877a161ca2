import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(2)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests that train tiny models (deselect with -m 'not slow')")


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
    from vaekit.grading import Judge

    return Judge(str(small_test))


@pytest.fixture(scope="session")
def good(tmp_path_factory, root):
    """A complete submission folder with models trained for a few steps (latent_dim 4)."""
    d = tmp_path_factory.mktemp("good")
    shutil.copy(root / "submission.py", d)
    for script, folder in (("train_vae.py", "VAEwolabel"), ("train_cond.py", "Genwithlabel")):
        subprocess.run([sys.executable, script, "--dry-run", "--latent-dim", "4", "--out", str(d / folder)],
                       cwd=root, check=True, capture_output=True)
    return d

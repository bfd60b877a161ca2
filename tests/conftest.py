import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests that train tiny models (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT

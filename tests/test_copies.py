"""A results folder keeps the submission.py that produced it; each such copy must be its source, byte for byte."""

import pytest

COPIES = [("bench/reference/mlp/submission.py", "bench/mlp_submission.py"),
          ("labs/results/cgan/submission.py", "labs/cgan_submission.py")]


@pytest.mark.parametrize("copy,source", COPIES)
def test_result_folders_hold_their_sources(root, copy, source):
    assert (root / copy).read_bytes() == (root / source).read_bytes(), (
        f"{copy} differs from {source}: rerun the command that trains it, or copy the source over.")

"""Generated files: a results folder keeps the submission.py that produced it (each copy byte for byte its source),
and each generated table lives in one page, where its script rewrites it."""

import pytest

COPIES = [("bench/reference/mlp/submission.py", "bench/mlp_submission.py"),
          ("labs/results/cgan/submission.py", "labs/cgan_submission.py")]


@pytest.mark.parametrize("copy,source", COPIES)
def test_result_folders_hold_their_sources(root, copy, source):
    assert (root / copy).read_bytes() == (root / source).read_bytes(), (
        f"{copy} differs from {source}: rerun the command that trains it, or copy the source over.")


def test_each_generated_table_lives_in_one_page_and_is_rewritten_there(root, tmp_path):
    from vaekit.readme import pages, replace_block

    # bench/run.py, bench/calibrate.py, bench/batch.py and bench/profile_grading.py rewrite these
    for name in ("bench", "calibration", "batch", "batch-projection", "profile"):
        holders = [p.name for p in pages(root) if f"<!-- {name}:start -->" in p.read_text()]
        assert len(holders) == 1, (name, holders)
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# kit\n")
    (tmp_path / "docs" / "grading.md").write_text("a\n<!-- calibration:start -->\nold\n<!-- calibration:end -->\nb\n")
    assert replace_block("calibration", "new\n", root=tmp_path)
    assert (tmp_path / "docs" / "grading.md").read_text() == (
        "a\n<!-- calibration:start -->\nnew\n<!-- calibration:end -->\nb\n")
    assert not replace_block("bench", "x\n", root=tmp_path) and (tmp_path / "README.md").read_text() == "# kit\n"


def test_the_batch_tables_are_the_latest_measurement(root):
    """The README's batch table and docs/benchmark.md's projection are what bench/batch.py makes of batch.json."""
    import json

    from bench.batch import markdown

    measured, projection = markdown(json.loads((root / "bench" / "batch.json").read_text()))
    assert f"<!-- batch:start -->\n{measured}<!-- batch:end -->" in (root / "README.md").read_text()
    assert (f"<!-- batch-projection:start -->\n{projection}<!-- batch-projection:end -->"
            in (root / "docs" / "benchmark.md").read_text())

"""The benchmark end to end in its dry run: every training, ablation and grading step runs and lands in a row."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_dry_run_fills_every_row_and_leaves_the_readme_alone(root, tmp_path):
    from vaekit.readme import pages

    readme = {page: page.read_text() for page in pages(root)}
    r = subprocess.run([sys.executable, "bench/run.py", "--dry-run", "--out", str(tmp_path)], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {(row["model"], row["task"]): row for row in results["rows"]}
    both = ("canonical MLP", "default conv", "default conv, no sharpening", "default conv, one-Gaussian prior",
            "default conv, no volume cap")
    expected = {(m, t) for t in ("vae", "gen") for m in both}
    expected |= {("default conv, N(0,I) prior", "gen"), ("conditional GAN (labs/cgan.py)", "gen")}
    assert set(rows) == expected
    for row in rows.values():
        assert row.get("error") is None, row
        assert row["samples_per_s"] > 0 and row["train_s"] > 0 and row["train_x"] > 0
        assert row["fid_ratio"] > 0 and row["fid_ratio_recon"] > 0 and 0 < row["ssim"] <= 1
    # Each default training (and the GAN lab's) is bracketed by the yardstick, its rows divide by the bracket's mean.
    assert set(results["machine"]["canonical_s"]) == {"vae", "gen", "cgan"}
    table = (tmp_path / "results.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(rows) + 1  # the header and the rows
    assert "× canonical" in table
    assert (tmp_path / "runs" / "default" / "VAEwolabel" / "epoch.pth").exists()
    assert {page: page.read_text() for page in pages(root)} == readme  # a dry run never rewrites a table

    # --only vae retrains and regrades the VAE's rows alone and keeps every other row as it was.
    vae_model = tmp_path / "runs" / "default" / "VAEwolabel" / "epoch.pth"
    gen_model = tmp_path / "runs" / "default" / "Genwithlabel" / "epoch.pth"
    before = vae_model.stat().st_mtime_ns, gen_model.stat().st_mtime_ns
    r = subprocess.run([sys.executable, "bench/run.py", "--dry-run", "--only", "vae", "--out", str(tmp_path)],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((tmp_path / "results.json").read_text())
    gen_rows = [row for row in results["rows"] if row["task"] == "gen"]
    assert [row for row in again["rows"] if row["task"] == "gen"] == gen_rows
    vae = [row for row in again["rows"] if row["task"] == "vae"]
    assert {row["model"] for row in vae} == {m for m, t in expected if t == "vae"}
    assert all(row.get("error") is None and row["train_s"] > 0 for row in vae)
    assert vae_model.stat().st_mtime_ns > before[0] and gen_model.stat().st_mtime_ns == before[1]  # only the VAE anew
    assert "vae_rows_date" in again["machine"] and "vae_rows_date" not in results["machine"]
    assert "the vae rows rerun on" in (tmp_path / "results.md").read_text()
    assert {page: page.read_text() for page in pages(root)} == readme


def test_bench_only_row_needs_a_whole_run_first(root, tmp_path):
    for only in ("vae", "cgan"):
        r = subprocess.run([sys.executable, "bench/run.py", "--dry-run", "--only", only, "--out", str(tmp_path)],
                           cwd=root, capture_output=True, text=True)
        assert r.returncode != 0 and "run the whole bench first" in r.stderr
    assert not (tmp_path / "runs").exists()

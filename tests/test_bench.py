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

    # --only cgan retrains and regrades the GAN's row alone and keeps every other row as it was.
    gan_model = tmp_path / "runs" / "cgan" / "Genwithlabel" / "epoch.pth"
    vae_model = tmp_path / "runs" / "default" / "VAEwolabel" / "epoch.pth"
    before = gan_model.stat().st_mtime_ns, vae_model.stat().st_mtime_ns
    r = subprocess.run([sys.executable, "bench/run.py", "--dry-run", "--only", "cgan", "--out", str(tmp_path)],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((tmp_path / "results.json").read_text())
    gan = "conditional GAN (labs/cgan.py)"
    assert [row for row in again["rows"] if row["model"] != gan] == [row for row in results["rows"]
                                                                    if row["model"] != gan]
    new_gan = [row for row in again["rows"] if row["model"] == gan]
    assert len(new_gan) == 1 and new_gan[0].get("error") is None and new_gan[0]["train_s"] > 0
    assert gan_model.stat().st_mtime_ns > before[0] and vae_model.stat().st_mtime_ns == before[1]  # only the GAN anew
    assert "gan_row_date" in again["machine"] and "gan_row_date" not in results["machine"]
    assert "that row rerun on" in (tmp_path / "results.md").read_text()
    assert {page: page.read_text() for page in pages(root)} == readme


def test_bench_only_row_needs_a_whole_run_first(root, tmp_path):
    for only in ("vae", "cgan"):
        r = subprocess.run([sys.executable, "bench/run.py", "--dry-run", "--only", only, "--out", str(tmp_path)],
                           cwd=root, capture_output=True, text=True)
        assert r.returncode != 0 and "run the whole bench first" in r.stderr
    assert not (tmp_path / "runs").exists()

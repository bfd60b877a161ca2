"""The report compiles to a PDF from fixture results (tiny models, fake bench and sweep summaries)."""

import json
import shutil
import subprocess
import sys

import pytest

from vaekit.grading import GradeSettings, grade_submission

pytestmark = pytest.mark.slow


@pytest.fixture
def fixture_results(root, good, judge):
    # Typst reads files under the project root only, so the fixture lives in an ignored folder there.
    base = root / "tests" / ".report_fixture"
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(good, base)
    res = grade_submission(judge, base, base, ["vae", "gen"], GradeSettings(per_label=20))
    rows = [{"model": "default conv", "task": t, "train_s": 1.0, "epochs": 1, "fid_ratio_recon": 2.0,
             **{k: r.get(k) for k in (
        "score", "max_score", "cond_accuracy", "fid_ratio", "diversity", "memorization", "mse", "ssim",
        "latent_dim")}} for t, r in res.items()]
    (base / "bench").mkdir()
    (base / "bench" / "results.json").write_text(json.dumps(
        {"machine": {"cores": 2, "cpu": "test CPU", "torch": "x", "grade_s": 1.0}, "rows": rows}))
    run = {"epochs": 1, **{k: res["vae"][k] for k in ("score", "ssim", "mse", "fid_ratio",
                                                       "histogram_max_deviation")}}
    sweeps = {"budget_s": 1, "cpu_minutes": 0.1, "base": {"latent_dim": 4, "var": 0.01, "arch": "conv"},
              "sweeps": {"latent_dim": [{**run, "latent_dim": d} for d in (2, 4)],
                         "var": [{**run, "var": v} for v in (0.01, 0.1)],
                         "arch": [{**run, "arch": a} for a in ("mlp", "conv")]}}
    (base / "report" / "results").mkdir(parents=True)
    (base / "report" / "results" / "sweeps.json").write_text(json.dumps(sweeps))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_report_compiles_from_fixture_results(root, fixture_results, tmp_path):
    out = tmp_path / "report.pdf"
    info = root / "report" / "build_info.json"
    before = info.read_bytes() if info.exists() else None
    r = subprocess.run([sys.executable, "report/build.py", "--results-dir", str(fixture_results), "--out", str(out)],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000  # text plus the embedded figures
    for fig in ("latent_map.png", "interpolation.png", "sweeps.png", "ceiling.png"):
        assert (fixture_results / "report" / "figures" / fig).stat().st_size > 1000
    # A fixture build must not touch the real report's build record.
    assert (info.read_bytes() if info.exists() else None) == before


def test_report_build_names_missing_inputs(root, tmp_path):
    r = subprocess.run([sys.executable, "report/build.py", "--results-dir", str(root / "tests"), "--out",
                        str(tmp_path / "r.pdf")], cwd=root, capture_output=True, text=True)
    assert r.returncode == 1 and "tests/VAEwolabel/grade_result.json" in r.stderr

"""pack.py refuses incomplete or stale layouts, and what it packs grades cleanly."""

import json
import shutil
import zipfile

import pytest
from conftest import FILLED, run_main

from vaekit.grading import GradeSettings, grade_submission

pytestmark = pytest.mark.slow


def run_pack(root, folder, *extra, capsys):
    """pack.py's main in this process; returns (exit status, stderr)."""
    status, _, err = run_main(root, "pack.py", "--group", "7", "--root", str(folder), "--out", str(folder), *extra,
                              capsys=capsys)
    return status, err


def test_pack_lists_every_missing_file(root, tmp_path, capsys):
    (tmp_path / "VAEwolabel").mkdir()
    status, err = run_pack(root, tmp_path, capsys=capsys)
    assert status == 1
    for name in ("VAEwolabel/epoch.pth", "Genwithlabel/grade_result.json", "submission.py", "report.pdf"):
        assert name in err
    assert not (tmp_path / "G7-FINAL.zip").exists()


def test_pack_refuses_stale_or_failed_grades_then_round_trips(root, judge, good, tmp_path, capsys):
    sub = tmp_path / "sub"
    shutil.copytree(good, sub)
    (sub / "report").mkdir()
    (sub / "report" / "report.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (sub / "report" / "student.toml").write_text(FILLED)
    settings = GradeSettings(per_label=20, timeout=60)
    grade_submission(judge, sub, sub, ["vae", "gen"], settings)
    assert run_pack(root, sub, "--check", capsys=capsys)[0] == 0

    # A retrained model makes its grade stale.
    (sub / "Genwithlabel" / "epoch.pth").write_bytes((good / "VAEwolabel" / "epoch.pth").read_bytes())
    status, err = run_pack(root, sub, capsys=capsys)
    assert status == 1 and "Genwithlabel/grade_result.json: stale" in err
    # A failed grade is refused with its error.
    grade_submission(judge, sub, sub, ["gen"], settings)
    status, err = run_pack(root, sub, capsys=capsys)
    # (the checkpoint is not the one its hyperparameters.txt was written with: that is the sentence, not the shapes)
    assert status == 1 and "grading failed: Genwithlabel/epoch.pth is not the checkpoint its hyperparameters.txt" in err

    shutil.copy(good / "Genwithlabel" / "epoch.pth", sub / "Genwithlabel" / "epoch.pth")
    grade_submission(judge, sub, sub, ["gen"], settings)
    status, err = run_pack(root, sub, capsys=capsys)
    assert status == 0, err
    z = sub / "G7-FINAL.zip"
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == sorted(
            [f"{d}/{f}" for d in ("VAEwolabel", "Genwithlabel") for f in
             ("epoch.pth", "hyperparameters.txt", "grade_result.json")] + ["submission.py", "report.pdf"])
    res = grade_submission(judge, z, tmp_path / "regraded", ["vae", "gen"], settings)
    for task in ("vae", "gen"):
        assert res[task]["error"] is None
        before = json.loads((sub / res[task]["folder"] / "grade_result.json").read_text())
        assert res[task]["score"] == before["score"]


def test_group_zero_is_a_valid_group(root, tmp_path, capsys):
    _, _, err = run_main(root, "pack.py", "--group", "0", "--root", str(tmp_path), "--check", capsys=capsys)
    assert "G0-FINAL.zip" in err and "--group" not in err  # refused for missing files, not the number
    status, _, err = run_main(root, "pack.py", "--group", "-1", capsys=capsys)
    assert status == 2 and "0 or more" in err


def test_pack_refuses_a_model_the_course_cannot_load(root, judge, good, tmp_path, capsys):
    """Grades fine here (hyperparameters.txt records every size), but the course builds GenModel(latent_dim=d)
    from submission.py's defaults alone: a default changed after training makes its strict load fail."""
    sub = tmp_path / "sub"
    shutil.copytree(good, sub)
    (sub / "report").mkdir()
    (sub / "report" / "report.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (sub / "report" / "student.toml").write_text(FILLED)
    grade_submission(judge, sub, sub, ["vae", "gen"], GradeSettings(per_label=20, timeout=60))
    source = (sub / "submission.py").read_text()
    (sub / "submission.py").write_text(source.replace("hidden: int = 256, components: int = 30",
                                                      "hidden: int = 128, components: int = 30"))
    status, err = run_pack(root, sub, capsys=capsys)
    assert status == 1 and not (sub / "G7-FINAL.zip").exists()
    assert "Genwithlabel/ was trained from another submission.py: run `python train_cond.py`." in err
    for folder in ("VAEwolabel", "Genwithlabel"):  # as the course trainer writes them: no record of the file
        hp = json.loads((sub / folder / "hyperparameters.txt").read_text())
        hp.pop("trained_from")
        (sub / folder / "hyperparameters.txt").write_text(json.dumps(hp))
    status, err = run_pack(root, sub, capsys=capsys)
    assert "Genwithlabel/: the course's harness cannot use this model" in err
    assert "GenModel(latent_dim=4).load_state_dict failed" in err and "default in submission.py" in err
    assert "VAEwolabel/: the course" not in err

"""A student's own submission.py, start to finish: the defaults it trains with, the sample check after training, the
folders' provenance, errors with a place, scripts acting on their own checkout, and the report of the model in the zip.
The hand-ins are template-shaped files written for these tests (tests/handins/)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FILLED, run_main
from test_report import build, experiments, fixture_results, pdf_text  # noqa: F401 - the report's fixtures

from vaekit import defaults
from vaekit.course import COURSE_TRAINING, SubmissionError, load_submission, stale_reason, trained_from
from vaekit.grading import GradeSettings, grade_submission
from vaekit.samplecheck import MIN_REQUESTED, advice_for, check_samples

HANDINS = Path(__file__).resolve().parent / "handins"
KIT_VAE = {"epochs": 5, "latent_dim": 16, "lr": 2e-3, "batch_size": 128, "var": 0.01, "prior_shrink": 1.0,
           "sharpen_epochs": 2, "sharpen_weight": 1.0, "sharpen_lr": 5e-4}


# -- defaults that belong to the model ------------------------------------------------------------------------


def test_a_template_trains_with_its_own_signature_then_the_course_trainer():
    sub = load_submission(HANDINS / "onehot_cvae.py")
    s = defaults.resolve("gen", {}, sub, KIT_VAE, kit_model=False)
    assert (s["var"].value, s["var"].source) == (0.5, "vae_loss(..., var=0.5) in submission.py")
    assert (s["latent_dim"].value, s["latent_dim"].source) == (20, "GenModel(latent_dim=20) in submission.py")
    for key in ("epochs", "lr", "batch_size"):
        assert (s[key].value, s[key].source) == (COURSE_TRAINING[key], defaults.FROM_COURSE)
    # A flag wins over everything; the kit's extras keep the kit's values.
    s = defaults.resolve("gen", {"var": 0.1, "epochs": 3}, sub, KIT_VAE, kit_model=False)
    assert (s["var"].value, s["var"].source, s["epochs"].value) == (0.1, "--var", 3)
    assert s["sharpen_epochs"].source == defaults.FROM_KIT


def test_a_loss_without_a_var_default_gets_the_course_trainers_and_a_ctor_default_is_the_students():
    sub = load_submission(HANDINS / "bce_sum.py")
    s = defaults.resolve("vae", {}, sub, KIT_VAE, kit_model=False)
    assert (s["var"].value, s["var"].source) == (COURSE_TRAINING["var"], defaults.FROM_COURSE)
    assert (s["latent_dim"].value, s["latent_dim"].source) == (8, "VAE(latent_dim=8) in submission.py")


def test_training_says_which_values_it_uses_and_where_each_came_from(root, tmp_path, capsys):
    status, out, err = run_main(root, "train_cond.py", "--submission", str(HANDINS / "onehot_cvae.py"), "--dry-run",
                                "--out", str(tmp_path / "Genwithlabel"), capsys=capsys)
    assert status in (0, None), err
    line = next(ln for ln in out.splitlines() if ln.startswith("settings"))
    assert "epochs 10 (the course's train.py)" in line and "var 0.5 (vae_loss(..., var=0.5) in submission.py)" in line
    assert "latent_dim 20 (GenModel(latent_dim=20) in submission.py)" in line and "batch_size 1024" in line
    hp = json.loads((tmp_path / "Genwithlabel" / "hyperparameters.txt").read_text())
    assert (hp["training"]["var"], hp["training"]["batch_size"], hp["model_kwargs"]["latent_dim"]) == (0.5, 1024, 20)
    assert hp["settings_from"]["var"] == "vae_loss(..., var=0.5) in submission.py"
    folder = tmp_path / "Genwithlabel"
    assert hp["trained_from"] == trained_from(HANDINS / "onehot_cvae.py", folder / "epoch.pth")
    assert "sample check:" in out and "sample_check" in hp


def test_the_kit_says_its_own_tuning(root, tmp_path, capsys):
    status, out, err = run_main(root, "train_vae.py", "--dry-run", "--out", str(tmp_path / "VAEwolabel"), capsys=capsys)
    assert status in (0, None), err
    line = next(ln for ln in out.splitlines() if ln.startswith("settings"))
    assert "var 0.01 (the kit's tuning)" in line and "epochs 5 (the kit's tuning)" in line


# -- the sample check -----------------------------------------------------------------------------------------


def test_the_sample_check_speaks_up_for_samples_that_are_not_digits(root):
    torch.manual_seed(0)
    untrained = load_submission(HANDINS / "onehot_cvae.py").GenModel(latent_dim=4)
    check = check_samples(untrained, True, 4, var=0.003, prior="standard", per_digit=5)
    assert check.n == 50 and check.requested < MIN_REQUESTED
    assert check.advice is not None and "--var (now 0.003)" in check.advice and check.advice in check.line
    assert check.record()["ok"] is False
    assert advice_for(True, 0.95, 0.5, "standard") is None and advice_for(False, 0.9, 0.5, "standard") is not None
    assert "--prior-shrink" in advice_for(True, 0.3, 0.003, "fitted")


def test_the_kits_trained_models_pass_the_sample_check(root):
    from vaekit.building import load_model

    model, hp = load_model(root / "Genwithlabel")
    check = check_samples(model, True, hp["model_kwargs"]["latent_dim"], 0.003, "fitted", per_digit=10)
    assert check.requested >= 0.95 and check.advice is None


# -- provenance -----------------------------------------------------------------------------------------------


@pytest.fixture
def swapped(good, tmp_path):
    """The kit's trained folders with a student's file dropped in, before they retrain."""
    d = tmp_path / "swapped"
    shutil.copytree(good, d)
    shutil.copy(HANDINS / "onehot_cvae.py", d / "submission.py")
    return d


def test_a_folder_records_its_submission_and_a_changed_file_or_checkpoint_is_named(good, swapped):
    assert stale_reason(good / "Genwithlabel", "gen", good / "submission.py") is None
    assert stale_reason(swapped / "Genwithlabel", "gen", swapped / "submission.py") == (
        "Genwithlabel/ was trained from another submission.py: run `python train_cond.py`.")
    shutil.copy(good / "Genwithlabel" / "epoch.pth", swapped / "VAEwolabel" / "epoch.pth")  # a write cut short
    assert "is not the checkpoint its hyperparameters.txt was written with" in stale_reason(
        swapped / "VAEwolabel", "vae", good / "submission.py")
    # The course trainer's own folders record nothing: graded as ever.
    hp = json.loads((swapped / "VAEwolabel" / "hyperparameters.txt").read_text())
    hp.pop("trained_from")
    (swapped / "VAEwolabel" / "hyperparameters.txt").write_text(json.dumps(hp))
    assert stale_reason(swapped / "VAEwolabel", "vae", swapped / "submission.py") is None


@pytest.mark.slow
def test_grade_names_a_stale_folder_instead_of_a_type_error(judge, swapped, tmp_path):
    res = grade_submission(judge, swapped, tmp_path / "out", ["vae", "gen"], GradeSettings(per_label=10, timeout=60))
    for task, script in (("vae", "train_vae.py"), ("gen", "train_cond.py")):
        stale = f"{res[task]['folder']}/ was trained from another submission.py: run `python {script}`."
        assert res[task]["error"] == stale
        assert res[task]["max_score"] in (10.0, 30.0) and res[task]["score"] == 0.0


def test_pack_names_a_stale_folder_and_not_the_arguments(swapped):
    import pack

    found = pack.course_load_problems(swapped)
    assert "Genwithlabel/ was trained from another submission.py: run `python train_cond.py`." in found
    assert not any("keep every size" in f for f in found)


# -- errors with a place --------------------------------------------------------------------------------------


def test_an_unfilled_template_names_its_line_and_class(root, tmp_path, capsys):
    status, _, err = run_main(root, "train_vae.py", "--submission", str(HANDINS / "unfilled_template.py"),
                              "--dry-run", "--out", str(tmp_path / "v"), capsys=capsys)
    line = next(i for i, ln in enumerate((HANDINS / "unfilled_template.py").read_text().splitlines(), 1)
                if "Not Implemented" in ln)
    assert f"(unfilled_template.py, line {line}, in VAE.__init__): ValueError: Not Implemented yet!" in str(status)
    bad = tmp_path / "submission.py"
    bad.write_text("import torch\n\nx = 1\nraise ValueError('Not Implemented yet!')\n")
    with pytest.raises(SubmissionError, match=r"\(submission.py, line 4, at module level\): ValueError"):
        load_submission(bad)


def test_a_model_that_cannot_take_a_0_dim_label_is_named_at_its_line(root, tmp_path, capsys):
    status, _, _ = run_main(root, "train_cond.py", "--submission", str(HANDINS / "bce_sum.py"), "--dry-run",
                            "--out", str(tmp_path / "g"), capsys=capsys)
    line = next(i for i, ln in enumerate((HANDINS / "bce_sum.py").read_text().splitlines(), 1) if "one_hot" in ln)
    assert "GenModel.decode(torch.randn(1, 8), torch.tensor(" in str(status)
    assert f"(bce_sum.py, line {line}, in GenModel.decode)" in str(status)


# -- error rows and the student's page ------------------------------------------------------------------------


def test_an_error_row_has_its_max_score_and_the_page_names_the_hand_in(root, small_test, tmp_path):
    hand_in = tmp_path / "G4-FINAL"
    hand_in.mkdir()
    shutil.copy(HANDINS / "onehot_cvae.py", hand_in / "submission.py")
    status = subprocess.run([sys.executable, str(root / "grade.py"), "--test-data", str(small_test)],
                            cwd=hand_in, capture_output=True, text=True).returncode
    assert status == 1
    for folder, points in (("VAEwolabel", 10.0), ("Genwithlabel", 30.0)):
        assert json.loads((hand_in / folder / "grade_result.json").read_text())["max_score"] == points
    assert "<title>Grade of G4-FINAL</title>" in (hand_in / "grade_report.html").read_text()


# -- the checkout a script runs in ----------------------------------------------------------------------------


@pytest.fixture
def second_clone(root, tmp_path):
    """Another copy of the kit, with no venv of its own (run with this checkout's)."""
    other = tmp_path / "other"
    for part in ("vaekit", "report"):
        shutil.copytree(root / part, other / part, ignore=shutil.ignore_patterns("__pycache__", "*.pdf", "figures"))
    for part in ("submission.py", "grade.py"):
        shutil.copy(root / part, other / part)
    (other / "data" / "MNIST").mkdir(parents=True)
    os.symlink(root / "data" / "MNIST" / "raw", other / "data" / "MNIST" / "raw")
    return other


def test_a_script_acts_on_the_checkout_that_holds_it(root, second_clone, tmp_path):
    probe = "import vaekit, vaekit.paths as p; print(vaekit.__file__); print(p.ROOT)"
    (second_clone / "report" / "where.py").write_text(probe)
    env = {k: v for k, v in os.environ.items() if k not in ("VAEKIT_ROOT", "PYTHONPATH")}
    out = subprocess.run([sys.executable, str(second_clone / "report" / "where.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(second_clone / "vaekit" / "__init__.py"), str(second_clone)]


def test_the_sandbox_runs_from_another_checkouts_venv(second_clone):
    from vaekit.isolation import bwrap_binary

    if bwrap_binary() is None:
        pytest.skip("no bubblewrap binary here")
    env = {k: v for k, v in os.environ.items() if k not in ("VAEKIT_ROOT", "PYTHONPATH")}
    code = "import vaekit, vaekit.isolation as s; print(vaekit.__file__); print(s.probe_bubblewrap())"
    out = subprocess.run([sys.executable, "-c", code], cwd=second_clone, env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == str(second_clone / "vaekit" / "__init__.py")
    if out[1] != "None" and "could not run the kit" not in out[1]:
        pytest.skip(f"no user namespaces here: {out[1]}")
    assert out[1] == "None"


# -- the report of the model in the zip -----------------------------------------------------------------------


@pytest.mark.slow
def test_the_report_describes_a_template_model_and_refuses_folders_of_another_file(root, fixture_results, judge):  # noqa: F811
    base = fixture_results
    shutil.copy(HANDINS / "onehot_cvae.py", base / "submission.py")
    for script, folder in (("train_vae.py", "VAEwolabel"), ("train_cond.py", "Genwithlabel")):
        shutil.rmtree(base / folder)
        subprocess.run([sys.executable, script, "--dry-run", "--submission", str(base / "submission.py"),
                        "--out", str(base / folder)], cwd=root, check=True, capture_output=True)
    grade_submission(judge, base, base, ["vae", "gen"], GradeSettings(per_label=20))
    (base / "student.toml").write_text(FILLED)
    r = build(root, "--results-dir", base, "--student", base / "student.toml", "--out", base / "report.pdf")
    assert r.returncode == 0, r.stderr
    text = " ".join(pdf_text(base / "report.pdf").split())
    assert "Linear(794, 400)" in text and "a Gaussian likelihood of variance 0.5" in text
    method = text[text.index("Method The models."):text.index("Experiments")]
    assert "the standard normal N(0, I)" in method and "k-means" not in method and "sharpen" not in method.lower()
    assert "not on the model handed in" in text  # the kit's experiments are named as the kit's
    # A folder trained from another file: the report refuses, in one sentence.
    shutil.copy(root / "submission.py", base / "submission.py")
    r = build(root, "--results-dir", base, "--student", base / "student.toml", "--out", base / "report.pdf")
    assert r.returncode == 1 and "was trained from another submission.py" in r.stderr and "Traceback" not in r.stderr


def test_a_students_grade_py_imports_no_dask(root):
    """Only a TA's --scheduler needs Dask (vaekit.cluster); the student's grade.py, batch included, never loads it."""
    code = ("import sys, grade; from vaekit import batch; "
            "sys.exit(int('distributed' in sys.modules or 'dask' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0

"""grade.py end to end on tiny trained models, and one fixture per class of bad input."""

import json
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
from conftest import run_main

from vaekit.grading import GradeSettings, grade_submission

pytestmark = pytest.mark.slow
SETTINGS = GradeSettings(per_label=30, timeout=60)


@pytest.fixture
def variant(good, tmp_path):
    """A copy of the good submission to break in one way."""
    d = tmp_path / "sub"
    shutil.copytree(good, d)
    return d


def grade(judge, path, out, tasks=("vae", "gen"), settings=SETTINGS):
    return grade_submission(judge, path, out, list(tasks), settings)


def patch_submission(folder, code):
    with open(folder / "submission.py", "a") as f:
        f.write("\n" + code + "\n")


def test_good_submission_gets_every_field_and_regrades_byte_identically(judge, good, tmp_path):
    res = grade(judge, good, tmp_path / "a")
    for task in ("vae", "gen"):
        r = res[task]
        assert r["error"] is None, r["error"]
        for key in ("ssim", "mse", "score", "fair_score", "fid_ratio", "diversity", "memorization"):
            assert isinstance(r[key], float) and np.isfinite(r[key]), key
        assert r["latent_dim"] == 4 and 0 <= r["score"] <= r["max_score"]
        assert r["settings"]["classifier_sha256"] == judge.classifier_sha256
        assert r["settings"]["test_set"] == "hidden" and r["settings"]["samples_per_label"] == 30  # --test-data
        assert "test_sha256" not in r["settings"]
    assert isinstance(res["gen"]["fid"], float) and 0 <= res["gen"]["cond_accuracy"] <= 1
    assert len(res["gen"]["per_class"]["fid_ratio"]) == 10
    assert sum(res["vae"]["class_histogram"]) == pytest.approx(1.0, abs=1e-5)  # ten entries rounded to 6 places
    # Regrade: everything but the timing block is byte-identical.
    grade(judge, good, tmp_path / "b")
    for folder in ("VAEwolabel", "Genwithlabel"):
        a = json.loads((tmp_path / "a" / folder / "grade_result.json").read_text())
        b = json.loads((tmp_path / "b" / folder / "grade_result.json").read_text())
        a.pop("timing"), b.pop("timing")
        assert a == b
    assert not (tmp_path / "a" / ".grade_work").exists()  # the work folder is cleaned up


@pytest.mark.parametrize("breakage,task,message", [
    (lambda d: (d / "Genwithlabel" / "epoch.pth").unlink(), "gen",
     r"missing epoch\.pth \(or an epoch_<N>\.pth\) in Genwithlabel/"),
    (lambda d: (d / "VAEwolabel" / "hyperparameters.txt").write_text("{oops"), "vae", "is not valid JSON"),
    (lambda d: (d / "VAEwolabel" / "hyperparameters.txt").write_text('{"epochs": 3}'), "vae",
     "no integer latent_dim"),
    (lambda d: (d / "VAEwolabel" / "hyperparameters.txt").write_text(
        '{"latent_dim": 4, "model_kwargs": {"latent_dim": 4, "hidden": 99}}'), "vae", "does not fit the model"),
    (lambda d: (d / "VAEwolabel" / "hyperparameters.txt").write_text('{"latent_dim": 4, "model_class": "torch"}'),
     "vae", "submission.py has no nn.Module class torch"),
    (lambda d: patch_submission(d, "GenModel.decode = lambda self, z, label: torch.zeros(len(z), 1, 14, 14)"),
     "gen", r"expected \d+ images of 28x28 from decode, got shape \(\d+, 1, 14, 14\)"),
    (lambda d: patch_submission(d, "class VAE(VAE):\n"  # the VAE alone: GenModel keeps the original base class
                                   "    def decode(self, z, label=None):\n"
                                   "        return super().decode(z) * float('nan')"),
     "vae", "NaN or infinite"),
    (lambda d: patch_submission(d, "class VAE(VAE):\n"
                                   "    def encode_latent(self, x, labels=None):\n"
                                   "        return (x.reshape(len(x), -1),) * 2\n"
                                   "    def decode_latent(self, z, labels=None):\n"
                                   "        return z.reshape(-1, 1, 28, 28)"),
     "vae", "mu of width 784, but latent_dim is 4"),
])
def test_broken_task_gets_clear_error_while_other_task_is_graded(judge, variant, tmp_path, breakage, task,
                                                                   message):
    breakage(variant)
    res = grade(judge, variant, tmp_path / "out")
    other = "gen" if task == "vae" else "vae"
    import re

    assert res[task]["score"] == 0.0 and re.search(message, res[task]["error"]), res[task]["error"]
    if "submission.py" not in message and "NaN" not in message:
        assert res[other]["error"] is None, res[other]["error"]
    on_disk = json.loads((tmp_path / "out" / res[task]["folder"] / "grade_result.json").read_text())
    assert on_disk["error"] == res[task]["error"]


def test_exception_at_import_and_hang_and_memory_bomb(judge, variant, tmp_path):
    shutil.copy(variant / "submission.py", tmp_path / "orig.py")
    patch_submission(variant, "raise RuntimeError('boom')")
    r = grade(judge, variant, tmp_path / "a", tasks=["vae"])["vae"]
    assert "importing submission.py failed (submission.py, line" in r["error"] and "RuntimeError: boom" in r["error"]

    shutil.copy(tmp_path / "orig.py", variant / "submission.py")
    patch_submission(variant, "import time\ntime.sleep(60)")
    r = grade(judge, variant, tmp_path / "b", tasks=["vae"],
              settings=GradeSettings(per_label=30, timeout=8))["vae"]
    assert r["error"].startswith("timed out after 8 s") and r["score"] == 0.0

    shutil.copy(tmp_path / "orig.py", variant / "submission.py")
    patch_submission(variant, "_hog = torch.ones(4 * 2**30, dtype=torch.uint8) + 1")  # 4 GiB, twice
    r = grade(judge, variant, tmp_path / "c", tasks=["vae"],
              settings=GradeSettings(per_label=30, timeout=60, memory_gb=5))["vae"]
    assert "memory" in r["error"].lower() or "allocate" in r["error"].lower(), r["error"]


def test_a_task_that_kills_its_process_leaves_the_other_task_a_fresh_one(judge, variant, tmp_path):
    # One process serves both tasks per stage; the VAE's decoding (its course replay decodes too) ends it mid-task.
    patch_submission(variant, "import os\nclass VAE(VAE):\n"
                              "    def decode_latent(self, z, labels=None):\n"
                              "        os._exit(9)")
    res = grade(judge, variant, tmp_path / "out")
    assert "the submission's process died while" in res["vae"]["error"] and "(exit status 9)" in res["vae"]["error"]
    assert res["gen"]["error"] is None and res["gen"]["score"] > 0


def test_a_forged_reply_then_a_hang_is_stopped_at_the_task_budget(judge, variant, tmp_path):
    """The VAE's encoder writes a made-up "the conditional task is done" frame to every file it may hold, then
    hangs: the forged frame ends the reading of that process, the hang is stopped at the VAE's budget, and the
    conditional task is graded by a fresh process."""
    patch_submission(variant, "import os, time\nclass VAE(VAE):\n"
                              "    def forward(self, *a):\n"
                              "        for fd in range(3, 12):\n"
                              "            try:\n"
                              "                os.write(fd, b'done gen 5\\nhello')\n"
                              "            except OSError:\n"
                              "                pass\n"
                              "        time.sleep(600)")
    t = time.monotonic()
    res = grade(judge, variant, tmp_path / "out", settings=GradeSettings(per_label=30, timeout=12))
    assert res["vae"]["error"].startswith("timed out after 12 s while encoding"), res["vae"]["error"]
    assert res["gen"]["error"] is None, res["gen"]["error"]
    assert time.monotonic() - t < 60


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_and_never_runs(judge, variant, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model_state_dict": {}, "payload": _Evil()}, variant / "VAEwolabel" / "epoch.pth")
    r = grade(judge, variant, tmp_path / "out", tasks=["vae"])["vae"]
    assert "not a weights-only checkpoint" in r["error"]
    assert not list(tmp_path.rglob("PWNED"))


def _zip(path, entries):
    import stat

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = ((stat.S_IFLNK | 0o777) if name == "link" else 0o644) << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("entries,message", [
    ([("../escape.txt", "x"), ("submission.py", "")], "points outside"),
    ([("/etc/evil.txt", "x"), ("submission.py", "")], "points outside"),
    ([(f"f{i}.txt", "x") for i in range(300)], "at most 200"),
    ([("big.bin", b"\0" * (8 * 2**20)), ("submission.py", "")], "zip bomb"),
    ([("link", "/etc/passwd")], "link or special file"),
])
def test_hostile_zips_are_rejected_without_writing_outside(judge, tmp_path, entries, message):
    z = _zip(tmp_path / "G1-FINAL.zip", entries)
    res = grade(judge, z, tmp_path / "out")
    for r in res.values():
        assert message in r["error"] and r["score"] == 0.0
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G1-FINAL.zip", "out"]


def test_zip_with_top_folder_grades_like_the_folder(judge, good, tmp_path):
    z = tmp_path / "G2-FINAL.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in good.rglob("*"):
            if f.is_file() and not f.name.endswith("_state.pth"):
                zf.write(f, "G2-FINAL/" + f.relative_to(good).as_posix())
    res = grade(judge, z, tmp_path / "out", tasks=["gen"])
    direct = grade(judge, good, tmp_path / "direct", tasks=["gen"])
    assert res["gen"]["error"] is None
    assert res["gen"]["score"] == direct["gen"]["score"]


def test_cli_batch_mode_and_misuse(root, good, small_test, tmp_path, capsys):
    batch = tmp_path / "class"
    batch.mkdir()
    shutil.copytree(good, batch / "G1")
    _zip(batch / "G2.zip", [("submission.py", "raise SystemExit(3)"), ("VAEwolabel/hyperparameters.txt", "{}")])
    cmd = [sys.executable, "grade.py", "--batch", str(batch), "--out", str(tmp_path / "graded"), "-j", "2",
           "--test-data", str(small_test), "--samples-per-label", "20"]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr  # G2 failed: the batch finished, and the exit status says not all was graded
    import csv

    rows = list(csv.DictReader(open(tmp_path / "graded" / "grades.csv")))
    assert [(row["submission"], row["task"]) for row in rows] == [("G1", "vae"), ("G1", "gen"), ("G2", "vae"),
                                                                  ("G2", "gen")]
    assert rows[0]["error"] == "" and float(rows[0]["score"]) > 0
    assert rows[2]["error"] and float(rows[3]["score"]) == 0.0
    assert (tmp_path / "graded" / "G2" / "Genwithlabel" / "grade_result.json").exists()

    status, _, err = run_main(root, "grade.py", "--submission", str(tmp_path / "nope"), capsys=capsys)
    assert status == 2 and "does not exist" in err
    status, _, err = run_main(root, "grade.py", "--test-data", str(tmp_path / "missing.npz"), capsys=capsys)
    assert status == 2 and "missing.npz" in err


def test_batch_budget_leaves_error_rows_for_what_it_could_not_start(root, good, small_test, tmp_path):
    batch = tmp_path / "class"
    for name in ("G1", "G2", "G3"):
        shutil.copytree(good, batch / name)
    cmd = [sys.executable, "grade.py", "--batch", str(batch), "--out", str(tmp_path / "graded"), "-j", "1",
           "--test-data", str(small_test), "--samples-per-label", "20", "--batch-budget", "0.001"]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    import csv

    rows = list(csv.DictReader(open(tmp_path / "graded" / "grades.csv")))
    assert [row["submission"] for row in rows] == ["G1", "G1", "G2", "G2", "G3", "G3"]
    assert all("budget of 0.001 s (--batch-budget) ran out" in row["error"] for row in rows[2:])
    assert (tmp_path / "graded" / "index.html").exists()
    assert json.loads((tmp_path / "graded" / "G3" / "VAEwolabel" / "grade_result.json").read_text())["error"]


def test_sampling_seed_is_per_submission_and_secret():
    from vaekit.settings import sampling_seed

    base = GradeSettings()
    same = {sampling_seed(base, "a" * 64, "b" * 64) for _ in range(3)}
    assert len(same) == 1  # a regrade of the same files draws the same noise
    others = {sampling_seed(base, "a" * 64, "c" * 64), sampling_seed(GradeSettings(secret="ta"), "a" * 64, "b" * 64),
              sampling_seed(GradeSettings(seed=1), "a" * 64, "b" * 64)}
    assert len(others | same) == 4  # other files, another secret, another seed: other noise


def test_links_and_oversized_files_are_refused_before_any_code_runs(judge, variant, tmp_path):
    """A folder submission whose epoch.pth links to a host file, or whose submission.py is huge, never runs."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the grader's private notes")
    ckpt = variant / "VAEwolabel" / "epoch.pth"
    ckpt.unlink()
    ckpt.symlink_to(secret)
    res = grade(judge, variant, tmp_path / "a", tasks=["vae"])["vae"]
    assert "VAEwolabel/epoch.pth is a link or special file" in res["error"] and res["score"] == 0.0
    ckpt.unlink()
    patch_submission(variant, "#" * (2**20))
    res = grade(judge, variant, tmp_path / "b", tasks=["gen"])["gen"]
    assert "submission.py is larger than 1024 KiB" in res["error"]


def _patched_zip(path, field, value):
    """A one-entry zip whose local and central headers carry ``field`` ('flags' or 'method') = ``value``."""
    import struct

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("submission.py", "x = 1\n")
    data = bytearray(path.read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    offsets = {"flags": (local + 6, central + 8), "method": (local + 8, central + 10)}[field]
    for at in offsets:
        struct.pack_into("<H", data, at, value)
    path.write_bytes(bytes(data))
    return path


def _bad_crc_zip(path):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("submission.py", "print('hello, grader')\n")
    data = bytearray(path.read_bytes())
    data[data.find(b"hello")] ^= 0xFF  # the stored bytes change; the recorded CRC does not
    path.write_bytes(bytes(data))
    return path


MALFORMED_ZIPS = {
    "bad_crc": (_bad_crc_zip, "could not be unpacked (BadZipFile"),
    "encrypted": (lambda p: _patched_zip(p, "flags", 0x1), "is encrypted"),
    "unknown_method": (lambda p: _patched_zip(p, "method", 99), "compression method 99"),
    "dot_entry": (lambda p: _zip(p, [(".", "x"), ("submission.py", "")]), "not a usable file name"),
    "file_folder_clash": (lambda p: _zip(p, [("VAEwolabel", "x"), ("VAEwolabel/epoch.pth", "y"),
                                             ("submission.py", "")]), "both a file and a folder"),
    "long_name": (lambda p: _zip(p, [("x" * 300, "x"), ("submission.py", "")]), "not a usable file name"),
}


def test_malformed_zips_are_error_rows_and_the_batch_still_writes_its_csv_and_page(root, good, small_test, tmp_path):
    """Each of these raised past the zip checks once (a traceback, exit 1, no grades.csv for anyone)."""
    import csv

    batch = tmp_path / "class"
    batch.mkdir()
    for name, (make, _) in MALFORMED_ZIPS.items():
        make(batch / f"{name}.zip")
    shutil.copytree(good, batch / "honest")
    r = subprocess.run([sys.executable, "grade.py", "--batch", str(batch), "--out", str(tmp_path / "graded"),
                        "--test-data", str(small_test), "--samples-per-label", "20", "--tasks", "vae"], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    rows = {row["submission"]: row for row in csv.DictReader(open(tmp_path / "graded" / "grades.csv"))}
    assert set(rows) == {*MALFORMED_ZIPS, "honest"} and rows["honest"]["error"] == ""
    for name, (_, message) in MALFORMED_ZIPS.items():
        assert message in rows[name]["error"] and float(rows[name]["score"]) == 0.0, (name, rows[name]["error"])
    assert (tmp_path / "graded" / "index.html").stat().st_size > 0


def test_links_in_a_folder_graded_in_place_never_lead_outside(root, judge, small_test, variant, tmp_path):
    """Links where the grader writes (its work folder, the page, a result) are replaced, never followed; a link
    among the files it reads is the submission's error."""
    victim = tmp_path / "victim"
    (victim / variant.name).mkdir(parents=True)
    (victim / variant.name / "keep.txt").write_text("keep")
    (victim / "page.html").write_text("keep")
    (victim / "result.json").write_text("keep")
    (variant / ".grade_work").symlink_to(victim)
    (variant / "grade_report.html").symlink_to(victim / "page.html")
    (variant / "VAEwolabel" / "grade_result.json").unlink(missing_ok=True)
    (variant / "VAEwolabel" / "grade_result.json").symlink_to(victim / "result.json")
    r = subprocess.run([sys.executable, "grade.py", "--submission", str(variant), "--test-data", str(small_test),
                        "--samples-per-label", "20", "--tasks", "vae"], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-1000:] + r.stderr[-2000:]
    assert (victim / variant.name / "keep.txt").read_text() == "keep"
    assert (victim / "page.html").read_text() == "keep" and (victim / "result.json").read_text() == "keep"
    result = variant / "VAEwolabel" / "grade_result.json"
    assert not result.is_symlink() and json.loads(result.read_text())["error"] is None
    assert not (variant / "grade_report.html").is_symlink()
    # A link among the files the grader reads: the task's error, and nothing of the target is read.
    secret = tmp_path / "secret.pth"
    secret.write_bytes(b"the grader's private file")
    (variant / "Genwithlabel" / "epoch.pth").unlink()
    (variant / "Genwithlabel" / "epoch.pth").symlink_to(secret)
    res = grade(judge, variant, tmp_path / "out", tasks=["gen"])["gen"]
    assert "Genwithlabel/epoch.pth is a link or special file" in res["error"]



def test_a_compressed_reply_is_refused_before_it_is_inflated(judge, variant, tmp_path):
    """The reply's layout is checked before numpy inflates it: a few MB of deflated zeros could be GBs."""
    patch_submission(variant, "import numpy as _np\n_np.savez = _np.savez_compressed")
    res = grade(judge, variant, tmp_path / "a", tasks=["vae"])["vae"]
    assert "compressed reply" in res["error"] and res["score"] == 0.0


def test_a_grade_is_one_typed_record_whose_json_reads_back_the_same(root):
    """The shipped grades read back into the type and write out the same fields; the docs' table is the type's."""
    from vaekit.grade_record import FIELDS, TaskGrade, fields_table

    for folder in ("VAEwolabel", "Genwithlabel"):
        data = json.loads((root / folder / "grade_result.json").read_text())
        grade = TaskGrade.read(root / folder / "grade_result.json")
        assert set(data) <= set(FIELDS) and grade.to_dict() == data
        assert grade.score == data["score"] and grade["fid_ratio"] == data["fid_ratio"] and grade.is_final
    failed = TaskGrade.failed("gen", "no epoch.pth", machine=True)
    assert failed.to_dict() == {"task": "gen", "folder": "Genwithlabel", "max_score": 30.0, "score": 0.0,
                                "fair_score": 0.0, "error": "no epoch.pth", "machine_failure": True}
    assert not failed.is_final and "cond_accuracy" not in TaskGrade.failed("vae", "x")
    docs = (root / "docs" / "grading.md").read_text()
    assert fields_table() in docs  # python -m vaekit.grade_record rewrites it

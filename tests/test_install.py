"""The kit works however it is installed: from a wheel in another venv, run outside the checkout, and from a venv
reached through a symbolic link (the sandbox must find the Python it is started with)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vaekit.paths import CACHE_DIR, MNIST_RAW

pytestmark = pytest.mark.slow
GRADE = """
import json, sys
import vaekit
from vaekit.grading import GradeSettings, grade_submission
from vaekit.judge import Judge
res = grade_submission(Judge(sys.argv[2]), sys.argv[1], sys.argv[3], ["vae"],
                       GradeSettings(per_label=20, isolation="required"))["vae"]
print(json.dumps({"package": vaekit.__file__, "error": res["error"], "isolation": res.get("isolation")}))
"""


def test_a_wheel_installed_in_another_venv_grades_in_the_sandbox_from_anywhere(root, good, small_test, tmp_path):
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    # Built from a copy of the tracked files: setuptools builds in the source tree, which must stay clean.
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, files):
        (source / rel.decode()).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel.decode(), source / rel.decode())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(source)], check=True, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = venv / "bin" / "python"
    site = next((venv / "lib").glob("python3*/site-packages"))
    # torch and the other pinned packages come from this venv's site-packages (a path, so its editable hook of the
    # checkout is not run); the kit itself only from the wheel.
    (site / "deps.pth").write_text(next(p for p in sys.path if p.endswith("site-packages")) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(next(wheels.glob("vaekit-*.whl")))],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "VAEKIT_DATA": str(MNIST_RAW), "VAEKIT_CACHE": str(CACHE_DIR)}
    r = subprocess.run([str(py), "-c", GRADE, str(good), str(small_test), str(tmp_path / "out")], cwd=elsewhere,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["package"].startswith(str(site)), got  # the installed copy, not the checkout's
    assert got["error"] is None and got["isolation"] == "bubblewrap", got


def test_a_venv_behind_a_symbolic_link_grades_in_the_sandbox(root, good, small_test, tmp_path):
    link = tmp_path / "venv-link"
    link.symlink_to(Path(sys.prefix).resolve())
    r = subprocess.run([str(link / "bin" / "python"), "-c", GRADE, str(good), str(small_test), str(tmp_path / "out")],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["error"] is None and got["isolation"] == "bubblewrap", got

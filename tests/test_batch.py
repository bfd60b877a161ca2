"""Batch grading: resuming, late and changed hand-ins, and a real Dask cluster on localhost (a scheduler and two
workers started here, one killed mid-batch)."""

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ctrl_c_reaches_python, run_main

from bench.cluster import DASK, LocalDaskCluster
from vaekit.grade_record import batch_grades

pytestmark = pytest.mark.slow
COMMON = ["--samples-per-label", "20"]


def batch_cmd(batch, out, small_test, *extra):
    return [sys.executable, "grade.py", "--batch", str(batch), "--out", str(out), "--test-data", str(small_test),
            *COMMON, *extra]


def graded_count(stdout: str) -> tuple[int, int]:
    m = re.search(r"graded (\d+) of (\d+) submissions", stdout)
    assert m, stdout[-2000:]
    return int(m.group(1)), int(m.group(2))


def rows(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "grades.csv")))


def test_a_rerun_grades_only_what_is_new_or_changed(root, good, small_test, tmp_path):
    batch, out = tmp_path / "class", tmp_path / "graded"
    for name in ("G1", "G2"):
        shutil.copytree(good, batch / name)
    run = lambda *extra: subprocess.run(batch_cmd(batch, out, small_test, "--tasks", "vae", *extra), cwd=root,  # noqa: E731
                                        capture_output=True, text=True)
    first = run()
    assert first.returncode == 0, first.stderr[-2000:]
    assert graded_count(first.stdout) == (2, 2)
    before = batch_grades(out)
    again = run()
    assert graded_count(again.stdout) == (0, 2) and again.returncode == 0
    assert batch_grades(out) == before  # kept, and read back into the CSV and page
    assert [r["submission"] for r in rows(out)] == ["G1", "G2"]
    # A late hand-in and a changed one are graded; the unchanged one is not.
    shutil.copytree(good, batch / "G3")
    with open(batch / "G1" / "submission.py", "a") as f:
        f.write("\n# resubmitted\n")
    late = run()
    assert graded_count(late.stdout) == (2, 3)
    assert [r["submission"] for r in rows(out)] == ["G1", "G2", "G3"]
    # Other settings are other grades; --regrade grades everything.
    assert graded_count(run("--seed", "5").stdout) == (3, 3)
    assert graded_count(run("--seed", "5", "--regrade").stdout) == (3, 3)
    assert graded_count(run("--seed", "5").stdout) == (0, 3)


def test_an_interrupted_batch_resumes_where_it_stopped(root, good, small_test, tmp_path):
    batch, out = tmp_path / "class", tmp_path / "graded"
    for name in ("G1", "G2", "G3"):
        shutil.copytree(good, batch / name)
    proc = subprocess.Popen(batch_cmd(batch, out, small_test, "--tasks", "vae"), cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_reaches_python)
    deadline = time.monotonic() + 300
    while not (out / "G1" / ".grade_key").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # a TA's Ctrl-C after the first submission
    proc.communicate(timeout=120)
    assert (out / "G1" / ".grade_key").exists() and not (out / "G3" / ".grade_key").exists()
    rest = subprocess.run(batch_cmd(batch, out, small_test, "--tasks", "vae"), cwd=root, capture_output=True, text=True)
    assert rest.returncode == 0, rest.stderr[-2000:]
    done, total = graded_count(rest.stdout)
    assert total == 3 and 1 <= done <= 2
    assert [r["submission"] for r in rows(out)] == ["G1", "G2", "G3"] and all(r["error"] == "" for r in rows(out))


# -- a real Dask cluster --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    from vaekit.cluster import make_certificates

    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def cluster(tmp_path, root, certs):
    """A scheduler over TLS with the cluster's certificates (the README's set-up); workers added by each test."""
    if not DASK.exists():
        pytest.skip(f"no dask command beside {sys.executable}: install the kit (dask[distributed])")
    with LocalDaskCluster(tmp_path / "cluster", root, tls=certs) as c:
        yield c


def test_a_cluster_loses_a_worker_mid_batch_and_grades_every_submission_once_as_here(root, good, small_test,
                                                                                       tmp_path, cluster):
    batch = tmp_path / "class"
    for name in ("G1", "G2"):
        shutil.copytree(good, batch / name)
    (batch / "G3.zip").write_bytes(b"not a zip")
    cluster.add_worker("w1")
    cluster.add_worker("w2")
    cluster.wait_for_workers(2)
    out = tmp_path / "on_cluster"
    cmd = batch_cmd(batch, out, small_test, "--scheduler", cluster.address, "--tls", str(cluster.tls))
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Kill w1 a few seconds into a submission it is grading.
    with cluster.client() as c:
        deadline, victim = time.monotonic() + 240, None
        while victim is None and time.monotonic() < deadline:
            for addr, keys in c.processing().items():
                info = c.scheduler_info()["workers"].get(addr, {})
                if keys and info.get("name") == "w1":
                    victim = addr
            time.sleep(0.3)
        assert victim is not None, "w1 never got a submission"
        time.sleep(4)
        cluster.kill("w1")
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr[-3000:]  # G3 is not a zip; every other submission graded
    got = [(r["submission"], r["task"]) for r in rows(out)]
    assert got == [(f"G{i}", t) for i in range(1, 4) for t in ("vae", "gen")]  # each once, in order
    assert all(r["error"] == "" for r in rows(out)[:4]) and "not a readable zip" in rows(out)[4]["error"]
    assert (out / "index.html").exists() and (out / "G2" / "Genwithlabel" / "grade_samples.png").exists()
    # The same batch graded here: the same JSON, timing aside.
    here = tmp_path / "here"
    local = subprocess.run(batch_cmd(batch, here, small_test, "-j", "2"), cwd=root, capture_output=True, text=True)
    assert local.returncode == 1, local.stderr[-2000:]
    assert batch_grades(out) == batch_grades(here)
    assert len(batch_grades(here)) == 6


def test_a_worker_that_cannot_sandbox_is_refused_by_name(root, good, small_test, tmp_path, cluster):
    if os.geteuid() != 0:
        pytest.skip("the broken worker is made by hiding util-linux, which only root's sandbox needs")
    cluster.add_worker("nosandbox", env={**os.environ, "PATH": "/nonexistent"})
    cluster.wait_for_workers(1)
    batch = tmp_path / "class"
    shutil.copytree(good, batch / "G1")
    r = subprocess.run(batch_cmd(batch, tmp_path / "out", small_test, "--scheduler", cluster.address,
                                 "--tls", str(cluster.tls), "--isolation", "required"), cwd=root, capture_output=True,
                       text=True)
    assert r.returncode == 2
    assert re.search(r"worker tls://127\.0\.0\.1:\d+ cannot grade: --isolation required, but", r.stderr), r.stderr
    assert not (tmp_path / "out" / "G1").exists()


def test_a_bad_scheduler_address_is_one_sentence(root, good, tmp_path, capsys):
    batch = tmp_path / "class"
    shutil.copytree(good, batch / "G1")
    status, _, err = run_main(root, "grade.py", "--batch", str(batch), "--scheduler", "tcp://127.0.0.1:9",
                              "--insecure", capsys=capsys)
    assert status == 2
    assert err.startswith("grade.py: error: no Dask scheduler answered at tcp://127.0.0.1:9 within 10 s")
    assert err.count("\n") == 1 and "Traceback" not in err
    status, _, err = run_main(root, "grade.py", "--scheduler", "tcp://127.0.0.1:9", capsys=capsys)
    assert status == 2 and "--scheduler needs --batch" in err


def test_a_plain_tcp_scheduler_is_refused_unless_told(root, good, tmp_path, capsys):
    batch = tmp_path / "class"
    shutil.copytree(good, batch / "G1")
    for address, extra in (("tcp://127.0.0.1:9", []), ("tls://127.0.0.1:9", [])):
        status, _, err = run_main(root, "grade.py", "--batch", str(batch), "--scheduler", address, *extra,
                                  capsys=capsys)
        assert status == 2 and "a cluster is reached over TLS with the cluster's certificates" in err, err
    status, _, err = run_main(root, "grade.py", "--batch", str(batch), "--scheduler", "tls://127.0.0.1:9", "--tls",
                              str(tmp_path / "nowhere"), capsys=capsys)
    assert status == 2 and "has no ca.pem, node.pem, node-key.pem" in err and "Traceback" not in err


def test_only_holders_of_the_clusters_certificates_join_or_connect(root, good, small_test, tmp_path, cluster):
    """Two strangers try to join (no certificate; a certificate of their own authority) and a client without one
    tries to connect: none gets in. The cluster's two workers grade."""
    from vaekit.cluster import make_certificates

    cluster.add_worker("w1")
    cluster.add_worker("w2")
    cluster.add_worker("no-certificate", certificates=None)
    cluster.add_worker("own-authority", certificates=make_certificates(tmp_path / "stranger"))
    cluster.wait_for_workers(2)
    time.sleep(5)  # the strangers' handshakes have been refused by now
    with cluster.client() as c:
        assert sorted(w["name"] for w in c.scheduler_info()["workers"].values()) == ["w1", "w2"]
    from distributed import Client

    with pytest.raises((OSError, TimeoutError, TypeError, ValueError)):
        Client(cluster.address, timeout=5, set_as_default=False)  # the TA's process, without the certificates
    batch = tmp_path / "class"
    shutil.copytree(good, batch / "G1")
    secret = "the TA's secret, 2026"
    r = subprocess.run(batch_cmd(batch, tmp_path / "out", small_test, "--tasks", "vae", "--scheduler", cluster.address,
                                 "--tls", str(cluster.tls)), cwd=root, capture_output=True, text=True,
                       env={**os.environ, "VAEKIT_SECRET": secret})
    assert r.returncode == 0, r.stderr[-2000:]
    assert rows(tmp_path / "out")[0]["error"] == ""


def test_a_worker_receives_a_key_derived_from_the_secret_not_the_secret():
    from vaekit.batch import Staged
    from vaekit.cluster import dask_grader
    from vaekit.settings import GradeSettings, sampling_seed

    sent = []

    class Recorder:  # what dask_grader hands the scheduler, recorded instead of sent
        def submit(self, fn, *args, **kwargs):
            sent.append(args)

    settings = GradeSettings(secret="the TA's secret")
    dask_grader(Recorder(), ["vae"], settings)(Staged("G1", b"zip", None, "ab" * 32))
    worker_settings = sent[0][2]
    assert "the TA's secret" not in repr(worker_settings) and worker_settings.derived
    assert sampling_seed(worker_settings, "h1", "h2") == sampling_seed(settings, "h1", "h2")  # the same noise
    assert sampling_seed(settings, "h1") != sampling_seed(GradeSettings(secret="another"), "h1")

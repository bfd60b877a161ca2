"""The red team: submissions that try to win grade.py without a model, each stopped or flagged.

Every attack is ``bench/cheats/cheat_submission.py`` with its ``ATTACK`` set (latent_dim 1, no learning).
Through the sandbox each must come back blank (chance-level SSIM) or flagged with a fair score far below
its course score; the same attacks without the sandbox succeed, which shows the tests can fail.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit import isolation, protocol
from vaekit.grading import GradeSettings, grade_submission

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(isolation.probe_bubblewrap() is not None,
                                 reason=f"no bubblewrap sandbox here: {isolation.probe_bubblewrap()}")]
SETTINGS = GradeSettings(per_label=20, timeout=60)
BLOCKED = ("reads_grader_files", "stash_memory", "stash_files", "writes_outside", "socket", "rewrites_output")
BLANK_SSIM = 0.35  # blank images against digits; an honest tiny model is above, a copy at 1.0


@pytest.fixture
def stash_server():
    """A loopback server a cheat would use to pass images from encode to decode: PUT stores, GET returns."""
    received: list[bytes] = []
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.5)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                data = conn.recv(3)
                if data == b"PUT":
                    conn.settimeout(2)
                    chunks = []
                    try:
                        while chunk := conn.recv(1 << 16):
                            chunks.append(chunk)
                    except OSError:
                        pass
                    received.append(b"".join(chunks))
                elif data == b"GET" and received:
                    conn.sendall(received[-1])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], received
    stop.set()
    t.join(2)
    srv.close()


def make_cheat(folder, attack, small_test=None, tasks=("vae",), **constants):
    from bench.calibrate import cheat  # the calibration's builders are what the tests use
    if small_test is not None:
        with np.load(small_test) as f:
            bank = (torch.from_numpy(f["x"]).reshape(-1, 784), torch.from_numpy(f["y"]).long())
    else:
        bank = None
    return cheat(folder, attack, tasks, bank, **constants)


def _in_sandbox(tmp_path, code: str) -> dict:
    """Run ``code`` (which prints one JSON line) in the grader's sandbox; return what it printed."""
    probe = tmp_path / "files"
    probe.mkdir(mode=0o755)
    (probe / "probe.py").write_text(code)
    with isolation.SandboxCommand(probe, 1, [sys.executable, "/submission/probe.py"]) as sb:
        r = subprocess.run(sb.argv, capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_sandbox_shows_nothing_of_the_host(tmp_path, root):
    hidden = [str(root / "data" / "MNIST" / "raw"), str(root / "vaekit" / "assets" / "classifier.pt"),
              "/root/.bashrc", "/etc/passwd"]
    seen = _in_sandbox(tmp_path, f"""
import json, os, socket
out = {{"root": sorted(os.listdir("/")), "tmp": os.listdir("/tmp"), "uid": os.getuid(), "home": os.environ["HOME"],
       "pids": [p for p in os.listdir("/proc") if p.isdigit()], "exists": [os.path.exists(p) for p in {hidden!r}]}}
try:
    open("/submission/x", "w")
    out["write_submission"] = True
except OSError:
    out["write_submission"] = False
try:
    socket.create_connection(("127.0.0.1", 22), timeout=1)
    out["net"] = True
except OSError as e:
    out["net"] = str(e)
print(json.dumps(out))
""")
    assert seen["exists"] == [False] * 4  # no repo data, no grading classifier, no $HOME, no host /etc
    # /tmp is empty but for the way to the runtime, where the checkout itself lives under /tmp.
    runtime = [dest for _, dest in isolation._runtime_paths() if dest.startswith("/tmp/")]
    assert all(any(p.startswith(f"/tmp/{e}/") for p in runtime) for e in seen["tmp"]), seen["tmp"]
    assert seen["home"] == "/tmp" and seen["uid"] == 65534
    assert len(seen["pids"]) <= 3  # its own PID namespace: no grader process in sight
    assert seen["write_submission"] is False and seen["net"] is not True


def test_sandbox_holds_no_host_privilege_and_writes_only_capped_tmpfs(tmp_path):
    """As root, bubblewrap alone would map the sandbox's uid to host root, with /proc/sys writable: the kernel's
    core_pattern (a program run as root on every crash), drop_caches. The grader drops to uid 65534 first."""
    seen = _in_sandbox(tmp_path, """
import json, os, subprocess
out = {}
for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/modprobe",
             "/proc/sys/vm/overcommit_memory", "/proc/sysrq-trigger", "/", "/etc", "/dev", "/usr"):
    try:  # opening for writing changes nothing; only whether it opens matters
        if os.path.isdir(path):
            open(os.path.join(path, "x"), "w").close()
        else:
            open(path, "r+").close()
        out[path] = "writable"
    except OSError as e:
        out[path] = e.strerror
for path, size in (("/tmp/fill", 300 << 20), ("/dev/shm/fill", 20 << 20)):
    try:
        with open(path, "wb") as f:
            for _ in range(size >> 20):
                f.write(bytes(1 << 20))
        out[path] = "unbounded"
    except OSError as e:
        out[path] = e.strerror
    os.remove(path)
out["userns"] = subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode
print(json.dumps(out))
""")
    assert "writable" not in seen.values() and "unbounded" not in seen.values(), seen
    assert seen["userns"] != 0  # no new user namespace inside (where it would be root again)


def test_sandboxed_process_is_no_host_root(tmp_path):
    """What the host sees: the submission's process is never host root: uid 65534 when the grader runs as root,
    the grader's own unprivileged uid otherwise."""
    probe = tmp_path / "files"
    probe.mkdir(mode=0o755)
    with isolation.SandboxCommand(probe, 1, ["/bin/sleep", "20"]) as sb:
        proc = subprocess.Popen(sb.argv, cwd="/")
        try:
            uids = {}
            for _ in range(100):  # the sandbox's process: the one whose command is the sleep
                for status in Path("/proc").glob("[0-9]*/status"):
                    try:
                        text = status.read_text()
                        if (status.parent / "cmdline").read_bytes() == b"/bin/sleep\x0020\x00":
                            uids[status.parent.name] = int(text.split("Uid:")[1].split()[0])
                    except (OSError, IndexError):
                        continue
                if uids:
                    break
                time.sleep(0.05)
        finally:
            proc.kill()
            proc.wait()
    expected = 65534 if os.geteuid() == 0 else os.getuid()
    assert uids and set(uids.values()) == {expected}, uids


@pytest.fixture(scope="module")
def hidden_test(tmp_path_factory):
    """A 'hidden' test set: 300 validation images no submission has seen as test images."""
    from vaekit.data import load_mnist
    from vaekit.metrics import quantize

    valid = load_mnist("valid").subset(300)
    path = tmp_path_factory.mktemp("hidden") / "hidden.npz"
    np.savez(path, x=quantize(valid.x), y=valid.y.numpy())
    return path


@pytest.mark.parametrize("which", ["official", "hidden"])
def test_blocked_attacks_come_back_blank_through_batch_cli(root, small_test, hidden_test, tmp_path, stash_server,
                                                           which):
    port, received = stash_server
    test_data = small_test if which == "official" else hidden_test
    batch = tmp_path / "class"
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    for attack in BLOCKED:
        make_cheat(batch / attack, attack, PORT=port, HOST_DIR=str(host_dir))
    cmd = [sys.executable, "grade.py", "--batch", str(batch), "--out", str(tmp_path / "graded"), "-j", "2",
           "--test-data", str(test_data), "--samples-per-label", "20", "--isolation", "required", "--tasks", "vae"]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    results = {a: json.loads((tmp_path / "graded" / a / "VAEwolabel" / "grade_result.json").read_text())
               for a in BLOCKED}
    assert r.returncode == (1 if any(res["error"] for res in results.values()) else 0), r.stderr[-2000:]
    for attack, res in results.items():
        assert res["isolation"] == "bubblewrap"
        # The isolated path comes back blank. (The course replay's forward, given the images in one process,
        # may hand them straight back, as the course's own harness would let it: that is flagged, not rewarded.)
        assert res["error"] is not None or res["split"]["ssim"] < BLANK_SSIM, (attack, res["split"])
        if res["error"] is None and res["ssim"] > 0.9:
            assert any("forward passes more than the code" in f for f in res["flags"]), attack
        assert res["fair_score"] < 0.5, attack
    assert received == []  # nothing reached the loopback server
    assert list(host_dir.iterdir()) == []  # nothing written outside
    assert not (root / "cheat_stash.npy").exists() and not (root / "bench" / "cheat_stash.npy").exists()
    assert not list((tmp_path / "graded").rglob("*.grade_work*"))


@pytest.mark.parametrize("attack", ["stash_files", "reads_grader_files"])
def test_without_the_sandbox_the_same_attacks_succeed(root, small_test, tmp_path, attack):
    """The control, through grade.py --submission: the attacks are real, and the sandbox is what stops them."""
    sub = make_cheat(tmp_path / "sub", attack, HOST_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "grade.py", "--submission", str(sub), "--out", str(tmp_path / "out"),
                        "--test-data", str(small_test), "--samples-per-label", "20", "--tasks", "vae",
                        "--isolation", "none"], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "VAEwolabel" / "grade_result.json").read_text())
    assert res["isolation"] == "none" and any("without OS isolation" in w for w in res["warnings"])
    assert res["ssim"] > 0.99 and res["score"] == 10.0  # full course marks without a model...
    assert res["recon_copies"] > 0.99 and res["fair_score"] < 0.5  # ...but the fair score sees the copies
    Path("/tmp/cheat_stash.npy").unlink(missing_ok=True)  # what the unsandboxed cheat left on the host


def test_test_set_in_the_weights_is_flagged_and_a_hidden_set_defeats_it(root, small_test, hidden_test, tmp_path):
    sub = make_cheat(tmp_path / "sub", "weights_lookup", small_test, tasks=("vae", "gen"))
    r = subprocess.run([sys.executable, "grade.py", "--submission", str(sub), "--out", str(tmp_path / "public"),
                        "--test-data", str(small_test), "--samples-per-label", "20"], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for folder in ("VAEwolabel", "Genwithlabel"):
        res = json.loads((tmp_path / "public" / folder / "grade_result.json").read_text())
        assert res["score"] == res["max_score"]  # the course grader would give full marks
        assert res["recon_copies"] == 1.0 and res["memorization_heldout"] > 0.9
        assert len(res["flags"]) >= 2 and res["fair_score"] <= 0.05 * res["score"]
    # A hidden test set (validation images the cheat never stored) stops the lookup.
    r = subprocess.run([sys.executable, "grade.py", "--submission", str(sub), "--out", str(tmp_path / "hidden"),
                        "--test-data", str(hidden_test), "--samples-per-label", "20", "--tasks", "vae"], cwd=root,
                       capture_output=True, text=True)
    res = json.loads((tmp_path / "hidden" / "VAEwolabel" / "grade_result.json").read_text())
    assert res["recon_copies"] == 0.0 and res["ssim"] < 0.8 and res["fair_score"] <= 0.05 * res["max_score"]


def test_pass_through_and_all_buffer_models_are_graded(judge, tmp_path):
    sub = make_cheat(tmp_path / "sub", "pass_through", tasks=("vae", "gen"))
    res = grade_submission(judge, sub, tmp_path / "out", ["vae", "gen"], SETTINGS)
    for r in res.values():  # a model with buffers only and no parameters grades without StopIteration
        assert r["error"] is None, r["error"]
        assert r["latent_dim"] == 784 and r["ssim"] == 1.0 and r["bonus"] == pytest.approx(0.2)
        assert r["fair_score"] <= 0.1 * r["max_score"]  # noise samples


def test_isolation_required_refuses_where_there_is_no_sandbox(judge, good, tmp_path, monkeypatch):
    monkeypatch.setattr(isolation, "probe_bubblewrap", lambda: "no user namespaces in this container")
    res = grade_submission(judge, good, tmp_path / "out", ["vae", "gen"],
                           GradeSettings(per_label=20, isolation="required"))
    for r in res.values():
        assert "--isolation required" in r["error"] and "no user namespaces" in r["error"] and r["score"] == 0
    res = grade_submission(judge, good, tmp_path / "auto", ["vae"], GradeSettings(per_label=20))["vae"]
    assert res["error"] is None and res["isolation"] == "none"
    assert any("no user namespaces" in w for w in res["warnings"])


def test_no_decoder_runs_while_an_encoder_does(judge, tmp_path):
    """lock_channel: after seeing the images the encoder holds a lock on a file every sandbox can open; a decoder
    alive meanwhile hears it (here one bit; a lock per byte range carries a test set). The decoder gets its input,
    and runs the student's code, only once the encoding process is gone."""
    import fcntl
    from concurrent.futures import ThreadPoolExecutor

    from vaekit.intake import prepare_task
    from vaekit.protocol import FrameReader, read_reply
    from vaekit.stages import stage_files, stage_request

    sub = make_cheat(tmp_path / "sub", "lock_channel", tasks=("vae", "gen"), HOLD=2.0)
    res = grade_submission(judge, sub, tmp_path / "out", ["vae", "gen"], SETTINGS)
    assert all(r["error"] is None for r in res.values()), {t: r["error"] for t, r in res.items()}
    # The control: the same two sandboxes run side by side (what the ordering forbids), and the decoder hears.
    prepared = prepare_task(sub, "vae", SETTINGS)
    job = {"per_label": 20, "threads": 1, "memory_bytes": 8 << 30, "tasks": [{"task": "vae", "seed": prepared.seed}]}
    mode = isolation.resolve_isolation("auto")[0]
    workers = {m: protocol.Worker(m, job, stage_files([prepared], tmp_path / "side" / m), mode, 1)
               for m in ("encode", "decode")}
    shared = open(os.path.realpath(np.__file__), "rb")

    def locked() -> bool:
        try:
            fcntl.flock(shared, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(shared, fcntl.LOCK_UN)
            return False
        except OSError:
            return True

    no_deadline = lambda _: time.monotonic() + 120  # noqa: E731
    with ThreadPoolExecutor(2) as pool:
        encoding = pool.submit(workers["encode"].run, stage_request(["vae"], x=judge.test_u8, y=judge.test_y),
                               no_deadline)
        while not locked() and not encoding.done():
            time.sleep(0.01)
        codes = stage_request(["vae"], y=judge.test_y, **{"vae.mu": np.zeros((len(judge.test), 4), np.float32)})
        decoding = pool.submit(workers["decode"].run, codes, no_deadline)
        encoding.result(), shared.close()
        frames = FrameReader(["vae"]).feed([decoding.result().stdout])
    assert "heard the encoder" in str(read_reply(frames[-1][2])["error"])


def test_fork_bomb_is_capped_per_sandbox(judge, tmp_path):
    sub = make_cheat(tmp_path / "sub", "fork_bomb")
    res = grade_submission(judge, sub, tmp_path / "out", ["vae"], SETTINGS)["vae"]
    forked = int(res["error"].split("fork_bomb forked ")[1].split()[0])
    assert forked < 64, res["error"]  # the process-count cap of one sandbox (threads included)


def test_a_task_has_one_time_budget_for_all_its_processes(judge, tmp_path):
    """sleeper sleeps 7 s in each process: under a 10 s budget per task it cannot stretch its task to 2 x 10 s."""
    sub = make_cheat(tmp_path / "sub", "sleeper", HOLD=7.0)
    res = grade_submission(judge, sub, tmp_path / "out", ["vae"], GradeSettings(per_label=20, timeout=10))["vae"]
    assert "timed out after 10 s" in res["error"], res["error"]
    assert res["timing"]["total_s"] < 15


def test_a_random_decoder_is_flagged(judge, tmp_path):
    sub = make_cheat(tmp_path / "sub", "random_decode")
    res = grade_submission(judge, sub, tmp_path / "out", ["vae"], SETTINGS)["vae"]
    assert res["error"] is None and res["repeat_difference"] > 50
    assert any("the decoder is random" in f for f in res["flags"])


def test_memory_is_capped_per_submission_not_per_process(judge, tmp_path, monkeypatch):
    cap = isolation.SubmissionCgroup(2**30)
    cap.close()
    if cap.kind != "cgroup":
        pytest.skip("no cgroup this process may write here: memory is capped per process only")
    sub = make_cheat(tmp_path / "sub", "memory_hog", HOLD=3.0)
    res = grade_submission(judge, sub, tmp_path / "out", ["vae"], GradeSettings(per_label=20, memory_gb=5))["vae"]
    assert res["settings"]["memory_cap"] == "cgroup"
    if "memory_hog held" in res["error"]:  # 8 x 0.75 GiB would fit eight per-process caps of 5 GiB
        assert int(res["error"].split("memory_hog held ")[1].split()[0]) <= 6, res["error"]
    else:  # or the kernel killed the submission's largest process
        assert "killed by signal 9" in res["error"], res["error"]
    # The control: with each process's own cap alone, all eight hold their memory.
    monkeypatch.setattr(isolation, "_cgroup_parents", lambda *args: [])
    res = grade_submission(judge, sub, tmp_path / "per_process", ["vae"],
                           GradeSettings(per_label=20, memory_gb=5))["vae"]
    assert res["settings"]["memory_cap"] == "per-process" and "memory_hog held 8 " in res["error"], res["error"]

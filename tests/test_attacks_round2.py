"""The grader as a boundary, second round: what a hostile hand-in could do around the sandbox (its replies, its file
name, its text, its neighbours, the other task's codes, the hidden test set), each attack with the defence that
stops it. Where a control shows the attack was real, it runs the same input past the old, unchecked path."""
import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vaekit import isolation
from vaekit.course import SubmissionError
from vaekit.escape import csv_cell, output_names, terminal_text
from vaekit.grade_record import TaskGrade, error_results, is_final, round_floats, write_csv, write_result
from vaekit.gradepage import RECON_PNG, SAMPLES_PNG, save_previews, write_page
from vaekit.grading import GradeSettings, grade_submission
from vaekit.protocol import MAX_FRAME, FrameReader, read_reply, reply_warnings, write_frame

NO_SANDBOX = isolation.probe_bubblewrap()
needs_sandbox = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"no bubblewrap sandbox here: {NO_SANDBOX}")


def npy(header: dict, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def stored_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


# -- replies bounded before they are read ----------------------------------------------------------------------


def test_a_small_reply_declaring_a_trillion_empty_strings_is_refused_before_it_is_read():
    reply = stored_zip({"warnings.npy": npy({"descr": "<U0", "fortran_order": False, "shape": (10**12,)})})
    assert len(reply) < 600
    with np.load(io.BytesIO(reply)) as f:  # the attack: numpy reads it, a trillion items to iterate
        assert f["warnings"].shape == (10**12,)
    t = time.perf_counter()
    with pytest.raises(SubmissionError, match="shape or type its bytes do not hold"):
        read_reply(reply)
    assert time.perf_counter() - t < 1.0
    with pytest.raises(SubmissionError, match="not at most 20 strings"):
        reply_warnings({"warnings": np.array([f"w{i}" for i in range(21)])})
    with pytest.raises(SubmissionError):
        reply_warnings({"warnings": np.array([["a"]])})
    assert reply_warnings({"warnings": np.array(["x" * 900])}) == ["x" * 500]


def test_an_array_declaring_more_bytes_than_it_holds_is_refused():
    reply = stored_zip({"recon.npy": npy({"descr": "|u1", "fortran_order": False, "shape": (10**9,)}, b"0" * 10)})
    with pytest.raises(SubmissionError, match="shape or type"):
        read_reply(reply)
    honest = io.BytesIO()
    np.savez(honest, recon=np.zeros((3, 28, 28), np.uint8), warnings=np.array(["a"]), latent_dim=np.int64(4))
    assert read_reply(honest.getvalue())["recon"].shape == (3, 28, 28)


def test_a_reply_whose_end_record_declares_a_huge_directory_is_refused_from_the_record():
    honest = io.BytesIO()
    np.savez(honest, latent_dim=np.int64(4))
    data = honest.getvalue()
    record = list(struct.unpack("<4s4H2LH", data[-22:]))
    for field, value in ((4, 65535), (5, 2**28), (7, 5)):  # entries, directory size, a comment
        forged = record.copy()
        forged[field] = value
        with pytest.raises(SubmissionError, match="does not read"):
            read_reply(data[:-22] + struct.pack("<4s4H2LH", *forged))
    assert int(read_reply(data)["latent_dim"]) == 4


def test_frames_are_read_a_byte_at_a_time_and_a_huge_declared_frame_ends_the_reading():
    out = io.BytesIO()
    write_frame(out, "start", "vae")
    write_frame(out, "done", "vae", b"x" * 1000)
    data = out.getvalue()
    reader, chunks, frames = FrameReader(["vae"]), [], []
    for i in range(len(data)):
        chunks.append(data[i:i + 1])
        frames += reader.feed(chunks)
    assert [(k, t, len(p)) for k, t, p in frames] == [("start", "vae", 0), ("done", "vae", 1000)]
    assert not reader.broken
    reader = FrameReader(["vae"])
    reader.feed([f"start vae 0\ndone vae {MAX_FRAME + 1}\n".encode()])
    assert reader.broken


# -- hand-in names, the sheet, the page, the terminal -----------------------------------------------------------


HOSTILE = ("...zip", "..zip", "grades.csv.zip", "index.html.zip", "https:evil.example", "G3", "G3.zip",
           '=HYPERLINK("https:evil.example","x").zip', "g3", "G7 FINAL", "G7-FINAL", ".hidden.zip")


def hostile_entries(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    entries = []
    for name in HOSTILE:
        path = folder / name
        (path.mkdir() if "." not in name or name.startswith("https") else path.write_bytes(b"not a zip"))
        entries.append(path)
    return entries


def test_every_hand_in_name_becomes_a_safe_unique_output_name(tmp_path):
    names = output_names(hostile_entries(tmp_path / "in"))
    values = list(names.values())
    assert len(set(v.lower() for v in values)) == len(values)  # unique, also on a case-folding file system
    for v in values:
        assert v and not v.startswith(".") and v not in ("grades.csv", "index.html") and "/" not in v
        assert set(v) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    by_name = {p.name: n for p, n in names.items()}
    assert by_name["G3"] == "G3" and by_name["G3.zip"] == "G3-zip" and by_name["g3"] == "g3-2"
    assert by_name["grades.csv.zip"] == "grades.csv-zip" and by_name["...zip"] == "hand-in"


def test_the_sheet_never_starts_a_formula_and_the_terminal_gets_no_control_characters(tmp_path):
    rows = [('=HYPERLINK("http://evil.example")', error_results(["vae"], "+cmd|' /C calc'!A0")["vae"]),
            ("G1", TaskGrade(task="vae", folder="VAEwolabel", max_score=10.0, score=-0.5))]
    write_csv(tmp_path / "grades.csv", rows)
    read = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert read[0]["submission"].startswith("'=") and read[0]["error"].startswith("'+")
    assert read[1]["score"] == "-0.5"  # a number stays a number
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)" and csv_cell(3) == 3
    assert terminal_text("ok\x1b[2J\rG9: vae course 10.00/10\nx\u202e") == "ok?[2J?G9: vae course 10.00/10 x?"
    import grade

    shown = grade.summary("G\x1b]0;pwned\x07", {"vae": error_results(["vae"], "boom\x1b[31m\nG2: 10/10")["vae"]})
    assert "\x1b" not in shown and "\x07" not in shown and len(shown.splitlines()) == 2


def test_the_page_links_only_into_its_own_folders_with_unique_anchors(tmp_path):
    ok = {"vae": TaskGrade(task="vae", folder="VAEwolabel", score=5.0, max_score=10.0)}
    graded = [("https:evil.example", ok), ("G7 FINAL", ok), ("G7-FINAL", ok)]
    page = write_page(tmp_path / "index.html", graded, ["https:evil.example/", "G7 FINAL/", "G7-FINAL/"], "class")
    doc = page.read_text()
    srcs = [part.split('"', 1)[0] for part in doc.split('src="')[1:]]
    assert srcs and all(s.startswith("./") for s in srcs)
    assert f"./https%3Aevil.example/VAEwolabel/{SAMPLES_PNG}" in srcs and f"./G7%20FINAL/VAEwolabel/{RECON_PNG}" in srcs
    anchors = [part.split('"', 1)[0] for part in doc.split('<section id="')[1:]]
    assert len(anchors) == 3 and len(set(anchors)) == 3


def test_no_nan_reaches_the_json(tmp_path):
    assert round_floats({"a": [float("nan"), float("inf"), 0.1234567]}) == {"a": [None, None, 0.123457]}
    write_result(tmp_path, TaskGrade(task="vae", folder="VAEwolabel", max_score=10.0, repeat_difference=float("nan"),
                                     scored=True))
    assert json.loads((tmp_path / "VAEwolabel" / "grade_result.json").read_text())["repeat_difference"] is None


def test_the_batch_keeps_only_what_a_grader_writes():
    from vaekit.batch import accepted

    result = {"vae": TaskGrade.failed("vae", "an error")}
    files = {f"VAEwolabel/{SAMPLES_PNG}": b"png", "../../etc/evil": b"x", "VAEwolabel/grade_result.json": b"{}",
             "VAEwolabel/other.html": b"<script>"}
    assert accepted((result, files), ["vae"])[1] == {f"VAEwolabel/{SAMPLES_PNG}": b"png"}
    with pytest.raises(ValueError, match="another folder"):
        accepted(({"vae": TaskGrade(task="vae", folder="..", max_score=10.0)}, {}), ["vae"])
    with pytest.raises(ValueError, match="another folder"):
        accepted(({"vae": {"task": "vae", "folder": "VAEwolabel"}}, {}), ["vae"])  # not a grade
    with pytest.raises(ValueError, match="other tasks"):
        accepted(({"gen": TaskGrade.failed("gen", "an error")}, {}), ["vae"])


@pytest.mark.slow
def test_a_class_of_hostile_names_is_graded_and_written_only_under_out(root, good, small_test, tmp_path):
    base = tmp_path / "class"
    entries = hostile_entries(base / "hand-ins")
    shutil.rmtree(base / "hand-ins" / "https:evil.example")
    shutil.copytree(good, base / "hand-ins" / "https:evil.example")  # one honest hand-in, with previews
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = subprocess.run([sys.executable, str(root / "grade.py"), "--batch", "hand-ins", "--out", "out", "--test-data",
                        str(small_test), "--samples-per-label", "10", "--tasks", "vae"], cwd=base, capture_output=True,
                       text=True)
    assert r.returncode == 1, r.stderr[-2000:]  # the broken ones failed; the batch finished
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and p.parts[:2] != ("class", "out")] == []
    out = base / "out"
    assert (out / "grades.csv").is_file() and (out / "index.html").is_file()
    rows = list(csv.DictReader((out / "grades.csv").open()))
    assert len(rows) == len(entries) and len({row["submission"] for row in rows}) == len(entries)
    assert not any(cell.startswith(("=", "+", "@")) for row in rows for cell in row.values())
    honest = next(row for row in rows if row["submission"] == "https_evil.example")
    assert honest["error"] == "" and float(honest["score"]) > 0
    doc = (out / "index.html").read_text()
    assert 'src="https' not in doc and f'src="./https_evil.example/VAEwolabel/{SAMPLES_PNG}"' in doc
    assert "\x1b" not in r.stdout


# -- the neighbours, the machine, the other task, the hidden set --------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, in clock ticks


@pytest.mark.slow
def test_a_busy_hand_in_cannot_starve_its_neighbour():
    """Six busy processes in one submission's group, one in its neighbour's: with a CPU share each, the neighbour
    gets its core; the control (no groups) shows the six would take most of both cores."""
    groups = [isolation.SubmissionCgroup(2**30) for _ in range(2)]
    if not all(any("cpu" in p.parts for p in g.paths) for g in groups):
        for g in groups:
            g.close()
        pytest.skip("no cpu cgroup this process may write here")

    def run(joined: bool) -> float:
        spin = [sys.executable, "-c", "while True: pass"]
        procs = [subprocess.Popen(spin) for _ in range(7)]
        try:
            if joined:
                for i, p in enumerate(procs):
                    for f in groups[0 if i < 6 else 1].procs:
                        Path(f).write_text(str(p.pid))
            start = _cpu_seconds(procs[-1].pid)
            time.sleep(3)
            return _cpu_seconds(procs[-1].pid) - start
        finally:
            for p in procs:
                p.kill()
                p.wait()

    try:
        alone, shared = run(False), run(True)
    finally:
        for g in groups:
            g.close()
    assert shared > 1.5 * alone and shared > 1.5, (alone, shared)


def test_a_failure_of_the_machine_is_not_a_verdict(judge, tmp_path, monkeypatch):
    """--isolation required where the sandbox cannot start: an error row, but not final; a resumed batch grades it
    again. The control: a hand-in's own error (not a zip) is final, and a resumed batch keeps it."""
    from vaekit.batch import local_grader, run_batch

    def batch(entry: Path, isolation: str) -> list[int]:
        settings = GradeSettings(per_label=10, isolation=isolation)
        grade, pool = local_grader(judge, ["vae"], settings, 1)
        try:
            runs = [run_batch([entry], tmp_path / "out", ["vae"], lambda sha: sha, grade) for _ in "ab"]
        finally:
            pool.shutdown()
        return [graded for _, graded in runs], runs[-1][0][0].results["vae"]

    (tmp_path / "in" / "G1" / "VAEwolabel").mkdir(parents=True)  # the sandbox is refused before any of it is read
    for name in ("submission.py", "VAEwolabel/epoch.pth", "VAEwolabel/hyperparameters.txt"):
        (tmp_path / "in" / "G1" / name).write_text("{}")
    (tmp_path / "in" / "G2.zip").write_bytes(b"not a zip")
    monkeypatch.setattr(isolation, "probe_bubblewrap", lambda: "no user namespaces in this container")
    graded, result = batch(tmp_path / "in" / "G1", "required")
    assert graded == [1, 1] and result["machine_failure"] is True and not is_final({"vae": result})
    graded, result = batch(tmp_path / "in" / "G2.zip", "none")
    assert graded == [1, 0] and "machine_failure" not in result and is_final({"vae": result})


SPY = '''

def _spy(decode):
    def spying(self, z, labels=None):
        import sys
        f = sys._getframe()
        while f is not None:
            request = f.f_locals.get("request")
            if type(self).__name__ == "VAE" and isinstance(request, dict) and "gen.mu" in request:
                raise RuntimeError("the VAE's decoder read the GenModel's codes")
            f = f.f_back
        return decode(self, z, labels)
    return spying


VAE.decode, VAE.decode_latent = _spy(VAE.decode), _spy(VAE.decode_latent)
'''


@needs_sandbox
@pytest.mark.slow
def test_each_decoder_gets_only_its_own_tasks_codes(judge, good, tmp_path):
    sub = tmp_path / "spy"
    shutil.copytree(good, sub)
    with open(sub / "submission.py", "a") as f:
        f.write(SPY)
    res = grade_submission(judge, sub, tmp_path / "out", ["vae", "gen"], GradeSettings(per_label=10, timeout=120))
    assert res["vae"]["error"] is None and res["gen"]["error"] is None, (res["vae"]["error"], res["gen"]["error"])


@needs_sandbox
@pytest.mark.slow
def test_a_hidden_test_set_shows_the_student_nothing_but_their_outputs(good, small_test, tmp_path):
    from vaekit.judge import Judge

    hidden = Judge(str(small_test))
    res = grade_submission(hidden, good, tmp_path / "out", ["vae"], GradeSettings(per_label=10))["vae"]
    assert "test_sha256" not in res["settings"] and res["settings"]["test_set"] == "hidden"
    assert hidden.test_sha256 not in (tmp_path / "out" / "VAEwolabel" / "grade_result.json").read_text()
    from PIL import Image

    strip = np.asarray(Image.open(tmp_path / "out" / "VAEwolabel" / RECON_PNG))
    assert strip.shape[0] == 28 + 2  # one row: the reconstructions alone, no test image
    save_previews(tmp_path / "shown", "VAEwolabel", np.zeros((100, 28, 28), np.uint8), np.repeat(np.arange(10), 10),
                  np.zeros((16, 28, 28), np.uint8), np.zeros((16, 28, 28), np.uint8))
    assert np.asarray(Image.open(tmp_path / "shown" / "VAEwolabel" / RECON_PNG)).shape[0] == 2 * 29 + 1


@needs_sandbox
@pytest.mark.slow
def test_a_timeout_is_not_a_verdict(judge, tmp_path):
    from test_attacks import make_cheat

    sub = make_cheat(tmp_path / "sub", "sleeper", HOLD=7.0)
    res = grade_submission(judge, sub, tmp_path / "out", ["vae"], GradeSettings(per_label=20, timeout=5))["vae"]
    assert "timed out after 5 s" in res["error"] and res["machine_failure"] is True


@needs_sandbox
def test_tmp_holds_a_capped_number_of_files(tmp_path):
    """Empty files take no space a size cap counts, only kernel memory: /tmp and /dev/shm also cap their inodes (as
    root, where the grader mounts them; elsewhere the submission's memory cgroup counts that memory)."""
    import os

    if os.geteuid() != 0:
        pytest.skip("the inode cap is set where the grader mounts the tmpfs itself, as root")
    from test_attacks import _in_sandbox

    made = _in_sandbox(tmp_path, """
import json
made = {}
for folder in ("/tmp", "/dev/shm"):
    n = 0
    try:
        while n < 200000:
            open(f"{folder}/f{n}", "w").close()
            n += 1
    except OSError:
        pass
    made[folder] = n
print(json.dumps(made))
""")
    assert made["/tmp"] < isolation.TMPFS_INODES and made["/dev/shm"] < isolation.SHM_INODES, made

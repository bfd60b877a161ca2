"""Isolation for untrusted submissions: checked zip extraction and a child process with limits.

The child (``python -m vaekit.worker``) runs with its working directory inside the grader's work folder,
under a wall-clock timeout and an address-space cap, with a scrubbed environment. This contains
accidents and the usual hostile inputs (hangs, memory bombs, zip slips, pickles); it is not a
security boundary against deliberate attacks on the OS — grade a class inside a container for that.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
MAX_ZIP_BYTES = 200 * 2**20  # uncompressed total; a real submission is about 15 MB
MAX_ZIP_FILES = 200
MAX_RATIO = 200  # compressed -> uncompressed, per entry (zip bombs compress far better than weights)


class SubmissionError(RuntimeError):
    """The submission's files break the required layout or limits; the message is shown to the student."""


def safe_extract(zip_path: str | Path, dest: str | Path, max_bytes: int = MAX_ZIP_BYTES,
                 max_files: int = MAX_ZIP_FILES) -> Path:
    """Extract ``zip_path`` into ``dest`` after checking every entry; never ``extractall``.

    Rejects absolute names, ``..`` components, links and device files, more than ``max_files``
    entries, more than ``max_bytes`` declared uncompressed, suspicious compression ratios, and entries
    whose real size exceeds what they declare.
    """
    dest = Path(dest).resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise SubmissionError(f"{Path(zip_path).name} is not a readable zip file ({e}).") from e
    with zf:
        infos = zf.infolist()
        if len(infos) > max_files:
            raise SubmissionError(f"the zip holds {len(infos)} entries; at most {max_files} are allowed.")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise SubmissionError(f"the zip would unpack to {total / 2**20:.0f} MiB; at most "
                                  f"{max_bytes / 2**20:.0f} MiB are allowed.")
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
                raise SubmissionError(f"the zip entry {name!r} points outside the submission folder.")
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver recorded no Unix type
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise SubmissionError(f"the zip entry {name!r} is a link or special file; "
                                      "only plain files are allowed.")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 2**20:
                raise SubmissionError(f"the zip entry {name!r} expands {info.file_size // info.compress_size}x; "
                                      "that looks like a zip bomb.")
        for info in infos:
            target = dest.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts).resolve()
            if not target.is_relative_to(dest):
                raise SubmissionError(f"the zip entry {info.filename!r} points outside the submission folder.")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                # Copy at most the declared size + 1 byte: a lying header cannot unpack more.
                data = src.read(info.file_size + 1)
                if len(data) > info.file_size:
                    raise SubmissionError(f"the zip entry {info.filename!r} is larger than its header says.")
                out.write(data)
    return dest


def run_worker(job: dict, workdir: Path, timeout: float, memory_gb: float) -> str | None:
    """Run one worker job in a child; return None on success or the error sentence for the result."""
    workdir.mkdir(parents=True, exist_ok=True)
    # The worker caps its own address space (RLIMIT_AS) before importing the submission: preexec_fn is
    # unsafe in the threads that --batch -j uses.
    job = {**job, "error_file": str(workdir / "error.txt"), "memory_bytes": int(memory_gb * 2**30)}
    job_file = workdir / "job.json"
    job_file.write_text(json.dumps(job))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(workdir),
           "OMP_NUM_THREADS": str(job["threads"]), "PYTHONDONTWRITEBYTECODE": "1",
           "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(workdir)}
    try:
        proc = subprocess.Popen([sys.executable, "-m", "vaekit.worker", str(job_file)], cwd=workdir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # own process group: a timeout kills all of it
    except OSError as e:
        return f"could not start the grading worker ({e})."
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return f"timed out after {timeout:g} s (the submission hung or was too slow)."
    error_file = workdir / "error.txt"
    if error_file.exists():
        return error_file.read_text(errors="replace")[:2000]
    if proc.returncode != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        return f"the submission's process died ({how}): " + " | ".join(tail)[-500:]
    if not Path(job["output"]).is_file():
        return "the submission's process exited without producing outputs (did it call sys.exit?)."
    return None


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()

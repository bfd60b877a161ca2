"""The grader's side of a worker process: the process, its frames and the checks its replies pass.

The process is started sandboxed, fed its input, its output drained within bounds and killed at its deadline; each
task's reply comes in frames and passes its checks before the grader reads it. ``vaekit.worker`` is the other side."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .course import SubmissionError
from .isolation import SANDBOX_DIR, SandboxCommand, SubmissionCgroup
from .process_env import worker_env

MAX_OUTPUT_BYTES = 256 * 2**20  # what a worker may send back (10 000 + 10 000 images are 16 MB per task)
POLL_S = 0.05  # how often a running worker's output and time are looked at


# -- the process --------------------------------------------------------------------------------------------


@dataclass
class WorkerRun:
    returncode: int
    stdout: bytes  # the worker's result (npz bytes)
    stderr_tail: str  # what the submission printed, last lines
    timed_out: bool
    overflow: bool  # the result was larger than MAX_OUTPUT_BYTES


def _drain(pipe, keep: list[bytes], limit: int, flags: dict[str, bool], tail: bool) -> None:
    """Read ``pipe`` to its end, keeping at most ``limit`` bytes (a flood cannot fill the grader's memory): the
    first ones (the results, whose complete frames stay readable) or, with ``tail``, the last ones (what was
    printed last)."""
    size = 0
    for chunk in iter(lambda: pipe.read1(1 << 16), b""):  # what has arrived, not a full 64 KiB
        if size + len(chunk) > limit:
            flags["overflow"] = True
            if not tail:
                continue
            keep[:] = keep[-4:]
            size = sum(map(len, keep))
        keep.append(chunk)
        size += len(chunk)


class Worker:
    """One run of ``python -m vaekit.worker MODE JOB`` on ``files_dir``, sandboxed when ``isolation`` is
    ``bubblewrap``. It starts at once and imports torch, but runs none of the submission's code until its input
    arrives (see ``vaekit.worker``); it never raises for what the submission does."""

    def __init__(self, mode: str, job: dict, files_dir: Path, isolation: str, threads: int,
                 cgroup: SubmissionCgroup | None = None):
        self.sandbox: SandboxCommand | None = None
        sandboxed = isolation == "bubblewrap"
        where = {"files": SANDBOX_DIR, "sandboxed": True} if sandboxed else {"files": str(files_dir)}
        cmd = [sys.executable, "-m", "vaekit.worker", mode, json.dumps({**job, **where})]
        if sandboxed:
            self.sandbox = SandboxCommand(files_dir, threads, cmd, cgroup)
            cmd, cwd, env = self.sandbox.argv, "/", None
        else:
            home = tempfile.mkdtemp(prefix="home-", dir=files_dir.parent)
            cwd, env = home, worker_env(home, threads)
        try:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True)  # a timeout kills the group
        except OSError:
            self.close()
            raise
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.flags = {"overflow": False}
        self.readers = [
            threading.Thread(target=_drain, args=(self.proc.stdout, self.out, MAX_OUTPUT_BYTES, self.flags, False),
                             daemon=True),
            threading.Thread(target=_drain, args=(self.proc.stderr, self.err, 1 << 16, {"overflow": False}, True),
                             daemon=True)]
        for r in self.readers:
            r.start()

    def run(self, stdin: bytes, deadline: Callable[[list[bytes]], float]) -> WorkerRun:
        """Send the input, wait for the process to end, and reap it. ``deadline(output so far)`` says, as the output
        grows, until when (``time.monotonic()``) the process may run: past it, it is killed (``timed_out``)."""

        def feed() -> None:  # in a thread: a worker that never reads its input must not block the grader
            try:
                self.proc.stdin.write(stdin)
                self.proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the worker died early (or was killed); its exit status and stderr say why

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        timed_out = False
        while True:
            try:
                self.proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline(self.out):
                    timed_out = True
                    self.kill()
                    break
        for r in [*self.readers, writer]:
            r.join(timeout=10)
        self.close()
        tail = b"".join(self.err).decode(errors="replace").strip().splitlines()[-5:]
        return WorkerRun(self.proc.returncode, b"".join(self.out), " | ".join(tail)[-800:], timed_out,
                         self.flags["overflow"])

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.close()

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()


# -- frames: one process's replies, task by task -----------------------------------------------------------


FRAME_KINDS = ("start", "done")
MAX_HEADER = 64
MAX_FRAME = MAX_OUTPUT_BYTES  # bytes of one reply: no more than the grader reads of a process's whole output


def write_frame(out, kind: str, task: str, payload: bytes = b"") -> None:
    """``KIND TASK NBYTES\\n`` then the bytes: the grader sees each task begin and end as it happens."""
    out.write(f"{kind} {task} {len(payload)}\n".encode() + payload)
    out.flush()


class FrameReader:
    """Reads a worker's frames as its output grows: ``start`` then ``done`` for each task of ``tasks``, in that order.
    The submission runs in the process and may write anything to it; whatever breaks that sequence (a forged frame, a
    half-written header, a frame declared larger than ``MAX_FRAME``) ends the reading for good, and the task then on
    gets the process's failure. New bytes are appended in place: a byte at a time costs the grader no more than a
    frame at once."""

    def __init__(self, tasks: list[str]):
        self.expected = [(kind, task) for task in tasks for kind in FRAME_KINDS]
        self.buf = bytearray()
        self.seen = 0
        self.broken = False
        self.need = 1  # bytes the buffer must hold before the next frame can be complete

    def feed(self, chunks: list[bytes]) -> list[tuple[str, str, bytes]]:
        """The frames completed by ``chunks[self.seen:]`` (the list a drain thread appends to)."""
        new = chunks[self.seen:]
        self.seen += len(new)
        if self.broken:
            return []
        for chunk in new:
            self.buf += chunk  # a bytearray grows in place
        frames = []
        while self.expected and len(self.buf) >= self.need:
            end = self.buf.find(b"\n", 0, MAX_HEADER)
            if end < 0:
                self.broken = len(self.buf) >= MAX_HEADER
                return frames
            kind, task = self.expected[0]
            head = f"{kind} {task} ".encode()
            size = bytes(self.buf[len(head):end])
            if (not self.buf.startswith(head) or not size.isdigit() or len(size) > 12 or int(size) > MAX_FRAME
                    or (kind == "start" and size != b"0")):
                self.broken = True
                return frames
            self.need = end + 1 + int(size)
            if len(self.buf) < self.need:
                return frames
            frames.append((kind, task, bytes(self.buf[end + 1:self.need])))
            del self.buf[:self.need]
            self.need = 1
            self.expected.pop(0)
        self.broken = bool(self.buf) and not self.expected  # anything after the last task's reply is not the grader's
        return frames


# -- the workers' replies --------------------------------------------------------------------------------


REPLY_KEYS = {"mu", "latent_dim", "latent_dim_recorded", "course_recon", "course_samples", "course_error", "recon",
              "samples", "repeat", "warnings", "error"}


END_RECORD = struct.Struct("<4s4H2LH")  # a zip's end of central directory: signature, disks, counts, size, offset
MAX_DIRECTORY = 2**16  # bytes of central directory a reply may have (a dozen entries take about 1 KiB)
MAX_WARNINGS = 20  # warnings a reply may carry; each is cut to 500 characters


def _reply_layout(data: bytes) -> None:
    """The reply zip's end record, read before anything else: no comment, one disk, at most one entry per known
    name, a small central directory right before the record (so the directory the zip reader then parses is
    bounded, whatever the reply declares)."""
    if len(data) < END_RECORD.size:
        raise SubmissionError("the submission's process sent back a reply the grader does not read.")
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = END_RECORD.unpack(data[-END_RECORD.size:])
    if (sig != b"PK\x05\x06" or disk or cd_disk or comment or n_disk != n_total or n_total > len(REPLY_KEYS)
            or cd_size > MAX_DIRECTORY or cd_offset + cd_size != len(data) - END_RECORD.size):
        raise SubmissionError("the submission's process sent back a reply the grader does not read.")


def _check_array_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """An entry's ``.npy`` header, read before the array: a known format, no objects, a non-zero item size, and
    exactly as many bytes as its shape declares (so loading it allocates no more than the reply already holds)."""
    fmt = np.lib.format
    with zf.open(info) as f:
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise SubmissionError("the submission's process sent back an array in a format the grader does not read.")
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(f)
        header = f.tell()
    if dtype.hasobject or dtype.itemsize == 0 or math.prod(shape) * dtype.itemsize != info.file_size - header:
        raise SubmissionError(f"the submission's process sent back {info.filename} with a shape or type its bytes do "
                              "not hold.")


def read_reply(data: bytes) -> dict[str, np.ndarray]:
    """A worker's ``.npz`` reply, its layout checked before anything is inflated or loaded: the end record first
    (``_reply_layout``), known names only, each stored uncompressed (so nothing inflates past the
    ``MAX_OUTPUT_BYTES`` already read), each array's header matching its bytes, no pickled objects."""
    if not data:
        raise SubmissionError("the submission's process sent back an empty reply.")
    _reply_layout(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        names = [i.filename.removesuffix(".npy") for i in infos]
        if len(infos) > len(REPLY_KEYS) or not set(names) <= REPLY_KEYS or len(set(names)) != len(names):
            raise SubmissionError("the submission's process sent back a reply the grader does not read.")
        if any(i.compress_type != zipfile.ZIP_STORED or i.file_size != i.compress_size for i in infos):
            raise SubmissionError("the submission's process sent back a compressed reply; the grader refuses it.")
        for info in infos:
            _check_array_header(zf, info)
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def reply_warnings(out: dict[str, np.ndarray]) -> list[str]:
    """The worker's warnings: a 1-D string array of at most ``MAX_WARNINGS``, checked before it is iterated."""
    w = out.get("warnings")
    if w is None:
        return []
    if w.ndim != 1 or w.dtype.kind != "U" or len(w) > MAX_WARNINGS:
        raise SubmissionError(f"the worker returned warnings as {w.dtype} {w.shape}, not at most {MAX_WARNINGS} "
                              "strings.")
    return [str(x)[:500] for x in w]


def task_reply(payload: bytes, what: str) -> dict[str, np.ndarray]:
    """One task's reply, or ``SubmissionError`` saying in one sentence why it is not one."""
    try:
        out = read_reply(payload)
    except SubmissionError as e:
        raise SubmissionError(f"{e} (while {what})") from e
    except Exception as e:  # noqa: BLE001 - whatever a forged or truncated reply makes numpy raise
        raise SubmissionError(f"the submission's process sent back an unreadable reply while {what} "
                              f"({type(e).__name__}).") from e
    if "error" in out:
        raise SubmissionError(str(out["error"])[:2000])
    return out


def reply_int(out: dict[str, np.ndarray], key: str) -> int:
    a = out.get(key)
    if not isinstance(a, np.ndarray) or a.shape != () or a.dtype != np.int64:
        raise SubmissionError(f"the worker returned no integer {key}.")
    return int(a)


def reply_array(out: dict[str, np.ndarray], key: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    a = out.get(key)
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else "nothing"
        raise SubmissionError(f"the worker returned {key} as {got}, expected {np.dtype(dtype)} {shape}.")
    return a

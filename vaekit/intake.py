"""A hand-in's intake: zip checks, the sandbox's private copy, each task's files checked and hashed.

A zip is checked before anything of it is written (size, count, ratio, names, methods, links); the sandbox sees a
private, read-only copy; ``prepare_task`` checks and hashes each task's files.

Nothing here runs a submission's code; ``vaekit.isolation`` runs it, on the copy made here.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import file_sha256, model_spec, read_hyperparameters
from .course import MODEL_FILES, TASKS, TRAINER_HYPERPARAMETERS, SubmissionError, model_files, stale_reason
from .settings import GradeSettings, sampling_seed

MAX_ZIP_BYTES = 200 * 2**20  # uncompressed total; a real submission is about 15 MB
MAX_ZIP_FILES = 200
MAX_RATIO = 200  # compressed -> uncompressed, per entry (zip bombs compress far better than weights)
MAX_SUBMISSION_PY = 2**20  # bytes; a submission.py is a few kB
MAX_HYPERPARAMETERS = 2**20
MAX_NAME_BYTES = 255  # one path component, as most file systems allow
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _zip_parts(name: str) -> tuple[str, ...]:
    """The components of a zip entry's name, or a ``SubmissionError`` for one that is not a plain relative path."""
    clean = name.replace("\\", "/")
    parts = tuple(p for p in clean.split("/") if p)
    if clean.startswith("/") or (parts and ":" in parts[0]) or ".." in parts:
        raise SubmissionError(f"the zip entry {name[:200]!r} points outside the submission folder.")
    if not parts or "." in parts or any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in parts):
        raise SubmissionError(f"the zip entry {name[:200]!r} is not a usable file name.")
    return parts


def safe_extract(zip_path: str | Path, dest: str | Path, max_bytes: int = MAX_ZIP_BYTES,
                 max_files: int = MAX_ZIP_FILES) -> Path:
    """Extract ``zip_path`` into ``dest`` after checking every entry; never ``extractall``.

    Rejects absolute names, ``..`` or ``.`` components, over-long names, links and device files, encrypted
    entries and unknown compression methods, a name used as both file and folder, more than ``max_files``
    entries, more than ``max_bytes`` declared uncompressed, suspicious compression ratios, and entries whose
    real size exceeds what they declare. Whatever else reading the archive raises (a bad CRC, a truncated
    stream, a full disk) becomes a ``SubmissionError`` too: one hand-in never stops a batch.
    """
    try:
        return _extract(zip_path, Path(dest).resolve(), max_bytes, max_files)
    except SubmissionError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError, NotImplementedError, ValueError,
            EOFError, zlib.error, lzma.LZMAError) as e:
        raise SubmissionError(f"{Path(zip_path).name} could not be unpacked ({type(e).__name__}: "
                              f"{str(e)[:200]}).") from e


def _extract(zip_path: str | Path, dest: Path, max_bytes: int, max_files: int) -> Path:
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
        files: set[tuple[str, ...]] = set()
        folders: set[tuple[str, ...]] = set()
        for info in infos:
            name = info.filename
            parts = _zip_parts(name)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver recorded no Unix type
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise SubmissionError(f"the zip entry {name!r} is a link or special file; "
                                      "only plain files are allowed.")
            if info.flag_bits & 0x1:
                raise SubmissionError(f"the zip entry {name!r} is encrypted; hand in a plain zip.")
            if info.compress_type not in ZIP_METHODS:
                raise SubmissionError(f"the zip entry {name!r} uses compression method {info.compress_type}, "
                                      "which the grader does not read (use deflate).")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 2**20:
                raise SubmissionError(f"the zip entry {name!r} expands {info.file_size // info.compress_size}x; "
                                      "that looks like a zip bomb.")
            (folders if info.is_dir() else files).add(parts)
            folders.update(parts[:i] for i in range(1, len(parts)))
        clash = files & folders
        if clash or len(files) < sum(not i.is_dir() for i in infos):
            which = "/".join(min(clash)) if clash else "a file"
            raise SubmissionError(f"the zip names {which!r} more than once, or as both a file and a folder.")
        for info in infos:
            target = dest.joinpath(*_zip_parts(info.filename))
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "xb") as out:
                # Copy at most the declared size + 1 byte: a lying header cannot unpack more.
                data = src.read(info.file_size + 1)
                if len(data) > info.file_size:
                    raise SubmissionError(f"the zip entry {info.filename!r} is larger than its header says.")
                out.write(data)
    return dest


def _plain(path: Path, rel: str) -> bool:
    """Whether ``path`` is a plain file (False if absent); a link or special file is the submission's error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise SubmissionError(f"{rel} is a link or special file; a hand-in holds plain files and folders only.")
    return stat.S_ISREG(mode)


def _is_read(name: str) -> bool:
    """The files of a task folder the grader reads (the brief's names and the course trainer's)."""
    return name in (*MODEL_FILES, TRAINER_HYPERPARAMETERS) or re.fullmatch(r"epoch_\d{1,9}\.pth", name) is not None


def copy_hand_in(src: Path, dest: Path, max_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Copy what the grader reads of a hand-in folder — ``submission.py`` and each task folder's checkpoints and
    hyperparameters files, at its top or in its one top folder — into ``dest``, without following a link: a link
    or special file among them is the submission's error, never a path to read. Everything else in the folder
    (a virtual environment, the grader's own earlier outputs) is not looked at. Returns ``dest``."""
    root = src
    if not _plain(src / "submission.py", "submission.py"):
        tops = [d for d in sorted(src.iterdir()) if not d.is_symlink() and d.is_dir()
                and _plain(d / "submission.py", f"{d.name}/submission.py")]
        if len(tops) != 1:
            raise SubmissionError("submission.py not found at the top of the submission (or of its one top folder).")
        root = tops[0]
    dest.mkdir(parents=True)
    picked = [("submission.py", root / "submission.py")]
    for task in TASKS.values():
        folder = root / task.folder
        if _plain(folder, f"{task.folder}/") or not folder.is_dir():
            continue  # a file where the folder should be: the task's files are missing, as the grader will say
        (dest / task.folder).mkdir()
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if _is_read(entry.name) and _plain(Path(entry.path), f"{task.folder}/{entry.name}"):
                picked.append((f"{task.folder}/{entry.name}", Path(entry.path)))
    total = 0
    for rel, path in picked:
        total += os.lstat(path).st_size
        if total > max_bytes:
            raise SubmissionError(f"the hand-in's files are larger than {max_bytes / 2**20:.0f} MiB together.")
        with open(path, "rb") as f_in, open(dest / rel, "xb") as f_out:
            shutil.copyfileobj(f_in, f_out)
    return dest


def private_copy(files: dict[str, Path], dest: Path, max_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Copy the submission's files (plain files only: a link could point anywhere) into ``dest``, read-only for
    everyone (the sandboxed process runs as another user)."""
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    for name, src in files.items():
        if src.is_symlink() or not src.is_file():
            raise SubmissionError(f"{src.name} must be a plain file, not a link or folder.")
        if src.stat().st_size > max_bytes:
            raise SubmissionError(f"{src.name} is larger than {max_bytes / 2**20:.0f} MiB.")
        shutil.copyfile(src, dest / name)
        (dest / name).chmod(0o444)
    return dest


@dataclass
class Prepared:
    """A task whose files passed the checks, ready for its workers."""

    task: str
    class_name: str
    sources: dict[str, Path]  # the hand-in's submission.py, checkpoint and hyperparameters file
    files: dict[str, str]  # the file names graded (the brief's or the course trainer's)
    epoch_sha256: str
    seed: int  # of the sampling noise
    stale: str | None = None  # the folder records another submission.py than this one (``course.stale_reason``)


def prepare_task(root: Path, task: str, settings: GradeSettings) -> Prepared:
    """Check one task's files; raises ``SubmissionError`` / ``CheckpointError`` for a bad submission."""
    spec = TASKS[task]
    folder = root / spec.folder
    ckpt, hp_file = model_files(folder)
    missing = [name for name, path in ((f"{MODEL_FILES[0]} (or an epoch_<N>.pth)", ckpt),
                                        (f"{MODEL_FILES[1]} (or {TRAINER_HYPERPARAMETERS})", hp_file)) if path is None]
    if not (root / "submission.py").is_file():
        missing.insert(0, "submission.py")
    if missing:
        raise SubmissionError(f"missing {', '.join(missing)} in {spec.folder}/ (see the required layout).")
    for path, cap in ((root / "submission.py", MAX_SUBMISSION_PY), (hp_file, MAX_HYPERPARAMETERS)):
        if path.stat().st_size > cap:
            raise SubmissionError(f"{path.name} is larger than {cap // 1024} KiB.")
    class_name, _ = model_spec(read_hyperparameters(hp_file), spec.model_class)
    sources = {"submission.py": root / "submission.py", "epoch.pth": ckpt, "hyperparameters.txt": hp_file}
    hashes = {name: file_sha256(path) for name, path in sources.items()}
    return Prepared(task, class_name, sources, {"checkpoint": ckpt.name, "hyperparameters": hp_file.name},
                    hashes["epoch.pth"], sampling_seed(settings, *hashes.values()),
                    stale_reason(folder, task, sources["submission.py"], submission_sha256=hashes["submission.py"],
                                 epoch_sha256=hashes["epoch.pth"]))

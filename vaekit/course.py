"""What the course defines: its tasks, folders and files, importing a submission.py, a folder's provenance.

A submission.py is imported with errors that name their place; a course folder records the sha256 of the
submission.py it was trained from.

A folder's model is built by ``vaekit.building``; a trained one is written by
``vaekit.train_command.write_course_folder``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from . import checkpoint
from .paths import ROOT


@dataclass(frozen=True)
class Task:
    name: str  # "vae" or "gen"
    folder: str  # the course folder name
    model_class: str  # the class submission.py must define
    max_score: float  # the course's points for the task
    conditional: bool  # encode / decode take labels


TASKS = {
    "vae": Task("vae", "VAEwolabel", "VAE", 10.0, False),
    "gen": Task("gen", "Genwithlabel", "GenModel", 30.0, True),
}
MODEL_FILES = ("epoch.pth", "hyperparameters.txt")  # what the grader needs in each task folder
HANDIN_FILES = (*MODEL_FILES, "grade_result.json")  # what the zip holds in each task folder
# The course trainer's own names, which many hand-ins keep: epoch_<N>.pth (the latest counts), hyperparams.json.
TRAINER_HYPERPARAMETERS = "hyperparams.json"
TRAIN_SCRIPTS = {"vae": "train_vae.py", "gen": "train_cond.py"}  # what (re)trains each task's folder

# What the course's own train.py trains a template model with (its argparse defaults, which override its Trainer's):
# the kit's train scripts use these for a submission without the kit's API, unless the student's own signatures
# (vae_loss(..., var=...), VAE(latent_dim=...)) or flags say otherwise.
COURSE_TRAINING = {"epochs": 10, "latent_dim": 20, "lr": 5e-3, "batch_size": 1024, "var": 0.5}


class SubmissionError(RuntimeError):
    """The submission breaks the required layout, limits or contract; the message is shown to the student."""


class GradingMachineError(SubmissionError):
    """The grading machine failed, not the hand-in (the sandbox could not start, a process could not be made): its
    grade is not final, and a resumed batch grades it again."""


def model_files(folder: Path) -> tuple[Path | None, Path | None]:
    """(checkpoint, hyperparameters file) of a task folder: the brief's ``epoch.pth`` and ``hyperparameters.txt``,
    else the course trainer's latest ``epoch_<N>.pth`` and ``hyperparams.json``; None where neither exists."""
    ckpt: Path | None = folder / MODEL_FILES[0]
    if not ckpt.is_file():
        numbered = [(int(m.group(1)), p) for p in (folder.glob("epoch_*.pth") if folder.is_dir() else [])
                    if (m := re.fullmatch(r"epoch_(\d{1,9})\.pth", p.name)) and p.is_file()]
        ckpt = max(numbered)[1] if numbered else None
    hp = next((p for p in (folder / MODEL_FILES[1], folder / TRAINER_HYPERPARAMETERS) if p.is_file()), None)
    return ckpt, hp


def place(error: BaseException, source: str | Path | ModuleType = "submission.py") -> str:
    """Where in the student's file ``error`` was raised: ``" (submission.py, line 23, in VAE.__init__)"`` from the
    last traceback frame in ``source`` (a path, an imported module, or a bare file name to match); empty when no
    frame is in it (the error came from torch alone)."""
    path = Path(getattr(source, "__file__", None) or source)
    same = (lambda f: Path(f).name == path.name) if path.name == str(path) else (lambda f: f == str(path))
    frames = [(f, n) for f, n in traceback.walk_tb(error.__traceback__) if same(f.f_code.co_filename)]
    if not frames:
        return ""
    frame, lineno = frames[-1]
    where = frame.f_code.co_qualname
    return f" ({path.name}, line {lineno}, {'at module level' if where == '<module>' else f'in {where}'})"


def load_submission(path: str | Path | None = None) -> ModuleType:
    """Import a ``submission.py`` (the project's own by default) as a fresh module.

    Errors in the student's code are re-raised as ``SubmissionError`` naming the exception and its line.
    """
    path = Path(path) if path else ROOT / "submission.py"
    if not path.is_file():
        raise SubmissionError(f"{path} does not exist.")
    spec = importlib.util.spec_from_file_location("submission", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:  # the compiler's own place: the line of the file that does not parse
        raise SubmissionError(f"importing {path.name} failed: SyntaxError at line {e.lineno}: {e.msg}.") from e
    except Exception as e:  # noqa: BLE001 - whatever the student's import raised is reported, not raised
        raise SubmissionError(f"importing {path.name} failed{place(e, path)}: {type(e).__name__}: {e}") from e
    return module


# -- provenance: which submission.py a folder was trained from ---------------------------------------------------


def trained_from(submission: str | Path, checkpoint_file: str | Path) -> dict[str, str]:
    """What ``hyperparameters.txt`` records under ``trained_from``: the sha256 of the ``submission.py`` the folder was
    trained from and of the ``epoch.pth`` written with it (so an interrupted write cannot look current)."""
    return {"submission_sha256": checkpoint.file_sha256(submission),
            "epoch_sha256": checkpoint.file_sha256(checkpoint_file)}


def stale_reason(folder: str | Path, task: str, submission: str | Path, *, submission_sha256: str | None = None,
                 epoch_sha256: str | None = None) -> str | None:
    """One sentence when ``folder`` was trained from another ``submission.py`` than ``submission`` (or its
    ``epoch.pth`` is not the one written with its ``hyperparameters.txt``); None when it matches, or when the folder
    records nothing (the course trainer's own files). A caller that has hashed the files passes their sha256."""
    folder = Path(folder)
    ckpt, hp_file = model_files(folder)
    try:
        record = json.loads(hp_file.read_text()).get("trained_from") if hp_file else None
    except (OSError, ValueError, AttributeError):
        return None  # an unreadable file has its own error where it is read
    if not isinstance(record, dict):
        return None
    retrain = f"run `python {TRAIN_SCRIPTS[task]}`"
    if record.get("submission_sha256") != (submission_sha256 or checkpoint.file_sha256(submission)):
        return f"{folder.name}/ was trained from another submission.py: {retrain}."
    recorded = record.get("epoch_sha256")
    if ckpt is not None and recorded is not None and recorded != (epoch_sha256 or checkpoint.file_sha256(ckpt)):
        return (f"{folder.name}/{ckpt.name} is not the checkpoint its {hp_file.name} was written with (an interrupted "
                f"training?): {retrain}.")
    return None

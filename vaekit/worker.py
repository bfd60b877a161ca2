"""The process that runs a submission's code: ``python -m vaekit.worker encode|decode JOB_JSON``.

The grader starts one per stage and submission, inside the sandbox (``vaekit.isolation``), on a private copy of
``submission.py`` and each task's ``<task>/epoch.pth`` and ``<task>/hyperparameters.txt``. It reads its input from
stdin, then for each task of its job, in order, builds the model (finding the real ``latent_dim`` when the file
records another) and writes one ``.npz`` to stdout, framed (``start`` and ``done`` per task) so the grader can time
each task and, when one hangs or kills the process, give the tasks after it a fresh process.

* ``encode`` gets the test images (uint8 ``x``, labels ``y``). It replays the course's own inference on them
  (``vaekit.course_inference``: the course fields), then returns the codes ``mu`` (float32) of the split path.
* ``decode`` — a fresh process that never saw a test image — gets each task's ``mu`` and the labels, and returns the
  reconstructions decoded from ``mu`` alone and the samples ``decode(z ~ N(0, I), labels)``, both as uint8, and
  how far a second decoding of some of the same codes and noise strays from the first (a random decoder's
  grade would change from run to run).

Each process imports torch at once but runs none of the submission's code until its input arrives: the grader
sends the decoder its input only after the encoding process has exited, so the two never run the student's code
at the same time (no lock, pipe or timing channel between live processes).

The classifier and all scoring stay in the grader. A failure is returned as one sentence (``error``).
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

from . import course_inference
from .building import load_model
from .checkpoint import CheckpointError, load_checkpoint, read_hyperparameters
from .course import TASKS, SubmissionError, load_submission
from .generation import decode_codes, decode_noise, encode_means, fast_layout, quantize, sample_noise
from .protocol import write_frame

REPEAT = 100  # reconstructions and samples decoded twice
MAX_TASKS = 64  # processes and threads the submission may have at once (torch with 2 threads uses about 10)


def check_images(images: torch.Tensor, what: str, warnings: list[str]) -> torch.Tensor:
    """Pixels must be finite; values outside [0,1] are clamped *and recorded*. (Shapes are checked per
    ``decode`` call by ``generation.as_image_batch``.)"""
    images = images.detach().float()
    if not torch.isfinite(images).all():
        raise SubmissionError(f"{what}: the model produced NaN or infinite pixels.")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-4 or hi > 1 + 1e-4:
        warnings.append(f"{what}: pixel values spanned [{lo:.3g}, {hi:.3g}] and were clamped to [0, 1].")
    return images.clamp(0, 1)


def _run(stage: str, what: str, fn):
    try:
        return fn()
    except (SubmissionError, CheckpointError):
        raise
    except Exception as e:  # noqa: BLE001 - whatever the student's code raised is reported
        tb = traceback.extract_tb(e.__traceback__)
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        raise SubmissionError(f"{what} failed: {type(e).__name__}: {e}{where}") from e


def load_job_model(job: dict) -> tuple[torch.nn.Module, dict, object]:
    """The submission's model, rebuilt from the private copy of its files (this runs the student's code);
    returns (model, hyperparameters with the ``latent_dim`` used, the imported submission module)."""
    torch.set_num_threads(job["threads"])
    folder = Path(job["files"])
    read_hyperparameters(folder / "hyperparameters.txt")  # a clear error before the student's code runs
    sub = load_submission(job["submission"])
    model, hp = load_model(folder, sub, default_class=TASKS[job["task"]].model_class, seed=job["seed"],
                           detect_latent=True)
    return fast_layout(model), hp, sub


def read_request() -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def run_job(mode: str, job: dict, model: torch.nn.Module, hp: dict, sub,
            request: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    latent_dim = int(hp["model_kwargs"]["latent_dim"])
    sizes = {"latent_dim": np.int64(latent_dim), "latent_dim_recorded": np.int64(hp.get("latent_dim_recorded", -1))}
    warnings: list[str] = []
    y = torch.from_numpy(request["y"]).long()
    if mode == "encode":
        x = torch.from_numpy(request["x"]).float().div(255).unsqueeze(1)
        out: dict[str, np.ndarray] = {}
        if job.get("course", True):  # first, so the replay meets the model as fresh as the course's process does
            state = load_checkpoint(Path(job["files"]) / "epoch.pth")["model_state_dict"]
            out.update(course_inference.replay(sub, job["task"], latent_dim, state, x, y))
        mu = _run(mode, "encoding test images", lambda: encode_means(model, x, y))
        return {**out, "mu": mu.numpy().astype(np.float32), **sizes}
    mu = torch.from_numpy(request[f"{job['task']}.mu"])
    recon = _run(mode, "reconstructing test images from their codes", lambda: decode_codes(model, mu, y))
    recon = check_images(recon, "reconstructions", warnings)
    labels = torch.arange(10).repeat_interleave(job["per_label"])
    z = sample_noise(len(labels), latent_dim, job["seed"])
    samples = _run(mode, "sampling decode(z, labels)", lambda: decode_noise(model, z, labels))
    samples = check_images(samples, "samples", warnings)
    # The same codes and noise once more, in one batch (``repeat_picks``): the grader compares them with the first.
    n, pick = repeat_picks(len(mu), len(labels))
    again = _run(mode, "decoding a second time", lambda: torch.cat([decode_codes(model, mu[:n], y[:n]),
                                                                    decode_noise(model, z[pick], labels[pick])]))
    return {"recon": quantize(recon), "samples": quantize(samples), "warnings": np.array(warnings, dtype=np.str_),
            "repeat": quantize(check_images(again, "repeated decodes", [])), **sizes}


def repeat_picks(n_codes: int, n_samples: int) -> tuple[int, torch.Tensor]:
    """What is decoded twice: the first ``n`` reconstructions and ``n`` samples spread over the digits."""
    n = min(REPEAT, n_codes)
    return n, torch.linspace(0, n_samples - 1, n).long()


def run_task(mode: str, job: dict, request: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One task of the job: its model built from ``<files>/<task>/``, then this process's work on it."""
    try:
        model, hp, sub = load_job_model(job)
        return run_job(mode, job, model, hp, sub, request)
    except (SubmissionError, CheckpointError) as e:
        return {"error": np.str_(str(e))}
    except MemoryError:
        return {"error": np.str_("the submission ran out of memory (over the grader's memory cap).")}
    except Exception as e:  # noqa: BLE001 - whatever the submission raised
        return {"error": np.str_(f"{type(e).__name__}: {e}")}


def main() -> None:
    mode, job = sys.argv[1], json.loads(sys.argv[2])
    # The result channel is a private copy of stdout; the submission's prints go to stderr.
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    resource.setrlimit(resource.RLIMIT_AS, (job["memory_bytes"], job["memory_bytes"]))
    if job.get("sandboxed"):  # counted per sandbox there (its own user namespace); outside, per user
        resource.setrlimit(resource.RLIMIT_NPROC, (MAX_TASKS, MAX_TASKS))  # no fork bomb, no cap multiplied
    request = read_request()  # the submission's code runs only once the input is here (see above)
    specs = {spec["task"]: spec for spec in job["tasks"]}
    for spec in [specs[str(task)] for task in request.pop("tasks")]:
        write_frame(result, "start", spec["task"])
        out = run_task(mode, {**job, **spec, "files": str(Path(job["files"]) / spec["task"]),
                              "submission": str(Path(job["files"]) / "submission.py")}, request)
        buf = io.BytesIO()
        np.savez(buf, **out)
        write_frame(result, "done", spec["task"], buf.getvalue())


if __name__ == "__main__":
    main()

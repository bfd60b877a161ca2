"""Grade a submission folder or zip: run its models in sandboxed workers, score their outputs here.

The grader holds the test set and the classifier (a "judge"). The submission's code runs twice per task,
each time in a fresh sandbox (``vaekit.sandbox``): an encoding process that gets the test images through a
pipe and returns only ``mu``, and a decoding process that never sees a test image and turns those codes
(and N(0, I) noise) into images. Every failure becomes a per-task ``error`` with score 0.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import course_inference, metrics
from .checkpoint import CheckpointError, file_sha256, library_versions, model_spec, read_hyperparameters
from .classifier import features_and_digits, load_classifier
from .course import MODEL_FILES, TASKS, TRAINER_HYPERPARAMETERS, SubmissionError, model_files
from .data import Split, dataset_sha256, load_mnist, load_test_data
from .gradepage import save_previews
from .outputs import write_text
from .paths import CACHE_DIR
from .sandbox import (
    SubmissionCgroup,
    Worker,
    WorkerRun,
    copy_hand_in,
    keep_freed_memory,
    private_copy,
    resolve_isolation,
    safe_extract,
)

MAX_SUBMISSION_PY = 2**20  # bytes; a submission.py is a few kB
MAX_HYPERPARAMETERS = 2**20


@dataclass(frozen=True)
class GradeSettings:
    seed: int = 0  # with the secret and the submission's files, seeds its sampling noise (see sampling_seed)
    per_label: int = 1000  # generated images per digit for the classifier metrics (the course replay: 10 / 100)
    timeout: float = 300.0  # seconds for all the processes of one task together (encoding, then decoding)
    memory_gb: float = 8.0  # the submission's memory: all its processes' resident memory together (a cgroup,
    # where the grader may make one) and each process's address space (torch alone maps about 4 GB)
    secret: str = ""  # a TA's secret mixed into the sampling seed, so no student can compute their noise
    threads: int = 1  # CPU threads of the judge and of each worker: one, as the tasks already run side by side
    isolation: str = "auto"  # auto | required | none (see sandbox.resolve_isolation)


def sampling_seed(settings: GradeSettings, *file_hashes: str) -> int:
    """The seed of a submission's sampling noise: fixed for the same files (a regrade is byte-identical), different
    for different files, and unknowable without the TA's ``secret`` — samples cannot be tuned to the grader's noise."""
    key = "\0".join([str(settings.seed), settings.secret, *file_hashes]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") >> 1


def _round(x: Any) -> Any:
    """Round floats to 6 decimals everywhere, so two gradings give byte-identical JSON."""
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    return x


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class Judge:
    """The test set, the classifier and the real-data reference features, computed once per session."""

    def __init__(self, test_data: str | None = None, classifier: str | None = None, threads: int = 1):
        torch.set_num_threads(threads)
        keep_freed_memory()
        self.classifier, self.classifier_sha256 = load_classifier(classifier)
        self.test = load_test_data(test_data)
        self.test_sha256 = dataset_sha256(self.test)
        self.test_u8 = metrics.quantize(self.test.x)
        self.test_y = self.test.y.numpy()
        self.test_feats = self._cached_features(self.test)
        train = load_mnist("train")
        self.train_feats = self._cached_features(train)
        self.train_y = train.y.numpy()
        # Held-out real images a sample must not copy either: validation, the official test set, the judge's.
        heldout = [self._cached_features(load_mnist("valid")), self.test_feats]
        official = load_mnist("test")
        if dataset_sha256(official) != self.test_sha256:
            heldout.append(self._cached_features(official))
        self.heldout_feats = np.concatenate(heldout)
        self.train_index = metrics.NearestNeighbours(self.train_feats)
        self.heldout_index = metrics.NearestNeighbours(self.heldout_feats)
        # How close an unseen real digit typically comes to a training image: the copy threshold, once.
        self.copy_threshold = float(self._cached(f"threshold-{self.test_sha256[:16]}", lambda: np.array(
            metrics.memorization_threshold(self.test_feats, self.train_index))))
        self.encode_request = _npz_bytes(x=self.test_u8, y=self.test_y)  # what every encoder is sent

    def features(self, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(penultimate features ``[N,128]``, predicted digits ``[N]``) of uint8 images."""
        return features_and_digits(self.classifier, images_u8)

    def _cached_features(self, split: Split) -> np.ndarray:
        """Features of a split (``[N,128]``), cached on disk per (classifier, data) pair."""
        return self._cached(f"features-{dataset_sha256(split)[:16]}",
                            lambda: self.features(metrics.quantize(split.x))[0])

    def _cached(self, name: str, compute) -> np.ndarray:
        """An array computed once per classifier and kept in the data cache (a read-only checkout recomputes)."""
        key = hashlib.sha256((self.classifier_sha256 + name).encode()).hexdigest()[:16]
        path = CACHE_DIR / f"judge-{key}.npy"
        if path.exists():
            return np.load(path)
        value = compute()
        try:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, value)
            tmp.replace(path)
        except OSError:
            pass
        return value

    def real_reference(self, n: int, seed: int, label: int | None = None) -> np.ndarray:
        """Features of ``n`` training images (of one digit if ``label``), a fixed seeded draw."""
        idx = np.arange(len(self.train_y)) if label is None else np.flatnonzero(self.train_y == label)
        rng = np.random.default_rng(seed)
        return self.train_feats[np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))]


# -- scoring ------------------------------------------------------------------------------------------


def feature_fids(judge: Judge, feats: np.ndarray, seed: int, label: int | None = None) -> tuple[float, float]:
    """(Fréchet distance of ``feats`` to the test images' features, the same for as many real training images):
    over all test images, or over those of digit ``label``. Their ratio is ``fid_ratio``."""
    test = judge.test_feats if label is None else judge.test_feats[judge.test_y == label]
    real = judge.real_reference(len(feats), seed, label=label)
    return metrics.feature_fid(feats, test), metrics.feature_fid(real, test)


def reconstruction_fid_ratio(judge: Judge, recon_u8: np.ndarray, labels: np.ndarray, conditional: bool,
                             seed: int = 0) -> float:
    """``fid_ratio`` of reconstructions of training images, as ``score_gen`` (per digit, averaged) or
    ``score_vae`` (all together) measures samples: the ceiling a prior can reach with this decoder."""
    feats = judge.features(recon_u8)[0]
    if not conditional:
        fid, real = feature_fids(judge, feats, seed)
        return fid / real
    pairs = [feature_fids(judge, feats[labels == c], seed + c, label=c) for c in range(10)]
    return float(np.mean([g for g, _ in pairs]) / np.mean([r for _, r in pairs]))


def _course_images(out: dict[str, np.ndarray], key: str, n: int) -> np.ndarray | None:
    a = out.get(key)
    return a if isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.shape == (n, 28, 28) else None


def course_fields(judge: Judge, task: str, latent_dim: int, enc: dict[str, np.ndarray]) -> dict[str, Any]:
    """The numbers the course's own ``grade.py`` writes (``ssim``, ``mse``, ``fid``, ``score``), from the replay of
    its inference in the encoding process; ``course_error`` says why the course's harness would fail (score 0).
    A VAE whose generation fails still has its reconstruction score, as in the course (its grade reads no samples).
    """
    res: dict[str, Any] = {"ssim": None, "mse": None, "fid": None, "score": 0.0, "course_error": None}
    per_digit = course_inference.SAMPLES_PER_DIGIT[task]
    recon = _course_images(enc, "course_recon", len(judge.test))
    samples = _course_images(enc, "course_samples", 10 * per_digit)
    error = str(enc["course_error"])[:1000] if "course_error" in enc else None
    if recon is None and error is None:
        error = "course replay: the encoding process returned no reconstructions of the right shape."
    if task == "gen" and samples is None and error is None:
        error = "course replay: the encoding process returned no samples of the right shape."
    res["course_error"] = error
    if recon is None:
        return res
    res["ssim"], res["mse"] = metrics.ssim_mean(recon, judge.test_u8), metrics.mse(recon, judge.test_u8)
    if task == "vae":
        res["score"] = metrics.course_vae_score(res["ssim"], res["mse"], latent_dim)
    elif samples is not None:
        res["fid"] = metrics.course_fid(samples, np.repeat(np.arange(10), per_digit), judge.test_u8, judge.test_y)
        res["score"] = metrics.course_gen_score(res["ssim"], res["mse"], res["fid"], latent_dim)
    return res


def split_fields(judge: Judge, task: str, latent_dim: int, recon: np.ndarray, samples: np.ndarray,
                 labels: np.ndarray) -> dict[str, Any]:
    """The course's formulas on the isolated path: reconstructions decoded from the codes alone by a process
    that never saw a test image, and the course's pixel FID on the first (at most) 100 samples per digit."""
    per = min(100, int(np.sum(labels == 0)))
    keep = np.concatenate([np.flatnonzero(labels == c)[:per] for c in range(10)])
    res = {"ssim": metrics.ssim_mean(recon, judge.test_u8), "mse": metrics.mse(recon, judge.test_u8),
           "fid": metrics.course_fid(samples[keep], labels[keep], judge.test_u8, judge.test_y),
           "fid_samples_per_label": per}
    res["score"] = (metrics.course_vae_score(res["ssim"], res["mse"], latent_dim) if task == "vae" else
                    metrics.course_gen_score(res["ssim"], res["mse"], res["fid"], latent_dim))
    return res


def score_common(judge: Judge, latent_dim: int, recon: np.ndarray, feats: np.ndarray) -> dict[str, Any]:
    """What both tasks measure on the isolated path: the copy checks."""
    res: dict[str, Any] = {"latent_dim": latent_dim}
    res["bonus"] = metrics.latent_bonus(latent_dim)
    res["memorization_threshold"] = judge.copy_threshold
    res["memorization"] = metrics.copy_share(feats, judge.train_index, judge.copy_threshold)
    res["memorization_heldout"] = metrics.copy_share(feats, judge.heldout_index, judge.copy_threshold)
    res["recon_copies"] = metrics.recon_copy_share(recon, judge.test_u8)
    return res


def score_vae(judge: Judge, latent_dim: int, recon: np.ndarray, samples: np.ndarray,
              settings: GradeSettings) -> dict[str, Any]:
    """Unconditional task, isolated path: class coverage of the samples, FID ratio, diversity."""
    feats, preds = judge.features(samples)
    res = score_common(judge, latent_dim, recon, feats)
    res["max_score"] = TASKS["vae"].max_score
    hist = metrics.class_histogram(preds)
    res["class_histogram"] = hist
    res["histogram_max_deviation"] = max(abs(h - 0.1) / 0.1 for h in hist)
    res["classifier_fid"], res["classifier_fid_real"] = feature_fids(judge, feats, settings.seed)
    res["fid_ratio"] = res["classifier_fid"] / res["classifier_fid_real"]
    res["diversity"] = metrics.mean_pairwise_distance(feats[::5]) / metrics.mean_pairwise_distance(
        judge.test_feats[::5])
    res["diversity_within_class"] = metrics.within_class_diversity(feats, preds, judge.test_feats, judge.test_y)
    res["label_factor"] = 1 - 0.5 * sum(abs(h - 0.1) for h in hist)  # 1 − total-variation from uniform
    return res


def score_gen(judge: Judge, latent_dim: int, recon: np.ndarray, samples: np.ndarray, labels: np.ndarray,
              settings: GradeSettings) -> dict[str, Any]:
    """Conditional task, isolated path: conditional accuracy and per-class FID ratio and diversity."""
    feats, preds = judge.features(samples)
    res = score_common(judge, latent_dim, recon, feats)
    res["max_score"] = TASKS["gen"].max_score
    res["cond_accuracy"] = float(np.mean(preds == labels))
    per_acc, per_gen, per_real, per_div = [], [], [], []
    for c in range(10):
        g, t = feats[labels == c], judge.test_feats[judge.test_y == c]
        per_acc.append(float(np.mean(preds[labels == c] == c)))
        fid, fid_real = feature_fids(judge, g, settings.seed + c, label=c)
        per_gen.append(fid)
        per_real.append(fid_real)
        per_div.append(metrics.mean_pairwise_distance(g) / metrics.mean_pairwise_distance(t))
    res["per_class"] = {"cond_accuracy": per_acc, "classifier_fid": per_gen, "classifier_fid_real": per_real,
                        "fid_ratio": [g / r for g, r in zip(per_gen, per_real)], "diversity": per_div}
    res["classifier_fid"], res["classifier_fid_real"] = float(np.mean(per_gen)), float(np.mean(per_real))
    res["fid_ratio"] = res["classifier_fid"] / res["classifier_fid_real"]
    res["diversity"] = res["diversity_within_class"] = float(np.mean(per_div))
    res["label_factor"] = res["cond_accuracy"]
    return res


def flag(res: dict[str, Any]) -> list[str]:
    """Warnings for what the numbers say a model did that an honest one would not."""
    found = []
    if res["recon_copies"] > metrics.RECON_COPY_WARN and res["latent_dim"] < 784 // 4:
        found.append(f"{100 * res['recon_copies']:.0f} % of the reconstructions are (near-)exact copies of the "
                     f"test images, through only {res['latent_dim']} numbers per image: a lookup, not a model.")
    if res["memorization"] > 0.2:
        found.append(f"{100 * res['memorization']:.0f} % of the samples are near-copies of training images.")
    if res["memorization_heldout"] > 0.2:
        found.append(f"{100 * res['memorization_heldout']:.0f} % of the samples are near-copies of held-out "
                     "(validation or test) images.")
    if res["fid_ratio"] < metrics.SUSPICIOUS_FID_RATIO:
        found.append(f"fid_ratio {res['fid_ratio']:.2f} is far below real images' 1.0: samples that close to "
                     "the test set are copies, not generations.")
    if res.get("repeat_difference", 0.0) > metrics.REPEAT_TOLERANCE:
        found.append(f"decoding the same codes and noise twice gave images {res['repeat_difference']:.1f} gray levels "
                     "apart on average: the decoder is random, so this grade would change from run to run.")
    split = res["split"]
    if res["ssim"] is not None and (res["ssim"] - split["ssim"] > metrics.PASS_THROUGH_SSIM_GAP
                                    or res["mse"] < metrics.PASS_THROUGH_MSE_RATIO * split["mse"]):
        found.append(f"model(images, labels) reconstructs far better (ssim {res['ssim']:.3f}, mse {res['mse']:.4f}) "
                     f"than decoding its {res['latent_dim']}-number code alone (ssim {split['ssim']:.3f}, mse "
                     f"{split['mse']:.4f}): forward passes more than the code to its output.")
    return found


# -- one task, one submission ---------------------------------------------------------------------------


def _worker_error(run: WorkerRun, what: str, timeout: float) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Parse a worker's result, or say in one sentence what went wrong."""
    if run.timed_out:
        return None, f"timed out after {timeout:g} s while {what} (the submission hung or was too slow)."
    if run.overflow:
        return None, f"the submission's process sent back more than the grader accepts while {what}."
    try:
        out = read_reply(run.stdout)
    except SubmissionError as e:
        return None, f"{e} (while {what})"
    except Exception:  # noqa: BLE001 - no result at all: the process died
        how = (f"killed by signal {-run.returncode}" if run.returncode < 0 else f"exit status {run.returncode}")
        return None, f"the submission's process died while {what} ({how}): {run.stderr_tail}"[:1500]
    if "error" in out:
        return None, str(out["error"])[:2000]
    return out, None


REPLY_KEYS = {"mu", "latent_dim", "latent_dim_recorded", "course_recon", "course_samples", "course_error", "recon",
              "samples", "repeat_difference", "warnings", "error"}


def read_reply(data: bytes) -> dict[str, np.ndarray]:
    """A worker's ``.npz`` reply, its layout checked before anything is inflated or loaded: known names only, each
    stored uncompressed (so nothing inflates past the ``MAX_OUTPUT_BYTES`` already read), no pickled objects."""
    if not data:
        raise ValueError("empty reply")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        names = [i.filename.removesuffix(".npy") for i in infos]
        if len(infos) > len(REPLY_KEYS) or not set(names) <= REPLY_KEYS or len(set(names)) != len(names):
            raise SubmissionError("the submission's process sent back a reply the grader does not read.")
        if any(i.compress_type != zipfile.ZIP_STORED or i.file_size != i.compress_size for i in infos):
            raise SubmissionError("the submission's process sent back a compressed reply; the grader refuses it.")
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _float(out: dict[str, np.ndarray], key: str) -> float:
    a = out.get(key)
    if not isinstance(a, np.ndarray) or a.shape != () or a.dtype != np.float64 or not np.isfinite(a):
        raise SubmissionError(f"the worker returned no number {key}.")
    return float(a)


def _int(out: dict[str, np.ndarray], key: str) -> int:
    a = out.get(key)
    if not isinstance(a, np.ndarray) or a.shape != () or a.dtype != np.int64:
        raise SubmissionError(f"the worker returned no integer {key}.")
    return int(a)


def _array(out: dict[str, np.ndarray], key: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    a = out.get(key)
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else "nothing"
        raise SubmissionError(f"the worker returned {key} as {got}, expected {np.dtype(dtype)} {shape}.")
    return a


@dataclass
class Launched:
    """A task whose files passed the checks and whose two sandboxed workers are starting up."""

    task: str
    class_name: str
    epoch_sha256: str
    workers: dict[str, Worker]
    started: float
    files: dict[str, str]  # the file names graded (the brief's or the course trainer's)
    seed: int  # of the sampling noise
    memory_cap: str  # "cgroup" (one for the whole submission) or "per-process"


class EncodingGate:
    """Decoding waits until every encoding process of the submission has exited (or its task failed): the student's
    code never runs in an encoder and a decoder at the same time, so no lock, pipe or shared timing carries the
    test images from one to the other."""

    def __init__(self, tasks: list[str]):
        self._left = set(tasks)
        self._cond = threading.Condition()

    def done(self, task: str) -> None:
        with self._cond:
            self._left.discard(task)
            self._cond.notify_all()

    def wait(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._left)


def launch_task(root: Path, task: str, workdir: Path, settings: GradeSettings, isolation: str,
                cgroup: SubmissionCgroup | None = None) -> Launched:
    """Check one task's files and start its encoder and decoder, each on its own private copy of them (each
    imports torch, then waits for its input). Raises ``SubmissionError`` / ``CheckpointError`` for a bad
    submission."""
    spec = TASKS[task]
    t0 = time.perf_counter()
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
    copies = {mode: private_copy(sources, workdir / mode) for mode in ("encode", "decode")}
    hashes = {name: file_sha256(copies["encode"] / name) for name in sources}
    seed = sampling_seed(settings, *hashes.values())
    job = {"task": task, "seed": seed, "per_label": settings.per_label, "threads": settings.threads,
           "memory_bytes": int(settings.memory_gb * 2**30)}
    workers: dict[str, Worker] = {}
    try:
        for mode, files in copies.items():
            workers[mode] = Worker(mode, job, files, isolation, settings.threads, cgroup)
    except BaseException:
        for w in workers.values():
            w.kill()
        raise
    names = {"checkpoint": ckpt.name, "hyperparameters": hp_file.name}
    return Launched(task, class_name, hashes["epoch.pth"], workers, t0, names, seed,
                    cgroup.kind if cgroup else "per-process")


def grade_task(judge: Judge, launched: Launched | Exception, task: str, workdir: Path, settings: GradeSettings,
               isolation: str, isolation_warning: str | None, preview_dir: Path | None = None,
               gate: EncodingGate | None = None) -> dict[str, Any]:
    """Finish grading one launched task (or record why it could not launch); never raises for a bad
    submission. ``preview_dir`` (the output folder) gets the page's sample grid and reconstruction strip in the
    task's folder; ``gate`` holds the decoding back until every task's encoder is gone."""
    gate = gate or EncodingGate([task])
    spec = TASKS[task]
    t0 = launched.started if isinstance(launched, Launched) else time.perf_counter()
    result: dict[str, Any] = {"task": task, "folder": spec.folder, "isolation": isolation}
    settings_rec = {"seed": settings.seed, "samples_per_label": settings.per_label,
                    "course_replay": {"seed": course_inference.SEED, "batch_size": course_inference.BATCH_SIZE,
                                      "samples_per_digit": course_inference.SAMPLES_PER_DIGIT[task]},
                    "n_reconstructions": len(judge.test), "test_sha256": judge.test_sha256,
                    "classifier_sha256": judge.classifier_sha256, "versions": library_versions()}
    timing: dict[str, float] = {}
    error = None
    try:
        if isinstance(launched, Exception):
            raise launched
        settings_rec["epoch_sha256"] = launched.epoch_sha256  # lets pack.py spot a stale grade
        settings_rec["sampling_seed"] = launched.seed
        settings_rec["memory_cap"] = launched.memory_cap
        spent = 0.0  # the task's processes share one time budget: a slow encoder leaves the decoder less

        def stage(mode: str, what: str, request: bytes) -> dict[str, np.ndarray]:
            nonlocal spent
            t = time.perf_counter()
            run = launched.workers[mode].run(request, max(1.0, settings.timeout - spent))
            timing[f"{mode}_s"] = round(time.perf_counter() - t, 2)
            spent += time.perf_counter() - t
            out, err = _worker_error(run, what, settings.timeout)
            if err is not None:
                raise SubmissionError(err)
            return out

        # Encoding: the course's inference replayed on the test images (the course fields), then only mu out.
        try:
            enc = stage("encode", "encoding the test images", judge.encode_request)
        finally:
            gate.done(task)
        latent_dim = _int(enc, "latent_dim")
        mu = enc.get("mu")
        if not isinstance(mu, np.ndarray) or mu.dtype != np.float32 or mu.ndim != 2 or len(mu) != len(judge.test):
            raise SubmissionError("encoding must give mu shaped [N, latent_dim] for the N test images.")
        if mu.shape[1] != latent_dim:
            raise SubmissionError(f"encoding gave mu of width {mu.shape[1]}, but latent_dim is {latent_dim}.")
        if not np.isfinite(mu).all():
            raise SubmissionError("encoding gave NaN or infinite values in mu.")
        # Decoding, in a fresh process that never saw a test image, once no encoder is left: codes and noise in.
        gate.wait()
        dec = stage("decode", "decoding", _npz_bytes(mu=mu, y=judge.test_y))
        if _int(dec, "latent_dim") != latent_dim:
            raise SubmissionError("the encoding and decoding processes built models of different latent_dim.")
        labels = np.repeat(np.arange(10), settings.per_label)
        recon = _array(dec, "recon", judge.test_u8.shape, np.uint8)
        samples = _array(dec, "samples", (len(labels), 28, 28), np.uint8)
        warnings = [str(w)[:500] for w in dec.get("warnings", np.array([], dtype=np.str_))][:20]
        recorded = _int(enc, "latent_dim_recorded")
        if recorded >= 0:
            names = launched.files
            warnings.append(
                f"{names['hyperparameters']} records latent_dim {recorded}, but {names['checkpoint']} holds "
                f"a model of latent_dim {latent_dim} (the course's train.py records 20 whatever the size): "
                f"graded with {latent_dim}. The course's grade.py takes its bonus from latent_dim {recorded} "
                f"(bonus {metrics.latent_bonus(recorded):.4f} instead of {metrics.latent_bonus(latent_dim):.4f}).")
        if launched.files["checkpoint"] != MODEL_FILES[0] or launched.files["hyperparameters"] != MODEL_FILES[1]:
            warnings.append(f"graded {launched.files['checkpoint']} and {launched.files['hyperparameters']}; the "
                            f"brief asks for {MODEL_FILES[0]} and {MODEL_FILES[1]} in {spec.folder}/.")
        scored = (score_gen(judge, latent_dim, recon, samples, labels, settings) if spec.conditional
                  else score_vae(judge, latent_dim, recon, samples, settings))
        scored.update(course_fields(judge, task, latent_dim, enc))
        scored["split"] = split_fields(judge, task, latent_dim, recon, samples, labels)
        if scored["course_error"] and (spec.conditional or scored["ssim"] is None):
            error = scored["course_error"]  # the course's own harness fails here: its score is 0 (metrics kept)
        elif scored["course_error"]:
            warnings.append(scored["course_error"])  # a VAE whose samples fail keeps its reconstruction score
        scored["repeat_difference"] = _float(dec, "repeat_difference")
        scored["task"] = task  # the fid factor's curve is the task's
        result.update(scored)
        result["model_class"] = launched.class_name
        result["files"] = launched.files
        result["flags"] = flag(scored)
        result["fair_factors"] = metrics.fair_factors(scored)
        result["fair_score"] = metrics.fair_score(scored)
        result["warnings"] = warnings + result["flags"]
        if preview_dir is not None:
            save_previews(preview_dir, spec.folder, samples, labels, recon, judge.test_u8)
    except (SubmissionError, CheckpointError) as e:
        error = str(e)
    except Exception as e:  # noqa: BLE001 - a grader bug must still not kill the batch
        error = f"grader error while scoring: {type(e).__name__}: {e}"
    finally:
        gate.done(task)  # a task that failed before encoding holds no one back
        if isinstance(launched, Launched):
            for w in launched.workers.values():  # a worker left waiting (its task failed early) dies too
                w.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    if error is not None:
        result.update({"error": error, "score": 0.0, "fair_score": 0.0})
    else:
        result["error"] = None
    if isolation_warning:
        result.setdefault("warnings", []).append(isolation_warning)
    result["settings"] = settings_rec
    result["timing"] = {**timing, "total_s": round(time.perf_counter() - t0, 2)}
    return _round(result)


def write_result(out_dir: Path, result: dict[str, Any]) -> Path:
    return write_text(out_dir, f"{result['folder']}/grade_result.json", json.dumps(result, indent=2, sort_keys=True)
                      + "\n")


def grade_submission(judge: Judge, submission: Path, out_dir: Path, tasks: list[str],
                     settings: GradeSettings) -> dict[str, dict[str, Any]]:
    """Grade a folder or zip; write ``out_dir/<task folder>/grade_result.json`` for each task. Never raises for
    what the submission holds: a zip or folder that cannot be read is every task's error."""
    out_dir, submission = Path(out_dir).resolve(), Path(submission).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fresh, uniquely named work folder: nothing the submission placed in out_dir (a folder graded in place) is
    # ever followed, written into or deleted.
    work = Path(tempfile.mkdtemp(prefix=".grade_work-", dir=out_dir))
    results: dict[str, dict[str, Any]] = {}
    cgroup = None
    try:
        isolation, isolation_warning = resolve_isolation(settings.isolation)
        if submission.is_file() and submission.suffix == ".zip":
            root = copy_hand_in(safe_extract(submission, work / "unzipped"), work / "copy")
        elif submission.is_dir():
            root = copy_hand_in(submission, work / "copy")
        else:
            raise SubmissionError(f"{submission.name} is neither a folder nor a .zip file.")
        # Every task's workers start up front, so one task's start-up overlaps the other's scoring; all of them
        # share one memory cap and one process count.
        if isolation == "bubblewrap":
            cgroup = SubmissionCgroup(int(settings.memory_gb * 2**30))
        launched: dict[str, Launched | Exception] = {}
        for task in tasks:
            try:
                launched[task] = launch_task(root, task, work / task, settings, isolation, cgroup)
            except OSError as e:
                launched[task] = SubmissionError(f"could not start: {e}")
            except Exception as e:  # noqa: BLE001 - recorded for grade_task, so no launched worker is left waiting
                launched[task] = e
        # The tasks then run side by side too: one's scoring overlaps the other's workers (the two cores stay busy);
        # no decoder gets its input before both encoders are gone.
        gate = EncodingGate(tasks)
        with ThreadPoolExecutor(len(tasks)) as pool:
            futures = {task: pool.submit(grade_task, judge, launched[task], task, work / task, settings, isolation,
                                         isolation_warning, out_dir, gate) for task in tasks}
            results.update({task: f.result() for task, f in futures.items()})
    except Exception as e:  # noqa: BLE001 - one hand-in never stops a batch: whatever reading it raised is its error
        error = str(e) if isinstance(e, SubmissionError) else (
            f"the submission could not be read ({type(e).__name__}: {str(e)[:300]}).")
        for task in tasks:
            results[task] = {"task": task, "folder": TASKS[task].folder, "error": error, "score": 0.0,
                             "fair_score": 0.0}
    finally:
        if cgroup is not None:
            cgroup.close()
        shutil.rmtree(work, ignore_errors=True)
    for res in results.values():
        write_result(out_dir, res)
    return results


CSV_FIELDS = ("submission", "task", "score", "max_score", "fair_score", "ssim", "mse", "fid", "cond_accuracy",
              "fid_ratio", "diversity", "memorization", "memorization_heldout", "recon_copies", "latent_dim",
              "isolation", "flags", "error")


def write_csv(path: Path, rows: list[tuple[str, dict[str, Any]]]) -> None:
    """One row per (submission, task)."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for name, res in rows:
        row = {k: res.get(k) for k in CSV_FIELDS if k != "submission"}
        row["flags"] = len(res.get("flags") or [])
        w.writerow({"submission": name, **row})
    write_text(path.parent, path.name, buf.getvalue())

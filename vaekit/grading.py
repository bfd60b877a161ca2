"""Grade a submission folder or zip: run its models in a sandboxed child, score the outputs here.

The parent holds the test set and the classifier (a "judge"); the child only ever sees test images and
labels and returns uint8 images. Every failure becomes a per-task ``error`` with score 0.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics
from .checkpoint import CheckpointError, file_sha256, library_versions
from .classifier import load_classifier
from .data import ROOT, Split, dataset_sha256, load_mnist, load_test_data
from .generation import TASKS
from .sandbox import SubmissionError, run_worker, safe_extract

CACHE_DIR = ROOT / "data" / "MNIST" / "cache"
REQUIRED_FILES = ("epoch.pth", "hyperparameters.txt")


@dataclass(frozen=True)
class GradeSettings:
    seed: int = 0
    per_label: int = 1000  # generated images per digit (the course's count)
    timeout: float = 300.0  # seconds per task for the submission's own code
    memory_gb: float = 8.0  # address-space cap of the child (torch alone maps about 4 GB)
    threads: int = 2


def _round(x: Any) -> Any:
    """Round floats to 6 decimals everywhere, so two gradings give byte-identical JSON."""
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    return x


class Judge:
    """The test set, the classifier and the real-data reference statistics, computed once per session."""

    def __init__(self, test_data: str | None = None, classifier: str | None = None, threads: int = 2):
        torch.set_num_threads(threads)
        self.classifier, self.classifier_sha256 = load_classifier(classifier)
        self.test = load_test_data(test_data)
        self.test_sha256 = dataset_sha256(self.test)
        self.test_u8 = metrics.quantize(self.test.x)
        self.test_y = self.test.y.numpy()
        self.test_feats, _ = self.features(self.test_u8)
        train = load_mnist("train")
        self.train_feats = self._cached_train_features(train)
        self.train_y = train.y.numpy()

    @torch.no_grad()
    def features(self, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(penultimate features ``[N,128]``, predicted digits ``[N]``) of uint8 images."""
        feats, preds = [], []
        for i in range(0, len(images_u8), 1000):
            x = torch.from_numpy(images_u8[i:i + 1000]).float().div(255).unsqueeze(1)
            f = self.classifier.features(x)
            feats.append(f)
            preds.append(self.classifier.head(f).argmax(1))
        if not feats:
            return np.zeros((0, 128), np.float32), np.zeros(0, np.int64)
        return torch.cat(feats).numpy(), torch.cat(preds).numpy()

    def _cached_train_features(self, train: Split) -> np.ndarray:
        """Features of the 50 000 training images, cached on disk per (classifier, data) pair."""
        key = hashlib.sha256((self.classifier_sha256 + dataset_sha256(train)).encode()).hexdigest()[:16]
        path = CACHE_DIR / f"train-features-{key}.npy"
        if path.exists():
            return np.load(path)
        feats, _ = self.features(metrics.quantize(train.x))
        try:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            np.save(path, feats)
        except OSError:
            pass
        return feats

    def real_reference(self, n: int, seed: int, label: int | None = None) -> np.ndarray:
        """Features of ``n`` training images (of one digit if ``label``), a fixed seeded draw."""
        idx = np.arange(len(self.train_y)) if label is None else np.flatnonzero(self.train_y == label)
        rng = np.random.default_rng(seed)
        return self.train_feats[np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))]


def score_outputs(judge: Judge, task: str, out: dict[str, np.ndarray], settings: GradeSettings) -> dict[str, Any]:
    """All metrics of one task from the child's uint8 reconstructions and samples."""
    latent_dim = int(out["latent_dim"])
    recon, samples, labels = out["recon"], out["samples"], out["sample_labels"]
    res: dict[str, Any] = {"latent_dim": latent_dim, "model_class": str(out["model_class"])}
    res["ssim"] = metrics.ssim_mean(recon, judge.test_u8)
    res["mse"] = metrics.mse(recon, judge.test_u8)
    res["bonus"] = metrics.latent_bonus(latent_dim)

    feats, preds = judge.features(samples)
    res["memorization"], res["memorization_threshold"] = metrics.memorization(feats, judge.train_feats,
                                                                              judge.test_feats)
    if task == "gen":
        res["fid"] = metrics.course_fid(samples, labels, judge.test_u8, judge.test_y)
        res["score"] = metrics.course_gen_score(res["ssim"], res["mse"], res["fid"], latent_dim)
        res["max_score"] = 30.0
        res["cond_accuracy"] = float(np.mean(preds == labels))
        per_acc, per_gen, per_real, per_div = [], [], [], []
        for c in range(10):
            g, t = feats[labels == c], judge.test_feats[judge.test_y == c]
            real = judge.real_reference(len(g), settings.seed + c, label=c)
            per_acc.append(float(np.mean(preds[labels == c] == c)))
            per_gen.append(metrics.feature_fid(g, t))
            per_real.append(metrics.feature_fid(real, t))
            per_div.append(metrics.mean_pairwise_distance(g) / metrics.mean_pairwise_distance(t))
        res["per_class"] = {"cond_accuracy": per_acc, "classifier_fid": per_gen, "classifier_fid_real": per_real,
                            "fid_ratio": [g / r for g, r in zip(per_gen, per_real)], "diversity": per_div}
        res["classifier_fid"], res["classifier_fid_real"] = float(np.mean(per_gen)), float(np.mean(per_real))
        res["diversity"] = float(np.mean(per_div))
        label_factor = res["cond_accuracy"]
    else:
        res["fid"] = None  # The course's VAE score has no FID term.
        res["score"] = metrics.course_vae_score(res["ssim"], res["mse"], latent_dim)
        res["max_score"] = 10.0
        hist = metrics.class_histogram(preds)
        res["class_histogram"] = hist
        res["histogram_max_deviation"] = max(abs(h - 0.1) / 0.1 for h in hist)
        real = judge.real_reference(len(feats), settings.seed)
        res["classifier_fid"] = metrics.feature_fid(feats, judge.test_feats)
        res["classifier_fid_real"] = metrics.feature_fid(real, judge.test_feats)
        res["diversity"] = metrics.mean_pairwise_distance(feats[::5]) / metrics.mean_pairwise_distance(
            judge.test_feats[::5])
        label_factor = 1 - 0.5 * sum(abs(h - 0.1) for h in hist)  # 1 − total-variation from uniform
    res["fid_ratio"] = res["classifier_fid"] / res["classifier_fid_real"]
    res["fair_score"] = metrics.fair_score(res["score"], label_factor, res["diversity"], res["memorization"],
                                           res["fid_ratio"])
    return res


def find_submission_root(folder: Path) -> Path:
    """The folder holding ``submission.py``: ``folder`` itself or its single subfolder (a zipped top folder)."""
    if (folder / "submission.py").is_file():
        return folder
    subs = [d for d in folder.iterdir() if d.is_dir() and (d / "submission.py").is_file()]
    if len(subs) == 1:
        return subs[0]
    raise SubmissionError("submission.py not found at the top of the submission (or of its one top folder).")


def grade_task(judge: Judge, root: Path, task: str, workdir: Path, test_file: Path,
               settings: GradeSettings) -> dict[str, Any]:
    """Grade one task of an unpacked submission; never raises for a bad submission."""
    folder_name, _ = TASKS[task]
    t0 = time.perf_counter()
    result: dict[str, Any] = {"task": task, "folder": folder_name}
    settings_rec = {"seed": settings.seed, "samples_per_label": settings.per_label,
                    "n_reconstructions": len(judge.test), "test_sha256": judge.test_sha256,
                    "classifier_sha256": judge.classifier_sha256, "versions": library_versions()}
    folder = root / folder_name
    error = None
    try:
        missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
        if not (root / "submission.py").is_file():
            missing.insert(0, "submission.py")
        if missing:
            raise SubmissionError(f"missing {', '.join(missing)} in {folder_name}/ (see the required layout).")
        settings_rec["epoch_sha256"] = file_sha256(folder / "epoch.pth")  # lets pack.py spot a stale grade
        workdir.mkdir(parents=True, exist_ok=True)
        job = {"task": task, "folder": str(folder.resolve()), "submission": str((root / "submission.py").resolve()),
               "test": str(test_file), "output": str(workdir / "outputs.npz"), "seed": settings.seed,
               "per_label": settings.per_label, "threads": settings.threads}
        error = run_worker(job, workdir, settings.timeout, settings.memory_gb)
        worker_s = time.perf_counter() - t0
        if error is None:
            with np.load(workdir / "outputs.npz", allow_pickle=False) as f:
                out = {k: f[k] for k in f.files}
            warnings = [str(w) for w in out.pop("warnings")]
            result.update(score_outputs(judge, task, out, settings))
            result["warnings"] = warnings
        result["timing"] = {"worker_s": round(worker_s, 2)}
    except (SubmissionError, CheckpointError) as e:
        error = str(e)
    except Exception as e:  # noqa: BLE001 - a grader bug must still not kill the batch
        error = f"grader error while scoring: {type(e).__name__}: {e}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if error is not None:
        result.update({"error": error, "score": 0.0, "fair_score": 0.0})
    else:
        result["error"] = None
    result["settings"] = settings_rec
    result.setdefault("timing", {})["total_s"] = round(time.perf_counter() - t0, 2)
    return _round(result)


def write_result(out_dir: Path, result: dict[str, Any]) -> Path:
    path = out_dir / result["folder"] / "grade_result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


def grade_submission(judge: Judge, submission: Path, out_dir: Path, tasks: list[str],
                     settings: GradeSettings) -> dict[str, dict[str, Any]]:
    """Grade a folder or zip; write ``out_dir/<task folder>/grade_result.json`` for each task."""
    out_dir, submission = Path(out_dir).resolve(), Path(submission).resolve()
    work = out_dir / ".grade_work" / submission.name
    shutil.rmtree(work, ignore_errors=True)
    results: dict[str, dict[str, Any]] = {}
    try:
        if submission.is_file() and submission.suffix == ".zip":
            root = find_submission_root(safe_extract(submission, work / "unzipped"))
        elif submission.is_dir():
            root = find_submission_root(submission)
        else:
            raise SubmissionError(f"{submission} is neither a folder nor a .zip file.")
        # The test images the child reconstructs: written once per submission, shared by its tasks.
        work.mkdir(parents=True, exist_ok=True)
        test_file = work / "test.npz"
        np.savez(test_file, x=judge.test_u8, y=judge.test_y)
        for task in tasks:
            results[task] = grade_task(judge, root, task, work / task, test_file, settings)
    except SubmissionError as e:
        for task in tasks:
            results[task] = {"task": task, "folder": TASKS[task][0], "error": str(e), "score": 0.0,
                             "fair_score": 0.0}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            (out_dir / ".grade_work").rmdir()
        except OSError:
            pass
    for res in results.values():
        write_result(out_dir, res)
    return results


CSV_FIELDS = ("submission", "task", "score", "max_score", "fair_score", "ssim", "mse", "fid", "cond_accuracy",
              "fid_ratio", "diversity", "memorization", "latent_dim", "error")


def write_csv(path: Path, rows: list[tuple[str, dict[str, Any]]]) -> None:
    """One row per (submission, task)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for name, res in rows:
            w.writerow({"submission": name, **{k: res.get(k) for k in CSV_FIELDS if k != "submission"}})

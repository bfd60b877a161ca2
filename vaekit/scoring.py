"""Score a task from its workers' replies into its ``TaskGrade``.

The course's formulas on the course replay and on the isolated path, the classifier's metrics (class coverage or
conditional accuracy, FID ratio, diversity, copy checks) and the flags.

Everything here reads the judge (``vaekit.judge``) and uint8 images the sandboxed workers returned; nothing runs
the submission's code. ``vaekit.metrics`` holds the formulas themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import course_inference, metrics
from .checkpoint import CheckpointError, library_versions
from .course import MODEL_FILES, TASKS, SubmissionError
from .grade_record import TaskGrade
from .gradepage import save_previews
from .intake import Prepared
from .judge import Judge
from .protocol import reply_array, reply_int, reply_warnings
from .settings import GradeSettings
from .worker import repeat_picks


def feature_fids(judge: Judge, feats: np.ndarray, seed: int, label: int | None = None) -> tuple[float, float]:
    """(Fréchet distance of ``feats`` to the test images' features, the same for as many real training images):
    over all test images, or over those of digit ``label``. Their ratio is ``fid_ratio``."""
    test = judge.test_feats if label is None else judge.test_feats[judge.test_y == label]
    real = judge.real_reference(len(feats), seed, label=label)
    return metrics.feature_fid(feats, test), metrics.feature_fid(real, test)


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


def score_vae(judge: Judge, latent_dim: int, recon: np.ndarray, samples: np.ndarray, seed: int) -> dict[str, Any]:
    """Unconditional task, isolated path: class coverage of the samples, FID ratio, diversity."""
    feats, preds = judge.features(samples)
    res = score_common(judge, latent_dim, recon, feats)
    res["max_score"] = TASKS["vae"].max_score
    hist = metrics.class_histogram(preds)
    res["class_histogram"] = hist
    res["histogram_max_deviation"] = max(abs(h - 0.1) / 0.1 for h in hist)
    res["classifier_fid"], res["classifier_fid_real"] = feature_fids(judge, feats, seed)
    res["fid_ratio"] = res["classifier_fid"] / res["classifier_fid_real"]
    res["diversity"] = metrics.mean_pairwise_distance(feats[::5]) / metrics.mean_pairwise_distance(
        judge.test_feats[::5])
    res["diversity_within_class"] = metrics.within_class_diversity(feats, preds, judge.test_feats, judge.test_y)
    res["label_factor"] = 1 - 0.5 * sum(abs(h - 0.1) for h in hist)  # 1 − total-variation from uniform
    return res


def score_gen(judge: Judge, latent_dim: int, recon: np.ndarray, samples: np.ndarray, labels: np.ndarray,
              seed: int) -> dict[str, Any]:
    """Conditional task, isolated path: conditional accuracy and per-class FID ratio and diversity."""
    feats, preds = judge.features(samples)
    res = score_common(judge, latent_dim, recon, feats)
    res["max_score"] = TASKS["gen"].max_score
    res["cond_accuracy"] = float(np.mean(preds == labels))
    per_acc, per_gen, per_real, per_div = [], [], [], []
    for c in range(10):
        g, t = feats[labels == c], judge.test_feats[judge.test_y == c]
        per_acc.append(float(np.mean(preds[labels == c] == c)))
        fid, fid_real = feature_fids(judge, g, seed + c, label=c)
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


def repeat_difference(dec: dict[str, np.ndarray], recon: np.ndarray, samples: np.ndarray) -> float:
    """Mean gray levels between the images graded and the same codes and noise decoded once more (a deterministic
    decoder: 0), computed here from both, to three decimals (float noise between batch sizes reads 0)."""
    n, pick = repeat_picks(len(recon), len(samples))
    again = reply_array(dec, "repeat", (n + len(pick), 28, 28), np.uint8).astype(np.int16)
    first = np.concatenate([recon[:n], samples[pick.numpy()]]).astype(np.int16)
    return round(float(np.abs(again - first).mean()), 3)


def builds_nothing(error: str, class_name: str) -> bool:
    """The error says the submission could not rebuild the folder's model: its constructor refused the recorded
    arguments (``building.instantiate``), the weights do not fit (``checkpoint.load_weights``), or the class is gone."""
    return (error.startswith(f"{class_name}(**") or "checkpoint does not fit the model" in error
            or "has no nn.Module class" in error)


@dataclass
class Replies:
    """What one task's workers gave: the encoder's and decoder's replies, or the error that stopped them
    (``machine``: for the grading machine's sake, a timeout)."""

    task: str
    prepared: Prepared | None  # None: the task's files failed their checks (``error`` says why)
    enc: dict[str, np.ndarray] | None = None
    dec: dict[str, np.ndarray] | None = None
    error: str | None = None
    machine: bool = False


def settings_record(judge: Judge, task: str, settings: GradeSettings, prepared: Prepared | None,
                    memory_cap: str) -> dict[str, Any]:
    """The grade's ``settings``: what a regrade must hold equal to give the same bytes."""
    rec = {"seed": settings.seed, "samples_per_label": settings.per_label,
           "course_replay": {"seed": course_inference.SEED, "batch_size": course_inference.BATCH_SIZE,
                             "samples_per_digit": course_inference.SAMPLES_PER_DIGIT[task]},
           "n_reconstructions": len(judge.test),
           **({"test_set": "hidden"} if judge.hidden else {"test_sha256": judge.test_sha256}),
           "classifier_sha256": judge.classifier_sha256, "versions": library_versions()}
    if prepared is not None:
        rec["epoch_sha256"] = prepared.epoch_sha256  # lets pack.py spot a stale grade
        rec["sampling_seed"] = prepared.seed
        rec["memory_cap"] = memory_cap
    return rec


def file_warnings(prepared: Prepared, recorded: int, latent_dim: int) -> list[str]:
    """What the folder's files say that the grade does not: a recorded latent size the checkpoint contradicts, a
    folder trained from another submission.py, files graded under other names than the brief's."""
    names, spec, found = prepared.files, TASKS[prepared.task], []
    if recorded >= 0:
        found.append(
            f"{names['hyperparameters']} records latent_dim {recorded}, but {names['checkpoint']} holds "
            f"a model of latent_dim {latent_dim} (the course's train.py records 20 whatever the size): "
            f"graded with {latent_dim}. The course's grade.py takes its bonus from latent_dim {recorded} "
            f"(bonus {metrics.latent_bonus(recorded):.4f} instead of {metrics.latent_bonus(latent_dim):.4f}).")
    if prepared.stale:
        found.append(f"{prepared.stale[:-1]}; graded as it is, since this submission.py loads it.")
    if names["checkpoint"] != MODEL_FILES[0] or names["hyperparameters"] != MODEL_FILES[1]:
        found.append(f"graded {names['checkpoint']} and {names['hyperparameters']}; the "
                     f"brief asks for {MODEL_FILES[0]} and {MODEL_FILES[1]} in {spec.folder}/.")
    return found


def score_task(judge: Judge, replies: Replies, settings: GradeSettings, isolation: str, memory_cap: str,
               preview_dir: Path | None) -> TaskGrade:
    """One task's grade from its workers' replies (or the error that stopped them); never raises."""
    task, prepared, enc, dec, error = replies.task, replies.prepared, replies.enc, replies.dec, replies.error
    spec = TASKS[task]
    grade = TaskGrade(task=task, folder=spec.folder, max_score=spec.max_score, isolation=isolation,
                      settings=settings_record(judge, task, settings, prepared, memory_cap))
    stale = prepared.stale if prepared is not None else None
    try:
        if error is not None:
            # A folder trained from another submission.py that this one cannot rebuild fails for that reason, not for
            # the arguments or weights it records; any other failure keeps its own sentence, the stale one after it.
            if stale and builds_nothing(error, prepared.class_name):
                raise SubmissionError(stale)
            raise SubmissionError(f"{error} ({stale})" if stale else error)
        latent_dim = reply_int(enc, "latent_dim")
        if reply_int(dec, "latent_dim") != latent_dim:
            raise SubmissionError("the encoding and decoding processes built models of different latent_dim.")
        labels = np.repeat(np.arange(10), settings.per_label)
        recon = reply_array(dec, "recon", judge.test_u8.shape, np.uint8)
        samples = reply_array(dec, "samples", (len(labels), 28, 28), np.uint8)
        warnings = reply_warnings(dec) + file_warnings(prepared, reply_int(enc, "latent_dim_recorded"), latent_dim)
        scored = (score_gen(judge, latent_dim, recon, samples, labels, settings.seed) if spec.conditional
                  else score_vae(judge, latent_dim, recon, samples, settings.seed))
        scored.update(course_fields(judge, task, latent_dim, enc))
        scored["split"] = split_fields(judge, task, latent_dim, recon, samples, labels)
        if scored["course_error"] and (spec.conditional or scored["ssim"] is None):
            error = scored["course_error"]  # the course's own harness fails here: its score is 0 (metrics kept)
        elif scored["course_error"]:
            warnings.append(scored["course_error"])  # a VAE whose samples fail keeps its reconstruction score
        scored["repeat_difference"] = repeat_difference(dec, recon, samples)
        scored["task"] = task  # the fid factor's curve is the task's
        flags = flag(scored)
        for key, value in scored.items():
            setattr(grade, key, value)
        grade.scored = True
        grade.model_class, grade.files, grade.flags = prepared.class_name, prepared.files, flags
        grade.fair_factors, grade.fair_score = metrics.fair_factors(scored), metrics.fair_score(scored)
        grade.warnings = warnings + flags
        if preview_dir is not None:
            save_previews(preview_dir, spec.folder, samples, labels, recon, None if judge.hidden else judge.test_u8)
    except (SubmissionError, CheckpointError) as e:
        error = str(e)
    except Exception as e:  # noqa: BLE001 - a grader bug must still not kill the batch
        error = f"grader error while scoring: {type(e).__name__}: {e}"
    if error is not None:
        grade.error, grade.score, grade.fair_score, grade.machine_failure = error, 0.0, 0.0, replies.machine
    return grade

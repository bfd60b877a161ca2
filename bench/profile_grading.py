"""Where one submission's grading time goes: every stage of ``grade.py`` on the shipped models, timed alone.

    python -m bench.profile_grading            # writes bench/profile.{json,md} and the table in docs/benchmark.md

Each stage runs in this process on one thread (the grader's setting), on the full test set and the default sample
count, so its time is the CPU time it costs wherever it runs; the faster scoring paths are timed beside the
references they are proven equal to (tests/test_metrics.py). Process start-up is timed on real child processes,
sandboxed and not. The "floor" row adds up what no design can skip: the course's own inference, one split encoding
and decoding, the classifier on the samples, the copy checks and one start-up of each of the two processes the
security design needs.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from vaekit import course_inference, metrics
from vaekit.building import load_model
from vaekit.checkpoint import load_checkpoint
from vaekit.classifier import features_and_digits
from vaekit.course import TASKS, load_submission
from vaekit.generation import decode_codes, decode_noise, encode_means, fast_layout, sample_noise
from vaekit.grading import GradeSettings
from vaekit.isolation import SandboxCommand, probe_bubblewrap
from vaekit.judge import Judge
from vaekit.paths import ROOT
from vaekit.readme import replace_block
from vaekit.scoring import course_fields, flag, score_gen, score_vae, split_fields


def timed(fn):
    """(result, CPU seconds of this process) — one thread, so CPU time is also wall time."""
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def startup() -> dict[str, float]:
    """Seconds to start Python and import the worker (torch included): CPU of a plain child, wall of a sandboxed one
    (the sandboxed child's CPU is not reported back through bubblewrap)."""
    cmd = [sys.executable, "-c", "import vaekit.worker"]
    out = {}
    c = children_cpu()
    for _ in range(3):
        subprocess.run(cmd, check=True, cwd=ROOT)
    out["plain_cpu_s"] = (children_cpu() - c) / 3
    if probe_bubblewrap() is None:
        walls = []
        with tempfile.TemporaryDirectory() as d:
            for _ in range(3):
                with SandboxCommand(Path(d), 1, cmd) as sb:
                    t = time.perf_counter()
                    subprocess.run(sb.argv, check=True, cwd="/")
                    walls.append(time.perf_counter() - t)
        out["sandboxed_wall_s"] = float(np.median(walls))
    return out


def profile_task(judge: Judge, sub, task: str, per_label: int) -> dict[str, float]:
    spec = TASKS[task]
    folder = ROOT / spec.folder
    rows: dict[str, float] = {}
    (model, hp), rows["build the model"] = timed(lambda: load_model(folder, sub, default_class=spec.model_class,
                                                                    seed=0, detect_latent=True))
    model = fast_layout(model)
    d = int(hp["model_kwargs"]["latent_dim"])
    x = torch.from_numpy(judge.test_u8).float().div(255).unsqueeze(1)
    y = torch.from_numpy(judge.test_y).long()
    state = load_checkpoint(folder / "epoch.pth")["model_state_dict"]
    replay, rows["course replay: forward over the test set"] = timed(
        lambda: course_inference.reconstructions(course_inference.harness_model(sub, task, d, state), x, y))
    _, rows["course replay: single decodes"] = timed(
        lambda: course_inference.samples(course_inference.harness_model(sub, task, d, state), d,
                                         course_inference.SAMPLES_PER_DIGIT[task]))
    mu, rows["split: encode the test set"] = timed(lambda: encode_means(model, x, y))
    recon, rows["split: decode the codes"] = timed(lambda: decode_codes(model, mu, y))
    labels = torch.arange(10).repeat_interleave(per_label)
    z = sample_noise(len(labels), d, 0)
    samples, rows["split: decode the samples"] = timed(lambda: decode_noise(model, z, labels))
    _, rows["split: decode 200 again (repeat check)"] = timed(
        lambda: (decode_codes(model, mu[:100], y[:100]), decode_noise(model, z[:100], labels[:100])))
    recon8, samples8, lab = metrics.quantize(recon), metrics.quantize(samples), labels.numpy()
    _, rows["SSIM of the test set, twice (batched)"] = timed(
        lambda: (metrics.ssim_per_image(replay, judge.test_u8), metrics.ssim_per_image(recon8, judge.test_u8)))
    _, rows["SSIM, twice, one scikit-image call per image (before)"] = timed(
        lambda: [[structural_similarity(a, b, data_range=255) for a, b in zip(r, judge.test_u8)]
                 for r in (replay, recon8)])
    (feats, _), rows["classifier on the samples (chunks of 64)"] = timed(
        lambda: features_and_digits(judge.classifier, samples8))
    _, rows["classifier on the samples (chunks of 1000, before)"] = timed(lambda: [
        judge.classifier.features(torch.from_numpy(samples8[i:i + 1000]).float().div(255).unsqueeze(1))
        for i in range(0, len(samples8), 1000)])
    _, rows["copy checks: nearest of 60 000 + held-out"] = timed(
        lambda: (judge.train_index.distances(feats), judge.heldout_index.distances(feats)))
    _, rows["copy checks with torch.cdist in chunks of 2048 (before)"] = timed(lambda: [
        torch.cdist(torch.from_numpy(feats[i:i + 2048]), torch.from_numpy(ref)).min(1).values
        for ref in (judge.train_feats, judge.heldout_feats) for i in range(0, len(feats), 2048)])
    settings = GradeSettings(per_label=per_label)
    enc = {"course_recon": replay, "course_samples": replay[:10 * course_inference.SAMPLES_PER_DIGIT[task]]}

    def score() -> None:
        res = (score_gen(judge, d, recon8, samples8, lab, settings.seed) if spec.conditional
               else score_vae(judge, d, recon8, samples8, settings.seed))
        res.update(course_fields(judge, task, d, enc))
        res["split"] = split_fields(judge, task, d, recon8, samples8, lab)
        flag({**res, "repeat_difference": 0.0})

    _, rows["all scoring together (classifier, copy checks, SSIM, FIDs)"] = timed(score)
    return rows


FLOOR = ("course replay: forward over the test set", "course replay: single decodes", "split: encode the test set",
         "split: decode the codes", "split: decode the samples", "classifier on the samples (chunks of 64)",
         "copy checks: nearest of 60 000 + held-out", "SSIM of the test set, twice (batched)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples-per-label", type=int, default=GradeSettings().per_label)
    p.add_argument("--out", default=str(ROOT / "bench"), help="folder for profile.json and profile.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    judge, judge_s = timed(lambda: Judge(threads=1))
    sub = load_submission(ROOT / "submission.py")
    start = startup()
    tasks = {task: profile_task(judge, sub, task, args.samples_per_label) for task in TASKS}
    start_s = start["plain_cpu_s"]
    floor = {task: sum(rows[k] for k in FLOOR) for task, rows in tasks.items()}
    result = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d"), "samples_per_label": args.samples_per_label,
              "judge_once_s": judge_s, "startup": start, "tasks": tasks,
              "floor_s": sum(floor.values()) + 2 * start_s}
    out = Path(args.out)
    (out / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| stage (one thread) | VAE task, s | conditional task, s |", "|---|---|---|"]
    for key in tasks["vae"]:
        lines.append(f"| {key} | {tasks['vae'][key]:.2f} | {tasks['gen'][key]:.2f} |")
    lines.append(f"| start Python and import torch, per process (two per submission: an encoder, a decoder) | "
                 f"{start_s:.2f} | {start_s:.2f} |")
    sandboxed = start.get("sandboxed_wall_s", float("nan"))
    floor_s = result["floor_s"]
    table = "\n".join(lines) + "\n\n" + (
        f"CPU seconds on one thread, {args.samples_per_label} samples per digit, 10 000 test images; "
        f"{result['machine']}, {result['date']}. A sandboxed start takes {sandboxed:.2f} s "
        f"of wall time. The judge (test set, classifier features of 80 000 reference images, copy threshold) is built "
        f"once per grading process: {judge_s:.1f} s with its cache. **Floor** (the course's inference, one split "
        f"encoding and decoding, the classifier, the copy checks, SSIM, and two process starts): "
        f"{floor_s:.1f} CPU seconds per submission, both tasks, so {floor_s / 2:.1f} s on 2 cores.\n")
    (out / "profile.md").write_text(table)
    if Path(args.out).resolve() == (ROOT / "bench").resolve():
        replace_block("profile", table)
    print(table)


if __name__ == "__main__":
    main()

"""Train the grading classifier -> vaekit/assets/classifier.pt (and print its test accuracy and sha256).

    python train_classifier.py            # about 9 minutes on 2 CPU cores, >= 99.5 % test accuracy
    python train_classifier.py --dry-run  # a few steps, writes to runs/dry_run/classifier.pt

The grader trusts only the weights whose sha256 is pinned in vaekit/classifier.py; after retraining,
paste the printed sha256 there (the command prints the line to paste).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vaekit import checkpoint
from vaekit.checkpoint import file_sha256
from vaekit.classifier import ASSET, MnistClassifier, classifier_loss, load_classifier, random_affine
from vaekit.data import Split, load_mnist
from vaekit.training import evaluate, fit, pick_device, set_threads

ROOT = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=15, help="passes over the training images")
    p.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate (cosine-decayed)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv block")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling and augmentation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=0, help="CPU threads (0 = all cores)")
    p.add_argument("--out", default=None, help=f"weights file (default: {ASSET.relative_to(ROOT)})")
    p.add_argument("--dry-run", action="store_true", help="5 steps on 512 images, a smoke test")
    args = p.parse_args(argv)

    set_threads(args.workers)
    device = pick_device(args.device)
    out = Path(args.out) if args.out else (ROOT / "runs" / "dry_run" / "classifier.pt" if args.dry_run else ASSET)
    # The generators are trained on the 50k train split; the judge may see train + valid (60k), never test.
    train, valid, test = load_mnist("train"), load_mnist("valid"), load_mnist("test")
    train = Split(torch.cat([train.x, valid.x]), torch.cat([train.y, valid.y]))
    max_steps = None
    if args.dry_run:
        train, valid, test, max_steps = train.subset(512), valid.subset(256), test.subset(256), 5

    torch.manual_seed(args.seed)
    model = MnistClassifier(width=args.width)
    t0 = time.perf_counter()
    # Validation here only picks the best epoch (valid is inside train); test accuracy is reported below.
    result = fit(model, classifier_loss, train, valid, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                 seed=args.seed, device=device, weight_decay=1e-4, max_steps=max_steps, augment=random_affine,
                 state_path=out.with_suffix(".state.pth"), desc="classifier")
    seconds = time.perf_counter() - t0
    # Stored as float16 (half the bytes); the accuracy reported is that of the file as the grader loads it.
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.cpu().state_dict().items()}
    checkpoint.save_checkpoint(out, half, model_kwargs={"width": args.width}, epochs=result.epochs_run,
                               train_seconds=round(seconds, 1), seed=args.seed)
    out.with_suffix(".state.pth").unlink(missing_ok=True)
    digest = file_sha256(out)
    judge, _ = load_classifier(out, expected_sha256=digest)
    test_metrics = evaluate(judge, classifier_loss, test, 1000, torch.device("cpu"))
    summary = {"test_accuracy": test_metrics["accuracy"], "epochs": result.epochs_run,
               "train_seconds": round(seconds, 1), "bytes": out.stat().st_size, "sha256": digest}
    print(json.dumps(summary, indent=2))
    if not args.dry_run:
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f'pin it in vaekit/classifier.py:  ASSET_SHA256 = "{digest}"')


if __name__ == "__main__":
    main()

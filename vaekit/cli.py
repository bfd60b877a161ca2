"""The flags every train script and lab shares, and the one meaning of ``--dry-run``.

``--dry-run`` everywhere: ``DRY_RUN_STEPS`` optimiser steps on the first ``DRY_RUN_IMAGES`` training images
(and as many validation and test images), a smoke test that finishes in seconds.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from .data import Split, load_mnist

DRY_RUN_IMAGES = 512
DRY_RUN_STEPS = 5
DRY_RUN_HELP = f"{DRY_RUN_STEPS} steps on {DRY_RUN_IMAGES} images (a smoke test)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every script's ``--help``: each flag's default after its help, unless the help already states it or there
    is none worth showing (None, False, an empty string)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if "(default:" in (action.help or "") or default is None or default is False or default == "":
            return action.help
        return super()._get_help_string(action)


def add_run_flags(parser: argparse.ArgumentParser, *, out_default: str | None, out_help: str = "output folder",
                  seed_help: str = "seed for weights and shuffling (same seed and device -> same weights)") -> None:
    """--seed --device --workers --out --dry-run."""
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, default=0, help="CPU threads for tensor ops (0 = all cores); data "
                        "are in-memory tensors, so no loader processes are needed")
    parser.add_argument("--out", default=out_default, metavar="DIR", help=out_help)
    parser.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. A GPU is used when there, never required."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name} asked for, but no CUDA device is available; use --device cpu.")
    return torch.device(name)


@dataclass(frozen=True)
class RunSetup:
    device: torch.device
    train: Split  # 50 000 images (DRY_RUN_IMAGES with --dry-run)
    valid: Split
    test: Split
    max_steps: int | None  # DRY_RUN_STEPS with --dry-run


def setup_device(args: argparse.Namespace) -> torch.device:
    """Apply ``--workers`` (CPU threads) and resolve ``--device``."""
    if args.workers > 0:
        torch.set_num_threads(args.workers)
    return pick_device(args.device)


def setup_run(args: argparse.Namespace) -> RunSetup:
    """Threads, device and the three MNIST splits, cut down for ``--dry-run``."""
    device = setup_device(args)
    n = DRY_RUN_IMAGES if args.dry_run else None
    return RunSetup(device, load_mnist("train").subset(n), load_mnist("valid").subset(n),
                    load_mnist("test").subset(n), DRY_RUN_STEPS if args.dry_run else None)

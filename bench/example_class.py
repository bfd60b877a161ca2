"""The example class of the grade-page screenshot in docs/grading.md and of the browser tests: the kit's default
submission, a broken one (its GenModel checkpoint missing), a label-permuted one and a pass-through cheat.

    python -m bench.example_class     # grades it on the official test set and writes docs/grade_page.png

The class is written to bench/runs/example_class/class, the grades to bench/runs/example_class/graded.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from bench.browser import CHROMIUM, launch
from bench.calibrate import cheat, degenerate
from vaekit.cli import HelpFormatter
from vaekit.paths import ROOT

NAMES = ("G1-default", "G2-broken", "G3-label-permuted", "G4-pass-through")


def build(batch: Path, root: Path = ROOT) -> Path:
    """Write the four submissions of the example class into ``batch``; returns ``batch``."""
    default, broken, permuted, passthrough = (batch / name for name in NAMES)
    default.mkdir(parents=True)
    shutil.copy(root / "submission.py", default)
    for folder in ("VAEwolabel", "Genwithlabel"):
        (default / folder).mkdir()
        for name in ("epoch.pth", "hyperparameters.txt"):
            shutil.copy(root / folder / name, default / folder)
    shutil.copytree(default, broken)
    (broken / "Genwithlabel" / "epoch.pth").unlink()
    degenerate(permuted, default, "label_permuted", ("vae", "gen"), {})
    cheat(passthrough, "pass_through", ("vae", "gen"), None)
    return batch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--chromium", default=CHROMIUM, help="the browser that takes the screenshot")
    p.add_argument("--out", default=str(ROOT / "docs" / "grade_page.png"), help="the screenshot")
    p.add_argument("--size", default="1700x900", help="the browser window, WIDTHxHEIGHT pixels")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))

    work = ROOT / "bench" / "runs" / "example_class"
    shutil.rmtree(work, ignore_errors=True)
    batch, graded = build(work / "class"), work / "graded"
    subprocess.run([sys.executable, "grade.py", "--batch", str(batch), "--out", str(graded), "-j", "2"],
                   cwd=ROOT, check=True)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw, args.chromium)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto((graded / "index.html").as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=args.out)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

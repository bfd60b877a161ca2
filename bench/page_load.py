"""How fast the grade page opens for a large class: a synthetic batch of copies of one graded submission.

    python -m bench.page_load graded/G1 --n 200     # a folder grade.py wrote (grade_result.json + previews)

Writes bench/runs/page_load/index.html with N rows and prints the browser's own timings (Chromium through
Playwright): DOMContentLoaded, load, the main thread's work (task, script, layout and style seconds), a sort and a
filter, and the files added per submission.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from bench.browser import CHROMIUM, launch
from vaekit.cli import HelpFormatter
from vaekit.course import TASKS
from vaekit.grade_record import TaskGrade
from vaekit.gradepage import write_page
from vaekit.paths import ROOT


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("graded", help="one graded submission folder (with VAEwolabel/ and Genwithlabel/)")
    p.add_argument("--n", type=int, default=200, help="submissions on the page")
    p.add_argument("--chromium", default=CHROMIUM, help="the browser to measure in")
    args = p.parse_args(argv)

    src, out = Path(args.graded), ROOT / "bench" / "runs" / "page_load"
    shutil.rmtree(out, ignore_errors=True)
    results = {t: TaskGrade.read(src / s.folder / "grade_result.json") for t, s in TASKS.items()}
    graded = []
    for i in range(args.n):
        name = f"G{i:03d}"
        for spec in TASKS.values():
            shutil.copytree(src / spec.folder, out / name / spec.folder, ignore=shutil.ignore_patterns("*.pth"))
        graded.append((name, {t: replace(r, fair_score=r.fair_score * (i % 17) / 16) for t, r in results.items()}))
    t0 = time.perf_counter()
    page_path = write_page(out / "index.html", graded, [f"{n}/" for n, _ in graded], "synthetic class")
    write_s = time.perf_counter() - t0
    per_sub = sum(f.stat().st_size for f in (out / "G000").rglob("grade_*.png"))

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw, args.chromium)
        page = browser.new_page()
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        # The main thread's own work (CPU seconds spent on it), less sensitive to other load than wall times.
        work = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        nav = page.evaluate("() => JSON.stringify(performance.getEntriesByType('navigation')[0])")
        nav = json.loads(nav)
        sort_ms = page.evaluate("""() => { const t = performance.now();
            document.querySelector("th[data-col='4']").click(); return performance.now() - t; }""")
        filter_ms = page.evaluate("""() => { const t = performance.now();
            const box = document.querySelector("input[value='ok']"); box.checked = true;
            box.dispatchEvent(new Event('change')); return performance.now() - t; }""")
        browser.close()
    print(json.dumps({"submissions": args.n, "page_bytes": page_path.stat().st_size,
                      "preview_bytes_per_submission": per_sub, "write_page_s": round(write_s, 3),
                      "dom_content_loaded_ms": round(nav["domContentLoadedEventEnd"], 1),
                      "load_ms": round(nav["loadEventEnd"], 1),
                      **{f"{k}_ms": round(1000 * work[k], 1) for k in ("TaskDuration", "ScriptDuration",
                                                                        "LayoutDuration", "RecalcStyleDuration")},
                      "sort_ms": round(sort_ms, 1),
                      "filter_ms": round(filter_ms, 1)}, indent=2))


if __name__ == "__main__":
    main()

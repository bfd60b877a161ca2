"""The grades as one HTML page a TA can sort, filter and read, with each submission's digits beside its numbers.

``grade.py --batch`` writes ``OUT/index.html``; ``grade.py --submission`` writes ``OUT/grade_report.html``
for one submission (what the TA will see). The page is self-contained: no network, no script or style from
elsewhere; the images are small PNGs beside each ``grade_result.json``, drawn from the uint8 outputs the
grader already scored (the submission's code is not run again).
"""

from __future__ import annotations

import html
import json
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .course import TASKS
from .outputs import output_path, write_atomic

if TYPE_CHECKING:
    from .grade_record import TaskGrade

SAMPLES_PNG = "grade_samples.png"  # 10x10: row c holds the first ten samples asked to be digit c
RECON_PNG = "grade_reconstructions.png"  # test images (top) over their reconstructions (bottom)


def _grid(images: np.ndarray, nrow: int, pad: int = 1) -> np.ndarray:
    """uint8 ``[N,28,28]`` -> one uint8 image, ``nrow`` per row, light grid lines between."""
    n = len(images)
    rows = -(-n // nrow)
    out = np.full((rows * (28 + pad) + pad, nrow * (28 + pad) + pad), 128, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        out[pad + r * (28 + pad):pad + r * (28 + pad) + 28, pad + c * (28 + pad):pad + c * (28 + pad) + 28] = img
    return out


def save_previews(out_dir: Path, folder: str, samples: np.ndarray, labels: np.ndarray, recon: np.ndarray,
                  originals: np.ndarray | None) -> None:
    """Write the sample grid and the reconstruction strip of one graded task into ``out_dir/folder`` (about
    30 KB together), never through a link the submission left there. ``originals`` None (a hidden test set): the
    strip shows the reconstructions alone."""
    from PIL import Image

    picks = np.concatenate([np.flatnonzero(labels == c)[:10] for c in range(10)])
    strip = recon[:16] if originals is None else np.concatenate([originals[:16], recon[:16]])
    for name, grid in ((SAMPLES_PNG, _grid(samples[picks], 10)), (RECON_PNG, _grid(strip, 16))):
        write_atomic(output_path(out_dir, f"{folder}/{name}"),
                     lambda p, g=grid: Image.fromarray(g).save(p, format="PNG", optimize=True))


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{100 * v:.1f} %" if pct else (f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}")
    return html.escape(str(v))


LOW_ACCURACY = 0.5  # conditional accuracy shown in red below this
LOW_FAIR = 0.25  # fair score shown in red below this share of the task's points
COLUMNS = [  # (key, header, per task?, percent?)
    ("score", "course", True, False), ("fair_score", "fair", True, False),
    ("cond_accuracy", "cond acc", True, True), ("fid_ratio", "fid ratio", True, False),
    ("diversity", "diversity", True, False), ("memorization", "memo", True, False),
    ("latent_dim", "latent", True, False),
]


def page_url(rel: str) -> str:
    """A link from the page into an output folder: relative (``./``, so no name reads as a scheme like ``https:``)
    and percent-encoded."""
    return "./" + urllib.parse.quote(rel)


def _row(index: int, name: str, results: dict[str, TaskGrade], rel: str) -> str:
    anchor = f"sub-{index}"  # by position: unique whatever the names
    errors = [f"{t}: {r.error}" for t, r in results.items() if r.error]
    notes = {t: r.notes() for t, r in results.items()}
    flags = [f"{t}: {f}" for t, (task_flags, _) in notes.items() for f in task_flags]
    warns = [f"{t}: {w}" for t, (_, task_warns) in notes.items() for w in task_warns]
    isolation = sorted({str(r.isolation or "–") for r in results.values()})
    values = {t: r.to_dict() for t, r in results.items()}  # the numbers as grade_result.json has them
    state = "error" if errors else "flagged" if flags else "warning" if warns else "ok"
    cells = [f'<td class="name"><a href="#{anchor}">{html.escape(name)}</a></td>']
    for key, _, _, pct in COLUMNS:
        for task, spec in TASKS.items():
            v = values.get(task, {}).get(key)
            sort = v if isinstance(v, (int, float)) else -1
            low = isinstance(v, float) and ((key == "cond_accuracy" and v < LOW_ACCURACY)
                                            or (key == "fair_score" and v < LOW_FAIR * spec.max_score))
            mark = ' class="low"' if low else ""
            cells.append(f'<td data-v="{sort}"{mark}>{_fmt(v, pct)}</td>')
    cells.append(f'<td>{html.escape(", ".join(isolation))}</td>')
    imgs = []
    for task, spec in TASKS.items():
        r = results.get(task)
        if r is None or r.error:
            imgs.append('<td class="img">–</td>')
            continue
        base = f"{rel}{spec.folder}/"
        imgs.append(f'<td class="img"><img loading="lazy" alt="{task} samples" '
                    f'src="{html.escape(page_url(base + SAMPLES_PNG))}"><img loading="lazy" class="strip" '
                    f'alt="{task} reconstructions" src="{html.escape(page_url(base + RECON_PNG))}"></td>')
    notes = "".join(f'<div class="err">{html.escape(e)}</div>' for e in errors)
    notes += "".join(f'<div class="flag">{html.escape(f)}</div>' for f in flags)
    notes += "".join(f'<div class="warn">{html.escape(w)}</div>' for w in warns)
    return (f'<tr class="{state}" data-state="{state}">' + "".join(cells) + "".join(imgs)
            + f'<td class="notes">{notes or "–"}</td></tr>')


def _detail(index: int, name: str, results: dict[str, TaskGrade]) -> str:
    anchor = f"sub-{index}"
    parts = [f'<section id="{anchor}"><h2>{html.escape(name)}</h2>']
    for task, r in results.items():
        parts.append(f"<h3>{task} ({TASKS[task].folder})</h3>")
        per = r.per_class
        if per:
            head = "".join(f"<th>{c}</th>" for c in range(10))
            body = "".join(f"<tr><th>{html.escape(k)}</th>" + "".join(f"<td>{_fmt(v)}</td>" for v in vals) + "</tr>"
                           for k, vals in per.items())
            parts.append(f'<table class="per"><tr><th>digit</th>{head}</tr>{body}</table>')
        if r.class_histogram:
            parts.append("<p>class histogram of samples: " + ", ".join(
                f"{c}: {100 * h:.1f} %" for c, h in enumerate(r.class_histogram)) + "</p>")
        # The JSON rides in a data block the browser does not lay out; opening the details shows it.
        # Inside <script> the HTML parser reacts to "<!--", "<script" and "</script": no "<" reaches it raw.
        data = json.dumps(r.to_dict(), sort_keys=True)
        data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        parts.append(f'<details class="json"><summary>grade_result.json</summary><pre></pre>'
                     f'<script type="application/json">{data}</script></details>')
    return "".join(parts) + '<p><a href="#top">back to the table</a></p></section>'


STYLE = """
body{font:14px system-ui,sans-serif;margin:1.2em;color:#222}
table.grades{border-collapse:collapse}
.grades th,.grades td{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:right}
.grades th{background:#f2f2f2;cursor:pointer;user-select:none;position:sticky;top:0}
.grades th.sorted-asc::after{content:" ▲"}.grades th.sorted-desc::after{content:" ▼"}
td.name{text-align:left;font-weight:600} td.notes{text-align:left;max-width:28em;font-size:12px}
td.img img{display:block;width:140px;image-rendering:pixelated} td.img img.strip{width:224px;margin-top:2px}
tr.error{background:#fde2e2} tr.flagged{background:#fff1d6} tr.warning{background:#fffbe6}
td.low{color:#b00;font-weight:700} .err{color:#a00}.flag{color:#a55a00}.warn{color:#666}
.bar{margin:.6em 0} .bar label{margin-right:1.2em}
table.per{border-collapse:collapse;margin:.4em 0} .per td,.per th{border:1px solid #ddd;padding:2px 5px;font-size:12px}
section{content-visibility:auto;contain-intrinsic-size:auto 700px}
pre{background:#f7f7f7;padding:.6em;max-height:30em;overflow:auto;font-size:12px}
"""

SCRIPT = """
const table = document.querySelector('table.grades'), body = table.tBodies[0];
table.querySelectorAll('th[data-col]').forEach(th => th.addEventListener('click', () => {
  const col = parseInt(th.dataset.col);
  const asc = !th.classList.contains('sorted-asc');
  table.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
  th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
  const key = r => {
    const c = r.cells[col];
    return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent;
  };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    return (typeof x === 'number' ? x - y : String(x).localeCompare(String(y))) * (asc ? 1 : -1);
  });
  rows.forEach(r => body.appendChild(r));
}));
function filter() {
  const want = Array.from(document.querySelectorAll('.bar input:checked')).map(i => i.value);
  Array.from(body.rows).forEach(r => { r.hidden = want.length > 0 && !want.includes(r.dataset.state); });
  document.getElementById('shown').textContent = Array.from(body.rows).filter(r => !r.hidden).length;
}
document.querySelectorAll('.bar input').forEach(i => i.addEventListener('change', filter));
document.querySelectorAll('details.json').forEach(d => d.addEventListener('toggle', () => {
  const pre = d.querySelector('pre');
  if (d.open && !pre.textContent) {
    pre.textContent = JSON.stringify(JSON.parse(d.querySelector('script').textContent), null, 2);
  }
}));
filter();
"""


def write_page(path: Path, graded: list[tuple[str, dict[str, TaskGrade]]], rel_dirs: list[str], title: str) -> Path:
    """One page for ``graded`` = [(submission name, {task: result})]; ``rel_dirs`` lead from the page to each
    submission's output folder (its task folders hold the preview images)."""
    counts = {s: 0 for s in ("error", "flagged", "warning", "ok")}
    rows = []
    for i, ((name, results), rel) in enumerate(zip(graded, rel_dirs)):
        row = _row(i, name, results, rel)
        counts[row.split('data-state="', 1)[1].split('"', 1)[0]] += 1
        rows.append(row)
    n_num = len(COLUMNS) * len(TASKS)
    top = "".join(f'<th colspan="{len(TASKS)}">{h}</th>' for _, h, _, _ in COLUMNS)
    sub = "".join(f'<th data-col="{1 + i}">{t}</th>' for i, t in enumerate(t for _ in COLUMNS for t in TASKS))
    imgs = "".join(f'<th rowspan="2">{t}: samples{" (row c asks for digit c)" if spec.conditional else ""}, '
                   f'test over reconstruction</th>' for t, spec in TASKS.items())
    boxes = "".join(f'<label><input type="checkbox" value="{s}"> {s} ({n})</label>' for s, n in counts.items())
    head = (f'<tr><th rowspan="2" data-col="0">submission</th>{top}<th rowspan="2" data-col="{1 + n_num}">'
            f'isolation</th>{imgs}<th rowspan="2">errors, flags, warnings</th></tr><tr>{sub}</tr>')
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head><body>
<h1 id="top">{html.escape(title)}</h1>
<p>{len(graded)} submission(s). Click a header to sort; tick to show only those rows (<span id="shown"></span>
shown). Course scores are the course grader's; the fair score multiplies them by what a classifier sees (the
asked-for digit, variety, no copies, realism); red marks a conditional accuracy below 50 % or a fair score below a
quarter of the points.</p>
<div class="bar">{boxes}</div>
<table class="grades"><thead>{head}</thead><tbody>
{"".join(rows)}
</tbody></table>
{"".join(_detail(i, name, results) for i, (name, results) in enumerate(graded))}
<script>{SCRIPT}</script></body></html>
"""
    return write_atomic(output_path(path.parent, path.name), lambda p: p.write_text(doc))

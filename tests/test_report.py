"""The report: compiles from fixture results; no number typed into its prose; every figure and table referenced;
no placeholder once the student file is filled; pack.py refuses it until then."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typst
from conftest import FILLED
from pypdf import PdfReader

from vaekit.grading import GradeSettings, grade_submission
from vaekit.student import PLACEHOLDER, read_student, unfilled

# Words that mark unfinished text anywhere in a finished report.
PLACEHOLDER_TEXT = re.compile(r"fill in|FILL IN|TODO|XXX|lorem ipsum|Student One|…", re.IGNORECASE)


def pdf_text(path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def build(root, *args):
    return subprocess.run([sys.executable, "report/build.py", *map(str, args)], cwd=root, capture_output=True,
                          text=True)


@pytest.fixture
def experiments(root):
    spec = importlib.util.spec_from_file_location("experiments", root / "report" / "experiments.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fixture_results(root, good, judge, experiments):
    """A results folder from a tiny graded model; the experiment summaries are made by the experiments'
    own ``summarise`` from runs that copy its grades (so their shape cannot drift from the real ones)."""
    # Typst reads files under the project root only (an ignored folder), one per test process (pytest -n).
    base = root / "tests" / f".report_fixture-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(good, base)
    res = grade_submission(judge, base, base, ["vae", "gen"], GradeSettings(per_label=20))
    rows = [{"model": m, "task": t, "train_s": 1.0, "epochs": 1, "fid_ratio_recon": 2.0,
             **{k: r.get(k) for k in ("score", "max_score", "cond_accuracy", "fid_ratio", "diversity", "mse")}}
            for t, r in res.items() for m in ("default conv", "default conv, no sharpening")]
    (base / "bench").mkdir()
    (base / "bench" / "results.json").write_text(json.dumps(
        {"machine": {"cores": 2, "cpu": "test CPU", "torch": "x", "grade_s": 1.0}, "rows": rows}))

    def runs(task, knob, values, **extra):
        grades = {k: res[task].get(k) for k in (*experiments.VAE_KEYS, *experiments.GEN_KEYS)}
        return [{**grades, knob: v, "seed": s, "epochs": 1, "train_s": 2.0 + s, "s_per_epoch": 2.0 + s, "threads": 1,
                 **extra} for v in values for s in range(3)]

    meta = {"epochs": 1, "seeds": 3, "cpu_minutes": 0.5, "cores": 2, "jobs": 2}
    q1 = {"defaults": {"lr": 2e-3, "latent_dim": 4, "var": 0.01}, "command": "python report/experiments.py q1",
          **meta, "sweeps": {k: experiments.summarise(runs("vae", k, v), k, experiments.VAE_KEYS)
                             for k, v in {"lr": (1e-3, 2e-3), "latent_dim": (2, 4), "var": (0.01, 0.1)}.items()}}
    q2s = {"command": "python report/experiments.py q2 --epochs 1", **meta,
           "arch": experiments.summarise(runs("vae", "arch", ("mlp", "conv")), "arch", experiments.VAE_KEYS)}
    q2 = {**q2s, "command": "python report/experiments.py q2", "budget_s": 300, "base": experiments.Q2_BASE,
          "s_per_epoch": {"mlp": 2.0, "conv": 3.0}, "label_epochs": 1,
          "label": experiments.summarise(runs("gen", "arch", ("conv", *experiments.LABEL_FEEDS)), "arch",
                                         experiments.GEN_KEYS)}
    gen = {"defaults": {"var": 0.003, **experiments.GEN_PRIOR_BASE}, "command": "python report/experiments.py gen",
           **meta, **{k: experiments.summarise(runs("gen", k, v), k, experiments.GEN_KEYS)
                      for k, v in {"var": (0.003, 0.01), "components": (1, 30), "prior_shrink": (0.8, 1.0),
                                   "volume_quantile": (0.3, 1.0)}.items()}}
    matrix = [[0.9 if c == y else 0.02 for y in range(10)] for c in range(10)]
    swap = {"command": "python report/experiments.py label-swap", "codes_per_label": 10, "standard": [0.2] * 10,
            "standard_mean": 0.2, "prior": matrix, "prior_as_source": matrix, "prior_own_digit": 0.9,
            "prior_swapped_as_label": 0.02, "prior_swapped_as_source": 0.8, **meta}
    (base / "report" / "results").mkdir(parents=True)
    # The short sweeps (_e2) and those at the models' own epochs have the same shape.
    results = {"q1": q1, "q1_e2": q1, "q2": q2, "q2_e2": q2s, "gen": gen, "gen_e2": gen, "label_swap": swap}
    for name, data in results.items():
        (base / "report" / "results" / f"{name}.json").write_text(json.dumps(data))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_report_compiles_from_fixture_results_and_shows_placeholders_until_filled(root, fixture_results, tmp_path):
    info = root / "report" / "build_info.json"
    before = info.read_bytes() if info.exists() else None
    unfinished = tmp_path / "student.toml"
    unfinished.write_text((root / "report" / "student.toml").read_text())
    r = build(root, "--results-dir", fixture_results, "--student", unfinished, "--out", tmp_path / "draft.pdf")
    assert r.returncode == 0, r.stderr
    assert "still has group, hours_spent" in r.stdout and "pack.py will not pack it" in r.stdout
    assert PLACEHOLDER in pdf_text(tmp_path / "draft.pdf")  # shown plainly where the student must write

    filled = tmp_path / "filled.toml"
    filled.write_text(FILLED)
    r = build(root, "--results-dir", fixture_results, "--student", filled, "--out", tmp_path / "report.pdf",
              "--skip-figures")  # the draft drew them
    assert r.returncode == 0, r.stderr
    text = pdf_text(tmp_path / "report.pdf")
    assert "Ada Lovelace (s1815)" in text and "41.5 hours" in text and "Group 7" in text
    assert PLACEHOLDER_TEXT.findall(text) == []
    assert "References" in text and "Auto-Encoding Variational Bayes" in text  # the bibliography is printed
    for fig in ("latent_map", "interpolation", "sweeps", "loss", "label_swap", "ceiling"):
        assert (fixture_results / "report" / "figures" / f"{fig}.png").stat().st_size > 1000
    # A fixture build must not touch the real report's build record.
    assert (info.read_bytes() if info.exists() else None) == before


def test_report_build_names_missing_inputs(root, tmp_path):
    r = build(root, "--results-dir", root / "tests", "--out", tmp_path / "r.pdf")
    assert r.returncode == 1 and "tests/VAEwolabel/grade_result.json" in r.stderr
    assert "tests/report/results/q1.json" in r.stderr


def test_every_figure_and_table_is_labelled_and_referenced(root):
    """Queried from the real report: each figure (tables included) has a label the text refers to."""
    inputs = {"student": json.dumps(read_student(root / "report" / "student.toml"))}
    query = dict(root=str(root), sys_inputs=inputs)
    figures = json.loads(typst.query(str(root / "report" / "report.typ"), "figure", **query))
    labels = json.loads(typst.query(str(root / "report" / "report.typ"), "figure", field="label", **query))
    refs = set(json.loads(typst.query(str(root / "report" / "report.typ"), "ref", field="target", **query)))
    assert len(figures) >= 8 and len(labels) == len(figures), "a figure or table without a label"
    assert sorted(set(labels) - refs) == []  # labelled but never referenced


def test_grey_share_counts_soft_ink():
    spec = importlib.util.spec_from_file_location("report_build", Path(__file__).parents[1] / "report" / "build.py")
    build_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_module)
    crisp = torch.zeros(2, 1, 28, 28)
    crisp[:, :, 10:18, 10:18] = 1.0
    assert build_module.grey_share(crisp) == 0.0
    soft = crisp.clone()
    soft[:, :, 10:14, 10:18] = 0.5  # half the ink grey
    assert build_module.grey_share(soft) == pytest.approx(0.5)


@pytest.mark.slow
def test_labs_report_compiles_from_the_shipped_lab_results(root, tmp_path):
    """report/labs.typ with the shipped lab results, the conditional GAN compared with the shipped GenModel."""
    spec = importlib.util.spec_from_file_location("report_build", root / "report" / "build.py")
    build_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_module)
    rel = {"gen": "/Genwithlabel/grade_result.json", "bench": "/bench/results.json"}
    out = tmp_path / "labs.pdf"
    build_module.build_labs(typst, rel, root / "Genwithlabel", root / "submission.py", out=out)
    text = " ".join(pdf_text(out).split())
    assert "A conditional GAN beside the conditional VAE" in text
    gan = json.loads((root / "labs" / "results" / "cgan" / "Genwithlabel" / "grade_result.json").read_text())
    assert f"{round(100 * gan['cond_accuracy'], 2):g} %" in text  # the number read from the lab's grade
    assert "What the course’s reconstruction scores mean for a GAN" in text or \
        "What the course's reconstruction scores mean for a GAN" in text
    if (root / "labs" / "results" / "cgan_variants" / "table.json").is_file():
        assert "Three losses" in text and "wgan-clip" in text and "wgan-gp" in text
    assert not PLACEHOLDER_TEXT.search(text)


# -- numbers in the prose ------------------------------------------------------------------------------------------
# A small scanner of Typst markup: digits are allowed in code (#...), math ($...$), raw text, comments, labels and
# references; anywhere else they were typed by hand and would go stale when the results change.
KEYWORD_STATEMENT = ("let", "set", "show", "import", "include")
KEYWORD_BLOCK = ("if", "for", "while")
ALLOWED = {"Q1", "Q2"}  # the course's question names


class ProseDigits:
    def __init__(self, src: str):
        self.s, self.found = src, []

    def skip_to(self, i: int, end: str) -> int:
        j = self.s.find(end, i)
        return len(self.s) if j < 0 else j + len(end)

    def markup(self, i: int, closer: str | None = None) -> int:
        s = self.s
        while i < len(s):
            c = s[i]
            if closer and c == closer:
                return i + 1
            if c == "\\":
                i += 2
            elif s.startswith("//", i):
                i = self.skip_to(i, "\n")
            elif s.startswith("/*", i):
                i = self.skip_to(i + 2, "*/")
            elif c == "$":
                i = self.skip_to(i + 1, "$")
            elif s.startswith("```", i):
                i = self.skip_to(i + 3, "```")
            elif c == "`":
                i = self.skip_to(i + 1, "`")
            elif m := re.compile(r"<[\w\-:.]+>|@[\w\-:]+").match(s, i):
                i = m.end()
            elif c == "[":
                i = self.markup(i + 1, "]")
            elif c == "#":
                i = self.expression(i + 1)
            elif c.isdigit():
                start, end = i, re.compile(r"[\w.]*\w|\w").match(s, i).end()
                while start > 0 and s[start - 1].isalnum():
                    start -= 1
                if s[start:end] not in ALLOWED:
                    self.found.append(f"line {s.count(chr(10), 0, i) + 1}: {s[start:end]}")
                i = end
            else:
                i += 1
        return i

    def code(self, i: int, closer: str | None, stop_at_newline: bool = False) -> int:
        """Code up to ``closer`` (or the end of the line for a statement); content blocks inside are markup."""
        s = self.s
        while i < len(s):
            c = s[i]
            if closer and c == closer:
                return i + 1
            if stop_at_newline and c == "\n":
                return i
            if c == '"':
                i = re.compile(r'"(?:\\.|[^"\\])*"').match(s, i).end()
            elif s.startswith("//", i):
                i = self.skip_to(i, "\n") - (1 if stop_at_newline else 0)
            elif c in "({":
                i = self.code(i + 1, ")" if c == "(" else "}")
            elif c == "[":
                i = self.markup(i + 1, "]")
            elif c == "$":
                i = self.skip_to(i + 1, "$")
            else:
                i += 1
        return i

    def expression(self, i: int) -> int:
        """One embedded expression after ``#``."""
        s = self.s
        m = re.compile(r"[A-Za-z_][\w\-]*").match(s, i)
        if m and m.group() in KEYWORD_STATEMENT:
            return self.code(m.end(), None, stop_at_newline=True)
        if m and m.group() in KEYWORD_BLOCK:
            i = m.end()
            while True:  # condition, then a block; `else` continues the statement
                while i < len(s) and s[i] not in "[{":
                    i = self.code(i + 1, ")") if s[i] == "(" else i + 1
                i = self.markup(i + 1, "]") if s[i] == "[" else self.code(i + 1, "}")
                nxt = re.compile(r"\s*else\s*").match(s, i)
                if not nxt:
                    return i
                i = nxt.end()
        if i < len(s) and s[i] in "({[":
            return self.code(i + 1, ")") if s[i] == "(" else self.code(i + 1, "}") if s[i] == "{" else \
                self.markup(i + 1, "]")
        if not m:
            return i
        i = m.end()
        while i < len(s):  # field access and calls chained without spaces: #a.b(c)[d]
            if s[i] == "." and i + 1 < len(s) and (s[i + 1].isalpha() or s[i + 1] == "_"):
                i = re.compile(r"\.[A-Za-z_][\w\-]*").match(s, i).end()
            elif s[i] == "(":
                i = self.code(i + 1, ")")
            elif s[i] == "[":
                i = self.markup(i + 1, "]")
            else:
                return i
        return i


def prose_digits(src: str) -> list[str]:
    scanner = ProseDigits(src)
    scanner.markup(0)
    return scanner.found


def test_the_digit_scanner_sees_prose_inside_code_and_skips_code():
    assert prose_digits("Score #f(vae.score, d: 2) of $10$ and #if x [took 60 s] else [none].") == ["line 1: 60"]
    assert prose_digits("#let t = [best at 0.5 here]\n#let y = calc.round(3.14)\nQ1 has `raw 7`, x2.") == [
        "line 1: 0.5", "line 3: x2"]
    assert prose_digits("// a comment 12\nsee @tab-q1 and <fig-2> and #(a.b)-unit") == []


def test_no_number_is_typed_into_the_report(root):
    assert prose_digits((root / "report" / "report.typ").read_text()) == []


# -- pack.py and the student file ----------------------------------------------------------------------------------
def test_student_file_placeholders_are_listed(root, tmp_path):
    assert unfilled(read_student(root / "report" / "student.toml")) == [
        "group", "hours_spent", "authors[1].name", "authors[1].student_id", "authors[2].name",
        "authors[2].student_id", "feedback.learned", "feedback.suggestions"]
    (tmp_path / "s.toml").write_text(FILLED)
    assert unfilled(read_student(tmp_path / "s.toml")) == []
    (tmp_path / "s.toml").write_text(FILLED.replace("group = 7", 'group = "seven"').replace("41.5", "-1"))
    assert unfilled(read_student(tmp_path / "s.toml")) == ["group (a whole number, 0 or more)",
                                                          "hours_spent (a number of hours, more than 0)"]


def test_pack_refuses_an_unfilled_or_foreign_student_file(root, tmp_path):
    spec = importlib.util.spec_from_file_location("pack", root / "pack.py")
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    (tmp_path / "report").mkdir()
    assert "not found" in pack.student_problems(tmp_path, 7)[0]
    shutil.copy(root / "report" / "student.toml", tmp_path / "report" / "student.toml")
    r = subprocess.run([sys.executable, "pack.py", "--group", "7", "--root", str(tmp_path), "--check"], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "report/student.toml: fill in group, hours_spent, authors[1].name" in r.stderr
    (tmp_path / "report" / "student.toml").write_text(FILLED)
    assert pack.student_problems(tmp_path, 7) == []
    assert pack.student_problems(tmp_path, 8) == [
        "report/student.toml: says group 7, but you pack for --group 8"]
    (tmp_path / "report" / "build_info.json").write_text(json.dumps({"inputs": {}, "unfilled": ["group"]}))
    assert "report.pdf: built before report/student.toml was filled" in pack.student_problems(tmp_path, 7)[0]

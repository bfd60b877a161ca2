"""The batch grade page, opened in a real headless browser (Playwright driving the system's Chromium)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    from bench.browser import CHROMIUM, launch
    if CHROMIUM is None:
        pytest.skip("no chromium browser here (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def graded_batch(small_test, root, tmp_path_factory):
    """The example class of docs/grading.md's screenshot (default, broken, label-permuted, pass-through), graded."""
    from bench.example_class import build
    batch = build(tmp_path_factory.mktemp("class") / "class4", root)
    out = tmp_path_factory.mktemp("graded")
    r = subprocess.run([sys.executable, "grade.py", "--batch", str(batch), "--out", str(out), "-j", "2",
                        "--test-data", str(small_test), "--samples-per-label", "20"], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr[-2000:]  # the class's broken submission failed, and the exit status says so
    return out


def open_page(browser, path: Path):
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors


def names(page):
    return page.eval_on_selector_all("table.grades tbody tr", "rows => rows.map(r => r.cells[0].textContent)")


def test_page_shows_errors_and_wrong_digits_and_sorts_and_filters(browser, graded_batch):
    page, errors = open_page(browser, graded_batch / "index.html")
    assert names(page) == ["G1-default", "G2-broken", "G3-label-permuted", "G4-pass-through"]
    broken = page.locator("tr", has_text="G2-broken")
    assert "missing epoch.pth (or an epoch_<N>.pth) in Genwithlabel/" in broken.inner_text()
    assert broken.get_attribute("class") == "error"
    # The label-permuted generator's conditional accuracy stands in its row, next to the honest one's.
    for name, low in (("G1-default", False), ("G3-label-permuted", True)):
        acc = json.loads((graded_batch / name / "Genwithlabel" / "grade_result.json").read_text())["cond_accuracy"]
        assert (acc < 0.1) if low else (acc > 0.9), (name, acc)
        assert f"{100 * acc:.1f} %" in page.locator("tr", has_text=name).inner_text()
    # Every preview image loaded.
    widths = page.eval_on_selector_all("td.img img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == 2 * (2 + 1 + 2 + 2) and all(w > 0 for w in widths), widths  # G2: its VAE task only
    # Sort by the conditional task's fair score, both directions; the values shown follow the JSON.
    header = page.locator("th[data-col='4']")  # fair: vae = 3, gen = 4
    fair = {n: json.loads((graded_batch / n / "Genwithlabel" / "grade_result.json").read_text())["fair_score"]
            for n in names(page)}
    header.click()
    shown = [fair[n] for n in names(page)]
    assert shown == sorted(shown) and names(page)[-1] == "G1-default"
    header.click()
    shown = [fair[n] for n in names(page)]
    assert shown == sorted(shown, reverse=True) and names(page)[0] == "G1-default"
    # The error filter hides the error-free rows.
    page.check("input[value='error']")
    visible = page.eval_on_selector_all("table.grades tbody tr",
                                        "rows => rows.filter(r => !r.hidden).map(r => r.cells[0].textContent)")
    assert visible == ["G2-broken"]
    page.uncheck("input[value='error']")
    assert page.eval_on_selector_all("table.grades tbody tr", "rows => rows.filter(r => r.hidden).length") == 0
    # A detail section per submission with its per-class table and the full JSON.
    link = page.locator("tr", has_text="G3-label-permuted").locator("td.name a")
    anchor = link.get_attribute("href")  # "#sub-<row>": unique whatever the names
    link.click()
    assert page.locator(f"{anchor} table.per").count() == 1
    page.locator(f"{anchor} summary").last.click()  # the conditional task's grade_result.json
    # The browser fires `toggle` in a later task, so wait for the handler to fill the block.
    from playwright.sync_api import expect
    expect(page.locator(f"{anchor} pre").last).to_contain_text('"cond_accuracy"', timeout=5000)
    assert errors == []


def test_page_files_stay_small(graded_batch):
    for sub in ("G1-default", "G3-label-permuted"):
        size = sum(f.stat().st_size for f in (graded_batch / sub).rglob("grade_*.png"))
        assert 0 < size <= 100_000, (sub, size)


def test_one_submission_gets_the_same_page(browser, good, small_test, root, tmp_path):
    r = subprocess.run([sys.executable, "grade.py", "--submission", str(good), "--out", str(tmp_path),
                        "--test-data", str(small_test), "--samples-per-label", "20", "--tasks", "gen"], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    page, errors = open_page(browser, tmp_path / "grade_report.html")
    assert len(names(page)) == 1 and errors == []
    assert page.eval_on_selector_all("td.img img", "imgs => imgs.map(i => i.naturalWidth)")[0] > 0


def test_no_text_from_a_submission_can_stop_the_page_script(browser, tmp_path):
    """An error or warning is the submission's text: "<!--<script>" in it once swallowed the page's script."""
    from vaekit.grade_record import TaskGrade
    from vaekit.gradepage import write_page

    hostile = "<!--<script>alert(1)</script><!--</script>"
    graded = [(f"G{i}", {"vae": TaskGrade(task="vae", folder="VAEwolabel", max_score=10.0, error=hostile,
                                          warnings=[hostile])}) for i in range(3)]
    page, errors = open_page(browser, write_page(tmp_path / "index.html", graded, ["G0/", "G1/", "G2/"], hostile))
    assert errors == [] and page.text_content("#shown") == "3"  # the script ran to its end
    assert hostile in page.locator("tr", has_text="G1").inner_text()  # shown as text, not markup
    page.locator("details.json summary").first.click()
    page.wait_for_function("document.querySelector('details.json pre').textContent.length > 0")
    assert json.loads(page.text_content("details.json pre"))["error"] == hostile

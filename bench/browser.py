"""The headless Chromium the grade-page tools and tests drive through Playwright: the system's browser, offline."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No sandbox (root in a container), no GPU, and none of the browser's own network traffic.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def launch(playwright, executable: str | None = CHROMIUM):
    """A headless Chromium browser from a ``sync_playwright()`` context."""
    if executable is None:
        raise FileNotFoundError("no chromium browser here (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=executable, args=FLAGS)

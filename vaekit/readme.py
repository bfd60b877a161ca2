"""Rewrite a generated block of the README or a docs/ page (between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``), so the tables there are always the latest output of the script that measured them."""

from __future__ import annotations

from pathlib import Path

from .paths import ROOT


def pages(root: Path = ROOT) -> list[Path]:
    """The README and the docs/ pages: where generated blocks may live."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def replace_block(name: str, content: str, root: Path = ROOT) -> bool:
    """Put ``content`` between the markers ``name`` in whichever page holds them; False when none does."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    for page in pages(root):
        text = page.read_text() if page.is_file() else ""
        if start in text and end in text:
            head, rest = text.split(start, 1)
            page.write_text(head + start + "\n" + content + end + rest.split(end, 1)[1])
            return True
    return False

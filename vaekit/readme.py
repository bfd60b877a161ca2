"""Rewrite a generated block of the README (between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``), so
the tables there are always the latest output of the script that measured them."""

from __future__ import annotations

from .paths import ROOT


def replace_block(name: str, content: str) -> bool:
    """Put ``content`` between the README's markers ``name``; False when the markers are missing."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    readme.write_text(head + start + "\n" + content + end + rest.split(end, 1)[1])
    return True

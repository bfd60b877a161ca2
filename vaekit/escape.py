"""Escape what a hand-in decides (names, errors, warnings) for where it goes: a folder, a CSV cell, a terminal.

A hand-in's file name becomes a folder name under ``--out``, its messages cells of ``grades.csv`` and lines on the
TA's terminal; each is made safe for its place here. (The grade page escapes its own HTML.)"""

from __future__ import annotations

import re
from pathlib import Path

# The class's own files in --out: no hand-in's folder may take their place.
CLASS_FILES = frozenset({"grades.csv", "index.html"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads a cell starting so as a formula (OWASP)


def hand_in_stem(entry: Path) -> str:
    """A hand-in's own name: a zip's without ``.zip``, a folder's as it is."""
    return entry.name[:-4] if entry.name.lower().endswith(".zip") and not entry.is_dir() else entry.name


def output_names(entries: list[Path]) -> dict[Path, str]:
    """Each hand-in's folder name under ``--out``: only letters, digits, ``.``, ``_`` and ``-``, no leading dot (so
    never ``.`` or ``..``), at most 100 characters, none of the class's own files, and unique. ``G3/`` keeps ``G3``
    and ``G3.zip`` becomes ``G3-zip``; any other clash gets ``-2``, ``-3``, … in the entries' sorted order, so the
    same class gives the same names on every run."""
    names: dict[Path, str] = {}
    taken = set(CLASS_FILES)
    ordered = sorted(entries, key=lambda e: (e.is_file(), e.name))  # folders first: a folder keeps its plain name
    for entry in ordered:
        base = _UNSAFE.sub("_", hand_in_stem(entry)).lstrip(".")[:100] or "hand-in"
        name = base
        if name.lower() in taken and entry.is_file():
            name = f"{base}-zip"
        n = 2
        while name.lower() in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name.lower())  # case-insensitive: a case-folding file system keeps them apart too
        names[entry] = name
    return names


def csv_cell(value: object) -> object:
    """A text cell that a spreadsheet would read as a formula gets a leading apostrophe; numbers pass as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def terminal_text(text: str) -> str:
    """Text for the TA's terminal on one line, without control characters (escape sequences, carriage returns, bidi
    overrides): a hand-in's message cannot move the cursor or print a line that looks like another hand-in's grade."""
    return _CONTROL.sub("?", text.replace("\n", " "))

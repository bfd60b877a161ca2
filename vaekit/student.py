"""The group's details (report/student.toml): read by report/build.py for the report, checked by pack.py."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

PLACEHOLDER = "FILL IN"


class StudentFileError(ValueError):
    """The student file cannot be read: one sentence naming the file and what is wrong."""


def read_student(path: str | Path) -> dict[str, Any]:
    """The details as a dict (group, hours_spent, authors, feedback); raises ``StudentFileError``."""
    path = Path(path)
    try:
        details = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudentFileError(f"{path}: not found; copy the kit's report/student.toml and fill it in.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StudentFileError(f"{path}: not valid TOML ({e}).") from None
    if not isinstance(details.get("authors"), list) or not details["authors"]:
        raise StudentFileError(f"{path}: needs at least one [[authors]] block with name and student_id.")
    return details


def unfilled(details: dict[str, Any]) -> list[str]:
    """The fields still to fill (or filled with something that is not what they ask for), as dotted names."""
    fields: list[tuple[str, Any]] = [("group", details.get("group")), ("hours_spent", details.get("hours_spent"))]
    for i, author in enumerate(details.get("authors", []), 1):
        fields += [(f"authors[{i}].{k}", author.get(k) if isinstance(author, dict) else None)
                   for k in ("name", "student_id")]
    feedback = details.get("feedback") if isinstance(details.get("feedback"), dict) else {}
    fields += [(f"feedback.{k}", feedback.get(k)) for k in ("learned", "suggestions")]
    missing = [name for name, value in fields if value is None or str(value).strip() in ("", PLACEHOLDER)]
    group, hours = details.get("group"), details.get("hours_spent")
    if "group" not in missing and not (isinstance(group, int) and not isinstance(group, bool) and group >= 0):
        missing.append("group (a whole number, 0 or more)")
    if "hours_spent" not in missing and not (isinstance(hours, (int, float)) and hours > 0):
        missing.append("hours_spent (a number of hours, more than 0)")
    return missing

"""Argparse backed by a dataclass: every field is a flag, its default shown in ``--help``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--field-name`` flag per dataclass field; help comes from ``field(metadata={"help": ...})``.

    Use ``argparse.ArgumentDefaultsHelpFormatter`` so every help line shows its (possibly overridden) default.
    """
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if _type_name(f.type) == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        else:
            base = _optional_base(f.type)
            parser.add_argument(flag, type=base, default=default, choices=f.metadata.get("choices"),
                                metavar=f.metadata.get("metavar"), help=help_text)


def _optional_base(annotation: Any) -> type:
    """``int | None`` -> int, ``str`` -> str (argparse needs a callable)."""
    kinds = {"int": int, "float": float, "str": str}
    name = _type_name(annotation)
    if name not in kinds:
        raise TypeError(f"unsupported config field type {annotation!r}")
    return kinds[name]


def _type_name(annotation: Any) -> str:
    """The first type of an annotation, as text: ``"int | None"`` -> ``"int"``."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return text.split("|")[0].strip()


def from_namespace(cls: type[T], ns: argparse.Namespace) -> T:
    """Build the dataclass from parsed flags (only its own fields)."""
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build the dataclass from a dict; an unknown key is an error, not silently ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}; known: {', '.join(sorted(names))}.")
    return cls(**values)


def add_run_flags(parser: argparse.ArgumentParser, *, out_default: str | None, out_help: str = "output folder",
                  seed_help: str = "seed for weights and shuffling") -> None:
    """The flags every lab and helper script shares: --seed --device --workers --out --dry-run."""
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--out", default=out_default, help=out_help)
    parser.add_argument("--dry-run", action="store_true", help="4 steps on 1 000 images (a smoke test)")

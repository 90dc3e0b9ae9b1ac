"""One wording of validation errors for every document a user writes: a scenario, a training
config, env options, a live config. The scenario room's :func:`~adaptflow.scenario.format_validation_error`
words each problem (the path as the user wrote it, one line per problem); this adapter gives it
another header and, for env options, calls a key an "option"."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adaptflow.scenario import format_validation_error

_SCENARIO_HINT = "; check the spelling against configs/scenarios/README.md"


def validation_lines(exc: ValidationError, data: Any, unknown_hint: str = "") -> list[str]:
    """One line per problem, ``path: message``, as the scenario loader words them (its header
    dropped); an unknown key's pointer to the scenario README becomes ``unknown_hint``."""
    text = format_validation_error(exc, data, "")
    return [line.replace(_SCENARIO_HINT, unknown_hint) for line in text.split("\n  ")[1:]]


def format_problems(
    exc: ValidationError, data: Any, header: str, noun: str | None = None, unknown_hint: str = ""
) -> str:
    """``header`` then one indented line per problem. With ``noun`` ("option"), every line reads
    ``option path: message`` and an unknown key is an "unknown option"."""
    lines = validation_lines(exc, data, unknown_hint)
    if noun is not None:
        lines = [f"{noun} {line}".replace(": unknown key ", f": unknown {noun} ") for line in lines]
    return f"{header}\n  " + "\n  ".join(lines)


def directory_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold new files (None if it can): an existing writable directory, or
    one that can be created because its nearest existing ancestor is a writable directory.
    Checked without creating anything, so a refused config leaves no trace."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "is not a directory" if probe == path else f"cannot be created: {str(probe)!r} is not a directory"
        return f"{str(path)!r} {what}; expected a directory that exists or can be created"
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else f"cannot be created: {str(probe)!r} is not writable"
        return f"{str(path)!r} {what}; expected a directory that exists or can be created"
    return None

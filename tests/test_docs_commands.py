"""Every ``adaptflow`` command the docs write out in full parses with today's command line.

A flag renamed or removed in ``cli.py`` leaves the README and the walk-throughs naming one a user
cannot run; this reads each shell block of the docs (continuation lines joined, shell variables
set in the block substituted, comments dropped) and hands every ``adaptflow`` command to the
parser. A command written with an elision (``...``, or an optional part in ``[brackets]``) is a
sketch, not a command, and is skipped.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from adaptflow.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*/*/README.md"))]
SHELL_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
ASSIGNMENT = re.compile(r'^(\w+)="([^"]*)"$')


def shell_commands(text: str) -> list[str]:
    """The ``adaptflow`` commands of a Markdown text's shell blocks, one string each."""
    found = []
    for language, block in SHELL_BLOCK.findall(text):
        if language not in ("", "sh", "bash", "console"):
            continue
        variables: dict[str, str] = {}
        for line in block.replace("\\\n", " ").splitlines():
            assignment = ASSIGNMENT.match(line.strip())
            if assignment:
                variables[assignment.group(1)] = assignment.group(2)
                continue
            for part in re.split(r"[;&|]+", line.split(" #")[0]):
                part = part.strip()
                for name, value in variables.items():
                    part = part.replace(f"${name}", value)
                if part.startswith("adaptflow ") and "..." not in part and " [" not in part:
                    found.append(part)
    return found


def argv_of(command: str) -> list[str]:
    """The command's arguments, a producer after ``--`` cut to one word (the parser keeps it whole)."""
    argv = shlex.split(command)[1:]
    return argv[: argv.index("--") + 2] if "--" in argv else argv


CASES = [(path.relative_to(ROOT).as_posix(), command) for path in DOCS for command in shell_commands(path.read_text())]


def test_the_docs_hold_commands_to_check():
    """The reader finds the walk-through's commands (a reader that found none would pass every doc)."""
    documents = {document for document, _ in CASES}
    assert {"README.md", "docs/deploy.md"} <= documents
    assert sum(document == "README.md" for document, _ in CASES) >= 20


def test_the_reader_keeps_a_wrong_flag_to_be_refused():
    """A command with a misspelt flag comes out of the reader whole, and the parser refuses it."""
    text = '```sh\nAPP="--app a:b"\nadaptflow record $APP --mapping m.yaml \\\n  --outt rec/  # a typo\n```\n'
    (command,) = shell_commands(text)
    assert command.split() == ["adaptflow", "record", "--app", "a:b", "--mapping", "m.yaml", "--outt", "rec/"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv_of(command))


@pytest.mark.parametrize(("document", "command"), CASES, ids=[f"{d}:{i}" for i, (d, _) in enumerate(CASES)])
def test_a_documented_command_parses(document: str, command: str):
    try:
        build_parser().parse_args(argv_of(command))
    except SystemExit as refused:
        pytest.fail(f"{document}: `{command}` is refused by today's command line (exit {refused.code})")

"""A compare-app cut short goes on where it stopped.

The live runs are the expensive part of ``adaptflow compare-app`` (three minutes each, and a fit
set or a held-out set holds eight to twelve), so a Ctrl-C, a SIGTERM or a crash at the seventh
run must not cost the six before it. With ``--out DIR``, every finished run's rows (its live row
and its simulated rows) are written to ``DIR/compare_app.partial.csv`` at once, atomically,
beside ``DIR/compare_app.resume.json``: what the compare is (the app, the runs in their order,
the producer, the interval and drain, the scenario, the simulation's settings). The same command
again finds them and runs only the runs not finished; ``compare_app.csv`` is written when the
last run is, and the two files are removed. Every reader of ``compare_app.csv`` (``resimulate``,
``fit-growth``, ``sim_to_real.sh``'s skipping of finished steps) so still sees only finished
compares.

A different command with the same ``--out`` is refused before any work, one line per field that
differs: its runs would not be one compare (other arrivals, other planners, another scenario).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from adaptflow._io import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from adaptflow.scenario import Scenario

PARTIAL = "compare_app.partial.csv"
MANIFEST = "compare_app.resume.json"
FINISHED = "compare_app.csv"


def scenario_digest(scenario: Scenario) -> str:
    """A scenario's identity in a manifest: the sha256 of its fields as JSON, keys sorted (the
    files it names are named, not read: the live arrivals are the producer's, in the manifest)."""
    text = json.dumps(scenario.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Progress:
    """The finished runs of one compare in ``folder``, and the rows they wrote."""

    folder: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, folder: Path, manifest: dict[str, Any]) -> Progress:
        """The progress of the compare ``manifest`` describes in ``folder``: an earlier partial
        one's rows when its manifest is this one, none when there is none; a partial compare of
        another command is refused (:func:`differences`)."""
        manifest = json.loads(json.dumps(manifest))  # as it reads back: lists, not tuples
        kept = folder / MANIFEST
        if not kept.is_file():
            return cls(folder, manifest)
        earlier = json.loads(kept.read_text())
        problems = differences(earlier, manifest)
        if problems:
            lines = [f"--out {folder}: holds a compare cut short that this command would not continue:", *problems]
            lines.append(f"expected the same command to continue it, or another --out (or delete {kept.name})")
            raise ValueError("\n".join(lines))
        partial = folder / PARTIAL
        rows = pd.read_csv(partial).to_dict("records") if partial.is_file() else []
        return cls(folder, manifest, rows)

    @property
    def done(self) -> set[str]:
        """The labels of the runs finished (their live rows written)."""
        return {str(row["planner"]) for row in self.rows if row.get("world") == "live"}

    def start(self) -> None:
        """Say what the compare is before its first run, so that a cut short one can go on."""
        atomic_write_text(self.folder / MANIFEST, json.dumps(self.manifest, indent=1) + "\n")

    def record(self, rows: list[dict[str, Any]]) -> None:
        """A finished run's rows, kept at once."""
        self.rows += rows
        table = pd.DataFrame(self.rows)
        atomic_write(self.folder / PARTIAL, lambda tmp: table.to_csv(tmp, index=False))

    def finish(self) -> pd.DataFrame:
        """Every run is done: ``compare_app.csv`` written, the partial files removed."""
        table = pd.DataFrame(self.rows)
        atomic_write(self.folder / FINISHED, lambda tmp: table.to_csv(tmp, index=False))
        (self.folder / PARTIAL).unlink(missing_ok=True)
        (self.folder / MANIFEST).unlink(missing_ok=True)
        return table


def differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One line per field whose value differs between two manifests, naming both values."""
    return [
        f"  {key}: {now.get(key)!r} where the compare cut short has {earlier.get(key)!r}"
        for key in sorted(set(earlier) | set(now))
        if earlier.get(key) != now.get(key)
    ]


__all__ = ["FINISHED", "MANIFEST", "PARTIAL", "Progress", "differences", "scenario_digest"]

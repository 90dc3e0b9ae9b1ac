"""How well a fit reproduces its own fit set's runs: the figure that picks a session's fit.

``fit-growth`` fits a scenario from one session's held runs, and a shared VM's sessions differ:
on the example app two sessions' fit sets, fitted alike, put 236 and 195 of 360 held-out stage
mean-wait cells within 10 %, and one fit over both sets 211, no better than their mean
(docs/sim_to_real.md, "A stage's own pool"). So a user records fit sets in several sessions and
keeps one fit. Which one? Not the last, nor a pool of all: the fit that best reproduces its own
fit set, each run simulated at its own speed (``resimulate --live-speed``; a held run's pools
are its planner's), so that the machine's speed of the moment is taken out and what is left is
the model's. Over four sessions' fits of like speeds the share of their own runs' stage waits
(each stage's mean and p95 wait) within 10 % ranked them exactly as eighteen held-out sets did:
0.58, 0.50, 0.42, 0.37 against 236, 217, 195, 108 held-out cells (rule K, written before two of
the four were fitted). Only among sessions of like speeds: a fifth fit set from a session at
1.25 of the calibration's speed (the others 0.81-1.03) read 0.55 and came fourth on those sets,
and on two fresh sets at its own speed tied the first (22 of 40 cells each): a fit's laws are
its session's, so compare the shares of fits whose session's ``speed`` lies near the speed the
runs to be predicted meet (docs/sim_to_real.md, "Each fit judged on its own runs"). The
figure is read once, when the fit is made, and written into the scenario's header, so that fits
made in different sessions are compared by reading their files (``head -2``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adaptflow._io import atomic_write_text

OWN_SEEDS = 8
"""Seeds a run of the own-runs judgement (as ``sim_to_real.sh``'s judgements): with fewer, a
stage's p95 wait on one 180-s run is one draw of the model too."""
HEADER = "# own runs: "
"""The start of the header line that carries :func:`OwnRuns.line` in a fitted scenario."""
_LINE = re.compile(
    r"(?P<stage_agrees>\d+) of (?P<stage_cells>\d+) stage waits \(mean, p95\) within 10 % \([0-9.na]+"
    r"(?:, an exact model about (?P<stage_attainable>\d+))?\), (?P<planner_agrees>\d+) of (?P<planner_cells>\d+) "
    r"planner cells .* over the fit set's (?P<runs>\d+) runs each at its own speed "
    r"\(the session's: (?P<speed>[0-9.e+-]+)\)"
)
"""What :meth:`OwnRuns.line` writes, read back (:func:`read_header`): the one format, kept beside its writer."""
NEAR_TIE = 0.05
"""A runner-up whose share is this close to the kept fit's is named as a near tie by
:func:`keep_lines`: on the example app the share chose rightly between the law and no law where
they stood 0.10 and 0.17 apart, and at 0.03 (two cells of sixty) kept the fit that held four
held-out stage cells fewer (docs/sim_to_real.md, "The own-runs choice ... a third fit set")."""


@dataclass(frozen=True)
class OwnRuns:
    """The fitted scenario against the fit set's own runs, each at its own speed, counted as
    :func:`~adaptflow.experiments.compare_app.agreement_counts` counts a held-out set's cells:
    a cell is a planner's figure over its runs in one folder (``compare-app --repeat``'s ``LABEL#k``
    pooled, their mean), so a fit set of three sizes run twice on two sequences has 6 cells a
    figure, not 12."""

    runs: int  # the fit set's runs judged
    stage_agrees: int  # stage waits (each stage's mean and p95 wait) within 10 %
    stage_cells: int  # stage waits measured
    stage_attainable: float  # how many an exact model would agree on (NaN without the seeds' rows)
    planner_agrees: int  # the planners' mean wait and p95 latency within 10 %
    planner_cells: int
    speed: float = 1.0  # the fitted host's speed, the session's (--session-speed): the share compares among like ones

    @property
    def share(self) -> float:
        """The stage waits within 10 %, of those measured: the figure fits are ranked by."""
        return self.stage_agrees / self.stage_cells if self.stage_cells else math.nan

    def line(self) -> str:
        exact = "" if math.isnan(self.stage_attainable) else f", an exact model about {self.stage_attainable:.0f}"
        return (
            f"{self.stage_agrees} of {self.stage_cells} stage waits (mean, p95) within 10 % ({self.share:.2f}{exact}), "
            f"{self.planner_agrees} of {self.planner_cells} planner cells (mean wait, p95 latency), each cell a "
            f"planner's runs in one folder, over the fit set's "
            f"{self.runs} runs each at its own speed (the session's: {self.speed:g})"
        )


def report_lines(own: OwnRuns | str | None) -> list[str]:
    """The report's lines: the counts and what to do with them, or why there are none."""
    if own is None:
        return []
    if isinstance(own, str):
        return [f"own runs: not judged ({own})"]
    return [
        f"own runs: {own.line()}",
        "  of fits made in several sessions whose speed (hosts.H.speed) lies near the speed of the runs to predict, "
        "keep the one whose share is highest (docs/deploy.md, step 3)",
    ]


def note_in_header(out: str | Path, own: OwnRuns) -> None:
    """:meth:`OwnRuns.line` written into the header of the scenario at ``out`` (as its second
    line, any earlier one of it replaced); the scenario itself untouched."""
    out = Path(out)
    lines = out.read_text().splitlines(keepends=True)
    header = [lines[0]] if lines and lines[0].startswith("#") else []
    rest = [line for line in lines[len(header) :] if not line.startswith(HEADER)]
    atomic_write_text(out, "".join([*header, f"{HEADER}{own.line()}\n", *rest]))


def read_header(path: str | Path) -> OwnRuns:
    """The own-runs count ``fit-growth`` wrote into the header of the fitted scenario at ``path``
    (:func:`note_in_header`); a ValueError naming the file where there is none to read."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file; expected a scenario fit-growth wrote")
    header = [line for line in path.read_text().splitlines()[:2] if line.startswith(HEADER)]
    if not header:
        raise ValueError(
            f"{path}: no '{HEADER.strip()}' line as its second header line; expected a scenario fit-growth wrote "
            "without --no-own-runs (a fit made before the line existed: fit it again)"
        )
    found = _LINE.fullmatch(header[0][len(HEADER) :])
    if found is None:
        raise ValueError(
            f"{path}: its '{HEADER.strip()}' line is not in the form fit-growth writes now (an older one counted "
            "each run, not each planner's runs in a folder); expected '... N of M stage waits (mean, p95) within "
            "10 % ...': fit it again"
        )
    counts = {k: int(v) for k, v in found.groupdict().items() if k not in ("speed", "stage_attainable")}
    exact = found["stage_attainable"]
    return OwnRuns(**counts, stage_attainable=float(exact) if exact else math.nan, speed=float(found["speed"]))


def keep(fits: Sequence[OwnRuns]) -> int:
    """The index of the fit to keep: the highest share of its own runs' stage waits, ties to the
    first given (name the default first: ``fit-growth``'s own law before ``--cpu-law none``).
    Why this figure: it ranked four sessions' fits of like speeds as eighteen held-out sets did,
    and the law against no law as held-out sets did on two of a VM's three fit sets; on the third,
    two cells of sixty apart, the fit it kept held four held-out stage cells fewer and as many
    planner cells (docs/sim_to_real.md, "Each fit judged on its own runs", "The own-runs choice
    between the law and no law, a third fit set"): a near tie is one to judge on held-out runs."""
    return max(range(len(fits)), key=lambda i: _ranked(fits[i]))  # max keeps the first of equals


def _ranked(fit: OwnRuns) -> float:
    """A fit's share as :func:`keep` ranks it: one with no stage waits measured (NaN) below any."""
    return -math.inf if math.isnan(fit.share) else fit.share


def keep_lines(paths: Sequence[str | Path]) -> list[str]:
    """``adaptflow keep-fit``: each fit's own-runs count and session speed, which to keep, and
    whether the runner-up stands too near to trust the choice. Every file is read before any line
    is made, each problem on a line. The speeds are printed, not judged: a fit's laws are its
    session's (a fit from a session at 1.25 ranked second by its share on sets at 0.81-1.03, and
    fourth held out), but two fits of one fit set read different speeds too (no Celery CPU law
    reads the machine slower), so which fits are "of like speeds" is the user's to say."""
    fits, problems = [], []
    for path in paths:
        try:
            fits.append(read_header(path))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("\n".join(problems))
    lines = [
        f"{path}: {fit.stage_agrees} of {fit.stage_cells} stage waits ({fit.share:.2f}), {fit.planner_agrees} of "
        f"{fit.planner_cells} planner cells, session speed {fit.speed:g}"
        for path, fit in zip(paths, fits, strict=True)
    ]
    kept = keep(fits)
    runner_up = max((_ranked(fit) for i, fit in enumerate(fits) if i != kept), default=-math.inf)
    if fits[kept].share - runner_up < NEAR_TIE:
        lines.append(
            f"a near tie ({fits[kept].share:.2f} against {runner_up:.2f}): a share this close has kept the worse "
            "fit held out; judge both on held-out runs at the loads you will run (docs/deploy.md, step 3)"
        )
    lines.append(f"keep {paths[kept]} (the highest share; ties go to the one named first)")
    return lines


__all__ = [
    "HEADER", "NEAR_TIE", "OWN_SEEDS", "OwnRuns", "keep", "keep_lines", "note_in_header", "read_header", "report_lines",
]  # fmt: skip

"""Submit uploads to the ETL app at a rate profile, reproducibly::

    python -m examples.etl_app.produce --rate 4 --duration 120 --seed 7
    python -m examples.etl_app.produce --rates examples/etl_app/rates_example.csv --duration 300 --seed 7
    python -m examples.etl_app.produce --rate 4 --duration 10 --seed 7 --dry-run   # the schedule only

Arrivals are Poisson at the profile's rate (exact: piece by piece of a piecewise-constant rate).
The same seed gives the same arrival times for the same profile, and upload ``i`` the same
content whatever the profile (its randomness is its own stream, keyed by ``i``): two live runs
under different planners can replay exactly the same work.

A rates file is a CSV with columns ``timestamp`` (seconds from the start) and ``rate``
(uploads/s), each rate holding until the next row's time (the last until the end): the layout
of an adaptflow series file (``kind: rate``, ``value_column: rate``), so one file can drive a
scenario and the live producer alike.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = "uploads"


@dataclass(frozen=True)
class RateProfile:
    """A piecewise-constant rate: ``rates[i]`` uploads/s from ``starts[i]`` seconds to the next
    start (0 before the first)."""

    starts: tuple[float, ...]
    rates: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.starts or len(self.starts) != len(self.rates):
            raise ValueError(f"a rate profile needs as many starts as rates (>= 1); got {self}")
        if any(b <= a for a, b in zip(self.starts, self.starts[1:], strict=False)) or self.starts[0] < 0:
            raise ValueError(f"rate profile starts {list(self.starts)}; expected increasing seconds >= 0")
        if any(not math.isfinite(r) or r < 0 for r in self.rates):
            raise ValueError(f"rate profile rates {list(self.rates)}; expected finite uploads/s >= 0")

    @classmethod
    def constant(cls, rate: float) -> RateProfile:
        return cls((0.0,), (float(rate),))

    @classmethod
    def from_csv(cls, path: str | Path, time_column: str = "timestamp", value_column: str = "rate") -> RateProfile:
        """A profile from a CSV of ``time_column`` (seconds) and ``value_column`` (uploads/s)."""
        with Path(path).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or time_column not in rows[0] or value_column not in rows[0]:
            found = list(rows[0]) if rows else []
            raise ValueError(
                f"rates file {str(path)!r}: expected columns {time_column!r}, {value_column!r}; got {found}"
            )
        try:
            return cls(tuple(float(r[time_column]) for r in rows), tuple(float(r[value_column]) for r in rows))
        except ValueError as exc:
            raise ValueError(f"rates file {str(path)!r}: {exc}") from None

    def segments(self, duration: float) -> list[tuple[float, float, float]]:
        """``(start, end, rate)`` pieces covering ``[0, duration)``."""
        ends = [*self.starts[1:], math.inf]
        return [(s, min(e, duration), r) for s, e, r in zip(self.starts, ends, self.rates, strict=True) if s < duration]


@dataclass(frozen=True)
class Mix:
    """What the uploads look like: rows drawn uniformly in ``rows``; a share ``dirty_items`` of
    uploads has a bad-line share drawn in ``dirty`` (these go through repair), the others in
    ``clean`` (below the app's 5 % threshold, their few bad lines are dropped)."""

    rows: tuple[int, int] = (200, 2000)
    dirty_items: float = 0.3
    clean: tuple[float, float] = (0.0, 0.03)
    dirty: tuple[float, float] = (0.10, 0.30)


DEFAULT_MIX = Mix()


@dataclass(frozen=True)
class Upload:
    """One arrival: when (seconds from the start) and the parse task's payload."""

    at: float
    payload: dict[str, Any]


def arrival_times(profile: RateProfile, duration: float, seed: int) -> list[float]:
    """Poisson arrival times in ``[0, duration)`` at ``profile``'s rate."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    times: list[float] = []
    for start, end, rate in profile.segments(duration):
        count = int(rng.poisson(rate * (end - start)))
        times.extend(np.sort(rng.uniform(start, end, size=count)).tolist())
    return times


def payload(index: int, seed: int, mix: Mix = DEFAULT_MIX, source: str = SOURCE) -> dict[str, Any]:
    """Upload ``index``'s payload: its own random stream (keyed by ``seed`` and ``index``)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))
    rows = int(rng.integers(mix.rows[0], mix.rows[1] + 1))
    low, high = mix.dirty if rng.random() < mix.dirty_items else mix.clean
    dirty = round(float(rng.uniform(low, high)), 4)
    return {"item": f"{source}-{index:06d}", "seed": int(rng.integers(2**62)), "rows": rows, "dirty": dirty}


def schedule(
    profile: RateProfile, duration: float, seed: int, mix: Mix = DEFAULT_MIX, source: str = SOURCE
) -> list[Upload]:
    """Every upload of a run: its arrival time and payload."""
    return [Upload(t, payload(i, seed, mix, source)) for i, t in enumerate(arrival_times(profile, duration, seed))]


def produce(
    app: Any,
    uploads: list[Upload],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Send each upload to ``etl.parse`` at its time (late ones at once); the task ids (each the
    ``root_id`` of its item's visits). ``submitted`` (wall seconds) is added to the payload."""
    parse = app.tasks["etl.parse"]
    start, ids = clock(), []
    for upload in uploads:
        delay = start + upload.at - clock()
        if delay > 0:
            sleep(delay)
        ids.append(parse.apply_async((upload.payload | {"submitted": time.time()},)).id)
    return ids


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.etl_app.produce", description=__doc__.split("\n")[0])
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--rate", type=float, help="a constant rate (uploads/s)")
    load.add_argument("--rates", type=Path, help="a CSV of timestamp,rate (piecewise constant)")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, nargs=2, default=Mix.rows, metavar=("MIN", "MAX"))
    parser.add_argument("--dirty-items", type=float, default=Mix.dirty_items, help="share of uploads to repair")
    parser.add_argument("--source", default=SOURCE, help="the item names' prefix")
    parser.add_argument("--broker", default=None, help="default: $ETL_BROKER_URL or redis://127.0.0.1:6379/0")
    parser.add_argument("--dry-run", action="store_true", help="print the schedule as CSV; send nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    try:
        profile = RateProfile.constant(args.rate) if args.rates is None else RateProfile.from_csv(args.rates)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"produce: {exc}") from None
    if args.rows[0] < 2 or args.rows[0] > args.rows[1]:
        raise SystemExit(f"--rows is {args.rows}; expected MIN <= MAX, MIN >= 2")
    uploads = schedule(profile, args.duration, args.seed, Mix(tuple(args.rows), args.dirty_items), args.source)
    if args.dry_run:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["at", "item", "seed", "rows", "dirty"])
        for u in uploads:
            writer.writerow([f"{u.at:.6f}", *(u.payload[k] for k in ("item", "seed", "rows", "dirty"))])
        return
    from .app import make_app

    ids = produce(make_app(args.broker), uploads)
    print(f"sent {len(ids)} uploads in {args.duration:g} s (seed {args.seed})", file=sys.stderr)


if __name__ == "__main__":
    main()

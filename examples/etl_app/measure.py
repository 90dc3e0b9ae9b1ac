"""Service times of the ETL app's stages on this machine, without a broker::

    python -m examples.etl_app.measure --items 300 --seed 0 [--rows 4000 8000]

Each stage's function runs on the documents of ``--items`` uploads of the producer's mix (the
same payloads a run with that seed sends), timed with ``perf_counter``; ``+codec`` adds what a
worker also spends on the message itself (decoding the incoming JSON, encoding the outgoing).
A worker's wall time per task is a little more again (Celery's own bookkeeping, the broker's
round trips): compare with the ``runtime`` of the live ``task-succeeded`` events.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable

from . import steps
from .produce import DEFAULT_MIX, Mix, payload

STAGES = ("parse", "validate", "repair", "aggregate", "write")


def _timed(step: Callable[[steps.Doc], steps.Doc], doc: steps.Doc) -> tuple[steps.Doc, float, float]:
    """The step's output, its own time, and its time with the message codec (seconds)."""
    message = json.dumps(doc)
    begin = time.perf_counter()
    incoming = json.loads(message)
    start = time.perf_counter()
    out = step(incoming)
    end = time.perf_counter()
    json.dumps(out)
    return out, end - start, time.perf_counter() - begin


def measure(
    items: int, seed: int, threshold: float = steps.QUALITY_THRESHOLD, mix: Mix = DEFAULT_MIX
) -> dict[str, list[tuple[float, float]]]:
    """Per stage, ``(own, with codec)`` seconds of each visit of ``items`` uploads of ``mix``."""
    times: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as directory:
        chain: dict[str, Callable[[steps.Doc], steps.Doc]] = {
            "parse": steps.parse_step,
            "validate": lambda d: steps.validate_step(d, threshold),
            "repair": steps.repair_step,
            "aggregate": steps.aggregate_step,
            "write": lambda d: {"path": str(steps.write_step(d, directory))},
        }
        for index in range(items):
            doc = payload(index, seed, mix)
            for stage in STAGES:
                if stage == "repair" and not doc["needs_repair"]:
                    continue
                doc, own, whole = _timed(chain[stage], doc)
                times[stage].append((own, whole))
    return dict(times)


def summary(values: list[float]) -> dict[str, float]:
    """Mean and percentiles in milliseconds, and the coefficient of variation."""
    mean = statistics.fmean(values)
    cuts = statistics.quantiles(values, n=20) if len(values) > 1 else [values[0]] * 19
    cv = statistics.stdev(values) / mean if len(values) > 1 and mean > 0 else 0.0
    return {"n": len(values), "mean_ms": 1e3 * mean, "cv": cv, "p50_ms": 1e3 * cuts[9], "p95_ms": 1e3 * cuts[18]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.etl_app.measure", description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rows", type=int, nargs=2, default=Mix.rows, metavar=("MIN", "MAX"),
        help="rows per upload, as the producer's --rows (default %(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rows[0] < 2 or args.rows[0] > args.rows[1]:
        parser.error(f"--rows is {args.rows}; expected MIN <= MAX, MIN >= 2")
    times = measure(args.items, args.seed, mix=Mix(tuple(args.rows)))
    print(f"{'stage':<10} {'n':>5} {'mean ms':>9} {'cv':>6} {'p50 ms':>8} {'p95 ms':>8}   +codec: mean ms, cv")
    for stage in STAGES:
        own = summary([t[0] for t in times.get(stage, [])]) if stage in times else None
        if own is None:
            continue
        whole = summary([t[1] for t in times[stage]])
        print(
            f"{stage:<10} {own['n']:>5} {own['mean_ms']:>9.2f} {own['cv']:>6.2f} {own['p50_ms']:>8.2f} "
            f"{own['p95_ms']:>8.2f}   {whole['mean_ms']:>9.2f} {whole['cv']:>6.2f}"
        )


if __name__ == "__main__":
    main()

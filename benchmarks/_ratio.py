"""What the simulator benchmarks share: run adaptflow and its reference alternately, keep the
best rate of each (the machine is shared; the best run is the least disturbed one), and print
one JSON line of the ratio."""

from __future__ import annotations

import json
from collections.abc import Callable

Run = Callable[[int, int], tuple[int, float]]
"""``(items, seed) -> (items simulated, wall seconds)``."""


def best_ratio(name: str, ours: Run, reference: Run, items: int, repeat: int, target: float) -> dict[str, float]:
    """Alternate ``ours`` and ``reference`` ``repeat`` times (seed = repetition), print and
    return the JSON record: each one's best items/s, their ratio and the target ratio."""
    best_ours = best_ref = 0.0
    for rep in range(repeat):
        n, t = ours(items, rep)
        best_ours = max(best_ours, n / t)
        n, t = reference(items, rep)
        best_ref = max(best_ref, n / t)
    result = {
        "benchmark": name,
        "items": items,
        "adaptflow_items_per_s": round(best_ours),
        "simpy_items_per_s": round(best_ref),
        "ratio": round(best_ours / best_ref, 3),
        "target_ratio": target,
    }
    print(json.dumps(result))
    return result

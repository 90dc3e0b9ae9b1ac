"""The shop owner's producer (not adaptflow's): ``N`` orders at Poisson times of a rate, the same
times and the same work for the same seed, so two runs under different planners replay the
same arrivals::

    python -m tests.apps.shop_produce --orders 30 --rate 3 --seed 7 --work 0.02 0.4 0.02
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def arrival_times(orders: int, rate: float, seed: int) -> list[float]:
    """Seconds from the start of each order: cumulative exponential gaps at ``rate``."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=orders)
    return np.cumsum(gaps).tolist()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.apps.shop_produce")
    parser.add_argument("--orders", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="orders per second")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=float, nargs=3, default=(0.02, 0.1, 0.02), help="seconds per stage")
    args = parser.parse_args(argv)
    if args.orders < 0 or not args.rate > 0:
        raise SystemExit(f"--orders {args.orders}, --rate {args.rate}: expected orders >= 0 and a rate > 0")
    from .shop import ingest  # the broker comes from SHOP_BROKER_URL, as the app's owner set it

    start = time.monotonic()
    for k, at in enumerate(arrival_times(args.orders, args.rate, args.seed)):
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ingest.apply_async(({"id": k, "work": list(args.work)},))
    print(f"sent {args.orders} orders (seed {args.seed})", file=sys.stderr)


if __name__ == "__main__":
    main()

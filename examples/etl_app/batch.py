"""The uploads: a batch of CSV order records generated deterministically from a seed, with a
share of its lines corrupted the way real exports go wrong. An item's message carries only
``seed``, ``rows`` and ``dirty``; the parse task regenerates the text (as it would download the
upload), so a replayed arrival is the very same work.

The generator also returns the truth (each line's intended record and how it was corrupted), so
that a test can compute what the pipeline must output without running the pipeline's code:
clean lines always count; lines of a :data:`FIXABLE` kind count only when the batch was repaired;
every other corruption, and every duplicate, never counts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

HEADER = ("order_id", "ts", "region", "product", "quantity", "unit_price")
REGIONS = ("north", "south", "east", "west", "central")
PRODUCTS = tuple(f"sku-{i:03d}" for i in range(40))
EPOCH = datetime(2024, 1, 1)

CLEAN = "clean"
FIXABLE = ("decimal_comma", "padded_region", "float_quantity")
"""Corruptions the repair task undoes (the line's true record is recovered)."""
UNFIXABLE = ("missing_field", "garbage_quantity", "out_of_range", "bad_timestamp", "duplicate")
"""Corruptions no step can undo: the line is dropped (a duplicate repeats the line before it)."""
KINDS = FIXABLE + UNFIXABLE


@dataclass(frozen=True)
class Record:
    """One order as it was meant to be written."""

    order_id: int
    ts: str
    region: str
    product: str
    quantity: int
    price_cents: int


@dataclass(frozen=True)
class Batch:
    """An upload: its CSV text, and per data line its true record and its kind (``clean`` or
    one of :data:`KINDS`)."""

    text: str
    records: tuple[Record, ...]
    kinds: tuple[str, ...]

    def bad_share(self) -> float:
        """The share of corrupted lines: what the validate step must measure."""
        return sum(kind != CLEAN for kind in self.kinds) / len(self.kinds)


def generate(seed: int, rows: int, dirty: float) -> Batch:
    """``rows`` order lines (``rows`` >= 2) from ``seed``, ``round(dirty * (rows - 1))`` of them
    corrupted (never the first, which a duplicate could not copy), each by a kind drawn
    uniformly from :data:`KINDS`."""
    if rows < 2:
        raise ValueError(f"rows is {rows}; expected at least 2")
    if not 0 <= dirty <= 1:
        raise ValueError(f"dirty is {dirty}; expected a share in [0, 1]")
    rng = np.random.default_rng(seed)
    records = _records(rng, rows)
    n_bad = round(dirty * (rows - 1))
    where = rng.choice(np.arange(1, rows), size=n_bad, replace=False)
    kinds = [CLEAN] * rows
    for position, kind in zip(where.tolist(), rng.integers(len(KINDS), size=n_bad).tolist(), strict=True):
        kinds[position] = KINDS[kind]
    lines: list[list[str]] = []
    for position, (record, kind) in enumerate(zip(records, kinds, strict=True)):
        lines.append(list(lines[-1]) if kind == "duplicate" else corrupt(_fields(record), kind, position))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(lines)
    return Batch(out.getvalue(), tuple(records), tuple(kinds))


def _records(rng: np.random.Generator, rows: int) -> list[Record]:
    """The intended orders: unique ids, times within one day, a skewed product mix."""
    first_id = int(rng.integers(10**6, 10**7)) * 10**6
    start = EPOCH + timedelta(seconds=int(rng.integers(0, 364 * 86400)))
    offsets = np.sort(rng.integers(0, 86400, size=rows))
    weights = 1.0 / np.arange(1, len(PRODUCTS) + 1)
    products = rng.choice(len(PRODUCTS), size=rows, p=weights / weights.sum())
    regions = rng.integers(len(REGIONS), size=rows)
    quantities = rng.integers(1, 51, size=rows)
    prices = rng.integers(50, 50_001, size=rows)
    return [
        Record(
            first_id + i,
            (start + timedelta(seconds=int(offsets[i]))).isoformat(),
            REGIONS[regions[i]],
            PRODUCTS[products[i]],
            int(quantities[i]),
            int(prices[i]),
        )
        for i in range(rows)
    ]


def _fields(record: Record) -> list[str]:
    cents = record.price_cents
    return [
        str(record.order_id),
        record.ts,
        record.region,
        record.product,
        str(record.quantity),
        f"{cents // 100}.{cents % 100:02d}",
    ]


def corrupt(fields: list[str], kind: str, position: int) -> list[str]:
    """The CSV fields of a line as a ``kind`` corruption writes them."""
    fields = list(fields)
    if kind == "decimal_comma":
        fields[5] = fields[5].replace(".", ",")
    elif kind == "padded_region":
        fields[2] = f"  {fields[2].upper()} "
    elif kind == "float_quantity":
        fields[4] = f"{fields[4]}.0"
    elif kind == "missing_field":
        fields = fields[:-1]
    elif kind == "garbage_quantity":
        fields[4] = "n/a"
    elif kind == "out_of_range":
        if position % 2:
            fields[4] = f"-{fields[4]}"
        else:
            fields[5] = "99999.99"
    elif kind == "bad_timestamp":
        fields[1] = fields[1][:5] + "13" + fields[1][7:]
    elif kind != CLEAN:  # a duplicate copies the line before it: generate() writes it
        expected = [CLEAN, *(k for k in KINDS if k != "duplicate")]
        raise ValueError(f"corruption kind {kind!r} is not a field corruption; expected one of {expected}")
    return fields

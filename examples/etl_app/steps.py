"""The work of each stage, as plain functions on the item's document (a JSON-able dict that
travels in the task messages): the Celery tasks call them, and so do ``measure.py`` and the
tests, without a broker.

A document starts as the upload's description (``item``, ``seed``, ``rows``, ``dirty``) and
gains, stage by stage: ``good``/``bad`` lines (parse), ``quality`` and the ``valid`` rows
(validate), ``repair`` counts (repair), ``result`` (aggregate); write stores the rows and the
rest. A typed row is ``[line, order_id, ts, region, product, quantity, price_cents]``; a bad
line is ``[line, fields, reason]``.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import re
import statistics
import tempfile
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .batch import HEADER, PRODUCTS, REGIONS, generate

Doc = dict[str, Any]
Row = list[Any]

QUALITY_THRESHOLD = 0.05
"""A batch whose share of bad lines (malformed, out of range or duplicate) is above this goes
through repair; at or below it, its bad lines are simply dropped."""
QUANTITY_RANGE = (1, 1000)
PRICE_RANGE = (1, 1_000_000)  # cents
OUTLIER_FACTOR = 10.0
"""A unit price this many times its product's median is reported as suspicious (not dropped)."""

_PRICE = re.compile(r"-?\d+\.\d{2}")
_WHOLE = re.compile(r"(\d+)\.0+")
_PRODUCTS, _REGIONS = frozenset(PRODUCTS), frozenset(REGIONS)


# -- parse -------------------------------------------------------------------------------------
def strict(fields: list[str]) -> list[Any]:
    """The typed values of one CSV line, or ValueError naming the first field that is wrong."""
    if len(fields) != len(HEADER):
        raise ValueError(f"{len(fields)} fields; expected {len(HEADER)}")
    try:
        order_id = int(fields[0])
    except ValueError:
        raise ValueError(f"order_id {fields[0]!r} is not an integer") from None
    try:
        datetime.fromisoformat(fields[1])
    except ValueError:
        raise ValueError(f"ts {fields[1]!r} is not an ISO date-time") from None
    try:
        quantity = int(fields[4])
    except ValueError:
        raise ValueError(f"quantity {fields[4]!r} is not an integer") from None
    if not _PRICE.fullmatch(fields[5]):
        raise ValueError(f"unit_price {fields[5]!r} is not a decimal with two places")
    return [order_id, fields[1], fields[2], fields[3], quantity, int(Decimal(fields[5]) * 100)]


def parse_csv(text: str) -> tuple[list[Row], list[Row]]:
    """The lines of an upload: typed rows, and the lines that do not parse with the reason."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != HEADER:
        raise ValueError(f"upload header is {header}; expected {list(HEADER)}")
    good: list[Row] = []
    bad: list[Row] = []
    for line, fields in enumerate(reader, start=1):
        try:
            good.append([line, *strict(fields)])
        except ValueError as exc:
            bad.append([line, fields, str(exc)])
    return good, bad


def parse_step(doc: Doc) -> Doc:
    """Fetch the upload (regenerated from its seed) and parse it."""
    good, bad = parse_csv(generate(int(doc["seed"]), int(doc["rows"]), float(doc["dirty"])).text)
    return {**doc, "good": good, "bad": bad}


# -- validate ----------------------------------------------------------------------------------
def domain_problem(row: Row) -> str | None:
    """Why a typed row is out of the domain (unknown region or product, quantity or price out of
    range), or None."""
    _, _, _, region, product, quantity, cents = row
    if region not in _REGIONS:
        return f"region {region!r} is not one of {sorted(_REGIONS)}"
    if product not in _PRODUCTS:
        return f"product {product!r} is not in the catalogue"
    if not QUANTITY_RANGE[0] <= quantity <= QUANTITY_RANGE[1]:
        return f"quantity {quantity} is outside {list(QUANTITY_RANGE)}"
    if not PRICE_RANGE[0] <= cents <= PRICE_RANGE[1]:
        return f"price {cents} cents is outside {list(PRICE_RANGE)}"
    return None


def _fields_of(row: Row) -> list[str]:
    """A typed row back as CSV fields (for repair to work on)."""
    _, order_id, ts, region, product, quantity, cents = row
    sign, cents = ("-" if cents < 0 else ""), abs(cents)
    return [str(order_id), ts, region, product, str(quantity), f"{sign}{cents // 100}.{cents % 100:02d}"]


def suspicious_prices(rows: list[Row]) -> int:
    """Rows whose unit price is :data:`OUTLIER_FACTOR` times their product's median or more."""
    prices: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        prices[row[4]].append(row[6])
    medians = {product: statistics.median(values) for product, values in prices.items()}
    return sum(row[6] >= OUTLIER_FACTOR * medians[row[4]] for row in rows)


def validate_step(doc: Doc, threshold: float = QUALITY_THRESHOLD) -> Doc:
    """Check every parsed row's domain and drop duplicate orders; measure the batch's quality.
    ``needs_repair`` when its bad share is above ``threshold``: the bad lines then travel on to
    repair, else they are dropped here."""
    valid: list[Row] = []
    bad: list[Row] = list(doc["bad"])
    seen: set[int] = set()
    duplicates = invalid = 0
    for row in doc["good"]:
        problem = domain_problem(row)
        if problem is not None:
            bad.append([row[0], _fields_of(row), problem])
            invalid += 1
        elif row[1] in seen:
            duplicates += 1
        else:
            seen.add(row[1])
            valid.append(row)
    lines = len(doc["good"]) + len(doc["bad"])
    share = (len(bad) + duplicates) / lines
    quality = {"lines": lines, "malformed": len(doc["bad"]), "invalid": invalid, "duplicates": duplicates}
    quality |= {"bad_share": share, "suspicious_prices": suspicious_prices(valid)}
    needs_repair = share > threshold
    out = {k: v for k, v in doc.items() if k not in ("good", "bad")}
    out |= {"valid": valid, "quality": quality, "needs_repair": needs_repair}
    if needs_repair:
        out["bad"] = sorted(bad, key=lambda entry: entry[0])
    return out


# -- repair ------------------------------------------------------------------------------------
def lenient(fields: list[str]) -> list[Any] | None:
    """A bad line's typed values after the usual clean-ups (whitespace, upper-case region,
    decimal comma, a whole quantity written as a float), or None if it is beyond repair."""
    if len(fields) != len(HEADER):
        return None
    cleaned = [field.strip() for field in fields]
    cleaned[2] = cleaned[2].lower()
    whole = _WHOLE.fullmatch(cleaned[4])
    if whole:
        cleaned[4] = whole.group(1)
    cleaned[5] = cleaned[5].replace(",", ".")
    try:
        return strict(cleaned)
    except ValueError:
        return None


def repair_step(doc: Doc) -> Doc:
    """Recover what the clean-ups can from the bad lines (in line order, so the first of
    duplicate orders wins, as in validate); drop the rest."""
    valid = list(doc["valid"])
    seen = {row[1] for row in valid}
    recovered = dropped = 0
    for line, fields, _reason in doc["bad"]:
        values = lenient(fields)
        row = None if values is None else [line, *values]
        if row is None or domain_problem(row) is not None or row[1] in seen:
            dropped += 1
            continue
        seen.add(row[1])
        valid.append(row)
        recovered += 1
    valid.sort(key=lambda row: row[0])
    out = {k: v for k, v in doc.items() if k != "bad"}
    return out | {"valid": valid, "repair": {"recovered": recovered, "dropped": dropped}}


# -- aggregate ---------------------------------------------------------------------------------
def aggregate_rows(rows: list[Row]) -> dict[str, Any]:
    """Orders, units, revenue and the highest unit price per (region, product); per region the
    same totals and the deciles of order value; revenue per hour of the day."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    values: dict[str, list[int]] = defaultdict(list)
    hours = [0] * 24
    for _, _, ts, region, product, quantity, cents in rows:
        group = groups[(region, product)]
        group[0] += 1
        group[1] += quantity
        group[2] += quantity * cents
        group[3] = max(group[3], cents)
        values[region].append(quantity * cents)
        hours[int(ts[11:13])] += quantity * cents
    table = [
        {"region": r, "product": p, "orders": g[0], "units": g[1], "revenue_cents": g[2], "max_unit_cents": g[3]}
        for (r, p), g in sorted(groups.items())
    ]
    regions = {
        region: {
            "orders": len(vals),
            "revenue_cents": sum(vals),
            "order_value_deciles": statistics.quantiles(vals, n=10) if len(vals) > 1 else [],
        }
        for region, vals in sorted(values.items())
    }
    return {"groups": table, "regions": regions, "revenue_by_hour": hours, "orders": len(rows)}


def aggregate_step(doc: Doc) -> Doc:
    """The item's aggregate (the clean rows travel on, for write to store)."""
    return doc | {"result": aggregate_rows(doc["valid"])}


# -- write -------------------------------------------------------------------------------------
def output_path(directory: str | Path, item: str) -> Path:
    """The item's summary (JSON, gzip); its clean rows are beside it (:func:`rows_path`)."""
    return Path(directory) / f"{item}.json.gz"


def rows_path(directory: str | Path, item: str) -> Path:
    return Path(directory) / f"{item}.csv.gz"


def compress(data: bytes) -> bytes:
    """gzip with no time stamp in its header: the same item always writes the same bytes, so a
    visit run twice (a redelivered message) writes the same files twice."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def encode(doc: Doc) -> bytes:
    """A summary document, compressed."""
    return compress(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def clean_csv(rows: list[Row]) -> bytes:
    """The clean rows as CSV (the upload's columns), compressed."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(_fields_of(row) for row in rows)
    return compress(out.getvalue().encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the whole file or none: a temporary file
    in the same directory, flushed to disk, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_step(doc: Doc, directory: str | Path) -> Path:
    """Store the item: its clean rows (``<item>.csv.gz``), then its summary
    (``<item>.json.gz``), each atomically; a summary on disk means both files are complete."""
    item = str(doc["item"])
    write_atomic(rows_path(directory, item), clean_csv(doc["valid"]))
    summary = {k: v for k, v in doc.items() if k not in ("valid", "needs_repair")}
    path = output_path(directory, item)
    write_atomic(path, encode(summary))
    return path


def read_output(path: str | Path) -> Doc:
    """An output file's document."""
    return json.loads(gzip.decompress(Path(path).read_bytes()))

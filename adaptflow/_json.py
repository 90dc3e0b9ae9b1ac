"""JSON for results and event logs, shared by every room (it depends on nothing of theirs)."""

from __future__ import annotations

import math
from typing import Any

EXIT_KEY = "null"  # a split's exit branch (the target None) as a JSON object's key


def to_jsonable(value: Any) -> Any:
    """NaN (an empty window's percentile) is not JSON: it becomes null; so does a ``None`` key
    (a split's exit branch), as the string "null" (:data:`EXIT_KEY`)."""
    if isinstance(value, dict):
        return {(EXIT_KEY if k is None else k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def split_from_json(shares: dict[str, Any]) -> dict[str | None, Any]:
    """A split's shares read back from JSON: the :data:`EXIT_KEY` branch is the exit again."""
    return {(None if k == EXIT_KEY else k): p for k, p in shares.items()}

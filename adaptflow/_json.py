"""JSON for results and event logs, shared by every room (it depends on nothing of theirs)."""

from __future__ import annotations

import math
from typing import Any


def to_jsonable(value: Any) -> Any:
    """NaN (an empty window's percentile) is not JSON: it becomes null; so does a ``None`` key
    (a split's exit branch), as the string "null"."""
    if isinstance(value, dict):
        return {("null" if k is None else k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

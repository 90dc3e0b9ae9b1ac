"""What counts as a measured figure in the fits: a finite positive number.

A stage with too few backlogged gaps, a cell an older ``compare-app`` did not write, or a
simulation in which a stage served nothing reads ``nan``, ``0`` or ``None``; every fit leaves
those out the same way, so that a run reading nothing at one stage still counts at the others.
"""

from __future__ import annotations

import math
from typing import TypeGuard


def positive(value: float | None) -> TypeGuard[float]:
    """Whether ``value`` is a measured figure: a number, finite and above 0."""
    return value is not None and math.isfinite(value) and value > 0

"""The scenario room's common ground: the strict base model, the number types and the error.

Why so strict: a typo in a scenario (``capacty:``) that silently falls back to a default makes
a week of experiments meaningless. Every model forbids unknown keys, and every error names the
field, the value and what was expected (see :func:`adaptflow.scenario.loading.format_validation_error`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
"""Stage and source names end up in dotted metric keys (``stages.<name>.mean_wait``): no dots."""


class ScenarioError(ValueError):
    """A scenario that cannot be simulated; the message lists every problem, one per line."""


class _Strict(BaseModel):
    # strict: a number is a number (`mean: "9.0"` and `seed: true` are typos, not 9.0 and 1).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]

"""Routing: where an item goes after a source or a stage.

null                         -> the item leaves the system
"stage"                      -> one next stage
[{to: a, p: .7}, {to: b, p: .3}]   or {split: [...], controllable: true}  -> a random split
{attribute: flagged, routes: {true: quarantine, false: load}}           -> by item attribute
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .base import Name, Probability, _Strict


class Exit(_Strict):
    kind: Literal["exit"] = "exit"


class Direct(_Strict):
    kind: Literal["direct"] = "direct"
    to: Name


class Branch(_Strict):
    to: Name | None
    p: Probability


class Split(_Strict):
    """A probabilistic split. ``controllable`` marks it as one a planner may change at run time."""

    kind: Literal["split"] = "split"
    split: list[Branch] = Field(min_length=1)
    controllable: bool = False

    @model_validator(mode="after")
    def _check(self) -> Split:
        total = sum(b.p for b in self.split)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"split probabilities sum to {total:g}; expected 1")
        targets = [b.to for b in self.split]
        if len(set(targets)) != len(targets):
            raise ValueError(f"split names a target twice: {targets}")
        return self


ATTRIBUTE_VALUES: dict[str, tuple[str, ...] | None] = {
    "quality": ("good", "bad"),
    "flagged": ("true", "false"),
    "source": None,  # the scenario's source names
}


class ByAttribute(_Strict):
    """Route on an item attribute: ``quality`` (good/bad, the truth), ``flagged`` (true/false, what
    a validation stage detected) or ``source`` (the source's name). Every value must be routed."""

    kind: Literal["attribute"] = "attribute"
    attribute: Literal["quality", "flagged", "source"]
    routes: dict[str, Name | None]

    @field_validator("routes", mode="before")
    @classmethod
    def _keys_to_str(cls, value: Any) -> Any:
        # YAML reads `true:` as a boolean key; the attribute value is the lower-case string.
        if isinstance(value, dict):
            return {(str(k).lower() if isinstance(k, bool) else k): v for k, v in value.items()}
        return value


def _route_shorthand(value: Any) -> Any:
    if value is None:
        return {"kind": "exit"}
    if isinstance(value, str):
        return {"kind": "direct", "to": value}
    if isinstance(value, list):
        return {"kind": "split", "split": value}
    if isinstance(value, dict) and "kind" not in value:
        if "split" in value:
            return {"kind": "split", **value}
        if "attribute" in value:
            return {"kind": "attribute", **value}
        raise ValueError(
            f"expected null, a stage name, a list of {{to, p}} branches, {{split: [...]}} or "
            f"{{attribute: ..., routes: ...}}; got {value!r}"
        )
    return value


Route = Annotated[
    Exit | Direct | Split | ByAttribute,
    Field(discriminator="kind"),
    BeforeValidator(_route_shorthand),
]


def route_targets(route: Exit | Direct | Split | ByAttribute) -> list[str | None]:
    """Every place a route can send an item (``None`` is the exit)."""
    if isinstance(route, Exit):
        return [None]
    if isinstance(route, Direct):
        return [route.to]
    if isinstance(route, Split):
        return [b.to for b in route.split]
    return list(route.routes.values())

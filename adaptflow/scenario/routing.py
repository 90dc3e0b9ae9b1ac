"""Routing: where an item goes after a source or a stage.

null                         -> the item leaves the system
"stage"                      -> one next stage
[{to: a, p: .7}, {to: b, p: .3}]   or {split: [...], controllable: true}  -> a random split
{attribute: flagged, routes: {true: quarantine, false: load}}           -> by item attribute

Why the routes own their behaviour (as Ciw's ``Probabilistic.next_node``): the SimPy model, the
live Celery task, the staffing rules and the schema's graph checks all ask a route the same three
questions, so each route answers them itself, once:

* :meth:`choose` ``(item, draw, splits)``: where this item goes (a stage name, or ``None`` for
  the exit). ``draw`` gives a uniform in [0, 1) and is called once by a split, never by the other
  routes; ``splits`` holds the current probabilities of a controllable split, overriding the
  scenario's.
* :meth:`expected_branches` ``(splits)``: ``(target, expected share)`` pairs, the routing row of
  the traffic equations a staffing rule solves.
* :meth:`targets`: every place the route can send an item, for the graph checks.

A meaning written twice drifts apart: before routes owned it, dispatch was written four times
(simulator, live task, staffing, schema), and the copies had begun to differ in how a split's
round-off and its branch order were handled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .base import Name, Probability, _Strict

Target = str | None
"""Where a route sends an item: a stage's name, or ``None`` for the exit."""
Draw = Callable[[], float]
"""A source of uniforms in [0, 1): the simulator's routing stream, or the live task's generator."""
SplitProbs = Mapping[Target, float]
"""Current probabilities of a controllable split, by target (a planner's or the executor's)."""


class Routable(Protocol):
    """What a route may look at on an item: the simulator's ``Item`` and the live task's item
    both have these three attributes."""

    bad: bool  # the truth about quality
    flagged: bool  # what a validation stage concluded
    source: str  # the name of the source that created it


class Exit(_Strict):
    """The item leaves the system."""

    kind: Literal["exit"] = "exit"

    def choose(self, item: Routable | None, draw: Draw | None = None, splits: SplitProbs | None = None) -> Target:
        return None

    def expected_branches(self, splits: SplitProbs | None = None) -> list[tuple[Target, float]]:
        return [(None, 1.0)]

    def targets(self) -> list[Target]:
        return [None]


class Direct(_Strict):
    """Every item goes to one stage."""

    kind: Literal["direct"] = "direct"
    to: Name

    def choose(self, item: Routable | None, draw: Draw | None = None, splits: SplitProbs | None = None) -> Target:
        return self.to

    def expected_branches(self, splits: SplitProbs | None = None) -> list[tuple[Target, float]]:
        return [(self.to, 1.0)]

    def targets(self) -> list[Target]:
        return [self.to]


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
            raise ValueError(f"split probabilities sum to {total:.12g}; expected 1 (within 1e-9)")
        targets = [b.to for b in self.split]
        if len(set(targets)) != len(targets):
            raise ValueError(f"split names a target twice: {targets}")
        return self

    def probabilities(self, splits: SplitProbs | None = None) -> list[float]:
        """The branches' probabilities in declared order: ``splits`` (every target) where given,
        else the scenario's."""
        if splits is None:
            return [b.p for b in self.split]
        return [float(splits[b.to]) for b in self.split]

    def edges(self, splits: SplitProbs | None = None) -> list[float]:
        """Cumulative probabilities in declared order, the last one 1 exactly: a uniform below
        ``edges[k]`` (and not below an earlier edge) picks branch ``k``, so the last branch takes
        whatever round-off leaves. A caller that routes many items may keep these and call
        :meth:`pick`; :meth:`choose` computes them per call."""
        edges, edge = [], 0.0
        for p in self.probabilities(splits):
            edge += p
            edges.append(edge)
        edges[-1] = 1.0
        return edges

    def pick(self, u: float, edges: list[float]) -> Target:
        """The branch a uniform ``u`` picks, given :meth:`edges`."""
        for branch, edge in zip(self.split, edges, strict=True):
            if u < edge:
                return branch.to
        return self.split[-1].to

    def choose(self, item: Routable | None, draw: Draw, splits: SplitProbs | None = None) -> Target:
        """One uniform from ``draw`` picks a branch: the one whose cumulative share it is under."""
        return self.pick(draw(), self.edges(splits))

    def expected_branches(self, splits: SplitProbs | None = None) -> list[tuple[Target, float]]:
        return [(b.to, p) for b, p in zip(self.split, self.probabilities(splits), strict=True)]

    def targets(self) -> list[Target]:
        return [b.to for b in self.split]


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

    def choose(self, item: Routable, draw: Draw | None = None, splits: SplitProbs | None = None) -> Target:
        """The route of the item's attribute value; no uniform is drawn."""
        attribute = self.attribute
        if attribute == "quality":
            return self.routes["bad" if item.bad else "good"]
        if attribute == "flagged":
            return self.routes["true" if item.flagged else "false"]
        return self.routes[item.source]

    def expected_branches(self, splits: SplitProbs | None = None) -> list[tuple[Target, float]]:
        """The common case, for the traffic equations: items are good and unflagged, and each
        source is equally likely (the staffing rules do not know the sources' shares here)."""
        if self.attribute == "quality":
            return [(self.routes["good"], 1.0)]
        if self.attribute == "flagged":
            return [(self.routes["false"], 1.0)]
        return [(target, 1.0 / len(self.routes)) for target in self.routes.values()]

    def targets(self) -> list[Target]:
        return list(self.routes.values())


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

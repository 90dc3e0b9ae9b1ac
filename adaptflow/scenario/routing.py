"""Routing: where an item goes after a source or a stage.

null                         -> the item leaves the system
"stage"                      -> one next stage
[{to: a, p: .7}, {to: b, p: .3}]   or {split: [...], controllable: true}  -> a random split
{attribute: flagged, routes: {true: quarantine, false: load}}           -> by item attribute
{fork: [a, b], join: merge}                 -> one part per branch; the parts meet at ``merge``
{scatter: a, parts: 4, join: merge}         -> N parts to one stage (N fixed or drawn), meeting at ``merge``

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

A fan-out (:class:`Fork`, :class:`Scatter`) does not choose one target: it answers
:meth:`~Fork.part_targets` ``(draw)``, the targets of the parts it makes, and names its ``join``, the
stage where they meet (``None``: they meet at the exit). The join waits for every part of an
item and then serves the item once (a Celery chord: the header's tasks, then the body).

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


JOIN_AT_EXIT = "exit"
"""The name metrics and observations give the join of parts that meet at the exit (``join: null``)."""

MAX_PARTS = 10_000
"""Most parts one fan-out may make: bounds the work a scenario asks for per item."""


class _FanOut(_Strict):
    """What a fork and a scatter share: the join, and their rows of the traffic equations."""

    join: Name | None

    def expected_parts(self) -> float:  # pragma: no cover - each fan-out says
        raise NotImplementedError

    def expected_branches(self, splits: SplitProbs | None = None) -> list[tuple[Target, float]]:
        """Each part's first stage, and the join with ``1 - k`` for ``k`` expected parts.

        Why the negative row: every part's path ends at the join, so the traffic equations see
        ``k`` arrivals there per item, of which the join serves one (the item, once all parts
        are in). ``1 - k`` from the fan-out's owner cancels the other ``k - 1`` exactly, so
        ``v = e + v P`` stays linear and gives the join one visit per item."""
        rows = self._first_stages()
        if self.join is not None:
            rows.append((self.join, 1.0 - self.expected_parts()))
        return rows

    def _first_stages(self) -> list[tuple[Target, float]]:  # pragma: no cover - each fan-out says
        raise NotImplementedError

    def choose(self, item: Routable | None, draw: Draw | None = None, splits: SplitProbs | None = None) -> Target:
        raise TypeError(f"a {self.kind} sends an item to several stages at once; ask part_targets(draw), not choose()")


class Fork(_FanOut):
    """One part per branch, all at once; they meet at ``join``."""

    kind: Literal["fork"] = "fork"
    fork: list[Name] = Field(min_length=2, max_length=MAX_PARTS)

    def part_targets(self, draw: Draw | None = None) -> list[Target]:
        """The first stage of each part: the branches, in declared order (no uniform drawn)."""
        return list(self.fork)

    def expected_parts(self) -> float:
        return float(len(self.fork))

    def max_parts(self) -> int:
        return len(self.fork)

    def branches(self) -> list[str]:
        """The distinct first stages of the parts."""
        return list(dict.fromkeys(self.fork))

    def _first_stages(self) -> list[tuple[Target, float]]:
        return [(branch, 1.0) for branch in self.fork]

    def targets(self) -> list[Target]:
        return [*dict.fromkeys(self.fork), self.join]


class PartCount(_Strict):
    """How many parts a scatter makes: uniform integers in ``[low, high]``, or one of ``samples``
    with equal chance (an empirical fan-out, e.g. from a recorded workflow)."""

    low: int | None = Field(default=None, ge=1, le=MAX_PARTS)
    high: int | None = Field(default=None, ge=1, le=MAX_PARTS)
    samples: list[Annotated[int, Field(ge=1, le=MAX_PARTS)]] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PartCount:
        if self.samples is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either samples or low and high; got both")
        elif self.low is None or self.high is None:
            raise ValueError("expected low and high (uniform integers) or samples: [...]")
        elif self.low > self.high:
            raise ValueError(f"low is {self.low} and high is {self.high}; expected low <= high")
        return self

    def draw(self, draw: Draw) -> int:
        """One count from one uniform."""
        if self.samples is not None:
            return self.samples[min(int(draw() * len(self.samples)), len(self.samples) - 1)]
        span = self.high - self.low + 1  # type: ignore[operator]
        return self.low + min(int(draw() * span), span - 1)  # type: ignore[operator]

    def mean(self) -> float:
        if self.samples is not None:
            return sum(self.samples) / len(self.samples)
        return (self.low + self.high) / 2  # type: ignore[operator]

    def most(self) -> int:
        return max(self.samples) if self.samples is not None else self.high  # type: ignore[return-value]


class Scatter(_FanOut):
    """``parts`` parts (fixed, or drawn per item from the routing stream) to one stage."""

    kind: Literal["scatter"] = "scatter"
    scatter: Name
    parts: Annotated[int, Field(ge=1, le=MAX_PARTS)] | PartCount

    def parts_of(self, draw: Draw | None) -> int:
        """How many parts this item makes."""
        if isinstance(self.parts, int):
            return self.parts
        return self.parts.draw(draw)  # type: ignore[arg-type]

    def part_targets(self, draw: Draw | None = None) -> list[Target]:
        """The first stage of each part: ``scatter``, once per part (one uniform drawn when the
        count is random, none when fixed)."""
        return [self.scatter] * self.parts_of(draw)

    def expected_parts(self) -> float:
        return float(self.parts) if isinstance(self.parts, int) else self.parts.mean()

    def max_parts(self) -> int:
        """The most parts one item can make (what bounds a run's work)."""
        return self.parts if isinstance(self.parts, int) else self.parts.most()

    def branches(self) -> list[str]:
        """The distinct first stages of the parts."""
        return [self.scatter]

    def _first_stages(self) -> list[tuple[Target, float]]:
        return [(self.scatter, self.expected_parts())]

    def targets(self) -> list[Target]:
        return [self.scatter, self.join]


FAN_OUTS = (Fork, Scatter)


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
        if "fork" in value:
            return {"kind": "fork", **value}
        if "scatter" in value:
            return {"kind": "scatter", **value}
        raise ValueError(
            f"expected null, a stage name, a list of {{to, p}} branches, {{split: [...]}}, "
            f"{{attribute: ..., routes: ...}}, {{fork: [...], join: ...}} or {{scatter: ..., parts: N, join: ...}}; "
            f"got {value!r}"
        )
    return value


Route = Annotated[
    Exit | Direct | Split | ByAttribute | Fork | Scatter,
    Field(discriminator="kind"),
    BeforeValidator(_route_shorthand),
]

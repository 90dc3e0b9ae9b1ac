"""An out-of-distribution guard for a learned planner: when the load, the forecast error or the
observation leave the range seen in training, a rule decides instead, until they are back.

A policy network answers for any input, also for states it never met in training, and there its
answer means nothing (a load three times the trained peak, an analyzer whose forecasts miss by
more than they ever did, a queue no training episode built). :class:`TrainingRange` is what
training saw, as plain JSON data: a trained model's sidecar and an export's ``planner.json``
carry it. :class:`GuardedPlanner` checks every decision against it and hands the decision to a
fallback rule while any of the three is out of range (a *takeover*), and back to the learned
planner once all three have been in range for a few decisions in a row (a *hand-back*).

The three checks, each on what a deployment sees at a decision:

* ``load``: per source, the arrival rate observed in the interval that just ended (items/s);
* ``forecast_error``: per source, the absolute error of the analyzer's one-step forecast made at
  the previous decision against the rate then observed (items/s);
* ``observation``: each feature of the encoded observation, as the policy sees it before
  normalization.

Ranges are running minima and maxima (bounded memory, whatever the length of training). A value
is in range within a tolerance of ``margin`` times the range's magnitude (its width, or the
largest absolute value seen, whichever is larger; for a forecast error, at least the source's
peak load): a narrow range of a large value, such as a constant load, then tolerates noise in
proportion to its size, while a feature that training only ever saw at zero tolerates nothing.

This module needs numpy and the agents' data only: the deployed ONNX planner's service uses it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptflow.agents.encoding import ObservationEncoder
from adaptflow.agents.interfaces import Planner
from adaptflow.agents.types import Insights, MetricsSnapshot, Plan

log = logging.getLogger(__name__)

RANGE_FORMAT = "adaptflow-training-range/1"
REASONS = ("load", "forecast_error", "observation")
"""Why the guard takes over, in the order it checks: a bounded set (a metric label)."""

TAKEOVER, HANDBACK = "guard_takeover", "guard_handback"
"""The ``event`` of the records a guard hands its listeners (and the live run writes to its event log)."""

DEFAULT_MARGIN = 0.2
DEFAULT_HAND_BACK_AFTER = 3


@dataclass
class Span:
    """The running minimum and maximum of one quantity, and how many values it has seen."""

    low: float = math.inf
    high: float = -math.inf
    samples: int = 0

    def add(self, value: float) -> None:
        if math.isfinite(value):
            self.low, self.high, self.samples = min(self.low, value), max(self.high, value), self.samples + 1

    def merge(self, other: Span) -> None:
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        self.samples += other.samples

    def slack(self, margin: float, floor: float = 0.0) -> float:
        """The tolerance beyond either end: ``margin`` times the span's magnitude (or ``floor``)."""
        return margin * max(self.high - self.low, abs(self.low), abs(self.high), floor)

    def to_dict(self) -> dict[str, Any]:
        empty = self.samples == 0  # strict JSON has no infinity
        return {"low": None if empty else self.low, "high": None if empty else self.high, "samples": self.samples}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Span:
        samples = int(data["samples"])
        if samples == 0:
            return cls()
        low, high = float(data["low"]), float(data["high"])
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"training range {where}: low {low} and high {high}; expected finite numbers, low <= high")
        return cls(low, high, samples)


class ForecastTracker:
    """Per decision, what the load and forecast checks compare: each source's arrival rate over
    the interval that just ended, and the absolute error of the one-step forecast made at the
    previous decision for that interval. Forecasts made before the analyzer has seen any interval
    (its prior, at the first decision of a run) are not scored: training would otherwise record
    the whole load as an error at every episode start, and the range would mean nothing."""

    def __init__(self) -> None:
        self.previous: dict[str, float] = {}

    def reset(self) -> None:
        self.previous = {}

    def step(self, snapshot: MetricsSnapshot, insights: Insights) -> tuple[dict[str, float], dict[str, float]]:
        """(rates, errors) of this decision, both by source; empty at a run's first decision."""
        rates: dict[str, float] = {}
        errors: dict[str, float] = {}
        if snapshot.interval <= 0:
            self.previous = {}
            return rates, errors
        for source, count in snapshot.source_arrivals.items():
            rates[source] = count / snapshot.interval
            if source in self.previous:
                errors[source] = abs(rates[source] - self.previous[source])
        self.previous = {s: float(f[0]) for s, f in insights.forecasts.items() if f and math.isfinite(f[0])}
        return rates, errors


class TrainingRange:
    """What training saw: per observation feature, per source's load and forecast error, the
    lowest and highest value. Grows with :meth:`add_observations` and :meth:`add_decision` (or
    :meth:`merge`), checks with :meth:`problems`, travels as :meth:`to_dict` / :meth:`from_dict`."""

    def __init__(
        self,
        features: Sequence[str],
        low: Any = None,
        high: Any = None,
        samples: int = 0,
        load: dict[str, Span] | None = None,
        forecast_error: dict[str, Span] | None = None,
    ):
        self.features = list(features)
        n = len(self.features)
        self.low = np.full(n, np.inf) if low is None else np.asarray(low, dtype=np.float64)
        self.high = np.full(n, -np.inf) if high is None else np.asarray(high, dtype=np.float64)
        if self.low.shape != (n,) or self.high.shape != (n,):
            raise ValueError(
                f"training range: {len(self.low)} lows and {len(self.high)} highs for {n} observation features"
            )
        self.samples = samples
        self.load = load if load is not None else {}
        self.forecast_error = forecast_error if forecast_error is not None else {}

    @classmethod
    def for_encoder(cls, encoder: ObservationEncoder) -> TrainingRange:
        """An empty range for the observations ``encoder`` makes."""
        return cls([f.name for f in encoder.features])

    # -- recording -------------------------------------------------------------------------
    def add_observations(self, observations: np.ndarray) -> None:
        """Widen the observation range by a batch (or one) of raw encoded observations."""
        batch = np.asarray(observations, dtype=np.float64).reshape(-1, len(self.features))
        if len(batch):
            np.minimum(self.low, batch.min(axis=0), out=self.low)
            np.maximum(self.high, batch.max(axis=0), out=self.high)
            self.samples += len(batch)

    def add_decision(self, rates: dict[str, float], errors: dict[str, float]) -> None:
        """Widen the load and forecast-error ranges by one decision's (see :class:`ForecastTracker`)."""
        for source, rate in rates.items():
            self.load.setdefault(source, Span()).add(rate)
        for source, error in errors.items():
            self.forecast_error.setdefault(source, Span()).add(error)

    def merge(self, other: TrainingRange) -> None:
        """Widen this range by everything ``other`` saw (same observation features)."""
        if other.features != self.features:
            raise ValueError("training ranges of different observation layouts cannot be merged")
        np.minimum(self.low, other.low, out=self.low)
        np.maximum(self.high, other.high, out=self.high)
        self.samples += other.samples
        for mine, theirs in ((self.load, other.load), (self.forecast_error, other.forecast_error)):
            for source, span in theirs.items():
                mine.setdefault(source, Span()).merge(span)

    # -- checking --------------------------------------------------------------------------
    def problems(
        self,
        rates: dict[str, float],
        errors: dict[str, float],
        observation: np.ndarray | None,
        margin: float = DEFAULT_MARGIN,
    ) -> list[tuple[str, str]]:
        """(reason, detail) for everything out of range, in the order of :data:`REASONS`.
        Sources and checks the range has no samples for are not checked."""
        found: list[tuple[str, str]] = []
        for source, rate in rates.items():
            span = self.load.get(source)
            if span is not None and span.samples and not _inside(rate, span, span.slack(margin)):
                found.append(("load", f"source {source!r} at {rate:.4g}/s; trained {_bounds(span)}/s"))
        for source, error in errors.items():
            span, load = self.forecast_error.get(source), self.load.get(source)
            peak = load.high if load is not None and load.samples else 0.0
            if span is not None and span.samples and error > span.high + span.slack(margin, peak):
                found.append(
                    ("forecast_error", f"source {source!r} forecast off by {error:.4g}/s; trained {_bounds(span)}/s")
                )
        if observation is not None and self.samples:
            found += self._observation_problems(np.asarray(observation, dtype=np.float64), margin)
        return found

    def _observation_problems(self, obs: np.ndarray, margin: float) -> list[tuple[str, str]]:
        slack = margin * np.maximum(self.high - self.low, np.maximum(np.abs(self.low), np.abs(self.high)))
        outside = np.flatnonzero((obs < self.low - slack) | (obs > self.high + slack))
        if not len(outside):
            return []
        k = int(outside[0])
        more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
        detail = f"feature {self.features[k]!r} at {obs[k]:.4g}; trained {self.low[k]:.4g} to {self.high[k]:.4g}{more}"
        return [("observation", detail)]

    def check_layout(self, encoder: ObservationEncoder) -> None:
        """Refuse a range recorded for another observation layout than ``encoder``'s."""
        names = [f.name for f in encoder.features]
        if names != self.features:
            raise ValueError(f"training range observation features {self.features} do not match the encoder's {names}")

    # -- data ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        seen = self.samples > 0
        return {
            "format": RANGE_FORMAT,
            "observation": {
                "features": list(self.features),
                "low": self.low.tolist() if seen else None,
                "high": self.high.tolist() if seen else None,
                "samples": self.samples,
            },
            "load": {s: span.to_dict() for s, span in self.load.items()},
            "forecast_error": {s: span.to_dict() for s, span in self.forecast_error.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRange:
        if not isinstance(data, dict) or data.get("format") != RANGE_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a training range: format {found!r}; expected {RANGE_FORMAT!r}")
        obs = data["observation"]
        samples = int(obs["samples"])
        low, high = (obs["low"], obs["high"]) if samples else (None, None)
        if samples and not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError("training range observation: lows and highs must be finite numbers")
        return cls(
            obs["features"],
            low,
            high,
            samples,
            {s: Span.from_dict(v, f"load[{s!r}]") for s, v in data["load"].items()},
            {s: Span.from_dict(v, f"forecast_error[{s!r}]") for s, v in data["forecast_error"].items()},
        )


def _inside(value: float, span: Span, slack: float) -> bool:
    return span.low - slack <= value <= span.high + slack


def _bounds(span: Span) -> str:
    return f"{span.low:.4g} to {span.high:.4g}"


Listener = Callable[[dict[str, Any]], None]


class GuardedPlanner(Planner):
    """``primary`` while the load, forecast error and observation are in ``training_range``,
    else ``fallback``: a takeover on the first decision out of range; a hand-back on the
    ``hand_back_after``-th consecutive decision back in range (hysteresis: a load hovering at the
    edge does not flip the planner every decision). Deterministic.

    The fallback plans on every decision, so that a stateful rule is warm when it takes over. The
    primary does not plan while the fallback holds the decisions (its answers there mean nothing,
    and a recurrent policy's memory would fill with them); it is :meth:`reset` when handed back.

    ``takeovers`` counts takeovers over the planner's life (an evaluation subtracts); ``last_reason``
    says why the latest one happened; ``active`` whether the fallback made the last plan, and
    ``reason`` why.
    Listeners (:meth:`add_listener`) get a record per takeover and hand-back. Invalid plans and
    exceptions are not this class's business: wrap it in
    :class:`~adaptflow.runtime.fallback.FallbackPlanner` for those."""

    def __init__(
        self,
        primary: Planner,
        fallback: Planner,
        training_range: TrainingRange,
        encoder: ObservationEncoder | None = None,
        margin: float = DEFAULT_MARGIN,
        hand_back_after: int = DEFAULT_HAND_BACK_AFTER,
    ):
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"guard margin: {margin!r}; expected a finite number >= 0")
        if hand_back_after < 1:
            raise ValueError(f"guard hand_back_after: {hand_back_after!r}; expected at least 1 decision")
        self.primary, self.fallback, self.training_range = primary, fallback, training_range
        self.encoder = encoder if encoder is not None else getattr(primary, "encoder", None)
        if self.encoder is not None and training_range.samples:
            training_range.check_layout(self.encoder)
        self.margin, self.hand_back_after = margin, hand_back_after
        self.tracker = ForecastTracker()
        self.listeners: list[Listener] = []
        self.decisions = 0
        self.takeovers = 0
        self.guarded_decisions = 0  # decisions the fallback made
        self.last_reason: str | None = None  # why the latest takeover happened
        self.reason: str | None = None  # why the last plan was the fallback's (None: the primary's)
        self.active = False
        self.calm = 0  # consecutive in-range decisions while active

    # What whoever runs the planner reads from a learned one: the analyzer it was trained with.
    @property
    def analyzer_options(self) -> dict[str, Any]:
        return getattr(self.primary, "analyzer_options", {})

    @property
    def analyzer_state(self) -> dict[str, Any] | None:
        return getattr(self.primary, "analyzer_state", None)

    @property
    def relies_on_clamping(self) -> bool:  # type: ignore[override]  (the last plan's author decides)
        return (self.fallback if self.active else self.primary).relies_on_clamping

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self.listeners.remove(listener)

    def reset(self) -> None:
        """A new episode or run: the learned planner decides again; counts are kept."""
        self.primary.reset()
        self.fallback.reset()
        self.tracker.reset()
        self.active, self.calm, self.reason = False, 0, None

    def out_of_range(self, snapshot: MetricsSnapshot, insights: Insights) -> list[tuple[str, str]]:
        """What of this decision is outside the training range (and remember its forecasts)."""
        rates, errors = self.tracker.step(snapshot, insights)
        observation = self.encoder.encode(snapshot, insights) if self.encoder is not None else None
        return self.training_range.problems(rates, errors, observation, self.margin)

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        self.decisions += 1
        backup = self.fallback.plan(snapshot, insights)
        problems = self.out_of_range(snapshot, insights)
        if problems:
            self.calm = 0
            self.reason = "; ".join(f"{reason}: {detail}" for reason, detail in problems)
            if not self.active:
                self._take_over(snapshot, problems[0][0])
        elif self.active:
            self.calm += 1
            self.reason = f"back in the training range for {self.calm} of {self.hand_back_after} decisions"
            if self.calm >= self.hand_back_after:
                self._hand_back(snapshot)
        if self.active:
            self.guarded_decisions += 1
            return backup
        self.reason = None
        return self.primary.plan(snapshot, insights)

    def _take_over(self, snapshot: MetricsSnapshot, reason: str) -> None:
        self.active, self.takeovers, self.last_reason = True, self.takeovers + 1, self.reason
        log.warning("out of the training range (%s); %s decides", self.reason, type(self.fallback).__name__)
        self._tell(TAKEOVER, snapshot, reason=reason, detail=self.reason, takeovers=self.takeovers)

    def _hand_back(self, snapshot: MetricsSnapshot) -> None:
        self.active, self.calm = False, 0
        self.primary.reset()
        back = type(self.primary).__name__
        log.info("back in the training range for %d decisions; %s decides", self.hand_back_after, back)
        self._tell(HANDBACK, snapshot, after=self.hand_back_after)

    def _tell(self, event: str, snapshot: MetricsSnapshot, **fields: Any) -> None:
        record = {"event": event, "time": snapshot.time, "decision": self.decisions, **fields}
        for listener in list(self.listeners):
            listener(record)

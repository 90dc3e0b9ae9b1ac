"""The one ObservationEncoder and ActionDecoder. What a policy sees and how its action becomes a
Plan are identical in the env, the evaluation harness, the exported ONNX planner and the planner
service: all use these classes, built from the same saved layout (``to_dict``/``from_dict``).

Observation: for each feature, ``clip(raw / scale, low, high)`` where ``raw`` is a named quantity
of the snapshot, the insights or the clock. The list of features, with their scales and clips,
is the layout: data that is saved next to every trained or exported model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from adaptflow.scenario import Scenario
from adaptflow.scenario.routing import JOIN_AT_EXIT

from .types import Insights, MetricsSnapshot, Plan


@dataclass(frozen=True)
class Feature:
    name: str  # "<kind>:<key>[:<index>]", see ObservationEncoder.raw
    scale: float
    low: float
    high: float


def _join_parts(scenario: Scenario) -> dict[str, float]:
    """Each join's expected parts per item (the largest fan-out joining there)."""
    parts: dict[str, float] = {}
    for route in scenario.fan_outs().values():
        name = JOIN_AT_EXIT if route.join is None else route.join
        parts[name] = max(parts.get(name, 0.0), route.expected_parts())
    return parts


def has_calendar_week(scenario: Scenario) -> bool:
    """Whether the load is a recorded series, whose calendar has weekdays worth observing."""
    return any(source.process == "series" for source in scenario.sources.values())


def reference_rate_of(scenario: Scenario) -> float:
    """A scale for arrival rates: the peak rate summed over sources (for a trace, twice its mean)."""
    total = 0.0
    for source in scenario.sources.values():
        if source.process == "poisson":
            total += source.rate.peak()
        elif source.process == "mmpp":
            total += max(source.rates)
        elif source.process == "series":
            total += source.peak_bound()
        else:
            from adaptflow.scenario.schema import load_trace

            times, _ = load_trace(source.file, source.time_column, source.size_column)
            total += 2 * len(times) / max(float(times[-1]), 1.0)
    return total


def load_period(scenario: Scenario) -> float:
    """The load cycle for time-of-day features when the snapshot has no calendar: a series'
    simulated day, a periodic rate profile's period, else the horizon."""
    for source in scenario.sources.values():
        if source.process == "series":
            return float(source.day_length)
        period = getattr(getattr(source, "rate", None), "period", None)
        if period:
            return float(period)
    return float(scenario.horizon)


# What each feature kind reads, as an expression over the snapshot ``s`` and the insights ``i``
# ({key}: the part of the feature's name after the kind, {index}: the forecast step), and whether
# it may be NaN (a mean over an interval in which nothing happened).
RAW: dict[str, tuple[str, bool]] = {
    "queue": ("s.stages[{key}].queue_length", False),
    "wait": ("s.stages[{key}].mean_wait", True),
    "util": ("s.stages[{key}].utilization", True),
    "target": ("s.stages[{key}].target", False),
    "active": ("s.stages[{key}].active", False),
    "starting": ("s.stages[{key}].starting", False),
    "stage_rate": ("i.stage_rates[{key}]", False),
    "rate": ("i.rates[{key}]", False),
    "forecast": ("i.forecasts[{key}][{index}]", False),
    "split": ("list(s.splits[{key}].values())[-1]", False),
    "bad_rate": ("i.bad_rate", True),
    "drift": ("float(i.drift)", False),
    "sla_violations": ("(s.sla_violations / s.completed if s.completed else 0.0)", False),
    "join": ("s.join_waiting[{key}]", False),  # parts waiting at a join
    "backlog": ("s.class_backlog[{key}]", False),  # items of a job class in the system
    # Time of day and of week: from the workload's own calendar when the snapshot has one (a
    # series' clock, wherever the episode's window starts), else from the load cycle's period.
    "time_sin": ("sin(2 * pi * (s.calendar / 86400.0 if s.calendar == s.calendar else s.time / period))", False),
    "time_cos": ("cos(2 * pi * (s.calendar / 86400.0 if s.calendar == s.calendar else s.time / period))", False),
    "week_sin": ("sin(2 * pi * (s.calendar / 604800.0 if s.calendar == s.calendar else s.time / (7 * period)))", False),
    "week_cos": ("cos(2 * pi * (s.calendar / 604800.0 if s.calendar == s.calendar else s.time / (7 * period)))", False),
    # Not in the standard layout since v1 (see the env's version history): kept so that models
    # saved with it still encode.
    "progress": ("s.time / horizon", False),
}


class ObservationEncoder:
    def __init__(self, features: list[Feature], period: float, horizon: float):
        self.features = features
        self.period = period
        self.horizon = horizon
        self.size = len(features)
        self.low = np.array([f.low for f in features], dtype=np.float32)
        self.high = np.array([f.high for f in features], dtype=np.float32)
        self._encode = self._compile()

    @classmethod
    def for_scenario(
        cls,
        scenario: Scenario,
        forecast_steps: int = 0,
        splits: bool = True,
        reference_rate: float | None = None,
        week: bool | None = None,
    ) -> ObservationEncoder:
        """The standard layout: per stage queue, wait, utilization, pool state and arrival rate;
        per source the estimated rate and optionally ``forecast_steps`` forecasts; the split
        settings; quality estimates if any stage validates; time of day (and of week, for a recorded
        series). No episode progress: a deployed planner has no episode end, and a policy that
        sees the clock of the episode learns schedules instead of load (see the env docstring).

        ``reference_rate``: the arrival rate that reads as 1 (default: the scenario's peak). A
        planner trained over several workloads fixes it, so that one rate reads the same in all.
        ``week``: whether to observe the time of week (default: when the load is a recorded
        series); a mixture of workloads decides it once for all of them, so one layout fits all."""
        ref_rate = reference_rate_of(scenario) if reference_rate is None else reference_rate
        sla = scenario.sla.latency
        f: list[Feature] = []
        for name, st in scenario.stages.items():
            w = float(st.workers.max)
            capacity = w / st.occupancy()
            f += [
                Feature(f"queue:{name}", w, 0, 10),
                Feature(f"wait:{name}", sla, 0, 10),
                Feature(f"util:{name}", 1, 0, 1),
                Feature(f"target:{name}", w, 0, 1),
                Feature(f"active:{name}", w, 0, 1),
                Feature(f"starting:{name}", w, 0, 1),
                Feature(f"stage_rate:{name}", capacity, 0, 5),
            ]
        for name in scenario.sources:
            f.append(Feature(f"rate:{name}", ref_rate, 0, 5))
            f += [Feature(f"forecast:{name}:{k}", ref_rate, 0, 5) for k in range(forecast_steps)]
        if splits:
            f += [Feature(f"split:{owner}", 1, 0, 1) for owner in scenario.controllable_splits()]
        if any(st.validation for st in scenario.stages.values()):
            f += [Feature("bad_rate:", 1, 0, 1), Feature("drift:", 1, 0, 1)]
        for name, parts in _join_parts(scenario).items():  # scaled by the parts of about 10 items
            f.append(Feature(f"join:{name}", 10 * parts, 0, 5))
        for name in scenario.classes:  # scaled by the items of one SLA window at the reference rate
            f.append(Feature(f"backlog:{name}", max(ref_rate * sla, 1.0), 0, 5))
        f += [
            Feature("sla_violations:", 1, 0, 1),
            Feature("time_sin:", 1, -1, 1),
            Feature("time_cos:", 1, -1, 1),
        ]
        if week is None:
            week = has_calendar_week(scenario)
        if week:
            f += [Feature("week_sin:", 1, -1, 1), Feature("week_cos:", 1, -1, 1)]
        return cls(f, load_period(scenario), scenario.horizon)

    def _compile(self) -> Callable[[MetricsSnapshot, Insights], np.ndarray]:
        """The layout as one straight-line Python function (snapshot, insights) -> vector.

        Why generated code: the encoder runs on every env step, and one function with a line per
        feature costs ~30% less than a loop that calls a getter per feature (2.4 against 3.3 µs
        for mmc's 12 features), with fewer functions to miss in the CPU caches once PPO's torch
        code has run in between. ``dataclasses`` builds its ``__init__`` the same way. Each line
        is ``RAW[kind]`` with the feature's key, times 1/scale, clipped; a NaN (nothing observed
        in the interval) reads as 0. Names and numbers enter the code as constants of its
        namespace, never as text, so any stage name is safe."""
        namespace: dict[str, Any] = {"np": np, "sin": math.sin, "cos": math.cos, "pi": math.pi}
        namespace.update(period=self.period, horizon=self.horizon, float32=np.float32)
        lines = ["def encode(s, i):"]
        for n, f in enumerate(self.features):
            kind, key, *rest = f.name.split(":")
            if kind not in RAW:
                raise ValueError(
                    f"unknown observation feature kind {kind!r} in {f.name!r}; expected one of {sorted(RAW)}"
                )
            expression, may_be_nan = RAW[kind]
            namespace.update({f"key{n}": key, f"k{n}": 1.0 / f.scale, f"lo{n}": f.low, f"hi{n}": f.high})
            namespace[f"index{n}"] = int(rest[0]) if rest else 0
            lines.append(f"    v{n} = {expression.format(key=f'key{n}', index=f'index{n}')}")
            if may_be_nan:
                lines.append(f"    v{n} = 0.0 if v{n} != v{n} else v{n}")
            lines.append(f"    v{n} = v{n} * k{n}")
            lines.append(f"    v{n} = lo{n} if v{n} < lo{n} else hi{n} if v{n} > hi{n} else v{n}")
        lines.append(f"    return np.array([{', '.join(f'v{n}' for n in range(len(self.features)))}], dtype=float32)")
        exec("\n".join(lines), namespace)  # the code is built above from the fixed RAW table
        return namespace["encode"]

    def features_scale(self, prefix: str) -> float:
        """The largest scale among features whose name starts with ``prefix`` (e.g. the
        reference arrival rate of ``"rate:"``)."""
        return max(f.scale for f in self.features if f.name.startswith(prefix))

    def encode(self, snapshot: MetricsSnapshot, insights: Insights) -> np.ndarray:
        return self._encode(snapshot, insights)

    def __getstate__(self) -> dict[str, Any]:
        # The generated function cannot be pickled (it lives in no module); the layout can, and
        # recompiling it gives the same function. SubprocVecEnv and Gymnasium's checks pickle envs.
        state = self.__dict__.copy()
        del state["_encode"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._encode = self._compile()

    def to_dict(self) -> dict[str, Any]:
        return {"features": [asdict(f) for f in self.features], "period": self.period, "horizon": self.horizon}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObservationEncoder:
        return cls([Feature(**f) for f in data["features"]], data["period"], data["horizon"])


class ObservationNormalizer:
    """Running-statistics normalization of observations (SB3's ``VecNormalize``), as data.

    SB3 keeps these statistics in the VecNormalize wrapper, outside the policy network, so a
    saved or exported policy is only half the model: this class carries the other half (mean,
    variance, clip) into the model's sidecar, and applies it exactly as VecNormalize does:
    ``clip((obs - mean) / sqrt(var + epsilon), -clip, clip)``."""

    def __init__(self, mean: Any, var: Any, clip: float = 10.0, epsilon: float = 1e-8):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.var = np.asarray(var, dtype=np.float64)
        if self.mean.shape != self.var.shape or self.mean.ndim != 1:
            raise ValueError(f"normalizer mean {self.mean.shape} and var {self.var.shape} must be equal 1-d shapes")
        self.clip, self.epsilon = float(clip), float(epsilon)
        self._std = np.sqrt(self.var + self.epsilon)  # VecNormalize's arithmetic, its sqrt done once

    @classmethod
    def from_vec_normalize(cls, venv: Any) -> ObservationNormalizer | None:
        """The statistics of a VecNormalize that normalizes observations (None if it does not)."""
        if not getattr(venv, "norm_obs", False):
            return None
        return cls(venv.obs_rms.mean, venv.obs_rms.var, venv.clip_obs, venv.epsilon)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        out = (obs - self.mean) / self._std  # float64, as in VecNormalize, so rounding is identical
        np.minimum(out, self.clip, out=out)  # = np.clip, without its per-call overhead
        np.maximum(out, -self.clip, out=out)
        return out.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "clip": self.clip, "epsilon": self.epsilon}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ObservationNormalizer | None:
        return None if data is None else cls(data["mean"], data["var"], data["clip"], data["epsilon"])


class ActionDecoder:
    """A MultiDiscrete action -> a Plan.

    Workers, ``mode="delta"``: per stage 3 choices, down / hold / up by ``scale_step`` workers
    from the current target. Chosen as default because it is safe (one decision can never swing
    a pool from min to max) and its meaning does not depend on the pool's size.
    Workers, ``mode="level"``: per stage ``worker_levels`` choices spread evenly over [min, max].
    Splits: per controllable two-way split ``split_levels`` choices, the share sent to the second
    (alternate) branch, from 0 to 1."""

    def __init__(
        self,
        stages: dict[str, tuple[int, int]],
        splits: dict[str, list[str | None]],
        mode: str = "delta",
        scale_step: int = 1,
        worker_levels: int = 5,
        split_levels: int = 5,
    ):
        if mode not in ("delta", "level"):
            raise ValueError(f"action mode {mode!r}; expected 'delta' or 'level'")
        for owner, targets in splits.items():
            if len(targets) != 2:
                raise ValueError(f"split {owner!r} has {len(targets)} branches; the env controls two-way splits only")
        if scale_step < 1 or worker_levels < 2 or split_levels < 2:
            raise ValueError("scale_step must be >= 1, worker_levels and split_levels >= 2")
        self.stages, self.splits = stages, splits
        self.mode, self.scale_step = mode, scale_step
        self.worker_levels, self.split_levels = worker_levels, split_levels
        per_stage = 3 if mode == "delta" else worker_levels
        self.nvec = [per_stage] * len(stages) + [split_levels] * len(splits)
        self._stage_bounds = [(name, lo, hi) for name, (lo, hi) in stages.items()]
        self._split_items = list(splits.items())

    @classmethod
    def for_scenario(
        cls, scenario: Scenario, workers: bool = True, splits: bool = True, **kwargs: Any
    ) -> ActionDecoder:
        stages = {n: (s.workers.min, s.workers.max) for n, s in scenario.stages.items()} if workers else {}
        split_targets = (
            {o: [b.to for b in s.split] for o, s in scenario.controllable_splits().items()} if splits else {}
        )
        return cls(stages, split_targets, **kwargs)

    def check(self, action: Any) -> list[int]:
        """The action as a list of ints, or a ValueError that names what is wrong. A scalar is
        accepted where there is one dimension (a ``Discrete`` action space)."""
        # numpy arrays and scalars (SB3 hands each env an np.int64) become Python ints here
        values = action.tolist() if isinstance(action, (np.ndarray, np.generic)) else action
        if not isinstance(values, list):
            values = list(values) if isinstance(values, tuple) else [values]
        if len(values) != len(self.nvec):
            raise ValueError(f"action has {len(values)} entries; expected {len(self.nvec)} (MultiDiscrete {self.nvec})")
        ints = []
        for i, (v, n) in enumerate(zip(values, self.nvec, strict=True)):
            if v.__class__ is not int:
                if not (isinstance(v, (int, float, np.integer)) and float(v).is_integer()):
                    raise ValueError(f"action[{i}] is {v!r}; expected an integer in [0, {n - 1}]")
                v = int(v)
            if not 0 <= v < n:
                raise ValueError(f"action[{i}] is {v!r}; expected an integer in [0, {n - 1}]")
            ints.append(v)
        return ints

    def decode(self, action: Any, current_workers: dict[str, int]) -> Plan:
        a = self.check(action)
        workers = {}
        if self.mode == "delta":
            step = self.scale_step
            for k, (name, lo, hi) in enumerate(self._stage_bounds):
                n = current_workers[name] + (a[k] - 1) * step
                workers[name] = lo if n < lo else hi if n > hi else n
        else:
            top = self.worker_levels - 1
            for k, (name, lo, hi) in enumerate(self._stage_bounds):
                workers[name] = round(lo + a[k] * (hi - lo) / top)
        splits = {}
        offset = len(self._stage_bounds)
        for j, (owner, (first, second)) in enumerate(self._split_items):
            p = a[offset + j] / (self.split_levels - 1)
            splits[owner] = {first: 1.0 - p, second: p}
        return Plan(workers, splits)

    def plan_for(self, action: Any, snapshot: MetricsSnapshot, fixed_workers: dict[str, int] | None = None) -> Plan:
        """What a learned planner answers: the action decoded against the pools' current
        targets, plus the pool sizes its training env held fixed (a split-only policy)."""
        plan = self.decode(action, {name: st.target for name, st in snapshot.stages.items()})
        if fixed_workers:
            plan.workers = {**fixed_workers, **plan.workers}
        return plan

    def action_for(
        self, plan: Plan, current_workers: dict[str, int], current_splits: dict[str, dict[str | None, float]]
    ) -> list[int]:
        """The inverse of :meth:`decode`: the action whose decoding comes closest to ``plan``
        (for imitating a rule-based planner). Stages and splits the plan omits are held."""
        action = []
        for name, (lo, hi) in self.stages.items():
            # A planner may ask beyond the bounds (the executor clamps): clamp the same way.
            target = min(max(plan.workers.get(name, current_workers[name]), lo), hi)
            if self.mode == "delta":
                step = round((target - current_workers[name]) / self.scale_step)
                action.append(1 + max(-1, min(1, step)))
            else:
                action.append(round((target - lo) / max(hi - lo, 1) * (self.worker_levels - 1)))
        for owner, (_, second) in self.splits.items():
            share = min(max(plan.splits.get(owner, current_splits[owner])[second], 0.0), 1.0)
            action.append(round(share * (self.split_levels - 1)))
        return action

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": {n: list(b) for n, b in self.stages.items()},
            "splits": self.splits,
            "mode": self.mode,
            "scale_step": self.scale_step,
            "worker_levels": self.worker_levels,
            "split_levels": self.split_levels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionDecoder:
        return cls(
            {n: (b[0], b[1]) for n, b in data["stages"].items()},
            data["splits"],
            data["mode"],
            data["scale_step"],
            data["worker_levels"],
            data["split_levels"],
        )

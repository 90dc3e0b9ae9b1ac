"""Gymnasium environments over the simulator: the Coordinator's loop with the planner outside."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adaptflow._validation import format_problems
from adaptflow.agents import (
    ActionDecoder,
    ControlLoop,
    CostModel,
    CostWeights,
    ObservationEncoder,
    SimClock,
    SimExecutor,
    SimMonitor,
    envelope_for,
)
from adaptflow.agents.analyzers import load_fitted
from adaptflow.agents.cost import reward_scale
from adaptflow.agents.encoding import has_calendar_week, reference_rate_of
from adaptflow.agents.fitting import fit_analyzer
from adaptflow.agents.types import CostComponents
from adaptflow.scenario import Scenario, ScenarioError, load_scenario
from adaptflow.scenario.schema import MAX_ITEMS
from adaptflow.simulator import Simulation


def _layout(scenario: Scenario) -> tuple:
    """What an encoder and a decoder are built from: stages with their bounds, sources, splits."""
    return (
        [(n, s.workers.min, s.workers.max, bool(s.validation)) for n, s in scenario.stages.items()],
        list(scenario.sources),
        {o: [b.to for b in r.split] for o, r in scenario.controllable_splits().items()},
    )


class StepInfo(dict):
    """A step's ``info``: a plain dict that deep-copies cheaply.

    SB3's DummyVecEnv deep-copies every env's info on every step. The env's own values are
    immutable (the time, frozen :class:`CostComponents`), so they are shared; anything else (the
    env's ``clamps`` list, SB3's ``terminal_observation``) is deep-copied as usual."""

    __slots__ = ()
    _IMMUTABLE = frozenset({float, int, bool, str, CostComponents})

    def __deepcopy__(self, memo: dict) -> StepInfo:
        copied = StepInfo()
        for key, value in self.items():
            copied[key] = value if value.__class__ in self._IMMUTABLE else copy.deepcopy(value, memo)
        return copied


def observation_encoder(scenarios: list[Scenario], opts: EnvOptions) -> ObservationEncoder:
    """The observation layout of an env on ``scenarios`` (one, or a mixture sharing stages and
    sources): the first one's stages, the rate scale and the week features decided for all of
    them at once, so that every workload of a mixture, and a trained model evaluated on any one
    of them (``SB3Planner.load``), reads the same layout."""
    return ObservationEncoder.for_scenario(
        scenarios[0],
        forecast_steps=opts.forecast_steps if opts.observe_forecasts else 0,
        reference_rate=opts.rate_reference
        if opts.rate_reference is not None or len(scenarios) == 1
        else max(reference_rate_of(s) for s in scenarios),
        week=any(has_calendar_week(s) for s in scenarios),
    )


def episode_steps(horizon: float, interval: float) -> int:
    """Decisions in an episode: the last interval may end past the horizon."""
    return math.ceil(horizon / interval - 1e-9)


class EnvOptions(BaseModel):
    """The options every adaptflow env takes (``gymnasium.make(id, **options)``)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    # One scenario, or a mixture: a list of scenarios with the same stages and sources, one drawn
    # per episode (training over several workloads: real series and synthetic profiles).
    scenario: str | Path | Scenario | Annotated[list[str | Path | Scenario], Field(min_length=1)] = "etl_diurnal"
    decision_interval: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    horizon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    reward_weights: CostWeights = Field(default_factory=CostWeights)
    reward_scale: float | None = Field(default=None, gt=0)
    observe_forecasts: bool = False
    forecaster: Literal["ewma", "holt_winters", "autoregressive"] = "ewma"
    forecast_steps: int = Field(default=4, ge=1, le=64)
    action_mode: Literal["delta", "level"] = "delta"
    scale_step: int = Field(default=1, ge=1)
    worker_levels: int = Field(default=5, ge=2)
    split_levels: int = Field(default=5, ge=2)
    max_step: int | None = Field(default=None, ge=1)
    cooldown: float = Field(default=0.0, ge=0)
    workers: dict[str, int] | None = None
    # A fitted analyzer (StandardAnalyzer.to_dict(), as a model's sidecar keeps it), used when it
    # was fitted for this scenario, interval, forecaster and forecast steps: no refit by simulation.
    analyzer: dict[str, Any] | None = None
    # Recorded-series workloads: which part of the time split episodes draw windows from
    # (training "train", tuning "validation", evaluation "test"; None: the scenario's own), and
    # per-episode augmentation (rate_scale, stretch, noise; see configs/scenarios/README.md).
    part: Literal["all", "train", "validation", "test"] | None = None
    augment: dict[str, Any] | None = None
    # The arrival rate that reads as 1 in observations (default: the scenarios' highest peak).
    rate_reference: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # The scenarios whose shared observation layout to use (default: ``scenario``'s): a model
    # trained on a mixture, run on one of its workloads, reads the mixture's layout (SB3Planner.load).
    layout: Annotated[list[str | Path | Scenario], Field(min_length=1)] | None = None


def _options(kwargs: dict[str, Any]) -> EnvOptions:
    try:
        return EnvOptions(**kwargs)
    except ValidationError as exc:
        hint = f"; expected one of {sorted(EnvOptions.model_fields)}"
        raise ValueError(format_problems(exc, kwargs, "invalid env options:", "option", hint)) from None


class WorkflowEnv(gym.Env):
    """A workflow to orchestrate, one decision every ``decision_interval`` simulated seconds.

    ## Description
    A scenario (see ``configs/scenarios/README.md``) runs in the adaptflow simulator. At each
    decision the agent sets the worker pool of each stage and/or the routing split of each
    controllable split; the world then runs one interval and the agent pays for workers, late
    items, drops and quality escapes. ``adaptflow/Autoscale-v0`` controls the pools,
    ``adaptflow/Reroute-v0`` the splits, ``adaptflow/Orchestrate-v0`` both.

    ## Action Space
    ``MultiDiscrete`` (``Discrete`` when there is a single dimension, so that DQN applies): for
    each controlled stage, down / hold / up by ``scale_step`` workers
    (``action_mode="delta"``, the default) or one of ``worker_levels`` pool sizes spread over
    [min, max] (``"level"``); then for each controllable split one of ``split_levels`` shares
    (0 to 1) sent to its second, alternate branch. Discrete deltas are the default because one
    decision can never swing a pool from min to max, and a 2026 benchmark of RL autoscalers
    found discrete actions far safer than continuous ones. Stages not controlled keep the
    ``workers`` option's size (default: the scenario's ``initial``).

    ## Observation Space
    ``Box(float32)``, laid out by :class:`adaptflow.agents.ObservationEncoder` (its
    ``to_dict()`` names every feature): per stage the queue per potential worker, mean wait /
    SLA, utilization, target, ready and starting workers / max, arrival rate / capacity at max;
    per source the estimated arrival rate (and, with ``observe_forecasts``, the next
    ``forecast_steps`` forecasts) / the peak rate; the split shares; if any stage validates, the
    estimated bad-item rate and a drift flag; the share of SLA violations in the last interval;
    for a DAG scenario (fork/join), the parts waiting at each join / 10 items' parts; for a
    scenario with job classes, each class's items in the system / one SLA window of arrivals at
    the reference rate (a priority stage's queue hides which class is waiting, so the backlog
    per class is what tells a planner whose deadlines are at stake);
    the time of day (sine, cosine) and, for a recorded series, of the week. Time comes from the
    workload's own calendar when it has one (a series source: wherever the seed put the
    episode's window, the features say which hour and weekday of the series it is), else from
    the load cycle's period.

    Episode progress is *not* observed (since v1). A deployed planner has no episode end, and
    a policy that sees the episode clock can win by learning a schedule (when the drift of a
    fixed scenario used to begin) instead of reading the load: it did, and lost as soon as the
    drift moved. The end of an episode is a truncation, which SB3 bootstraps from the value of
    the last observation, so the policy does not need to know it is coming.

    ## Workloads and seeds
    ``reset(seed=s)`` draws the episode's own scenario (:meth:`Scenario.for_episode`): for a
    ``series`` source a window of the recorded series from the part named by the ``part``
    option (and the ``augment`` draws: rate scale, time stretch, noise); for a randomized
    profile (drift episodes, jittered daily cycles) its parameters. So N seeds are N distinct
    workloads, and training (``part="train"``), tuning (``"validation"``) and evaluation
    (``"test"``) windows come from disjoint parts of the series.

    ## Rewards
    ``-(worker cost + w_sla x late items + w_drops x (drops + failed items) + w_escapes x
    escapes) / reward_scale`` over the interval, and at the last step ``w_backlog`` per item
    left unfinished (so that starving the pool near the end does not pay), weights from
    ``reward_weights`` (see
    :class:`adaptflow.agents.CostWeights`). ``reward_scale`` defaults to the cost of running
    every stage at its max for one interval, so the reward is about -1 at worst-case staffing.
    ``info`` holds the unscaled components (``cost``) and, when the safety envelope changed the
    decoded plan, what it changed (``clamps``).

    ## Starting State
    The scenario at t=0: empty queues, each pool at its ``initial`` size, splits as declared.

    ## Episode End
    Never terminates; truncated when simulated time reaches the horizon (``max_episode_steps``
    of the registration is horizon / interval for the default scenario; pass
    ``max_episode_steps`` to ``gymnasium.make`` with another scenario, or use
    :func:`adaptflow.envs.make`).

    ## Arguments
    See :class:`EnvOptions`: ``scenario`` (path or shipped name), ``decision_interval`` (s),
    ``horizon`` (s), ``reward_weights``, ``reward_scale``, ``observe_forecasts``, ``forecaster``
    ("ewma", "holt_winters" or "autoregressive", fitted on the training part of a series),
    ``forecast_steps``, ``action_mode``, ``scale_step``,
    ``worker_levels``, ``split_levels``, ``max_step`` and ``cooldown`` (safety envelope),
    ``workers`` (sizes of stages the agent does not control), ``layout`` (the scenarios whose
    observation layout to use, a trained mixture's), and ``render_mode`` ("ansi":
    one text line per step; "rgb_array": a small dashboard frame).

    In a subprocess that has not imported adaptflow (SB3's SubprocVecEnv starts its workers
    with forkserver), name the module in the id: ``"adaptflow.envs:adaptflow/Autoscale-v0"``.

    ``part`` (which part of a series' time split episodes come from) and ``augment``
    (per-episode rate scale, stretch and noise of series sources).

    ## Version History
    * v0, since issue 17: DAG scenarios (fork/join) observe their join buffers (``join:<name>``)
      and scenarios with job classes their backlog per class (``backlog:<class>``); pipelines'
      layouts are unchanged. A mixture decides the week features for all its workloads at once
      (``observation_encoder``), and the ``layout`` option gives a model its training layout.
    * v0, since adaptflow 0.2 (issue 14): observations no longer hold episode progress; time features
      come from a series' calendar and include the week for series; episodes of series and
      randomized profiles are drawn per seed. (Kept as ``-v0``: the ids are used by saved
      configs; a model saved with the old layout still loads, its encoder keeps its features.)
    * v0, before: time of day from the load cycle or the horizon; episode progress observed.

    Randomness: every draw comes from ``self.np_random`` (seeded by ``reset(seed=...)``), handed
    to the simulator, which derives one stream per source of randomness from it.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    control_workers = True
    control_splits = True

    def __init__(self, render_mode: str | None = None, **options: Any):
        opts = _options(options)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r}; expected one of {self.metadata['render_modes']} or None")
        self.scenarios = self._load_scenarios(opts)
        self.scenario = self.scenarios[0]  # the layout (stages, sources, splits) all of them share
        for scenario in self.scenarios:
            self._check_work(scenario, opts.decision_interval)
        if self.control_splits and not self.control_workers and not self.scenario.controllable_splits():
            raise ValueError(f"scenario {self.scenario.name!r} has no controllable split to reroute")
        self.options = opts
        self.render_mode = render_mode
        self.interval = opts.decision_interval
        self.horizon = self.scenario.horizon
        self.max_steps = episode_steps(self.horizon, self.interval)
        self.fixed_workers = self._fixed_workers(opts.workers)
        self.decoder = ActionDecoder.for_scenario(
            self.scenario,
            workers=self.control_workers,
            splits=self.control_splits,
            mode=opts.action_mode,
            scale_step=opts.scale_step,
            worker_levels=opts.worker_levels,
            split_levels=opts.split_levels,
        )
        self.encoder = observation_encoder(self._layout_scenarios(opts), opts)
        # A fitted forecaster comes from the options (a saved model's) or is fitted once per
        # process and scenario (cached); a mixture has one analyzer per workload.
        self.analyzers = [
            (load_fitted(opts.analyzer, s, self.interval, opts.forecaster, opts.forecast_steps) if k == 0 else None)
            or fit_analyzer(s, self.interval, forecaster=opts.forecaster, forecast_steps=opts.forecast_steps)
            for k, s in enumerate(self.scenarios)  # a saved analyzer is the first workload's
        ]
        self.analyzer = self.analyzers[0]
        self.cost_model = CostModel(opts.reward_weights)
        self.reward_scale = opts.reward_scale or reward_scale(self.scenario, self.interval)
        # One controlled dimension is a Discrete space (so DQN applies); more are MultiDiscrete.
        nvec = self.decoder.nvec
        self.action_space = spaces.Discrete(nvec[0]) if len(nvec) == 1 else spaces.MultiDiscrete(nvec)
        self.observation_space = spaces.Box(self.encoder.low, self.encoder.high, dtype=np.float32)
        self.sim: Simulation | None = None
        self._history: list[dict[str, Any]] = []

    @classmethod
    def _load_scenarios(cls, opts: EnvOptions) -> list[Scenario]:
        """The scenario(s) of the options, with the series part and augmentation applied; a
        mixture's scenarios must share stages, sources and splits (one encoder and decoder)."""
        names = opts.scenario if isinstance(opts.scenario, list) else [opts.scenario]
        scenarios = []
        try:
            for name in names:
                scenario = load_scenario(name, horizon=opts.horizon)
                if opts.part is not None or opts.augment is not None:
                    scenario = scenario.for_part(opts.part or cls._series_part(scenario), opts.augment)
                scenarios.append(scenario)
        except ScenarioError as exc:
            raise ValueError(str(exc)) from None
        first = scenarios[0]
        for other in scenarios[1:]:
            if _layout(other) != _layout(first):
                raise ValueError(
                    f"scenario: the mixture's {other.name!r} has another layout than {first.name!r}; "
                    "expected the same stages (and worker bounds), sources and controllable splits"
                )
            if other.horizon != first.horizon:
                raise ValueError(
                    f"scenario: the mixture's {other.name!r} has horizon {other.horizon:g} s and {first.name!r} "
                    f"{first.horizon:g} s; expected one horizon (set the horizon option)"
                )
        return scenarios

    def _layout_scenarios(self, opts: EnvOptions) -> list[Scenario]:
        """The scenarios the observation layout is built from: ``layout`` if given (checked to
        share the running scenario's stages and sources), else the running ones."""
        if opts.layout is None:
            return self.scenarios
        layout = self._load_scenarios(opts.model_copy(update={"scenario": opts.layout}))
        if _layout(layout[0]) != _layout(self.scenario):
            raise ValueError(
                f"layout: {layout[0].name!r} has another layout than the scenario {self.scenario.name!r}; "
                "expected the same stages (and worker bounds), sources and controllable splits"
            )
        return layout

    @staticmethod
    def _series_part(scenario: Scenario) -> str:
        parts = {getattr(s, "part", "all") for s in scenario.sources.values()}
        return parts.pop() if len(parts) == 1 else "all"

    @staticmethod
    def _check_work(scenario: Scenario, interval: float) -> None:
        """An episode must end in bounded time, checked before it starts: at least one decision
        fits in the horizon, and the arrivals it brings are at most ``MAX_ITEMS`` (about a minute
        of simulation; ``horizon: 1e12`` would never end an episode)."""
        if interval > scenario.horizon:
            raise ValueError(
                f"decision_interval: {interval:g} s is longer than the horizon of {scenario.horizon:g} s; "
                "expected at most the horizon"
            )
        items, what = scenario.expected_work()
        if not items <= MAX_ITEMS:  # also a NaN or infinite estimate
            raise ValueError(
                f"horizon: {what} per episode over {scenario.horizon:g} s; "
                f"expected at most {MAX_ITEMS:,} (roughly a minute of simulation per episode)"
            )

    def _fixed_workers(self, workers: dict[str, int] | None) -> dict[str, int]:
        fixed = {n: s.workers.initial for n, s in self.scenario.stages.items()}
        for name, n in (workers or {}).items():
            if name not in fixed:
                raise ValueError(f"option workers names stage {name!r}; stages: {list(fixed)}")
            w = self.scenario.stages[name].workers
            if not w.min <= n <= w.max:
                raise ValueError(f"option workers.{name} is {n}; expected a value in [{w.min}, {w.max}]")
            fixed[name] = n
        return fixed

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # A mixture draws the episode's workload first (a single scenario draws nothing, so its
        # episodes are what they always were for a seed).
        k = int(self.np_random.integers(len(self.scenarios))) if len(self.scenarios) > 1 else 0
        self.analyzer = self.analyzers[k]
        self.sim = Simulation(self.scenarios[k], rng=self.np_random)
        for name, n in self.fixed_workers.items():
            if n != self.sim.stages[name].target:
                self.sim.set_workers(name, n)
        self.executor = SimExecutor(self.sim, envelope_for(self.scenario, self.options.max_step, self.options.cooldown))
        self.loop = ControlLoop(
            SimMonitor(self.sim), self.analyzer, self.executor, SimClock(self.sim), self.cost_model, self.interval
        )
        self.snapshot, self.insights = self.loop.start()
        self._history = []
        return self.encoder.encode(self.snapshot, self.insights), {"time": self.sim.now}

    def step(self, action: Any):
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        plan = self.decoder.decode(action, self.executor.current_workers())
        t = self.loop.act(plan)
        self.snapshot, self.insights = t.snapshot, t.insights
        cost = t.cost
        now = self.sim.now
        truncated = now >= self.horizon - 1e-9
        if truncated:  # unfinished work is priced at the end (see CostWeights.backlog)
            cost = cost + self.cost_model.terminal(self.snapshot)
        reward = -cost.total / self.reward_scale
        info = StepInfo(time=now, cost=cost)
        if t.applied.clamps:  # only when the safety envelope changed the plan (SB3 deep-copies infos)
            info["clamps"] = t.applied.clamps
        if self.render_mode is not None:
            self._record(reward)
        return self.encoder.encode(self.snapshot, self.insights), reward, False, truncated, info

    # -- rendering ---------------------------------------------------------------------------
    def _record(self, reward: float) -> None:
        # Cheap on purpose: SB3's make_vec_env creates envs with render_mode="rgb_array", so this
        # runs on every training step. Text and figures are built only when render() is called.
        s = self.snapshot
        rate = sum(s.source_arrivals.values()) / s.interval if s.interval else 0.0
        targets = []
        for stage in s.stages.values():
            targets.append(stage.target)
        self._history.append((s.time, rate, targets, reward))

    def render(self):
        if self.render_mode == "ansi":
            return self._text_line() + "\n"
        if self.render_mode == "rgb_array":
            return self._dashboard()
        return None

    def _text_line(self) -> str:
        if not self._history:
            return f"t={self.sim.now if self.sim else 0:8.0f}s (no step yet)"
        s, (_, rate, _, reward) = self.snapshot, self._history[-1]
        pools = " ".join(f"{n}={st.target}/{st.queue_length}q" for n, st in s.stages.items())
        splits = " ".join(f"{o}->{list(p.values())[-1]:.2f}" for o, p in s.splits.items())
        return (
            f"t={s.time:8.0f}s rate={rate:6.2f}/s {pools} {splits} "
            f"late={s.sla_violations} drops={s.drops} escapes={s.escapes} reward={reward:+.4f}"
        )

    def _dashboard(self) -> np.ndarray:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4), dpi=80)
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True)
        h = self._history
        times = [r[0] for r in h]
        top.plot(times, [r[1] for r in h], color="black", label="arrivals/s")
        top.set_ylabel("arrivals/s")
        for k, name in enumerate(self.scenario.stages):
            bottom.step(times, [r[2][k] for r in h], where="post", label=name)
        bottom.set_ylabel("workers")
        bottom.set_xlabel("simulated s")
        bottom.legend(loc="upper left", fontsize=7)
        top.set_title(f"{self.scenario.name} t={times[-1] if times else 0:.0f}s", fontsize=9)
        fig.tight_layout()
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


class AutoscaleEnv(WorkflowEnv):
    __doc__ = WorkflowEnv.__doc__
    control_workers, control_splits = True, False


class RerouteEnv(WorkflowEnv):
    __doc__ = WorkflowEnv.__doc__
    control_workers, control_splits = False, True


class OrchestrateEnv(WorkflowEnv):
    __doc__ = WorkflowEnv.__doc__
    control_workers, control_splits = True, True

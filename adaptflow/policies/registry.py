"""Planners by name, for configs, the command line and the planner service: ``"threshold"``,
``"threshold:target=0.6,metric=queue_per_worker"``, ``"sb3:runs/x/best_model.zip"``,
``"onnx:export/"``.

A spec is parsed and checked before any work starts; an unknown name or parameter is an error
that lists what exists. The registry lives in the policies room, below the experiments and the
runtime that both build planners from specs; learned planners load from their own modules here
(:mod:`.sb3`, which needs torch, on use; :mod:`.onnx`, which needs onnxruntime only). A learned
planner whose sidecar records what training saw is guarded (:class:`~.guard.GuardedPlanner`):
out of that range a rule (``guard_fallback``) decides."""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from adaptflow.agents.interfaces import Planner
from adaptflow.scenario import Scenario

from .guard import GuardedPlanner, TrainingRange
from .rules import CeleryAutoscalePlanner, CombinedPlanner, QualityThresholdPlanner, ThresholdPlanner
from .staffing import ClairvoyantPlanner, ErlangPlanner, PlannedSplitPlanner, PredictivePlanner
from .static import StaticPlanner

log = logging.getLogger(__name__)

QualityStaffing = Literal["planned", "reactive", "fixed"]
QUALITY_STAFFING: tuple[str, ...] = get_args(QualityStaffing)

GUARD_FALLBACK = "erlang"
"""The rule a learned planner's guard hands decisions to by default: the planner service's
default fallback too (Erlang C staffing for the current rate: no forecaster to fit, and it
answers any load, also one far beyond what the learned planner saw)."""


def _quality(
    scenario: Scenario,
    interval: float,
    high: float = 0.08,
    low: float = 0.04,
    share: float = 1.0,
    smoothing: float = 0.3,
    target_wait: float | None = None,
    staffing: QualityStaffing = "planned",
    max_utilization: float | None = None,
) -> Planner:
    """The quality-threshold reroute rule on the first controllable split, with a staffing mode:

    * ``planned`` (default): Erlang staffing for the split the rule is about to apply, in the
      same decision (:class:`PlannedSplitPlanner`): a reroute to the slow thorough branch sizes
      its pool at once.
    * ``reactive``: Erlang staffing for the estimated rate into each stage, which sees a reroute
      only through the lagging EWMA of the rerouted load (the rule as first written).
    * ``fixed``: splits only; the pools are left as they are (the counterpart of
      ``adaptflow/Reroute-v0``, whose pools are fixed).

    ``max_utilization``: send a branch no more than its ready workers serve at that utilization
    (planned and fixed staffing; off by default)."""
    splits = scenario.controllable_splits()
    if not splits:
        raise ValueError(f"planner 'quality' needs a controllable split; scenario {scenario.name!r} has none")
    if staffing not in QUALITY_STAFFING:
        raise ValueError(f"staffing {staffing!r}; expected one of {', '.join(QUALITY_STAFFING)}")
    (owner, split), *_ = splits.items()
    targets = tuple(b.to for b in split.split)
    if len(targets) != 2:
        raise ValueError(f"planner 'quality' needs a two-way split; {owner!r} has {len(targets)} branches")
    router = QualityThresholdPlanner(owner, targets, high=high, low=low, share=share, smoothing=smoothing)
    if staffing == "reactive":
        return CombinedPlanner(ErlangPlanner(scenario, target_wait, interval), router)
    if staffing == "fixed" and max_utilization is None:
        return router
    return PlannedSplitPlanner(scenario, router, target_wait, interval, max_utilization, staff=staffing == "planned")


@dataclass(frozen=True)
class PlannerEntry:
    build: Callable[..., Planner]  # (scenario, interval, **params) -> Planner
    forecaster: str = "ewma"  # what the analyzer should forecast with for this planner
    doc: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # name -> type, as the planner declares it


def _params(fn: Callable[..., Any], skip: int = 0, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The parameters a spec may set, with the types ``fn`` declares for them: every parameter
    after the first ``skip``, or only ``names`` (those the registry's builder does not pass
    itself). The planners' own signatures are the one declaration of their parameter types."""
    hints = get_type_hints(fn)
    keep = names if names is not None else tuple(list(inspect.signature(fn).parameters)[skip:])
    return {name: hints[name] for name in keep}


PLANNERS: dict[str, PlannerEntry] = {
    "static": PlannerEntry(
        lambda s, i, **p: StaticPlanner(**p).checked(list(s.stages)),
        doc="the scenario's pools, never changed",
        params=_params(StaticPlanner.__init__, 1),
    ),
    "threshold": PlannerEntry(
        lambda s, i, **p: ThresholdPlanner(**p), doc="Kubernetes HPA rule", params=_params(ThresholdPlanner.__init__, 1)
    ),
    "keda": PlannerEntry(
        lambda s, i, **p: ThresholdPlanner(metric="queue_length", **p),
        doc="KEDA's Redis list scaler: ceil(queue length / target) replicas",
        params=_params(ThresholdPlanner.__init__, names=("target", "tolerance", "stabilization_window", "stages")),
    ),
    "celery": PlannerEntry(
        lambda s, i, **p: CeleryAutoscalePlanner(**p),
        doc="Celery's worker autoscaler",
        params=_params(CeleryAutoscalePlanner.__init__, 1),
    ),
    "erlang": PlannerEntry(
        lambda s, i, **p: ErlangPlanner(s, interval=i, **p),
        doc="Erlang C staffing, now",
        params=_params(ErlangPlanner.__init__, names=("target_wait",)),
    ),
    "predictive": PlannerEntry(
        lambda s, i, **p: PredictivePlanner(s, interval=i, **p),
        forecaster="holt_winters",
        doc="Erlang C staffing for the forecast",
        params=_params(PredictivePlanner.__init__, names=("target_wait",)),
    ),
    "clairvoyant": PlannerEntry(
        lambda s, i, **p: ClairvoyantPlanner(s, interval=i, **p),
        doc="Erlang C staffing for the true future rate (reference bound)",
        params=_params(ClairvoyantPlanner.__init__, names=("target_wait",)),
    ),
    "quality": PlannerEntry(
        _quality,
        doc="reroute while the bad rate is high; staffing=planned|reactive|fixed",
        params=_params(_quality, 2),
    ),
}

BASELINES = ("static", "threshold", "keda", "celery", "erlang", "predictive", "quality")
"""Planners a learned one must beat (the clairvoyant is a bound, not a baseline)."""


LEARNED = {"sb3": "sb3:PATH/TO/model.zip", "onnx": "onnx:PATH/TO/planner.onnx (or its directory)"}
"""Planners loaded from a file: a saved SB3 model, or one exported to ONNX."""


def parse_value(text: str) -> Any:
    """A parameter value as written on the command line: a number, true/false/none, or text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def typed_value(text: str, kind: Any) -> Any:
    """``text`` (a spec's value) as the type ``kind`` a planner declares, or ValueError whose
    message is what was expected. ``X | None`` takes ``none``; a ``Literal`` one of its values; a
    list of names is written ``a+b`` (a comma separates parameters), a mapping of names to
    numbers ``a:2+b:1`` (``static:pool=1,workers=aggregate:2+write:2``: one pool for a few stages,
    as a fit set's third size needs); a mapping of mappings no spec writes."""
    origin, args = get_origin(kind), get_args(kind)
    if any(get_origin(a) is dict and get_args(a) not in ((str, int), (str, float)) for a in (kind, *args)):
        raise ValueError("a mapping of mappings, which a spec cannot write (build the planner in Python)")
    if origin is dict:
        return _mapping(text, args[1])
    if origin in (Union, UnionType):
        rest = [a for a in args if a is not type(None)]
        if text.lower() == "none" and len(rest) < len(args):
            return None
        if len(rest) != 1:
            raise TypeError(f"unsupported parameter type {kind}")  # a registry bug, not a user's
        try:
            return typed_value(text, rest[0])
        except ValueError as exc:
            raise ValueError(f"{exc} or none" if len(rest) < len(args) else str(exc)) from None
    if origin is Literal:
        if text not in args:
            raise ValueError(f"one of {', '.join(map(str, args))}")
        return text
    if origin is list:
        names = text.split("+")
        if not all(names):
            raise ValueError("names separated by + (e.g. extract+load)")
        return names
    return _scalar(text, kind)


def _mapping(text: str, value: Any) -> dict[str, Any]:
    """``a:2+b:1`` as {name: value} of the declared value type, each name once."""
    pairs = [item.partition(":") for item in text.split("+")]
    if not all(name and colon and number for name, colon, number in pairs):
        raise ValueError("names and numbers as name:number, separated by + (e.g. aggregate:2+write:2)")
    names = [name for name, _, _ in pairs]
    if len(set(names)) < len(names):
        raise ValueError("each name once")
    try:
        return {name: _scalar(number, value) for name, _, number in pairs}
    except ValueError as exc:
        raise ValueError(f"names and numbers as name:number, each number {exc}") from None


def _scalar(text: str, kind: Any) -> Any:
    """A bool, int, float or str parameter from its text (a number is never a bool, nor nan)."""
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError("true or false")
        return text.lower() == "true"
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("an integer") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("a number") from None
        if math.isnan(value):
            raise ValueError("a number")
        return value
    if kind is str:
        return text
    raise TypeError(f"unsupported parameter type {kind}")  # a registry bug, not a user's


def split_label(spec: str) -> tuple[str, str]:
    """``"ppo@sb3:runs/x/best_model.zip"`` -> ("ppo", "sb3:..."); without ``@`` the spec is its label."""
    label, at, rest = spec.partition("@")
    return (label, rest) if at else (spec, spec)


_PARAMETER = re.compile(r"[A-Za-z_]\w*=")


def split_specs(text: str) -> list[str]:
    """A comma-separated list of planner specs (``compare-app --planners``) as its specs: a piece
    that begins ``key=`` is the next parameter of the spec before it, so a spec keeps every
    parameter (``p7@static:pool=1,workers=write:2,keda:target=1`` is two specs); a piece with
    an ``@`` is a labelled spec of its own, whatever its label holds (``x=1@static``)."""
    specs: list[str] = []
    for piece in filter(None, text.split(",")):
        if specs and _PARAMETER.match(piece) and "@" not in piece:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


def parse_planner(spec: str) -> tuple[str, dict[str, Any]]:
    """``"[label@]name:key=value,key=value"`` -> (name, params), checked against the registry."""
    name, _, rest = split_label(spec)[1].partition(":")
    if name in LEARNED:
        if not rest:
            raise ValueError(f"planner {name!r} needs a model path: {LEARNED[name]}")
        return name, {"path": rest}
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; expected one of: {', '.join([*PLANNERS, *LEARNED.values()])}")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"planner {spec!r}: parameter {item!r} is not key=value")
        if key not in PLANNERS[name].params:
            known = ", ".join(PLANNERS[name].params)
            raise ValueError(f"planner {name!r} has no parameter {key!r}; parameters: {known}")
        try:
            params[key] = typed_value(value, PLANNERS[name].params[key])
        except ValueError as exc:
            raise ValueError(f"planner {name!r}, parameter {key} {value!r}: expected {exc}") from None
    return name, params


def make_planner(
    spec: str, scenario: Scenario, interval: float, guard_fallback: str | None = GUARD_FALLBACK
) -> tuple[Planner, str]:
    """Build a planner from its spec; also returns the forecaster its analyzer should use.

    A learned planner (``sb3:``, ``onnx:``) whose sidecar carries a training range is wrapped in a
    :class:`GuardedPlanner` whose fallback is the rule ``guard_fallback`` (None: unguarded); one
    saved before training ranges existed runs unguarded, with a logged warning."""
    name, params = parse_planner(spec)
    spec = split_label(spec)[1]
    if name in LEARNED:
        learned = _load_learned(name, params["path"], scenario, interval)
        forecaster = learned.analyzer_options.get("forecaster", "ewma")
        return guard(learned, spec, scenario, interval, guard_fallback), forecaster
    entry = PLANNERS[name]
    # The same rule as a learned planner's: on a load with no season, Holt-Winters is fitted
    # without one (a flat forecast, with a logged warning; see agents.fitting).
    forecaster = entry.forecaster
    try:
        return entry.build(scenario, interval, **params), forecaster
    except TypeError as exc:
        raise ValueError(f"planner {spec!r}: {exc}") from None


def _load_learned(name: str, path: str, scenario: Scenario, interval: float) -> Any:
    """An SB3 model (torch, imported here) or an exported ONNX planner checked against the scenario."""
    if name == "sb3":
        from .sb3 import SB3Planner

        return SB3Planner.load(path, scenario, interval)
    from .onnx import OnnxPlanner, check_deployment

    planner = OnnxPlanner.load(path)
    check_deployment(planner.metadata, scenario, interval)
    return planner


def guard(planner: Any, spec: str, scenario: Scenario, interval: float, fallback: str | None) -> Planner:
    """``planner`` guarded by its ``training_range`` with the rule ``fallback`` (a spec) deciding
    out of range; ``planner`` itself when ``fallback`` is None or it carries no range."""
    if fallback is None:
        return planner
    data = getattr(planner, "training_range", None)
    if data is None:
        log.warning("%s carries no training range (saved by an older adaptflow): running it unguarded", spec)
        return planner
    if parse_planner(fallback)[0] in LEARNED:
        raise ValueError(f"guard fallback {fallback!r}: expected a rule or staffing planner, not a learned one")
    backup, _ = make_planner(fallback, scenario, interval)
    return GuardedPlanner(planner, backup, TrainingRange.from_dict(data))


def check_trusted(specs: list[str], allow_pickle: bool, command: str = "serve") -> None:
    """Refuse, unless ``allow_pickle``, a planner spec whose model file is loaded with pickle
    (``sb3:``: stable-baselines3 unpickles the zip's ``data``, so a crafted file runs code).
    Exported ONNX planners and rules load no code. The deployment paths (``serve``, ``live``,
    ``control``, ``keda``, ``compare-app``) call this before any model file is opened; research
    paths (evaluate, train) load the files a researcher made."""
    for spec in specs:
        name, _ = parse_planner(spec)
        if name in LEARNED and name != "onnx" and not allow_pickle:
            raise ValueError(
                f"refusing to {command} {spec!r}: {name} model files are loaded with pickle, which can run code from "
                f"the file; export it (adaptflow export) and use onnx:DIR, or pass --allow-pickle if you trust the file"
            )

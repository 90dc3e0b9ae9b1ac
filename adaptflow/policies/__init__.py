"""Planners: rules, queueing-theory staffing, the clairvoyant bound, learned planners (SB3 and
exported ONNX models) and the registry that builds any of them from a spec string.

Names are resolved on first use (PEP 562), so that ``adaptflow.policies.onnx`` (the deployed
planner) does not load the staffing rules or SB3 with it."""

from __future__ import annotations

from adaptflow._lazy import lazy_names

_EXPORTS = {
    "CeleryAutoscalePlanner": ".rules",
    "CombinedPlanner": ".rules",
    "QualityThresholdPlanner": ".rules",
    "ThresholdPlanner": ".rules",
    "ClairvoyantPlanner": ".staffing",
    "ErlangPlanner": ".staffing",
    "PredictivePlanner": ".staffing",
    "staff": ".staffing",
    "visit_ratios": ".staffing",
    "ScheduledPlanner": ".static",
    "StaticPlanner": ".static",
    "OnnxPlanner": ".onnx",
    "SB3Planner": ".sb3",
    "make_planner": ".registry",
    "parse_planner": ".registry",
    "split_label": ".registry",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)

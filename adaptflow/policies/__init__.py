"""Planners: rules, queueing-theory staffing, the clairvoyant bound, learned planners (SB3 and
exported ONNX models) and the registry that builds any of them from a spec string.

Names are resolved on first use (PEP 562), so that ``adaptflow.policies.onnx`` (the deployed
planner) does not load the staffing rules or SB3 with it."""

from __future__ import annotations

import importlib
from typing import Any

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
    "StaticPlanner": ".static",
    "OnnxPlanner": ".onnx",
    "SB3Planner": ".sb3",
    "make_planner": ".registry",
    "parse_planner": ".registry",
    "split_label": ".registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

"""Planners: rules, queueing-theory staffing, the clairvoyant bound and RL wrappers."""

from .rules import CeleryAutoscalePlanner, CombinedPlanner, QualityThresholdPlanner, ThresholdPlanner
from .staffing import ClairvoyantPlanner, ErlangPlanner, PredictivePlanner, staff, visit_ratios
from .static import StaticPlanner

__all__ = [
    "CeleryAutoscalePlanner",
    "ClairvoyantPlanner",
    "CombinedPlanner",
    "ErlangPlanner",
    "PredictivePlanner",
    "QualityThresholdPlanner",
    "StaticPlanner",
    "ThresholdPlanner",
    "staff",
    "visit_ratios",
]

"""Agent interfaces and the data between them; the simulator side; the shared encoder, decoder,
cost model and analyzers; the Coordinator. See ../shared/DESIGN.md for why there is one of each."""

from .analyzers import (
    CusumDetector,
    EwmaForecaster,
    HoltWintersForecaster,
    StandardAnalyzer,
    analyzer_options,
    fit_holt_winters,
)
from .coordinator import ControlLoop, Coordinator, EventLog, Transition, read_event_log
from .cost import CostModel, CostWeights
from .encoding import ActionDecoder, Feature, ObservationEncoder, ObservationNormalizer
from .interfaces import Analyzer, Clock, Executor, Monitor, Planner
from .safety import SafetyEnvelope, StageBounds
from .sim import SimClock, SimExecutor, SimMonitor, envelope_for
from .types import Applied, CostComponents, Insights, MetricsSnapshot, Plan, StageMetrics

__all__ = [
    "ActionDecoder",
    "Analyzer",
    "Applied",
    "Clock",
    "ControlLoop",
    "Coordinator",
    "CostComponents",
    "CostModel",
    "CostWeights",
    "CusumDetector",
    "EventLog",
    "EwmaForecaster",
    "Executor",
    "Feature",
    "HoltWintersForecaster",
    "Insights",
    "MetricsSnapshot",
    "Monitor",
    "ObservationEncoder",
    "ObservationNormalizer",
    "Plan",
    "Planner",
    "SafetyEnvelope",
    "SimClock",
    "SimExecutor",
    "SimMonitor",
    "StageBounds",
    "StageMetrics",
    "StandardAnalyzer",
    "Transition",
    "analyzer_options",
    "envelope_for",
    "fit_holt_winters",
    "read_event_log",
]

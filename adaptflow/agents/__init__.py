"""Agent interfaces and the data between them; the shared encoder, decoder, cost model and
safety envelope; the Coordinator; the analyzers; and the simulator side. See
docs/architecture.md for why there is one of each.

The world-independent pieces are imported here at once; they need numpy, pydantic and the
scenario room only, so the deployed ONNX planner can use them. The analyzers and the simulator
side (``SimClock``, ``SimExecutor``, ``SimMonitor``, which import SimPy) load on first use
(PEP 562): ``from adaptflow.agents import SimMonitor`` still works, but ``import adaptflow.agents``
alone never loads the simulator. New code on the Sim side imports :mod:`adaptflow.agents.sim`
by name, so that the import contracts (pyproject ``[tool.importlinter]``) see the edge."""

from __future__ import annotations

from adaptflow._lazy import lazy_names

from .coordinator import ControlLoop, Coordinator, EventLog, Transition, read_event_log
from .cost import CostModel, CostWeights
from .encoding import ActionDecoder, Feature, ObservationEncoder, ObservationNormalizer
from .interfaces import Analyzer, Clock, Executor, Monitor, Planner
from .safety import SafetyEnvelope, StageBounds, envelope_for
from .types import Applied, CostComponents, Insights, MetricsSnapshot, Plan, StageMetrics

_LAZY = {
    "CusumDetector": ".analyzers",
    "EwmaForecaster": ".analyzers",
    "HoltWintersForecaster": ".analyzers",
    "StandardAnalyzer": ".analyzers",
    "analyzer_options": ".analyzers",
    "fit_holt_winters": ".analyzers",
    "SimClock": ".sim",
    "SimExecutor": ".sim",
    "SimMonitor": ".sim",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


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

"""The live side of the agent interfaces, on the Celery app of :mod:`adaptflow.runtime.celery_app`,
in parts with one job each:

* :mod:`.clock`: :class:`WallClock`, scenario seconds on the wall clock.
* :mod:`.ledger`: :class:`PoolState`, :class:`PoolLedger`, the pool sizes the executor applies
  and the monitor reconciles with what the workers report.
* :mod:`.executor`: :class:`CeleryExecutor` and :func:`live_envelope`.
* :mod:`.fold`: :class:`EventFold`, the pure fold of the event records into an interval's
  counts, areas, waits and deadlines (tested without Redis); :class:`LiveTotals`.
* :mod:`.histogram`: :class:`LogHistogram`, whole-run percentiles in bounded memory.
* :mod:`.monitor`: :class:`CeleryMonitor`, which reads Redis and the workers, feeds the fold and
  builds the :class:`~adaptflow.agents.MetricsSnapshot`.
* :mod:`.outage`: surviving a Redis outage (:class:`ResilientMonitor`, :class:`ResilientExecutor`,
  :class:`Outage`, ``TRANSIENT_ERRORS``).

Units: the monitor reports *scenario* seconds, as the simulator does. A live run with
``time_scale`` 10 runs ten times faster than the scenario's clock; every duration the monitor
measures in wall seconds (waits, latencies, worker time) is multiplied by ``time_scale`` before
it reaches an analyzer, a planner or the cost model, so that they see the numbers they were
built (or trained) for.
"""

from .clock import WallClock
from .executor import CeleryExecutor, live_envelope
from .fold import EventFold, Interval, LiveTotals, StageInterval
from .histogram import LogHistogram
from .ledger import PoolLedger, PoolState
from .monitor import CeleryMonitor
from .outage import TRANSIENT_ERRORS, Outage, ResilientExecutor, ResilientMonitor

__all__ = [
    "TRANSIENT_ERRORS",
    "CeleryExecutor",
    "CeleryMonitor",
    "EventFold",
    "Interval",
    "LiveTotals",
    "LogHistogram",
    "Outage",
    "PoolLedger",
    "PoolState",
    "ResilientExecutor",
    "ResilientMonitor",
    "StageInterval",
    "WallClock",
    "live_envelope",
]

"""A user's Celery app, observed: the one way every command that watches someone else's app
(``adaptflow keda``, the control loop) builds its monitor, so they all read the app alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from celery import Celery

from adaptflow.scenario import Scenario, load_scenario

from .live import CeleryMonitor, PoolLedger, WallClock
from .live.events import EventStream
from .live.mapping import AppMapping, load_mapping
from .live.system import app_system
from .record import load_app


@dataclass
class ObservedApp:
    """A user's app with its mapping, scenario, event stream, pools and monitor."""

    app: Celery
    mapping: AppMapping
    scenario: Scenario
    stream: EventStream
    ledger: PoolLedger
    monitor: CeleryMonitor

    def close(self) -> None:
        self.stream.stop()


def observe_app(spec: str, mapping: str | Path, scenario: str | Path, inspect_timeout: float = 2.0) -> ObservedApp:
    """Import the app ``MODULE:APP``, check its mapping against ``scenario`` (every problem
    before any connection), receive its events and sync the pools of its mapped workers."""
    the_mapping, the_scenario = load_mapping(mapping), load_scenario(scenario)
    the_mapping.require_workers()
    app = load_app(spec)
    stream = EventStream(app).start()
    try:
        system = app_system(app, the_mapping, the_scenario, stream)
        ledger = PoolLedger(app, the_mapping.workers(), timeout=inspect_timeout, roster=stream.alive_nodes).sync()
        clock = WallClock()
        monitor = CeleryMonitor(app, ledger, clock, percentiles=True, inspect_timeout=inspect_timeout, system=system)
    except BaseException:
        stream.stop()
        raise
    return ObservedApp(app, the_mapping, the_scenario, stream, ledger, monitor)

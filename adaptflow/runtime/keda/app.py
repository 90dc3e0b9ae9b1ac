"""``adaptflow keda``: the external scaler over a user's Celery app, observed through its events
(:func:`adaptflow.runtime.user_app.observe_app`), with the planner's decision loop."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path

from adaptflow._signals import sigterm_as_interrupt

from .plans import decision_loop_for
from .scaler import serve_keda

STOP_WAIT = 10.0  # seconds a stop waits for the decision loop's thread (a retry's backoff is at most 5)


def run_keda(
    planner: str,
    app: str,
    mapping: str | Path,
    scenario: str | Path,
    interval: float,
    *,
    host: str = "127.0.0.1",
    port: int = 6000,
    fallback: str = "erlang",
    max_step: int | None = None,
    cooldown: float = 0.0,
    event_log: str | Path | None = None,
    stop: threading.Event | None = None,
    allow_pickle: bool = False,
) -> None:
    """Serve until SIGTERM, Ctrl-C or ``stop``. A decision older than three intervals is stale:
    KEDA is then told UNAVAILABLE and falls back to the ScaledObject's ``fallback`` replicas.
    ``event_log``: a JSONL file of every decision, as ``adaptflow control`` writes one. A planner
    whose model file is a pickle (``sb3:``) is refused unless ``allow_pickle``, before anything."""
    from adaptflow.agents import EventLog
    from adaptflow.policies.registry import check_trusted
    from adaptflow.runtime.user_app import observe_app

    if not interval > 0:
        raise ValueError(f"--interval {interval}: expected seconds > 0")
    check_trusted([planner, fallback], allow_pickle, command="run the KEDA scaler with")
    observed = observe_app(app, mapping, scenario)
    stop = stop or threading.Event()
    log_file = EventLog(event_log) if event_log is not None else None
    try:
        options = {"fallback": fallback, "max_step": max_step, "cooldown": cooldown, "event_log": log_file}
        clock = observed.monitor.clock  # the decisions' times on the snapshots' clock
        loop = decision_loop_for(
            planner, observed.scenario, interval, observed.monitor, clock=clock, resilient=True, **options
        )
        loop.start()
        server = serve_keda(loop, host, port, stale_after=3 * interval)
        print(f"adaptflow: KEDA external scaler for {app} on {host}:{port}", file=sys.stderr, flush=True)
        with sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):  # SIGTERM stops as Ctrl-C does
            stop.wait()
        server.stop(2)
        loop.stop(timeout=STOP_WAIT)  # bounded: through a broker outage the loop's monitor is retrying
        if loop.running:  # a daemon thread: it ends with the process
            print(f"adaptflow: the decision loop was still waiting for the broker after {STOP_WAIT:g} s; left to stop "
                  "with the process", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        observed.close()
        if log_file is not None:
            log_file.close()

"""``examples/pool_trace.py``, the diagnosis that found Celery's shrink race, on a real worker:
it logs a grown process coming up at the pool's tick and a shrink's process being reaped."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from examples.pool_trace import summary

from .live_fixtures import broker, forget_connections, redis_server, wait_for  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]


def _kinds(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_the_pool_trace_logs_a_grown_process_at_the_tick_and_a_retired_one_reaped(broker, tmp_path):  # noqa: F811
    from tests.apps import shop

    forget_connections(shop.app)
    shop.app.conf.broker_url = broker
    trace, name = tmp_path / "trace.jsonl", f"trace@{socket.gethostname()}"
    argv = [sys.executable, "-m", "examples.pool_trace", "--out", str(trace), "--app", "tests.apps.shop:app", "--"]
    argv += ["-Q", "ingest", "-n", "trace@%h", "-c", "1", "--without-gossip", "--without-mingle"]
    with (tmp_path / "worker.log").open("ab") as log:
        worker = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, "SHOP_BROKER_URL": broker}, start_new_session=True,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: shop.app.control.ping(destination=[name], timeout=0.5), 60, 0.5, "the traced worker")
        grown = time.time()
        assert shop.app.control.pool_grow(1, destination=[name], reply=True, timeout=5)
        wait_for(lambda: any(r["kind"] == "process_up" for r in _kinds(trace)), 15, 0.2, "the grown process")
        up = next(r for r in _kinds(trace) if r["kind"] == "process_up")
        assert 0 <= up["t"] - grown <= 7.0  # at the pool's next maintenance tick (every 5 s), and the fork
        assert shop.app.control.pool_shrink(1, destination=[name], reply=True, timeout=5)
        wait_for(lambda: any(r["kind"] == "process_down" for r in _kinds(trace)), 15, 0.2, "the reap")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(20)
        forget_connections(shop.app)
    lines = summary(str(trace))
    assert len(lines) == 2, lines
    reaped = re.match(r"shrink at [\d.]+: reaped ([\d.]+) s later", lines[0])
    assert reaped and float(reaped[1]) <= 8.0, lines  # at once, or at the first tick after it died (<= 6 s)
    late = float(reaped[1]) > 0.6
    assert lines[1] == f"{int(late)} of 1 shrinks reaped more than 0.6 s later: a share of {float(late):.2f}", lines

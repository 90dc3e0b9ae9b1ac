"""Fixtures of the live tests: a real ``redis-server`` on 127.0.0.1 on a free port, persistent
as a live deployment's must be (``appendonly yes``, ``appendfsync everysec``, in a temporary
directory), and real Celery workers (prefork) as subprocesses, all stopped at teardown. A
missing ``redis-server`` fails the test: ``make test`` installs it, and CI must not pass by
skipping the live world."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from adaptflow.runtime.celery_app import context_of, make_app
from adaptflow.runtime.worker import WorkerProcess

TIME_SCALE = 5.0

# ingest -> controllable split -> fast / thorough validation -> exit. Overloaded at its initial
# single ingest process (3 items/s, 0.5 s each on one process would be utilization 1.5), so a
# planner must grow the ingest pool. Minimums of 0, as a planner may ask for, are clamped to 1
# live (and the clamp logged).
PIPELINE = {
    "name": "live_pipeline",
    "horizon": 600,
    "sla": {"latency": 4.0},
    "sources": {
        "jobs": {"process": "poisson", "rate": 3.0, "to": "ingest", "quality": {"bad_rate": 0.2}},
    },
    "stages": {
        "ingest": {
            "workers": {"initial": 1, "min": 0, "max": 4, "cost_per_second": 1.0},
            "service": {"dist": "exponential", "mean": 0.5},
            "next": {
                "controllable": True,
                "split": [{"to": "fast", "p": 1.0}, {"to": "thorough", "p": 0.0}],
            },
        },
        "fast": {
            "workers": {"initial": 1, "min": 0, "max": 3, "cost_per_second": 1.0},
            "service": {"dist": "exponential", "mean": 0.1},
            "validation": {"detect_prob": 0.5},
            "next": None,
        },
        "thorough": {
            "workers": {"initial": 1, "min": 0, "max": 3, "cost_per_second": 1.2},
            "service": {"dist": "exponential", "mean": 0.3},
            "validation": {"detect_prob": 0.98},
            "next": None,
        },
    },
}

# One stage of fixed 3 s service (0.6 s wall): long enough to kill a process mid-task.
SINGLE = {
    "name": "live_single",
    "horizon": 600,
    "sla": {"latency": 60.0},
    "sources": {"jobs": {"process": "poisson", "rate": 1.0, "to": "work"}},
    "stages": {
        "work": {
            "workers": {"initial": 2, "min": 1, "max": 6, "cost_per_second": 1.0},
            "service": {"dist": "deterministic", "mean": 3.0},
            "next": None,
        }
    },
}

# A stage whose visits fail: 30 % of attempts, each retried up to twice, then given up; what
# succeeds goes on to a second stage. Short services (0.1 s wall), so a few dozen items pass in
# seconds.
FAILING = {
    "name": "live_failing",
    "horizon": 600,
    "sla": {"latency": 30.0},
    "sources": {"jobs": {"process": "poisson", "rate": 1.0, "to": "work"}},
    "stages": {
        "work": {
            "workers": {"initial": 2, "min": 1, "max": 4, "cost_per_second": 1.0},
            "service": {"dist": "deterministic", "mean": 0.5},
            "failure": {"prob": 0.3, "max_retries": 2},
            "next": "ship",
        },
        "ship": {
            "workers": {"initial": 1, "min": 1, "max": 2, "cost_per_second": 1.0},
            "service": {"dist": "deterministic", "mean": 0.25},
            "next": None,
        },
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throw-away ``redis-server`` with the append-only file on, as the live configuration asks
    of a deployment's Redis; ``kill`` (SIGKILL) or ``stop`` (SIGTERM: the AOF is flushed and
    fsynced) and ``start`` again on the same port and directory are an outage, after which the
    server reloads its data from the AOF."""

    def __init__(self, directory: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: the live tests need it (make test installs Debian's)")
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        argv = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        argv += ["--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): Redis writes and fsyncs its AOF, then exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def flush(self) -> None:
        redis.Redis(host="127.0.0.1", port=self.port).flushall()

    def ensure_running(self) -> RedisServer:
        """Started again if a test left it stopped or killed."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        return self


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def broker(redis_server: RedisServer) -> str:
    """The test's broker URL, on an emptied server (tests share one server)."""
    redis_server.ensure_running().flush()
    return redis_server.url


def write_scenario(directory: Path, spec: dict) -> Path:
    path = directory / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


class Workers:
    """Starts stage workers for a test and stops every one of them at teardown."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.started: list[WorkerProcess] = []

    def start(self, scenario: Path, broker: str, stages: dict[str, int | tuple[int, int]], **kw) -> list[WorkerProcess]:
        """``stages``: stage -> concurrency (managed) or (max, min) (Celery's autoscaler)."""
        app = make_app(scenario, broker, TIME_SCALE)
        out = []
        for stage, pool in stages.items():
            options = {"autoscale": pool} if isinstance(pool, tuple) else {"concurrency": pool}
            worker = WorkerProcess(
                scenario, broker, stage, time_scale=TIME_SCALE, log_path=self.directory / f"{stage}.log",
                name=f"{stage}-{len(self.started)}@%h", **options, **kw,
            )  # fmt: skip
            self.started.append(worker.start())
            out.append(worker)
        for worker in out:
            worker.wait_ready(app)
        return out

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def app_for(scenario: Path, broker: str):
    return make_app(scenario, broker, TIME_SCALE)


def events(app, kind: str | None = None) -> list[dict[str, str]]:
    ctx = context_of(app)
    return [f for _, f in ctx.client.xrange(ctx.events_key) if kind is None or f["e"] == kind]


def wait_for(predicate, timeout: float, interval: float = 0.1, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def forget_connections(app) -> None:
    """The shop's app object is shared by the test modules, each with a Redis of its own; Celery
    keeps its connection and producer pools for the life of the process (its own reset is after a
    fork), so they are dropped when the broker changes, before and after this module's use."""
    app._pool = None
    app.amqp._producer_pool = None

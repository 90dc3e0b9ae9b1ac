"""Celery's ``worker_autoscaler`` extension point driven by adaptflow's planner
(:mod:`adaptflow.runtime.autoscaler`): a real Redis, and real workers of the user's app
(tests/apps/shop.py, unchanged) started as its owner would, with ``--autoscale=4,1`` and the
deployment's config module (tests/apps/shop_planned.py) naming the planned autoscaler."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import yaml

from adaptflow.agents import Plan, read_event_log
from adaptflow.runtime.autoscaler import (
    DEFAULT_KEY,
    PlannedSettings,
    PlanReader,
    RedisPlanPublisher,
)
from adaptflow.runtime.control import app_control
from adaptflow.runtime.live import live_envelope
from adaptflow.runtime.live.events import EventStream
from adaptflow.runtime.live.mapping import load_mapping
from adaptflow.scenario import parse_scenario

from .live_fixtures import broker, forget_connections, free_port, redis_server, wait_for  # noqa: F401  (fixtures)
from .test_user_app import SCENARIO

ROOT = Path(__file__).resolve().parents[1]
STALE_AFTER = 3.0  # the workers' staleness (seconds), short so that the test sees a fallback

ENRICH = {  # the shop's enrich queue as a one-stage scenario, for a decision loop over it
    "name": "shop_enrich",
    "horizon": 3600,
    "sla": {"latency": 30.0},
    "sources": {"orders": {"process": "poisson", "rate": 1.0, "to": "enrich"}},
    "stages": {
        "enrich": {
            "workers": {"initial": 1, "min": 1, "max": 4, "cost_per_second": 1.0},
            "service": {"dist": "deterministic", "mean": 0.4},
            "next": None,
        }
    },
}
ENRICH_MAPPING = {
    "stages": {"enrich": {"queues": ["enrich"], "worker": "enrich@%h"}},
    "sources": {"orders": {"tasks": ["shop.enrich"]}},
    "end": {"tasks": ["shop.enrich"]},
}


def client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


class ManualClock:
    """The reader's monotonic clock, moved by the test (which reads happen is then exact)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# -- the worker's read, the decider's publication ------------------------------------------------
def test_the_reader_follows_a_fresh_plan_and_refuses_stale_missing_invalid_and_unreachable_ones(broker):  # noqa: F811
    client, clock = client_for(broker), ManualClock()
    reader = PlanReader(client, "enrich", clock=clock)
    assert reader.read().kind == "unpublished"
    publisher = RedisPlanPublisher(client, parse_scenario(SCENARIO), interval=2.0)
    publisher.publish({"enrich": 3})
    assert reader.read().kind == "unpublished"  # the first answer holds for a poll period
    clock.t = 1.0
    first = reader.read()
    assert (first.desired, first.kind) == (3, "plan")
    publisher.publish({"enrich": 2})
    assert reader.read().desired == 3 and reader.reads == 2  # read at most once a second
    clock.t = 2.0
    assert reader.read().desired == 2 and reader.reads == 3
    # staleness on Redis' clock: three of the publisher's 2 s intervals by default, or configured
    client.hset(DEFAULT_KEY, ":published", repr(redis_now(client) - 5.0))
    clock.t = 3.0
    assert reader.read().desired == 2
    client.hset(DEFAULT_KEY, ":published", repr(redis_now(client) - 7.0))
    clock.t = 4.0
    stale = reader.read()
    assert (stale.desired, stale.kind) == (None, "stale") and "stale after 6 s" in stale.reason
    strict = PlanReader(client, "enrich", stale_after=4.0, clock=clock)
    client.hset(DEFAULT_KEY, ":published", repr(redis_now(client) - 5.0))
    assert strict.read().kind == "stale"
    assert PlanReader(client, "checkout", clock=clock).read().kind == "unpublished"  # a stage not planned
    client.hset(DEFAULT_KEY, mapping={"enrich": "three", ":published": repr(redis_now(client))})
    assert PlanReader(client, "enrich", clock=clock).read().kind == "invalid"
    gone = PlanReader(client_for(f"redis://127.0.0.1:{free_port()}/0"), "enrich", clock=clock)
    assert gone.read().kind == "unreachable" and gone.reads == 1
    clock.t += 4.9
    assert gone.read().kind == "unreachable" and gone.reads == 1  # no new attempt for 5 s
    clock.t += 0.2
    assert gone.read().kind == "unreachable" and gone.reads == 2


def test_the_publisher_puts_a_plan_through_the_envelope_and_publishes_every_stage(broker):  # noqa: F811
    client, scenario = client_for(broker), parse_scenario(SCENARIO)
    publisher = RedisPlanPublisher(client, scenario, interval=5.0)
    applied = publisher.apply(Plan(workers={"enrich": 9}))
    assert applied.workers == {"enrich": 4} and any("9 clamped to 4" in c for c in applied.clamps)
    stored = client.hgetall(DEFAULT_KEY)
    assert {s: stored[s] for s in ("ingest", "enrich", "store")} == {"ingest": "1", "enrich": "4", "store": "1"}
    assert stored[":interval"] == "5.0" and stored[":version"] == "1"
    assert abs(float(stored[":published"]) - redis_now(client)) < 5.0  # stamped by Redis, not by this host
    zero = publisher.apply(Plan(workers={"ingest": 0}, splits={"ingest": {"enrich": 1.0}}))
    assert zero.workers == {"ingest": 1}  # a prefork pool keeps one process
    assert any("split not applied" in c for c in zero.clamps)
    assert client.hget(DEFAULT_KEY, "enrich") == "4" and client.hget(DEFAULT_KEY, ":version") == "2"
    stepped = RedisPlanPublisher(client, scenario, 5.0, live_envelope(scenario, max_step=1), key="other")
    assert stepped.apply(Plan(workers={"store": 4})).workers == {"store": 2}
    with pytest.raises(KeyError, match="checkout"):
        publisher.apply(Plan(workers={"checkout": 2}))
    with pytest.raises(KeyError, match="expected some of"):
        publisher.publish({"checkout": 2})


def test_the_settings_come_from_the_configuration_then_the_environment(monkeypatch):
    conf = {"broker_url": "redis://broker:6379/0"}
    settings = PlannedSettings.from_conf(conf, "enrich@host")
    assert (settings.stage, settings.url, settings.key, settings.stale_after, settings.poll) == (
        "enrich", "redis://broker:6379/0", DEFAULT_KEY, None, 1.0,
    )  # fmt: skip
    monkeypatch.setenv("ADAPTFLOW_STAGE", "store")
    monkeypatch.setenv("ADAPTFLOW_PLANS_STALE_AFTER", "12")
    assert PlannedSettings.from_conf(conf, "enrich@host").stage == "store"
    configured = {**conf, "adaptflow_stage": "ingest", "adaptflow_plans_url": "redis://plans/1"}
    settings = PlannedSettings.from_conf(configured, "enrich@host")
    assert (settings.stage, settings.url, settings.stale_after) == ("ingest", "redis://plans/1", 12.0)
    with pytest.raises(ValueError, match=r"adaptflow_autoscale_poll = 'soon': expected a positive number"):
        PlannedSettings.from_conf({**conf, "adaptflow_autoscale_poll": "soon"}, "enrich@host")
    with pytest.raises(ValueError, match=r"'amqp://rabbit//': expected a Redis URL"):
        PlannedSettings.from_conf({"broker_url": "amqp://rabbit//"}, "enrich@host")
    monkeypatch.delenv("ADAPTFLOW_STAGE")
    with pytest.raises(ValueError, match="the worker's stage is unknown"):
        PlannedSettings.from_conf(conf, "celery")


# -- real workers of the user's app ----------------------------------------------------------------
class PlannedWorker:
    """One ``celery worker`` of the user's app, started with the deployment's config module and
    ``--autoscale=4,1``: the owner's command line plus two options, the app itself unchanged."""

    def __init__(self, broker_url: str, stage: str, log_path: Path, **env_extra: str):
        self.broker_url, self.stage, self.log_path, self.env_extra = broker_url, stage, log_path, env_extra
        self.node = f"{stage}@{socket.gethostname()}"
        self.process: subprocess.Popen | None = None

    def start(self) -> PlannedWorker:
        env = {**os.environ, "SHOP_BROKER_URL": self.broker_url, "ADAPTFLOW_PLANS_STALE_AFTER": str(STALE_AFTER)}
        env.update(self.env_extra)
        argv = [sys.executable, "-m", "celery", "-A", "tests.apps.shop", "--config", "tests.apps.shop_planned"]
        argv += ["worker", "-Q", self.stage, "-n", f"{self.stage}@%h", "--autoscale=4,1"]
        argv += ["--without-gossip", "--without-mingle", "-l", "info"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def stats(self, app) -> dict:
        return (app.control.inspect(destination=[self.node], timeout=1.0).stats() or {}).get(self.node, {})

    def pool(self, app) -> tuple[int, dict]:
        """Processes the worker lists, and its autoscaler's own account."""
        stats = self.stats(app)
        return len(stats.get("pool", {}).get("processes", [])), stats.get("autoscaler", {})

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


@pytest.fixture
def enrich_worker(broker, tmp_path, monkeypatch, request):  # noqa: F811  (the broker fixture)
    """The enrich worker; a test marked ``lingering`` gets one whose retired processes ignore
    SIGTERM (tests/apps/shop.py)."""
    monkeypatch.setenv("SHOP_BROKER_URL", broker)
    from tests.apps import shop

    forget_connections(shop.app)
    shop.app.conf.broker_url = broker
    extra = {"SHOP_RETIRED_LINGER": "1"} if "lingering" in request.fixturenames else {}
    worker = PlannedWorker(broker, "enrich", tmp_path / "enrich.log", **extra).start()
    try:
        wait_for(lambda: bool(shop.app.control.ping(destination=[worker.node], timeout=0.5)), 60, 0.5, "the worker")
        yield shop, worker
    finally:
        if extra and worker.process is not None:  # its lingering processes ignore SIGTERM
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(10)
        worker.stop()
        forget_connections(shop.app)


@pytest.fixture
def lingering() -> None:
    """Asks ``enrich_worker`` for a worker whose retired processes do not exit."""


def test_a_retired_process_that_lingers_does_not_stop_the_pool_shrinking(lingering, enrich_worker):
    """A process a shrink retired but that did not exit stays in the pool's list. The planned
    autoscaler waits for retired processes to leave the list before it shrinks again (billiard
    could pick one twice); it used to wait for good, and the pool never shrank again."""
    shop, worker = enrich_worker
    publisher = RedisPlanPublisher(client_for(shop.app.conf.broker_url), parse_scenario(SCENARIO), interval=1.0)

    def counted(n: int) -> int:
        publisher.apply(Plan(workers={"enrich": n}))
        return int(worker.pool(shop.app)[1].get("current", -1))

    wait_for(lambda: counted(3) == 3 and worker.pool(shop.app)[0] == 3, 20, 0.5, "the pool grown to 3")
    wait_for(lambda: counted(2) == 2, 20, 0.5, "the pool shrunk to 2")
    time.sleep(2)
    assert worker.pool(shop.app)[0] == 3  # the retired process is still listed
    wait_for(lambda: counted(1) == 1, 30, 0.5, "the pool shrunk to 1 despite the lingering process")
    assert "a retired process has not exited" in worker.log_path.read_text()


def test_a_planned_worker_follows_the_published_count_and_falls_back_to_celery_when_it_is_stale(enrich_worker):
    shop, worker = enrich_worker
    publisher = RedisPlanPublisher(client_for(shop.app.conf.broker_url), parse_scenario(SCENARIO), interval=1.0)

    def keeps(n: int, processes: int, following: str = "plan") -> bool:
        """Publish ``n`` (a decision loop publishes every interval), then: is the pool there?"""
        publisher.apply(Plan(workers={"enrich": n}))
        listed, autoscaler = worker.pool(shop.app)
        return listed == processes and autoscaler.get("plan", {}).get("following") == following

    wait_for(lambda: keeps(3, 3), 20, 0.5, "the enrich pool grown to the published 3")
    wait_for(lambda: keeps(1, 1), 20, 0.5, "the enrich pool shrunk to the published 1")
    for k in range(6):  # 6 orders of 1.5 s: Celery's own rule would grow the pool to its reserved 4
        shop.enrich.apply_async(({"id": k, "work": [0.0, 1.5, 0.0]},))
    wait_for(lambda: keeps(1, 1) and worker.pool(shop.app)[1]["qty"] >= 3, 20, 0.3, "orders reserved")
    for _ in range(3):  # the plan, not the queue, sizes the pool
        assert keeps(1, 1), worker.pool(shop.app)
    # the decision loop stops publishing: after STALE_AFTER s Celery's queue-length rule decides
    wait_for(lambda: worker.pool(shop.app)[0] >= 2, 20, 0.3, "Celery's own autoscaling after the plan went stale")
    assert worker.pool(shop.app)[1]["plan"]["following"] == "celery"
    wait_for(lambda: keeps(1, 1), 30, 0.5, "the pool back at the published 1 once the orders are done")
    lines = worker.log_path.read_text().splitlines()
    assert sum("stale after 3 s" in line for line in lines) == 1  # said once, though read every second
    assert sum("following the plan" in line for line in lines) == 2  # at first, and back after the stale spell


def test_a_decision_loop_on_the_users_app_sizes_its_worker_through_redis(enrich_worker, tmp_path):
    shop, worker = enrich_worker
    scenario, mapping = parse_scenario(ENRICH), load_mapping(ENRICH_MAPPING)
    stream = EventStream(shop.app).start()
    try:
        control = app_control(
            shop.app, mapping, scenario, "erlang", 1.0, stream, event_log=tmp_path / "decisions.jsonl"
        )

        def follows(n: int) -> bool:
            listed, autoscaler = worker.pool(shop.app)
            plan = autoscaler.get("plan", {})
            return listed == plan.get("desired") and listed >= n and plan.get("following") == "plan"

        control.executor.publish({"enrich": 1})  # the last decision of an earlier run: one process
        wait_for(lambda: follows(1), 20, 0.3, "the pool at the published 1")
        for k in range(24):  # 24 orders of 0.4 s at once: about 10 s of work for one process
            shop.enrich.apply_async(({"id": k, "work": [0.0, 0.4, 0.0]},))
        run = threading.Thread(target=control.coordinator.run, kwargs={"until": 6.0})
        run.start()
        wait_for(lambda: follows(2), 20, 0.3, "the pool grown to the planner's published count")
        run.join(30)
    finally:
        stream.stop()
    records = read_event_log(tmp_path / "decisions.jsonl")
    published = [r["applied"]["workers"]["enrich"] for r in records]
    assert len(records) >= 4 and max(published) >= 2
    assert control.monitor.totals.arrived == 24  # the planner saw the user's orders arrive
    assert control.ledger.pools["enrich"].autoscaler is not None  # the monitor reads the pool Celery sizes


def test_the_control_command_runs_the_loop_for_its_duration_and_refuses_bad_arguments(enrich_worker, tmp_path, capsys):
    from adaptflow.cli import main

    scenario, mapping = tmp_path / "enrich.yaml", tmp_path / "mapping.yaml"
    scenario.write_text(yaml.safe_dump(ENRICH))
    mapping.write_text(yaml.safe_dump(ENRICH_MAPPING))
    common = ["control", "--app", "tests.apps.shop:app", "--mapping", str(mapping), "--scenario", str(scenario)]
    common += ["--planner", "erlang"]
    assert main([*common, "--interval", "0", "--duration", "5"]) == 2  # refused before any connection
    # the central executor's resizes would be undone by this worker's autoscaler: refused before a decision
    assert main([*common, "--executor", "central", "--interval", "1", "--duration", "5"]) == 2
    refusal = capsys.readouterr().err
    assert "'enrich@" in refusal and "runs --autoscale" in refusal and "--executor autoscaler" in refusal
    log = tmp_path / "decisions.jsonl"
    handler = signal.getsignal(signal.SIGTERM)
    assert main([*common, "--interval", "1", "--duration", "4", "--event-log", str(log)]) == 0
    assert 3 <= len(read_event_log(log)) <= 5
    assert signal.getsignal(signal.SIGTERM) is handler  # SIGTERM stopped the loop; the caller's is back

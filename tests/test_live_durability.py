"""Nothing lost when a whole worker or Redis dies mid-run: a real redis-server (with its
append-only file, as a deployment's must run) and real Celery prefork workers (see
live_fixtures.py). Every item is counted from the run's own event stream: one ``exit`` each."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from kombu import Connection, Exchange, Queue
from kombu.transport.redis import Transport as KombuTransport

from adaptflow.runtime.celery_app import (
    MIN_VISIBILITY_TIMEOUT,
    context_of,
    default_visibility_timeout,
    longest_visit,
    make_app,
)
from adaptflow.runtime.live_run import LiveConfig
from adaptflow.runtime.redis_transport import Transport as RepairedTransport
from adaptflow.runtime.worker import WorkerProcess
from adaptflow.scenario import load_scenario

from .live_fixtures import SINGLE, app_for, events, wait_for, write_scenario

N_ITEMS = 10
WORK = Queue("work", Exchange("work", "direct"), "work")


def publish_one(url: str, body: dict) -> None:
    """One message on the ``work`` queue, published as Celery's client does."""
    with Connection(url) as publisher:
        publisher.Producer().publish(body, exchange=WORK.exchange, routing_key="work", declare=[WORK])


def single(service: dict) -> dict:
    """The one-stage scenario with another service distribution."""
    return {**SINGLE, "stages": {"work": {**SINGLE["stages"]["work"], "service": service}}}


def assert_each_item_exits_once(app, items: list[str]) -> None:
    done = Counter(e["i"] for e in events(app, "exit"))
    assert sorted(done) == sorted(items), f"lost: {sorted(set(items) - set(done))}"
    assert set(done.values()) == {1}, f"routed twice: {[i for i, n in done.items() if n > 1]}"


# ------------------------------------------------------------------------------------------------
# The visibility timeout: a rule of the run's scenario and time scale
# ------------------------------------------------------------------------------------------------
def test_visibility_timeout_is_tied_to_the_longest_visit(tmp_path: Path) -> None:
    long = load_scenario(write_scenario(tmp_path, {**single({"dist": "deterministic", "mean": 100.0}), "name": "a"}))
    assert longest_visit(long) == 100.0
    assert default_visibility_timeout(long, time_scale=1.0) == 400.0  # 4 x the longest visit
    assert default_visibility_timeout(long, time_scale=10.0) == 40.0  # in wall seconds
    assert default_visibility_timeout(long, time_scale=1000.0) == MIN_VISIBILITY_TIMEOUT
    # exponential: the 99.99th percentile is mean x ln(10^4) = 9.21 x mean
    expo = load_scenario(write_scenario(tmp_path, {**single({"dist": "exponential", "mean": 2.0}), "name": "b"}))
    assert longest_visit(expo) == pytest.approx(2.0 * 9.21, rel=0.1)
    assert longest_visit(expo) == longest_visit(expo), "every process of a run computes the same"

    app = make_app(long, "redis://127.0.0.1:1/0", time_scale=10.0)
    options = app.conf.broker_transport_options
    assert options["visibility_timeout"] == 40.0 and options["unacked_restore_interval"] == 10
    assert options["unacked_restore_throttle"] == 1 and context_of(app).visibility_timeout == 40.0
    app = make_app(long, "redis://127.0.0.1:1/0", visibility_timeout=6.0)
    assert app.conf.broker_transport_options["visibility_timeout"] == 6.0
    assert app.conf.broker_transport_options["unacked_restore_interval"] == 1
    with pytest.raises(ValueError, match="visibility_timeout"):
        make_app(long, "redis://127.0.0.1:1/0", visibility_timeout=0)
    with pytest.raises(ValueError):
        LiveConfig(broker="redis://x:1/0", scenario="mmc", duration=10, visibility_timeout=-1)
    with pytest.raises(ValueError, match="duration"):  # a run's length is bounded: a week of scenario seconds
        LiveConfig(broker="redis://x:1/0", scenario="mmc", duration=7 * 86400 + 1)
    worker = WorkerProcess(tmp_path / "a.yaml", "redis://x:1/0", "work", concurrency=1, visibility_timeout=6.0)
    assert worker.argv[-2:] == ["--visibility-timeout", "6.0"]


def test_a_visit_waits_for_redis_then_gives_up(tmp_path: Path) -> None:
    ctx = context_of(make_app(write_scenario(tmp_path, SINGLE), "redis://127.0.0.1:1/0"))
    calls = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise redis.exceptions.ConnectionError("Connection refused")
        return "routed"

    assert ctx.until_redis(flaky) == "routed" and len(calls) == 3
    with pytest.raises(redis.exceptions.ConnectionError):
        ctx.until_redis(lambda: ctx.client.ping(), patience=0.5)  # nothing listens on port 1


# ------------------------------------------------------------------------------------------------
# Live
# ------------------------------------------------------------------------------------------------
@pytest.mark.live
def test_a_visit_claim_is_idempotent_for_its_own_run(broker: str, tmp_path: Path) -> None:
    """A claim whose reply was lost in an outage is asked again by the same run: still its own."""
    ctx = context_of(app_for(write_scenario(tmp_path, SINGLE), broker))
    assert ctx.claim("visit-1", "run-a") and ctx.claim("visit-1", "run-a")
    assert not ctx.claim("visit-1", "run-b"), "a redelivered run of a finished visit does not route it"
    assert ctx.client.ttl(f"{ctx.prefix}:done:visit-1") >= 3600


@pytest.mark.live
def test_a_killed_worker_group_loses_no_item(broker: str, workers, tmp_path: Path) -> None:
    """SIGKILL of a worker's whole process group (main process and prefork children) with every
    process mid-task and the rest queued: the dead worker's unacknowledged visits go back on the
    queue after the visibility timeout, and a new worker completes every item exactly once."""
    scenario_path = write_scenario(tmp_path, SINGLE)  # 3 s visits, 0.6 s of wall time
    (worker,) = workers.start(scenario_path, broker, {"work": 4})
    app = app_for(scenario_path, broker)
    ctx = context_of(app)
    timeout = ctx.visibility_timeout
    assert timeout == MIN_VISIBILITY_TIMEOUT  # 4 x 0.6 s is under the floor
    items = [ctx.submit("jobs", k) for k in range(N_ITEMS)]
    wait_for(lambda: len(events(app, "start")) >= 4, 10, 0.02, "4 visits running")
    os.killpg(worker.pid, signal.SIGKILL)
    killed = time.time()
    worker.process.wait(5)
    running = ctx.client.hlen("unacked")
    assert running == 4 and ctx.client.llen("work") == N_ITEMS - 4, "4 visits died in the worker, 6 wait"

    workers.start(scenario_path, broker, {"work": 4})
    wait_for(lambda: len(events(app, "exit")) >= N_ITEMS, timeout * 1.25 + 15, 0.2, "every item out")
    time.sleep(0.5)  # a duplicate exit would show by now
    assert_each_item_exits_once(app, items)
    starts = Counter(e["k"] for e in events(app, "start"))
    rerun = [k for k, n in starts.items() if n == 2]
    assert len(rerun) == running and max(starts.values()) == 2, "the killed visits, and only they, ran again"
    second_starts = [float(e["t"]) for e in events(app, "start") if e["k"] in rerun][running:]
    assert min(second_starts) >= killed + timeout - 1.0, "redelivered by the visibility timeout, not earlier"
    assert ctx.client.hlen("unacked") == 0
    print(f"\nredelivered {running} visits {max(second_starts) - killed:.1f} s after the kill (timeout {timeout} s)")


@pytest.mark.live
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_redis_restart_mid_run_loses_nothing(broker: str, redis_server, workers, tmp_path: Path, how: str) -> None:
    """Redis shut down (``stop``: SIGTERM, it flushes and fsyncs its append-only file; ``kill``:
    SIGKILL, a crash, after which what it had written to the AOF is still in the OS's cache) with
    visits running and queued, and started again on the same port and directory: the queued
    tasks and the event records are all there, and every item completes exactly once (the
    visits that finished meanwhile waited for Redis to route their items)."""
    scenario_path = write_scenario(tmp_path, SINGLE)
    workers.start(scenario_path, broker, {"work": 2})
    app = app_for(scenario_path, broker)
    ctx = context_of(app)
    items = [ctx.submit("jobs", k) for k in range(N_ITEMS)]
    wait_for(lambda: len(events(app, "finish")) >= 2, 10, 0.02, "a first visit done")
    before = {"queued": ctx.client.llen("work"), "records": ctx.client.xlen(ctx.events_key)}
    getattr(redis_server, how)()
    time.sleep(1.0)  # visits finish meanwhile, and must wait for Redis to route their items
    redis_server.start()
    after = {"queued": ctx.client.llen("work"), "records": ctx.client.xlen(ctx.events_key)}
    assert before["queued"] >= 4 and after["queued"] >= before["queued"] - 2, (before, after)
    assert after["records"] >= before["records"], "the event stream survived the restart"
    assert len(events(app, "arrive")) == N_ITEMS

    wait_for(lambda: len(events(app, "exit")) >= N_ITEMS, ctx.visibility_timeout * 1.25 + 20, 0.2, "every item out")
    time.sleep(0.5)
    assert_each_item_exits_once(app, items)


@pytest.mark.live
def test_a_channel_closed_after_its_connection_leaves_unacked_messages_to_the_sweep(redis_server) -> None:
    """The state kombu's ``collect()`` leaves when a broker outage catches a channel mid-poll
    (see adaptflow.runtime.redis_transport): the channel still open, holding a message delivered
    and not acknowledged, and the transport's client dropped. Closing that channel crashed the
    worker with kombu's own transport (AttributeError, which Celery takes for unrecoverable); with
    adaptflow's, the close is quiet and the message, still in Redis's unacked set, returns to its
    queue at the first sweep after the visibility timeout."""
    redis_server.ensure_running().flush()
    options = {"visibility_timeout": 1.0, "unacked_restore_throttle": 0}

    def deliver_then_drop_the_client(transport) -> Connection:
        conn = Connection(redis_server.url, transport=transport, transport_options=options)
        publish_one(redis_server.url, {"i": 1})
        held = []
        conn.Consumer([WORK], callbacks=[lambda body, message: held.append(message)], no_ack=False).consume()
        conn.drain_events(timeout=5)
        assert len(held) == 1
        conn.transport.client = None  # what collect() leaves behind
        return conn

    stock = deliver_then_drop_the_client(KombuTransport)
    with pytest.raises(AttributeError):
        stock.default_channel.close()
    ours = deliver_then_drop_the_client(RepairedTransport)
    ours.default_channel.close()  # no exception
    client = redis.Redis.from_url(redis_server.url)
    assert client.llen("work") == 0 and client.hlen("unacked") == 2  # both waiting in the unacked set
    time.sleep(1.1)
    with Connection(redis_server.url, transport_options=options) as sweeper:
        sweeper.default_channel.qos.restore_visible()
    assert client.llen("work") == 2 and client.hlen("unacked") == 0


@pytest.mark.live
def test_a_late_ack_on_a_channel_closed_in_an_outage_is_a_connection_error(redis_server) -> None:
    """A task acknowledged late (task_acks_late) after its channel was closed in an outage, the
    connection collected: kombu's own ack raises AttributeError, which Celery's ack_log_error
    does not catch (the worker shut down as "unrecoverable"); adaptflow's raises a connection
    error, which it catches and logs, and the message waits in the unacked set for the sweep."""
    redis_server.ensure_running().flush()
    options = {"visibility_timeout": 1.0, "unacked_restore_throttle": 0}

    def delivered_then_closed(transport):
        conn = Connection(redis_server.url, transport=transport, transport_options=options)
        publish_one(redis_server.url, {"i": 3})
        held = []
        conn.Consumer([WORK], callbacks=[lambda body, message: held.append(message)], no_ack=False).consume()
        conn.drain_events(timeout=5)
        channel = conn.default_channel
        conn.transport.client = None  # what collect() leaves behind
        with contextlib.suppress(AttributeError):  # kombu's own close fails here (repair 2)
            channel.close()
        return conn, held[0]

    stock, message = delivered_then_closed(KombuTransport)
    with pytest.raises(AttributeError):
        message.ack_log_error(logging.getLogger("test"), stock.connection_errors)
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    ours, message = delivered_then_closed(RepairedTransport)
    message.ack_log_error(logging.getLogger("test"), ours.connection_errors)  # logged, not raised
    assert client.llen("work") == 0 and client.hlen("unacked") == 1
    time.sleep(1.1)
    with Connection(redis_server.url, transport_options=options) as sweeper:
        sweeper.default_channel.qos.restore_visible()
    assert client.llen("work") == 1 and client.hlen("unacked") == 0


@pytest.mark.live
def test_a_message_popped_as_the_broker_dies_is_put_back_when_it_returns(redis_server) -> None:
    """kombu pops a message (BRPOP) and only then records it as unacknowledged: a broker that
    dies in between leaves it nowhere. With kombu's own transport it is gone; with adaptflow's,
    the failed record keeps it in the worker, and the first consumer after the restart puts it
    back at the head of its queue."""
    client = redis.Redis.from_url(redis_server.url)

    def pop_then_die(transport) -> None:
        redis_server.ensure_running().flush()
        publish_one(redis_server.url, {"i": 7})
        conn = Connection(redis_server.url, transport=transport)
        channel = conn.default_channel
        channel.basic_consume("work", False, lambda message: None, "t")
        popped = json.loads(client.rpop("work"))  # what BRPOP hands the channel
        redis_server.kill()
        with pytest.raises(channel.connection_errors):
            conn.transport._callbacks["work"](popped)  # the record fails: the broker is gone
        redis_server.start()
        again = Connection(redis_server.url, transport=transport).default_channel
        again.basic_consume("work", False, lambda message: None, "t2")

    pop_then_die(KombuTransport)
    assert client.llen("work") == 0 and client.hlen("unacked") == 0  # lost
    pop_then_die(RepairedTransport)
    assert client.llen("work") == 1 and client.hlen("unacked") == 0  # back in its queue
    body = json.loads(client.lindex("work", 0))
    assert body["properties"]["delivery_info"]["redelivered"] is True

"""A user's own Celery app (tests/apps/shop.py: adaptflow did not write it, and does not change
it) observed through Celery's event stream, recorded, and its pools controlled: real Redis, real
workers."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from adaptflow.agents import Plan, read_event_log
from adaptflow.cli import main
from adaptflow.runtime.live import CeleryExecutor, CeleryMonitor, PoolLedger, WallClock
from adaptflow.runtime.live.events import EventStream
from adaptflow.runtime.live.mapping import load_mapping
from adaptflow.runtime.live.system import app_system
from adaptflow.runtime.pulses import PULSES_FILE, read_pulses
from adaptflow.runtime.record import Recorder, record
from adaptflow.scenario import parse_scenario
from adaptflow.scenario.celery_pool import CELERY_LATE_REAP

from .live_fixtures import RedisServer, broker, forget_connections, free_port, redis_server, wait_for  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "enrich", "store")
MAPPING = {
    "stages": {s: {"queues": [s], "worker": f"{s}@%h"} for s in STAGES},
    "sources": {"orders": {"tasks": ["shop.ingest"]}},
    "end": {"tasks": ["shop.store"]},
}
SCENARIO = {
    "name": "shop",
    "horizon": 3600,
    "sla": {"latency": 30.0},
    "sources": {"orders": {"process": "poisson", "rate": 1.0, "to": "ingest"}},
    "stages": {
        s: {
            "workers": {"initial": 1, "min": 1, "max": 4, "cost_per_second": 1.0},
            "service": {"dist": "exponential", "mean": 0.1},
            "next": nxt,
        }
        for s, nxt in zip(STAGES, ("enrich", "store", None), strict=True)
    },
}


class ShopWorkers:
    """One ``celery worker`` per queue of the user's app, as its owner would start them."""

    def __init__(self, broker_url: str, log_dir: Path):
        self.broker_url, self.log_dir = broker_url, log_dir
        self.processes: list[subprocess.Popen] = []

    def start(self, concurrency: int = 1) -> ShopWorkers:
        for stage in STAGES:
            self.add(stage, f"{stage}@%h", concurrency)
        return self

    def add(self, stage: str, node: str, concurrency: int, **env_extra: str) -> subprocess.Popen:
        """One more worker on ``stage``'s queue, as node ``node`` (a pod of a scaled stage)."""
        env = {**os.environ, "SHOP_BROKER_URL": self.broker_url, **env_extra}
        argv = [sys.executable, "-m", "celery", "-A", "tests.apps.shop", "worker", "-Q", stage]
        argv += ["-n", node, "-c", str(concurrency), "--without-gossip", "--without-mingle", "-l", "info"]
        log = (self.log_dir / f"{node.replace('@', '_')}.log").open("ab")
        out = {"stdout": log, "stderr": subprocess.STDOUT}
        process = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, **out)
        self.processes.append(process)
        return process

    def wait_ready(self, app) -> None:
        import socket

        names = [f"{s}@{socket.gethostname()}" for s in STAGES]
        wait_for(lambda: len(app.control.ping(destination=names, timeout=0.5) or []) == len(names), 60, 0.5, "workers")

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


@contextlib.contextmanager
def shop_on(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The shop app pointed at the broker ``url``, with a worker per stage; stopped afterwards."""
    monkeypatch.setenv("SHOP_BROKER_URL", url)
    from tests.apps import shop as module

    forget_connections(module.app)
    module.app.conf.broker_url = url
    workers = ShopWorkers(url, tmp_path).start()
    module.workers = workers  # a test may start more (the pods of a scaled stage)
    try:
        workers.wait_ready(module.app)
        yield module
    finally:
        workers.stop()
        forget_connections(module.app)


@pytest.fixture
def shop(broker, tmp_path, monkeypatch):  # noqa: F811  (the broker fixture)
    with shop_on(broker, tmp_path, monkeypatch) as module:
        yield module


@pytest.fixture
def shop_alone(tmp_path, tmp_path_factory, monkeypatch):
    """The shop on a Redis of its own, for a test that restarts its broker: a restart of the
    module's Redis left connections that a later test's inspect met closed ("Connection closed by
    server"), so the restart happens on a server no other test uses."""
    server = RedisServer(tmp_path_factory.mktemp("redis-alone")).start()
    try:
        with shop_on(server.url, tmp_path, monkeypatch) as module:
            yield module, server
    finally:
        server.kill()


def submit(shop, n: int, work=(0.05, 0.1, 0.05)) -> None:
    for k in range(n):
        shop.ingest.apply_async(({"id": k, "work": list(work)},))


SLOW_ENRICH = {  # the shop as submit_over_time loads it: enrich's 0.4 s known to the planner
    **SCENARIO,
    "stages": {
        **SCENARIO["stages"],
        "enrich": {**SCENARIO["stages"]["enrich"], "service": {"dist": "deterministic", "mean": 0.4}},
    },
}


def submit_over_time(shop, n: int, gap: float, stop: threading.Event | None = None, work=(0.01, 0.4, 0.01)) -> None:
    """``n`` orders one every ``gap`` s (fewer once ``stop`` is set): with 0.4 s at enrich and a
    gap of 0.2 s, twice what one enrich process serves, so a backlog builds while a loop that
    started meanwhile watches."""
    stop = stop or threading.Event()
    for k in range(n):
        shop.ingest.apply_async(({"id": k, "work": list(work)},))
        if stop.wait(gap):
            return


def test_the_monitor_reads_a_user_app_through_celery_events(shop, tmp_path):
    scenario = parse_scenario(SCENARIO)
    mapping = load_mapping(MAPPING)
    stream = EventStream(shop.app).start()
    try:
        ledger = PoolLedger(shop.app, mapping.workers()).sync()
        monitor = CeleryMonitor(shop.app, ledger, WallClock(), system=app_system(shop.app, mapping, scenario, stream))
        submit(shop, 12)
        seen = {"arrivals": 0, "completed": 0, "stage": dict.fromkeys(STAGES, 0), "waits": []}

        def observe() -> bool:
            snap = monitor.observe()
            seen["arrivals"] += sum(snap.source_arrivals.values())
            seen["completed"] += snap.completed
            for s in STAGES:
                seen["stage"][s] += snap.stages[s].completed
            seen["waits"].append(snap.stages["enrich"].mean_wait)
            return seen["completed"] >= 12

        wait_for(observe, 60, 1.0, "12 orders through the user's app")
    finally:
        stream.stop()
    assert seen["arrivals"] == 12 and seen["stage"] == dict.fromkeys(STAGES, 12)
    # one enrich process, 0.1 s each, 12 orders arriving at once: the queue makes real waits
    assert monitor.totals.mean_wait > 0.1 and monitor.totals.latency_percentile(95) >= 12 * 0.1


@pytest.mark.slow  # make test-slow (10 s); in make test: control --executor central grows, compare-app shrinks
def test_the_executor_grows_and_shrinks_a_user_apps_worker(shop):
    scenario = parse_scenario(SCENARIO)
    mapping = load_mapping(MAPPING)
    ledger = PoolLedger(shop.app, mapping.workers()).sync()
    executor = CeleryExecutor(shop.app, ledger, WallClock(), scenario=scenario)
    applied = executor.apply(Plan(workers={"enrich": 3}))
    assert applied.workers["enrich"] == 3
    worker = ledger.pools["enrich"].worker

    def processes() -> int:
        stats = shop.app.control.inspect(destination=[worker], timeout=2).stats() or {}
        return len(stats.get(worker, {}).get("pool", {}).get("processes", []))

    wait_for(lambda: processes() == 3, 20, 0.5, "the enrich pool at 3 processes")
    executor.apply(Plan(workers={"enrich": 1}))
    wait_for(lambda: processes() == 1, 20, 0.5, "the enrich pool back at 1")
    refused = executor.apply(Plan(workers={"ingest": 2}, splits={"ingest": {"enrich": 1.0}}))
    assert any("split not applied" in c for c in refused.clamps)


def test_the_control_command_in_shadow_only_says_so_and_in_central_resizes_a_user_apps_workers(shop, tmp_path, capsys):
    """``adaptflow control --executor shadow`` first: the loop wants a second enrich process for
    the backlog, and logs it as what it would have done; the worker keeps its one. Then
    ``--executor central`` on the same backlog: the loop sends ``pool_grow`` / ``pool_shrink`` to
    the mapped workers (run without ``--autoscale``, nothing installed in them), as compare-app's
    runs do, and keeps on for its duration. One test, one set of workers: two cost 7 s more."""
    scenario, mapping = tmp_path / "shop.yaml", tmp_path / "mapping.yaml"
    scenario.write_text(yaml.safe_dump(SLOW_ENRICH))
    mapping.write_text(yaml.safe_dump(MAPPING))
    worker = f"enrich@{socket.gethostname()}"
    seen: dict[str, list[int]] = {"shadow": [], "central": []}
    phase, done = ["shadow"], threading.Event()

    def watch() -> None:  # the enrich worker's own process list, while the loop runs
        while not done.is_set():
            stats = shop.app.control.inspect(destination=[worker], timeout=1).stats() or {}
            seen[phase[0]].append(len(stats.get(worker, {}).get("pool", {}).get("processes", [])))
            time.sleep(0.3)

    orders = threading.Thread(target=submit_over_time, args=(shop, 40, 0.2))  # seen by the loop once it listens
    watcher = threading.Thread(target=watch)
    orders.start()
    watcher.start()
    argv = ["control", "--app", "tests.apps.shop:app", "--mapping", str(mapping), "--scenario", str(scenario)]
    argv += ["--planner", "erlang", "--interval", "1", "--duration", "4"]
    try:
        assert main([*argv, "--executor", "shadow", "--event-log", str(tmp_path / "shadow.jsonl")]) == 0
        phase[0] = "central"
        assert main([*argv, "--executor", "central", "--event-log", str(tmp_path / "central.jsonl")]) == 0
        # a grown process starts at the pool's next maintenance tick (every 5 s): it may come after
        # the loop's 4 s, and the pool stays where the loop last put it
        wait_for(lambda: max(seen["central"], default=0) >= 2, 10, 0.3, "the worker's pool itself to grow")
    finally:
        done.set()
        watcher.join(10)
        orders.join(10)
    said = capsys.readouterr().out
    shadow, central = read_event_log(tmp_path / "shadow.jsonl"), read_event_log(tmp_path / "central.jsonl")
    for executor, records in (("shadow", shadow), ("central", central)):  # a decision a second, each logged
        assert 3 <= len(records) <= 5 and f"control made {len(records)} decisions ({executor})" in said
    assert max(r["plan"]["workers"]["enrich"] for r in shadow) >= 2  # the planner asked for more
    kept = [r["applied"]["workers"]["enrich"] for r in shadow]
    assert set(kept) == {1} and set(seen["shadow"]) == {1}, (kept, seen)  # nothing was sent, the worker kept one
    notes = [c for r in shadow for c in r["applied"]["clamps"] if c.startswith("shadow: enrich would be")]
    differed = sum(any(c.startswith("shadow: ") for c in r["applied"]["clamps"]) for r in shadow)
    assert notes and f"; {differed} would have changed a pool, none was sent" in said
    assert max(r["applied"]["workers"]["enrich"] for r in central) >= 2  # the backlog staffed
    assert max(seen["central"]) >= 2, seen  # the worker's own pool grew: the loop resized it, not a ledger alone


def test_a_retired_process_that_lingers_is_not_taken_for_capacity(shop):
    """A process a ``pool_shrink`` retired but that did not exit (its SIGTERM swallowed: measured
    on the example app) stays in the worker's process list and serves nothing. The ledger used
    to re-base the pool on that list, so the next decision shrank again and retired the last
    healthy process: the stage stood still with a backlog (15 s there; here, for good)."""
    default = shop.workers.processes[STAGES.index("enrich")]
    os.killpg(default.pid, signal.SIGTERM)  # the enrich queue is the lingering node's alone
    default.wait(30)
    node = "enrich@linger"
    linger = shop.workers.add("enrich", node, concurrency=2, SHOP_RETIRED_LINGER="1")
    try:
        wait_for(lambda: shop.app.control.ping(destination=[node], timeout=0.5), 60, 0.5, "the enrich node")
        stages = {**MAPPING["stages"], "enrich": {"queues": ["enrich"], "worker": node}}
        mapping = load_mapping({**MAPPING, "stages": stages})
        scenario = parse_scenario(SCENARIO)
        ledger = PoolLedger(shop.app, mapping.workers()).sync()
        ledger.SETTLE = 2.0  # seconds a resize may lag the worker's list (6 in use): a shorter test
        executor = CeleryExecutor(shop.app, ledger, WallClock(), scenario=scenario)
        assert executor.apply(Plan(workers={"enrich": 1})).workers["enrich"] == 1  # both idle: shrink(1)

        def inspect(what: str):
            return (getattr(shop.app.control.inspect(destination=[node], timeout=2), what)() or {}).get(node)

        time.sleep(ledger.SETTLE + 1)
        assert len(inspect("stats")["pool"]["processes"]) == 2  # the retired process is still listed
        stream = EventStream(shop.app).start()
        try:
            system = app_system(shop.app, mapping, scenario, stream)
            monitor = CeleryMonitor(shop.app, ledger, WallClock(), system=system)
            submit(shop, 12, work=(0.01, 0.3, 0.01))
            wait_for(lambda: inspect("active"), 20, 0.1, "enrich tasks running")
            monitor.observe()  # reconciles with the worker's list: the old ledger re-based enrich to 2
            assert ledger.pools["enrich"].target == 1
            executor.apply(Plan(workers={"enrich": 1}))  # the old executor sent shrink(1) again here
            wait_for(
                lambda: (inspect("stats") or {}).get("total", {}).get("shop.enrich", 0) == 12,
                30, 0.5, "every enrich task done by the one process that serves",
            )  # fmt: skip
        finally:
            stream.stop()
    finally:
        os.killpg(linger.pid, signal.SIGKILL)  # its lingering child ignores SIGTERM
        linger.wait(10)


def test_a_stage_run_as_many_nodes_is_read_as_one_pool(shop, tmp_path):
    """KEDA runs a stage as pods, each a Celery node of its own: ``worker: enrich@*`` reads them
    as one pool (processes, running tasks, reserved messages summed over the nodes a ping or
    their heartbeats find), re-based when a node leaves; the central executor refuses to resize
    such a group, and control in shadow reads it."""
    from adaptflow.runtime.control import app_control

    group = {**MAPPING, "stages": {**MAPPING["stages"], "enrich": {"queues": ["enrich"], "worker": "enrich@*"}}}
    mapping, scenario = load_mapping(group), parse_scenario(SCENARIO)
    pods = [shop.workers.add("enrich", f"enrich@pod-{k}", concurrency=2) for k in (1, 2)]
    nodes = ["enrich@pod-1", "enrich@pod-2"]
    wait_for(lambda: len(shop.app.control.ping(destination=nodes, timeout=0.5) or []) == 2, 60, 0.5, "the pods")
    stream = EventStream(shop.app).start()
    try:
        ledger = PoolLedger(shop.app, mapping.workers(), roster=stream.alive_nodes).sync()
        assert ledger.pools["enrich"].target == 5 and ledger.pools["ingest"].target == 1  # 1 + 2 + 2; one node
        assert ledger.nodes.pings == 1  # the stream has not heard every node's heartbeat yet: a ping
        sample = io.StringIO()
        Recorder(shop.app, mapping, tmp_path)._sample(sample)  # what `adaptflow record` writes every 5 s
        pools = json.loads(sample.getvalue().splitlines()[0])["pools"]
        assert pools == {"ingest": 1, "enrich": 5, "store": 1}
        # control in shadow only reads: a group is its summed pool, kept as it is
        shadow = app_control(shop.app, mapping, scenario, "erlang", 1.0, stream, executor="shadow")
        decisions = shadow.coordinator.steps(until=float("inf"))
        decision = next(decisions)  # the first decision, with the second of the app that followed it
        decisions.close()
        assert decision.applied.workers["enrich"] == 5 and decision.snapshot.stages["enrich"].target == 5
        with pytest.raises(ValueError, match=r"stages\.enrich\.worker: 'enrich@\*' names a group of nodes"):
            CeleryExecutor(shop.app, ledger, WallClock(), scenario=scenario)
        monitor = CeleryMonitor(shop.app, ledger, WallClock(), system=app_system(shop.app, mapping, scenario, stream))
        submit(shop, 10, work=(0.01, 1.5, 0.01))
        busy: list[int] = []

        def five_at_once() -> bool:
            busy.append(monitor.observe().stages["enrich"].busy)
            return busy[-1] == 5

        wait_for(five_at_once, 30, 0.1, "the enrich tasks running on all three nodes at once")
        # once the stream has heard every node's heartbeat, the group's nodes are known for free
        wait_for(lambda: stream.alive_nodes() is not None, 30, 0.2, "the heartbeats' roster")
        assert {"enrich@pod-1", "enrich@pod-2"} <= stream.alive_nodes()
        pings = ledger.nodes.pings
        os.killpg(pods[1].pid, signal.SIGTERM)  # KEDA removes a replica
        pods[1].wait(30)
        wait_for(lambda: "enrich@pod-2" not in stream.alive_nodes(), 10, 0.1, "pod-2's worker-offline event")

        def three_left() -> bool:
            return monitor.observe().stages["enrich"].active == 3

        wait_for(three_left, 30, 0.2, "the pool re-based on the two nodes left")
        assert ledger.pools["enrich"].target == 3
        assert ledger.nodes.pings == pings  # read through the heartbeats: not one ping more
    finally:
        stream.stop()
    assert max(busy) == 5 > 2  # more than any one node runs: the group is summed


def test_a_group_of_nodes_is_refused_where_pools_are_resized_and_matches_its_nodes():
    from adaptflow.runtime.live.nodes import _merge, covers

    # a member that did not answer makes the read partial: no task list (the monitor falls back
    # on the tasks' records), stats marked so the ledger keeps the pool rather than re-base it
    assert _merge("active", [("store@a", [{"id": 1}])], members=2) is None
    assert _merge("active", [("store@a", [{"id": 1}]), ("store@b", [])], members=2) == [{"id": 1}]
    stats = _merge("stats", [("store@a", {"pid": 7, "pool": {"processes": [1, 2]}})], members=2)
    assert stats["partial"] and stats["pool"]["processes"] == [1, 2] and stats["pid"] == (("store@a", 7),)

    group = load_mapping({**MAPPING, "stages": {**MAPPING["stages"], "store": {"queues": ["x"], "worker": "store@*"}}})
    assert group.stage_of(None, None, "store@pod-7") == "store" and covers("store@*", "store@pod-7")
    assert not covers("store@*", "enrich@pod-7") and covers("store@pod-?", "store@pod-7")
    with pytest.raises(ValueError, match=r"^mapping: stages\.store\.worker: 'store@\*' names a group.*compare-app"):
        group.require_named_workers("compare-app resets and resizes each stage's pool")
    load_mapping(MAPPING).require_named_workers("named nodes pass")


def test_the_heartbeat_roster_follows_online_heartbeat_and_offline_events():
    """The nodes a group is read from, by the worker events Celery sends (no broker needed: the
    events are handed to the stream's handler as its receiver would)."""
    from celery import Celery

    from adaptflow.runtime.live.events import ROSTER_WINDOW

    stream = EventStream(Celery("roster", broker="memory://"))
    assert stream.alive_nodes() is None  # not connected: it cannot tell
    stream._connected_now()  # subscribed, as the receiver's consume-ready callback says
    assert stream.alive_nodes() is None  # too soon: a live node may not have sent a heartbeat yet
    stream._since -= ROSTER_WINDOW
    stream._on_event({"type": "worker-online", "hostname": "store@a", "freq": 0.2})
    stream._on_event({"type": "worker-heartbeat", "hostname": "store@b", "freq": 60.0})
    stream._on_event({"type": "worker-heartbeat", "hostname": "store@c", "freq": 60.0})
    assert stream.alive_nodes() == {"store@a", "store@b", "store@c"}
    stream._on_event({"type": "worker-offline", "hostname": "store@c"})
    time.sleep(0.8)  # more than three of store@a's heartbeat periods without one
    assert stream.alive_nodes() == {"store@b"}


def test_record_writes_events_as_they_come_and_survives_a_stop_at_any_time(shop, tmp_path):
    mapping_path = tmp_path / "mapping.yaml"
    mapping_path.write_text(yaml.safe_dump(MAPPING))
    out, stop = tmp_path / "rec", threading.Event()
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(
            summary=record("tests.apps.shop:app", mapping_path, out, sample_every=1.0, stop=stop)
        )
    )
    thread.start()
    try:
        wait_for(lambda: (out / "events.jsonl").is_file(), 20, 0.2, "the recording to begin")
        time.sleep(1.0)  # the receiver subscribes before the orders are sent
        submit(shop, 5)

        def stored() -> int:
            lines = (out / "events.jsonl").read_text().splitlines()
            return sum('"task-succeeded"' in line for line in lines)

        wait_for(lambda: stored() >= 15, 60, 0.5, "15 task-succeeded events on disk while recording")
    finally:
        stop.set()
        thread.join(30)
    lines = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    sent = [e for e in lines if e["type"] == "task-sent"]
    assert len(sent) == 15 and {e["queue"] for e in sent} == set(STAGES)
    assert len({e["root_id"] for e in sent}) == 5  # the user's chain links each order's tasks
    assert not any("args" in e or "kwargs" in e or "result" in e for e in lines)  # the user's data stays out
    pools = [e for e in lines if e["type"] == "adaptflow-pools"]
    assert pools and pools[-1]["pools"] == dict.fromkeys(STAGES, 1)
    assert pools[-1]["kinds"] == dict.fromkeys(STAGES, "celery.concurrency.prefork:TaskPool")  # calibrate reads it
    for stage in STAGES:  # each worker's main process and its CPU so far, as its stats reply reports them
        readings = [line["main_cpu"][stage] for line in pools if stage in line.get("main_cpu", {})]
        assert len(readings) >= 2 and len({pid for pid, _ in readings}) == 1
        assert 0 < readings[0][1] <= readings[-1][1]
        if sys.platform.startswith("linux"):  # the pid is a live Celery worker's main process, its CPU as /proc has it
            proc = Path(f"/proc/{readings[0][0]}")
            assert b"worker" in (proc / "cmdline").read_bytes()
            ticks = (proc / "stat").read_text().rsplit(")", 1)[1].split()[11:13]  # utime, stime
            assert readings[-1][1] <= sum(map(int, ticks)) / os.sysconf("SC_CLK_TCK") + 0.02
    header = json.loads((out / "recording.json").read_text())
    assert header["stopped"] is not None and "@" not in header["broker"].split("//")[-1].split(":")[0]
    assert len(header["probes"]) == 2 and all(p > 0 for p in header["probes"])  # the CPU probe at start and stop
    pulses = read_pulses(out / PULSES_FILE)  # and the pulses throughout, within the recording
    assert len(pulses) >= 2 and (pulses[:, 2] > 0).all()
    assert header["started"] <= pulses[0, 0] and pulses[-1, 1] <= header["stopped"]
    if sys.platform.startswith("linux"):  # the share of the CPU time wanted while recording that the hypervisor took
        assert 0 <= header["steal"] < 1 and len(header["cpu_ticks"]) == 8
        assert 0 <= header["nice"] <= 1  # and the share nice'd processes took (probe.nice_share)
    assert result["summary"].task_events >= 60  # sent, received, started, succeeded for each of 15


def test_a_pool_grow_on_a_real_worker_is_calibrated_as_its_start_up_delay(shop, tmp_path):
    """Celery stamps ``task-started`` with the worker's main process, never the pool process
    that runs the task, so calibration cannot see a new process by a new pid (it read no grow at
    all on a real worker, and took the schema's 0 s): it sees one by more tasks at once than the
    pool had. Here enrich's one process is backlogged with 0.4 s tasks and grown to 2; the
    worker's pool is prefork, so the scenario takes its ticks (the grow's delay is reported)."""
    from adaptflow.runtime.calibrate import calibrate
    from adaptflow.scenario import load_scenario

    mapping_path = tmp_path / "mapping.yaml"
    mapping_path.write_text(yaml.safe_dump(MAPPING))
    out, stop = tmp_path / "rec", threading.Event()
    thread = threading.Thread(
        target=lambda: record("tests.apps.shop:app", mapping_path, out, sample_every=0.5, stop=stop)
    )
    thread.start()
    enrich = f"enrich@{__import__('socket').gethostname()}"
    try:
        wait_for(lambda: (out / "events.jsonl").is_file(), 20, 0.2, "the recording to begin")
        time.sleep(1.5)  # the receiver subscribes and a pool line is written before any work
        submit(shop, 24, work=(0.01, 0.4, 0.01))
        time.sleep(2.0)  # a backlog at enrich, on one process
        shop.app.control.pool_grow(1, destination=[enrich], reply=True, timeout=5)

        def succeeded() -> int:
            return (out / "events.jsonl").read_text().count('"task-succeeded"')

        wait_for(lambda: succeeded() >= 72, 60, 0.5, "every task done")
        time.sleep(1.0)  # a pool line after the last task
    finally:
        stop.set()
        thread.join(30)
    result = calibrate(out, tmp_path / "shop.yaml")
    startup = result.report["stages"]["enrich"]["startup"]
    assert [(g["from"], g["to"]) for g in startup["grows"]] == [(1, 2)], startup
    # billiard starts a grown process at once or at its next maintenance pass, and the queue waited
    assert 0.0 <= startup["delay"] < 6.0 and startup["grows"][0]["queue"] > 0, startup
    # a prefork worker: the scenario says how its pool starts and retires processes, ticks and all
    written = load_scenario(result.scenario).stages["enrich"].workers
    assert (written.startup_tick, written.startup_delay, written.late_reap) == (5.0, 0.08, CELERY_LATE_REAP)
    assert "a prefork pool" in startup["note"] and f"{startup['delay']:.3g} s" in startup["note"]
    turnaround = result.report["stages"]["enrich"]["turnaround"]
    assert turnaround["backlogged_gaps"] >= 20 and 0.0 < turnaround["turnaround"] < 0.2, turnaround


def test_the_event_stream_marks_a_broker_restart_as_a_gap(shop, redis_server):  # noqa: F811
    stream = EventStream(shop.app, retry=0.5).start()
    try:
        redis_server.stop()
        wait_for(lambda: bool(stream.gaps), 20, 0.2, "the stream to notice the broker gone")
        redis_server.start()
        wait_for(lambda: stream.gaps[-1].end is not None, 40, 0.2, "the stream to reconnect")
        submit(shop, 2)
        wait_for(lambda: any(e["type"] == "task-succeeded" for e in stream.drain()), 60, 0.5, "events after it")
    finally:
        stream.stop()
    gap = stream.gaps[0]
    assert gap.end > gap.start and "lost" in gap.reason


@pytest.mark.live
@pytest.mark.xdist_group("live")
def test_the_keda_command_answers_what_the_planner_wants_for_a_user_apps_stage(shop_alone, tmp_path):
    """``adaptflow keda`` end to end on a user's app: its events observed, the planner's decision
    answered over KEDA's gRPC contract to a client speaking the proto, each decision logged, a
    broker restart waited out and noted in the log (the loop's monitor is resilient, as
    ``adaptflow control``'s), and the scaler stopped on request."""
    import grpc

    from adaptflow.runtime.keda import externalscaler_pb2 as pb
    from adaptflow.runtime.keda import externalscaler_pb2_grpc as pb_grpc
    from adaptflow.runtime.keda.app import run_keda
    from adaptflow.runtime.keda.scaler import metric_name

    shop, server = shop_alone

    scenario, mapping, log = tmp_path / "shop.yaml", tmp_path / "mapping.yaml", tmp_path / "decisions.jsonl"
    scenario.write_text(yaml.safe_dump(SLOW_ENRICH))
    mapping.write_text(yaml.safe_dump(MAPPING))
    port, stop, enough = free_port(), threading.Event(), threading.Event()
    arguments = ("erlang", "tests.apps.shop:app", str(mapping), str(scenario), 1.0)
    scaler = threading.Thread(target=run_keda, args=arguments, kwargs={"port": port, "event_log": log, "stop": stop})
    orders = threading.Thread(target=submit_over_time, args=(shop, 40, 0.2, enough))  # seen once the loop listens
    scaler.start()
    orders.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    ref = pb.ScaledObjectRef(name="enrich-workers", namespace="shop", scalerMetadata={"stage": "enrich"})
    request = pb.GetMetricsRequest(scaledObjectRef=ref, metricName=metric_name("enrich"))

    def wanted() -> int:
        try:
            return pb_grpc.ExternalScalerStub(channel).GetMetrics(request, timeout=5).metricValues[0].metricValue
        except grpc.RpcError:  # not serving yet
            return 0

    try:
        wait_for(lambda: wanted() >= 2, 30, 0.5, "the planner wanting more enrich processes for the backlog")

        # a decision is logged once the next has seen the interval after it: the one that wanted
        # more is in the log a decision after the scaler answered it
        def logged_wanting_more() -> bool:
            return log.exists() and any(r["applied"]["workers"]["enrich"] >= 2 for r in read_event_log(log))

        wait_for(logged_wanting_more, 30, 0.5, "the decision wanting more enrich processes logged")
        enough.set()
        orders.join(10)
        server.stop()  # a broker restart: the loop waits it out, the last plan standing
        time.sleep(2.0)
        server.start()

        def outage_noted() -> bool:  # the monitor's reads waited out, and the events the stream lost
            notes = [c for r in read_event_log(log) for c in r["applied"]["clamps"]]
            return any("redis was unavailable" in c for c in notes) and any("events lost from" in c for c in notes)

        wait_for(outage_noted, 40, 0.5, "the broker's restart noted in the decisions' log")
    finally:
        enough.set()
        stop.set()
        scaler.join(30)
        channel.close()
        orders.join(10)
    assert not scaler.is_alive()
    records = read_event_log(log)
    assert records and max(r["applied"]["workers"]["enrich"] for r in records) >= 2
    assert sum(r["metrics"]["source_arrivals"]["orders"] for r in records) >= 1  # the user's orders seen


def test_an_unreachable_broker_is_refused_before_any_file_naming_it_without_its_password(tmp_path, monkeypatch, capsys):
    """record and compare-app check the app's broker first: a line naming it (password hidden),
    not a traceback from the first connection, and no recording directory left behind; the CLI
    says "recording" only once it records (it once announced a recording the next line refused)."""
    from celery import Celery

    from adaptflow.runtime.record import require_broker

    from .live_fixtures import free_port

    url = f"redis://:secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    named = r"broker 'redis://:\*\*@127\.0\.0\.1:\d+/0' of the app does not answer"
    with pytest.raises(ValueError, match=named) as info:
        require_broker(Celery("nowhere", broker=url), timeout=0.5)
    assert "secret" not in str(info.value)
    (tmp_path / "nowhere_app.py").write_text(f"from celery import Celery\napp = Celery('nowhere', broker={url!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING))
    with pytest.raises(ValueError, match="does not answer"):
        record("nowhere_app:app", mapping, tmp_path / "rec", duration=1.0)
    assert not (tmp_path / "rec").exists()
    capsys.readouterr()
    assert main(["record", "--app", "nowhere_app:app", "--mapping", str(mapping), "--out", str(tmp_path / "rec")]) == 2
    said = capsys.readouterr().err.splitlines()  # the error alone: no "recording ..." banner before it
    assert len(said) == 1 and said[0].startswith("adaptflow: error: broker") and "does not answer" in said[0]
    assert main(["record", "--app", "nowhere_app:app", "--mapping", str(tmp_path / "no.yaml"), "--out", "x"]) == 2
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and "no.yaml: cannot be read" in said[0]


def test_a_recording_goes_on_without_samples_while_the_broker_is_away(tmp_path, caplog):
    """A broker restart during ``adaptflow record``: its pool and queue samples fail while Redis
    is away (here: nothing listens on the broker's port), and the recording goes on without them,
    said once, rather than the recorder dying with the first ``ConnectionError``."""
    from celery import Celery

    app = Celery("away", broker=f"redis://127.0.0.1:{free_port()}/0")
    recorder = Recorder(app, load_mapping(MAPPING), tmp_path)
    recorder.nodes = None  # the queue lengths alone: the inspect path fails the same way, slower
    out = io.StringIO()
    with caplog.at_level("WARNING", logger="adaptflow.runtime.record"):
        assert recorder.sample_or_skip(out) is False and recorder.sample_or_skip(out) is False
    assert recorder.sampling_failed == 2 and out.getvalue() == ""  # nothing invented
    said = [r.getMessage() for r in caplog.records if "broker is away" in r.getMessage()]
    assert len(said) == 1  # once an outage

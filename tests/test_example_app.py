"""The example ETL app (examples/etl_app) as a user runs it: a real redis-server, one real Celery
worker per queue (``celery -A examples.etl_app.app worker``), uploads from its producer. Every
item's output must hold the aggregate computed here straight from the generator's truth (not by
the app's code), low-quality batches must have gone through repair, Celery's events must link
each item's visits by ``root_id``/``parent_id``, and adaptflow's mapping of the app must read
those events as one arrival and one exit per item. A worker killed whole loses no item."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from adaptflow.runtime.live.events import EventStream
from adaptflow.runtime.live.mapping import load_mapping
from adaptflow.runtime.live.translate import EventTranslator
from examples.etl_app import batch, steps
from examples.etl_app.app import ROUTES, make_app
from examples.etl_app.produce import Mix, RateProfile, Upload, payload, produce, schedule

from .live_fixtures import wait_for

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "etl_app"
QUEUES = tuple(ROUTES.values())
VISIBILITY_TIMEOUT = 2.0  # seconds: a dead worker's messages come back quickly in these tests


class EtlWorker:
    """One ``celery -A examples.etl_app.app worker`` for one queue, as the README starts it, in
    its own process group (stopping it stops its pool too)."""

    def __init__(self, queue: str, broker: str, output: Path, log: Path, name: str | None = None):
        self.name = (name or queue) + "@" + os.uname().nodename
        self.argv = [sys.executable, "-m", "celery", "-A", "examples.etl_app.app", "worker", "-Q", queue]
        self.argv += ["-n", self.name, "-c", "1", "-E", "--pool", "prefork", "--loglevel", "WARNING"]
        self.argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        env = {"ETL_BROKER_URL": broker, "ETL_OUTPUT_DIR": str(output), "PYTHONPATH": str(REPO)}
        self.env = os.environ | env | {"ETL_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT)}
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> EtlWorker:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def wait_ready(self, app, timeout: float = 30.0) -> None:
        def answers() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-2000:]
            return bool(app.control.ping(destination=[self.name], timeout=0.5))

        wait_for(answers, timeout, 0.0, f"worker {self.name} to answer a ping")

    def pool(self) -> list[psutil.Process]:
        assert self.process is not None
        return psutil.Process(self.process.pid).children()

    def send(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """``sig`` (SIGTERM: a warm shutdown) unless sent already, then wait; then SIGKILL to
        whatever is left of the process group (pool processes of a worker killed whole)."""
        if self.process is None:
            return
        self.send(sig)
        try:
            self.process.wait(timeout)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)


class Deployment:
    """The app's workers, the client app and its event stream, for one test."""

    def __init__(self, broker: str, directory: Path):
        self.broker, self.directory, self.output = broker, directory, directory / "out"
        self.app = make_app(broker, str(self.output), visibility_timeout=VISIBILITY_TIMEOUT)
        self.workers: dict[str, EtlWorker] = {}
        self.events = EventStream(self.app)
        self.seen: list[dict] = []  # every event received so far

    def receive(self) -> list[dict]:
        """Every event received so far (those that arrived since the last call added)."""
        self.seen.extend(self.events.drain())
        return self.seen

    def start(self, queue: str, name: str | None = None) -> EtlWorker:
        worker = EtlWorker(queue, self.broker, self.output, self.directory / f"{name or queue}.log", name)
        self.workers[name or queue] = worker.start()
        return worker

    def stop(self) -> None:
        """Every worker's warm shutdown at once (then each waited for), and the event stream."""
        for worker in self.workers.values():
            worker.send()
        for worker in self.workers.values():
            worker.stop()
        self.events.stop()


@pytest.fixture
def deployment(broker: str, tmp_path: Path) -> Iterator[Deployment]:
    """A worker per queue, all ready, and the event stream listening."""
    deployed = Deployment(broker, tmp_path)
    try:
        started = [deployed.start(queue) for queue in QUEUES]
        for worker in started:
            worker.wait_ready(deployed.app)
        deployed.events.start()
        yield deployed
    finally:
        deployed.stop()


def truth(upload: dict) -> batch.Batch:
    """What the upload's batch was meant to be, line by line."""
    return batch.generate(upload["seed"], upload["rows"], upload["dirty"])


def expected_groups(upload: dict, repaired: bool) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(orders, units, revenue in cents) per (region, product), from the generator's truth:
    clean lines, and the fixable ones if the batch was repaired."""
    lines = truth(upload)
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for record, kind in zip(lines.records, lines.kinds, strict=True):
        if kind == batch.CLEAN or (repaired and kind in batch.FIXABLE):
            group = groups[(record.region, record.product)]
            group[0] += 1
            group[1] += record.quantity
            group[2] += record.quantity * record.price_cents
    return {key: tuple(value) for key, value in groups.items()}


def wait_for_outputs(deployed: Deployment, uploads: list, timeout: float) -> None:
    paths = [steps.output_path(deployed.output, u.payload["item"]) for u in uploads]
    wait_for(lambda: all(p.exists() for p in paths), timeout, 0.2, f"{len(paths)} outputs in {deployed.output}")


# -- without a broker -------------------------------------------------------------------------------
def test_the_mapping_file_maps_every_queue_of_the_app() -> None:
    mapping = load_mapping(EXAMPLE / "mapping.yaml")
    assert mapping.queues() == {queue: [queue] for queue in QUEUES}
    assert {queue: mapping.stage_of(queue, name) for name, queue in ROUTES.items()} == {q: q for q in QUEUES}
    assert mapping.source_of("etl.parse") == "uploads" and mapping.source_of("etl.validate") is None
    assert mapping.ends_item("etl.write", "write") and not mapping.ends_item("etl.aggregate", "aggregate")
    assert mapping.workers() == {queue: f"{queue}@%h" for queue in QUEUES}


def test_the_producer_replays_the_same_uploads_from_a_seed(tmp_path: Path) -> None:
    rates = tmp_path / "rates.csv"
    rates.write_text("timestamp,rate\n0,2\n5,20\n")
    profile = RateProfile.from_csv(rates)
    first, again = schedule(profile, 10.0, seed=3), schedule(profile, 10.0, seed=3)
    assert first == again and len(first) > 20
    assert sum(u.at < 5 for u in first) < sum(u.at >= 5 for u in first)  # the rate steps up at 5 s
    other = schedule(RateProfile.constant(1.0), 10.0, seed=3)
    assert [u.payload for u in other] == [u.payload for u in first[: len(other)]]  # content keyed by index
    assert schedule(profile, 10.0, seed=4) != first
    rates.write_text("timestamp,rate\n0,2\n0,3\n")
    with pytest.raises(ValueError, match="increasing"):
        RateProfile.from_csv(rates)


@pytest.mark.parametrize(
    ("knobs", "says"),
    [
        ({"FIT_RATES": "4.8"}, "FIT_RATES '4.8' has 1 rates; expected one per seed of FIT_SEEDS '1 2'"),
        ({"FIT_RATES": "4.8 x"}, "FIT_RATES (or RATE) 'x'; expected uploads a second"),
        ({"FIT_RATES": "0.0 5"}, "FIT_RATES (or RATE) '0.0'; expected uploads a second, a number above 0"),
        ({"HELD_DURATION": "12.5"}, "HELD_DURATION '12.5'; expected the held-out runs' seconds, a whole number"),
        ({"HELD_DURATION": "0"}, "HELD_DURATION '0'; expected the held-out runs' seconds, a whole number above 0"),
    ],
)
def test_sim_to_real_refuses_knobs_it_cannot_run_before_any_work(tmp_path: Path, knobs: dict, says: str) -> None:
    """A bad FIT_RATES or HELD_DURATION is said at once, naming it, before a broker starts or OUT
    is made (the script's live runs take an hour: a typo found by the producer would cost the
    record and fit)."""
    out = tmp_path / "out"
    env = os.environ | {"FIT_SEEDS": "1 2"} | knobs
    script = subprocess.Popen(
        ["bash", str(EXAMPLE / "sim_to_real.sh"), str(out)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:  # a script that went on would start a broker and workers: its whole group is stopped
        _, stderr = script.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
    assert script.returncode == 2 and says in stderr
    assert not out.exists()


def test_a_generated_batch_has_the_share_of_bad_lines_that_validate_measures() -> None:
    upload = payload(5, seed=1, mix=Mix(rows=(1000, 1000), dirty_items=1.0))
    lines = truth(upload)
    checked = steps.validate_step(steps.parse_step(upload))
    assert checked["quality"]["bad_share"] == pytest.approx(lines.bad_share()) and checked["needs_repair"]
    assert set(lines.kinds) == {batch.CLEAN, *batch.KINDS}  # every corruption occurs in 1000 lines


# -- the live app ---------------------------------------------------------------------------------------
def _visits_by_item(events: list[dict]) -> dict[str, list[dict]]:
    """Each item's task-sent events (its visits), by root_id, the root's first, then each visit
    after the one it was sent from (the one whose uuid is its parent_id), as long as that chain
    goes; the visits it does not reach follow, by timestamp. Not by timestamp alone: a worker's
    event can carry an earlier timestamp than the event of the visit that sent it (seen once in
    a clean-clone CI run), and the chain is what the test checks."""
    visits: dict[str, list[dict]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e["timestamp"]):
        if event["type"] == "task-sent":
            visits[event["root_id"]].append(event)
    return {root: _as_chain(root, sent) for root, sent in visits.items()}


def _as_chain(root: str, sent: list[dict]) -> list[dict]:
    by_parent = {e.get("parent_id"): e for e in sent if e["uuid"] != root}
    chain = [e for e in sent if e["uuid"] == root][:1]
    while chain and chain[-1]["uuid"] in by_parent:
        chain.append(by_parent.pop(chain[-1]["uuid"]))
    return chain + [e for e in sent if e not in chain]


@pytest.mark.live
def test_every_upload_is_parsed_validated_repaired_if_need_be_aggregated_and_written(
    deployment: Deployment,
) -> None:
    uploads = schedule(RateProfile.constant(10.0), 2.0, seed=11)
    repaired = {u.payload["item"]: truth(u.payload).bad_share() > steps.QUALITY_THRESHOLD for u in uploads}
    assert 15 <= len(uploads) <= 30 and 0 < sum(repaired.values()) < len(uploads)  # both paths are taken
    roots = produce(deployment.app, uploads)
    wait_for_outputs(deployment, uploads, timeout=30)

    for upload, root in zip(uploads, roots, strict=True):
        item = upload.payload["item"]
        out = steps.read_output(steps.output_path(deployment.output, item))
        groups = {
            (g["region"], g["product"]): (g["orders"], g["units"], g["revenue_cents"]) for g in out["result"]["groups"]
        }
        assert groups == expected_groups(upload.payload, repaired[item]), item
        middle = ["repair"] if repaired[item] else []
        assert out["trail"] == ["parse", "validate", *middle, "aggregate", "write"], item
        assert ("repair" in out) == repaired[item] and out["root_id"] == root
        rows = gzip.decompress(steps.rows_path(deployment.output, item).read_bytes()).decode().splitlines()
        assert len(rows) == 1 + out["result"]["orders"] == 1 + sum(n for n, _, _ in groups.values())

    wait_for(lambda: _writes_done(deployment, roots), 10, 0.2, "every write's task-succeeded event")
    events = deployment.receive()
    visits = _visits_by_item(events)
    assert set(visits) == set(roots)
    for root, sent in visits.items():
        assert sent[0]["uuid"] == root and not sent[0].get("parent_id")
        assert [e.get("parent_id") for e in sent[1:]] == [e["uuid"] for e in sent[:-1]]  # a chain of visits
        assert all(e["queue"] == ROUTES[e["name"]] for e in sent)

    records = EventTranslator(load_mapping(EXAMPLE / "mapping.yaml")).translate(events)
    arrivals = [r["i"] for r in records if r["e"] == "arrive"]
    exits = [r["i"] for r in records if r["e"] == "exit"]
    assert sorted(arrivals) == sorted(exits) == sorted(roots)
    repairs = {r["i"] for r in records if r["e"] == "enter" and r["s"] == "repair"}
    assert repairs == {root for upload, root in zip(uploads, roots, strict=True) if repaired[upload.payload["item"]]}


def _writes_done(deployed: Deployment, roots: list[str]) -> bool:
    """Whether the events received so far hold a write's task-succeeded of every item."""
    seen = deployed.receive()
    writes = {e["uuid"]: e["root_id"] for e in seen if e["type"] == "task-sent" and e["name"] == "etl.write"}
    done = {writes[e["uuid"]] for e in seen if e["type"] == "task-succeeded" and e["uuid"] in writes}
    return done >= set(roots)


def _in_flight(client, queue: str) -> int:
    """Messages of ``queue`` delivered to a worker and not acknowledged (kombu's ``unacked`` hash:
    ``[message, exchange, routing_key]`` per delivery tag)."""
    return sum(json.loads(raw)[2] == queue for raw in client.hvals("unacked"))


@pytest.mark.slow  # a worker killed whole and redelivery after the visibility timeout (13 s): make test-slow
@pytest.mark.live
def test_a_worker_killed_whole_with_an_item_in_hand_loses_no_item(deployment: Deployment) -> None:
    """The aggregate worker's pool is frozen, so it holds an item it cannot finish; the whole
    worker is then killed (SIGKILL), and a new one started: the held item comes back after the
    visibility timeout, the queued ones are served at once, and every item is written."""
    uploads = [Upload(0.0, payload(index, seed=5)) for index in range(4)]
    victim = deployment.workers["aggregate"]
    for process in victim.pool():
        process.suspend()
    client = redis.Redis.from_url(deployment.broker)
    produce(deployment.app, uploads)
    wait_for(
        lambda: _in_flight(client, "aggregate") == 1 and client.llen("aggregate") == len(uploads) - 1,
        20, 0.1, "one upload in the frozen aggregate worker's hands, the others queued",
    )  # fmt: skip
    victim.stop(signal.SIGKILL)
    deployment.start("aggregate", "aggregate-2").wait_ready(deployment.app)
    wait_for_outputs(deployment, uploads, timeout=20)
    for upload in uploads:
        out = steps.read_output(steps.output_path(deployment.output, upload.payload["item"]))
        assert out["trail"][-2:] == ["aggregate", "write"] and out["result"]["orders"] > 0
    assert _in_flight(client, "aggregate") == 0


def test_the_service_measurer_takes_the_producers_row_range(capsys) -> None:
    """``python -m examples.etl_app.measure --rows MIN MAX`` times the uploads a producer run
    with those ``--rows`` sends (the live runs use 4000 8000, not the default mix), and refuses a
    range the producer would refuse."""
    from examples.etl_app import measure

    measure.main(["--items", "3", "--seed", "0", "--rows", "40", "40"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["parse", "3"]
    with pytest.raises(SystemExit) as refused:
        measure.main(["--items", "3", "--rows", "50", "10"])
    assert refused.value.code == 2 and "--rows is [50, 10]; expected MIN <= MAX" in capsys.readouterr().err

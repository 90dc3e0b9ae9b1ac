"""KEDA's external scaler: a real gRPC client speaking KEDA's proto to the scaler on 127.0.0.1,
over plans a real planner made from a simulated system."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor as F
from grpc_tools import protoc

from adaptflow.agents import CostModel, EventLog, MetricsSnapshot, Monitor, read_event_log
from adaptflow.agents.sim import SimClock, SimMonitor
from adaptflow.runtime.keda import externalscaler_pb2 as pb
from adaptflow.runtime.keda import externalscaler_pb2_grpc as pb_grpc
from adaptflow.runtime.keda.plans import Desired, LatestPlan, decision_loop_for
from adaptflow.runtime.keda.scaler import metric_name, serve_keda
from adaptflow.scenario import load_scenario
from adaptflow.simulator import Simulation

from .live_fixtures import free_port

ROOT = Path(__file__).resolve().parents[1]
PROTO = "adaptflow/runtime/keda/externalscaler.proto"
INTERVAL = 30.0
CALL = 30.0  # seconds a call may take before the test fails instead of hanging


@contextlib.contextmanager
def scaler(plans: Any, **options: Any) -> Iterator[pb_grpc.ExternalScalerStub]:
    """The scaler served on a free port of 127.0.0.1, and a client stub; stopped afterwards."""
    port = free_port()
    server = serve_keda(plans, "127.0.0.1", port, **options)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.ExternalScalerStub(channel)
    finally:
        channel.close()
        server.stop(grace=0).wait(CALL)


def ref(**metadata: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name="transform-workers", namespace="adaptflow", scalerMetadata=metadata)


def refused(call: Any, *args: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        result = call(*args, timeout=CALL)
        next(iter(result)) if hasattr(result, "__next__") else None
    return caught.value


@pytest.fixture(scope="module")
def etl():
    return load_scenario("etl_synthetic")


def without_json_names(messages: Any) -> None:
    """protoc's descriptor set names each field's JSON form; the Python stubs embed none."""
    for message in messages:
        for f in message.field:
            f.ClearField("json_name")
        without_json_names(message.nested_type)


def test_the_stubs_are_kedas_interface_and_match_the_shipped_proto(tmp_path):
    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{ROOT}", f"--descriptor_set_out={out}", str(ROOT / PROTO)]) == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    without_json_names(compiled.message_type)
    committed = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(committed)
    assert committed == compiled  # the committed stubs were generated from the proto as shipped
    # KEDA's wire contract (pkg/scalers/externalscaler/externalscaler.proto): names, numbers, types.
    service = pb.DESCRIPTOR.services_by_name["ExternalScaler"]
    assert service.full_name == "externalscaler.ExternalScaler"
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods == {
        "IsActive": ("ScaledObjectRef", "IsActiveResponse"),
        "StreamIsActive": ("ScaledObjectRef", "IsActiveResponse"),
        "GetMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse"),
        "GetMetrics": ("GetMetricsRequest", "GetMetricsResponse"),
        "StreamMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse"),
    }
    fields = {
        (m.name, f.name, f.number, f.type) for m in pb.DESCRIPTOR.message_types_by_name.values() for f in m.fields
    }
    assert fields == {
        ("ScaledObjectRef", "name", 1, F.TYPE_STRING),
        ("ScaledObjectRef", "namespace", 2, F.TYPE_STRING),
        ("ScaledObjectRef", "scalerMetadata", 3, F.TYPE_MESSAGE),  # map<string, string>
        ("IsActiveResponse", "result", 1, F.TYPE_BOOL),
        ("GetMetricSpecResponse", "metricSpecs", 1, F.TYPE_MESSAGE),
        ("MetricSpec", "metricName", 1, F.TYPE_STRING),
        ("MetricSpec", "targetSize", 2, F.TYPE_INT64),
        ("MetricSpec", "targetSizeFloat", 3, F.TYPE_DOUBLE),
        ("GetMetricsRequest", "scaledObjectRef", 1, F.TYPE_MESSAGE),
        ("GetMetricsRequest", "metricName", 2, F.TYPE_STRING),
        ("GetMetricsResponse", "metricValues", 1, F.TYPE_MESSAGE),
        ("MetricValue", "metricName", 1, F.TYPE_STRING),
        ("MetricValue", "metricValue", 2, F.TYPE_INT64),
        ("MetricValue", "metricValueFloat", 3, F.TYPE_DOUBLE),
    }


def test_the_metric_is_the_erlang_planners_decision_on_a_simulated_system(etl):
    sim = Simulation(etl, rng=np.random.default_rng(7))
    sim.run(20 * INTERVAL)
    loop = decision_loop_for("erlang", etl, INTERVAL, SimMonitor(sim), clock=SimClock(sim))
    (decision,) = loop.decisions(until=sim.now + INTERVAL)
    wanted = decision.plan.workers  # what the rule asked for, as the Coordinator recorded it
    initial = {name: s.workers.initial for name, s in etl.stages.items()}
    assert wanted["transform"] != initial["transform"]  # so reporting the initial pool would fail
    assert decision.applied.workers == wanted  # inside the envelope: published as asked
    with scaler(loop) as stub:
        for stage, s in etl.stages.items():
            assert s.workers.min <= wanted[stage] <= s.workers.max  # within bounds: the envelope left it
            spec = stub.GetMetricSpec(ref(stage=stage), timeout=CALL).metricSpecs
            assert [(m.metricName, m.targetSize, m.targetSizeFloat) for m in spec] == [(metric_name(stage), 1, 1.0)]
            request = pb.GetMetricsRequest(scaledObjectRef=ref(stage=stage), metricName=metric_name(stage))
            (value,) = stub.GetMetrics(request, timeout=CALL).metricValues
            assert (value.metricName, value.metricValue, value.metricValueFloat) == (
                metric_name(stage), wanted[stage], float(wanted[stage])
            )  # fmt: skip
            assert stub.IsActive(ref(stage=stage), timeout=CALL).result is True


def test_target_per_replica_is_the_metrics_target_and_is_checked():
    with scaler(LatestPlan({"parse": 7})) as stub:
        (spec,) = stub.GetMetricSpec(ref(stage="parse", targetPerReplica="4"), timeout=CALL).metricSpecs
        assert (spec.targetSize, spec.targetSizeFloat) == (4, 4.0)  # 7 workers: the HPA runs ceil(7/4) = 2 pods
        for bad in ("0", "-2", "1.5", "four", ""):
            error = refused(stub.GetMetricSpec, ref(stage="parse", targetPerReplica=bad))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"scalerMetadata.targetPerReplica = {bad!r}" in error.details()
            assert "at least 1" in error.details()


def test_an_unknown_or_missing_stage_is_an_invalid_argument_naming_field_value_and_stages():
    with scaler(LatestPlan({"parse": 2, "store": 1})) as stub:
        for call, request in [
            (stub.IsActive, ref(stage="prase")),
            (stub.GetMetricSpec, ref(stage="prase")),
            (stub.GetMetrics, pb.GetMetricsRequest(scaledObjectRef=ref(stage="prase"), metricName="x")),
            (stub.StreamIsActive, ref(stage="prase")),
        ]:
            error = refused(call, request)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "scalerMetadata.stage = 'prase'" in error.details()
            assert "['parse', 'store']" in error.details()
        error = refused(stub.IsActive, ref(scalerAddress="adaptflow-keda:6000"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "scalerMetadata.stage is missing" in error.details() and "adaptflow/transform-workers" in error.details()
        wrong = pb.GetMetricsRequest(scaledObjectRef=ref(stage="parse"), metricName=metric_name("store"))
        error = refused(stub.GetMetrics, wrong)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"expected {metric_name('parse')!r}" in error.details()


class Observed(LatestPlan):
    """A LatestPlan that tells the test which version its readers have seen, so that the test can
    publish the next decision only after the scaler's stream has read the one before."""

    def __init__(self, initial: dict[str, int]):
        super().__init__(initial)
        self._read, self.read = threading.Condition(), -1

    def wait_newer(self, version: int, timeout: float) -> Desired:
        desired = super().wait_newer(version, timeout)
        with self._read:
            self.read = max(self.read, desired.version)
            self._read.notify_all()
        return desired

    def until_read(self, version: int) -> None:
        with self._read:
            assert self._read.wait_for(lambda: self.read >= version, CALL)


def test_is_active_follows_the_plan_and_the_stream_pushes_only_changes():
    plans = Observed({"parse": 1, "store": 2})
    with scaler(plans) as stub:
        stream = stub.StreamIsActive(ref(stage="parse"), timeout=CALL)
        assert next(stream).result is True  # the current state, at once
        plans.publish({"parse": 0})
        assert next(stream).result is False
        assert stub.IsActive(ref(stage="parse"), timeout=CALL).result is False
        plans.until_read(plans.publish({"store": 5}).version)  # read by the stream: no change for parse
        plans.publish({"parse": 3})
        assert next(stream).result is True  # nothing was sent in between
        stream.cancel()


def test_open_streams_are_bounded():
    with scaler(LatestPlan({"parse": 1}), max_streams=1) as stub:
        first = stub.StreamIsActive(ref(stage="parse"), timeout=CALL)
        assert next(first).result is True
        error = refused(stub.StreamIsActive, ref(stage="parse"))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_streams" in error.details()
        assert stub.IsActive(ref(stage="parse"), timeout=CALL).result is True  # unary calls still answered
        first.cancel()


def test_a_stale_decision_is_unavailable_so_that_keda_falls_back():
    with scaler(LatestPlan({"parse": 4}), stale_after=1e-9) as stub:
        request = pb.GetMetricsRequest(scaledObjectRef=ref(stage="parse"), metricName=metric_name("parse"))
        for call, arg in [(stub.GetMetrics, request), (stub.IsActive, ref(stage="parse"))]:
            error = refused(call, arg)
            assert error.code() == grpc.StatusCode.UNAVAILABLE and "stale_after" in error.details()
        assert stub.GetMetricSpec(ref(stage="parse"), timeout=CALL).metricSpecs[0].targetSize == 1


def test_the_decision_loop_decides_on_its_thread_and_stops_at_once(etl):
    sim = Simulation(etl, rng=np.random.default_rng(3))
    loop = decision_loop_for("erlang", etl, INTERVAL, SimMonitor(sim)).start()  # a wall clock: 30 s a decision
    try:
        desired = loop.wait_newer(0, timeout=CALL)
        assert desired.version == 1 and loop.last is None  # decided; its interval still under way
    finally:
        began = time.monotonic()
        loop.stop(timeout=CALL)
    assert not loop.running and time.monotonic() - began < INTERVAL / 3  # the wait was cut short
    assert dict(desired.workers) == loop.last.applied.workers  # its (cut) interval observed on the way out


def test_each_decision_is_published_and_logged_as_the_coordinator_logs_it(etl, tmp_path):
    """``adaptflow keda --event-log``: the loop is the Coordinator, so its log is the
    Coordinator's: one record a decision, once the interval that followed it is observed."""
    sim = Simulation(etl, rng=np.random.default_rng(5))
    path = tmp_path / "decisions.jsonl"
    with EventLog(path) as log:
        loop = decision_loop_for("erlang", etl, INTERVAL, SimMonitor(sim), clock=SimClock(sim), event_log=log)
        published = []
        for decision in loop.decisions(until=3 * INTERVAL):
            published.append(loop.latest())
            assert dict(published[-1].workers) == decision.applied.workers
    records = read_event_log(path)
    assert [p.version for p in published] == [1, 2, 3] and len(records) == 3
    for record, seen in zip(records, published, strict=True):
        assert set(record) == {"decision_time", "time", "insights", "plan", "applied", "metrics", "cost"}
        assert record["applied"]["workers"] == dict(seen.workers)  # what was published, logged
    assert [(r["decision_time"], r["time"]) for r in records] == [(0.0, 30.0), (30.0, 60.0), (60.0, 90.0)]
    last = loop.last
    assert records[-1]["applied"] == last.applied.to_dict() and records[-1]["metrics"] == last.snapshot.to_dict()
    assert records[-1]["cost"] == CostModel().components(last.snapshot).to_dict()
    assert records[1]["metrics"]["completed"] > 0


class Unreachable(Monitor):
    """A system the monitor cannot read (the broker is down)."""

    def observe(self) -> MetricsSnapshot:
        raise ConnectionError("broker unreachable")


def test_a_failing_loop_is_counted_goes_on_trying_and_keeps_the_last_plan(etl):
    loop = decision_loop_for("erlang", etl, 0.05, Unreachable()).start()
    try:
        deadline = time.monotonic() + CALL
        while loop.failures < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert loop.failures >= 3 and loop.running  # it keeps trying, an interval apart
        assert loop.last_error == "ConnectionError: broker unreachable"
        assert loop.latest().version == 0 and dict(loop.latest().workers) == {"extract": 4, "transform": 9, "load": 3}
    finally:
        loop.stop(timeout=CALL)
    assert not loop.running


def test_a_planner_whose_forecaster_needs_fitting_is_refused(etl):
    with pytest.raises(ValueError, match="'predictive' forecasts with 'holt_winters'"):
        decision_loop_for("predictive", etl, INTERVAL, Unreachable())


def test_published_counts_are_checked():
    plans = LatestPlan({"parse": 1})
    with pytest.raises(KeyError, match="'prase'"):
        plans.publish({"prase": 2})
    for bad in (-1, 1.5, True, float("nan")):
        with pytest.raises(ValueError, match=r"workers\['parse'\]"):
            plans.publish({"parse": bad})
    assert plans.latest().version == 0


def test_the_example_scaledobject_fits_the_scaler_and_its_scenario(etl):
    scaled = yaml.safe_load((ROOT / "examples/keda/scaledobject.yaml").read_text())
    (trigger,) = scaled["spec"]["triggers"]
    metadata, stage = trigger["metadata"], trigger["metadata"]["stage"]
    assert trigger["type"] == "external" and trigger["metricType"] == "AverageValue"
    assert all(isinstance(v, str) for v in metadata.values())  # KEDA's metadata values are strings
    bounds = etl.stages[stage].workers
    per_replica = int(metadata["targetPerReplica"])
    assert scaled["spec"]["minReplicaCount"] == -(-bounds.min // per_replica)
    assert scaled["spec"]["maxReplicaCount"] == -(-bounds.max // per_replica)
    assert scaled["spec"]["fallback"]["replicas"] == -(-bounds.initial // per_replica)
    with scaler(LatestPlan.for_scenario(etl)) as stub:  # the metadata as KEDA passes it, scalerAddress too
        (spec,) = stub.GetMetricSpec(ref(**metadata), timeout=CALL).metricSpecs
        assert (spec.metricName, spec.targetSizeFloat) == (metric_name(stage), float(per_replica))
        request = pb.GetMetricsRequest(scaledObjectRef=ref(**metadata), metricName=spec.metricName)
        assert stub.GetMetrics(request, timeout=CALL).metricValues[0].metricValue == bounds.initial


class BrokerDown(Monitor):
    """A live monitor whose broker is away for good: each read raises what redis-py raises."""

    def __init__(self) -> None:
        from adaptflow.runtime.live import WallClock

        self.clock, self.reads = WallClock(), 0

    def observe(self) -> MetricsSnapshot:
        import redis

        self.reads += 1
        raise redis.ConnectionError("broker away")

    def lost_events(self) -> list[str]:
        return []


def test_a_loop_waiting_out_an_outage_stops_when_told(etl):
    """The resilient monitor retries a broker outage with backoff for as long as it lasts; a
    scaler told to stop meanwhile stops its loop within the longest backoff, not never."""
    down = BrokerDown()
    loop = decision_loop_for("erlang", etl, 1.0, down, clock=down.clock, resilient=True).start()
    deadline = time.monotonic() + CALL
    while down.reads < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert down.reads >= 3 and loop.running  # retrying, not failing
    began = time.monotonic()
    loop.stop(timeout=CALL)
    assert not loop.running and time.monotonic() - began < 6.0  # one backoff of at most 1 s, with margin


def test_the_deployment_loops_refuse_a_pickled_planner_before_anything(tmp_path, capsys):
    """``control`` and ``keda`` deploy: a planner whose model file is unpickled (``sb3:``) can run
    code from the file, so it is refused unless ``--allow-pickle``, before the app, mapping or
    scenario is read (none of them exists here), as ``serve`` and ``live`` refuse it."""
    from adaptflow.cli import main

    where = ["--app", "nowhere:app", "--mapping", str(tmp_path / "m.yaml"), "--scenario", str(tmp_path / "s.yaml")]
    for command, verb in (("control", "control with"), ("keda", "run the KEDA scaler with")):
        extra = ["--duration", "5"] if command == "control" else []
        assert main([command, "--planner", "sb3:model.zip", *where, *extra]) == 2
        said = capsys.readouterr().err
        assert f"refusing to {verb} 'sb3:model.zip'" in said and "pickle" in said, said
        assert main([command, "--planner", "erlang", "--fallback", "sb3:model.zip", *where, *extra]) == 2
        assert "refusing to" in capsys.readouterr().err
        assert main([command, "--planner", "sb3:model.zip", "--allow-pickle", *where, *extra]) == 2
        assert "refusing to" not in capsys.readouterr().err  # allowed: the next check (the files) refuses

"""KEDA's external scaler (gRPC service ``externalscaler.ExternalScaler``), answering with what
the planner wants.

A ScaledObject names its stage in the trigger's metadata (``stage: transform``) and, optionally,
how many of the planner's workers one replica runs (``targetPerReplica``, default 1: a pod runs a
Celery worker of that concurrency). The scaler reports the metric ``adaptflow-<stage>-workers``
with the planner's desired workers as its value and ``targetPerReplica`` as its target; with
KEDA's default metric type (``AverageValue``) the HPA sets ``ceil(value / target)`` replicas, so
the stage runs exactly the workers the planner asked for (rounded up to whole replicas).

* ``GetMetricSpec``: the metric and its target.
* ``GetMetrics``: the desired workers of the stage.
* ``IsActive``: the planner wants at least one worker (KEDA scales to ``minReplicaCount``, zero
  if allowed, when not); ``StreamIsActive`` (trigger type ``external-push``) sends it at once and
  again whenever it changes.
* ``StreamMetricSpec`` answers UNIMPLEMENTED, which KEDA takes as "poll GetMetricSpec": the
  target never changes while the scaler runs.

Every request costs constant time: a read of the latest decision (:mod:`.plans`) and of two
metadata keys. A stage the scenario does not have, or a bad ``targetPerReplica``, is
INVALID_ARGUMENT naming the field, the value and what was expected; a decision older than
``stale_after`` is UNAVAILABLE, so that KEDA applies its ``fallback`` replicas rather than freeze
the stage at a stalled loop's last plan. Open streams are bounded (``max_streams``; beyond:
RESOURCE_EXHAUSTED), each holding one thread of its own, so that streams never starve the
unary calls the HPA depends on.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

from adaptflow.runtime.keda import externalscaler_pb2 as pb
from adaptflow.runtime.keda import externalscaler_pb2_grpc as pb_grpc
from adaptflow.runtime.keda.plans import Desired, PlanSource

STAGE, TARGET = "stage", "targetPerReplica"  # the scalerMetadata keys read (KEDA adds others, ignored)
MAX_SHOWN = 80  # characters of a rejected metadata value repeated in an error


def metric_name(stage: str) -> str:
    """The stage's metric, in the characters a Kubernetes external metric name may use."""
    return "adaptflow-" + re.sub(r"[^a-z0-9-]+", "-", stage.lower()).strip("-") + "-workers"


def _shown(value: str) -> str:
    return repr(value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "...")


class KedaScaler(pb_grpc.ExternalScalerServicer):
    """The servicer over ``plans``. ``stale_after``: seconds after which the latest decision is
    too old to scale by (None: never; a :class:`~.plans.DecisionLoop` of interval T: a few T);
    ``poll``: seconds between a stream's checks that its client is still there."""

    def __init__(
        self, plans: PlanSource, stale_after: float | None = None, max_streams: int = 16, poll: float = 0.5
    ) -> None:
        if stale_after is not None and not stale_after > 0:
            raise ValueError(f"stale_after must be a positive number of seconds or None; got {stale_after}")
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1; got {max_streams}")
        if not poll > 0:
            raise ValueError(f"poll must be a positive number of seconds; got {poll}")
        self.plans, self.stale_after, self.poll = plans, stale_after, poll
        self.max_streams = max_streams
        self._streams = threading.BoundedSemaphore(max_streams)
        self._stages = frozenset(plans.stages)

    # -- reading a request -----------------------------------------------------------------------
    def _stage(self, ref: pb.ScaledObjectRef, context: grpc.ServicerContext) -> str:
        if STAGE not in ref.scalerMetadata:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"scalerMetadata.{STAGE} is missing (ScaledObject {ref.namespace}/{ref.name}); "
                f"expected one of the scenario's stages {list(self.plans.stages)}",
            )
        stage = ref.scalerMetadata[STAGE]
        if stage not in self._stages:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"scalerMetadata.{STAGE} = {_shown(stage)} is not a stage of the scenario; "
                f"expected one of {list(self.plans.stages)}",
            )
        return stage

    def _target(self, ref: pb.ScaledObjectRef, context: grpc.ServicerContext) -> int:
        text = ref.scalerMetadata.get(TARGET, "1").strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 9 and int(text) >= 1):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"scalerMetadata.{TARGET} = {_shown(text)}; expected a whole number of workers per replica, "
                "at least 1 (default 1)",
            )
        return int(text)

    def _desired(self, context: grpc.ServicerContext) -> Desired:
        return self._fresh(self.plans.latest(), context)

    def _fresh(self, desired: Desired, context: grpc.ServicerContext) -> Desired:
        """``desired``, unless it is older than ``stale_after`` (then UNAVAILABLE)."""
        age = time.monotonic() - desired.at
        if self.stale_after is not None and age > self.stale_after:
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the latest decision is {age:.1f} s old (stale_after {self.stale_after} s): the decision loop has "
                "stalled; KEDA's fallback replicas apply",
            )
        return desired

    # -- the service -----------------------------------------------------------------------------
    def IsActive(self, request: pb.ScaledObjectRef, context: grpc.ServicerContext) -> pb.IsActiveResponse:
        stage = self._stage(request, context)
        return pb.IsActiveResponse(result=self._desired(context).workers[stage] > 0)

    def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: grpc.ServicerContext
    ) -> Iterator[pb.IsActiveResponse]:
        stage = self._stage(request, context)
        if not self._streams.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.max_streams} StreamIsActive streams are open already (max_streams); retry later",
            )
        try:
            sent: bool | None = None
            version = -1
            while context.is_active():  # woken by a new decision, else every `poll` seconds
                desired = self._fresh(self.plans.wait_newer(version, self.poll), context)
                if desired.version == version:
                    continue
                version = desired.version
                active = desired.workers[stage] > 0
                if active != sent:
                    sent = active
                    yield pb.IsActiveResponse(result=active)
        finally:
            self._streams.release()

    def GetMetricSpec(self, request: pb.ScaledObjectRef, context: grpc.ServicerContext) -> pb.GetMetricSpecResponse:
        stage, target = self._stage(request, context), self._target(request, context)
        spec = pb.MetricSpec(metricName=metric_name(stage), targetSize=target, targetSizeFloat=float(target))
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    def GetMetrics(self, request: pb.GetMetricsRequest, context: grpc.ServicerContext) -> pb.GetMetricsResponse:
        stage = self._stage(request.scaledObjectRef, context)
        name = metric_name(stage)
        if request.metricName != name:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metricName = {_shown(request.metricName)}; expected {name!r} (GetMetricSpec's for "
                f"scalerMetadata.{STAGE} = {stage!r})",
            )
        workers = self._desired(context).workers[stage]
        value = pb.MetricValue(metricName=name, metricValue=workers, metricValueFloat=float(workers))
        return pb.GetMetricsResponse(metricValues=[value])


def serve_keda(
    plans: PlanSource,
    host: str = "127.0.0.1",
    port: int = 6000,
    *,
    stale_after: float | None = None,
    max_workers: int = 8,
    max_streams: int = 16,
    poll: float = 0.5,
) -> grpc.Server:
    """Start KEDA's external scaler over ``plans`` on ``host:port`` (plaintext gRPC, as KEDA
    calls a scaler without ``enableTLS``) and return the running server; ``server.stop(grace)``
    stops it. In a cluster the host is ``0.0.0.0`` (KEDA calls the pod through its Service).

    ``max_workers`` threads answer the unary calls and ``max_streams`` more hold the
    StreamIsActive streams; beyond both together a call is refused at once (RESOURCE_EXHAUSTED),
    never queued without bound. Raises RuntimeError when the address cannot be bound."""
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1; got {max_workers}")
    scaler = KedaScaler(plans, stale_after=stale_after, max_streams=max_streams, poll=poll)
    threads = max_workers + max_streams
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="adaptflow-keda"),
        maximum_concurrent_rpcs=threads,
    )
    pb_grpc.add_ExternalScalerServicer_to_server(scaler, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.add_insecure_port(address)  # raises RuntimeError when the address cannot be bound
    server.start()
    return server

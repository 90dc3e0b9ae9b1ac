"""The planner service: a Planner behind HTTP, for systems that are not driven by adaptflow's
own Coordinator.

``POST /v1/decide``: a metrics snapshot in (the same fields as :class:`MetricsSnapshot`), a plan
out. With ``insights`` in the request the service is stateless (the caller runs the analyzer, as
the Coordinator does); without, the service's own analyzer turns the stream of snapshots into
insights, so one service then serves one deployment. Malformed input is a 422 that names the
field; a planner that fails, answers out of range or misses the per-decision deadline is
replaced for that decision by the fallback planner, and counted. A learned planner is guarded
(:class:`~adaptflow.policies.guard.GuardedPlanner`, with the service's fallback rule): while the
load, forecast error or observation is outside what training saw, the rule decides, the answer
says so (``fallback``, ``reason``), and every takeover is counted by reason. ``POST /v1/reset``
forgets the past (the analyzer, the planners' own state), as a loop does when it starts: a
decision loop whose planner is this service calls it first (:mod:`.service_client`). ``GET /healthz``
(the planner's kind, whether it is guarded, and the model file's name and sha256, never a path);
``GET /metrics`` (Prometheus text: decisions, decision latency, fallbacks, guard takeovers,
deadlines missed, rejected requests). An optional bearer token guards ``/v1/decide`` and
``/metrics``.

Whatever a request holds, it costs bounded work: planning runs in a worker thread, off the event
loop (``/healthz`` and SIGTERM are served while a planner is stuck), with a deadline and a bound
on the decisions in flight (beyond it: 503); a body over 64 KiB is a 413 and a body not declared
JSON a 415 before anything is parsed. ``/docs`` (Swagger UI, whose scripts come from a CDN) is
off unless asked for; ``/openapi.json`` is always served. See :class:`Limits`.

The request schema is generated from the snapshot dataclasses of :mod:`adaptflow.agents.types`
(their fields, types and ``metadata["request"]`` marks), with the planner's own stage, source and
split names required by name: a field added to the snapshot appears in the service without being
written out here again.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at run
# time, and string annotations would not resolve names local to a function (the bearer scheme).
import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import logging
import math
import queue
import secrets
import threading
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, create_model
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adaptflow._json import EXIT_KEY, split_from_json, to_jsonable
from adaptflow.agents.interfaces import Analyzer, Planner
from adaptflow.agents.safety import SafetyEnvelope
from adaptflow.agents.types import Insights, MetricsSnapshot, Plan, StageMetrics
from adaptflow.policies.guard import REASONS, TAKEOVER, GuardedPlanner
from adaptflow.runtime.fallback import plan_problems
from adaptflow.scenario import Scenario

log = logging.getLogger(__name__)

BIG = 1e12  # counts and times beyond this are not a real system's; rejecting them keeps math finite


def _number_not_text(value: Any) -> Any:
    """JSON Schema counts 842.0 as an integer (so do schemathesis and pydantic's lax mode), but
    ``false`` or ``"3"`` is a client's bug, not a count: refuse those."""
    if isinstance(value, bool | str):
        raise ValueError("expected a number")
    return value


Count = Annotated[int, Field(ge=0, le=BIG), BeforeValidator(_number_not_text)]
Amount = Annotated[float, Strict(), Field(ge=0, le=BIG)]
Share = Annotated[float, Strict(), Field(ge=0, le=1)]
Flag = Annotated[bool, Field(strict=True)]  # not 0/1 or "yes": a typo must not pass
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, serialize_by_alias=True)


class Expected(BaseModel):
    """What the planner's observation needs from a request: these stages, sources and splits."""

    scenario: str
    stages: list[str]
    sources: list[str]
    splits: dict[str, list[str]]
    forecast_steps: int
    joins: list[str] = []  # a DAG scenario's join names (Scenario.join_names)
    classes: list[str] = []  # its job classes
    interval: float | None = None  # seconds a request's snapshot spans: the planner's decision interval


def _keyed(name: str, fields: dict[str, Any]) -> type[BaseModel]:
    """A model whose required keys are ``fields`` (names of stages, sources, ...). Aliases,
    since a stage may be called anything a YAML key can be, not only a Python identifier."""
    return create_model(
        name, __config__=STRICT, **{f"f{i}": (kind, Field(alias=key)) for i, (key, kind) in enumerate(fields.items())}
    )


def _scalar(hint: Any, request: dict[str, Any]) -> tuple[Any, Any]:
    """A snapshot field's request type and default, from its Python type and its marks."""
    if hint is bool:
        kind: Any = Flag
    elif hint is int:
        kind = Count
    else:
        kind = Annotated[float, Strict(), Field(ge=0, le=request.get("le", BIG))]
    if request.get("nan"):
        return kind | None, None  # null: NaN, nothing to measure
    return kind, ... if request.get("required") else hint()


def _keyed_field(name: str, hint: Any, keys: str, expected: Expected, stage: type[BaseModel]) -> tuple[Any, Any]:
    """A mapping field of the snapshot, keyed by the planner's ``stages``, ``sources`` or ``splits``."""
    if keys == "splits":
        if not expected.splits:  # no controllable split: only an empty mapping (what a monitor sends)
            return dict[str, dict[str, Share]], Field(default_factory=dict, max_length=0)
        shares = {o: _keyed(f"Split{i}", dict.fromkeys(ts, Share)) for i, (o, ts) in enumerate(expected.splits.items())}
        return _keyed("Splits", shares), ...
    value = typing.get_args(hint)[1]
    if keys in ("joins", "classes") and not getattr(expected, keys):  # a pipeline: only an empty mapping
        return dict[str, Count], Field(default_factory=dict, max_length=0)
    if value is StageMetrics:
        kind: Any = stage
    elif typing.get_origin(value) is list:
        kind = Annotated[list[Amount], Field(min_length=expected.forecast_steps, max_length=64)]
    else:
        kind = _scalar(value, {})[0]
    title = "".join(part.title() for part in name.split("_"))
    return _keyed(title, dict.fromkeys(getattr(expected, keys), kind)), ...


def _from_dataclass(cls: type, expected: Expected, stage: type[BaseModel] | None = None) -> type[BaseModel]:
    """The request model of a snapshot dataclass: every field not marked ``omit``, typed and
    constrained by its Python type and ``metadata["request"]``."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        request = f.metadata.get("request", {})
        if request.get("omit"):
            continue
        if "keys" in request:
            fields[f.name] = _keyed_field(f.name, hints[f.name], request["keys"], expected, stage)
        else:
            fields[f.name] = _scalar(hints[f.name], request)
    return create_model(cls.__name__, __config__=STRICT, **fields)


def request_model(expected: Expected) -> type[BaseModel]:
    """The request schema of one planner: the snapshot's fields, with its stages, sources and
    splits required by name, so the published OpenAPI schema says exactly what a valid request is."""
    stage = _from_dataclass(StageMetrics, expected)
    metrics = _from_dataclass(MetricsSnapshot, expected, stage)
    insights = _from_dataclass(Insights, expected)
    return create_model(
        "DecideRequest",
        __config__=ConfigDict(extra="forbid"),
        metrics=(metrics, Field(description="what the monitor read (adaptflow's MetricsSnapshot)")),
        insights=(
            insights | None,
            Field(None, description="the caller's analyzer output; omitted: the service's own analyzer runs"),
        ),
    )


def _from_request(cls: type, data: dict[str, Any]) -> Any:
    """A validated request's part (dumped by alias) -> the dataclass: null back to NaN, a
    split's ``"null"`` branch back to None, stages to StageMetrics."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        request = f.metadata.get("request", {})
        if f.name not in data:
            continue
        value = data[f.name]
        if request.get("nan") and value is None:
            value = math.nan
        elif request.get("keys") == "stages" and cls is MetricsSnapshot:
            value = {n: _from_request(StageMetrics, st) for n, st in value.items()}
        elif request.get("keys") == "splits":
            value = {o: split_from_json(shares) for o, shares in value.items()}
        elif isinstance(value, dict):
            value = {k: (list(v) if isinstance(v, list) else v) for k, v in value.items()}
        values[f.name] = value
    return cls(**values)


def to_snapshot(m: dict[str, Any]) -> MetricsSnapshot:
    """A validated request's metrics (dumped by alias) -> the MetricsSnapshot planners read."""
    return _from_request(MetricsSnapshot, m)


def to_insights(i: dict[str, Any]) -> Insights:
    insights = _from_request(Insights, i)
    insights.anomalies = ["quality_drift"] if insights.drift else []
    return insights


class PlanOut(BaseModel):
    workers: dict[str, int]
    splits: dict[str, dict[str, float]]
    fallback: bool = Field(
        description="the fallback planner decided: the primary failed, answered out of range, or missed the deadline"
    )
    reason: str | None = Field(default=None, description="why the primary planner's answer was not used")
    latency_ms: float


class ResetOut(BaseModel):
    reset: bool


class Health(BaseModel):
    status: str
    planner: str = Field(description="the planner's kind or label (a model's path is not shown)")
    fallback: str
    scenario: str
    interval: float | None = Field(default=None, description="the decision interval the planner was built for (s)")
    decisions: int
    model_file: str | None = Field(default=None, description="an exported model's file name, without its directory")
    model_sha256: str | None = Field(default=None, description="the sha256 of the model file being served")
    guarded: bool = Field(
        default=False, description="the fallback decides while the state is outside what the model saw in training"
    )


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may cost the service. ``deadline``: seconds from a request's arrival
    after which the fallback's plan is the answer (a 503 if not even that was ready);
    ``max_in_flight``: planning threads (a stuck planner's included); ``max_waiting``: decisions
    queued for a thread beyond those, after which a request is refused at once with 503;
    ``max_body``: bytes of a request body (beyond: 413); ``docs``: serve ``/docs``, whose Swagger
    UI page loads its scripts from a CDN (off by default; ``/openapi.json`` is always served)."""

    deadline: float = 1.0
    max_in_flight: int = 8
    max_waiting: int = 256
    max_body: int = 64 * 1024
    docs: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.deadline) and self.deadline > 0):
            raise ValueError(f"deadline must be a positive number of seconds; got {self.deadline}")
        for name in ("max_in_flight", "max_body"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be at least 0; got {self.max_waiting}")


class ServiceMetrics:
    """The Prometheus counters of one service (its own registry: two apps in a process, as in
    the tests, do not share counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter("adaptflow_decisions", "Decisions made", ["decided_by"], registry=self.registry)
        self.fallbacks = Counter(
            "adaptflow_fallbacks", "Decisions where the fallback planner took over", registry=self.registry
        )
        self.deadlines = Counter(
            "adaptflow_deadline_exceeded",
            "Decisions where the planner gave no plan within the deadline (the fallback's plan was the answer)",
            registry=self.registry,
        )
        self.rejected = Counter("adaptflow_rejected_requests", "Requests refused", ["reason"], registry=self.registry)
        self.takeovers = Counter(
            "adaptflow_guard_takeovers",
            "Times the guard handed decisions to the fallback: load, forecast error or observation outside the "
            "training range",
            ["reason"],
            registry=self.registry,
        )
        for reason in REASONS:  # every series from the start, at 0
            self.takeovers.labels(reason)
        self.guarding = Gauge(
            "adaptflow_guard_active", "1 while the guard has the fallback deciding, else 0", registry=self.registry
        )
        self.latency = Histogram(
            "adaptflow_decision_latency_seconds",
            "Time to decide (analyze, plan, check), excluding HTTP",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5),
            registry=self.registry,
        )

    def guard_event(self, record: dict[str, Any]) -> None:
        """A guarded planner's takeover or hand-back (a listener of :class:`GuardedPlanner`)."""
        taken = record["event"] == TAKEOVER
        if taken:
            self.takeovers.labels(record["reason"]).inc()
        self.guarding.set(1 if taken else 0)


DEADLINE = "deadline"  # how a reason starts when the planner ran out of time


@dataclasses.dataclass
class Attempt:
    """One decision as its thread fills it in: the fallback's plan (computed first, so that it is
    there to answer with if the primary misses the deadline) and, once decided, the answer."""

    backup: Plan | None = None


class DaemonPool:
    """At most ``size`` daemon threads taking jobs in order from a queue: reused (starting a
    thread per decision would cost about 0.1 ms), started only when none is idle, ended after
    ``idle_seconds`` without work. Daemon: a thread stuck in a planner cannot keep the process
    from exiting; and a stuck thread is one of ``size``, never a reason to start more."""

    _names = itertools.count()

    def __init__(self, size: int, idle_seconds: float = 30.0) -> None:
        self.name = f"adaptflow-decide-{next(self._names)}"
        self.size, self.idle_seconds = size, idle_seconds
        self.lock = threading.Lock()
        self.jobs: queue.SimpleQueue[tuple[Callable[[], None], Callable[[], None]]] = queue.SimpleQueue()
        self.idle = 0  # threads waiting for a job, less jobs waiting for a thread (negative: a backlog)
        self.threads = 0

    def submit(self, job: Callable[[], None], then: Callable[[], None]) -> None:
        """Run ``job`` in a thread, then ``then`` once that thread is idle again."""
        with self.lock:
            self.jobs.put((job, then))
            self.idle -= 1
            if self.idle >= 0 or self.threads >= self.size:
                return
            self.idle, self.threads = self.idle + 1, self.threads + 1
        threading.Thread(target=self._work, name=self.name, daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                job, then = self.jobs.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self.lock:
                    if self.jobs.empty():  # idle long enough: leave
                        self.idle, self.threads = self.idle - 1, self.threads - 1
                        return
                continue
            job()
            with self.lock:
                self.idle += 1
            then()

    async def run(self, work: Callable[[], Any], timeout: float, then: Callable[[], None]) -> tuple[bool, Any]:
        """``work()`` in a pool thread: (True, its result), or (False, None) after ``timeout``
        seconds, the thread left running; the event loop stays free meanwhile (``/healthz``, SIGTERM)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        def job() -> None:
            try:
                result, error = work(), None
            except BaseException as exc:  # handed to the awaiting request, raised there
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(settle, result, error)

        self.submit(job, then)
        finished, _ = await asyncio.wait({done}, timeout=timeout)
        if not finished:
            done.add_done_callback(lambda f: f.cancelled() or f.exception())  # a late failure is not "lost"
            return False, None
        return True, done.result()


class Decider:
    """One decision, as the endpoint makes it, in a worker thread with a deadline.

    The analyzer and the fallback planner (bounded work) run under one lock, the primary planner
    (maybe slow: a model, a remote call) under another, so that while a stuck primary holds its
    lock later decisions still get the fallback's plan. The fallback runs on every decision, not
    only when needed, so that a stateful rule is warm when it takes over (as FallbackPlanner)."""

    def __init__(
        self,
        planners: tuple[Planner, Planner],
        envelope: SafetyEnvelope,
        analyzer: Analyzer,
        metrics: ServiceMetrics,
        names: tuple[str, str],
        limits: Limits,
    ):
        (self.primary, self.fallback), self.envelope, self.analyzer = planners, envelope, analyzer
        self.metrics, self.names, self.limits = metrics, names, limits
        self.state_lock = threading.Lock()  # the analyzer and the fallback
        self.primary_lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(limits.max_in_flight + limits.max_waiting)
        self.pool = DaemonPool(limits.max_in_flight)
        self.decisions = 0

    def _primary(self, snapshot: MetricsSnapshot, insights: Insights, until: float) -> tuple[Plan | None, str | None]:
        """The primary's plan, or None and why not (a failure, an invalid plan, no turn before
        ``until``); a guarded primary's plan made by its fallback comes with the guard's reason."""
        if not self.primary_lock.acquire(timeout=max(0.0, until - time.monotonic())):
            return None, f"{DEADLINE}: the planner was still busy with an earlier decision ({self.limits.deadline} s)"
        try:
            plan = self.primary.plan(snapshot, insights)
            problems = plan_problems(plan, self.envelope, bounds=not self.primary.relies_on_clamping)
        except Exception as exc:  # any failure of the primary is survivable: that is the point
            problems = [f"{type(exc).__name__}: {exc}"]
        finally:
            self.primary_lock.release()
        if problems:
            return None, "; ".join(problems)
        if isinstance(self.primary, GuardedPlanner) and self.primary.active:
            return plan, f"out of the training range: {self.primary.reason}"
        return plan, None

    def _decide(self, body: dict[str, Any], attempt: Attempt, until: float) -> tuple[Plan | None, str | None]:
        """Run in a pool thread: insights, the fallback's plan, then the primary's. None: no plan
        at all before ``until`` (the request waited for a thread, the analyzer or the fallback)."""
        if time.monotonic() >= until:  # answered already (503): the state stays as it was
            return None, None
        snapshot = to_snapshot(body["metrics"])
        if not self.state_lock.acquire(timeout=max(0.0, until - time.monotonic())):
            return None, None
        try:
            insights = to_insights(body["insights"]) if body["insights"] else self.analyzer.analyze(snapshot)
            attempt.backup = self.fallback.plan(snapshot, insights)
        finally:
            self.state_lock.release()
        plan, reason = self._primary(snapshot, insights, until)
        if plan is None:
            log.warning("planner %s: %s; using the fallback's plan", self.names[0], reason)
            return attempt.backup, reason
        return plan, reason  # a reason with a plan: the guard's fallback made it

    def reset(self) -> bool:
        """Forget the past, as a loop's start does (``Planner.reset``): the analyzer's smoothed
        rates, the fallback rule's window, the primary's own state (a recurrent policy's). Waits
        for a decision in progress for at most the deadline; False if one held on longer."""
        wait = self.limits.deadline
        with contextlib.ExitStack() as held:  # released in reverse order, whatever happens
            for lock, timeout in ((self.slots, 0.0), (self.state_lock, wait), (self.primary_lock, wait)):
                if not lock.acquire(timeout=timeout):  # a slot: not waited for, as a decision's
                    return False
                held.callback(lock.release)
            self.analyzer.reset()
            self.fallback.reset()
            self.primary.reset()
        return True

    async def __call__(self, body: dict[str, Any]) -> PlanOut:
        started = time.perf_counter()
        if not self.slots.acquire(blocking=False):
            self.metrics.rejected.labels("busy").inc()
            raise HTTPException(
                503,
                f"{self.limits.max_in_flight + self.limits.max_waiting} decisions are already in progress or "
                "waiting (the planner is slow or stuck); retry later",
                headers={"Retry-After": "1"},
            )
        attempt, deadline = Attempt(), self.limits.deadline
        until = time.monotonic() + deadline
        work = functools.partial(self._decide, body, attempt, until)
        finished, result = await self.pool.run(work, deadline, then=self.slots.release)
        late = (attempt.backup, f"{DEADLINE}: the planner gave no plan within {deadline} s")
        plan, reason = result if finished else late
        if plan is None:  # not even the fallback's plan: the analyzer or the fallback was busy
            self.metrics.rejected.labels("deadline").inc()
            raise HTTPException(503, f"no plan within the {deadline} s deadline: the service is busy; retry later")
        if reason is not None and reason.startswith(DEADLINE):
            self.metrics.deadlines.inc()
        return self._answer(plan, reason, time.perf_counter() - started)

    def _answer(self, plan: Plan, reason: str | None, elapsed: float) -> PlanOut:
        self.decisions += 1
        self.metrics.latency.observe(elapsed)
        self.metrics.decisions.labels(self.names[0] if reason is None else self.names[1]).inc()
        if reason is not None:
            self.metrics.fallbacks.inc()
        return plan_out(plan, reason is not None, reason, elapsed)


def plan_out(plan: Plan, used_fallback: bool, reason: str | None, elapsed: float) -> PlanOut:
    return PlanOut(
        workers={k: int(v) for k, v in plan.workers.items()},
        splits=to_jsonable(plan.splits),
        fallback=used_fallback,
        reason=reason,
        latency_ms=elapsed * 1000,
    )


def invalid_request(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own error shape (loc, msg, type: what the OpenAPI schema promises), plus the
    field as one dotted name and the offending input, shortened, for a human reading it."""
    errors = [
        {
            "loc": list(e["loc"]),
            "msg": e["msg"],
            "type": e["type"],
            "field": ".".join(str(p) for p in e["loc"][1:]),
            "input": repr(e.get("input"))[:200],
        }
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": errors})


def _json_media_type(value: str) -> bool:
    kind = value.split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class RequestGuard:
    """ASGI middleware, before any parsing: a body over ``max_body`` bytes is a 413 (read no
    further than the limit, whatever Content-Length says or omits), a POST to one of the
    ``json_paths`` whose body is not declared JSON a 415 (the JSON parser would otherwise read
    text/plain or a form as JSON). Other methods and paths go on to the router (405, 404)."""

    def __init__(self, app: ASGIApp, max_body: int, rejected: Counter, json_paths: frozenset[str]) -> None:
        self.app, self.max_body, self.rejected, self.json_paths = app, max_body, rejected, json_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        posted = scope["method"] == "POST" and scope["path"] in self.json_paths
        if posted and not _json_media_type(headers.get("content-type", "")):
            given = f"expected Content-Type application/json, got {headers.get('content-type') or 'none'}"
            return await self._refuse(415, "media_type", given, scope, send)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return await self._refuse(413, "too_large", f"request body over {self.max_body} bytes", scope, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return None
            chunks.append(message.get("body", b""))
            size, more = size + len(chunks[-1]), message.get("more_body", False)
            if size > self.max_body:
                return await self._refuse(413, "too_large", f"request body over {self.max_body} bytes", scope, send)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, status: int, reason: str, detail: str, scope: Scope, send: Send) -> None:
        self.rejected.labels(reason).inc()

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await JSONResponse({"detail": detail}, status_code=status)(scope, nothing, send)


UNAUTHORIZED = {401: {"description": "missing or wrong bearer token"}}
BUSY = {503: {"description": "a decision held the planner past the deadline"}}
REFUSED = {
    400: {"description": "the body could not be parsed (not JSON, or not UTF-8)"},
    413: {"description": "the request body is larger than the service accepts (64 KiB by default)"},
    415: {"description": "the request body is not declared application/json"},
    503: {"description": "no plan in time: too many decisions waiting, or the deadline passed with no plan"},
}


def _guarded_app(limits: Limits, metrics: ServiceMetrics) -> FastAPI:
    """The FastAPI app, behind the RequestGuard, with the docs pages only if asked for."""
    app = FastAPI(
        title="adaptflow planner service",
        version="1",
        description="A trained (or baseline) adaptflow planner: metrics snapshot in, plan out.",
        docs_url="/docs" if limits.docs else None,
        redoc_url=None,
    )
    guard = {"max_body": limits.max_body, "rejected": metrics.rejected, "json_paths": frozenset({"/v1/decide"})}
    app.add_middleware(RequestGuard, **guard)
    return app


def _authorizer(token: str | None, metrics: ServiceMetrics) -> Callable[..., None]:
    """The dependency that guards an endpoint with the bearer ``token`` (none: open), each
    refusal counted."""
    bearer = HTTPBearer(auto_error=False, description="required when the service was started with a token")

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            metrics.rejected.labels("unauthorized").inc()
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return authorize


def create_app(
    planner: Planner,
    analyzer: Analyzer,
    envelope: SafetyEnvelope,
    expected: Expected,
    fallback: Planner,
    token: str | None = None,
    names: tuple[str, str] = ("planner", "fallback"),
    limits: Limits | None = None,
    model: dict[str, str] | None = None,
) -> FastAPI:
    """The service around ``planner``; ``fallback`` decides when it fails, answers out of range or
    misses the deadline (a guarded ``planner`` has its own fallback for states outside its
    training range: its takeovers are counted here). ``envelope`` holds the bounds a plan must
    respect; ``expected`` what a request must carry; ``limits`` what one request may cost;
    ``model`` the served model's ``file`` name and ``sha256`` for ``/healthz``."""
    DecideRequest = request_model(expected)  # a class, named as one
    limits = limits or Limits()
    metrics = ServiceMetrics()
    decide_one = Decider((planner, fallback), envelope, analyzer, metrics, names, limits)
    if isinstance(planner, GuardedPlanner):
        planner.add_listener(metrics.guard_event)
    app = _guarded_app(limits, metrics)
    authorize = _authorizer(token, metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.rejected.labels("invalid").inc()
        return invalid_request(exc)

    @app.post("/v1/decide", response_model=PlanOut, dependencies=[Depends(authorize)], responses=REFUSED | UNAUTHORIZED)
    async def decide(request: DecideRequest) -> PlanOut:
        # The planner runs in a worker thread with a deadline: the event loop stays free.
        return await decide_one(request.model_dump(by_alias=True))

    @app.post("/v1/reset", response_model=ResetOut, dependencies=[Depends(authorize)], responses=BUSY | UNAUTHORIZED)
    def reset() -> ResetOut:  # not async: it may wait for a decision in progress (at most two deadlines)
        """Forget the past (the analyzer, the planners' own state), as a decision loop does when it
        starts: a loop whose planner is this service calls it first."""
        if not decide_one.reset():
            metrics.rejected.labels("busy").inc()
            raise HTTPException(503, "a decision is still in progress; retry later", headers={"Retry-After": "1"})
        return ResetOut(reset=True)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:  # async: answers on the event loop, needing no free thread
        model_id = {f"model_{k}": v for k, v in (model or {}).items()}
        return Health(
            status="ok", planner=names[0], fallback=names[1], scenario=expected.scenario, interval=expected.interval,
            decisions=decide_one.decisions, guarded=isinstance(planner, GuardedPlanner), **model_id,
        )  # fmt: skip

    text = {200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}}

    @app.get("/metrics", dependencies=[Depends(authorize)], response_class=Response, responses=text | UNAUTHORIZED)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.decider = decide_one
    return app


def expected_for(scenario: Scenario, forecast_steps: int = 4, interval: float | None = None) -> Expected:
    """What requests must carry for a planner of ``scenario`` deciding every ``interval`` seconds."""
    return Expected(
        scenario=scenario.name,
        stages=list(scenario.stages),
        sources=list(scenario.sources),
        splits={
            o: [EXIT_KEY if b.to is None else b.to for b in s.split] for o, s in scenario.controllable_splits().items()
        },
        forecast_steps=forecast_steps,
        joins=scenario.join_names(),
        classes=list(scenario.classes),
        interval=interval,
    )


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, grace: float = 2.0) -> None:
    """Run the service on uvicorn (blocking), one process: the analyzer's state lives in it. On
    SIGTERM or SIGINT requests in progress get ``grace`` seconds (a decision takes at most its
    deadline) before they are cancelled, so the process stops within a few seconds."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=grace)


def public_name(spec: str) -> str:
    """A planner spec as the service shows it (``/healthz``, metric labels): a learned model by its
    label or kind (``onnx``), never by its path; a rule by its spec."""
    from adaptflow.policies.registry import LEARNED, parse_planner, split_label

    label, rest = split_label(spec)
    if label != rest:
        return label
    name, _ = parse_planner(spec)
    return name if name in LEARNED else spec


def model_identity(path: str | Path) -> dict[str, str]:
    """An exported model's file name and sha256 (of the file served, not the sidecar's claim)."""
    path = Path(path)
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def app_for(
    planner: str,
    scenario: str | None = None,
    interval: float | None = None,
    fallback: str = "erlang",
    token: str | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """The service for a planner spec (``onnx:PATH``, ``sb3:PATH`` or a baseline such as
    ``threshold``), as ``adaptflow serve`` builds it. An exported planner brings its scenario
    and decision interval; other planners need ``scenario`` (a name or YAML path)."""
    from adaptflow.agents.analyzers import ready_analyzer
    from adaptflow.agents.safety import envelope_for
    from adaptflow.policies.registry import make_planner, parse_planner
    from adaptflow.scenario import load_scenario, parse_scenario

    name, params = parse_planner(planner)
    spec, model = None, None
    if name == "onnx":
        from adaptflow.policies.onnx import read_export

        onnx_file, meta = read_export(params["path"])
        model = model_identity(onnx_file)
        spec = load_scenario(scenario) if scenario else parse_scenario(meta["scenario"])
        interval = interval or float(meta["decision_interval"])
    elif scenario is None:
        raise ValueError(f"planner {planner!r} needs a scenario (--scenario NAME or PATH)")
    spec = spec or load_scenario(scenario)
    interval = interval or 30.0
    primary, forecaster = make_planner(planner, spec, interval, guard_fallback=fallback)  # guarded by the same rule
    backup, _ = make_planner(fallback, spec, interval)
    # The analyzer an exported planner carries (no simulation at start), or an EWMA one; only a
    # Holt-Winters forecaster with nothing saved (a rule, an older sidecar) is fitted, by simulation.
    analyzer = ready_analyzer(primary, spec, interval, forecaster)
    if analyzer is None:
        from adaptflow.agents.fitting import analyzer_for

        analyzer = analyzer_for(primary, spec, interval, forecaster)
    analyzer.reset()
    expected = expected_for(spec, analyzer.forecast_steps, interval)
    names = (public_name(planner), public_name(fallback))
    return create_app(primary, analyzer, envelope_for(spec), expected, backup, token, names, limits, model)

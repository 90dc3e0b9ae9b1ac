"""The planner service: a Planner behind HTTP, for systems that are not driven by adaptflow's
own Coordinator.

``POST /v1/decide``: a metrics snapshot in (the same fields as :class:`MetricsSnapshot`), a plan
out. With ``insights`` in the request the service is stateless (the caller runs the analyzer, as
the Coordinator does); without, the service's own analyzer turns the stream of snapshots into
insights, so one service then serves one deployment. Malformed input is a 422 that names the
field; a planner that fails or answers out of range is replaced for that decision by the
fallback planner, and counted. ``GET /healthz``; ``GET /metrics`` (Prometheus text: decisions,
decision latency, fallbacks, rejected requests). An optional bearer token guards ``/v1/decide``
and ``/metrics``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at run
# time, and string annotations would not resolve names local to create_app (the bearer scheme).
import math
import secrets
import threading
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, create_model

from adaptflow.agents import Analyzer, Insights, MetricsSnapshot, Planner, StageMetrics
from adaptflow.agents.safety import SafetyEnvelope
from adaptflow.runtime.fallback import FallbackPlanner
from adaptflow.scenario import Scenario

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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StageMetricsIn(_Strict):
    queue_length: Count
    busy: Count
    active: Count
    starting: Count = 0
    target: Count
    arrivals: Count = 0
    completed: Count = 0
    drops: Count = 0
    failures: Count = 0
    detected: Count = 0
    mean_wait: Amount | None = None  # null: nothing started service in the interval
    mean_queue_length: Amount = 0.0
    # null: no ready workers. A hair above 1 is a ratio of two time integrals rounded apart
    # (busy and ready worker-seconds), not an error: the encoder clips it to 1.
    utilization: Annotated[float, Strict(), Field(ge=0, le=1 + 1e-6)] | None = None
    worker_seconds: Amount = 0.0
    cost: Amount = 0.0


class _Common(_Strict):
    """The scalar fields of a metrics snapshot: the interval that just ended and the state now."""

    time: Amount
    interval: Annotated[float, Strict(), Field(ge=0, le=BIG)]  # 0: the first snapshot of a run
    completed: Count = 0
    drops: Count = 0
    failed: Count = 0
    sla_violations: Count = 0
    escapes: Count = 0
    caught: Count = 0
    mean_latency: Amount | None = None
    p95_latency: Amount | None = None
    in_system: Count = 0


class Expected(BaseModel):
    """What the planner's observation needs from a request: these stages, sources and splits."""

    scenario: str
    stages: list[str]
    sources: list[str]
    splits: dict[str, list[str]]
    forecast_steps: int


def _keyed(name: str, fields: dict[str, Any]) -> type[BaseModel]:
    """A model whose required keys are ``fields`` (names of stages, sources, ...). Aliases,
    since a stage may be called anything a YAML key can be, not only a Python identifier."""
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False, serialize_by_alias=True),
        **{f"f{i}": (kind, Field(alias=key)) for i, (key, kind) in enumerate(fields.items())},
    )


def request_model(expected: Expected) -> type[BaseModel]:
    """The request schema of one planner: its stages, sources and splits are required by name,
    so the published OpenAPI schema says exactly what a valid request is."""
    stages = _keyed("Stages", {s: StageMetricsIn for s in expected.stages})
    sources = _keyed("SourceArrivals", {s: Count for s in expected.sources})
    splits = _keyed(
        "Splits", {o: _keyed(f"Split{i}", {t: Share for t in ts}) for i, (o, ts) in enumerate(expected.splits.items())}
    )
    metrics = create_model(
        "Metrics",
        __base__=_Common,
        stages=(stages, ...),
        source_arrivals=(sources, ...),
        # no controllable split: only an empty mapping (what a monitor sends) is valid
        splits=(splits, ...)
        if expected.splits
        else (dict[str, dict[str, Share]], Field(default_factory=dict, max_length=0)),
    )
    rates = _keyed("Rates", {s: Amount for s in expected.sources})
    steps = Annotated[list[Amount], Field(min_length=expected.forecast_steps, max_length=64)]
    insights = create_model(
        "Insights",
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
        rates=(rates, ...),
        forecasts=(_keyed("Forecasts", {s: steps for s in expected.sources}), ...),
        stage_rates=(_keyed("StageRates", {s: Amount for s in expected.stages}), ...),
        bad_rate=(Share | None, None),
        drift=(Annotated[bool, Field(strict=True)], False),  # not 0/1 or "yes": a typo must not pass
    )
    return create_model(
        "DecideRequest",
        __config__=ConfigDict(extra="forbid"),
        metrics=(metrics, Field(description="what the monitor read (adaptflow's MetricsSnapshot)")),
        insights=(
            insights | None,
            Field(None, description="the caller's analyzer output; omitted: the service's own analyzer runs"),
        ),
    )


class PlanOut(BaseModel):
    workers: dict[str, int]
    splits: dict[str, dict[str, float]]
    fallback: bool = Field(description="the fallback planner decided, because the primary failed")
    reason: str | None = Field(default=None, description="why the primary planner's answer was refused")
    latency_ms: float


class Health(BaseModel):
    status: str
    planner: str
    fallback: str
    scenario: str
    decisions: int


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def _key(k: str) -> str | None:
    return None if k == "null" else k


def to_snapshot(m: dict[str, Any]) -> MetricsSnapshot:
    """A validated request's metrics (dumped by alias) -> the MetricsSnapshot planners read."""
    return MetricsSnapshot(
        time=m["time"],
        interval=m["interval"],
        stages={
            n: StageMetrics(**{**st, "mean_wait": _nan(st["mean_wait"]), "utilization": _nan(st["utilization"])})
            for n, st in m["stages"].items()
        },
        source_arrivals=dict(m["source_arrivals"]),
        completed=m["completed"],
        drops=m["drops"],
        failed=m["failed"],
        sla_violations=m["sla_violations"],
        escapes=m["escapes"],
        caught=m["caught"],
        mean_latency=_nan(m["mean_latency"]),
        splits={o: {_key(k): v for k, v in p.items()} for o, p in m["splits"].items()},
        p95_latency=_nan(m["p95_latency"]),
        in_system=m["in_system"],
    )


def to_insights(i: dict[str, Any]) -> Insights:
    return Insights(
        rates=dict(i["rates"]),
        forecasts={k: list(v) for k, v in i["forecasts"].items()},
        stage_rates=dict(i["stage_rates"]),
        bad_rate=_nan(i["bad_rate"]),
        drift=i["drift"],
        anomalies=["quality_drift"] if i["drift"] else [],
    )


def create_app(
    planner: Planner,
    analyzer: Analyzer,
    envelope: SafetyEnvelope,
    expected: Expected,
    fallback: Planner,
    token: str | None = None,
    names: tuple[str, str] = ("planner", "fallback"),
) -> FastAPI:
    """The service around ``planner``; ``fallback`` decides when it fails or answers out of range.
    ``envelope`` holds the bounds a plan must respect; ``expected`` what a request must carry."""
    DecideRequest = request_model(expected)  # a class, named as one
    guarded = FallbackPlanner(planner, fallback, envelope)
    lock = threading.Lock()  # one analyzer and stateful planners: one decision at a time
    registry = CollectorRegistry()
    decisions = Counter("adaptflow_decisions", "Decisions made", ["decided_by"], registry=registry)
    fallbacks = Counter("adaptflow_fallbacks", "Decisions where the fallback planner took over", registry=registry)
    rejected = Counter("adaptflow_rejected_requests", "Requests refused", ["reason"], registry=registry)
    latency = Histogram(
        "adaptflow_decision_latency_seconds",
        "Time to decide (analyze, plan, check), excluding HTTP",
        buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        registry=registry,
    )
    bearer = HTTPBearer(auto_error=False, description="required when the service was started with a token")

    app = FastAPI(
        title="adaptflow planner service",
        version="1",
        description="A trained (or baseline) adaptflow planner: metrics snapshot in, plan out.",
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        rejected.labels("invalid").inc()
        # FastAPI's own error shape (loc, msg, type: what the OpenAPI schema promises), plus the
        # field as one dotted name and the offending input, shortened, for a human reading it.
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

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            rejected.labels("unauthorized").inc()
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.post(
        "/v1/decide",
        response_model=PlanOut,
        dependencies=[Depends(authorize)],
        responses={
            400: {"description": "the body could not be parsed (not JSON, or not UTF-8)"},
            401: {"description": "missing or wrong bearer token"},
        },
    )
    async def decide(request: DecideRequest) -> PlanOut:
        # async although it never awaits: a decision takes tens of microseconds of CPU, less than
        # a hop through the thread pool that FastAPI would use for a plain function.
        started = time.perf_counter()
        body = request.model_dump(by_alias=True)
        snapshot = to_snapshot(body["metrics"])
        with lock:
            insights = to_insights(body["insights"]) if body["insights"] else analyzer.analyze(snapshot)
            plan = guarded.plan(snapshot, insights)
            used_fallback, reason = guarded.used_fallback, guarded.last_reason if guarded.used_fallback else None
        elapsed = time.perf_counter() - started
        latency.observe(elapsed)
        decisions.labels(names[1] if used_fallback else names[0]).inc()
        if used_fallback:
            fallbacks.inc()
        return PlanOut(
            workers={k: int(v) for k, v in plan.workers.items()},
            splits={o: {("null" if t is None else t): p for t, p in s.items()} for o, s in plan.splits.items()},
            fallback=used_fallback,
            reason=reason,
            latency_ms=elapsed * 1000,
        )

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return Health(
            status="ok", planner=names[0], fallback=names[1], scenario=expected.scenario, decisions=guarded.decisions
        )

    @app.get(
        "/metrics",
        dependencies=[Depends(authorize)],
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
            401: {"description": "missing or wrong bearer token"},
        },
    )
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.state.planner = guarded
    return app


def expected_for(scenario: Scenario, forecast_steps: int = 4) -> Expected:
    """What requests must carry for a planner of ``scenario``."""
    return Expected(
        scenario=scenario.name,
        stages=list(scenario.stages),
        sources=list(scenario.sources),
        splits={
            o: ["null" if b.to is None else b.to for b in s.split] for o, s in scenario.controllable_splits().items()
        },
        forecast_steps=forecast_steps,
    )


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service on uvicorn (blocking), one process: the analyzer's state lives in it."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")


def app_for(
    planner: str,
    scenario: str | None = None,
    interval: float | None = None,
    fallback: str = "erlang",
    token: str | None = None,
) -> FastAPI:
    """The service for a planner spec (``onnx:PATH``, ``sb3:PATH`` or a baseline such as
    ``threshold``), as ``adaptflow serve`` builds it. An exported planner brings its scenario
    and decision interval; other planners need ``scenario`` (a name or YAML path)."""
    from adaptflow.agents import StandardAnalyzer, analyzer_options, envelope_for
    from adaptflow.experiments.planners import make_planner, parse_planner, split_label
    from adaptflow.scenario import load_scenario, parse_scenario

    name, params = parse_planner(planner)
    spec = None
    if name == "onnx":
        from adaptflow.runtime.onnx_planner import read_export

        _, meta = read_export(params["path"])
        spec = load_scenario(scenario) if scenario else parse_scenario(meta["scenario"])
        interval = interval or float(meta["decision_interval"])
    elif scenario is None:
        raise ValueError(f"planner {planner!r} needs a scenario (--scenario NAME or PATH)")
    spec = spec or load_scenario(scenario)
    interval = interval or 30.0
    primary, forecaster = make_planner(planner, spec, interval)
    backup, _ = make_planner(fallback, spec, interval)
    options = analyzer_options(primary, forecaster)
    analyzer = StandardAnalyzer.for_scenario(spec, interval, **options)
    analyzer.reset()
    expected = expected_for(spec, options.get("forecast_steps", 4))
    return create_app(
        primary, analyzer, envelope_for(spec), expected, backup, token, (split_label(planner)[0], fallback)
    )

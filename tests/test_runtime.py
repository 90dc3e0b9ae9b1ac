"""Export to ONNX, the OnnxPlanner, the fallback planner and the planner service."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

import adaptflow.envs  # noqa: F401  (registers the environments)
from adaptflow.agents import Insights, MetricsSnapshot, Plan, Planner, envelope_for
from adaptflow.cli import main
from adaptflow.experiments.evaluation import evaluate
from adaptflow.policies import StaticPlanner
from adaptflow.runtime.fallback import FallbackPlanner, plan_problems
from adaptflow.runtime.service import app_for
from adaptflow.scenario import load_scenario

from .helpers import shared_export, train_and_export

TINY_ENV = {"scenario": "etl_diurnal", "horizon": 1800, "decision_interval": 30}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny PPO run that normalizes its observations (VecNormalize), exported."""
    return shared_export(tmp_path_factory, "tiny-normalized", "normalize_observation=true")


def recorded_observations(n: int, seed: int = 5) -> np.ndarray:
    """``n`` raw observations from the tiny env under random actions (varied states)."""
    env = gym.make("adaptflow/Autoscale-v0", **TINY_ENV)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    while len(rows) < n:
        rows.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    return np.array(rows)


def test_export_writes_the_model_and_a_complete_sidecar(exported: tuple[Path, Path]) -> None:
    _, onnx_path = exported
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["onnx"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    env = gym.make("adaptflow/Autoscale-v0", **TINY_ENV).unwrapped
    assert meta["observation"]["encoder"] == json.loads(json.dumps(env.encoder.to_dict()))
    assert meta["action"]["decoder"] == json.loads(json.dumps(env.decoder.to_dict()))
    norm = meta["observation"]["normalization"]
    assert len(norm["mean"]) == env.encoder.size and norm["clip"] == 10.0
    assert any(abs(m) > 1e-3 for m in norm["mean"])  # statistics from training, not the initial zeros
    assert meta["env_id"] == "adaptflow/Autoscale-v0" and meta["scenario"]["name"] == "etl_diurnal"
    assert meta["decision_interval"] == 30 and meta["versions"]["onnxruntime"]


def test_onnx_and_sb3_choose_the_same_action_on_10000_recorded_observations(exported: tuple[Path, Path]) -> None:
    from stable_baselines3 import PPO

    from adaptflow.agents import ObservationNormalizer
    from adaptflow.runtime.export import parity

    model_path, onnx_path = exported
    observations = recorded_observations(10_000)
    assert parity(model_path, onnx_path, observations) == 1.0
    # The check has teeth: the policy's actions vary over these states, and they depend on the
    # normalization (skipping it, as a naive export would, changes actions).
    model = PPO.load(model_path, device="cpu")
    meta = json.loads(model_path.with_suffix(".json").read_text())
    normalizer = ObservationNormalizer.from_dict(meta["observation_normalization"])
    actions, _ = model.predict(normalizer(observations), deterministic=True)
    unnormalized, _ = model.predict(observations.astype(np.float32), deterministic=True)
    assert len({tuple(a) for a in actions}) > 1
    assert np.any(np.any(actions != unnormalized, axis=1))


HEAVY = ("torch", "stable_baselines3", "gymnasium", "simpy", "pandas", "adaptflow.simulator", "adaptflow.envs")


def test_onnx_planner_loads_and_plans_without_torch_sb3_gymnasium_simpy_or_pandas(
    exported: tuple[Path, Path],
) -> None:
    """A deployment: import the planner, load the export, plan one decision from a snapshot (as
    a monitor would send it), start the planner service around it, in a clean interpreter; none
    of the training or simulated world is loaded."""
    _, onnx_path = exported
    snapshot, insights = snapshot_of()
    code = (
        "import json, sys\n"
        "from adaptflow.agents.types import Insights, MetricsSnapshot, StageMetrics\n"
        "from adaptflow.runtime.onnx_planner import OnnxPlanner\n"
        f"p = OnnxPlanner.load({str(onnx_path.parent)!r})\n"
        "d, i = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "d['stages'] = {k: StageMetrics(**v) for k, v in d['stages'].items()}\n"
        "plan = p.plan(MetricsSnapshot(**d), Insights(**i))\n"
        "assert set(plan.workers) == set(d['stages']), plan\n"
        "from adaptflow.runtime.service import app_for\n"  # and the service around it
        f"app_for('onnx:{onnx_path.parent}')\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    args = [json.dumps(dataclasses.asdict(snapshot)), json.dumps(dataclasses.asdict(insights))]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_exported_planner_runs_through_the_coordinator_like_the_sb3_one(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    model_path, onnx_path = exported
    scenario = load_scenario("etl_diurnal", horizon=1800)
    result = evaluate(scenario, [f"sb3@sb3:{model_path}", f"onnx@onnx:{onnx_path.parent}"], seeds=2, interval=30)
    table = result.table.pivot(index="seed", columns="planner", values="cost")
    assert np.allclose(table["sb3"], table["onnx"], rtol=0, atol=1e-9)


def test_an_exported_planner_refuses_another_decision_interval(exported: tuple[Path, Path]) -> None:
    from adaptflow.policies.registry import make_planner

    with pytest.raises(ValueError, match="decision_interval 30"):
        make_planner(f"onnx:{exported[1]}", load_scenario("etl_diurnal"), 60)


def test_export_cli(exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = exported[0].parent
    assert main(["export", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "planner.onnx").is_file() and (tmp_path / "out" / "planner.json").is_file()
    assert main(["export", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


# -- the fallback planner ------------------------------------------------------------------


class Broken(Planner):
    """A planner standing for a learned one (its decoder would stay in bounds)."""

    relies_on_clamping = False

    def __init__(self, answer: object = None, error: Exception | None = None):
        self.answer, self.error = answer, error

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        if self.error is not None:
            raise self.error
        return self.answer  # type: ignore[return-value]


def snapshot_of(scenario_name: str = "etl_diurnal") -> tuple[MetricsSnapshot, Insights]:
    env = gym.make("adaptflow/Orchestrate-v0" if scenario_name == "quality_drift" else "adaptflow/Autoscale-v0")
    env.reset(seed=1)
    env.step(env.action_space.sample())
    return env.unwrapped.snapshot, env.unwrapped.insights


@pytest.mark.parametrize(
    ("primary", "reason"),
    [
        (Broken(error=RuntimeError("model server down")), "RuntimeError: model server down"),
        (Broken(answer=Plan(workers={"extract": 99})), "outside [1, 12]"),
        (Broken(answer=Plan(workers={"nope": 2})), "unknown stage 'nope'"),
        (Broken(answer=Plan(workers={"extract": math.nan})), "not a whole number"),
        (Broken(answer={"extract": 3}), "not a Plan"),
    ],
)
def test_fallback_takes_over_when_the_planner_fails_or_answers_out_of_range(primary: Planner, reason: str) -> None:
    scenario = load_scenario("etl_diurnal")
    fallback = StaticPlanner(workers={"extract": 5})
    guarded = FallbackPlanner(primary, fallback, envelope_for(scenario))
    plan = guarded.plan(*snapshot_of())
    assert plan.workers == {"extract": 5}
    assert guarded.used_fallback and guarded.fallbacks == 1 and reason in guarded.last_reason


def test_a_rule_asking_beyond_the_bounds_is_clamped_not_replaced() -> None:
    """HPA asking for 0 workers at night is clamped to the minimum (by the executor), as
    Kubernetes would; only nonsense (negative, NaN, unknown stages) makes the fallback decide."""

    class Rule(Broken):
        relies_on_clamping = True

    envelope = envelope_for(load_scenario("etl_diurnal"))
    rule = FallbackPlanner(Rule(answer=Plan(workers={"extract": 0})), StaticPlanner(), envelope)
    assert rule.plan(*snapshot_of()).workers == {"extract": 0} and rule.fallbacks == 0
    rule = FallbackPlanner(Rule(answer=Plan(workers={"extract": -2})), StaticPlanner(), envelope)
    assert rule.plan(*snapshot_of()).workers == {} and "negative" in rule.last_reason


def test_fallback_keeps_a_valid_plan_and_checks_splits() -> None:
    scenario = load_scenario("quality_drift")
    envelope = envelope_for(scenario)
    good = Plan(workers={"ingest": 3}, splits={"ingest": {"fast_validate": 0.25, "thorough_validate": 0.75}})
    guarded = FallbackPlanner(Broken(answer=good), StaticPlanner(), envelope)
    assert guarded.plan(*snapshot_of("quality_drift")) is good and guarded.fallbacks == 0
    bad = Plan(splits={"ingest": {"fast_validate": 0.5, "thorough_validate": 0.7}})
    assert "sum to 1.2" in plan_problems(bad, envelope)[0]
    assert "expected" in plan_problems(Plan(splits={"ingest": {"fast_validate": 1.0}}), envelope)[0]


# -- the planner service -------------------------------------------------------------------

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(app_for("threshold", "etl_diurnal", fallback="static", token=TOKEN))


def request_body(scenario_name: str = "etl_diurnal") -> dict:
    snapshot, _ = snapshot_of(scenario_name)
    return {"metrics": snapshot.to_dict()}


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_service_decides_within_bounds(client: TestClient) -> None:
    response = client.post("/v1/decide", json=request_body(), headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["workers"]) == {"extract", "transform", "load"} and not body["fallback"]
    scenario = load_scenario("etl_diurnal")
    for stage, n in body["workers"].items():
        assert scenario.stages[stage].workers.min <= n <= scenario.stages[stage].workers.max
    assert client.get("/healthz").json()["decisions"] >= 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["metrics"].pop("interval"), "metrics.interval"),
        (lambda b: b["metrics"]["stages"]["extract"].update(queue_length="x"), "metrics.stages.extract.queue_length"),
        (lambda b: b["metrics"]["stages"]["extract"].update(busy=-1), "metrics.stages.extract.busy"),
        (lambda b: b["metrics"].update(surprise=1), "metrics.surprise"),
        (lambda b: b["metrics"]["stages"].pop("load"), "metrics.stages"),
        (lambda b: b["metrics"]["source_arrivals"].clear(), "metrics.source_arrivals"),
    ],
)
def test_service_rejects_malformed_snapshots_naming_the_field(client: TestClient, mutate, field: str) -> None:
    body = request_body()
    mutate(body)
    response = client.post("/v1/decide", json=body, headers=AUTH)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(field in (d.get("field") or ".".join(map(str, d["loc"][1:]))) for d in detail), detail


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_service_refuses_requests_without_the_token(client: TestClient, headers: dict) -> None:
    assert client.post("/v1/decide", json=request_body(), headers=headers).status_code == 401
    assert client.get("/metrics", headers=headers).status_code == 401


def test_service_metrics_count_decisions_and_fallbacks() -> None:
    from adaptflow.runtime.service import create_app, expected_for

    scenario = load_scenario("etl_diurnal")
    from adaptflow.agents import StandardAnalyzer

    app = create_app(
        Broken(error=RuntimeError("boom")),
        StandardAnalyzer.for_scenario(scenario, 30),
        envelope_for(scenario),
        expected_for(scenario),
        StaticPlanner(),
    )
    client = TestClient(app)
    for _ in range(3):
        body = client.post("/v1/decide", json=request_body()).json()
        assert body["fallback"] and "boom" in body["reason"]
    text = client.get("/metrics").text
    assert 'adaptflow_decisions_total{decided_by="fallback"} 3.0' in text
    assert "adaptflow_fallbacks_total 3.0" in text
    assert "adaptflow_decision_latency_seconds_count 3.0" in text


# Built at import, as schemathesis' pytest plugin wants (cheap: a rule, no model, no training).
SERVICE = app_for("threshold", "etl_diurnal", fallback="static", token=TOKEN)
api = schemathesis.openapi.from_asgi("/openapi.json", SERVICE)


@api.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_service_survives_schemathesis(case) -> None:
    """Generated requests (valid and not) never crash the service, and every response matches
    the OpenAPI schema it publishes."""
    case.call_and_validate(headers=AUTH)


def test_serve_runs_the_exported_planner_on_uvicorn(exported: tuple[Path, Path]) -> None:
    """The real thing: ``adaptflow serve`` in its own process on a free loopback port."""
    import os
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "adaptflow.cli", "serve", "--planner", f"onnx:{exported[1].parent}"]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        env={**os.environ, "ADAPTFLOW_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "service did not start in 60 s"
                time.sleep(0.2)
        assert health.json()["planner"] == "onnx" and health.json()["model_file"] == "planner.onnx"
        assert str(exported[1].parent) not in health.text  # no file-system path leaves the service
        body = request_body()
        assert httpx.post(f"{base}/v1/decide", json=body, timeout=10).status_code == 401
        response = httpx.post(f"{base}/v1/decide", json=body, headers=AUTH, timeout=10)
        assert response.status_code == 200 and not response.json()["fallback"], response.text
        metrics = httpx.get(f"{base}/metrics", headers=AUTH, timeout=10).text
        assert "adaptflow_decision_latency_seconds_bucket" in metrics
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_service_accepts_a_utilization_rounded_just_above_one(client: TestClient) -> None:
    """Measured by the bench: the simulator's busy/ready ratio can come out at 1.000000000000149."""
    body = request_body()
    body["metrics"]["stages"]["extract"]["utilization"] = 1.000000000000149
    assert client.post("/v1/decide", json=body, headers=AUTH).status_code == 200
    body["metrics"]["stages"]["extract"]["utilization"] = 1.1
    assert client.post("/v1/decide", json=body, headers=AUTH).status_code == 422


def test_service_with_a_controllable_split_requires_and_returns_it() -> None:
    client = TestClient(app_for("quality", "quality_drift", fallback="static"))
    body = request_body("quality_drift")
    response = client.post("/v1/decide", json=body)
    assert response.status_code == 200, response.text
    split = response.json()["splits"]["ingest"]
    assert set(split) == {"fast_validate", "thorough_validate"} and sum(split.values()) == pytest.approx(1)
    body["metrics"]["splits"] = {}
    assert client.post("/v1/decide", json=body).status_code == 422


@pytest.fixture(scope="module")
def exported_holt_winters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny PPO run that observes Holt-Winters forecasts, exported."""
    return train_and_export(
        tmp_path_factory.mktemp("runs_hw"), "env.options.forecaster=holt_winters", "env.options.observe_forecasts=true"
    )


def test_the_fitted_analyzer_travels_with_the_model_and_is_never_refitted(
    exported_holt_winters: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The training sidecar and the export's planner.json carry the Holt-Winters analyzer fitted
    in training; SB3Planner.load and the planner service load it (in clean interpreters: the load
    fits nothing, and the service never imports the simulator or the fitting)."""
    model_path, onnx_path = exported_holt_winters
    saved = json.loads(model_path.with_suffix(".json").read_text())["fitted_analyzer"]
    assert saved["forecaster"] == "holt_winters" and len(saved["forecasters"]["events"]["model"]["season"]) == 240
    assert json.loads(onnx_path.with_suffix(".json").read_text())["fitted_analyzer"] == saved
    load_sb3 = (
        "import json, sys\n"
        "import adaptflow.agents.fitting as fitting\n"
        "from adaptflow.policies.sb3 import SB3Planner\n"
        "from adaptflow.scenario import load_scenario\n"
        f"p = SB3Planner.load({str(model_path)!r}, load_scenario('etl_diurnal'), 30.0)\n"
        "print(json.dumps({'fits': len(fitting._models), 'state': p.analyzer_state}))\n"
    )
    out = subprocess.run([sys.executable, "-c", load_sb3], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"fits": 0, "state": saved}
    serve = (
        "import json, sys\n"
        "from adaptflow.runtime.service import app_for\n"
        f"app_for('onnx:{onnx_path.parent}')\n"
        "print(json.dumps([m for m in sys.modules if m.startswith(('adaptflow.simulator', 'adaptflow.agents.fitting',"
        " 'simpy', 'statsmodels'))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", serve], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and json.loads(out.stdout) == [], out.stderr + out.stdout
    # A sidecar from before saved analyzers: the analyzer is refitted (the same fit), with a warning.
    import logging
    import shutil

    from adaptflow.policies.sb3 import SB3Planner

    old = tmp_path / "old_model.zip"
    shutil.copy(model_path, old)
    meta = json.loads(model_path.with_suffix(".json").read_text())
    del meta["fitted_analyzer"]
    old.with_suffix(".json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="adaptflow.policies.sb3"):
        planner = SB3Planner.load(old, load_scenario("etl_diurnal"), 30.0)
    assert "older sidecar" in caplog.text and planner.analyzer_state == saved

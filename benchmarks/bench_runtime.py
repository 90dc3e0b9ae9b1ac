"""Decision latency of an exported planner, in process and over HTTP.

1. In process: ``OnnxPlanner.plan`` against ``SB3Planner.plan`` (the same trained model, the
   same encoder, normalizer and decoder; only the policy call differs: ONNX Runtime vs SB3's
   ``predict`` on torch), in alternating blocks, on the same recorded snapshots. p50 and p99 of each, and
   the speed-up at p50 and p99. Target: >= 5x. Also the policy call alone (normalized
   observation -> action: ``OnnxPlanner.act`` vs ``model.predict``), the part the export replaces.
2. Over HTTP: ``adaptflow serve --planner onnx:EXPORT`` started as a subprocess on a free
   loopback port (uvicorn, one process), and ``--clients`` concurrent clients (asyncio streams,
   HTTP/1.1 keep-alive) posting snapshots for ``--seconds``. p50/p99 request latency and decisions/s.
   The clients share the 2 cores with the server, so this is a floor, not the server's limit.

The model is trained here (``configs/train/tiny.yaml``, observation normalization on, a few
seconds) and exported, so the benchmark needs nothing but the repository. Prints one JSON line.

    python benchmarks/bench_runtime.py [--decisions 3000] [--clients 100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import adaptflow.envs  # noqa: F401  (registers the environments)

ROOT = Path(__file__).resolve().parent.parent
ENV = {"scenario": "etl_diurnal", "horizon": 1800, "decision_interval": 30}


def train_and_export(out: Path) -> tuple[Path, Path]:
    from adaptflow.experiments.training import train
    from adaptflow.runtime.export import export_run

    config = ROOT / "configs/train/tiny.yaml"
    run = train(config, [f"output_dir={out}", "evaluation.final_seeds=0", "normalize_observation=true"])
    return run.best_model, export_run(run.run_dir)


def recorded_states(n: int) -> list:
    """``n`` (snapshot, insights) pairs from the env under random actions."""
    env = gym.make("adaptflow/Autoscale-v0", **ENV)
    env.action_space.seed(0)
    env.reset(seed=0)
    states = []
    while len(states) < n:
        inner = env.unwrapped
        states.append((inner.snapshot, inner.insights))
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return states


def in_process(model_path: Path, onnx_path: Path, decisions: int) -> dict:
    from adaptflow.policies.registry import make_planner
    from adaptflow.scenario import load_scenario

    scenario = load_scenario("etl_diurnal", horizon=1800)
    sb3, _ = make_planner(f"sb3:{model_path}", scenario, 30)  # each a GuardedPlanner, as deployed
    onnx, _ = make_planner(f"onnx:{onnx_path}", scenario, 30)
    states = recorded_states(decisions)
    times: dict[str, list[float]] = {"onnx": [], "sb3": []}
    for planner in (onnx, sb3):  # warm-up
        for s in states[:100]:
            planner.plan(*s)
    # Blocks, alternated three times: both see the same machine noise, but neither runs with
    # the other's code and data in the caches (interleaving single calls slows ONNX Runtime's
    # ~15 us call 3x after each torch call, which a deployment, running one of them, never sees).
    for _ in range(3):
        for planner, name in ((onnx, "onnx"), (sb3, "sb3")):
            for snapshot, insights in states:
                start = time.perf_counter()
                planner.plan(snapshot, insights)
                times[name].append(time.perf_counter() - start)
    out = {}
    for name, t in times.items():
        out[f"{name}_p50_us"] = round(float(np.percentile(t, 50)) * 1e6, 1)
        out[f"{name}_p99_us"] = round(float(np.percentile(t, 99)) * 1e6, 1)
    out["speedup_p50"] = round(out["sb3_p50_us"] / out["onnx_p50_us"], 2)
    out["speedup_p99"] = round(out["sb3_p99_us"] / out["onnx_p99_us"], 2)
    # The policy call alone (what the export replaces): normalized observation -> action; the
    # registry guards a learned planner (out-of-range states go to a rule), the policy is inside.
    onnx_policy, sb3_policy = onnx.primary, sb3.primary
    observations = [onnx_policy.encoder.encode(*s) for s in states]
    calls: dict[str, list[float]] = {"onnx": [], "sb3": []}
    policies = {
        "onnx": onnx_policy.act,
        "sb3": lambda obs: sb3_policy.model.predict(sb3_policy.normalizer(obs), deterministic=True),
    }
    for _ in range(3):
        for name, call in policies.items():
            for obs in observations:
                start = time.perf_counter()
                call(obs)
                calls[name].append(time.perf_counter() - start)
    for name, t in calls.items():
        out[f"{name}_policy_p50_us"] = round(float(np.percentile(t, 50)) * 1e6, 1)
    out["policy_speedup_p50"] = round(out["sb3_policy_p50_us"] / out["onnx_policy_p50_us"], 2)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FIRST_ERROR: dict[str, str] = {}


async def one_client(port: int, requests: list[bytes], deadline: float, latencies: list[float]) -> int:
    """A keep-alive HTTP/1.1 client on a raw asyncio stream: a generic client library (httpx)
    spends more CPU per request than the service does, and here it shares the 2 cores."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors, i = 0, 0
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
            )
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
                FIRST_ERROR.setdefault("error", (head.split(b"\r\n")[0] + b" " + body[:300]).decode(errors="replace"))
            i += 1
    finally:
        writer.close()
    return errors


async def load(port: int, bodies: list[dict], clients: int, seconds: float) -> tuple[list[float], int]:
    requests = []
    for body in bodies:
        data = json.dumps(body).encode()
        requests.append(
            b"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    errors = await asyncio.gather(
        *(one_client(port, requests[k:] + requests[:k], deadline, latencies) for k in range(clients))
    )
    return latencies, sum(errors)


def over_http(onnx_path: Path, clients: int, seconds: float) -> dict:
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "adaptflow.cli", "serve", "--planner", f"onnx:{onnx_path}", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "ADAPTFLOW_TOKEN": ""},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"service did not start: {server.stderr.read().decode() if server.stderr else ''}")
        bodies = [{"metrics": s.to_dict()} for s, _ in recorded_states(500)]
        started = time.perf_counter()
        latencies, errors = asyncio.run(load(port, bodies, clients, seconds))
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "http_clients": clients,
        "http_requests": len(latencies),
        "http_errors": errors,
        **({"http_first_error": FIRST_ERROR["error"]} if FIRST_ERROR else {}),
        "http_decisions_per_s": round(len(latencies) / elapsed, 1),
        "http_p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 2),
        "http_p99_ms": round(float(np.percentile(latencies, 99)) * 1e3, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_path, onnx_path = train_and_export(Path(tmp))
        result = {"benchmark": "runtime_decisions", **in_process(model_path, onnx_path, args.decisions)}
        result.update(over_http(onnx_path, args.clients, args.seconds))
    result["target_speedup"] = 5.0
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

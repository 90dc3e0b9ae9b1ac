"""``--planner service:URL``: a decision loop whose planner is the planner service, a real
``adaptflow serve`` on a free loopback port, deciding for a simulated system."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from adaptflow.agents import ControlLoop, Coordinator, CostModel
from adaptflow.agents.sim import SimClock, SimExecutor, SimMonitor
from adaptflow.runtime.fallback import live_planner
from adaptflow.runtime.service_client import ServicePlanner
from adaptflow.scenario import load_scenario
from adaptflow.simulator import Simulation

from .live_fixtures import free_port

SCENARIO, INTERVAL, TOKEN = "etl_diurnal", 30.0, "s3cret-for-tests"


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[str, subprocess.Popen]]:
    """``adaptflow serve --planner erlang`` in its own process, with a token; stopped afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "adaptflow.cli", "serve", "--planner", "erlang", "--scenario", SCENARIO]
    command += ["--interval", str(INTERVAL), "--port", str(port)]
    env = {**os.environ, "ADAPTFLOW_TOKEN": TOKEN}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "the service did not start in 60 s"
                time.sleep(0.2)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=30)


def run(planner_spec: str, decisions: int, seed: int = 11):
    """The loop's plans over ``decisions`` intervals of a seeded simulation, and its guarded planner."""
    scenario = load_scenario(SCENARIO)
    sim = Simulation(scenario, rng=np.random.default_rng(seed))
    guarded, _, analyzer = live_planner(planner_spec, scenario, INTERVAL)
    loop = ControlLoop(SimMonitor(sim), analyzer, SimExecutor(sim), SimClock(sim), CostModel(), INTERVAL)
    steps = Coordinator(loop, guarded).run(until=decisions * INTERVAL)
    return [step.plan for step in steps], guarded


def test_the_service_decides_as_the_planner_in_process_does(service, monkeypatch):
    """The service's own analyzer turns the loop's snapshots into the same insights the loop's
    would: the plans through HTTP are the in-process rule's, decision for decision. A second loop
    on the same service starts from a reset service (``POST /v1/reset``), as a loop's planner
    starts reset: its plans are the same again, not coloured by the first loop's last rates."""
    url, _ = service
    monkeypatch.setenv("ADAPTFLOW_TOKEN", TOKEN)
    remote, guarded = run(f"service:{url}", 12)
    local, _ = run("erlang", 12)
    assert remote == local and guarded.fallbacks == 0
    again, guarded = run(f"service:{url}", 12)
    assert again == local and guarded.fallbacks == 0
    assert len({tuple(sorted(p.workers.items())) for p in local}) > 1  # the pools moved: not a constant answer


def test_a_service_for_another_scenario_or_interval_is_refused_before_the_loop_starts(service, monkeypatch):
    url, _ = service
    monkeypatch.setenv("ADAPTFLOW_TOKEN", TOKEN)
    with pytest.raises(ValueError, match=r"it plans for scenario 'etl_diurnal', the loop runs 'mmc'"):
        ServicePlanner(url, load_scenario("mmc"), INTERVAL)
    with pytest.raises(ValueError, match=r"it decides every 30\.0 s, the loop every 10 s \(--interval\)"):
        ServicePlanner(url, load_scenario(SCENARIO), 10.0)
    with pytest.raises(ValueError, match=r"planner 'service:ftp://x': expected service:http://HOST:PORT"):
        ServicePlanner("ftp://x", load_scenario(SCENARIO), INTERVAL)
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ValueError, match=rf"planner service {nobody}: .*Connection refused.*expected adaptflow serve"):
        ServicePlanner(nobody, load_scenario(SCENARIO), INTERVAL)
    with not_http() as stranger, pytest.raises(ValueError) as refused:  # something listens, not adaptflow serve
        ServicePlanner(stranger, load_scenario(SCENARIO), INTERVAL)
    said = str(refused.value)
    assert said.startswith(f"planner service {stranger}: BadStatusLine: +PONG not http; expected adaptflow serve")
    assert "\n" not in said  # one line


@contextlib.contextmanager
def not_http() -> Iterator[str]:
    """A loopback server that answers every connection with a line that is not HTTP."""
    import socketserver

    class Garbage(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(4096)
            self.request.sendall(b"+PONG not http\r\n")

    with socketserver.TCPServer(("127.0.0.1", 0), Garbage) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


def test_the_service_says_which_interval_it_plans_for(service):
    url, _ = service
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        health = json.loads(response.read())
    assert (health["scenario"], health["interval"]) == (SCENARIO, INTERVAL)
    with pytest.raises(urllib.error.HTTPError) as refused:  # the token guards decisions
        request = urllib.request.Request(f"{url}/v1/decide", data=b"{}", method="POST")
        request.add_header("Content-Type", "application/json")
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401


def test_a_refused_or_missing_service_leaves_each_decision_to_the_fallback_rule(service, monkeypatch):
    """Without the token every request is a 401, and the loop's rule decides each decision,
    counted, the reason naming the answer; likewise once the service has stopped (so this test
    comes last: it stops the module's service)."""
    url, server = service
    monkeypatch.setenv("ADAPTFLOW_TOKEN", "wrong")
    plans, guarded = run(f"service:{url}", 3)
    assert guarded.fallbacks == 3 and "answered 401" in guarded.last_reason
    assert plans == run("erlang", 3)[0]  # the fallback is erlang: the same plans, made here

    monkeypatch.setenv("ADAPTFLOW_TOKEN", TOKEN)
    scenario = load_scenario(SCENARIO)
    guarded, _, analyzer = live_planner(f"service:{url}", scenario, INTERVAL)
    server.terminate()
    server.wait(timeout=30)
    sim = Simulation(scenario, rng=np.random.default_rng(3))
    loop = ControlLoop(SimMonitor(sim), analyzer, SimExecutor(sim), SimClock(sim), CostModel(), INTERVAL)
    Coordinator(loop, guarded).run(until=2 * INTERVAL)
    assert guarded.fallbacks == 2 and "Connection refused" in guarded.last_reason

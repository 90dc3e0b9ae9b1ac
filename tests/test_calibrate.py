"""Calibration from a recording (adaptflow.runtime.calibrate), without live workers.

The recording is synthetic with a known truth: a small discrete-event model of a three-stage
Celery chain (written here, independent of adaptflow's simulator, with one seeded Generator)
emits the task events Celery would (task-sent / started / succeeded / retried / failed, with
uuids, root_id, parent_id and queues), the pool and queue lines a recorder samples, a pool
grow with a known start-up delay, and a known dispatch delay between a task's sending and its
being able to start (Celery's publish -> fetch -> hand to a process; a retry pays it again).
The fit must recover that truth within its confidence bounds, and the calibrated scenario,
simulated by adaptflow's simulator, must reproduce the recording.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import deque
from dataclasses import dataclass
from heapq import heappop, heappush
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from adaptflow.runtime.calibrate import calibrate, read_recording, validate_calibration
from adaptflow.runtime.calibrate.distributions import EMPIRICAL_POINTS, fit_arrivals, fit_service, with_moments
from adaptflow.runtime.calibrate.system import DISPATCH_MIN_VISITS, fit_dispatch
from adaptflow.runtime.calibrate.timeline import build_timeline
from adaptflow.scenario import load_scenario, parse_scenario
from adaptflow.simulator import Simulation

ORIGIN = 1_700_000_000.0  # wall time the recording started
HORIZON = 6 * 3600.0  # long enough that a stage's mean wait varies by under 3% between recordings
RATE = 2.0  # items/s
SAMPLE_EVERY = 5.0  # the recorder's pool and queue lines
GROW_AT, GROW_TO, STARTUP = HORIZON - 598.0, 2, 6.0  # the check pool grows to 2 late on; ready 6 s later
DISPATCH = 0.005  # seconds from task-sent until a free process can start the task
TASKS = {"parse": "etl.parse", "check": "etl.check", "write": "etl.write"}
TRUTH = {
    "parse": {"servers": 1, "dist": "exponential", "mean": 0.2, "cv": 1.0, "fail": 0.0, "retries": 0,
              "next": [("check", 1.0)]},
    "check": {"servers": 1, "dist": "lognormal", "mean": 0.2, "cv": 0.6, "fail": 0.1, "retries": 2,
              "next": [("write", 0.7), (None, 0.3)]},
    "write": {"servers": 1, "dist": "deterministic", "mean": 0.3, "cv": 0.0, "fail": 0.0, "retries": 0,
              "next": [(None, 1.0)]},
}  # fmt: skip
MAPPING = {
    "stages": {stage: {"queues": [stage], "worker": f"{stage}@box"} for stage in TASKS},
    "sources": {"uploads": {"tasks": ["etl.parse"]}},
    "end": {"tasks": ["etl.write"]},  # items routed from check to the exit end without one
}


@dataclass
class Visit:
    """One Celery task: a stage visit of an item (retries keep the task id)."""

    uuid: str
    item: str
    parent: str | None
    stage: str
    attempt: int = 0


class SyntheticApp:
    """FCFS multi-server stages fed by Poisson arrivals; every step written as Celery would."""

    def __init__(
        self,
        seed: int,
        horizon: float = HORIZON,
        rate: float = RATE,
        dispatch: float = DISPATCH,
        size_sd: float = 0.0,
        turnaround: float = 0.0,
        turnaround_cv: float = 0.0,
        cpu: dict[str, float] | None = None,
        cores: float = 1.0,
        servers: int | dict[str, int] | None = None,
        dispatch_sized: bool = False,
        contention: float = 0.0,
        oversubscription: float = 0.0,
        grow_at: float = GROW_AT,
    ):
        self.grow_at = grow_at  # when check's pool grows (without ``servers``): past a short horizon, never
        self.rng, self.horizon, self.rate, self.dispatch_delay = np.random.default_rng(seed), horizon, rate, dispatch
        self.size_sd = size_sd  # sd of an item's log size, which multiplies its every service time
        self.dispatch_sized = dispatch_sized  # and its dispatch delay too (its message carries its data)
        self.sizes: dict[str, float] = {}
        self.turnaround = turnaround  # a process is free this long after each finish (Celery's ack + fetch)
        self.turnaround_sigma = math.sqrt(math.log1p(turnaround_cv**2))  # times a lognormal of mean 1
        self.seq, self.pids = itertools.count(), itertools.count(1000)
        self.heap: list = []
        self.lines: list[tuple[float, int, dict]] = []
        self.queues = {stage: deque() for stage in TRUTH}
        self.servers = servers  # every stage's pool (or some stages'), instead of TRUTH's and the late grow
        given = servers if isinstance(servers, dict) else {stage: servers for stage in TRUTH if servers}
        pools = {stage: given.get(stage) or spec["servers"] for stage, spec in TRUTH.items()}
        self.idle = {stage: [next(self.pids) for _ in range(n)] for stage, n in pools.items()}
        # Celery stamps task events with the node's main process, never the pool process serving
        self.node_pid = {stage: 100 + k for k, stage in enumerate(TRUTH)}
        self.pools = pools
        self.tasks = itertools.count()
        # the machine's cores, shared equally by the CPU work in progress: each job's remaining
        # work is brought down at every change (not adaptflow's virtual-clock method)
        self.cpu, self.cores = cpu or {}, cores
        self.oversubscription = oversubscription  # capacity lost per job past the cores (Host.oversubscription)
        self.jobs: list[list] = []  # [remaining CPU seconds, stage, pid, visit, started]
        self.host_time, self.host_plan = 0.0, 0
        # hand-offs and turnarounds take 1 + contention * (tasks being served) times as long
        self.contention, self.serving = contention, 0

    def emit(self, t: float, **line) -> None:
        self.lines.append((t, next(self.seq), {**line, "timestamp": ORIGIN + t}))

    def push(self, t: float, kind: str, *args) -> None:
        heappush(self.heap, (t, next(self.seq), kind, args))

    def run(self) -> list[dict]:
        t, items = 0.0, itertools.count()
        while (t := t + self.rng.exponential(1 / self.rate)) < self.horizon:
            self.push(t, "arrive", f"item{next(items)}")
        for k in range(int(self.horizon / SAMPLE_EVERY) + 1):
            self.push(k * SAMPLE_EVERY, "sample")
        if self.servers is None:
            self.push(self.grow_at, "grow", "check")
        while self.heap and self.heap[0][0] <= self.horizon:
            t, _, kind, args = heappop(self.heap)
            getattr(self, f"on_{kind}")(t, *args)
        return [line for _, _, line in sorted(self.lines, key=lambda x: (x[0], x[1]))]

    def on_arrive(self, t: float, item: str) -> None:
        if self.size_sd:
            self.sizes[item] = self.rng.lognormal(-(self.size_sd**2) / 2, self.size_sd)
        self.enter(t, Visit(item, item, None, "parse"))

    def enter(self, t: float, visit: Visit) -> None:
        sent = {"type": "task-sent", "uuid": visit.uuid, "name": TASKS[visit.stage], "queue": visit.stage,
                "routing_key": visit.stage, "root_id": visit.item, "retries": visit.attempt}  # fmt: skip
        if visit.parent:
            sent["parent_id"] = visit.parent
        self.emit(t, **sent)
        delay = self.dispatch_delay * (self.sizes.get(visit.item, 1.0) if self.dispatch_sized else 1.0)
        self.push(t + delay * (1 + self.contention * self.serving), "join", visit)

    def on_join(self, t: float, visit: Visit) -> None:
        self.queues[visit.stage].append(visit)
        self.dispatch(t, visit.stage)

    def dispatch(self, t: float, stage: str) -> None:
        spec = TRUTH[stage]
        while self.queues[stage] and self.idle[stage]:
            pid, visit = self.idle[stage].pop(), self.queues[stage].popleft()
            self.serving += 1
            self.emit(t, type="task-started", uuid=visit.uuid, hostname=f"{stage}@box", pid=self.node_pid[stage])
            if spec["dist"] == "exponential":
                service = self.rng.exponential(spec["mean"])
            elif spec["dist"] == "deterministic":
                service = spec["mean"]
            else:
                sigma2 = math.log1p(spec["cv"] ** 2)
                service = self.rng.lognormal(math.log(spec["mean"]) - sigma2 / 2, math.sqrt(sigma2))
            service *= self.sizes.get(visit.item, 1.0)
            share = self.cpu.get(stage, 0.0)
            if share:  # the I/O part first, then the CPU part on the shared cores
                self.push(t + service * (1 - share), "cpu", [service * share, stage, pid, visit, t])
            else:
                self.push(t + service, "done", stage, pid, visit, t)

    def on_cpu(self, t: float, job: list) -> None:
        self.host_advance(t)
        self.jobs.append(job)
        self.host_replan(t)

    def host_speed(self) -> float:
        n = len(self.jobs)
        if n <= self.cores:
            return 1.0
        return self.cores / (n * (1.0 + self.oversubscription * (n - self.cores)))

    def host_advance(self, t: float) -> None:
        speed = self.host_speed()
        for job in self.jobs:
            job[0] -= (t - self.host_time) * speed
        self.host_time = t

    def host_replan(self, t: float) -> None:
        self.host_plan += 1
        if self.jobs:
            speed = self.host_speed()
            self.push(t + max(0.0, min(j[0] for j in self.jobs)) / speed, "host", self.host_plan)

    def on_host(self, t: float, plan: int) -> None:
        if plan != self.host_plan:
            return
        self.host_advance(t)
        done = [j for j in self.jobs if j[0] <= 1e-9]
        self.jobs = [j for j in self.jobs if j[0] > 1e-9]
        self.host_replan(t)
        for _, stage, pid, visit, started in done:
            self.on_done(t, stage, pid, visit, started)

    def on_done(self, t: float, stage: str, pid: int, visit: Visit, started: float) -> None:
        spec = TRUTH[stage]
        self.serving -= 1
        if self.turnaround:
            sigma = self.turnaround_sigma
            spread = self.rng.lognormal(-(sigma**2) / 2, sigma) if sigma else 1.0  # no draw: other tests' streams kept
            self.push(t + self.turnaround * spread * (1 + self.contention * self.serving), "free", stage, pid)
        else:
            self.idle[stage].insert(0, pid)  # the process idle longest takes the next task; a fresh one first
        done = {"uuid": visit.uuid, "hostname": f"{stage}@box", "pid": self.node_pid[stage], "runtime": t - started}
        if spec["fail"] and self.rng.random() < spec["fail"]:
            if visit.attempt < spec["retries"]:
                self.emit(t, type="task-retried", exception="Timeout()", **done)
                visit.attempt += 1
                self.enter(t, visit)  # Celery publishes the retry again, same task id
            else:
                self.emit(t, type="task-failed", exception="Timeout()", **done)
        else:
            targets, probs = zip(*spec["next"], strict=True)
            target = targets[self.rng.choice(len(targets), p=probs)]
            if target is not None:  # the child is sent before the parent reports success
                self.enter(t, Visit(f"task{next(self.tasks)}", visit.item, visit.uuid, target))
            self.emit(t, type="task-succeeded", **done)
        self.dispatch(t, stage)

    def on_free(self, t: float, stage: str, pid: int) -> None:
        self.idle[stage].insert(0, pid)
        self.dispatch(t, stage)

    def on_sample(self, t: float) -> None:
        self.emit(t, type="adaptflow-pools", pools=dict(self.pools))
        self.emit(t, type="adaptflow-queues", queues={s: len(q) for s, q in self.queues.items()})

    def on_grow(self, t: float, stage: str) -> None:
        self.pools[stage] = GROW_TO
        self.push(t + STARTUP, "ready", stage, next(self.pids))

    def on_ready(self, t: float, stage: str, pid: int) -> None:
        self.idle[stage].append(pid)
        self.dispatch(t, stage)


def write_recording(folder: Path, lines: list[dict], mapping: dict = MAPPING, horizon: float = HORIZON) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    meta = {"app": "etl:app", "broker": "redis://localhost:6379/0", "started": ORIGIN,
            "stopped": ORIGIN + horizon, "adaptflow": "0.1.0"}  # fmt: skip
    (folder / "recording.json").write_text(json.dumps(meta))
    (folder / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A recording of the synthetic app, calibrated once: (recording dir, calibration)."""
    root = tmp_path_factory.mktemp("calibrate")
    folder = write_recording(root / "recording", SyntheticApp(seed=7).run())
    return folder, calibrate(folder, root / "out" / "etl.yaml")


def mean_within_ci(fit: dict, truth: float, widen: float = 3.29 / 1.96) -> bool:
    """Whether ``truth`` lies within the fit's 95% interval widened to 99.9%."""
    lo, hi = fit["mean_ci95"]
    half = (hi - lo) / 2 * widen
    return abs(fit["mean"] - truth) <= half


def test_service_families_and_means_are_recovered(recorded):
    _, result = recorded
    stages = result.report["stages"]
    assert [stages[s]["service"]["chosen"] for s in TRUTH] == ["exponential", "lognormal", "deterministic"]
    for stage in ("parse", "check"):
        assert mean_within_ci(stages[stage]["service"], TRUTH[stage]["mean"]), (stage, stages[stage]["service"])
    spec = load_scenario(result.scenario)
    check, write = spec.stages["check"].service, spec.stages["write"].service
    assert check.dist == "lognormal" and check.cv == pytest.approx(0.6, abs=0.03)
    assert write.dist == "deterministic" and write.mean == pytest.approx(0.3, abs=1e-6)
    parse_fits = stages["parse"]["service"]["fits"]
    assert parse_fits["lognormal"]["ks_pvalue"] < 0.05 <= parse_fits["exponential"]["ks_pvalue"]


def test_routes_failures_and_retries_are_recovered(recorded):
    _, result = recorded
    routes = result.report["routes"]
    assert set(routes["uploads"]["counts"]) == {"parse"} and set(routes["parse"]["counts"]) == {"check"}
    lo, hi = routes["check"]["p_ci95"]["write"]
    assert lo <= 0.7 <= hi and set(routes["check"]["counts"]) == {"write", "exit"}
    failure = result.report["stages"]["check"]["failure"]
    assert failure["prob_ci95"][0] <= 0.1 <= failure["prob_ci95"][1] and failure["max_retries"] == 2
    assert failure["giveups"] > 0 and not any("given up before" in w for w in result.report["warnings"])
    spec = load_scenario(result.scenario)
    assert spec.stages["check"].failure.max_retries == 2 and spec.stages["parse"].failure is None
    assert [b.to for b in spec.stages["check"].next.split] == ["write", None]
    assert spec.stages["write"].next.targets() == [None]


def test_pools_startup_delay_arrivals_and_sla(recorded):
    _, result = recorded
    spec = load_scenario(result.scenario)
    pools = {s: (spec.stages[s].workers.initial, spec.stages[s].workers.max) for s in TRUTH}
    assert pools == {"parse": (1, 2), "check": (1, 2 * GROW_TO), "write": (1, 2)}  # max: twice the largest seen
    startup = result.report["stages"]["check"]["startup"]
    # the grow is known to half a sampling interval; then the fresh process takes the next check task
    assert STARTUP - SAMPLE_EVERY / 2 <= startup["delay"] <= STARTUP + SAMPLE_EVERY / 2 + 3.0 / RATE, startup
    assert spec.stages["check"].workers.startup_delay == pytest.approx(startup["delay"], rel=1e-5)
    assert spec.stages["parse"].workers.startup_delay == 0.0  # no grow: the default, said so
    assert any("stages.parse.workers.startup_delay" in a for a in result.report["assumptions"])
    arrivals = result.report["sources"]["uploads"]
    assert arrivals["chosen"] == "constant" and arrivals["mean_rate"] == pytest.approx(RATE, rel=0.02)
    written = load_scenario(result.rate_scenario).sources["uploads"].rate.value
    assert written == pytest.approx(arrivals["mean_rate"], rel=1e-5)
    assert any(a.startswith("SLA") for a in result.report["assumptions"])  # no sla in the mapping
    assert result.report["sla"]["source"].startswith("not in mapping.yaml: 1.5 x the recorded p95 latency")
    assert spec.sla.latency == result.report["sla"]["latency"]


def test_the_dispatch_delay_is_recovered_from_the_visits_that_found_an_idle_process(recorded):
    _, result = recorded
    spec = load_scenario(result.scenario)
    for stage in TRUTH:
        dispatch = result.report["stages"][stage]["dispatch"]
        lo, hi = dispatch["delay_ci95"]
        stamp = 1e-6  # event timestamps are wall seconds near 1.7e9: resolved to about 2.4e-7 s
        assert lo - stamp <= DISPATCH <= hi + stamp and dispatch["idle_visits"] >= 1000, (stage, dispatch)
        assert spec.stages[stage].dispatch_delay == pytest.approx(dispatch["delay"], rel=1e-5)
        assert spec.stages[stage].turnaround == 0  # a queued visit starts as its process frees
        assert result.report["stages"][stage]["mean_wait"] > 1.2 * DISPATCH  # the busy visits queued too
    assert "| dispatch delay: median s (95% CI; idle visits) |" in result.report_md.read_text()


def test_at_low_load_the_dispatch_delay_is_most_of_the_wait_and_simulation_matches_it(tmp_path):
    """At 0.5 items/s (utilization about 0.1) a 50 ms hand-off is most of every recorded wait,
    so a scenario without it would miss the mean waits by over half; with it they agree."""
    app = SyntheticApp(seed=11, horizon=3600.0, rate=0.5, dispatch=0.05)
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=3600.0)
    result = calibrate(folder, tmp_path / "out.yaml")
    spec = load_scenario(result.scenario)
    for stage in TRUTH:
        assert spec.stages[stage].dispatch_delay == pytest.approx(0.05, abs=1e-5)
        assert result.report["stages"][stage]["mean_wait"] < 2 * 0.05  # the delay is over half of it
    errors = validate_calibration(folder, result.scenario, Simulation, seeds=3)
    waits = errors[errors["metric"] == "mean_wait"]
    assert len(waits) == 3 and (waits["rel_error"] < 0.10).all(), errors.to_string()
    # the recorded figures drawn from the recording's noise carry their interval, around them
    judged = errors[errors["metric"].isin(["mean_wait", "p95_latency"])]
    assert len(judged) == 4 and (judged.recorded_low < judged.recorded).all(), errors.to_string()
    assert (judged.recorded < judged.recorded_high).all() and (judged.recorded_high < 1.3 * judged.recorded).all()
    assert errors[errors["metric"] == "throughput"].recorded_low.isna().all()


def test_a_batch_interval_covers_the_mean_and_the_p95_of_a_correlated_series_as_often_as_it_says():
    """Waits in bursts: an AR(1) series at 0.9 (2,000 draws). Over 400 series the batch interval
    holds the true mean about 95 % of the time (the binomial sd of the count is 1.1 points) and
    the true p95 nearly as often; the interval that takes the draws as independent holds the
    mean about a third of the time, the reason for the batches."""
    from scipy import signal, stats

    from adaptflow.runtime.calibrate.validate import batch_interval

    rng, phi, n = np.random.default_rng(20261205), 0.9, 2000
    true_p95 = stats.norm.ppf(0.95) / math.sqrt(1 - phi**2)
    mean_held = p95_held = naive_held = 0
    for _ in range(400):
        series = signal.lfilter([1.0], [1.0, -phi], rng.standard_normal(n + 200))[200:]  # stationary
        low, high = batch_interval(series, np.mean)
        mean_held += low <= 0.0 <= high
        low, high = batch_interval(series, lambda part: np.percentile(part, 95))
        p95_held += low <= true_p95 <= high
        half = 1.96 * series.std(ddof=1) / math.sqrt(n)
        naive_held += abs(series.mean()) <= half
    assert 0.91 * 400 <= mean_held <= 0.99 * 400
    assert 0.85 * 400 <= p95_held <= 0.99 * 400
    assert naive_held < 0.5 * 400
    assert all(map(math.isnan, batch_interval(np.ones(49), np.mean)))  # too few for ten batches of five


@pytest.mark.slow  # 25-33 s; sizes fitted and replayed stay in make test (the hand-off that grows with the item)
def test_items_slow_at_every_stage_get_sizes_that_make_the_replay_match(tmp_path):
    """Items whose every service time is multiplied by their own size (log sd 0.5: a big upload
    is slow everywhere) queue in bursts that independent draws do not make. Calibrate finds the
    item's share (its variance within the estimate's interval), writes each item's size into the
    trace, fits the stages to what the size leaves, and the replay matches the recording within
    10 %; the rate scenario (raw times, no sizes) on the same arrivals does not."""
    sd, horizon = 0.5, 7200.0
    app = SyntheticApp(seed=6, horizon=horizon, size_sd=sd)
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=horizon)
    result = calibrate(folder, tmp_path / "out.yaml")
    sizes = result.report["sizes"]
    lo, hi = sizes["tau2_ci95"]
    assert sizes["fitted"] and lo <= sd**2 <= hi, sizes
    trace = pd.read_csv(result.arrivals["uploads"])
    assert list(trace.columns) == ["timestamp", "size"] and trace["size"].mean() == pytest.approx(1.0, abs=0.02)
    timeline = build_timeline(read_recording(folder))
    fitted = np.log(trace["size"].to_numpy())
    truth = np.log([app.sizes[item] for _, item in timeline.arrived("uploads")])
    assert np.corrcoef(fitted, truth)[0, 1] > 0.8
    # write takes a fixed time times the size: given the size, little of its spread is left
    given, raw = load_scenario(result.scenario).stages["write"].service, load_scenario(result.rate_scenario)
    assert given.cv < 0.5 * raw.stages["write"].service.cv, (given, raw.stages["write"].service)
    assert "## Item sizes" in result.report_md.read_text()
    # the 5 ms hand-off is the same for every item: its slope on the sizes is nil, and said so
    for stage in TRUTH:
        lo, hi = result.report["stages"][stage]["dispatch_given_size"]["size_slope_ci95"]
        assert lo <= 0 <= hi and hi < 0.5, (stage, lo, hi)
    followed = [w for w in result.report["warnings"] if "did not follow their items' sizes" in w]
    assert len(followed) == len(TRUTH), result.report["warnings"]
    errors = validate_calibration(folder, result.scenario, Simulation, seeds=3).set_index(["scope", "metric"])
    assert (errors["rel_error"] < 0.10).all(), errors.to_string()
    without = validate_calibration(folder, result.rate_scenario, Simulation, seeds=3).set_index(["scope", "metric"])
    assert without.loc[("end_to_end", "p95_latency"), "rel_error"] > 0.10, without.to_string()


def test_a_hand_off_that_grows_with_the_item_is_fitted_given_its_size(tmp_path):
    """Each task's message carries its item's data, so its 0.3 s hand-off is multiplied by the
    item's size, as its service time is (log sd 0.7). Calibrate sees the idle waits follow the
    sizes (the slope's interval excludes 0 and holds 1 or lies above it: an estimated size is
    shrunk toward 1), writes the dispatch delay given the size with the recorded mean, warns of
    none, and the replay matches the recording within 10 %, the end-to-end p95 included. (A
    simulator drawing the hand-off regardless of the size missed that p95 by 23 %: an item's
    hand-offs at its three stages no longer rose and fell together.)"""
    app = SyntheticApp(seed=12, horizon=3600.0, rate=0.5, dispatch=0.3, size_sd=0.7, dispatch_sized=True)
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=3600.0)
    result = calibrate(folder, tmp_path / "out.yaml")
    spec = load_scenario(result.scenario)
    for stage in TRUTH:
        given = result.report["stages"][stage]["dispatch_given_size"]
        lo, hi = given["size_slope_ci95"]
        assert lo > 0.5 and hi > 1.0 and given["size_correlation"] > 0.3, (stage, given)
        assert spec.stages[stage].dispatch_mean() == pytest.approx(0.3, rel=0.1), (stage, given)
    assert not [w for w in result.report["warnings"] if "did not follow" in w], result.report["warnings"]
    assert "| stage | median given size s | slope (95% CI) |" in result.report_md.read_text()
    errors = validate_calibration(folder, result.scenario, Simulation, seeds=3).set_index(["scope", "metric"])
    assert (errors["rel_error"] < 0.10).all(), errors.to_string()
    # these sizes are the items' own, not their moment's: shuffled among the arrivals they replay as well
    assert (errors["rel_error_shuffled"] < 0.10).all(), errors.to_string()


class _SlowMinutes(SyntheticApp):
    """Items arriving in every other minute are half as slow again everywhere as the others:
    the machine's load of the moment, which calibrate can only read as the items' sizes."""

    def on_arrive(self, t: float, item: str) -> None:
        moment = 1.25 if int(t // 60) % 2 else 0.8
        self.sizes[item] = moment * self.rng.lognormal(-(self.size_sd**2) / 2, self.size_sd)
        self.enter(t, Visit(item, item, None, "parse"))


def test_sizes_that_hold_the_moments_load_replay_only_in_their_own_order(tmp_path, capsys):
    """The replay with each item's fitted size at its own arrival matches the recording; the
    same sizes shuffled among the arrivals (what a run on other arrivals meets) do not: the
    check ``calibrate --validate`` prints beside it says how much of the fit is the moment's."""
    app = _SlowMinutes(seed=4, horizon=1800.0, rate=2.0, size_sd=0.3)
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=1800.0)
    result = calibrate(folder, tmp_path / "out.yaml")
    errors = validate_calibration(folder, result.scenario, Simulation, seeds=3).set_index(["scope", "metric"])
    assert (errors["rel_error"] < 0.10).all(), errors.to_string()
    p95 = errors.loc[("end_to_end", "p95_latency")]
    assert p95["shuffled"] < 0.9 * p95["recorded"], errors.to_string()  # the slow minutes' queues spread out
    assert errors.loc[("end_to_end", "throughput"), "rel_error_shuffled"] < 0.01
    # the command prints both checks, and the largest error of each
    from adaptflow.cli import main

    assert main(["calibrate", str(folder), "--out", str(tmp_path / "cli.yaml"), "--validate", "1"]) == 0
    out, err = capsys.readouterr()
    assert "sizes shuffled" in out and "with the item sizes shuffled among the arrivals" in err
    p95_line = next(line for line in out.splitlines() if "p95_latency" in line)
    assert "(-" in p95_line, p95_line  # the shuffled p95 fell short: a signed error, not a bare size
    low, high = (f"{p95[k]:,.3f}" for k in ("recorded_low", "recorded_high"))
    assert f"[{low}, {high}]" in p95_line, p95_line  # the recorded figure with its interval
    assert "simulated figures within the recorded figure's 95% interval" in err


def test_a_turnaround_between_tasks_is_recovered_and_the_replay_matches(tmp_path):
    """Each process is unavailable 50 ms after every task (Celery's ack and next fetch with late
    acknowledgement): capacity falls from 5 to 4 tasks a second at parse, and the waits grow
    with it. Calibrate finds the 50 ms from the gaps of backlogged processes, keeps the 5 ms
    dispatch apart from it, and the replay matches the recording within 10 %."""
    app = SyntheticApp(seed=9, horizon=7200.0, turnaround=0.05)
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=7200.0)
    result = calibrate(folder, tmp_path / "out.yaml")
    spec = load_scenario(result.scenario)
    for stage in TRUTH:
        turnaround, dispatch = (result.report["stages"][stage][k] for k in ("turnaround", "dispatch"))
        assert turnaround["turnaround"] == pytest.approx(0.05, abs=1e-4), (stage, turnaround)
        assert spec.stages[stage].turnaround == pytest.approx(0.05, abs=1e-4)
        assert spec.stages[stage].turnaround_cv < 0.05  # a constant: nothing (or next to nothing) to spread
        assert spec.stages[stage].dispatch_delay == pytest.approx(DISPATCH, abs=1e-4), (stage, dispatch)
    assert "| turnaround s (95% CI; gaps; cv) |" in result.report_md.read_text()
    errors = validate_calibration(folder, result.scenario, Simulation, seeds=3).set_index(["scope", "metric"])
    assert (errors["rel_error"] < 0.10).all(), errors.to_string()


def test_a_turnaround_s_spread_is_recovered_and_the_replay_matches(tmp_path):
    """Each process is unavailable a lognormal time of mean 0.1 s and cv 0.8 after every task
    (live, the gaps vary as much): calibrate reads the cv from the same backlogged gaps as the
    mean (within 0.1 of the truth; 0 for a constant turnaround, in the test above), writes it as
    ``turnaround_cv``, and the replay matches the recording within 10 % (without the cv, check's
    and write's mean waits fall 12 and 20 % short)."""
    app = SyntheticApp(seed=4, horizon=3600.0, turnaround=0.1, turnaround_cv=0.8)
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=3600.0)
    result = calibrate(folder, tmp_path / "out.yaml")
    spec = load_scenario(result.scenario)
    for stage in TRUTH:
        assert result.report["stages"][stage]["turnaround"]["cv"] == pytest.approx(0.8, abs=0.1), stage
        assert spec.stages[stage].turnaround_cv == pytest.approx(0.8, abs=0.1), stage
        assert spec.stages[stage].turnaround == pytest.approx(0.1, rel=0.1), stage
    assert "; cv 0.7" in result.report_md.read_text() or "; cv 0.8" in result.report_md.read_text()
    errors = validate_calibration(folder, result.scenario, Simulation, seeds=3).set_index(["scope", "metric"])
    assert (errors["rel_error"] < 0.10).all(), errors.to_string()


def test_a_turnaround_s_spread_beside_item_sizes_is_moment_matched(tmp_path):
    """The same turnarounds (cv 0.8), items of sizes spread by 0.3 in the log that multiply their
    services but not their turnarounds: the trace scenario's simulator multiplies each
    turnaround by its item's size and then by the spread, so calibrate writes the spread whose
    product with the sizes has the gaps' cv, sqrt(1.64 / e**0.09 - 1) = 0.71, not the gaps'
    own 0.8 (the rate scenario, whose items have no size, keeps 0.8), and the replay holds."""
    app = SyntheticApp(seed=4, horizon=3600.0, turnaround=0.1, turnaround_cv=0.8, size_sd=0.3)
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=3600.0)
    result = calibrate(folder, tmp_path / "out.yaml")
    trace, rate = load_scenario(result.scenario), load_scenario(result.rate_scenario)
    for stage in TRUTH:
        assert trace.stages[stage].turnaround_cv == pytest.approx(math.sqrt(1.64 / math.exp(0.09) - 1), abs=0.08)
        assert rate.stages[stage].turnaround_cv == pytest.approx(0.8, abs=0.1), stage
    errors = validate_calibration(folder, result.scenario, Simulation, seeds=3).set_index(["scope", "metric"])
    assert (errors["rel_error"] < 0.10).all(), errors.to_string()


@pytest.mark.parametrize("turnaround", [0.05, 0.0])
def test_a_stage_too_seldom_backlogged_to_measure_its_turnaround_borrows_one(tmp_path, turnaround):
    """Write with 6 processes is never backlogged, so its own gaps cannot say its turnaround;
    it takes its idle hand-off (50 ms) plus what parse's and check's turnarounds add to theirs:
    the true 50 ms where every process turns for 50 ms after each task, about 0 where none
    does (Celery acking early). Before, 0 either way."""
    app = SyntheticApp(seed=5, horizon=1800.0, dispatch=0.05, turnaround=turnaround, servers={"write": 6})
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=1800.0)
    result = calibrate(folder, tmp_path / "out.yaml")
    spec, stages = load_scenario(result.scenario), result.report["stages"]
    assert stages["write"]["turnaround"]["backlogged_gaps"] < 20 <= stages["parse"]["turnaround"]["backlogged_gaps"]
    if turnaround:
        assert spec.stages["write"].turnaround == pytest.approx(turnaround, rel=0.1)
        assert any(w.startswith("stages.write.turnaround: ") and "too few" in w for w in result.report["warnings"])
        assert "borrowed (" in result.report_md.read_text()
    else:
        assert spec.stages["write"].turnaround < 0.005
    assert spec.stages["parse"].turnaround == pytest.approx(turnaround, abs=0.005)  # its own gaps


def test_hand_offs_and_turnarounds_that_slow_with_the_busy_processes_are_fitted_and_replayed(tmp_path):
    """Every hand-off (0.1 s) and turnaround (0.05 s) takes 1 + 0.6 b times as long, b the tasks
    being served on the machine when it begins (Celery's own work waiting for the cores).
    Calibrate reads each stage's contention near 0.6 (0.56-0.63), the hand-offs and turnarounds
    of an idle machine, and the replay matches the recording within 3 % (10 % asserted), p95
    included. The same scenario with the contention taken out misses by 18-27 %."""
    horizon = 3600.0
    app = SyntheticApp(seed=21, horizon=horizon, dispatch=0.1, turnaround=0.05, contention=0.6,
                       cpu={"parse": 1.0, "check": 0.5}, cores=1.0)  # fmt: skip
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=horizon)
    result = calibrate(folder, tmp_path / "out.yaml", cores="box=1")
    fitted = result.report["contention"]
    for stage in TRUTH:
        row = fitted[stage]["dispatch"]
        assert row["contention_ci95"][0] > 0.4 and row["contention"] == pytest.approx(0.6, abs=0.1), (stage, row)
    assert not [w for w in result.report["warnings"] if "did not follow the busy processes" in w]
    spec = load_scenario(result.scenario)
    assert spec.stages["write"].contention is not None and spec.stages["write"].contention.dispatch > 0.3
    assert "| stage | work | contention (95% CI) |" in result.report_md.read_text()
    errors = validate_calibration(folder, result.scenario, Simulation, seeds=3).set_index(["scope", "metric"])
    assert (errors["rel_error"] < 0.10).all(), errors.to_string()
    data = yaml.safe_load(result.scenario.read_text())
    for stage in data["stages"].values():
        stage.pop("contention", None)
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(data))
    without = validate_calibration(folder, plain, Simulation, seeds=3).set_index(["scope", "metric"])
    assert without["rel_error"].max() > 0.10, without.to_string()


def test_a_hand_off_sent_from_another_host_is_read_against_its_own_hosts_processes(tmp_path):
    """A stage placed on a host without the stage that sends it its tasks: each hand-off is read
    against that host's busy processes, its sender (elsewhere) neither counted nor taken off
    them. (Taken off, the count read -1 and stopped calibrate on a live recording whose host fit
    had placed two of the five stages.)"""
    from adaptflow.runtime.calibrate.contention import busy_counter, fit_contention, sender_spans, stage_samples
    from adaptflow.runtime.calibrate.sizes import fit_sizes

    app = SyntheticApp(seed=21, horizon=900.0, dispatch=0.1, turnaround=0.05, contention=0.6,
                       cpu={"parse": 1.0, "check": 0.5}, cores=1.0)  # fmt: skip
    events = [  # as live, each parse task sends its check a few milliseconds before it succeeds
        {**e, "timestamp": e["timestamp"] + 0.003} if e["type"] == "task-succeeded" and "parse" in e["hostname"] else e
        for e in app.run()
    ]
    recording = read_recording(write_recording(tmp_path / "rec", events, MAPPING, horizon=900.0))
    timeline, hosted = build_timeline(recording), ["check", "write"]  # parse, which sends to check, is not
    sizes, obs = fit_sizes(timeline), timeline.stages["check"]
    busy = busy_counter([timeline.stages[name] for name in hosted])
    samples = stage_samples(recording, obs, "check", sizes, busy, sender_spans(timeline, hosted))
    assert all(len(count) > 30 and count.min() == 0 and count.max() >= 1 for _, count in samples)
    fit = fit_contention(recording, timeline, {name: {"host": "box", "cpu": 0.5} for name in hosted}, sizes)
    assert list(fit.stages) == hosted and fit.report["check"]["dispatch"]["samples"] > 30


def test_cores_shared_by_the_stages_are_fitted_and_predict_a_bigger_pool(tmp_path):
    """The three stages' processes share one core (parse all CPU work, check half, write none:
    a sleep). Recorded with one process per stage, ``--cores box=1`` recovers each stage's CPU
    share and the replay matches. The test that matters is the one calibration cannot fit to:
    the same app run with 3 processes per stage, where the CPU work of up to 6 processes shares
    the core. The hosted scenario, its pools set to 3, predicts each stage's time per attempt
    within 10 %; the scenario without hosts keeps the times of one process per stage and misses
    parse's by more than that."""
    cpu, horizon = {"parse": 1.0, "check": 0.5}, 3600.0
    app = SyntheticApp(seed=5, horizon=horizon, cpu=cpu, cores=1.0)
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=horizon)
    hosted = calibrate(folder, tmp_path / "hosted.yaml", cores="box=1")
    plain = calibrate(folder, tmp_path / "plain.yaml")
    spec = load_scenario(hosted.scenario)
    assert spec.hosts["box"].cores == 1 and {s.host for s in spec.stages.values()} == {"box"}
    shares = {name: stage.cpu for name, stage in spec.stages.items()}
    assert shares["parse"] > 0.9 and 0.3 < shares["check"] < 0.7 and shares["write"] < 0.1, shares
    assert "## Hosts" in hosted.report_md.read_text()
    errors = validate_calibration(folder, hosted.scenario, Simulation, seeds=3).set_index(["scope", "metric"])
    assert (errors["rel_error"] < 0.10).all(), errors.to_string()

    folder3 = write_recording(
        tmp_path / "rec3", SyntheticApp(seed=8, horizon=horizon, cpu=cpu, cores=1.0, servers=3).run(), horizon=horizon
    )
    bigger = build_timeline(read_recording(folder3))
    truth = {name: float(np.mean(obs.services)) for name, obs in bigger.stages.items()}

    def predicted(path: Path) -> dict[str, float]:
        data = yaml.safe_load(path.read_text())
        for stage in data["stages"].values():
            stage["workers"].update(initial=3, min=3, max=3)
        data["sources"]["uploads"] = {"process": "poisson", "rate": RATE, "to": "parse"}
        sim = Simulation(parse_scenario(data, base_dir=path.parent), rng=1)
        sim.run(horizon)
        stages = sim.counters().stages
        return {n: c.busy_area / (c.completed + c.failures) for n, c in stages.items()}

    with_hosts, without = predicted(hosted.scenario), predicted(plain.scenario)
    for name in TRUTH:
        assert with_hosts[name] == pytest.approx(truth[name], rel=0.10), (name, with_hosts, truth)
    assert without["parse"] < 0.9 * truth["parse"], (without, truth)
    # a host fitted while every pool held its size says so, naming the sizes
    held = "hosts: fitted with every hosted pool held at one size"
    assert any(
        a.startswith(f"{held} (check 1, parse 1, write 1)") and "adaptflow fit-growth" in a
        for a in hosted.report["assumptions"]
    )
    fixed = calibrate(folder3, tmp_path / "fixed.yaml", cores="box=1").report["assumptions"]
    assert any(a.startswith(f"{held} (check 3, parse 3, write 3)") for a in fixed), fixed
    # and not when a pool changed while recording
    from adaptflow.runtime.calibrate.core import _held_pools

    report = {"assumptions": [], "stages": {n: {"workers": {"seen_min": 1, "seen_max": 1}} for n in TRUTH}}
    report["stages"]["check"]["workers"]["seen_max"] = 2
    _held_pools({n: {"host": "box"} for n in TRUTH}, SimpleNamespace(hosts={"box": {}}), report)  # type: ignore[arg-type]
    assert report["assumptions"] == []
    # told 2 cores where the 9 processes had 1, calibrate finds they slowed as on about one
    overstated = calibrate(folder3, tmp_path / "two.yaml", cores="box=2")
    assert overstated.report["hosts"]["box"]["effective_cores"] == pytest.approx(1.0, abs=0.25)
    assert load_scenario(overstated.scenario).hosts["box"].cores < 1.25


def test_tasks_slowed_more_than_one_core_explains_get_one_core_not_the_stated_ones(tmp_path):
    """Parse and check are all CPU work, three processes each, on one core that loses capacity
    with every job past it (as the example app's VM, where write slowed with the load more than
    sharing even one core explains). Told the machine has 2, calibrate finds that even one core
    leaves their slowdown unexplained and writes one, the most slowdown its host model gives,
    saying so; it once kept the stated 2, the least, and left the load to the item sizes."""
    cpu, horizon = {"parse": 1.0, "check": 1.0}, 1800.0
    app = SyntheticApp(seed=9, horizon=horizon, rate=1.0, cpu=cpu, cores=1.0, servers=3, oversubscription=1.0)
    folder = write_recording(tmp_path / "rec", app.run(), {**MAPPING, "sla": {"latency": 30.0}}, horizon=horizon)
    result = calibrate(folder, tmp_path / "one.yaml", cores="box=2")
    host = result.report["hosts"]["box"]
    assert host["effective_cores"] == 1.0, host
    assert "more than even 1 core explains" in host["effective_note"], host["effective_note"]
    assert load_scenario(result.scenario).hosts["box"].cores == 1.0
    assert any("written with 1" in w for w in result.report["warnings"]), result.report["warnings"]


@pytest.mark.parametrize("dist", ["deterministic", "exponential", "lognormal", "gamma"])
@pytest.mark.parametrize("cv", [0.3, 1.0, 1.5])
def test_a_fitted_family_moved_to_given_moments_is_a_valid_service_with_them(dist: str, cv: float):
    """Whatever family the quotients chose, the block written has the moments asked for and the
    scenario loader takes it (a fixed time asked for cv 1 was once written as a deterministic
    block with a cv, which the schema refuses)."""
    fitted = {"dist": dist, "mean": 1.0} | ({"cv": 0.5} if dist in ("lognormal", "gamma") else {})
    block = with_moments(fitted, 0.4, cv)
    stage = {"workers": {"initial": 1, "min": 1, "max": 1}, "service": block}
    spec = parse_scenario({"name": "m", "horizon": 10, "sla": {"latency": 5},
                           "sources": {"s": {"process": "poisson", "rate": 1, "to": "w"}},
                           "stages": {"w": stage}})  # fmt: skip
    service = spec.stages["w"].service
    assert service.expected() == pytest.approx(0.4) and (service.cv or 1.0) == pytest.approx(cv)


def test_independent_items_get_no_sizes(recorded):
    _, result = recorded
    sizes = result.report["sizes"]
    assert not sizes["fitted"] and sizes["pvalue"] >= 0.01 and sizes["tau2_ci95"][0] <= 0 <= sizes["tau2_ci95"][1]
    assert list(pd.read_csv(result.arrivals["uploads"]).columns) == ["timestamp"]


def test_too_few_visits_with_an_idle_process_give_no_dispatch_delay(tmp_path):
    lines = SyntheticApp(seed=3, horizon=6.0).run()
    folder = write_recording(tmp_path / "rec", lines, {**MAPPING, "sla": {"latency": 30.0}}, horizon=6.0)
    recording = read_recording(folder)
    obs = build_timeline(recording).stages["parse"]
    assert 0 < len(obs.waits) < DISPATCH_MIN_VISITS
    delay, report, warnings = fit_dispatch(recording, obs, "parse")
    assert delay == 0.0 and "delay" not in report
    assert warnings == [f"stages.parse.dispatch_delay: {report['idle_visits']} visits found an idle process "
                        f"(< {DISPATCH_MIN_VISITS}): taken as 0"]  # fmt: skip


def test_the_written_files_load_and_reference_each_other(recorded):
    _, result = recorded
    spec = load_scenario(result.scenario)
    source = spec.sources["uploads"]
    assert source.process == "trace" and source.file == result.arrivals["uploads"].resolve()
    times = np.loadtxt(result.arrivals["uploads"], skiprows=1)
    assert len(times) == result.report["sources"]["uploads"]["arrivals"] and np.all(np.diff(times) >= 0)
    alternative = load_scenario(result.rate_scenario)
    assert alternative.sources["uploads"].process == "poisson"
    assert alternative.stages == spec.stages and spec.horizon == pytest.approx(HORIZON)
    assert json.loads(result.report_json.read_text())["stages"]["check"]["service"]["chosen"] == "lognormal"
    text = result.report_md.read_text()
    assert "## Service times" in text and "| check |" in text and "## Assumptions" in text


def test_the_calibrated_scenario_reproduces_the_recording_in_simulation(recorded):
    folder, result = recorded
    errors = validate_calibration(folder, result.scenario, Simulation, seeds=3)
    assert set(errors["scope"]) == {"parse", "check", "write", "end_to_end"}
    assert len(errors) == 8 and errors["rel_error"].notna().all()
    assert (errors["rel_error"] < 0.10).all(), errors.to_string()


def test_a_partial_last_line_is_ignored_with_a_warning(tmp_path):
    lines = SyntheticApp(seed=2, horizon=600.0).run()
    copy = write_recording(tmp_path / "rec", lines, {**MAPPING, "sla": {"latency": 30.0}}, horizon=600.0)
    with (copy / "events.jsonl").open("a") as events:
        events.write('{"type": "task-sent", "uuid": "zz", "timest')  # killed mid-write
    recording = read_recording(copy)
    assert any("partial last line" in note for note in recording.notes)
    result = calibrate(copy, tmp_path / "out.yaml")
    assert any("partial last line" in w for w in result.report["warnings"])
    assert load_scenario(result.scenario).sla.latency == 30.0  # the mapping's SLA, when it has one


def test_a_bad_line_in_the_middle_is_an_error_naming_its_line(tmp_path):
    lines = SyntheticApp(seed=1, horizon=60.0).run()[:50]
    folder = write_recording(tmp_path / "rec", lines)
    original = (folder / "events.jsonl").read_text().splitlines()
    text = list(original)
    text[4] = "{not json"
    (folder / "events.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"events\.jsonl line 5: not a JSON object"):
        read_recording(folder)
    text[4] = json.dumps({"type": "adaptflow-pools", "timestamp": ORIGIN, "pools": {"parse": -1}})
    (folder / "events.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"line 5: pools is .*expected \{stage: count >= 0\}"):
        read_recording(folder)
    text[4] = json.dumps({"type": "adaptflow-pools", "timestamp": ORIGIN, "pools": {"parse": 1}, "kinds": {"parse": 3}})
    (folder / "events.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"line 5: kinds is .*expected \{stage: a pool's implementation name\}"):
        read_recording(folder)
    text[4] = json.dumps({"type": "adaptflow-pools", "timestamp": ORIGIN, "pools": {"parse": 1},
                          "main_cpu": {"parse": [100, -1.0]}})  # fmt: skip
    (folder / "events.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"line 5: main_cpu is .*expected \{stage: \[pid, CPU seconds >= 0\]\}"):
        read_recording(folder)
    text[4] = json.dumps({"type": "adaptflow-cpu", "timestamp": ORIGIN})  # a compared run's reading without one
    (folder / "events.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"line 5: main_cpu is None; expected \{stage: \[pid, CPU seconds >= 0\]\}"):
        read_recording(folder)
    (folder / "events.jsonl").write_text("\n".join([*original[:10], "[1, 2]"]) + "\n")  # a whole last line: no excuse
    with pytest.raises(ValueError, match=r"events\.jsonl line 11: got a JSON list; expected one JSON object per line"):
        read_recording(folder)


def with_main_cpu(lines: list[dict], per_visit: dict[str, float], restart: tuple[str, float]) -> list[dict]:
    """``lines`` with each pool line's ``main_cpu`` as ``record`` writes it: each stage's worker
    main process spends ``per_visit`` CPU seconds an attempt it finishes; ``restart``'s stage's
    worker restarts at its time (a new pid, its CPU counted from 0 again)."""
    finished = dict.fromkeys(per_visit, 0)
    at_restart = None
    for line in lines:
        stage = line.get("hostname", "@").split("@")[0]
        if line["type"] in ("task-succeeded", "task-failed", "task-retried"):
            finished[stage] += 1
        if line["type"] != "adaptflow-pools":
            continue
        late = line["timestamp"] - ORIGIN > restart[1]
        if late and at_restart is None:
            at_restart = finished[restart[0]]
        line["main_cpu"] = {
            s: [999, per_visit[s] * (n - at_restart)] if (s == restart[0] and late) else [100 + k, per_visit[s] * n]
            for k, (s, n) in enumerate(finished.items())
        }
    return lines


def test_celerys_own_cpu_a_visit_is_read_from_the_workers_main_process_readings(tmp_path):
    """The recorder keeps each worker's main-process CPU so far with its pid (``main_cpu``, from
    the worker's ``stats``). Each stage's main process here spends 5 ms an attempt it finishes
    (check's 3 ms), and check's worker restarts halfway (a new pid, its CPU from 0): calibrate
    reads each stage's CPU a visit back, the restart neither counted as negative CPU nor joined
    across; a host's figure is its stages' CPU over their visits; the report says how to hold it."""
    from adaptflow.runtime.calibrate.main_cpu import celery_cpu, report_lines

    per_visit = {"parse": 0.005, "check": 0.003, "write": 0.005}
    lines = with_main_cpu(SyntheticApp(seed=1, horizon=900.0).run(), per_visit, ("check", 450.0))
    folder = write_recording(tmp_path / "rec", lines, horizon=900.0)
    result = calibrate(folder, tmp_path / "etl.yaml")
    read = result.report["celery_cpu"]["stages"]
    for stage, seconds in per_visit.items():
        assert read[stage]["per_visit"] == pytest.approx(seconds, rel=0.02), stage
    ended = ("task-succeeded", "task-failed", "task-retried")
    finishes = [x["timestamp"] - ORIGIN for x in lines if x["type"] in ended and x["hostname"] == "check@box"]
    outside = [t for t in finishes if 450.0 < t <= 455.0]  # between the last reading of one pid and the new one's
    assert outside and abs(read["check"]["visits"] - (len(finishes) - len(outside))) <= 2  # in neither CPU nor visits
    markdown = result.report_md.read_text()
    assert "## Celery's own CPU" in markdown and "| parse |" in markdown and "| 5.00 |" in markdown
    recording = read_recording(folder)
    both = celery_cpu(recording, build_timeline(recording), {"parse": "box", "check": "box", "write": None})
    cpu, visits = (sum(read[s][key] for s in ("parse", "check")) for key in ("cpu_seconds", "visits"))
    assert both["hosts"] == {"box": {"per_visit": pytest.approx(cpu / visits, rel=1e-3), "stages": ["parse", "check"]}}
    assert f"--visit-cpu {both['hosts']['box']['per_visit']:.4g}`" in "\n".join(report_lines(both))


def test_a_fit_sets_own_runs_give_celerys_cpu_a_visit_over_every_one_of_their_recordings(tmp_path):
    """``fit-growth --visit-cpu recorded`` reads Celery's CPU a visit from the held runs' own
    recordings (``runs_cpu``): over a host's stages and every run, CPU over visits (a run of 4
    ms a visit and one of 8 ms give their visits' weighted mean), held as work at the host's
    speed (the scenario's ``visit_cpu`` is work at speed 1; a run measured at 0.9 holds 0.9 of
    its seconds); a recording without readings, or none at all, is a line naming it."""
    from adaptflow.runtime.calibrate.growth import GrowthFit, GrowthRun, _recorded_visit_cpu
    from adaptflow.runtime.calibrate.main_cpu import runs_cpu
    from adaptflow.scenario.schema import TurnaroundGrowth

    def run(name: str, seed: int, seconds: float) -> Path:
        per_visit = dict.fromkeys(("parse", "check", "write"), seconds)
        lines = with_main_cpu(SyntheticApp(seed=seed, horizon=300.0).run(), per_visit, ("write", 1e9))
        return write_recording(tmp_path / name / "static.recording", lines, horizon=300.0)

    light, heavy = run("light", 1, 0.004), run("heavy", 2, 0.008)
    one, other = runs_cpu([light], ["parse", "check"]), runs_cpu([heavy], ["parse", "check"])
    assert one.per_visit == pytest.approx(0.004, rel=0.02) and other.per_visit == pytest.approx(0.008, rel=0.02)
    both = runs_cpu([light, heavy], ["parse", "check"])
    assert both.runs == 2 and both.visits == one.visits + other.visits
    assert both.per_visit == pytest.approx((0.004 * one.visits + 0.008 * other.visits) / both.visits, rel=0.02)
    runs = [
        GrowthRun(f"{tmp_path / name / 'compare_app.csv'}:2", {}, {}, {}, planner="static")
        for name in ("light", "heavy")
    ]
    fit = GrowthFit("vm", TurnaroundGrowth(per_process=0.0, reference=2), runs, [], {}, {})
    assert _recorded_visit_cpu(fit, ["parse", "check"], 0.9) == pytest.approx(0.9 * both.per_visit, rel=1e-4)
    assert fit.recorded_cpu == both and fit.held_visit_cpu == pytest.approx(0.9 * both.per_visit, rel=1e-4)

    bare = write_recording(
        tmp_path / "bare" / "static.recording", SyntheticApp(seed=3, horizon=300.0).run(), horizon=300.0
    )
    with pytest.raises(ValueError) as refused:
        runs_cpu([light, bare, tmp_path / "gone.recording"], ["parse", "check"])
    assert str(refused.value).splitlines() == [
        f"{bare}: no main_cpu readings of ['parse', 'check']; expected a run recorded by a compare-app that reads "
        "each worker's main process at the run's start and end",
        f"{tmp_path / 'gone.recording'}: no run recording; expected compare-app --out's LABEL.recording beside the run",
    ]


def test_a_prefork_pool_is_calibrated_with_its_ticks_and_late_reaps(tmp_path):
    """A stage whose worker named its pool prefork (``kinds`` of the pool lines, as ``record``
    writes them) gets the prefork pool's start-up and retirement (scenario/celery_pool.py) in
    place of a constant start-up delay; a stage of another kind, or one no line names, keeps
    the delay measured at its grows (check's), or the default (write's)."""
    from adaptflow.scenario import load_scenario
    from adaptflow.scenario.celery_pool import PREFORK, prefork_workers

    horizon = 1800.0  # a grow late on, as the six-hour recordings' (a prefork pool's kinds need no more)
    lines = SyntheticApp(seed=3, horizon=horizon, grow_at=horizon - (HORIZON - GROW_AT)).run()
    for line in lines:
        if line["type"] == "adaptflow-pools":
            line["kinds"] = {"parse": PREFORK, "check": "celery.concurrency.thread:TaskPool"}
    result = calibrate(write_recording(tmp_path / "rec", lines, horizon=horizon), tmp_path / "etl.yaml")
    stages = load_scenario(result.scenario).stages
    parse = stages["parse"].workers.model_dump()
    assert {k: parse[k] for k in prefork_workers()} == prefork_workers()
    assert "a prefork pool" in result.report["stages"]["parse"]["startup"]["note"]
    for other in ("check", "write"):
        assert stages[other].workers.startup_tick is None and stages[other].workers.late_reap == 0.0
    measured = result.report["stages"]["check"]["startup"]["delay"]  # its grow, as without kinds
    assert measured > 0 and stages["check"].workers.startup_delay == pytest.approx(measured, rel=1e-3)


def test_a_recording_without_its_files_is_named(tmp_path):
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(MAPPING))
    with pytest.raises(ValueError, match=r"has no recording\.json"):
        read_recording(tmp_path)
    (tmp_path / "recording.json").write_text(json.dumps({"started": "yesterday"}))
    (tmp_path / "events.jsonl").write_text("")
    with pytest.raises(ValueError, match="started is 'yesterday'; expected wall seconds"):
        read_recording(tmp_path)


def test_a_rate_that_steps_is_written_as_a_piecewise_profile_and_gaps_are_not_lulls():
    rng = np.random.default_rng(3)
    first = np.cumsum(rng.exponential(1 / 1.0, 3000))
    second = 1000 + np.cumsum(rng.exponential(1 / 3.0, 9000))
    times = np.concatenate([first[first < 1000], second[second < 2000]])
    gap = (1500.0, 1620.0)
    times = times[(times < gap[0]) | (times >= gap[1])]  # events lost while the stream was down
    rate, report = fit_arrivals(times, 2000.0, [gap], 100.0)
    assert report["chosen"] == "piecewise" and rate["times"][:2] == [0.0, 100.0]
    values = np.asarray(rate["values"])
    assert np.mean(values[:10]) == pytest.approx(1.0, rel=0.1) and np.mean(values[10:]) == pytest.approx(3.0, rel=0.1)
    assert values[15] == pytest.approx(3.0, rel=0.25)  # the bin holding the gap, over the time seen
    flat, flat_report = fit_arrivals(first[first < 1000], 1000.0, [], 100.0)
    assert flat_report["chosen"] == "constant" and flat == pytest.approx(1.0, rel=0.1)


def test_times_no_family_fits_are_replayed_and_too_few_are_not_tested():
    rng = np.random.default_rng(5)
    bimodal = np.concatenate([rng.normal(0.1, 0.005, 3000), rng.normal(2.0, 0.05, 2000)])  # a cache hit or miss
    service, report, warnings = fit_service(list(bimodal), "lookup")
    assert service["dist"] == "empirical" and len(service["samples"]) == EMPIRICAL_POINTS
    assert np.mean(service["samples"]) == pytest.approx(bimodal.mean(), rel=0.01)
    assert all(fit["ks_pvalue"] < 0.05 for fit in report["fits"].values())
    assert warnings and "every family rejected" in warnings[0] and "stages.lookup" in warnings[0]
    service, report, warnings = fit_service([0.5, 0.7, 0.2], "rare")
    assert service == {"dist": "exponential", "mean": pytest.approx(0.466667)} and "untested" in warnings[0]


def test_a_gap_in_the_recording_is_left_out_of_routes_and_rates(tmp_path):
    lines = SyntheticApp(seed=4, horizon=900.0).run()
    lost = (ORIGIN + 300.0, ORIGIN + 360.0)
    kept = [line for line in lines if not lost[0] <= line["timestamp"] < lost[1]]
    kept.append({"type": "adaptflow-gap", "start": lost[0], "end": lost[1], "reason": "event stream lost: test"})
    folder = write_recording(tmp_path / "rec", kept, horizon=900.0)
    result = calibrate(folder, tmp_path / "out.yaml")
    assert result.report["recording"]["gaps"] == [{"start": 300.0, "end": 360.0, "reason": "event stream lost: test"}]
    assert any("gaps in the recording (60.0 s)" in w for w in result.report["warnings"])
    skipped = next(w for w in result.report["warnings"] if "overlapping a recording gap" in w)
    arrived = result.report["sources"]["uploads"]["arrivals"]
    assert result.report["routes"]["uploads"]["transitions"] == arrived - int(skipped.split()[0])
    assert result.report["sources"]["uploads"]["mean_rate"] == pytest.approx(RATE, rel=0.1)  # 840 s seen, not 900


def test_a_pool_no_line_names_is_the_most_tasks_seen_running_at_once(tmp_path):
    """Without the recorder's pool lines a stage's pool is what it was seen to do: the most tasks
    running at once. Not the processes seen serving it: Celery's events name each worker node
    once, whatever its pool (that read every pool of this recording as 1)."""
    horizon = 1800.0
    lines = SyntheticApp(seed=5, horizon=horizon, rate=6.0, servers=3).run()
    folder = write_recording(tmp_path / "rec", [e for e in lines if e["type"] != "adaptflow-pools"], horizon=horizon)
    result = calibrate(folder, tmp_path / "out" / "etl.yaml")
    spec = load_scenario(result.scenario)
    assert {s: spec.stages[s].workers.initial for s in TRUTH} == dict.fromkeys(TRUTH, 3)
    assert any("its pool is taken as the 3 tasks seen running at once" in w for w in result.report["warnings"])


def test_each_wait_is_split_into_the_brokers_part_and_the_workers(tmp_path):
    """``task-received`` splits a wait (sent to started) into the time the message sat in the
    broker and the time the worker held it; a retry is an attempt of its own, a task the
    mapping does not place is left out, and a recording without ``task-received`` says so."""
    from adaptflow.runtime.calibrate.report import render_markdown
    from adaptflow.runtime.calibrate.waits import wait_split

    def task(uuid, name, queue, sent, received, started, parent=None, root=None):
        ids = {"uuid": uuid, "root_id": root or uuid} | ({"parent_id": parent} if parent else {})
        return [
            {"type": "task-sent", "timestamp": ORIGIN + sent, "name": name, "queue": queue, **ids},
            {"type": "task-received", "timestamp": ORIGIN + received, "name": name, "hostname": f"{queue}@box", **ids},
            {"type": "task-started", "timestamp": ORIGIN + started, "hostname": f"{queue}@box", **ids},
            {"type": "task-succeeded", "timestamp": ORIGIN + started + 0.1, "hostname": f"{queue}@box", **ids},
        ]

    lines = task("a", "etl.parse", "parse", 1.0, 1.5, 1.6) + task("b", "etl.parse", "parse", 2.0, 2.1, 2.4)
    lines += task("c", "etl.check", "check", 1.7, 1.9, 1.95, parent="a", root="a")
    lines += task("d", "etl.other", "elsewhere", 3.0, 3.5, 3.6)  # no stage: not counted
    lines = sorted(lines, key=lambda e: e["timestamp"])
    recording = read_recording(write_recording(tmp_path / "rec", lines, horizon=10.0))
    split = wait_split(recording)
    assert list(split) == list(recording.mapping.stages)[:2] == ["check", "parse"]  # the mapping file's order
    assert split["parse"]["attempts"] == 2 and split["check"]["attempts"] == 1
    assert split["parse"]["broker_mean"] == pytest.approx((0.5 + 0.1) / 2)
    assert split["parse"]["worker_mean"] == pytest.approx((0.1 + 0.3) / 2)
    assert split["check"]["broker_mean"] == pytest.approx(0.2) and split["check"]["worker_p95"] == pytest.approx(0.05)
    assert split["parse"]["broker_p95"] == pytest.approx(0.5 - 0.05 * 0.4)  # numpy's linear 95th of 0.1, 0.5
    # a retry: sent, received and started again; each attempt split on its own
    retried = task("e", "etl.parse", "parse", 5.0, 5.2, 5.3)[:3]
    retried += [{"type": "task-retried", "timestamp": ORIGIN + 5.4, "uuid": "e", "hostname": "parse@box"}]
    retried += task("e", "etl.parse", "parse", 6.0, 7.0, 7.5)
    recording = read_recording(write_recording(tmp_path / "retry", retried, horizon=10.0))
    assert wait_split(recording)["parse"]["attempts"] == 2
    assert wait_split(recording)["parse"]["broker_mean"] == pytest.approx((0.2 + 1.0) / 2)
    # Celery stamps task-sent after the publish returns: an idle worker's received, and even its
    # started, can come first (the first order of a live run); such an attempt still counts
    early = task("f", "etl.parse", "parse", 8.0, 7.999, 7.9995) + task("g", "etl.parse", "parse", 9.0, 8.99, 9.1)
    skewed = sorted(lines + early, key=lambda e: e["timestamp"])
    recording = read_recording(write_recording(tmp_path / "skewed", skewed, horizon=10.0))
    assert wait_split(recording)["parse"]["attempts"] == 4
    # a redelivery (received and started again, never sent again) is no attempt of its own
    again = [{**e, "timestamp": e["timestamp"] + 1.0} for e in task("h", "etl.parse", "parse", 0, 3.0, 3.2)[1:3]]
    redelivered = sorted(lines + task("h", "etl.parse", "parse", 2.5, 3.0, 3.2) + again, key=lambda e: e["timestamp"])
    recording = read_recording(write_recording(tmp_path / "redelivered", redelivered, horizon=10.0))
    assert wait_split(recording)["parse"]["attempts"] == 3
    assert wait_split(recording)["parse"]["broker_mean"] == pytest.approx((0.5 + 0.1 + 0.5) / 3)
    # without task-received there is nothing to split, and the report says why
    plain = [e for e in lines if e["type"] != "task-received"]
    recording = read_recording(write_recording(tmp_path / "plain", plain, horizon=10.0))
    assert wait_split(recording) == {}
    result = calibrate(tmp_path / "plain", tmp_path / "out" / "plain.yaml")
    assert "has no task-received events to split its waits" in render_markdown(result.report)
    assert result.report["wait_split"] == {}


def test_the_fit_report_carries_the_split_of_the_waits(recorded):
    """On the synthetic recording (no task-received: its queue waits start at task-sent) the
    report has the section, empty, and says why."""
    _, result = recorded
    assert result.report["wait_split"] == {}
    assert "## Where the waits went" in result.report_md.read_text()


def _shrinking(cycles: int, held: set[int], quiet: frozenset[int] = frozenset()):
    """A prefork stage's recording, by hand: every 10 s its pool line says 2 and, 5 s later, 1 (a
    shrink to one process); an item every 0.2 s served in 0.05 s, except that after the shrinks
    of the ``held`` cycles nothing starts for 2.5 s while items wait (Celery's shrink race), and
    after those of the ``quiet`` ones nothing comes for as long (idle, with nothing waiting)."""
    from adaptflow.runtime.calibrate.recording import Recording
    from adaptflow.runtime.calibrate.timeline import StageObs
    from adaptflow.scenario.celery_pool import PREFORK

    pools = [(10.0 * k + dt, {"write": n}) for k in range(cycles) for dt, n in ((0.0, 2), (5.0, 1))]
    attempts, free = [], 0.0
    for i in range(int(cycles * 10 / 0.2)):
        enter = 0.2 * i + 0.01
        start = max(enter, free)
        cycle, into = divmod(enter, 10.0)
        if int(cycle) in quiet and 5.2 <= into < 7.7:
            continue
        if int(cycle) in held and 5.2 <= into < 7.7:
            start = max(start, 10.0 * cycle + 7.7)  # the one reservation sat in the retired process
        free = start + 0.05
        attempts.append((enter, start, free, f"t{i}"))
    recording = Recording(Path("."), None, {"started": 0.0}, pools=pools, kinds={"write": PREFORK})  # type: ignore[arg-type]
    return recording, StageObs(attempt_times=attempts)


def test_the_shrinks_to_one_process_that_held_a_task_are_counted():
    """A shrink to one process held a task when the stage then sat idle over half a second with
    an item waiting; a steady stream after a shrink did not, nor a lull with nothing waiting; a
    shrink to two is not counted."""
    from adaptflow.runtime.calibrate.system import fit_held_shrinks

    recording, obs = _shrinking(4, held={1, 3}, quiet=frozenset({2}))
    recording.pools.insert(4, (17.0, {"write": 3}))  # cycle 1 ends at 3, then 2 at 20: a shrink to two
    found = fit_held_shrinks(recording, obs, "write")
    assert (found["shrinks"], found["held"]) == (4, 2)
    assert found["held_at"] == [pytest.approx(17.7), pytest.approx(37.7)]


def test_a_prefork_pool_s_late_reaps_are_measured_from_enough_recorded_shrinks():
    """With ``MIN_SHRINKS`` shrinks to one process recorded, a prefork stage's ``late_reap`` is
    the share of them that held a task; with one fewer, Celery's measured share, and the note
    says why."""
    from adaptflow.runtime.calibrate.core import MIN_SHRINKS, _pool_start
    from adaptflow.scenario.celery_pool import CELERY_LATE_REAP

    held = set(range(0, MIN_SHRINKS, 5))
    for cycles, expected in ((MIN_SHRINKS, len(held) / MIN_SHRINKS), (MIN_SHRINKS - 1, CELERY_LATE_REAP)):
        recording, obs = _shrinking(cycles, held)
        startup, report = {}, {"assumptions": []}
        fields = _pool_start(recording, "write", obs, None, startup, report)
        assert fields["late_reap"] == pytest.approx(expected, rel=1e-3), cycles
        assert startup["shrinks"]["shrinks"] == cycles
        said = f"{len(held)} of the {cycles} shrinks" if cycles >= MIN_SHRINKS else f"fewer than {MIN_SHRINKS}"
        assert said in startup["note"] and said in report["assumptions"][0]

"""Queueing-theory staffing planners. All three size each stage's pool with the same rule, the
fewest workers whose mean queueing wait meets a target; they differ only in the arrival rate
they staff for:

* :class:`ErlangPlanner`: the rate the analyzer estimates now (reactive);
* :class:`PredictivePlanner`: the analyzer's forecast over the coming start-up delay;
* :class:`ClairvoyantPlanner`: the true future rate, read from the scenario. No planner can know
  it, which makes it the reference bound every other planner is measured against.

:class:`PlannedSplitPlanner` pairs Erlang staffing with a routing planner (e.g. the quality
rule): the branches of a split are staffed for the split the router is about to apply, not for
the rate they received under the previous one.

The wait is Erlang C's M/M/c mean wait scaled by Allen-Cunneen's ``(1 + cs^2) / 2`` for the
service distribution's squared coefficient of variation (exact for M/M/c, a good approximation
for M/G/c).

On a scenario with ``hosts`` the rule staffs for what each host's cores can serve
(:meth:`_StaffingPlanner.servable`): Erlang C takes every process for a server of full speed,
and would keep adding processes to an overloaded host that only slow each other down.
"""

from __future__ import annotations

import math

import numpy as np

from adaptflow.agents import Insights, MetricsSnapshot, Plan, Planner
from adaptflow.scenario import Scenario
from adaptflow.scenario.theory import erlang_b_steps, erlang_c


def service_scv(scenario: Scenario, stage: str) -> float:
    """Squared coefficient of variation of the time a worker is held per attempt: the service
    time plus the stage's turnaround, drawn independently (its mean adds to the mean, its
    spread, ``turnaround_cv``, to the variance)."""
    spec = scenario.stages[stage]
    s = spec.service
    if s.dist == "exponential":
        scv = 1.0
    elif s.dist == "deterministic":
        scv = 0.0
    elif s.dist in ("lognormal", "gamma"):
        scv = float(s.cv) ** 2
    else:
        samples = np.asarray(s.samples, dtype=float)
        scv = float(samples.var() / samples.mean() ** 2)
    variance = scv * s.expected() ** 2 + (spec.turnaround_cv * spec.turnaround) ** 2
    return variance / spec.occupancy() ** 2


def attempts_per_visit(scenario: Scenario, stage: str) -> float:
    """Expected service attempts per visit: 1 + f + ... + f^r with failure prob f, r retries."""
    failure = scenario.stages[stage].failure
    if failure is None:
        return 1.0
    f, r = failure.prob, failure.max_retries
    return float(sum(f**k for k in range(r + 1)))


def visit_ratios(
    scenario: Scenario, splits: dict[str, dict[str | None, float]] | None = None
) -> dict[str, dict[str, float]]:
    """Expected visits to each stage per item of each source (the traffic equations of an open
    network: v = e + v P). Each route gives its row itself (``expected_branches``): splits use
    ``splits`` where given (every target of the split), else the scenario's values; attribute
    routes send everything down the 'good' / 'not flagged' branch (the common case)."""
    names = list(scenario.stages)
    index = {n: i for i, n in enumerate(names)}
    splits = splits or {}
    P = np.zeros((len(names), len(names)))
    for name, st in scenario.stages.items():
        for target, p in st.next.expected_branches(splits.get(name) or None):
            if target is not None:
                P[index[name], index[target]] += p
    out = {}
    for src_name, src in scenario.sources.items():
        e = np.zeros(len(names))
        for target, p in src.to.expected_branches(splits.get(src_name) or None):
            if target is not None:
                e[index[target]] += p
        v = np.linalg.solve((np.eye(len(names)) - P).T, e)
        out[src_name] = {n: float(v[index[n]]) for n in names}
    return out


def mean_wait(rate: float, mean_service: float, servers: int, scv: float) -> float:
    """Allen-Cunneen mean queueing wait of a G/G/c-like stage fed by Poisson arrivals."""
    a = rate * mean_service
    if servers <= a:
        return math.inf
    return erlang_c(servers, a) * mean_service / (servers - a) * (1 + scv) / 2


def staff(rate: float, mean_service: float, target_wait: float, scv: float = 1.0, lo: int = 0, hi: int = 10**6) -> int:
    """Fewest workers in [lo, hi] whose mean wait is at most ``target_wait`` (hi if none).

    Bounded work whatever the input: an offered load ``a`` at or above ``hi`` answers ``hi`` at
    once (no pool within the bounds is stable), and otherwise one pass of the Erlang B recursion
    walks c = 1, 2, ... and stops at the first c that meets the target, so the cost is O(answer)
    and never more than O(hi). (Calling :func:`mean_wait` per candidate would redo the O(c)
    recursion for every c: quadratic in the load, which let one request with a huge rate hang the
    planner service.) The mean wait falls as c grows, so the first c found is the fewest."""
    if rate <= 0:
        return lo
    a = rate * mean_service
    if not a < hi:  # also catches a NaN or infinite load
        return hi
    first = max(lo, 1)
    for k, b in erlang_b_steps(a, hi):
        if k < first or k <= a:
            continue
        rho = a / k
        wait = b / (1 - rho + rho * b) * mean_service / (k - a) * (1 + scv) / 2
        if wait <= target_wait:
            return k
    return hi


class _StaffingPlanner(Planner):
    """Shared: per-stage service statistics and bounds from the scenario, and the staffing rule."""

    def __init__(self, scenario: Scenario, target_wait: float | None = None, interval: float = 30.0):
        if target_wait is not None and not target_wait > 0:
            raise ValueError(f"target_wait must be > 0 seconds, got {target_wait}")
        self.scenario = scenario
        self.interval = interval
        # Default: a tenth of the SLA per stage, leaving the rest for service and the other stages.
        self.target_wait = target_wait if target_wait is not None else 0.1 * scenario.sla.latency
        self.mean = {n: s.occupancy() * attempts_per_visit(scenario, n) for n, s in scenario.stages.items()}
        self.scv = {n: service_scv(scenario, n) for n in scenario.stages}
        self.bounds = {n: (s.workers.min, s.workers.max) for n, s in scenario.stages.items()}
        self.delay = {n: s.workers.startup_delay for n, s in scenario.stages.items()}
        # CPU seconds of a host's cores each visit asks for (service share only: the turnaround
        # and the non-CPU share do not run on the host's cores, see hosts.py)
        self.cpu_work = {
            n: s.service.expected() * s.cpu_share * attempts_per_visit(scenario, n) for n, s in scenario.stages.items()
        }
        self.hosts = {
            h: (host.cores, [n for n, s in scenario.stages.items() if s.host == h and s.cpu_share > 0])
            for h, host in scenario.hosts.items()
        }
        # a turnaround that slows with the processes busy on its host (Stage.contention): the
        # seconds per visit it adds per busy process, and the busy seconds each visit of a
        # hosted stage keeps a process serving
        self.stretched = {
            n: (s.host, s.turnaround * s.contention.turnaround * attempts_per_visit(scenario, n))
            for n, s in scenario.stages.items()
            if s.host is not None and s.contention is not None and s.contention.turnaround and s.turnaround
        }
        self.busy_work = {
            n: (s.host, s.service.expected() * attempts_per_visit(scenario, n))
            for n, s in scenario.stages.items()
            if s.host is not None
        }

    def staff_for(self, stage: str, rate: float, mean: float | None = None) -> int:
        lo, hi = self.bounds[stage]
        return staff(rate, self.mean[stage] if mean is None else mean, self.target_wait, self.scv[stage], lo, hi)

    def staff_all(self, rates: dict[str, float]) -> dict[str, int]:
        """Every stage's pool for the rates into it, as far as its host can serve them
        (:meth:`servable`), each held per visit as long as those rates make it (:meth:`loaded_means`)."""
        rates = self.servable(rates)
        means = self.loaded_means(rates)
        return {n: self.staff_for(n, rates[n], means[n]) for n in self.scenario.stages}

    def loaded_means(self, rates: dict[str, float]) -> dict[str, float]:
        """Each stage's mean holding time per visit at these rates: its turnaround stretched by
        the processes they keep busy on its host (Little's law: rate times service, summed over
        the host's stages), as the simulator stretches it (``Stage.contention``).

        Why: calibration fits a contended turnaround to what it takes on an idle machine, so
        its plain value undercounts the capacity a loaded stage loses. On the example app
        Erlang C staffed from it held 6.1 processes live where it had held 8 from the loaded
        mean, and let validate run at 87 % utilization (docs/sim_to_real.md)."""
        if not self.stretched:
            return self.mean
        busy: dict[str, float] = {}
        for name, (host, work) in self.busy_work.items():
            busy[host] = busy.get(host, 0.0) + max(rates.get(name, 0.0), 0.0) * work
        means = dict(self.mean)
        for name, (host, per_busy) in self.stretched.items():
            means[name] += per_busy * busy[host]
        return means

    def servable(self, rates: dict[str, float]) -> dict[str, float]:
        """The rates the stages' hosts can serve: a host asked for more CPU seconds a second
        than it has cores serves each of its stages that share of its rate, and no more.

        Why: Erlang C counts every process as a server of full speed, so past a host's cores it
        keeps adding processes for load they cannot serve; they share the same cores and only
        slow each other down (the simulator's hosts, and the example app measured on 2 cores).
        Staffed for what the host can serve, a pool stays near what its share of the cores can
        run. A scenario without hosts is unchanged."""
        out = dict(rates)
        for cores, stages in self.hosts.values():
            demand = sum(max(rates[n], 0.0) * self.cpu_work[n] for n in stages)
            if demand > cores:
                for n in stages:
                    out[n] = rates[n] * cores / demand
        return out


class ErlangPlanner(_StaffingPlanner):
    """Staff each stage for the arrival rate the analyzer estimates into it now."""

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        return Plan(workers=self.staff_all(insights.stage_rates))


def rates_for_splits(
    scenario: Scenario, insights: Insights, splits: dict[str, dict[str | None, float]]
) -> dict[str, float]:
    """The analyzer's per-stage rate estimates, except that each branch of a split in ``splits``
    gets the rate into the split's owner times the branch's new share: what the branch will
    receive once the split is applied, rather than an average of what it received under the
    previous split (which lags a reroute by several intervals). Stages past the branches keep
    their estimates (a reroute changes their load only by the items validation removes)."""
    rates = dict(insights.stage_rates)
    for owner, shares in splits.items():
        into = insights.stage_rates[owner] if owner in insights.stage_rates else insights.rates.get(owner, 0.0)
        for target, p in shares.items():
            if target is not None:
                rates[target] = into * p
    return rates


class PlannedSplitPlanner(ErlangPlanner):
    """Splits from a routing planner (``router``), and Erlang staffing for the rates those
    splits will send to each stage (:func:`rates_for_splits`), in the same decision: when the
    router sends work to a slow branch, that branch's pool is sized for it at once.

    ``max_utilization`` (off by default): a branch is sent no more than its *ready* workers can
    serve at that utilization (the rest goes to the other branch), so that a reroute ramps up
    as the new workers come up instead of queueing behind them. ``staff=False`` leaves the
    pools as they are (routing only), with the same cap."""

    def __init__(
        self,
        scenario: Scenario,
        router: Planner,
        target_wait: float | None = None,
        interval: float = 30.0,
        max_utilization: float | None = None,
        staff: bool = True,
    ):
        super().__init__(scenario, target_wait, interval)
        if max_utilization is not None and not max_utilization > 0:
            raise ValueError(f"max_utilization must be > 0, got {max_utilization}")
        self.router, self.max_utilization, self.staffing = router, max_utilization, staff

    def reset(self) -> None:
        self.router.reset()

    def cap(self, snapshot: MetricsSnapshot, insights: Insights, splits: dict) -> dict:
        """Each split with every branch's share capped by its ready capacity; the excess goes
        to the branch with the most headroom."""
        if self.max_utilization is None:
            return splits
        out = {}
        for owner, shares in splits.items():
            into = insights.stage_rates[owner] if owner in insights.stage_rates else insights.rates.get(owner, 0.0)
            if into <= 0:
                out[owner] = shares
                continue
            limit = {
                t: (1.0 if t is None else snapshot.stages[t].active / self.mean[t] * self.max_utilization / into)
                for t in shares
            }
            capped = {t: min(p, limit[t]) for t, p in shares.items()}
            spare = 1.0 - sum(capped.values())
            if spare > 1e-12:
                roomiest = max(capped, key=lambda t: limit[t] - capped[t])
                capped[roomiest] += spare
            out[owner] = capped
        return out

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        route = self.router.plan(snapshot, insights)
        if not self.staffing:
            return Plan(splits=self.cap(snapshot, insights, route.splits))
        rates = rates_for_splits(self.scenario, insights, route.splits)
        return Plan(workers=self.staff_all(rates), splits=self.cap(snapshot, insights, route.splits))


class PredictivePlanner(_StaffingPlanner):
    """Staff each stage for the highest forecast rate until a worker asked for now is ready:
    the analyzer's per-source forecast over the next ``ceil(startup_delay / interval) + 1``
    decisions, spread over the stages by the traffic equations."""

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        visits = visit_ratios(self.scenario, snapshot.splits)
        peaks = {}
        for name in self.scenario.stages:
            steps = math.ceil(self.delay[name] / self.interval) + 1
            peak = 0.0
            for source, forecast in insights.forecasts.items():
                horizon = forecast[:steps] if forecast else [insights.rates.get(source, 0.0)]
                peak += max(horizon) * visits[source][name]
            peaks[name] = peak
        return Plan(workers=self.staff_all(peaks))


class ClairvoyantPlanner(_StaffingPlanner):
    """Knows each source's true rate profile (and, for a trace, the true arrival counts) and
    staffs each stage for the highest rate between now and the end of the interval that
    begins when a worker asked for now is ready. A Markov-modulated source has no knowable
    future, so it is refused."""

    def __init__(self, scenario: Scenario, target_wait: float | None = None, interval: float = 30.0, samples: int = 16):
        super().__init__(scenario, target_wait, interval)
        self.samples = samples
        self._traces = {}
        for name, src in scenario.sources.items():
            if src.process == "mmpp":
                raise ValueError(f"ClairvoyantPlanner: source {name!r} is an MMPP, whose future rate is unknowable")
            if src.process == "trace":
                from adaptflow.scenario.schema import load_trace

                self._traces[name] = load_trace(src.file, src.time_column, src.size_column)[0]

    def true_rate(self, source: str, start: float, end: float) -> float:
        """The highest true arrival rate of ``source`` over [start, end] (items/s)."""
        if source in self._traces:
            times = self._traces[source]
            count = np.searchsorted(times, end, "right") - np.searchsorted(times, start, "left")
            return float(count) / max(end - start, 1e-9)
        grid = np.linspace(start, end, self.samples)
        return float(np.max(self.scenario.sources[source].rate.at(grid)))

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        visits = visit_ratios(self.scenario, snapshot.splits)
        now = snapshot.time
        peaks = {}
        for name in self.scenario.stages:
            end = now + self.delay[name] + self.interval
            peaks[name] = sum(self.true_rate(src, now, end) * visits[src][name] for src in self.scenario.sources)
        return Plan(workers=self.staff_all(peaks))

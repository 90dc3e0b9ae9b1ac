"""Evaluate planners on a scenario: episodes through the Coordinator, tables and statistics.

Every planner, from a rule to a trained model, is evaluated by the same loop that runs it live
(the Coordinator), with the same cost model that trains the RL planners, on held-out seeds that
no training run may use (:func:`evaluation_seeds`). Each planner sees the same seeds, hence the
same arrivals, so planners are compared pairwise, seed by seed.

A planner's analyzer is fitted (or loaded from a learned planner's sidecar) once per evaluation,
in the parent process, and handed to every episode as data: an episode never refits it.

An interval is only as wide as what the seeds vary: :func:`workload_notes` says so beside the
tables when the workload comes from one recorded series or a replayed trace."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from tqdm import tqdm

from adaptflow.agents import (
    ControlLoop,
    Coordinator,
    CostModel,
    CostWeights,
    EventLog,
    Planner,
    SimClock,
    SimExecutor,
    SimMonitor,
)
from adaptflow.agents.analyzers import StandardAnalyzer
from adaptflow.agents.cost import reward_scale
from adaptflow.agents.fitting import analyzer_for
from adaptflow.policies.registry import make_planner, parse_planner, split_label
from adaptflow.scenario import Scenario, load_scenario
from adaptflow.scenario.schema import MAX_STEPS as MAX_DECISIONS
from adaptflow.scenario.streams import Streams
from adaptflow.simulator import Simulation

from .io import atomic_write, atomic_write_text

EVALUATION_SEED_BASE = 1_000_000
"""Evaluation seeds are EVALUATION_SEED_BASE + k; training seeds must stay below it."""


MAX_SEEDS = 10_000
"""Bound on the evaluation episodes asked for per planner."""


def evaluation_seeds(n: int) -> list[int]:
    if not 1 <= n <= MAX_SEEDS:
        raise ValueError(f"seeds: {n}; expected a count from 1 to {MAX_SEEDS:,}")
    return [EVALUATION_SEED_BASE + k for k in range(n)]


def check_disjoint(training: list[int], evaluation: list[int]) -> None:
    """Training and evaluation seeds never overlap (an overlap would test on the training set)."""
    shared = sorted(set(training) & set(evaluation))
    if shared:
        raise ValueError(f"seeds {shared[:5]} are both training and evaluation seeds; keep them apart")
    if any(s >= EVALUATION_SEED_BASE for s in training):
        raise ValueError(f"training seeds must be below {EVALUATION_SEED_BASE} (the evaluation range)")


def run_episode(
    scenario: str | Path | Scenario,
    planner: Planner,
    seed: int,
    interval: float = 30.0,
    weights: CostWeights | dict | None = None,
    forecaster: str = "ewma",
    log_path: str | Path | None = None,
    analyzer: StandardAnalyzer | None = None,
) -> dict[str, Any]:
    """One episode of ``planner`` on ``scenario`` with ``seed``; returns the episode's metrics:
    cost (total and by component), SLA violation rate, p95 latency, drops, escapes, reward.

    ``analyzer``: the planner's analyzer, fitted beforehand (it is reset here); by default the
    one the planner carries or one fitted for it (:func:`adaptflow.agents.fitting.analyzer_for`,
    cached per process).

    ``takeovers``: how many of this episode's decisions a guarded planner handed to its fallback
    rule (the change in the planner's ``takeovers`` counter; 0 for a planner without one)."""
    spec = load_scenario(scenario)
    sim = Simulation(spec, rng=np.random.default_rng(seed))
    analyzer = analyzer if analyzer is not None else analyzer_for(planner, spec, interval, forecaster)
    cost_model = CostModel(weights)
    loop = ControlLoop(SimMonitor(sim), analyzer, SimExecutor(sim), SimClock(sim), cost_model, interval)
    log = EventLog(log_path) if log_path is not None else None
    # The Coordinator resets the planner too; resetting first means the counter is read after any
    # reset, so the difference is this episode's count whether reset zeroes the counter or not.
    planner.reset()
    takeovers_before = getattr(planner, "takeovers", 0)
    try:
        transitions = Coordinator(loop, planner, log).run(until=spec.horizon)
    finally:
        if log is not None:
            log.close()
    summary = sim.summary()
    e2e = summary["end_to_end"]
    terminal = cost_model.terminal(transitions[-1].snapshot) if transitions else None
    components = {key: sum(t.cost[key] for t in transitions) for key in ("workers", "sla", "drops", "escapes")}
    components["backlog"] = terminal.backlog if terminal is not None else 0.0
    total = sum(components.values())
    return {
        "scenario": spec.name,
        "seed": seed,
        "cost": total,
        **{f"cost_{k}": v for k, v in components.items()},
        "sla_violation_rate": e2e["sla_violation_rate"],
        "p95_latency": e2e["p95_latency"],
        "drops": e2e["drops"] + e2e["failed_items"],
        "escapes": e2e["escapes"],
        "completed": e2e["completed"],
        "mean_workers": sum(s["mean_workers"] for s in summary["stages"].values()),
        "reward": -total / reward_scale(spec, interval),
        "decisions": len(transitions),
        "clamps": sum(len(t.applied.clamps) for t in transitions),
        "takeovers": int(getattr(planner, "takeovers", 0) - takeovers_before),
    }


def _label(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec)


SEES_THE_FUTURE = frozenset({"clairvoyant"})
"""Planners built from the episode's own scenario (its series window and drawn profiles, see
:meth:`Scenario.for_episode`): the bound knows the workload it will face; every other planner
is built from the scenario as the user wrote it, and learns the episode by observing it."""


def episode_scenario(scenario: str | Path | Scenario, seed: int) -> Scenario:
    """The scenario ``Simulation(scenario, rng=seed)`` runs: its windows and profiles drawn."""
    return load_scenario(scenario).for_episode(Streams(np.random.default_rng(seed)))


def _one(task: tuple) -> dict[str, Any]:
    """One (planner, seed) episode, in a worker process."""
    scenario, spec, seed, interval, weights, log_dir, analyzer = task
    label = split_label(spec)[0]
    planner, forecaster = make_planner(
        spec, episode_scenario(scenario, seed) if label in SEES_THE_FUTURE else scenario, interval
    )
    log_path = Path(log_dir) / _label(label) / f"seed_{seed}.jsonl" if log_dir else None
    row = run_episode(
        scenario, planner, seed, interval, weights, forecaster, log_path, StandardAnalyzer.from_dict(analyzer)
    )
    return {"planner": label, **row}


@dataclass
class Evaluation:
    table: pd.DataFrame  # one row per (planner, seed)
    summary: pd.DataFrame  # one row per planner: mean and 95% CI of each metric
    paired: pd.DataFrame  # each planner against the best baseline, seed by seed
    out_dir: Path | None
    notes: list[str] = field(default_factory=list)  # what the intervals do not cover (workload_notes)


def check_request(spec: Scenario, interval: float, processes: int | None) -> None:
    """Refuse, before any fit or episode, an evaluation that would never end (a NaN or tiny
    interval) or could not run (no processes)."""
    if not (math.isfinite(interval) and 0 < interval <= spec.horizon):
        raise ValueError(f"interval: {interval!r}; expected a finite number of seconds in (0, {spec.horizon:g}]")
    if spec.horizon / interval > MAX_DECISIONS:
        raise ValueError(
            f"interval: {interval:g} s is {spec.horizon / interval:,.0f} decisions per episode; "
            f"expected at most {MAX_DECISIONS:,} (an interval of at least {spec.horizon / MAX_DECISIONS:g} s)"
        )
    if processes is not None and processes < 1:
        raise ValueError(f"processes: {processes}; expected at least 1")


def evaluate(
    scenario: str | Path | Scenario,
    planners: list[str],
    seeds: int | list[int] = 10,
    interval: float = 30.0,
    weights: CostWeights | dict | None = None,
    out_dir: str | Path | None = None,
    processes: int | None = None,
    progress: bool = False,
    part: str | None = None,
) -> Evaluation:
    """Run every planner on every evaluation seed (in parallel processes) and compare them.

    ``seeds``: a count (held-out seeds from :func:`evaluation_seeds`) or explicit seeds.
    ``out_dir``: where to write results.parquet/csv, summary.csv, paired.csv, evaluation.json
    (the settings and notes) and the episode event logs (episodes/<planner>/seed_<seed>.jsonl).
    Same inputs, same tables.
    ``part``: which part of each recorded series the episodes' windows come from (see
    :func:`scenario_part`); ``None`` keeps the scenario as it is."""
    spec = scenario_part(load_scenario(scenario), part)
    check_request(spec, interval, processes)
    analyzers = planner_analyzers(spec, planners, interval)
    labels = [split_label(p)[0] for p in planners]
    seed_list = evaluation_seeds(seeds) if isinstance(seeds, int) else list(seeds)
    weights = weights if isinstance(weights, CostWeights) else CostWeights(**(weights or {}))
    out = Path(out_dir) if out_dir is not None else None
    log_dir = str(out / "episodes") if out is not None else None
    tasks = [(spec, p, s, interval, weights, log_dir, analyzers[p]) for p in planners for s in seed_list]
    rows = run_tasks(tasks, f"evaluate {spec.name}", processes, progress)
    table = (
        pd.DataFrame(rows)
        .sort_values(
            ["planner", "seed"],
            key=lambda c: c.map({label: i for i, label in enumerate(labels)}) if c.name == "planner" else c,
        )
        .reset_index(drop=True)
    )
    result = Evaluation(table, summarize(table), paired_comparison(table), out, workload_notes(spec))
    if out is not None:
        write_evaluation(result, {"scenario": spec.name, "part": part, "planners": planners, "seeds": seed_list,
                                  "interval": interval, "weights": weights.model_dump(),
                                  "notes": result.notes})  # fmt: skip
    return result


PARTS = ("train", "validation", "test", "all")
"""The parts of a recorded series a scenario's windows may be drawn from."""


def scenario_part(spec: Scenario, part: str | None) -> Scenario:
    """``spec`` with every series source's windows drawn from ``part`` of its series (``None``:
    ``spec`` as it is), checked before any work so that a typo never evaluates the wrong part."""
    if part is None:
        return spec
    if part not in PARTS:
        raise ValueError(f"part: {part!r}; expected one of {', '.join(PARTS)}")
    for_part = getattr(spec, "for_part", None)
    # A Scenario without for_part predates series sources: it has no series whose part to choose.
    return for_part(part) if for_part is not None else spec


def workload_notes(spec: Scenario) -> list[str]:
    """What the confidence intervals do not cover, given where the workload comes from.

    Seeds that all replay one recorded series (or one trace) measure variation within that
    recording only; a reader comparing planners must not take the interval for variation across
    workloads. Written with ``getattr`` so that any source type with a ``process`` name works."""
    sources = list(spec.sources.values())
    processes = [getattr(source, "process", None) for source in sources]
    series = [s for s, p in zip(sources, processes, strict=True) if p == "series"]
    drawn = sorted({_series_label(s) for s in series if getattr(s, "window", None) is None})
    pinned = sorted({_series_label(s) for s in series if getattr(s, "window", None) is not None})
    notes = []
    if len(drawn) == 1:
        notes.append(
            f"windows drawn from one series ({drawn[0]}): the interval covers window-to-window "
            "variation within that series only"
        )
    elif drawn:
        notes.append(
            f"windows drawn from {len(drawn)} recorded series ({', '.join(drawn)}): the interval covers "
            "window-to-window variation within those series only"
        )
    if pinned:
        notes.append(
            f"one pinned window of {', '.join(pinned)}: every seed sees the same rates, so the interval "
            "covers arrival and service randomness around that window only"
        )
    if all(p == "trace" for p in processes):
        notes.append(
            "every source replays a recorded trace (deterministic arrivals): seeds vary only service "
            "times and other in-system draws, not the workload"
        )
    return notes


def _series_label(source: Any) -> str:
    label = getattr(source, "label", None)
    return str(label) if label is not None else "a recorded series"


def planner_analyzers(spec: Scenario, planners: list[str], interval: float) -> dict[str, dict[str, Any]]:
    """Check every planner spec before any work starts (names, parameters, labels), and return
    each one's analyzer as data: fitted (or loaded from a learned planner's sidecar) here, once,
    so that no episode refits it."""
    if not planners:
        raise ValueError("no planner to evaluate; name at least one")
    analyzers = {}
    for p in planners:
        parse_planner(p)
        planner, forecaster = make_planner(p, spec, interval)
        analyzers[p] = analyzer_for(planner, spec, interval, forecaster).to_dict(state=False)
    labels = [split_label(p)[0] for p in planners]
    if len(set(labels)) != len(labels):
        raise ValueError(f"a planner is named twice: {labels}")
    return analyzers


def run_tasks(tasks: list[tuple], desc: str, processes: int | None, progress: bool) -> list[dict[str, Any]]:
    """Every (planner, seed) episode, in ``processes`` worker processes (one: in this one)."""
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(tasks), desc=desc, unit="episode", disable=not progress, file=sys.stderr)
    processes = processes if processes is not None else min(len(tasks), os.cpu_count() or 1)
    with bar:
        if processes <= 1:
            for task in tasks:
                rows.append(_one(task))
                bar.update()
        else:
            context = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
                for future in as_completed([pool.submit(_one, t) for t in tasks]):
                    rows.append(future.result())
                    bar.update()
    return rows


def write_evaluation(result: Evaluation, settings: dict[str, Any]) -> None:
    """The tables of ``result`` and the evaluation's settings into ``result.out_dir``."""
    out = result.out_dir
    assert out is not None
    atomic_write(out / "results.parquet", lambda tmp: result.table.to_parquet(tmp, index=False))
    atomic_write(out / "results.csv", lambda tmp: result.table.to_csv(tmp, index=False))
    atomic_write(out / "summary.csv", lambda tmp: result.summary.to_csv(tmp, index=False))
    atomic_write(out / "paired.csv", lambda tmp: result.paired.to_csv(tmp, index=False))
    atomic_write_text(out / "evaluation.json", json.dumps(settings, indent=2))


METRICS = ("cost", "sla_violation_rate", "p95_latency", "drops", "escapes", "reward")


def bootstrap_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean (fixed resampling seed: same data, same CI)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.all(values == values[0]):
        return float(values.mean()), float(values.mean())
    res = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=0.95,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per planner: mean, 95% bootstrap CI and IQM of the cost, the mean of each metric, and the
    mean number of decisions per episode a guard handed to its fallback (``takeovers_mean``; 0
    for a table from before the column existed)."""
    rows = []
    for planner, group in table.groupby("planner", sort=False):
        low, high = bootstrap_ci(group["cost"].to_numpy())
        row = {
            "planner": planner,
            "episodes": len(group),
            "cost_mean": group["cost"].mean(),
            "cost_ci_low": low,
            "cost_ci_high": high,
            "cost_iqm": float(stats.trim_mean(group["cost"], 0.25)),
        }
        row.update({f"{m}_mean": group[m].mean() for m in METRICS if m != "cost"})
        row["takeovers_mean"] = float(group["takeovers"].mean()) if "takeovers" in group else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a share ``successes / n``. Unlike an exact binomial interval it
    takes a fractional count (a tie counts half a win), and unlike the normal approximation it
    stays within [0, 1] and is not empty at 0 or n successes."""
    if n < 1:
        return math.nan, math.nan
    z = stats.norm.ppf(0.5 + confidence / 2)
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or n successes one end is exactly 0 or 1; say so rather than 1 - 1e-16.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


PAIRED_COLUMNS = [
    "planner",
    "baseline",
    "episodes",
    "cost_diff_mean",
    "cost_diff_ci_low",
    "cost_diff_ci_high",
    "wilcoxon_p",
    "share_won",
    "share_won_ci_low",
    "share_won_ci_high",
    "unpaired_prob_improvement",
]


def paired_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Each planner against the best baseline (lowest mean cost among the baselines present),
    on the seeds both ran (seeds only one of them ran are left out):

    - ``cost_diff_mean`` and its 95% t-interval: the mean of (cost - baseline's cost), seed by seed;
    - ``wilcoxon_p``: the Wilcoxon signed-rank p-value of those differences;
    - ``share_won`` and its 95% Wilson interval: the share of seeds on which the planner cost
      less than the baseline on the same seed, a tie counting half a win;
    - ``unpaired_prob_improvement``: P(cost < baseline's cost) over all pairs of episodes, seeds
      ignored (the Mann-Whitney statistic): a planner that wins on every seed may score well
      under 1 here when costs vary more from seed to seed than between planners."""
    from adaptflow.policies.registry import BASELINES

    means = table.groupby("planner")["cost"].mean()
    baselines = [p for p in means.index if p.partition(":")[0] in BASELINES]
    if not baselines:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    best = min(baselines, key=lambda p: means[p])
    reference = table[table.planner == best].set_index("seed")["cost"]
    rows = []
    for planner, group in table.groupby("planner", sort=False):
        if planner != best:
            rows.append({"planner": planner, "baseline": best, **_paired(group.set_index("seed")["cost"], reference)})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _paired(costs: pd.Series, reference: pd.Series) -> dict[str, Any]:
    """The paired statistics of ``costs`` against ``reference`` (both indexed by seed)."""
    common = costs.index.intersection(reference.index)
    own, ref = costs[common].to_numpy(dtype=float), reference[common].to_numpy(dtype=float)
    diff = own - ref
    n = len(diff)
    if n == 0:
        return {"episodes": 0, **{c: math.nan for c in PAIRED_COLUMNS[3:]}}
    half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    p_value = stats.wilcoxon(diff).pvalue if n > 1 and np.any(diff != 0) else math.nan
    wins = float(np.sum(diff < 0) + 0.5 * np.sum(diff == 0))
    low, high = wilson_interval(wins, n)
    u = stats.mannwhitneyu(own, ref, alternative="two-sided").statistic  # pairs with own > ref, ties half
    return {
        "episodes": n,
        "cost_diff_mean": diff.mean(),
        "cost_diff_ci_low": diff.mean() - half,
        "cost_diff_ci_high": diff.mean() + half,
        "wilcoxon_p": p_value,
        "share_won": wins / n,
        "share_won_ci_low": low,
        "share_won_ci_high": high,
        "unpaired_prob_improvement": 1.0 - u / (n * n),
    }

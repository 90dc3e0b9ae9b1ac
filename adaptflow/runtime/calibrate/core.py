"""``adaptflow calibrate DIR --out scenario.yaml``: a scenario fitted from a recording.

Writes, beside ``out``:

* ``out`` itself: the scenario, its sources replaying the recorded arrivals (``trace``), so
  that a simulation sees the very load that was recorded;
* ``<stem>.arrivals.<source>.csv``: those arrivals (``timestamp``, seconds from the start of
  recording, and each item's ``size`` when items differ: see :mod:`.sizes`; the stages' service
  times are then fitted to what the size leaves), referenced by the scenario by file name;
* ``<stem>.rate.yaml``: the same scenario with each source a Poisson process of the fitted rate
  (constant or piecewise per bin), for runs over many seeds (a trace replays the same load
  whatever the seed), its stages fitted to the raw service times (its items are new ones);
* ``<stem>.fit.json`` and ``<stem>.fit.md``: every statistic behind the fit and every assumption.

Both scenarios are validated by the scenario loader before they are written; every file is
written atomically.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from adaptflow._io import atomic_write_text
from adaptflow._json import to_jsonable
from adaptflow.scenario import ScenarioError, parse_scenario
from adaptflow.scenario.celery_pool import PREFORK, prefork_workers

from ..live.handoff import MIN_GAPS
from ..probe import BACKGROUND
from ..pulses import MIN_IDLE_PULSES, idle_rate
from . import system
from .contention import ContentionFit, fit_contention
from .distributions import fit_arrivals, fit_service, sig, with_moments
from .hosts import HostFit, busy_peak, fit_hosts, parse_cores
from .main_cpu import celery_cpu
from .recording import Recording, read_recording
from .report import ASSUMPTIONS, render_markdown
from .sizes import ItemSizes, fit_sizes
from .timeline import StageObs, Timeline, build_timeline, busy_spans
from .waits import wait_split

log = logging.getLogger(__name__)

RATE_BIN = 60.0
"""Default width (seconds) of the bins of a fitted piecewise arrival rate."""


@dataclass
class Calibration:
    """What :func:`calibrate` wrote, and the fit report it wrote them from."""

    scenario: Path
    rate_scenario: Path
    arrivals: dict[str, Path]
    report_json: Path
    report_md: Path
    report: dict[str, Any]


def calibrate(
    recording_dir: str | Path, out: str | Path, rate_bin: float = RATE_BIN, cores: str | None = None
) -> Calibration:
    """Fit a scenario to the recording in ``recording_dir`` and write it to ``out`` (see the
    module docstring for everything written beside it). ``rate_bin``: seconds per bin of a
    piecewise arrival rate. ``cores`` (``auto`` or ``NAME=N,...``): the machines the workers
    ran on and their cores, to place stages on hosts and fit their CPU share (see :mod:`.hosts`)."""
    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise ValueError(f"out {str(out)!r}: expected a .yaml file")
    if not (math.isfinite(rate_bin) and rate_bin > 0):
        raise ValueError(f"rate_bin: {rate_bin!r}; expected seconds > 0")
    given = parse_cores(cores, None) if cores not in (None, "auto") else None  # refused before any reading
    recording = read_recording(recording_dir)
    timeline = build_timeline(recording)
    if cores == "auto":
        given = parse_cores(cores, recording.meta.get("host"))
    host_fit = _fit_hosts(timeline, given)
    fitted = fit(recording, timeline, rate_bin, host_fit)
    fitted["report"]["wait_split"] = wait_split(recording)  # a diagnosis beside the fit, not part of it
    paths = _paths(out, fitted["trace"])
    fitted["scenario"]["name"] = fitted["rate_scenario"]["name"] = _name(out.stem)
    fitted["rate_scenario"]["name"] += "_rate"
    for source, relative in paths["relative"].items():
        fitted["scenario"]["sources"][source]["file"] = relative
    _write_checked(fitted, paths, out)
    report = fitted["report"]
    atomic_write_text(paths["json"], json.dumps(to_jsonable(report), indent=2) + "\n")
    atomic_write_text(paths["md"], render_markdown(report))
    for warning in report["warnings"]:
        log.warning("calibrate: %s", warning)
    return Calibration(out, paths["rate"], paths["csv"], paths["json"], paths["md"], report)


def _paths(out: Path, traces: dict[str, Any]) -> dict[str, Any]:
    stem, folder = out.stem, out.parent
    relative = {source: f"{stem}.arrivals.{source}.csv" for source in traces}
    return {
        "relative": relative,
        "csv": {source: folder / name for source, name in relative.items()},
        "rate": folder / f"{stem}.rate.yaml",
        "json": folder / f"{stem}.fit.json",
        "md": folder / f"{stem}.fit.md",
    }


def _name(stem: str) -> str:
    """A scenario name from a file stem: letters, digits, ``_`` and ``-``, not starting with a digit."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "calibrated"
    return name if re.match(r"[A-Za-z_]", name) else f"s_{name}"


def _write_checked(fitted: dict[str, Any], paths: dict[str, Any], out: Path) -> None:
    """Write the arrival CSVs, validate both scenarios against them, then write the scenarios."""
    for source, rows in fitted["trace"].items():
        if any(size != 1.0 for _, size in rows):
            text = "timestamp,size\n" + "".join(f"{t!r},{sig(size)!r}\n" for t, size in rows)
        else:
            text = "timestamp\n" + "".join(f"{t!r}\n" for t, _ in rows)
        atomic_write_text(paths["csv"][source], text)
    header = f"# Calibrated by adaptflow from {fitted['report']['recording']['path']}; see {paths['md'].name}\n"
    try:
        for data, path in ((fitted["scenario"], out), (fitted["rate_scenario"], paths["rate"])):
            parse_scenario(data, label=str(path), base_dir=out.parent.resolve())
    except ScenarioError as exc:
        for csv in paths["csv"].values():
            csv.unlink(missing_ok=True)
        raise ScenarioError(f"the calibrated scenario does not validate (a bug in calibrate): {exc}") from None
    for data, path in ((fitted["scenario"], out), (fitted["rate_scenario"], paths["rate"])):
        text = yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, default_flow_style=None, width=120)
        atomic_write_text(path, header + text)


class _PlainDumper(yaml.SafeDumper):
    """Writes a block shared by both scenarios (the stages, a route) in full each time: a YAML
    alias (``*id001``) is valid but unreadable to a person editing the scenario."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _fit_hosts(timeline: Timeline, cores: dict[str, float] | None) -> HostFit | None:
    """The host fit, with the timeline's service times divided by each visit's stretch (the
    scenario holds full-speed times); None without ``cores``."""
    if cores is None:
        return None
    host_fit = fit_hosts(timeline, cores)
    for stage, stretch in host_fit.stretch.items():
        obs = timeline.stages[stage]
        obs.services = (np.asarray(obs.services, dtype=float) / stretch).tolist()
    return host_fit


def fit(
    recording: Recording, timeline: Timeline, rate_bin: float = RATE_BIN, host_fit: HostFit | None = None
) -> dict[str, Any]:
    """The fitted scenarios (as dicts), the recorded arrivals per source, and the report."""
    gaps = system.relative_gaps(recording)
    report = _recording_report(recording, timeline)
    sizes = fit_sizes(timeline)
    contention = _fit_contention(recording, timeline, host_fit, sizes, report)
    stages = _fit_stages(recording, timeline, report, contention, sizes)
    _place_on_hosts(stages, host_fit, recording, timeline, report)
    report["celery_cpu"] = celery_cpu(recording, timeline, {name: stage.get("host") for name, stage in stages.items()})
    routes = _fit_routes(timeline, gaps, set(stages), report)
    for name, stage in stages.items():
        stage["next"] = routes.get(name)
        if name not in routes:
            report["assumptions"].append(f"stages.{name}.next: no item was seen leaving {name!r}; taken as the exit")
    report["sizes"] = sizes.report
    trace, rates = _fit_sources(recording, timeline, gaps, rate_bin, report, sizes)
    sla, why = system.fit_sla(recording, timeline)
    report["sla"] = {"latency": sla, "source": why}
    if recording.mapping.sla is None:
        report["assumptions"].append(f"SLA {sla:.4g} s: {why}")
    base = {
        "description": _description(recording),
        "horizon": sig(recording.duration, 12),
        "seed": 0,
        "sla": {"latency": sla},
    }
    given = _given_sizes(stages, sizes, recording, timeline, report, contention)
    scenario = {"name": "", **base, "sources": {}, "stages": given}
    rate_scenario = {"name": "", **base, "sources": {}, "stages": stages}
    if host_fit is not None and host_fit.hosts:
        scenario["hosts"] = rate_scenario["hosts"] = _with_machine_readings(host_fit.hosts, recording, timeline, report)
    for source in trace:
        scenario["sources"][source] = {"process": "trace", "file": "", "to": routes[source]}
        rate_scenario["sources"][source] = {"process": "poisson", "rate": rates[source], "to": routes[source]}
    return {"scenario": scenario, "rate_scenario": rate_scenario, "trace": trace, "report": report}


def _fit_contention(
    recording: Recording, timeline: Timeline, host_fit: HostFit | None, sizes: ItemSizes, report: dict[str, Any]
) -> ContentionFit:
    """Each host's contention (:mod:`.contention`), from the stages placed on it; none without hosts."""
    if host_fit is None or not host_fit.stages:
        return ContentionFit()
    contention = fit_contention(recording, timeline, host_fit.stages, sizes)
    report["contention"] = contention.report
    report["warnings"] += contention.warnings
    return contention


def _with_machine_readings(
    hosts: dict[str, Any], recording: Recording, timeline: Timeline, report: dict[str, Any]
) -> dict[str, Any]:
    """The recording machine's host with the mean of the recorder's CPU probes as its ``probe``
    (``Host.probe``), the mean of its idle pulses as its ``pulse`` (``Host.pulse``) and the
    recording's steal as its ``steal`` (``Host.steal``): what a later probe, a later run's
    pulses or its steal compare with to tell the machine's speed then."""
    meta = recording.meta
    local, probes, steal = meta.get("host"), meta.get("probes"), meta.get("steal")
    name = local.get("name") if isinstance(local, dict) else None
    if name not in hosts:
        return hosts
    if isinstance(steal, int | float) and 0 <= steal < 1:
        hosts = {**hosts, name: {**hosts[name], "steal": sig(float(steal), 4)}}
    hosts = {**hosts, name: {**hosts[name], **_pulse(recording, timeline, name, report)}}
    nice = meta.get("nice")
    if isinstance(nice, int | float) and nice > BACKGROUND and "pulse" in hosts[name]:
        report["warnings"].append(
            f"nice'd processes took {nice:.0%} of the machine's CPU while recording: hosts.{name}.pulse (the idle "
            "pulses' mean) reads the machine faster than its tasks met it (docs/sim_to_real.md); record again on "
            "a quiet machine"
        )
    ok = isinstance(probes, list) and probes and all(isinstance(p, int | float) and p > 0 for p in probes)
    if not ok:
        return hosts
    probe = sig(math.fsum(probes) / len(probes), 4)
    if max(probes) > 1.25 * min(probes):
        report["warnings"].append(
            f"the CPU probe read {[sig(p, 4) for p in probes]} at the recording's start and stop: the machine's "
            f"speed moved by more than a quarter while it was recorded; hosts.{name}.probe is their mean, {probe}"
        )
    return {**hosts, name: {**hosts[name], "probe": probe}}


def _pulse(recording: Recording, timeline: Timeline, host: str, report: dict[str, Any]) -> dict[str, float]:
    """``{"pulse": the idle pulses' mean}`` of the recording (:mod:`adaptflow.runtime.pulses`),
    empty when it kept none or too few fell where no task ran (a warning says which)."""
    if not len(recording.pulses):
        return {}
    rate, idle = idle_rate(recording.pulses, busy_spans(timeline, recording.origin))
    report["pulses"] = {"pulses": len(recording.pulses), "idle": idle, "mean": None if rate is None else sig(rate, 4)}
    if rate is None:
        report["warnings"].append(
            f"{idle} of the recording's {len(recording.pulses)} pulses fell where no task ran, fewer than "
            f"{MIN_IDLE_PULSES}: hosts.{host} has no pulse, and --pulse-speed cannot run on this scenario"
        )
        return {}
    return {"pulse": sig(rate, 4)}


def _place_on_hosts(
    stages: dict[str, Any], host_fit: HostFit | None, recording: Recording, timeline: Timeline, report: dict[str, Any]
) -> None:
    """Each stage's ``host`` and ``cpu`` from the host fit; without one, a warning when the
    recording machine ran more busy processes than it has cores (services slowed, unmodelled)."""
    if host_fit is None:
        local = recording.meta.get("host")
        if isinstance(local, dict) and isinstance(local.get("cores"), int | float) and local.get("name"):
            peak = busy_peak(timeline, str(local["name"]))
            if peak > local["cores"]:
                report["warnings"].append(
                    f"up to {peak} processes were busy at once on {local['name']} ({local['cores']} cores): service "
                    "times include that contention; --cores auto models it (a host in the scenario)"
                )
        return
    report["hosts"] = host_fit.report
    report["warnings"] += host_fit.warnings
    for name, placed in host_fit.stages.items():
        if name in stages:
            stages[name].update(placed)
    _held_pools(stages, host_fit, report)


def _held_pools(stages: dict[str, Any], host_fit: HostFit, report: dict[str, Any]) -> None:
    """Say so when the hosts were fitted at one set of pools: measured on the example app, a
    shared host slowed tasks 1.5-2.2 times and hand-offs 3-5 times more at 2-3 times the
    processes than sharing its cores explains (docs/sim_to_real.md), which no recording at fixed pools
    can show."""
    hosted = [name for name in stages if "host" in stages[name]]
    seen = [report["stages"][name]["workers"] for name in hosted]
    if host_fit.hosts and hosted and all(w["seen_min"] == w["seen_max"] for w in seen):
        sizes = ", ".join(sorted(f"{name} {w['seen_max']}" for name, w in zip(hosted, seen, strict=True)))
        report["assumptions"].append(
            f"hosts: fitted with every hosted pool held at one size ({sizes}): "
            "a planner that moves pools runs where this was not measured, and on a shared host tasks and hand-offs "
            "slow with the processes more than sharing the cores explains (docs/sim_to_real.md); "
            "adaptflow fit-growth fits the hand-offs' growth from compare-app runs at other held pool sizes"
        )


def _given_sizes(
    stages: dict[str, Any],
    sizes: ItemSizes,
    recording: Recording,
    timeline: Timeline,
    report: dict[str, Any],
    contention: ContentionFit,
) -> dict[str, Any]:
    """The trace scenario's stages: with item sizes, each stage's service and dispatch delay
    fitted to the times divided by their item's size, as the simulator multiplies both by it
    (the rate scenario's items are new: it keeps the raw times' fits)."""
    if not sizes.sizes:
        return stages
    given = copy.deepcopy(stages)
    for name, stage in given.items():
        service, service_report, warnings = fit_service(sizes.residuals[name], name)
        mean, cv = sizes.moments[name]
        stage["service"] = with_moments(service, mean, cv)
        service_report.update(moment_mean=mean, moment_cv=cv)
        report["stages"][name]["service_given_size"] = service_report
        report["warnings"] += [f"{w} (times divided by item size)" for w in warnings]
        spread = report["stages"][name]["turnaround"].get("cv_given_size")
        if spread:  # the simulator multiplies a turnaround by its item's size, then spreads it
            stage["turnaround_cv"] = sig(spread)
        if stage.get("dispatch_delay"):
            turnaround = report["stages"][name]["turnaround"].get("recorded_mean", float(stage.get("turnaround", 0.0)))
            block, dispatch_report, more = system.dispatch_given_sizes(
                recording, timeline.stages[name], name, turnaround, sizes, contention.factor(name, "dispatch")
            )
            stage["dispatch_delay"] = block if isinstance(block, dict) else sig(block)
            report["stages"][name]["dispatch_given_size"] = dispatch_report
            report["warnings"] += [f"{w} (idle waits divided by item size)" for w in more]
    return given


def _description(recording: Recording) -> str:
    meta = recording.meta
    return (
        f"Calibrated from a recording of {meta.get('app', '?')} ({meta.get('broker', '?')}), "
        f"{recording.duration:.0f} s, adaptflow {meta.get('adaptflow', '?')}"
    )


def _recording_report(recording: Recording, timeline: Timeline) -> dict[str, Any]:
    origin = recording.origin
    report: dict[str, Any] = {
        "recording": {
            "path": str(recording.path),
            **{k: recording.meta.get(k) for k in ("app", "broker", "started", "stopped", "adaptflow")},
            "duration": recording.duration,
            "events": len(recording.events),
            "unmapped_tasks": timeline.unmapped,
            "forgotten_by_translator": timeline.forgotten,
            "gaps": [{"start": s - origin, "end": e - origin, "reason": r} for s, e, r in recording.gaps],
            "inferred_exits": timeline.inferred_exits,
            "exit_settle": timeline.settle,
        },
        "sources": {},
        "stages": {},
        "routes": {},
        "assumptions": list(ASSUMPTIONS),
        "warnings": list(recording.notes),
    }
    if recording.gaps:
        lost = sum(e - s for s, e, _ in recording.gaps)
        report["warnings"].append(
            f"{len(recording.gaps)} gaps in the recording ({lost:.1f} s): their events are missing; arrival rates "
            "leave that time out, the trace does not replay arrivals in it, and items in the system during a gap "
            "are left out of the routes"
        )
    if timeline.unmapped:
        report["warnings"].append(f"{timeline.unmapped} tasks matched no stage of the mapping and are not modelled")
    if timeline.inferred_exits:
        report["assumptions"].append(
            f"{timeline.inferred_exits} items left without a task of mapping.end: their last task succeeded and "
            f"sent no follow-up within {timeline.settle:.3g} s, so they are counted as exits after it"
        )
    return report


def _fit_stages(
    recording: Recording, timeline: Timeline, report: dict[str, Any], contention: ContentionFit, sizes: ItemSizes
) -> dict[str, Any]:
    """Each stage that finished a task while recording (the others are left out, with a warning)."""
    stages: dict[str, Any] = {}
    for name, obs in timeline.stages.items():
        if not obs.attempts:
            report["warnings"].append(f"stage {name!r} of the mapping finished no task while recording: left out")
            continue
        stages[name] = _fit_stage(recording, name, obs, report, contention, sizes)
    if not stages:
        raise ValueError(f"{recording.path}: no task of any mapped stage finished while recording; nothing to fit")
    _borrow_turnarounds(stages, report, contention)
    return stages


def _borrow_turnarounds(stages: dict[str, Any], report: dict[str, Any], contention: ContentionFit) -> None:
    """A stage backlogged too rarely to measure its turnaround (fewer than ``MIN_GAPS`` gaps)
    takes its own idle hand-off's mean plus the median of turnaround less idle hand-off over
    the stages that had both (with its dispatch contention as its turnaround's). The turnaround
    is the hand-off's Celery work (fetch a message of this stage, decode it, give it to a
    process) after the ack of the task before: the stage's own hand-off carries its messages'
    size, the other stages tell what the ack adds (on the example app -12 to +6 ms: parse's
    13 ms against its 7 ms hand-off, write's 77 against 88), or that the app has no such gap
    (acks early, prefetches more: a difference near minus the hand-off, and a borrowed
    turnaround near 0). Never below 0; no stage with both: 0, as before.

    Why not 0: a stage seldom backlogged while recording need not stay so. On the example app
    validate saw 18 gaps (parse, saturated before it, spaced its items) and was written with
    none; live runs whose planners grew parse to two processes then met 0.08-0.14 s between
    validate's tasks, and its simulated capacity was nearly twice the live one."""
    # each stage's turnaround report (its own gaps), its idle hand-off's mean, and whether it measured its own
    seen = {n: (report["stages"][n]["turnaround"], report["stages"][n]["dispatch"].get("idle_mean")) for n in stages}
    own = {n: gaps.get("backlogged_gaps", 0) >= MIN_GAPS for n, (gaps, _) in seen.items()}
    differences = [gaps["turnaround"] - idle for n, (gaps, idle) in seen.items() if own[n] and idle]
    if not differences:
        return
    added = float(np.median(differences))
    for name, stage in stages.items():
        gaps, idle = seen[name]
        if own[name] or not idle or idle + added <= 0:
            continue
        stage["turnaround"] = sig(idle + added)
        dispatch_c = contention.stages.get(name, {}).get("dispatch")
        if dispatch_c:
            stage["contention"] = {**stage.get("contention", {}), "turnaround": sig(dispatch_c)}
        gaps.update(borrowed=stage["turnaround"], borrowed_added=added, recorded_mean=0.0)
        report["warnings"].append(
            f"stages.{name}.turnaround: {gaps.get('backlogged_gaps', 0)} backlogged gaps (< {MIN_GAPS}), too few "
            f"to measure; taken as its idle hand-off's mean {idle:.3g} s plus {added:+.3g} s, the median of "
            f"turnaround less idle hand-off over {len(differences)} stages that had both: {stage['turnaround']:.3g} s"
        )


MIN_SHRINKS = 30
"""Shrinks to one process a recording needs for its own ``late_reap`` (the share that held a
task; at 30 a share of 0.18 is known to about +-0.14); fewer keep Celery's measured share."""


def _pool_start(
    recording: Recording, name: str, obs: StageObs, delay: float | None, startup_report: dict[str, Any],
    report: dict[str, Any],
) -> dict[str, float]:  # fmt: skip
    """A stage's start-up fields. On a prefork worker (its pool's kind as recorded): the pool's
    ticks, fork time and late reaps (:func:`~adaptflow.scenario.celery_pool.prefork_workers`),
    since a grow measured here waits for a tick (0-5 s) that a constant delay would misplace, and
    a shrink may hold a task until one (``late_reap``: the share of the recording's shrinks to
    one process that held one, :func:`~.system.fit_held_shrinks`, given :data:`MIN_SHRINKS`;
    else Celery's). Else the delay measured at the stage's grows, or the schema's 0 s."""
    if recording.kinds.get(name) == PREFORK:
        fields = prefork_workers()
        measured = "" if delay is None else f"; the grows recorded here took {delay:.3g} s, a tick's wait included"
        held = startup_report["shrinks"] = system.fit_held_shrinks(recording, obs, name)
        if held["shrinks"] >= MIN_SHRINKS:
            fields["late_reap"] = sig(held["held"] / held["shrinks"])
            share = f"{held['held']} of the {held['shrinks']} shrinks to one process recorded here"
        else:
            share = (
                f"{fields['late_reap']:.0%} of the time (Celery 5.7, measured; docs/sim_to_real.md: {held['shrinks']} "
                f"shrinks to one process recorded here, fewer than {MIN_SHRINKS} to measure it)"
            )
        startup_report["note"] = (
            f"a prefork pool: grown processes start at its maintenance ticks (every {fields['startup_tick']:g} s) and "
            f"fork in {fields['startup_delay']:g} s each; a shrink's retired process holds a task until a tick: "
            f"{share}{measured}"
        )
        report["assumptions"].append(f"stages.{name}.workers: {startup_report['note']}")
        return fields
    if delay is None:
        startup_report["note"] = "no pool grow with a new process recorded: the schema's default (0 s)"
        report["assumptions"].append(f"stages.{name}.workers.startup_delay: {startup_report['note']}")
        return {"startup_delay": 0.0}
    return {"startup_delay": sig(delay)}


def _fit_stage(
    recording: Recording,
    name: str,
    obs: StageObs,
    report: dict[str, Any],
    contention: ContentionFit,
    sizes: ItemSizes,
) -> dict[str, Any]:
    """One stage's block. Where ``contention`` has a stretch of its dispatch delay or
    turnaround by its host's load (:mod:`.contention`), that one is fitted to the recorded
    times divided by it, and the stage's ``contention`` says how the simulator stretches it.
    The turnaround's spread (``turnaround_cv``) is that of the same gaps; with item ``sizes``,
    the report also keeps it with each gap divided by its item's size, for the trace scenario
    (:func:`_given_sizes`)."""
    service, service_report, warnings = fit_service(obs.services, name)
    workers, workers_report, more = system.fit_workers(recording, obs, name)
    delay, startup_report = system.fit_startup(recording, obs, name)
    failure, failure_report, failure_warnings = system.fit_failure(obs)
    first, _, _ = system.fit_dispatch(recording, obs, name)
    recorded, turnaround_report = system.fit_turnaround(obs, first)  # what decides a process busy
    turnaround = recorded
    stretched = contention.factor(name, "turnaround")
    if stretched is not None and recorded > 0:  # on a machine with nothing else running or waiting
        turnaround, turnaround_report = system.fit_turnaround(obs, first, stretched)
        turnaround_report["recorded_mean"] = recorded
    if sizes.sizes and turnaround > 0:
        turnaround_report["cv_given_size"] = system.turnaround_cv_given_sizes(obs, first, stretched, sizes.of_task)
    idle = system.idle_waits(recording, obs, name, recorded, contention.factor(name, "dispatch"))
    dispatch, dispatch_report, dispatch_warnings = system.fit_dispatch(recording, obs, name, turnaround, idle)
    block, dispatch_report["distribution"], more_dispatch = system.dispatch_block(idle, name, dispatch)
    dispatch_warnings += more_dispatch
    workers.update(_pool_start(recording, name, obs, delay, startup_report, report))
    report["warnings"] += warnings + more + [f"stages.{name}.failure: {w}" for w in failure_warnings]
    report["warnings"] += dispatch_warnings
    report["stages"][name] = {
        "service": service_report,
        "workers": workers_report,
        "startup": startup_report,
        "failure": failure_report,
        "dispatch": dispatch_report,
        "turnaround": turnaround_report,
        "mean_wait": sum(obs.waits) / len(obs.waits) if obs.waits else None,
        "completed": obs.completed,
        "drops": obs.drops,
    }
    stage: dict[str, Any] = {
        "workers": workers,
        "service": service,
        "dispatch_delay": block if isinstance(block, dict) else sig(block),
    }
    if turnaround > 0:
        stage["turnaround"] = sig(turnaround)
        if turnaround_report.get("cv"):
            stage["turnaround_cv"] = sig(turnaround_report["cv"])
    fitted = {kind: sig(c) for kind, c in contention.stages.get(name, {}).items() if kind == "dispatch" or turnaround}
    if any(fitted.values()):
        stage["contention"] = fitted
    if failure is not None:
        stage["failure"] = failure
    return stage


def _fit_routes(
    timeline: Timeline, gaps: list[tuple[float, float]], known: set[str], report: dict[str, Any]
) -> dict[str, Any]:
    """Each owner's route, over the stages that are modelled (transitions to others dropped)."""
    counts, skipped = system.transitions(timeline, gaps)
    if skipped:
        report["warnings"].append(f"{skipped} items overlapping a recording gap are left out of the routes")
    routes = {}
    for owner, seen in counts.items():
        if owner in timeline.stages and owner not in known:
            continue
        lost = sum(c for t, c in seen.items() if t is not None and t not in known)
        if lost:
            report["warnings"].append(f"{owner}: {lost} transitions to stages left out of the scenario are dropped")
        seen = Counter({t: c for t, c in seen.items() if t is None or t in known})
        if seen:
            routes[owner], report["routes"][owner] = system.route_of(seen)
    return routes


def _fit_sources(
    recording: Recording,
    timeline: Timeline,
    gaps: list[tuple[float, float]],
    rate_bin: float,
    report: dict[str, Any],
    sizes: ItemSizes,
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, Any]]:
    """Each source's recorded arrivals (the trace: time and item size) and fitted rate; sources
    never seen left out."""
    trace: dict[str, list[tuple[float, float]]] = {}
    rates: dict[str, Any] = {}
    for source in recording.mapping.sources:
        arrived = timeline.arrived(source)
        times = np.asarray([t for t, _ in arrived], dtype=float)
        if source not in report["routes"]:
            report["warnings"].append(f"source {source!r}: no arrival of it reached a modelled stage; left out")
            continue
        early = int(times.size and (times < 0).sum())
        if early:
            report["warnings"].append(f"source {source!r}: {early} arrivals stamped before recording started, set to 0")
            times = np.maximum(times, 0.0)
        trace[source] = [(float(t), sizes.of(item)) for t, (_, item) in zip(times, arrived, strict=True)]
        rates[source], report["sources"][source] = fit_arrivals(times, timeline.horizon, gaps, rate_bin)
    if not trace:
        raise ValueError(f"{recording.path}: no arrival of any source reached a mapped stage; nothing to fit")
    return trace, rates

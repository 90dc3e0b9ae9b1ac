"""The fit report's fixed assumptions and its Markdown rendering (the JSON beside it holds the same
figures in full)."""

from __future__ import annotations

import math
from typing import Any

from .main_cpu import report_lines as main_cpu_lines

ASSUMPTIONS = (
    "t = 0 of the scenario is when recording started; horizon is the recording's length",
    "the system is taken to start empty: items already in it when recording started count in stage "
    "figures but not in arrivals, routes from sources, or latencies",
    "a Celery task is one stage visit and its root_id the item (adaptflow.runtime.live.translate)",
    "service time of an attempt: task-started to task-succeeded/failed/retried; a failed attempt takes a full "
    "service time, as the scenario models it",
    "wait of an attempt: task-sent (or task-received) to task-started; for a retry with a countdown the countdown "
    "counts as waiting",
    "routes are split by observed shares whatever the item's source or attributes (no attribute routes are fitted); "
    "an item that fans out to several tasks at once is read as visiting them one after another",
    "queues are unbounded; quality and validation are not observable from task events and are not modelled",
    "workers: initial = the first recorded pool size, min = 1 (0 if a pool was seen empty), max = twice the "
    "largest pool seen; cost_per_second = 1",
    "service-time families are tested with Kolmogorov-Smirnov using parameters fitted to the same data "
    "(optimistic p-values); the lowest BIC among the families not rejected is chosen",
    "dispatch delay of a stage: the median wait of the visits that entered while it had an idle process (attempts "
    "running or in their turnaround fewer than the recorded pool), a constant per visit and per retry; their mean "
    "is reported beside it",
    "turnaround of a stage: the mean gap between an attempt's finish and the start that took its slot on the same "
    "worker node (Celery's events name the node, not the pool process) when that task was already waiting; a "
    "draw after every attempt around that mean, lognormal with the gaps' cv (turnaround_cv), during which the "
    "process serves nothing; a stage with fewer than 20 such gaps borrows its idle visits' mean wait plus the "
    "median of turnaround less that mean over the stages that had both (0 when none had), held constant",
)


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def _service_rows(stages: dict[str, Any], key: str = "service") -> list[str]:
    rows = [
        "| stage | n | mean s (95% CI) | cv | chosen | exp KS D / p | lognormal KS D / p | gamma KS D / p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, stage in stages.items():
        if key not in stage:
            continue
        s = stage[key]
        ci = s["mean_ci95"]
        fits = s.get("fits", {})
        tests = [
            f"{_num(fits[f]['ks_statistic'])} / {_num(fits[f]['ks_pvalue'])}" if f in fits else "-"
            for f in ("exponential", "lognormal", "gamma")
        ]
        rows.append(
            f"| {name} | {s['n']:,} | {_num(s['mean'])} ({_num(ci[0])}, {_num(ci[1])}) | {_num(s['cv'])} "
            f"| {s['chosen']} | " + " | ".join(tests) + " |"
        )
    return rows


def _stage_rows(stages: dict[str, Any]) -> list[str]:
    rows = [
        "| stage | pool initial (seen min-max) | start-up delay s | failure p (95% CI) | max retries "
        "| dispatch delay: median s (95% CI; idle visits) | idle visits' mean wait s | turnaround s (95% CI; gaps; cv) "
        "| mean wait s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, stage in stages.items():
        w, f, up = stage["workers"], stage["failure"], stage["startup"]
        fail = f"{_num(f['prob'])} ({_num(f['prob_ci95'][0])}, {_num(f['prob_ci95'][1])})" if "prob" in f else "0"
        delay = f"{_num(up['delay'])} ± {_num(up['uncertainty'])}" if "delay" in up else "default 0"
        rows.append(
            f"| {name} | {w['initial']} ({w['seen_min']}-{w['seen_max']}) | {delay} | {fail} "
            f"| {f.get('max_retries', '-')} | {_dispatch(stage.get('dispatch', {}))} "
            f"| {_num(stage.get('dispatch', {}).get('idle_mean'))} | {_turnaround(stage.get('turnaround', {}))} "
            f"| {_num(stage['mean_wait'])} |"
        )
    return rows


def _dispatch(d: dict[str, Any]) -> str:
    if "delay" not in d:
        return f"0 ({d.get('idle_visits', 0)} idle visits)"
    lo, hi = d["delay_ci95"]
    chosen = d.get("distribution", {}).get("chosen")
    drawn = f"; drawn from: {chosen}" if chosen and not chosen.startswith("constant") else ""
    return f"{_num(d['delay'])} ({_num(lo)}, {_num(hi)}; {d['idle_visits']:,}{drawn})"


def _turnaround(t: dict[str, Any]) -> str:
    if "borrowed" in t:  # too few gaps of its own (core._borrow_turnarounds)
        gaps, added = t.get("backlogged_gaps", 0), t["borrowed_added"]
        return f"{_num(t['borrowed'])} borrowed ({gaps} gaps; its idle hand-off {added:+.3g})"
    if "turnaround" not in t:
        return f"0 ({t.get('backlogged_gaps', 0)} gaps)"
    lo, hi = t["turnaround_ci95"]
    spread = f"; cv {_num(t['cv'])}" if t.get("cv") else ""
    return f"{_num(t['turnaround'])} ({_num(lo)}, {_num(hi)}; {t['backlogged_gaps']:,}{spread})"


def _route_rows(routes: dict[str, Any]) -> list[str]:
    rows = ["| from | to | count | p (95% CI) |", "|---|---|---|---|"]
    for owner, route in routes.items():
        n = route["transitions"]
        for target, count in route["counts"].items():
            lo, hi = route["p_ci95"][target]
            rows.append(f"| {owner} | {target} | {count:,} | {_num(count / n)} ({_num(lo)}, {_num(hi)}) |")
    return rows


def _source_rows(sources: dict[str, Any]) -> list[str]:
    rows = ["| source | arrivals | mean rate /s | dispersion chi2 (df), p | rate written as |", "|---|---|---|---|---|"]
    for name, s in sources.items():
        rows.append(
            f"| {name} | {s['arrivals']:,} | {_num(s['mean_rate'])} | {_num(s['dispersion_chi2'])} "
            f"({s['dispersion_df']}), {_num(s['dispersion_pvalue'])} | {s['chosen']} (bins of {_num(s['bin'])} s) |"
        )
    return rows


def _size_lines(sizes: dict[str, Any]) -> list[str]:
    if not sizes.get("fitted"):
        return [f"No item sizes: {sizes.get('note', 'not fitted')}."]
    q, lo_hi = sizes["size_quantiles"], sizes["tau2_ci95"]
    own = ", ".join(f"{stage} {_num(v)}" for stage, v in sizes["sigma2"].items())
    return [
        f"{sizes['note'].capitalize()}.",
        "",
        f"Items {sizes['items']:,} ({sizes['items_repeated']:,} with two or more attempts). Variance of log service "
        f"time shared by an item's attempts {_num(sizes['tau2'])} (95% CI {_num(lo_hi[0])} to {_num(lo_hi[1])}; "
        f"z = {_num(sizes['z'])}, p = {_num(sizes['pvalue'])}); each stage's own: {own}. Sizes written to the "
        f"trace, quantiles 5/25/50/75/95 %: {', '.join(_num(q[k]) for k in q)}.",
        "",
        "Service times divided by their item's size (the trace scenario's stages; the rate scenario keeps the "
        "table above):",
        "",
    ]


def _dispatch_size_rows(stages: dict[str, Any]) -> list[str]:
    """How each stage's hand-off followed its items' sizes, and what the trace scenario draws."""
    rows = [
        "",
        "Dispatch delays divided by their item's size (the trace scenario multiplies them back): how the idle "
        "visits' waits followed the sizes (log-log slope: 1 is in proportion, 0 not at all).",
        "",
        "| stage | median given size s | slope (95% CI) | correlation | drawn from |",
        "|---|---|---|---|---|",
    ]
    for name, stage in stages.items():
        d = stage.get("dispatch_given_size")
        if not d:
            continue
        lo, hi = d.get("size_slope_ci95", [float("nan"), float("nan")])
        rows.append(
            f"| {name} | {_num(d.get('delay'))} | {_num(d.get('size_slope'))} ({_num(lo)}, {_num(hi)}) "
            f"| {_num(d.get('size_correlation'))} | {d.get('chosen', '-')} |"
        )
    return rows


def _host_lines(hosts: dict[str, Any]) -> list[str]:
    if not hosts:
        return []
    rows = [
        "## Hosts",
        "Stages whose processes share a machine's cores (`--cores`). CPU share: the `c` whose full-speed times "
        "`wall / (1 - c + c / mean speed)` no longer correlate with the CPU speed at a visit's start; service "
        "times above are those full-speed times. A share below 1 may be low: the speed at a visit's start is a "
        "noisy reading of what it met, which pulls the share toward 0, and on a machine that also runs the broker "
        'a task\'s Redis calls are CPU too (docs/sim_to_real.md, "A new VM": held runs at 10 and 15 processes slowed '
        "such stages as all-CPU work).",
        "",
        "| host | cores (effective) | stage | visits | started slowed | corr(wall, speed at start), p | CPU share "
        "| mean speed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, host in hosts.items():
        for stage, r in host["stages"].items():
            corr = f"{_num(r['raw_correlation'])}, {_num(r['raw_p'])}" if "raw_correlation" in r else "-"
            cores = f"{_num(host['cores'])} ({_num(host.get('effective_cores', host['cores']))})"
            share = _num(r["cpu"]) if "note" not in r else "not read"
            rows.append(
                f"| {name} | {cores} | {stage} | {r['visits']:,} | {r['started_slowed']:,} | {corr} | {share} "
                f"| {_num(r['mean_speed'])} |"
            )
    return [*rows, ""]


def _contention_lines(contention: dict[str, Any]) -> list[str]:
    if not contention:
        return []
    rows = [
        "Contention: how much each stage's hand-offs (divided by their item's size) and turnaround gaps grew per "
        "pool process busy on its host when they ran; the scenario's dispatch delays and turnarounds are the "
        "recorded ones divided by `1 + contention * busy` of their moment.",
        "",
        "| stage | work | contention (95% CI) | times | share at 0, 1, 2, 3+ busy |",
        "|---|---|---|---|---|",
    ]
    for stage, kinds in contention.items():
        for kind, r in kinds.items():
            if "note" in r:
                rows.append(f"| {stage} | {kind} | {r['note']} | {r['samples']:,} | - |")
                continue
            lo, hi = r["contention_ci95"]
            shares = ", ".join(_num(v) for _, v in sorted(r["busy_shares"].items(), key=lambda kv: int(kv[0])))
            rows.append(f"| {stage} | {kind} | {_num(r['contention'])} ({_num(lo)}, {_num(hi)}) | {r['samples']:,} "
                        f"| {shares} |")  # fmt: skip
    return [*rows, ""]


def _wait_split_rows(split: dict[str, Any]) -> list[str]:
    """Each stage's waits in two parts (:mod:`.waits`); a line saying why there is no table."""
    if not split:
        return ["No attempt was sent, received and started: the recording has no task-received events to split "
                "its waits by (a worker that does not send them)."]  # fmt: skip
    rows = [
        "| stage | attempts | sent to received s: mean (p95) | received to started s: mean (p95) |",
        "|---|---|---|---|",
    ]
    for name, s in split.items():
        rows.append(
            f"| {name} | {s['attempts']:,} | {_num(s['broker_mean'])} ({_num(s['broker_p95'])}) "
            f"| {_num(s['worker_mean'])} ({_num(s['worker_p95'])}) |"
        )
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """The fit report as Markdown: the recording, then one table per part of the fit."""
    rec = report["recording"]
    lines = [
        f"# Calibration of {rec.get('app') or 'a Celery app'}",
        "",
        f"Recording `{rec['path']}`: {rec['duration']:,.0f} s, {rec['events']:,} events, "
        f"{len(rec['gaps'])} gaps, {rec['unmapped_tasks']:,} unmapped tasks.",
        "",
        f"SLA: {_num(report['sla']['latency'])} s ({report['sla']['source']}).",
        "",
        "## Arrivals",
        *_source_rows(report["sources"]),
        "",
        "## Service times",
        *_service_rows(report["stages"]),
        "",
        *_host_lines(report.get("hosts", {})),
        *main_cpu_lines(report.get("celery_cpu", {})),
        *_contention_lines(report.get("contention", {})),
        "## Item sizes",
        *_size_lines(report.get("sizes", {})),
        *(_service_rows(report["stages"], "service_given_size") if report.get("sizes", {}).get("fitted") else []),
        *(_dispatch_size_rows(report["stages"]) if report.get("sizes", {}).get("fitted") else []),
        "",
        "## Pools, failures, waits",
        *_stage_rows(report["stages"]),
        "",
        "## Where the waits went: in the broker (sent to received), in the worker (received to started)",
        *_wait_split_rows(report.get("wait_split", {})),
        "",
        "## Routes",
        *_route_rows(report["routes"]),
        "",
        "## Warnings",
        *([f"- {w}" for w in report["warnings"]] or ["- none"]),
        "",
        "## Assumptions",
        *[f"- {a}" for a in report["assumptions"]],
        "",
    ]
    return "\n".join(lines)

"""The ``adaptflow`` command. Argument parsing only: every subcommand calls a Python function
of :mod:`adaptflow.experiments` (or, later, :mod:`adaptflow.runtime`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

from adaptflow._json import to_jsonable
from adaptflow.scenario import ScenarioError, load_scenario, shipped_scenarios

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from adaptflow.experiments.evaluation import Evaluation

PLANNER_SPECS = (
    "Planner specs: static, threshold, keda, celery, erlang, predictive, clairvoyant, quality, with parameters as "
    "name:key=value,key=value (threshold:target=0.6,metric=queue_per_worker); a trained model as sb3:PATH "
    "(its .zip), an exported one as onnx:PATH (its export directory); any spec as LABEL@SPEC to name its row "
    "(ppo@sb3:runs/quickstart/<timestamp>/best_model.zip)."
)
"""What a planner spec may be: the help of every command that takes one (the registry,
adaptflow.policies.registry, is the definition; a test checks this names all its planners)."""

Column = tuple[str, Callable[[Any], str]]
"""A table column: its header and how a row (a pandas itertuples row) is written in it."""

SUMMARY_COLUMNS: tuple[Column, ...] = (
    ("planner", lambda r: str(r.planner)),
    ("cost", lambda r: f"{r.cost_mean:,.0f}"),
    ("95% CI", lambda r: f"[{r.cost_ci_low:,.0f}, {r.cost_ci_high:,.0f}]"),
    ("IQM", lambda r: f"{r.cost_iqm:,.0f}"),
    ("SLA viol.", lambda r: f"{100 * r.sla_violation_rate_mean:.2f}%"),
    ("p95 lat", lambda r: f"{r.p95_latency_mean:.2f}"),
    ("drops", lambda r: f"{r.drops_mean:.1f}"),
    ("escapes", lambda r: f"{r.escapes_mean:.1f}"),
)
PAIRED_COLUMNS: tuple[Column, ...] = (
    ("planner", lambda r: str(r.planner)),
    ("cost diff", lambda r: f"{r.cost_diff_mean:+,.0f}"),
    ("95% CI", lambda r: f"[{r.cost_diff_ci_low:+,.0f}, {r.cost_diff_ci_high:+,.0f}]"),
    ("Wilcoxon p", lambda r: f"{r.wilcoxon_p:.3g}"),
    ("seeds won [95% CI]", lambda r: f"{r.share_won:.2f} [{r.share_won_ci_low:.2f}, {r.share_won_ci_high:.2f}]"),
)
CALIBRATION_COLUMNS: tuple[Column, ...] = (
    ("scope", lambda r: str(r.scope)),
    ("metric", lambda r: str(r.metric)),
    ("recorded [95% CI]", lambda r: f"{r.recorded:,.3f}" + _interval(r.recorded_low, r.recorded_high)),
    ("simulated", lambda r: f"{r.simulated:,.3f} ± {r.simulated_sd:,.3f}"),
    ("error", lambda r: f"{100 * r.error:+.1f}%"),
    ("sizes shuffled", lambda r: f"{r.shuffled:,.3f} ({100 * r.error_shuffled:+.1f}%)"),
)


def _interval(low: float, high: float) -> str:
    return f" [{low:,.3f}, {high:,.3f}]" if math.isfinite(low) and math.isfinite(high) else ""


LIVE_COLUMNS: tuple[Column, ...] = (
    ("world", lambda r: str(r.world)),
    ("planner", lambda r: str(r.planner)),
    ("mean wait", lambda r: f"{r.mean_wait:.2f}"),
    ("p95 lat", lambda r: f"{r.p95_latency:.2f}"),
    ("per s", lambda r: f"{r.throughput:.2f}"),
    ("SLA viol.", lambda r: f"{100 * r.sla_violation_rate:.2f}%"),
    ("cost", lambda r: f"{r.cost:,.0f}"),
    ("mean pool", lambda r: f"{r.mean_pool:.1f}"),
    ("arrived", lambda r: f"{r.arrived:,}"),
    ("completed", lambda r: f"{r.completed:,}"),
)

AGREEMENT_COLUMNS: tuple[Column, ...] = (
    ("planner", lambda r: str(r.planner)),
    ("metric", lambda r: str(r.metric)),
    ("runs", lambda r: str(r.runs)),
    ("live", lambda r: f"{r.live:,.3g}"),
    ("live range", lambda r: f"{r.live_min:,.3g} - {r.live_max:,.3g}"),
    ("simulated", lambda r: f"{r.simulated:,.3g}"),
    ("gap", lambda r: f"{r.gap:+.0%}"),
    ("verdict", lambda r: str(r.verdict)),
)
AT_LIVE_SPEED_COLUMNS: tuple[Column, ...] = (
    ("at live speed", lambda r: f"{r.gap_at_live_speed:+.0%}, {r.verdict_at_live_speed}"),
    ("cause", lambda r: str(r.cause)),
)
"""Printed after AGREEMENT_COLUMNS when the table has the --live-speed diagnosis rows."""
COUNT_COLUMNS: tuple[Column, ...] = (
    ("figure", lambda r: str(r.figure)),
    ("agree", lambda r: f"{r.agrees} of {r.cells}"),
    ("an exact model", lambda r: _about(r.attainable)),
)
AT_LIVE_SPEED_COUNTS: tuple[Column, ...] = (
    ("at live speed", lambda r: f"{r.agrees_at_live_speed} of {r.cells_at_live_speed}"),
    ("an exact model there", lambda r: _about(r.attainable_at_live_speed)),
)
"""The agreements counted against what the model's own seeds reach (agreement_counts)."""


def _about(expected: float) -> str:
    return f"about {expected:.0f}" if math.isfinite(expected) else "-"


def print_table(console: Console, frame: pd.DataFrame, columns: Sequence[Column], title: str) -> None:
    """The one way a command prints a result table: its title as a line of its own (a table's
    title would wrap at the table's width, and a path in it is not rich markup), then one row per
    row of ``frame``, each cell formatted by its column (thousands separators, percentages),
    never pandas' raw floats."""
    from rich.table import Table

    table = Table()
    for k, (header, _) in enumerate(columns):
        table.add_column(header, justify="left" if k == 0 else "right")
    for row in frame.itertuples():
        table.add_row(*(cell(row) for _, cell in columns))
    console.print(title, markup=False, highlight=False)
    console.print(table)


def print_evaluation(console: Console, result: Evaluation) -> None:
    """An evaluation's summary and paired tables, as ``evaluate`` and ``train`` print them."""
    scenario, seeds = result.table.scenario.iloc[0], result.table.seed.nunique()
    print_table(
        console, result.summary, SUMMARY_COLUMNS, f"{scenario}: {seeds} held-out seeds (mean, 95% bootstrap CI)"
    )
    if not result.paired.empty:
        baseline = result.paired.baseline.iloc[0]
        title = f"paired, seed by seed, against the best baseline ({baseline})"
        print_table(console, result.paired, PAIRED_COLUMNS, title)


def _console() -> Console:
    """The terminal's width on a terminal; 150 columns when piped (no width to respect)."""
    from rich.console import Console  # on use: `adaptflow serve` runs without the [sim] extra

    console = Console()
    return console if console.is_terminal else Console(width=150)


def _simulate(args: argparse.Namespace) -> int:
    from adaptflow.experiments.simulation import check_work, summary_table, timed_simulate, write_timeseries

    if (args.timeseries is None) != (args.interval is None):
        raise ValueError("--timeseries and --interval go together: give both or neither")
    spec = load_scenario(args.scenario, seed=args.seed, horizon=args.horizon)  # the values used, for the title
    check_work(spec, args.interval, args.max_items, args.scenario)  # here, so that a refusal names the file
    summary, series, seconds = timed_simulate(
        spec,
        progress=not args.json,
        record_interval=args.interval,
        max_items=args.max_items,
    )
    if series is not None:
        write_timeseries(series, args.timeseries)
    if args.json:
        print(json.dumps(to_jsonable(summary)))
    else:
        console = _console()
        title = f"adaptflow simulate {args.scenario}: seed {spec.seed}, horizon {spec.horizon:,g} s"
        console.print(summary_table(summary, title=title))
        console.print(
            f"[dim]{summary['items_arrived'] / max(seconds, 1e-9):,.0f} items/s of wall time ({seconds:.2f} s)[/dim]"
        )
        if series is not None:
            console.print(f"time series ({len(series)} rows) written to {args.timeseries}")
    return 0


def _forecast_error(args: argparse.Namespace) -> int:
    from adaptflow.agents.fitting import TRAINING_SEED
    from adaptflow.experiments.forecasting import forecast_errors

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    table = forecast_errors(
        args.scenario,
        interval=args.interval,
        lookahead=args.lookahead,
        seeds=tuple(range(1, args.seeds + 1)),
        part=args.part,
    )
    wide = table.pivot(index="lookahead", columns="forecaster", values="mae")
    if args.json:
        print(json.dumps({name: wide[name].round(6).tolist() for name in wide.columns}))
    else:
        labels = load_scenario(args.scenario).series_labels()
        # "held-out" is the word of evaluation's seeds (1,000,000 + k); seeds 1..N are not those
        episodes = (
            f"{args.seeds} windows of part {args.part!r} of {', '.join(labels)} "
            "(forecasters fitted on the training part)"
            if labels
            else f"{args.seeds} episodes on seeds 1..{args.seeds} (forecasters fitted on seed {TRAINING_SEED:,})"
        )
        print(
            f"Mean absolute error of the arrival-rate forecast (items/s), {args.scenario}, "
            f"one decision every {args.interval:g} s, {episodes}:"
        )
        wide.index.name = f"lookahead (steps of {args.interval:g} s)"
        print(wide.round(4).to_string())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from adaptflow.experiments.evaluation import evaluate

    result = evaluate(
        args.scenario,
        args.planner,
        seeds=args.seeds,
        interval=args.interval,
        out_dir=args.out,
        processes=args.processes,
        progress=True,
        part=args.part,
    )
    console = _console()
    print_evaluation(console, result)
    for note in result.notes:
        console.print(f"note: {note}")
    if result.out_dir is not None:
        console.print(f"tables and episode logs in {result.out_dir}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from adaptflow.experiments.plots import plot_results

    for path in plot_results(args.results_dir, args.out):
        print(path)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from adaptflow.experiments.tuning import parse_grid, tune_baseline

    result = tune_baseline(
        args.scenario,
        args.planner,
        parse_grid(args.grid),
        seeds=args.seeds,
        interval=args.interval,
        out_dir=args.out,
        processes=args.processes,
        progress=True,
        part=args.part,
    )
    console = _console()
    shown = min(len(result.table), 10)
    title = (
        f"{args.scenario}: {args.planner} on {args.seeds} training seeds (0..{args.seeds - 1}), "
        f"the best {shown} of {len(result.table)} (mean, 95% bootstrap CI)"
    )
    print_table(console, result.table.head(10), SUMMARY_COLUMNS, title)
    if result.skipped:
        console.print(f"{len(result.skipped)} combinations skipped (the planner rejects them), e.g. "
                      f"{next(iter(result.skipped))}: {next(iter(result.skipped.values()))}", markup=False)  # fmt: skip
    console.print(f"best on {args.seeds} training seeds: {result.best}", markup=False)
    return 0


def _train(args: argparse.Namespace) -> int:
    from adaptflow.experiments.training import Terminated, train

    if (args.config is None) == (args.resume is None):
        raise ValueError("give a CONFIG to start a run, or --resume RUN_DIR to continue one (not both)")
    if args.resume is not None and args.overrides:
        raise ValueError("a resumed run keeps its config: no key=value overrides with --resume")
    if args.allow_pickle and args.resume is None:
        raise ValueError("--allow-pickle goes with --resume (an older run's pickled normalization statistics)")
    try:
        run = train(args.config, args.overrides, resume=args.resume, progress=True, allow_pickle=args.allow_pickle)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: a final checkpoint was saved
        run_dir = getattr(exc, "run_dir", None)
        hint = f"; continue with: adaptflow train --resume {run_dir}" if run_dir is not None else ""
        terminated = isinstance(exc, Terminated)
        print(f"adaptflow: {'terminated' if terminated else 'interrupted'}{hint}", file=sys.stderr)
        return 143 if terminated else 130
    console = _console()
    if run.already_finished:
        console.print(
            f"run {run.run_dir} has finished ({run.timesteps:,} steps): nothing to resume, nothing done; "
            f"its evaluation is in {run.run_dir / 'evaluation'}",
            markup=False,
        )
        return 0
    console.print(f"run {run.run_dir}: {run.timesteps:,} steps, best model {run.best_model.name}")
    if run.evaluation is not None:
        print_evaluation(console, run.evaluation)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from adaptflow.experiments.sweep import summarize_sweep, sweep
    from adaptflow.experiments.tuning import parse_grid

    grid = parse_grid([g for g in args.grid if "," in g.partition("=")[2]])
    fixed = [g for g in args.grid if "," not in g.partition("=")[2]]
    table = sweep(
        args.config,
        args.seeds,
        grid,
        fixed,
        processes=args.processes,
        backend=args.backend,
        address=args.address,
        progress=True,
    )
    print(summarize_sweep(table, list(grid)).to_string(index=False))
    print(f"sweep table: {table.attrs['out_dir']}/sweep.csv")
    return 0


def _export(args: argparse.Namespace) -> int:
    from adaptflow.runtime.export import export_run

    path = export_run(args.run_dir, args.out, args.model)
    print(f"exported {args.model} of {args.run_dir} to {path} (sidecar {path.with_suffix('.json').name})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    from adaptflow.policies.registry import check_trusted
    from adaptflow.runtime.service import Limits, app_for, serve

    check_trusted([args.planner, args.fallback], args.allow_pickle)  # before any model file is opened
    limits = Limits(deadline=args.deadline, max_in_flight=args.max_in_flight, max_body=args.max_body, docs=args.docs)
    token = os.environ.get(args.token_env) or None
    app = app_for(args.planner, args.scenario, args.interval, args.fallback, token, limits)
    auth = f"bearer token from ${args.token_env}" if token else f"no token (set ${args.token_env} to require one)"
    print(f"adaptflow: serving {args.planner} on http://{args.host}:{args.port}/v1/decide; {auth}", file=sys.stderr)
    serve(app, args.host, args.port)
    return 0


def _live(args: argparse.Namespace) -> int:
    from adaptflow.experiments.compare_live import live

    overrides = {"duration": args.duration, "planner": args.planner}
    result = live(args.config, allow_pickle=args.allow_pickle, **overrides)
    t = result.totals
    print(
        f"{result.decisions} decisions; {t.arrived} items arrived, {t.completed} completed, {t.late} late; "
        f"fallbacks {result.fallbacks}; Redis outages {len(result.outages)}; pools {result.final_pools}"
    )
    print(f"event log: {result.event_log}")
    return 0


def _loadgen(args: argparse.Namespace) -> int:
    from adaptflow.experiments.compare_live import loadgen

    result = loadgen(
        args.scenario, args.broker, duration=args.duration, time_scale=args.time_scale, seed=args.seed,
        prefix=args.prefix,
    )  # fmt: skip
    print(f"{result.submitted} items submitted ({result.lost} lost) in {result.wall_seconds:.1f} s")
    print(f"per source: {result.per_source}")
    return 0


def _compare_live(args: argparse.Namespace) -> int:
    from adaptflow.experiments.compare_live import compare_live

    table = compare_live(
        args.scenario, args.broker, args.planner, seed=args.seed, duration=args.duration, interval=args.interval,
        time_scale=args.time_scale, autoscaler=not args.no_autoscaler, workdir=args.out, tick_phases=args.tick_phases,
    )  # fmt: skip
    console = _console()
    print_table(console, table, LIVE_COLUMNS, f"{args.scenario}: {args.planner}, simulated and live (scenario s)")
    console.print(f"table and event logs in {args.out}")
    return 0


def _record(args: argparse.Namespace) -> int:
    import signal
    import threading

    from adaptflow.runtime.record import record

    stop = threading.Event()
    # a service manager's stop: a whole recording; the caller's handler is back afterwards (main()
    # also runs inside other processes, a test's among them)
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def started() -> None:
        print(f"adaptflow: recording {args.app} into {args.out}; Ctrl-C stops", file=sys.stderr)

    try:
        summary = record(args.app, args.mapping, args.out, args.duration, args.sample_every, stop=stop, started=started)
    except KeyboardInterrupt:
        stop.set()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(
        f"adaptflow: recorded {summary.task_events:,} task events in {summary.seconds:,.0f} s "
        f"({summary.gaps} gaps) into {summary.directory}",
        file=sys.stderr,
    )
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from adaptflow.runtime.calibrate import calibrate

    result = calibrate(args.recording, args.out, rate_bin=args.rate_bin, cores=args.cores)
    print(f"adaptflow: wrote {result.scenario} (fit report {result.report_md})", file=sys.stderr)
    if args.validate:
        from adaptflow.experiments.calibration import validate_calibration

        table = validate_calibration(args.recording, result.scenario, seeds=args.validate)
        title = "recorded against the calibrated scenario, simulated on the recorded arrivals"
        print_table(_console(), table, CALIBRATION_COLUMNS, title)
        worst, shuffled = float(table.rel_error.abs().max()), float(table.rel_error_shuffled.abs().max())
        print(f"adaptflow: largest relative error {worst:.1%}; with the item sizes shuffled among the arrivals "
              f"(as on arrivals no recording saw) {shuffled:.1%}", file=sys.stderr)  # fmt: skip
        judged = table.dropna(subset=["recorded_low", "recorded_high"])
        inside = judged.simulated.between(judged.recorded_low, judged.recorded_high)
        print(f"adaptflow: {int(inside.sum())} of {len(judged)} simulated figures within the recorded figure's 95% "
              "interval (the recording is one draw: an error inside it is no evidence of a wrong fit)",
              file=sys.stderr)  # fmt: skip
    return 0


def _fit_growth(args: argparse.Namespace) -> int:
    from adaptflow.experiments.calibration import fit_growth
    from adaptflow.runtime.calibrate.growth import report_lines

    fit = fit_growth(
        args.scenario, args.runs, args.out, host=args.host, reference=args.reference,
        session_speed=args.session_speed, stage_slopes=args.stage_slopes, line=args.line,
        levels=not args.recorded_levels, cpu_law=args.cpu_law, visit_cpu=args.visit_cpu, counts=args.counts,
        own_runs=args.own_runs, cores=args.cores,
    )  # fmt: skip
    print("\n".join(report_lines(fit)))
    print(f"adaptflow: wrote {args.out}", file=sys.stderr)
    return 0


def _sharing(args: argparse.Namespace) -> int:
    from adaptflow.experiments.calibration import sharing

    found = sharing(args.scenario, args.runs, host=args.host, scan=args.scan_cores, seeds=args.seeds, each=args.each)
    print("\n".join(found.lines()))
    return 0


def _keep_fit(args: argparse.Namespace) -> int:
    from adaptflow.runtime.calibrate.own_runs import keep_lines

    print("\n".join(keep_lines(args.fits)))
    return 0


def _laws_by_speed(args: argparse.Namespace) -> int:
    from adaptflow.runtime.calibrate.speed_laws import laws_by_speed_file

    combined = laws_by_speed_file(args.calibration, args.fits, args.out, host=args.host, grid_top=args.grid_top)
    for line in combined.left_out:
        print(f"left out {line}", file=sys.stderr)
    for entry in combined.entries:
        laws = entry.model_dump(exclude_defaults=True)
        print(f"speed {laws.pop('speed')}: " + ", ".join(f"{k} {v}" for k, v in laws.items()))
    print(f"adaptflow: wrote {args.out}", file=sys.stderr)
    return 0


def _control(args: argparse.Namespace) -> int:
    from adaptflow.runtime.control import run_app_control

    decisions, differed = run_app_control(
        args.app, args.mapping, args.scenario, args.planner, args.interval, args.duration, executor=args.executor,
        fallback=args.fallback, max_step=args.max_step, cooldown=args.cooldown, event_log=args.event_log,
        allow_pickle=args.allow_pickle,
    )  # fmt: skip
    logged = f"; each in {args.event_log}" if args.event_log else ""
    shadowed = f"; {differed} would have changed a pool, none was sent" if differed is not None else ""
    print(f"adaptflow: control made {decisions} decisions ({args.executor}){shadowed}{logged}")
    return 0


def _compare_app(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adaptflow.policies.registry import split_specs
    from adaptflow.runtime.compare_app import compare_on_app

    produce = args.produce[1:] if args.produce[:1] == ["--"] else args.produce
    if not produce:
        raise ValueError("give the producer's command after --, e.g. -- python -m myapp.produce --seed 7")
    compare: Any = compare_on_app
    options: dict[str, Any] = {
        "settle": args.settle, "limit": args.limit, "allow_pickle": args.allow_pickle, "repeat": args.repeat,
    }  # fmt: skip
    if args.simulate:
        from adaptflow.experiments.compare_app import compare_app_with_simulation

        compare, options["seeds"] = compare_app_with_simulation, args.simulate
        options["live_handoffs"], options["probe_speed"] = args.live_handoffs, args.probe_speed
        options["live_speed"], options["steal_speed"] = args.live_speed, args.steal_speed
        options["pulse_speed"] = args.pulse_speed
    else:
        replayed = (
            (args.live_handoffs, "--live-handoffs: the hand-offs are"),
            (args.probe_speed, "--probe-speed: the speed is"),
            (args.live_speed, "--live-speed: the speed is"),
            (args.steal_speed, "--steal-speed: the speed is"),
            (args.pulse_speed, "--pulse-speed: the speed is"),
        )
        for given, flag in replayed:
            if given:
                raise ValueError(f"{flag} replayed in simulation; give --simulate SEEDS too")
    table = compare(
        args.app, args.mapping, args.scenario, split_specs(args.planners), produce,
        args.interval, args.drain, Path(args.out) if args.out else None, **options,
    )  # fmt: skip
    print_table(_console(), _figures(table), LIVE_COLUMNS, f"{args.app}: each planner live on the same arrivals")
    if args.simulate:
        _print_agreement(table)
    return 0


def _figures(table: pd.DataFrame) -> pd.DataFrame:
    """A compare table's rows of figures: without its seeds' self-agreement rows (shares, not
    figures; :func:`_print_agreement` counts them)."""
    from adaptflow.experiments.compare_app import SELF_AGREEMENT

    return table[~table["world"].str.endswith(SELF_AGREEMENT)]


def _print_agreement(table: pd.DataFrame) -> None:
    """The simulation judged against the live runs of each planner (compare-app, resimulate)."""
    from adaptflow.experiments.compare_app import TOLERANCE, agreement, agreement_counts

    title = f"simulation against the live runs (agrees: within {TOLERANCE:.0%} of their mean)"
    judged = agreement(table)
    if not len(judged):
        return
    diagnosed = bool(judged["at_live_speed"].notna().any())
    columns = AGREEMENT_COLUMNS + (AT_LIVE_SPEED_COLUMNS if diagnosed else ())
    whole, staged = judged[judged["stage"] == ""], judged[judged["stage"] != ""]
    print_table(_console(), whole, columns, title)
    if len(staged):  # a stage's cost is its pool times its price: the pool's gap is the cost's
        title = "the same, per stage (its mean pool: its cost; service_cv: its services' spread)"
        print_table(_console(), staged, columns, title)
    counts = agreement_counts(judged)
    if counts["attainable"].notna().any() or counts["attainable_at_live_speed"].notna().any():
        _print_counts(
            counts,
            "cells that agree, and how many an exact model would agree on (its own seeds, each against the rest)",
        )


EXACT_MODEL = "how many an exact model would agree on"


def _print_counts(counts: pd.DataFrame, title: str) -> None:
    """``agreement_counts`` (or their sum over sets), with the live-speed columns where a cell was judged there."""
    diagnosed = bool(counts["cells_at_live_speed"].sum())
    print_table(_console(), counts, COUNT_COLUMNS + (AT_LIVE_SPEED_COUNTS if diagnosed else ()), title)


def _resimulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adaptflow.experiments.compare_app import resimulate

    table = resimulate(
        Path(args.folder), args.scenario, args.simulate, args.probe_speed, args.allow_pickle, args.live_speed,
        args.live_handoffs, args.steal_speed, args.planner_scenario, args.live_pools, args.pulse_speed,
    )  # fmt: skip
    if args.out:
        table.to_csv(args.out, index=False)
    title = f"{args.folder}: each live run simulated again on {args.scenario}"
    print_table(_console(), _figures(table), LIVE_COLUMNS, title)
    _print_agreement(table)
    return 0


TREND_COLUMNS: tuple[Column, ...] = (
    ("figure", lambda r: str(r.figure)),
    ("runs", lambda r: str(r.runs)),
    ("load", lambda r: f"{r.load_min:.2f} - {r.load_max:.2f}"),
    ("gap at lightest", lambda r: f"{r.gap_at_min:+.1%}"),
    ("gap at heaviest", lambda r: f"{r.gap_at_max:+.1%}"),
    ("slope a unit of load", lambda r: f"{r.slope:+.3f} ({r.slope_low:+.3f} to {r.slope_high:+.3f})"),
    ("r", lambda r: f"{r.r:+.2f}"),
)


def _gap_trend(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adaptflow._io import atomic_write_text
    from adaptflow._validation import directory_problem
    from adaptflow.experiments.gap_trend import counts_of, load_tables, trend_of

    if args.out and (problem := directory_problem(Path(args.out).parent)):
        raise ValueError(f"--out: {problem}")
    tables = load_tables([Path(p) for p in args.tables], args.at_live_speed)
    gaps, trend = trend_of(tables, args.at_live_speed)
    if args.out:
        atomic_write_text(Path(args.out), gaps.to_csv(index=False))
    world = "each at its own speed" if args.at_live_speed else "as predicted"
    title = f"the simulation's gap against each run's load ({len(gaps)} runs, {world}; load: service CPU s a second)"
    print_table(_console(), trend, TREND_COLUMNS, title)
    counts = counts_of(tables)
    if len(counts):
        _print_counts(
            counts, f"cells that agree over the {len(tables)} sets, and how many an exact model would agree on"
        )
    return 0


def _keda(args: argparse.Namespace) -> int:
    from adaptflow.runtime.keda.app import run_keda

    run_keda(
        args.planner, args.app, args.mapping, args.scenario, args.interval,
        host=args.host, port=args.port, fallback=args.fallback, max_step=args.max_step, cooldown=args.cooldown,
        event_log=args.event_log, allow_pickle=args.allow_pickle,
    )  # fmt: skip
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from adaptflow.experiments.analysis import write_analysis

    written = write_analysis(args.results_dir, run_dir=args.run, out=args.out, seed=args.seed)
    for path in written:
        print(path)
    return 0


def _add_simulate(commands: Any) -> None:
    sim = commands.add_parser(
        "simulate",
        help="simulate a scenario and print its summary",
        description=f"Simulate a scenario to its horizon. Shipped scenarios: {', '.join(shipped_scenarios())}.",
    )
    sim.add_argument("scenario", help="a scenario YAML file or the name of a shipped scenario")
    sim.add_argument("--seed", type=int, help="override the scenario's seed")
    sim.add_argument("--horizon", type=float, help="override the scenario's horizon (simulated seconds)")
    sim.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    sim.add_argument("--timeseries", metavar="PATH", help="write window metrics to PATH (.csv or .parquet)")
    sim.add_argument("--interval", type=float, metavar="S", help="window length of --timeseries, simulated s")
    sim.add_argument(
        "--max-items", type=float, default=20_000_000, metavar="N",
        help="refuse a run expected to bring more arrivals than N (default 20 million, about a minute)",
    )  # fmt: skip
    sim.set_defaults(handler=_simulate)


def _add_forecast_error(commands: Any) -> None:
    fe = commands.add_parser(
        "forecast-error",
        help="compare the analyzers' arrival-rate forecasts (EWMA, Holt-Winters, autoregressive) on load they were "
        "not fitted on",
    )
    fe.add_argument("scenario", nargs="?", default="etl_diurnal")
    fe.add_argument("--interval", type=float, default=30.0, help="decision interval, simulated s")
    fe.add_argument(
        "--lookahead", type=int, default=4, help="how many decision intervals ahead (steps of --interval s)"
    )
    fe.add_argument(
        "--seeds", type=int, default=5,
        help="episodes: seeds 1..N of a synthetic scenario (not the evaluation seeds 1,000,000+k), or N windows "
        "of --part of a series one",
    )  # fmt: skip
    fe.add_argument(
        "--part", choices=("train", "validation", "test", "all"), default="test",
        help="part of a series scenario's data the held-out windows come from (default test; forecasters are "
        "always fitted on train); a synthetic scenario holds out seeds instead",
    )  # fmt: skip
    fe.add_argument("--json", action="store_true")
    fe.set_defaults(handler=_forecast_error)


def _add_evaluate(commands: Any) -> None:
    ev = commands.add_parser(
        "evaluate",
        help="compare planners on held-out seeds",
        description=f"Compare planners on held-out seeds (1,000,000 + k). {PLANNER_SPECS}",
    )
    ev.add_argument("--scenario", required=True, help="a scenario YAML file or a shipped scenario's name")
    ev.add_argument(
        "--planner", action="append", required=True, metavar="SPEC",
        help="a planner spec (repeat for several): a rule (threshold:target=0.6), sb3:PATH, onnx:PATH, LABEL@SPEC",
    )  # fmt: skip
    ev.add_argument("--seeds", type=int, default=10, help="number of held-out evaluation seeds")
    ev.add_argument("--interval", type=float, default=30.0, help="decision interval, simulated s")
    ev.add_argument("--out", default=None, help="results directory (tables and episode logs)")
    ev.add_argument("--processes", type=int, default=None, help="parallel processes (default: CPU count)")
    ev.add_argument(
        "--part",
        choices=["train", "validation", "test", "all"],
        default="test",
        help="for series sources: the part of the series' time split episodes come from (default: test, "
        "never seen in training or tuning); no effect on other scenarios",
    )
    ev.set_defaults(handler=_evaluate)


def _add_plot(commands: Any) -> None:
    pl = commands.add_parser("plot", help="figures (PNG and SVG) of an evaluation's results directory")
    pl.add_argument("results_dir")
    pl.add_argument("--out", default=None, help="where to write (default: RESULTS_DIR/plots)")
    pl.set_defaults(handler=_plot)


def _add_tune_baseline(commands: Any) -> None:
    tb = commands.add_parser("tune-baseline", help="grid search of a rule's parameters on training seeds")
    tb.add_argument("--scenario", required=True)
    tb.add_argument("--planner", required=True, help="threshold, celery, erlang, predictive or quality")
    tb.add_argument("--grid", action="append", required=True, help="key=v1,v2,... (repeat for several keys)")
    tb.add_argument("--seeds", type=int, default=5, help="training seeds 0..N-1")
    tb.add_argument(
        "--part",
        choices=["train", "validation", "test", "all"],
        default="train",
        help="for series sources: the part of the series' time split (default: train, as a learned planner)",
    )
    tb.add_argument("--interval", type=float, default=30.0)
    tb.add_argument("--out", default=None, help="where to write tuning.csv and best.json")
    tb.add_argument("--processes", type=int, default=None)
    tb.set_defaults(handler=_tune)


def _add_train(commands: Any) -> None:
    tr = commands.add_parser(
        "train",
        help="train an RL planner from a config file",
        description="adaptflow train CONFIG [key=value ...] | adaptflow train --resume RUN_DIR",
    )
    tr.add_argument("config", nargs="?", default=None, help="a training config (configs/train/*.yaml)")
    tr.add_argument("overrides", nargs="*", help="dotted overrides, e.g. hyperparameters.learning_rate=1e-4")
    tr.add_argument(
        "--resume", default=None, metavar="RUN_DIR",
        help="continue a run from its last checkpoint; a run whose training ended but not its final evaluation "
        "runs only that evaluation; a finished run is left as it is",
    )  # fmt: skip
    tr.add_argument(
        "--allow-pickle",
        action="store_true",
        help="with --resume: load an older run's pickled normalization statistics (.vecnormalize.pkl); "
        "loading a pickle can run code, so only for a run directory you trust",
    )
    tr.set_defaults(handler=_train)


def _add_sweep(commands: Any) -> None:
    sw = commands.add_parser(
        "sweep",
        help="several seeds and hyperparameter values of a config, in parallel",
        description="adaptflow sweep CONFIG --seeds N [key=v1,v2 ...]; a key with one value is a plain override.",
    )
    sw.add_argument("config")
    sw.add_argument("grid", nargs="*", help="dotted key=v1,v2,... (e.g. hyperparameters.learning_rate=1e-4,3e-4)")
    sw.add_argument("--seeds", type=int, default=3)
    sw.add_argument("--processes", type=int, default=None)
    sw.add_argument("--backend", choices=["process", "ray"], default="process")
    sw.add_argument("--address", default=None, help="Ray cluster address (backend ray); default: a local Ray")
    sw.set_defaults(handler=_sweep)


def _add_export(commands: Any) -> None:
    ex = commands.add_parser(
        "export",
        help="export a trained planner to ONNX with a JSON sidecar",
        description="adaptflow export RUN_DIR [--out DIR]: the policy's deterministic action as ONNX, plus "
        "planner.json (observation layout and normalization, action mapping, env, scenario, versions).",
    )
    ex.add_argument("run_dir", help="a training run directory (runs/<name>/<timestamp>)")
    ex.add_argument("--out", default=None, help="output directory (default: RUN_DIR/export)")
    ex.add_argument("--model", default="best_model.zip", help="which of the run's models (default: best_model.zip)")
    ex.set_defaults(handler=_export)


def _add_serve(commands: Any) -> None:
    sv = commands.add_parser(
        "serve",
        help="serve a planner over HTTP (POST /v1/decide, GET /healthz, GET /metrics)",
        description="adaptflow serve --planner onnx:EXPORT_DIR | --planner threshold --scenario S",
    )
    sv.add_argument(
        "--planner", required=True, metavar="SPEC",
        help="onnx:PATH, a rule spec, or sb3:PATH with --allow-pickle; LABEL@SPEC names it in /healthz and /metrics",
    )  # fmt: skip
    sv.add_argument("--scenario", default=None, help="scenario name or YAML (an exported planner brings its own)")
    sv.add_argument("--interval", type=float, default=None, help="decision interval in seconds")
    sv.add_argument("--fallback", default="erlang", help="baseline planner used when the planner fails (erlang)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--token-env", default="ADAPTFLOW_TOKEN", help="environment variable holding the bearer token")
    sv.add_argument("--deadline", type=float, default=1.0, help="seconds per decision; then the fallback answers")
    sv.add_argument("--max-in-flight", type=int, default=8, help="decisions at once; beyond: 503 (default 8)")
    sv.add_argument("--max-body", type=int, default=64 * 1024, help="largest request body in bytes; beyond: 413")
    sv.add_argument("--docs", action="store_true", help="serve /docs (Swagger UI: the browser loads it from a CDN)")
    sv.add_argument(
        "--allow-pickle", action="store_true",
        help="allow sb3:PATH planners: their zip is loaded with pickle and can run code; serve only files you trust",
    )  # fmt: skip
    sv.set_defaults(handler=_serve)


def _add_live(commands: Any) -> None:
    lv = commands.add_parser(
        "live", help="run a planner against Celery workers on Redis (a live config)",
        description="adaptflow live CONFIG: the Coordinator against the Celery workers and broker of the config.",
    )  # fmt: skip
    lv.add_argument("config", help="a live config (configs/live/*.yaml)")
    lv.add_argument("--duration", type=float, default=None, help="override the config's duration (scenario s)")
    lv.add_argument(
        "--planner", default=None, metavar="SPEC",
        help="override the config's planner spec: onnx:PATH, a rule spec, LABEL@SPEC, or sb3:PATH with --allow-pickle",
    )  # fmt: skip
    lv.add_argument(
        "--allow-pickle", action="store_true",
        help="allow an sb3: planner (its model file is loaded with pickle and can run code); default: onnx: and rules",
    )  # fmt: skip
    lv.set_defaults(handler=_live)


def _add_loadgen(commands: Any) -> None:
    lg = commands.add_parser("loadgen", help="submit a scenario's arrivals as Celery tasks, in real time")
    lg.add_argument("scenario", help="a scenario YAML file or a shipped scenario's name")
    lg.add_argument("--broker", required=True, help="Redis broker URL")
    lg.add_argument("--duration", type=float, default=None, help="scenario seconds (default: the horizon)")
    lg.add_argument("--time-scale", type=float, default=1.0, help="how much faster than the scenario's clock")
    lg.add_argument("--seed", type=int, default=0, help="the arrival trace's seed (as in simulation)")
    lg.add_argument("--prefix", default="adaptflow", help="Redis key prefix of the run")
    lg.set_defaults(handler=_loadgen)


def _add_compare_live(commands: Any) -> None:
    cl = commands.add_parser(
        "compare-live", help="simulated vs measured figures of a planner, and the planner vs Celery's autoscaler",
    )  # fmt: skip
    cl.add_argument("scenario")
    cl.add_argument("--broker", required=True, help="Redis broker URL (workers are started by the command)")
    cl.add_argument(
        "--planner", default="threshold", metavar="SPEC",
        help="the planner spec (default threshold): a rule spec, onnx:PATH, sb3:PATH or LABEL@SPEC",
    )  # fmt: skip
    cl.add_argument("--seed", type=int, default=0)
    cl.add_argument("--duration", type=float, default=600.0, help="scenario seconds")
    cl.add_argument("--interval", type=float, default=30.0, help="decision interval, scenario s")
    cl.add_argument("--time-scale", type=float, default=10.0)
    cl.add_argument("--no-autoscaler", action="store_true", help="skip the Celery --autoscale run")
    cl.add_argument(
        "--tick-phases", type=int, default=8, choices=range(1, 65), metavar="K",
        help="simulate K phases of Celery's pool ticks and show their mean, min and max (default 8)",
    )  # fmt: skip
    cl.add_argument("--out", default="runs/compare-live")
    cl.set_defaults(handler=_compare_live)


def installed_version() -> str:
    """The installed package's version (its metadata, as pip knows it); a source tree run
    without installing has none."""
    try:
        return metadata.version("adaptflow")
    except metadata.PackageNotFoundError:
        return "(not installed: no package metadata)"


def _add_record(commands: Any) -> None:
    rc = commands.add_parser(
        "record",
        help="store the task events of a running Celery app (yours) for adaptflow calibrate",
        description="adaptflow record --app MODULE:APP --mapping MAPPING.yaml --out DIR [--duration S]",
    )
    rc.add_argument("--app", required=True, metavar="MODULE:APP", help="your Celery app, as celery -A takes it")
    rc.add_argument("--mapping", required=True, help="YAML: which queues or tasks form which stage (docs/deploy.md)")
    rc.add_argument("--out", required=True, help="a new directory for the recording")
    rc.add_argument("--duration", type=float, default=None, help="seconds to record (default: until Ctrl-C)")
    rc.add_argument("--sample-every", type=float, default=5.0, help="seconds between pool and queue samples")
    rc.set_defaults(handler=_record)


def _add_calibrate(commands: Any) -> None:
    cb = commands.add_parser(
        "calibrate",
        help="fit a scenario (arrivals, service distributions, routes, failures, pools) from a recording",
        description="adaptflow calibrate RECORDING_DIR --out scenario.yaml [--validate SEEDS]",
    )
    cb.add_argument("recording", help="a directory written by adaptflow record")
    cb.add_argument("--out", required=True, help="the scenario YAML to write (its fit report is written beside it)")
    cb.add_argument("--rate-bin", type=float, default=60.0, help="seconds per bin of the fitted rate profile (60)")
    cb.add_argument(
        "--cores", default=None, metavar="auto|NAME=N,...",
        help="the machines the workers ran on (the part after @ of their node names) and their cores: places the "
        "stages on hosts whose cores their processes share, and fits each stage's CPU share. auto: the recording "
        "machine's own cores",
    )  # fmt: skip
    cb.add_argument(
        "--validate", type=int, default=0, metavar="SEEDS",
        help="then simulate it on the recorded arrivals over SEEDS seeds and compare with the recording",
    )  # fmt: skip
    cb.set_defaults(handler=_calibrate)


def _add_fit_growth(commands: Any) -> None:
    fg = commands.add_parser(
        "fit-growth",
        help="fit how a host's hand-offs grow with its processes, and how much of its cores Celery's own work takes, "
        "from compare-app runs at several held pool sizes",
        description="adaptflow fit-growth SCENARIO RUN_CSV [RUN_CSV ...] --out scenario.yaml",
    )
    fg.add_argument("scenario", help="the calibrated scenario (adaptflow calibrate --cores writes its hosts)")
    fg.add_argument(
        "runs", nargs="+", metavar="RUN_CSV",
        help="compare_app.csv files of adaptflow compare-app --planners static runs at the calibrated pools and at "
        "other held sizes (static:pool=N), at one load or several (each run is compared with the run at the "
        "calibrated pools nearest its arrival rate; rows of planners that moved the pools are skipped)",
    )  # fmt: skip
    fg.add_argument("--out", required=True, help="the scenario YAML to write, beside the scenario (may be the same)")
    fg.add_argument("--host", default=None, help="the host to fit (default: the scenario's only one)")
    fg.add_argument(
        "--reference", type=int, default=None,
        help="the processes the host ran when the turnarounds were calibrated (default: its stages' initial pools)",
    )  # fmt: skip
    fg.add_argument(
        "--session-speed", action="store_true",
        help="write the host's speed too: the mean of the held runs' own speeds on the fitted scenario (the speed "
        "search of resimulate --live-speed); for runs made in the session the scenario is to predict",
    )  # fmt: skip
    _add_growth_law_options(fg)
    fg.add_argument(
        "--recorded-levels", action="store_true",
        help="keep the recording's turnarounds and dispatch delays (default: each stage's settled on the runs at the "
        "reference, which hold several times the recording's gaps)",
    )  # fmt: skip
    fg.add_argument(
        "--cpu-law", default=None, metavar="LAW",
        help="search Celery's CPU in this law alone (visit_cpu, handoff_cpu or oversubscription; default: every law): "
        "for a law the report names in a near tie, to judge both fits on held-out runs; or 'none': no Celery CPU "
        "and the CPU shares as calibrated, to judge against the law chosen by their own-runs shares",
    )  # fmt: skip
    fg.add_argument(
        "--visit-cpu", type=_visit_cpu, default=None, metavar="SECONDS|recorded",
        help="hold Celery's CPU a visit at this measured value (the workers' main processes' CPU seconds over the "
        "tasks they ran, docs/deploy.md step 6), or at what the runs' own recordings read ('recorded'), and search "
        "the host's cores instead of the law",
    )  # fmt: skip
    fg.add_argument(
        "--cores", default="search", metavar="search|sharing",
        help="with --visit-cpu: search the host's cores by the services' growth (default), or read them from how "
        "the runs' tasks slowed beside each other in their recordings ('sharing', as adaptflow sharing --scan-cores "
        "with Celery's CPU held)",
    )  # fmt: skip
    fg.add_argument(
        "--own-runs", action=argparse.BooleanOptionalAction, default=True,
        help="judge the scenario written on the fit set's own runs, each at its own speed, and keep the count in its "
        "header (default; a minute on four compare-app folders): of fits made in sessions at speeds like the runs "
        "to predict keep the one whose share is highest (docs/deploy.md, step 3)",
    )  # fmt: skip
    fg.set_defaults(handler=_fit_growth)


def _add_sharing(commands: Any) -> None:
    sh = commands.add_parser(
        "sharing",
        help="how a host's tasks slowed beside each other in held compare-app runs, live and in the scenario's "
        "simulation of the same runs; with --scan-cores, the cores whose plain sharing slows them as live",
        description="adaptflow sharing SCENARIO RUN_CSV [RUN_CSV ...] [--scan-cores] [--each]",
    )
    sh.add_argument("scenario", help="the scenario to simulate the runs on (a calibration, or a fit-growth fit)")
    sh.add_argument(
        "runs", nargs="+", metavar="RUN_CSV",
        help="compare_app.csv files of compare-app runs at held pools (fit-growth's), each run's recording beside it",
    )  # fmt: skip
    sh.add_argument("--host", default=None, help="the host to read (default: the scenario's only one)")
    sh.add_argument("--seeds", type=int, default=2, help="simulations a run (2; at most 8)")
    sh.add_argument(
        "--scan-cores", action="store_true",
        help="simulate the runs on the host at 1 to 2.5 cores (no Celery CPU, every CPU share 1) and name the nearest",
    )  # fmt: skip
    sh.add_argument(
        "--each", action="store_true",
        help="also each RUN_CSV's runs apart, live and simulated: whether the scenario's curve moves with a file's "
        "load as live's does (a fit set at two loads, one file a load)",
    )  # fmt: skip
    sh.set_defaults(handler=_sharing)


def _add_growth_law_options(fg: argparse.ArgumentParser) -> None:
    """fit-growth's options of the laws' form: whose processes they count and how they run
    through the sizes."""
    fg.add_argument(
        "--stage-slopes", action="store_true",
        help="give each stage's turnaround growth a slope of its own (hosts.H.turnaround_growth.stages), each "
        "settled against its own simulation, where the stages' hand-offs grow unlike each other",
    )  # fmt: skip
    fg.add_argument(
        "--line", action="store_true",
        help="one line through every size, where the runs held three sizes or more (default: the law runs straight "
        "between the sizes measured, hosts.H.turnaround_growth.points, and by the line's slope beyond them)",
    )  # fmt: skip
    fg.add_argument(
        "--counts", choices=("host", "stage"), default="host",
        help="whose processes the laws count: the host's (default), or each stage's own pool (hosts.H."
        "turnaround_growth.counts: stage), where a stage's hand-offs grow with its own pool, not its neighbours'",
    )  # fmt: skip


def _visit_cpu(text: str) -> float | str:
    """``--visit-cpu``: seconds, or a word (``recorded``), checked with fit-growth's other options
    so that a bad one gets their one line, not argparse's usage."""
    try:
        return float(text)
    except ValueError:
        return text


def _add_keep_fit(commands: Any) -> None:
    kf = commands.add_parser(
        "keep-fit",
        help="of scenarios fit-growth wrote, name the one to keep: the highest share of its own runs' stage waits "
        "within 10 %% (the count in each file's header)",
        description="adaptflow keep-fit FIT [FIT ...]",
    )
    kf.add_argument(
        "fits", nargs="+", metavar="FIT",
        help="scenarios fit-growth wrote (with its own-runs line); ties go to the one named first, so name "
        "fit-growth's default law before --cpu-law none's",
    )  # fmt: skip
    kf.set_defaults(handler=_keep_fit)


def _add_laws_by_speed(commands: Any) -> None:
    ls = commands.add_parser(
        "laws-by-speed",
        help="put fit-growth's laws from sessions on days of different machine speeds into one scenario, which a "
        "simulation takes at each run's own speed",
        description="adaptflow laws-by-speed CALIBRATION FIT FIT [FIT ...] --out scenario.yaml",
    )
    ls.add_argument("calibration", help="the calibrated scenario every fit started from (fit-growth's SCENARIO)")
    ls.add_argument(
        "fits", nargs="+", metavar="FIT",
        help="scenarios fit-growth --session-speed wrote from it, each from one session's runs (two or more)",
    )  # fmt: skip
    ls.add_argument("--out", required=True, help="the scenario YAML to write, beside the calibration")
    ls.add_argument("--host", default=None, help="the host whose laws to combine (default: the scenario's only one)")
    ls.add_argument(
        "--grid-top", choices=("refuse", "skip", "keep"), default="refuse",
        help="a fit whose Celery CPU law sits at the top of fit-growth's grid (its report warned: distrust it): "
        "refuse it (default), leave it out with a line, or keep it",
    )  # fmt: skip
    ls.set_defaults(handler=_laws_by_speed)


def _add_control(commands: Any) -> None:
    ct = commands.add_parser(
        "control",
        help="plan your app's pools: publish them to workers run with the PlannedAutoscaler, or resize them",
        description=(
            "adaptflow control --planner SPEC --app MODULE:APP --mapping MAPPING.yaml --scenario S; with "
            "--executor autoscaler (the default) the workers run `celery -A APP --config CONF worker "
            "--autoscale=MAX,MIN` with CONF setting worker_autoscaler = "
            "'adaptflow.runtime.autoscaler:PlannedAutoscaler'; with --executor central they run without "
            "--autoscale and the loop resizes their pools itself (pool_grow / pool_shrink); with --executor "
            "shadow nothing is sent: the event log shows what the planner would have done"
        ),
    )
    ct.add_argument(
        "--executor",
        choices=("autoscaler", "central", "shadow"),
        default="autoscaler",
        help="how a plan reaches the workers: published to Redis for each worker's PlannedAutoscaler "
        "(autoscaler; a stale plan hands the worker back to Celery's rule), or pool_grow / pool_shrink sent "
        "to each mapped worker by this loop (central; workers run without --autoscale), or not at all "
        "(shadow: each decision logged beside the pools your own sizing kept)",
    )
    _add_decision_loop_arguments(ct)
    ct.add_argument("--duration", type=float, required=True, help="seconds to run (at most a week)")
    ct.set_defaults(handler=_control)


def _add_decision_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """What every decision loop over a user's app is given (``control``, ``keda``)."""
    parser.add_argument(
        "--planner",
        required=True,
        metavar="SPEC",
        help="onnx:PATH, a rule spec (erlang, ...), or service:URL (adaptflow serve decides; $ADAPTFLOW_TOKEN)",
    )
    parser.add_argument(
        "--app", required=True, metavar="MODULE:APP", help="your Celery app, observed through its events"
    )
    parser.add_argument("--mapping", required=True, help="YAML: which queues or tasks form which stage")
    parser.add_argument("--scenario", required=True, help="the scenario of your app (adaptflow calibrate writes one)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between decisions (30)")
    parser.add_argument("--fallback", default="erlang", help="rule used when the planner fails or leaves its range")
    parser.add_argument("--max-step", type=int, default=None, help="largest change of a pool per decision")
    parser.add_argument("--cooldown", type=float, default=0.0, help="seconds a pool is held after a change")
    parser.add_argument(
        "--event-log", default=None, help="JSONL of every decision (what was seen, planned, applied, and what followed)"
    )
    parser.add_argument("--allow-pickle", action="store_true", help="allow sb3:PATH planners (pickle can run code)")


PLANNERS_HELP = (
    "comma-separated planner specs, LABEL@SPEC to name one; each run starts at the scenario's initial pools, a "
    "static planner's at its own (p1@static:pool=1,p2@static:pool=2 --repeat 3: two held sizes interleaved); a "
    "piece key=value is a parameter of the spec before it (p7@static:pool=1,workers=aggregate:2+write:2)"
)


def _add_compare_app(commands: Any) -> None:
    ca = commands.add_parser(
        "compare-app",
        help="run planners live on your Celery app, one after another, on the same replayed arrivals",
        description=(
            "adaptflow compare-app --app MODULE:APP --mapping MAPPING.yaml --scenario S --planners static,celery,"
            "keda:target=2,onnx:EXPORT_DIR -- PRODUCER COMMAND (a seeded producer: the same arrivals every run)"
        ),
    )
    ca.add_argument("--app", required=True, metavar="MODULE:APP", help="your Celery app, observed through its events")
    ca.add_argument("--mapping", required=True, help="YAML: which queues or tasks form which stage")
    ca.add_argument("--scenario", required=True, help="the scenario of your app (adaptflow calibrate writes one)")
    ca.add_argument("--planners", required=True, help=PLANNERS_HELP)
    ca.add_argument("--interval", type=float, default=5.0, help="seconds between decisions (5)")
    ca.add_argument("--drain", type=float, default=60.0, help="seconds to keep deciding after the producer ends")
    ca.add_argument(
        "--out", default=None,
        help="directory for compare_app.csv, each run's event log and the run kept as a recording (LABEL.recording: "
        "adaptflow calibrate reads it)",
    )  # fmt: skip
    ca.add_argument("--settle", type=float, default=120.0, help="seconds to wait for an idle app before a run")
    ca.add_argument("--limit", type=float, default=3600.0, help="longest run in seconds")
    ca.add_argument("--allow-pickle", action="store_true", help="allow sb3:PATH planners (pickle can run code)")
    ca.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="run each planner N times, in rounds of rotating order (labels LABEL#k): the live runs' own spread",
    )  # fmt: skip
    ca.add_argument(
        "--simulate", type=int, default=0, metavar="SEEDS",
        help="after each run, the planner in simulation on the scenario with that run's arrivals, over SEEDS seeds",
    )  # fmt: skip
    ca.add_argument(
        "--live-handoffs", action="store_true",
        help="with --simulate: each stage's turnaround the hand-off the run met between tasks (handoff_<stage>)",
    )  # fmt: skip
    ca.add_argument(
        "--probe-speed", action="store_true",
        help="with --simulate: each probed host at the speed a CPU probe measured around the run, against "
        "the calibration's (hosts.<h>.probe; speed_<host> in the table)",
    )  # fmt: skip
    ca.add_argument(
        "--live-speed", action="store_true",
        help="with --simulate, a diagnosis: one more row per run, 'simulated, live speed', with each host at the "
        "speed at which the simulation's own services met the run's, its pools included, and each stage's service "
        "scaled to its live mean (speed_<host>, speed_gap_<host>, speed_rounds, scale_<stage>)",
    )  # fmt: skip
    ca.add_argument(
        "--steal-speed", action="store_true",
        help="with --simulate: each host at the speed the run's own steal gives against the recording's "
        "((1 - steal) / (1 - hosts.<h>.steal); over the whole run, where the probe reads beside it)",
    )  # fmt: skip
    ca.add_argument(
        "--pulse-speed", action="store_true",
        help="with --simulate: each host at the speed the run's own short CPU probes gave where no task ran, "
        "against the recording's (pulse in the table over hosts.<h>.pulse)",
    )  # fmt: skip
    ca.add_argument("produce", nargs=argparse.REMAINDER, help="-- then the producer's command")
    ca.set_defaults(handler=_compare_app)


def _add_gap_trend(commands: Any) -> None:
    gt = commands.add_parser(
        "gap-trend",
        help="whether the simulation's gaps to the live runs grow with the runs' load, over judged sets",
        description="adaptflow gap-trend TABLE [TABLE ...] [--at-live-speed] [--out FILE]: each live run's gap "
        "(simulated over live, minus 1) against its load, a line through them per figure with its 95% interval",
    )
    gt.add_argument("tables", nargs="+", help="tables written by adaptflow resimulate --out (or compare-app's)")
    gt.add_argument(
        "--at-live-speed", action="store_true",
        help="judge each run's simulation at its own speed (the rows resimulate --live-speed writes)",
    )  # fmt: skip
    gt.add_argument("--out", default=None, help="CSV of each run's load and gaps")
    gt.set_defaults(handler=_gap_trend)


def _add_resimulate(commands: Any) -> None:
    rs = commands.add_parser(
        "resimulate",
        help="simulate the live runs of a compare-app directory again, on another scenario, and judge it",
        description="adaptflow resimulate CMP_DIR --scenario S [--planner-scenario S] [--simulate SEEDS] "
        "[--probe-speed | --steal-speed | --pulse-speed] [--live-speed] [--live-handoffs] [--live-pools] [--out FILE]",
    )
    rs.add_argument("folder", help="a directory written by adaptflow compare-app --simulate --out")
    rs.add_argument("--scenario", required=True, help="the scenario to simulate each run on")
    rs.add_argument(
        "--planner-scenario", default=None, metavar="S",
        help="the scenario the live runs' planners were built for (compare-app's --scenario); default the copy "
        "compare-app kept in the folder (scenario.yaml), else --scenario",
    )  # fmt: skip
    rs.add_argument("--simulate", type=int, default=3, metavar="SEEDS", help="seeds per run (3)")
    rs.add_argument("--probe-speed", action="store_true", help="each run at the speed its CPU probe measured")
    rs.add_argument(
        "--live-speed", action="store_true",
        help="a diagnosis row per run at the speed its own services met; the judgement then names each gap's cause",
    )  # fmt: skip
    rs.add_argument(
        "--live-handoffs", action="store_true",
        help="every row with each run's own hand-offs between tasks (handoff_<stage> of its row), as compare-app's",
    )  # fmt: skip
    rs.add_argument(
        "--steal-speed", action="store_true", help="each run at the speed its own steal gave (the row's steal)"
    )
    rs.add_argument(
        "--pulse-speed", action="store_true",
        help="each run at the speed its own idle pulses gave (the row's pulse over hosts.<h>.pulse)",
    )  # fmt: skip
    rs.add_argument(
        "--live-pools", action="store_true",
        help="each run replayed with the pools it applied at each decision (its event log), not its planner's new ones",
    )  # fmt: skip
    rs.add_argument("--out", default=None, help="CSV of the live and simulated rows")
    rs.add_argument("--allow-pickle", action="store_true", help="allow sb3:PATH planners (pickle can run code)")
    rs.set_defaults(handler=_resimulate)


def _add_keda(commands: Any) -> None:
    kd = commands.add_parser(
        "keda",
        help="KEDA external scaler (gRPC): report what the planner wants for each stage of your app",
        description="adaptflow keda --planner SPEC --app MODULE:APP --mapping MAPPING.yaml --scenario S",
    )
    _add_decision_loop_arguments(kd)
    kd.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a cluster (KEDA calls the pod's Service)")
    kd.add_argument("--port", type=int, default=6000)
    kd.set_defaults(handler=_keda)


def _add_analyze(commands: Any) -> None:
    an = commands.add_parser(
        "analyze",
        help="analysis figures of an evaluation (and its training run): what the notebook shows, as files",
    )
    an.add_argument("results_dir", help="an evaluation's results directory")
    an.add_argument("--run", default=None, help="the training run directory (learning curves, sensitivity)")
    an.add_argument("--out", default=None, help="where to write (default: RESULTS_DIR/analysis)")
    an.add_argument("--seed", type=int, default=None, help="the episode to show side by side (default: the worst)")
    an.set_defaults(handler=_analyze)


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one ``_add_<command>`` per subcommand, each with its handler."""
    parser = argparse.ArgumentParser(prog="adaptflow", description="Learn and deploy adaptive workflow orchestrators.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_simulate(commands)
    _add_forecast_error(commands)
    _add_evaluate(commands)
    _add_plot(commands)
    _add_tune_baseline(commands)
    _add_train(commands)
    _add_sweep(commands)
    _add_export(commands)
    _add_serve(commands)
    _add_live(commands)
    _add_loadgen(commands)
    _add_compare_live(commands)
    _add_record(commands)
    _add_calibrate(commands)
    _add_fit_growth(commands)
    _add_sharing(commands)
    _add_laws_by_speed(commands)
    _add_keep_fit(commands)
    _add_control(commands)
    _add_compare_app(commands)
    _add_resimulate(commands)
    _add_gap_trend(commands)
    _add_keda(commands)
    _add_analyze(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ScenarioError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"adaptflow: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adaptflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point: exit with :func:`main`'s status."""
    sys.exit(main())

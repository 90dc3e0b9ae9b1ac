"""Figures of an evaluation's results directory, as PNG and SVG: ``adaptflow plot RESULTS_DIR``
and a training run's ``evaluation/plots/`` both call :func:`plot_results`, so both write the
figures named in :data:`FIGURES`, drawn by :func:`figures`.

* ``cost_vs_sla``: left, every episode's cost against its SLA-violation rate, one colour and one
  marker per planner, each planner's mean labelled on the figure; right, a zoom on the planners
  the comparison is about (the best baseline, the learned planners and the clairvoyant bound),
  whose clouds overlap at the full scale: their means with 95% bootstrap CIs on both axes, each
  labelled. A dashed box on the left panel shows where the zoom is.
* ``workers_vs_load``: one panel per planner over one seed's episode: the arrival rate (left
  axis) and the total worker target (right axis), every panel on the same two scales, so that a
  flat pool looks flat and a pool that follows the load looks like it does.
* ``metrics_ci``: each planner minus the best baseline, per metric: the mean of the per-seed
  differences with its 95% t-interval, the statistics of ``paired.csv``
  (:func:`adaptflow.experiments.evaluation.paired_comparison`, which also says which baseline is
  best), applied to every metric; below the zero line, the planner has less of it.

Every title names the scenario, the part of its series when the evaluation recorded one, and
the seeds. Matplotlib's object API with the Agg canvas: no pyplot global state, no display needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from adaptflow.policies.registry import BASELINES

from .evaluation import _label, _paired, bootstrap_ci, paired_comparison
from .io import atomic_write

FIGURES = ("cost_vs_sla", "workers_vs_load", "metrics_ci")
"""The figures every results directory gets, each as <name>.png and <name>.svg."""

METRIC_LABELS = {
    "cost": "cost per episode",
    "sla_violation_rate": "SLA violation rate",
    "p95_latency": "p95 latency (s)",
    "escapes": "quality escapes",
}

MARKERS = ("o", "s", "^", "D", "v", "P", "*", "h", "<", ">")
"""One marker per planner (with its colour), so that overlapping clouds stay apart in print."""


def load_results(results_dir: str | Path) -> pd.DataFrame:
    """The per-episode table (one row per planner and seed) of ``adaptflow evaluate``."""
    path = Path(results_dir) / "results.parquet"
    if not path.is_file():
        raise ValueError(f"{str(results_dir)!r} has no results.parquet; expected the output of adaptflow evaluate")
    return pd.read_parquet(path)


def episode_series(results_dir: str | Path, planner: str, seed: int) -> pd.DataFrame:
    """One episode's event log as a frame: time, arrival rate, total worker target, queue."""
    path = Path(results_dir) / "episodes" / _label(planner) / f"seed_{seed}.jsonl"
    if not path.is_file():
        raise ValueError(f"no event log {str(path)!r}")
    rows = []
    with path.open() as f:
        for line in f:
            record = json.loads(line)
            m = record["metrics"]
            interval = m["interval"] or float("nan")
            rows.append(
                {
                    "time": record["time"],
                    "arrival_rate": sum(m["source_arrivals"].values()) / interval,
                    "workers": sum(s["target"] for s in m["stages"].values()),
                    "queue": sum(s["queue_length"] for s in m["stages"].values()),
                    "forecast": sum(v[0] for v in record["insights"]["forecasts"].values() if v),
                    "sla_violations": m["sla_violations"],
                    **{f"workers.{k}": s["target"] for k, s in m["stages"].items()},
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Style:
    """What every figure of one results directory shares: the planners in table order, their
    colours, markers and short names, the title's description of the evaluation, and the
    reference every planner is compared with."""

    planners: list[str]
    colours: dict[str, str]
    markers: dict[str, str]
    names: dict[str, str]
    headline: str
    reference: str
    reference_is_baseline: bool

    @classmethod
    def of(cls, results_dir: Path, table: pd.DataFrame) -> Style:
        planners = list(dict.fromkeys(table.planner))
        reference, is_baseline = best_baseline(table)
        return cls(
            planners,
            {p: f"C{i % 10}" for i, p in enumerate(planners)},
            {p: MARKERS[i % len(MARKERS)] for i, p in enumerate(planners)},
            short_names(planners),
            headline(results_dir, table),
            reference,
            is_baseline,
        )


def short_names(planners: list[str]) -> dict[str, str]:
    """``predictive:target_wait=2.0`` -> ``predictive`` where that leaves every name distinct:
    labels on a figure must be short enough to sit beside a point."""
    bases = [p.partition(":")[0] for p in planners]
    return {p: b if bases.count(b) == 1 else p for p, b in zip(planners, bases, strict=True)}


def best_baseline(table: pd.DataFrame) -> tuple[str, bool]:
    """The planner every other one is compared with, and whether it is a baseline: the best
    baseline as ``paired.csv`` chooses it (:func:`paired_comparison`); with no baseline to
    compare with, the planner of lowest mean cost."""
    paired = paired_comparison(table)
    if len(paired):
        return str(paired.baseline.iloc[0]), True
    means = table.groupby("planner", sort=False)["cost"].mean()
    best = str(means.idxmin())
    return best, best.partition(":")[0] in BASELINES


def headline(results_dir: Path, table: pd.DataFrame) -> str:
    """What was evaluated, for every title: scenario, part of its series if the evaluation
    recorded one (``evaluation.json``), and the seeds of the table."""
    settings = _settings(results_dir)
    scenario = settings.get("scenario") or ", ".join(sorted(map(str, table.get("scenario", pd.Series()).unique())))
    text = scenario or "unnamed scenario"
    if settings.get("part"):
        text += f", {settings['part']} part"
    seeds = sorted(int(s) for s in table.seed.unique())
    if len(seeds) == 1:
        return f"{text}, seed {seeds[0]}"
    contiguous = seeds[-1] - seeds[0] == len(seeds) - 1
    return f"{text}, {len(seeds)} seeds" + (f" ({seeds[0]}-{seeds[-1]})" if contiguous else "")


def _settings(results_dir: Path) -> dict:
    """``evaluation.json`` of ``results_dir``, or nothing for a directory written without it."""
    path = results_dir / "evaluation.json"
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def figures(results_dir: str | Path) -> dict[str, Figure]:
    """Every figure of :data:`FIGURES` for ``results_dir``, drawn but not saved."""
    results_dir = Path(results_dir)
    table = load_results(results_dir)
    style = Style.of(results_dir, table)
    drawn = {
        "cost_vs_sla": _cost_vs_sla(table, style),
        "workers_vs_load": _workers_vs_load(results_dir, table, style),
        "metrics_ci": _metrics_ci(table, style),
    }
    assert tuple(drawn) == FIGURES
    return drawn


def plot_results(results_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw the figures of an evaluation into ``out_dir`` (default ``RESULTS_DIR/plots``); return
    the files written. The one entry point of the plot command and of a training run's final
    evaluation, so that both write the same figures."""
    out = Path(out_dir) if out_dir is not None else Path(results_dir) / "plots"
    return [path for name, fig in figures(results_dir).items() for path in _save(fig, out, name)]


def _save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    paths = []
    for suffix in ("png", "svg"):
        path = out_dir / f"{name}.{suffix}"
        atomic_write(path, lambda tmp, s=suffix: fig.savefig(tmp, format=s, dpi=110, bbox_inches="tight"))
        paths.append(path)
    return paths


def _figure(width: float, height: float, layout: str | None = None) -> Figure:
    """A figure on the Agg canvas; ``layout="constrained"`` fits titles and twin axes' labels."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def focus_planners(style: Style) -> list[str]:
    """The planners the comparison is about: the reference (best baseline), and every planner
    that is no baseline (learned planners, the clairvoyant bound)."""
    return [p for p in style.planners if p == style.reference or p.partition(":")[0] not in BASELINES]


def _cost_vs_sla(table: pd.DataFrame, style: Style) -> Figure:
    """Every episode as a point on the left; on the right, a zoom on the focus planners."""
    fig = _figure(12.0, 4.8, "constrained")
    full, zoom = fig.subplots(1, 2)
    full.set_label("all")
    zoom.set_label("zoom")
    focus = focus_planners(style)
    for planner, group in table.groupby("planner", sort=False):
        for ax, size, alpha in ((full, 18, 0.6), (zoom, 14, 0.3)):
            ax.scatter(
                group.sla_violation_rate,
                group.cost,
                s=size,
                alpha=alpha,
                color=style.colours[planner],
                marker=style.markers[planner],
                label=style.names[planner] if ax is full else None,
            )
        full.scatter(
            group.sla_violation_rate.mean(),
            group.cost.mean(),
            s=110,
            marker=style.markers[planner],
            color=style.colours[planner],
            edgecolor="black",
            zorder=3,
        )
    for planner in focus:
        _mean_with_ci(zoom, table[table.planner == planner], style, planner)
    limits = _zoom_limits(table[table.planner.isin(focus)])
    if limits is not None:
        (x0, x1), (y0, y1) = limits
        zoom.set_xlim(x0, x1)
        zoom.set_ylim(y0, y1)
        full.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=0.8, ec="0.35"))
    _label_means(full, table, style, [p for p in style.planners if p not in focus])
    _label_means(zoom, table, style, focus)
    for ax in (full, zoom):
        ax.set_xlabel("SLA violation rate")
        ax.set_ylabel("cost per episode")
    full.set_title("every episode (large marker: planner mean)", fontsize=9)
    zoom.set_title(f"zoom (dashed box): {', '.join(style.names[p] for p in focus)}; mean and 95% CI", fontsize=9)
    full.legend(fontsize=8)
    fig.suptitle(f"Cost against SLA violations, per episode\n{style.headline}", fontsize=11)
    return fig


def _mean_with_ci(ax: Axes, group: pd.DataFrame, style: Style, planner: str) -> None:
    """A planner's mean point with the 95% bootstrap CI of each coordinate as error bars."""
    x, y = group.sla_violation_rate.dropna().to_numpy(), group.cost.dropna().to_numpy()
    if not len(x) or not len(y):
        return
    (xl, xh), (yl, yh) = bootstrap_ci(x), bootstrap_ci(y)
    ax.errorbar(
        x.mean(),
        y.mean(),
        xerr=[[x.mean() - xl], [xh - x.mean()]],
        yerr=[[y.mean() - yl], [yh - y.mean()]],
        marker=style.markers[planner],
        ms=9,
        color=style.colours[planner],
        mec="black",
        capsize=3,
        zorder=3,
        label=planner,
    )


def _label_means(ax: Axes, table: pd.DataFrame, style: Style, planners: list[str]) -> None:
    """Each planner's short name beside its mean point: towards the middle of the axes (a label
    at an edge would be cut off), neighbours in cost order alternately above and below (two
    close means' labels part). Call after the axes' limits are final."""
    means = table[table.planner.isin(planners)].groupby("planner", sort=False)[["sla_violation_rate", "cost"]].mean()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for i, (planner, row) in enumerate(means.sort_values("cost").iterrows()):
        left = row.sla_violation_rate > (x0 + x1) / 2
        height = (row.cost - y0) / (y1 - y0) if y1 > y0 else 0.5
        below = height > 0.85 or (height >= 0.15 and i % 2 == 1)
        ax.annotate(
            style.names[str(planner)],
            (row.sla_violation_rate, row.cost),
            xytext=(-10 if left else 10, -16 if below else 10),
            textcoords="offset points",
            ha="right" if left else "left",
            fontsize=8,
            zorder=4,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": style.colours[str(planner)], "alpha": 0.9},
            arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.3"},
        )


def _zoom_limits(points: pd.DataFrame) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The box around every episode of ``points`` (SLA rate, cost), with a margin; None without one."""
    x = points.sla_violation_rate.to_numpy(dtype=float)
    y = points.cost.to_numpy(dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if not len(x) or not len(y):
        return None
    return _padded(x), _padded(y)


def _padded(values: np.ndarray) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    pad = 0.08 * (high - low) or 0.05 * abs(high) or 0.01
    return low - pad, high + pad


def _episode_seeds(table: pd.DataFrame, planners: list[str]) -> dict[str, int]:
    """The seed each planner's panel shows: the first seed every planner ran (the same
    arrivals in every panel), or each planner's own first seed when they share none."""
    seeds = [set(table.seed[table.planner == p]) for p in planners]
    shared = set.intersection(*seeds) if seeds else set()
    return {p: int(min(shared or s)) for p, s in zip(planners, seeds, strict=True)}


def _workers_vs_load(results_dir: Path, table: pd.DataFrame, style: Style) -> Figure:
    """One panel per planner: the arrival rate and the pool over one seed's episode, every
    panel on the same arrival and worker scales (shared axes, both from zero)."""
    planners = style.planners
    seeds = _episode_seeds(table, planners)
    fig = _figure(8.0, 1.9 * len(planners) + 0.8, "constrained")
    axes = np.atleast_1d(fig.subplots(len(planners), 1, sharex=True, sharey=True))
    twins: list[Axes] = []
    for ax, planner in zip(axes, planners, strict=True):
        series = episode_series(results_dir, planner, seeds[planner])
        twin = ax.twinx()
        if twins:
            twin.sharey(twins[0])
        twins.append(twin)
        ax.set_label(f"arrivals:{planner}")
        twin.set_label(f"workers:{planner}")
        (arrivals,) = ax.plot(series.time, series.arrival_rate, color="0.55", lw=1)
        (workers,) = twin.step(series.time, series.workers, where="pre", color=style.colours[planner], lw=1.4)
        twin.legend(
            [arrivals, workers],
            ["arrivals/s", f"{style.names[planner]}: workers"],
            loc="lower left",
            fontsize=7,
            framealpha=0.85,
        )
        ax.set_ylabel("arrivals/s", fontsize=8)
        twin.set_ylabel("workers", fontsize=8)
        ax.set_title(f"{style.names[planner]} (seed {seeds[planner]})", fontsize=9)
    axes[0].set_ylim(bottom=0)
    twins[0].set_ylim(bottom=0)
    axes[-1].set_xlabel("simulated s")
    shown = sorted(set(seeds.values()))
    episode = f"seed {shown[0]}" if len(shown) == 1 else f"seeds {', '.join(map(str, shown))}"
    fig.suptitle(f"Arrival rate and total worker target over one episode ({episode})\n{style.headline}", fontsize=11)
    return fig


def paired_difference(table: pd.DataFrame, planner: str, reference: str, metric: str) -> tuple[float, float, float]:
    """Mean of ``planner``'s ``metric`` minus ``reference``'s, seed by seed, with its 95%
    t-interval: the statistics of ``paired.csv`` (evaluation's ``_paired``) for any metric.
    NaN without a shared seed; a NaN interval with one shared seed."""
    own = table[table.planner == planner].set_index("seed")[metric].dropna()
    ref = table[table.planner == reference].set_index("seed")[metric].dropna()
    stats = _paired(own, ref)
    return stats["cost_diff_mean"], stats["cost_diff_ci_low"], stats["cost_diff_ci_high"]


def _signed(value: float) -> str:
    """A difference as a label: whole numbers with thousands separators when large."""
    return f"{value:+,.0f}" if abs(value) >= 1000 else f"{value:+.3g}"


def _metrics_ci(table: pd.DataFrame, style: Style) -> Figure:
    """Per metric, each planner's paired difference to the reference with its 95% interval."""
    # A metric that is zero everywhere (no escapes without validation) would be an empty panel.
    metrics = [m for m in METRIC_LABELS if m in table.columns and table[m].abs().sum() > 0]
    others = [p for p in style.planners if p != style.reference]
    fig = _figure(max(3.2 * len(metrics), 6.0), 4.0, "constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, metric in zip(axes, metrics, strict=True):
        ax.set_label(f"metric:{metric}")
        ax.axhline(0.0, color="black", lw=0.8)
        for x, planner in enumerate(others):
            mean, low, high = paired_difference(table, planner, style.reference, metric)
            error = [[mean - low], [high - mean]] if np.isfinite(low) and np.isfinite(high) else None
            ax.errorbar(
                x,
                mean,
                yerr=error,
                marker=style.markers[planner],
                ms=7,
                capsize=4,
                color=style.colours[planner],
                label=planner,
            )
            if np.isfinite(mean):
                ax.annotate(
                    _signed(mean), (x, mean), xytext=(7, 0), textcoords="offset points", va="center", fontsize=7
                )
        ax.set_xticks(range(len(others)), [style.names[p] for p in others], rotation=45, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(others) - 0.4)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
    reference = style.names[style.reference]
    axes[0].set_ylabel(f"minus {reference} (below 0: less than {reference})", fontsize=8)
    what = "the best baseline" if style.reference_is_baseline else "the cheapest planner; no baseline was evaluated"
    fig.suptitle(
        f"Difference to {reference} ({what}): mean and 95% CI of per-seed differences\n{style.headline}", fontsize=11
    )
    return fig

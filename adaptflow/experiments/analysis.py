"""Analysis of a training run and of an evaluation: tables and figures for the notebook
(``notebooks/analyze_policies.ipynb``) and the command line.

Every function takes a directory (a run directory of :mod:`.training`, a results directory of
:mod:`.evaluation`) or a frame made by another function here, and returns a pandas DataFrame or
a matplotlib Figure (the object API on the Agg canvas, as :mod:`.plots`: no pyplot state, no
display needed). Nothing here writes into the directories it reads.

* how training went: :func:`learning_curves` (validation cost against steps, the baselines'
  levels, the training reward from the TensorBoard logs);
* how planners differ on one episode: :func:`side_by_side` (one column per planner, every row
  on one y scale);
* what a policy does: :func:`decision_table` (what it saw and chose at every decision, read from
  the event logs), :func:`feature_ranking` and :func:`policy_map` (its action against the
  features it follows), :func:`feature_sensitivity` (how its action moves when one observed
  feature is perturbed, through the exported ONNX planner or the SB3 model);
* what went wrong: :func:`forecast_error` (the forecast it was given, the load it met, the
  workers it chose), :func:`worst_episodes` (episodes ranked by cost against the best baseline
  on the same seed, with what happened in them);
* what else could have happened: :func:`what_if` (one seed rerun with the planner swapped at a
  chosen time; identical up to the swap).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import logging
import math
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from adaptflow.agents import CostWeights, Planner
from adaptflow.agents.analyzers import StandardAnalyzer
from adaptflow.agents.coordinator import read_event_log
from adaptflow.agents.encoding import ActionDecoder, Feature, ObservationEncoder
from adaptflow.agents.fitting import analyzer_for
from adaptflow.agents.types import Insights, MetricsSnapshot, Plan, StageMetrics
from adaptflow.policies.registry import BASELINES, LEARNED, make_planner, parse_planner, split_label
from adaptflow.scenario import Scenario, load_scenario

from .evaluation import SEES_THE_FUTURE, _label, episode_scenario, run_episode, scenario_part
from .plots import _figure, episode_series, load_results

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Where things are


def repo_root(start: str | Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: the working directory) holding a
    ``pyproject.toml``: Jupyter starts a notebook in ``notebooks/``, ``make demo`` writes ``runs/``
    at the top of the repository."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return here


def latest_run(runs: str | Path, name: str = "quickstart") -> Path | None:
    """The newest run directory ``runs/<name>/<timestamp>/`` (timestamps sort in time order),
    or None when there is none (``make demo`` has not been run)."""
    found = sorted(p.parent for p in Path(runs, name).glob("*/config.yaml"))
    return found[-1] if found else None


def evaluation_dir(run_dir: str | Path) -> Path | None:
    """A run's final evaluation (``RUN_DIR/evaluation``; for a mixture of workloads, its first
    scenario's directory), or None when the run has none."""
    root = Path(run_dir) / "evaluation"
    if (root / "results.parquet").is_file():
        return root
    found = sorted(p.parent for p in root.glob("*/results.parquet"))
    return found[0] if found else None


def evaluation_settings(results_dir: str | Path) -> dict[str, Any]:
    """The settings an evaluation recorded (``evaluation.json``; empty if it has none)."""
    path = Path(results_dir) / "evaluation.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def planner_specs(results_dir: str | Path) -> dict[str, str]:
    """Each planner's spec by its label, as the evaluation ran it (``ppo`` ->
    ``ppo@sb3:/abs/runs/.../best_model.zip``): what :func:`what_if` rebuilds it from. A learned
    planner's model path is made absolute (see :func:`_resolved`)."""
    specs = evaluation_settings(results_dir).get("planners", [])
    return {split_label(s)[0]: _resolved(s, Path(results_dir)) for s in specs}


def _resolved(spec: str, results_dir: Path) -> str:
    """``spec`` with a learned planner's path made absolute. An evaluation records the path as
    it was given, relative to where the command ran (the repository, for ``make demo``), and a
    notebook runs in ``notebooks/``: the path is looked for as given, then from the repository
    holding the results, then, by its file name, in the run directory holding the results (a run
    copied or moved elsewhere)."""
    name, params = parse_planner(spec)
    if name not in LEARNED:
        return spec
    path = Path(params["path"])
    runs = [p for p in results_dir.resolve().parents if (p / "config.yaml").is_file()]
    candidates = [path, repo_root(results_dir) / path, *(run / path.name for run in runs[:1])]
    found = next((c.resolve() for c in candidates if c.exists()), path)
    label, at, _ = spec.partition("@")
    return f"{label}@{name}:{found}" if at else f"{name}:{found}"


def learned_labels(results_dir: str | Path) -> list[str]:
    """The labels of the learned planners (``sb3:``, ``onnx:``) an evaluation ran."""
    specs = evaluation_settings(results_dir).get("planners", [])
    return [split_label(s)[0] for s in specs if parse_planner(s)[0] in LEARNED]


def run_scenario(run_dir: str | Path, name: str | None = None) -> Scenario:
    """The scenario a run trained on, as its config names it, with the horizon the config sets:
    of a mixture, the one called ``name`` (default: the first)."""
    import yaml

    options = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["env"]["options"]
    listed = options.get("scenario", "etl_diurnal")
    specs = [
        load_scenario(s, horizon=options.get("horizon")) for s in (listed if isinstance(listed, list) else [listed])
    ]
    named = [s for s in specs if name is None or s.name == name]
    if not named:
        raise ValueError(f"run {str(run_dir)!r} trained on {[s.name for s in specs]}; no scenario {name!r}")
    return named[0]


def evaluated_scenario(results_dir: str | Path, run_dir: str | Path | None = None) -> Scenario:
    """The scenario an evaluation ran, to rerun its episodes (:func:`what_if`): the one its
    ``evaluation.json`` names, on the part of a recorded series it names, with the horizon its
    episodes ran to (the event logs' end, when it is not the named scenario's). With ``run_dir``, the
    run's own (:func:`run_scenario`: a config may shorten the horizon), and for the run's final
    evaluation (``results_dir`` inside ``run_dir``) the test part it was evaluated on."""
    settings = evaluation_settings(results_dir)
    if run_dir is None and "scenario" not in settings:
        raise ValueError(f"{str(results_dir)!r} has no evaluation.json naming its scenario; pass run_dir")
    if run_dir is None:
        spec = load_scenario(settings["scenario"])
        end, interval = _logged_end(results_dir), float(settings.get("interval", 30.0))
        if math.isfinite(end) and not spec.horizon <= end < spec.horizon + interval:
            spec = load_scenario(spec, horizon=end)  # evaluated with another horizon (from Python)
        return scenario_part(spec, settings.get("part"))
    spec = run_scenario(run_dir, settings.get("scenario"))
    final = Path(results_dir).resolve().is_relative_to(Path(run_dir).resolve())
    return spec.for_part("test", augment={}) if final else scenario_part(spec, settings.get("part"))


def _logged_end(results_dir: str | Path) -> float:
    """The simulated time the evaluation's episodes ended at (NaN without an event log)."""
    for path in sorted(Path(results_dir, "episodes").glob("*/seed_*.jsonl"))[:1]:
        records = read_event_log(path)
        return float(records[-1]["time"]) if records else math.nan
    return math.nan


def export_for(run_dir: str | Path) -> Path:
    """A run's exported planner (``RUN_DIR/export/planner.onnx``), exported now if it is not yet
    (as ``adaptflow export RUN_DIR`` does: the export needs torch, the deployed planner not)."""
    path = Path(run_dir) / "export" / "planner.onnx"
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    from adaptflow.runtime.export import export_run

    return export_run(run_dir)


def wrapped(label: str, width: int = 30) -> str:
    """A planner label over lines of ``width`` characters, broken after its parameters' commas
    (``quality:staffing=planned,high=0.2,...`` would run over its neighbours' panels)."""
    return textwrap.fill(label.replace(",", ", "), width).replace(", ", ",")


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes: ``display(Image(to_png(fig)))`` shows it in a notebook whatever
    the matplotlib backend (a bare Figure shows as text where no inline backend is active)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Learning curves


def validation_curve(run_dir: str | Path) -> pd.DataFrame:
    """The run's validation cost (mean over its validation episodes) at each validation step."""
    path = Path(run_dir) / "validation.csv"
    if not path.is_file():
        raise ValueError(f"{str(run_dir)!r} has no validation.csv; expected a training run directory")
    return pd.read_csv(path)


def baseline_levels(run_dir: str | Path) -> pd.DataFrame:
    """Each planner of the run's final evaluation but the learned one, with its mean cost on the
    evaluation seeds (averaged over scenarios for a mixture, as validation averages them): the
    levels the policy must beat. ``kind``: "bound" for a planner that sees the future (the
    clairvoyant), else "baseline". Empty when the run has no final evaluation."""
    frames = []
    for summary in sorted(Path(run_dir, "evaluation").rglob("summary.csv")):
        table = pd.read_csv(summary)
        learned = learned_labels(summary.parent)
        frames.append(table.loc[~table.planner.isin(learned), ["planner", "cost_mean"]])
    if not frames:
        return pd.DataFrame(columns=["planner", "cost", "kind"])
    levels = pd.concat(frames).groupby("planner", sort=False)["cost_mean"].mean().rename("cost").reset_index()
    levels["kind"] = np.where(levels.planner.isin(SEES_THE_FUTURE), "bound", "baseline")
    return levels


def training_rewards(run_dir: str | Path, tag: str = "rollout/ep_rew_mean") -> pd.DataFrame:
    """A scalar of SB3's TensorBoard logs (default: the mean reward of the last 100 training
    episodes) against steps, over every segment of a resumed run (``tensorboard/run_<n>``); the
    later segment wins a step logged twice. Empty, with a warning, without tensorboard (it comes
    with ``adaptflow[train]``) or without logs."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        log.warning("tensorboard is not installed (pip install 'adaptflow[train]'): no training rewards")
        return pd.DataFrame(columns=["step", "value"])
    rows = []
    for segment in sorted(Path(run_dir, "tensorboard").glob("*/"), key=lambda p: (len(p.name), p.name)):
        accumulator = EventAccumulator(str(segment))
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            rows += [{"step": e.step, "value": e.value} for e in accumulator.Scalars(tag)]
    frame = pd.DataFrame(rows, columns=["step", "value"])
    return frame.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def learning_curves(run_dir: str | Path) -> Figure:
    """Left: validation cost against steps (the best model's point starred), each baseline's
    evaluation cost as a horizontal line. Right: the training episodes' reward from TensorBoard.
    Validation and evaluation seeds differ: the lines are levels, not paired comparisons."""
    curve, levels, rewards = validation_curve(run_dir), baseline_levels(run_dir), training_rewards(run_dir)
    fig = _figure(11, 3.8)
    left, right = fig.subplots(1, 2)
    left.plot(curve.timesteps, curve.cost, marker="o", color="C0", label="policy (validation seeds)")
    best = curve.loc[curve.cost.idxmin()]
    left.scatter([best.timesteps], [best.cost], marker="*", s=160, color="C0", edgecolor="black", zorder=3)
    for k, row in enumerate(levels.itertuples()):
        left.axhline(
            row.cost, ls="--", lw=1, color=f"C{(k + 1) % 10}", label=f"{wrapped(row.planner, 40)} ({row.kind})"
        )
    title = "validation cost (star: best model; dashed: on the evaluation seeds)"
    left.set(xlabel="training steps", ylabel="cost per episode", title=title)
    left.legend(fontsize=7)
    if rewards.empty:
        right.text(0.5, 0.5, "no TensorBoard reward logged", ha="center", va="center", transform=right.transAxes)
    right.plot(rewards.step, rewards.value, color="C0")
    right.set(xlabel="training steps", ylabel="mean episode reward", title="training reward (last 100 episodes)")
    return fig


# ---------------------------------------------------------------------------------------------
# One episode, planners side by side


SIDE_BY_SIDE_ROWS = ("arrivals/s", "workers", "queue", "SLA violations / interval")


def side_by_side(results_dir: str | Path, seed: int, planners: list[str] | None = None) -> Figure:
    """One column per planner over the same episode (seed): arrivals and forecast, workers per
    stage, items queued, SLA violations per interval. Each row shares its y axis across the
    columns, so a taller curve is a larger value, not another scale."""
    planners = planners if planners is not None else list(dict.fromkeys(load_results(results_dir).planner))
    fig = _figure(3.2 * len(planners) + 0.8, 8.5)
    axes = np.asarray(fig.subplots(len(SIDE_BY_SIDE_ROWS), len(planners), sharex=True, sharey="row", squeeze=False))
    for column, planner in enumerate(planners):
        series = episode_series(results_dir, planner, seed)
        top, pools, queue, late = axes[:, column]
        top.plot(series.time, series.arrival_rate, color="0.4", lw=1, label="arrivals")
        top.plot(series.time, series.forecast, color="C1", lw=1, ls="--", label="forecast")
        for k, stage in enumerate(c for c in series.columns if c.startswith("workers.")):
            pools.step(series.time, series[stage], where="pre", color=f"C{k}", label=stage.split(".", 1)[1])
        queue.plot(series.time, series.queue, color="C3", lw=1)
        late.step(series.time, series.sla_violations, where="pre", color="C4")
        top.set_title(f"{wrapped(planner)} (seed {seed})", fontsize=9)
    for row, label in zip(axes, SIDE_BY_SIDE_ROWS, strict=True):
        row[0].set_ylabel(label, fontsize=8)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("simulated s")
    return fig


# ---------------------------------------------------------------------------------------------
# What a policy saw and chose


def _with_nan(data: dict[str, Any], cls: type) -> dict[str, Any]:
    """A logged dataclass's fields (unknown keys dropped), JSON's null back to NaN."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: (math.nan if v is None else v) for k, v in data.items() if k in names}


def snapshot_of(metrics: dict[str, Any]) -> MetricsSnapshot:
    """An event log's ``metrics`` record back as the MetricsSnapshot the planner read."""
    stages = {name: StageMetrics(**_with_nan(st, StageMetrics)) for name, st in metrics["stages"].items()}
    return MetricsSnapshot(**{**_with_nan(metrics, MetricsSnapshot), "stages": stages})


def insights_of(insights: dict[str, Any]) -> Insights:
    """An event log's ``insights`` record back as Insights."""
    return Insights(**_with_nan(insights, Insights))


def episode_seeds(results_dir: str | Path, planner: str) -> list[int]:
    """The seeds whose event log ``planner`` has in the results directory."""
    folder = Path(results_dir) / "episodes" / _label(planner)
    seeds = sorted(int(p.stem.removeprefix("seed_")) for p in folder.glob("seed_*.jsonl"))
    if not seeds:
        raise ValueError(f"no event logs for planner {planner!r} in {str(folder)!r}")
    return seeds


def _decisions(
    results_dir: str | Path, planner: str, seeds: list[int] | None
) -> Iterator[tuple[int, dict[str, Any], MetricsSnapshot, Insights]]:
    """Each logged decision as the planner met it: (seed, its record, the snapshot it read, the
    insights it read). A record holds the decision's insights and plan with the snapshot of the
    interval that *followed*; the snapshot a decision read is the previous record's, so the
    first decision of an episode (on the empty initial snapshot, not logged) is left out."""
    for seed in seeds if seeds is not None else episode_seeds(results_dir, planner):
        path = Path(results_dir) / "episodes" / _label(planner) / f"seed_{seed}.jsonl"
        records = read_event_log(path)
        for before, record in itertools.pairwise(records):
            yield seed, record, snapshot_of(before["metrics"]), insights_of(record["insights"])


STAGE_FEATURES = ("queue", "wait", "util", "target", "active", "starting", "stage_rate")


def raw_encoder(record: dict[str, Any]) -> ObservationEncoder:
    """The observed features of a logged decision in their own units (items, seconds, items/s),
    named as the encoder names them (``queue:transform``, ``forecast:events:0``): the one
    encoder's expressions with scale 1 and no clipping."""
    metrics, insights = record["metrics"], record["insights"]
    names = [f"{kind}:{stage}" for stage in metrics["stages"] for kind in STAGE_FEATURES]
    for source, forecasts in insights["forecasts"].items():
        names += [f"rate:{source}", *(f"forecast:{source}:{k}" for k in range(len(forecasts)))]
    names += [f"split:{owner}" for owner in metrics["splits"]]
    names += ["bad_rate:", "drift:"] if insights.get("bad_rate") is not None else []
    names.append("sla_violations:")
    return ObservationEncoder([Feature(n, 1.0, -math.inf, math.inf) for n in names], 1.0, 1.0)


def _action_columns(plan: dict[str, Any], snapshot: MetricsSnapshot) -> dict[str, float]:
    """A logged plan as numbers: each stage's worker target (a stage left out keeps its pool),
    their total, and each split's share to its last branch."""
    workers = {s: plan["workers"].get(s, st.target) for s, st in snapshot.stages.items()}
    shares = {f"split.{o}": list(p.values())[-1] for o, p in plan["splits"].items() if p}
    return {**{f"workers.{s}": float(w) for s, w in workers.items()}, "workers": float(sum(workers.values())), **shares}


def decision_table(results_dir: str | Path, planner: str, seeds: list[int] | None = None) -> pd.DataFrame:
    """One row per logged decision of ``planner``: seed, time, every observed feature in its own
    units (columns named as the encoder's features, see :func:`raw_encoder`) and the action
    (``workers.<stage>``, ``workers``, ``split.<owner>``)."""
    rows, encoder = [], None
    for seed, record, snapshot, insights in _decisions(results_dir, planner, seeds):
        encoder = encoder or raw_encoder(record)
        values = encoder.encode(snapshot, insights).astype(float)
        features = dict(zip((f.name for f in encoder.features), values, strict=True))
        rows.append(
            {"seed": seed, "time": record["decision_time"], **features, **_action_columns(record["plan"], snapshot)}
        )
    return pd.DataFrame(rows)


def encoded_observations(
    results_dir: str | Path, planner: str, encoder: ObservationEncoder, seeds: list[int] | None = None
) -> np.ndarray:
    """The logged decisions of ``planner`` encoded with ``encoder`` (a learned planner's own):
    the observations its policy met, to probe it with :func:`feature_sensitivity`."""
    rows = [encoder.encode(snapshot, insights) for _, _, snapshot, insights in _decisions(results_dir, planner, seeds)]
    if not rows:
        raise ValueError(f"planner {planner!r} logged no decision after the first in {str(results_dir)!r}")
    return np.stack(rows)


def _feature_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if ":" in c]


def feature_ranking(table: pd.DataFrame, action: str = "workers") -> pd.DataFrame:
    """The observed features of a :func:`decision_table` ranked by how closely ``action``
    follows them (absolute Spearman rank correlation; a constant feature is left out). A
    correlation, not a cause: :func:`feature_sensitivity` asks the policy itself."""
    if action not in table.columns:
        raise ValueError(f"action {action!r} is not a column; expected one of {[c for c in table if '.' in c]}")
    features = [c for c in _feature_columns(table) if table[c].nunique() > 1]
    rho = table[features].corrwith(table[action], method="spearman") if features else pd.Series(dtype=float)
    frame = pd.DataFrame({"feature": rho.index, "spearman": rho.to_numpy()}).dropna()
    order = frame.spearman.abs().sort_values(ascending=False, kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def map_features(
    table: pd.DataFrame, sensitivity: pd.DataFrame | None = None, action: str = "workers", k: int = 2
) -> list[str]:
    """The ``k`` features to draw a policy map over: those the policy is most sensitive to
    (:func:`feature_sensitivity`, when given) that vary in the decision table, then those its
    action follows most closely (:func:`feature_ranking`)."""
    ranked = list(sensitivity.loc[sensitivity.effect > 0, "feature"]) if sensitivity is not None else []
    ranked += list(feature_ranking(table, action).feature)
    return [f for f in dict.fromkeys(ranked) if f in table.columns and table[f].nunique() > 1][:k]


def policy_map(table: pd.DataFrame, action: str = "workers", features: list[str] | None = None) -> Figure:
    """The action against the two or three observed features it depends on most (default: the
    top of :func:`map_features`): one panel per pair (first feature, another), every decision
    a point coloured by the action, one colour scale and bar for all panels."""
    features = features if features is not None else map_features(table, action=action)
    if not 2 <= len(features) <= 3 or any(f not in table.columns for f in features):
        raise ValueError(f"features: {features!r}; expected 2 or 3 columns of the decision table")
    pairs = [(features[0], other) for other in features[1:]]
    fig = _figure(4.6 * len(pairs) + 1.2, 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(pairs)))
    low, high = float(table[action].min()), float(table[action].max())
    for ax, (x, y) in zip(axes, pairs, strict=True):
        points = ax.scatter(table[x], table[y], c=table[action], cmap="viridis", vmin=low, vmax=high, s=14, alpha=0.8)
        ax.set(xlabel=x, ylabel=y)
    fig.colorbar(points, ax=list(axes), label=action)
    fig.suptitle(f"policy map: {action} by what was observed", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# Sensitivity of a learned policy


def _act(planner: Any, observations: np.ndarray) -> np.ndarray:
    """The policy's deterministic actions (one row per raw observation): an OnnxPlanner's
    ``act``, or an SB3Planner's model on the observations normalized as it was trained."""
    if hasattr(planner, "act"):
        return np.asarray(planner.act(observations)).reshape(len(observations), -1)
    if hasattr(planner, "model") and hasattr(planner, "observation"):
        batch = observations if planner.normalizer is None else planner.normalizer(observations)
        actions, _ = planner.model.predict(batch, deterministic=True)
        return np.asarray(actions).reshape(len(observations), -1)
    raise ValueError(f"{type(planner).__name__} is not a learned planner; expected an OnnxPlanner or SB3Planner")


def _perturbed(
    observations: np.ndarray, j: int, feature: Feature, method: str, step: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Copies of ``observations`` with feature ``j`` permuted across them, or shifted by
    ``±step`` (in encoded units, within the feature's clip range)."""
    if method == "permutation":
        shuffled = observations.copy()
        shuffled[:, j] = rng.permutation(observations[:, j])
        return [shuffled]
    shifted = []
    for sign in (1.0, -1.0):
        moved = observations.copy()
        moved[:, j] = np.clip(observations[:, j] + sign * step, feature.low, feature.high)
        shifted.append(moved)
    return shifted


def _worker_units(decoder: ActionDecoder) -> np.ndarray:
    """Workers per step of each action dimension (0 for a split's)."""
    if decoder.mode == "delta":
        per_stage = [float(decoder.scale_step)] * len(decoder.stages)
    else:
        per_stage = [(hi - lo) / (decoder.worker_levels - 1) for lo, hi in decoder.stages.values()]
    return np.array(per_stage + [0.0] * len(decoder.splits))


def feature_sensitivity(
    planner: Any,
    observations: np.ndarray,
    method: Literal["permutation", "difference"] = "permutation",
    step: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """How the policy's action moves when one observed feature is perturbed, the others held,
    ranked. ``planner``: an OnnxPlanner (or SB3Planner); ``observations``: raw encoded ones it
    met (:func:`encoded_observations`). ``method``: permute the feature across the observations
    (its importance at the states the policy visits), or shift it by ``±step`` encoded units.

    Columns: ``effect``, the mean over observations of the action change summed over action
    dimensions, each in its share of the dimension's range (0: never moves); ``workers``, the
    mean change of the worker targets in workers; ``changed``, the share of decisions whose
    action changed at all."""
    obs = np.asarray(observations, dtype=np.float32)
    if obs.ndim != 2 or len(obs) < 2 or obs.shape[1] != planner.encoder.size:
        raise ValueError(f"observations of shape {obs.shape}; expected (n >= 2, {planner.encoder.size})")
    if method not in ("permutation", "difference"):
        raise ValueError(f"method: {method!r}; expected 'permutation' or 'difference'")
    base, rng = _act(planner, obs), np.random.default_rng(seed)
    spans = np.maximum(np.asarray(planner.decoder.nvec, dtype=float) - 1, 1)
    units = _worker_units(planner.decoder)
    rows = []
    for j, feature in enumerate(planner.encoder.features):
        changes = [np.abs(_act(planner, x) - base) for x in _perturbed(obs, j, feature, method, step, rng)]
        change = np.mean(changes, axis=0)
        rows.append(
            {
                "feature": feature.name,
                "effect": float((change / spans).sum(axis=1).mean()),
                "workers": float((change * units).sum(axis=1).mean()),
                "changed": float(np.mean([np.any(c > 0, axis=1).mean() for c in changes])),
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values(["effect", "changed"], ascending=False, kind="stable").reset_index(drop=True)


def sensitivity_figure(sensitivity: pd.DataFrame, top: int = 12) -> Figure:
    """The ``top`` features of :func:`feature_sensitivity` as horizontal bars, the strongest on
    top, each labelled with the share of decisions it changed."""
    shown = sensitivity.head(top).iloc[::-1]
    fig = _figure(7, 0.32 * len(shown) + 1.4)
    ax = fig.subplots()
    bars = ax.barh(shown.feature, shown.effect, color="C0")
    ax.bar_label(bars, labels=[f"{c:.0%}" for c in shown.changed], fontsize=7, padding=2)
    ax.set(xlabel="mean action change (share of each dimension's range)", title="what moves the policy")
    ax.tick_params(axis="y", labelsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# Forecast error against what the policy did


def forecast_error(results_dir: str | Path, planner: str, seed: int) -> pd.DataFrame:
    """Per decision of one episode: the forecast the planner was given for the next interval
    (summed over sources), the arrival rate that interval then had, the error (forecast minus
    real; negative: the load was underestimated) and the workers the planner set. The first
    decision is left out: it is made before any arrival was seen, on a forecast of nothing
    (an EWMA's 0), which would otherwise always be the worst miss."""
    series = episode_series(results_dir, planner, seed).iloc[1:].reset_index(drop=True)
    frame = series[["time", "forecast", "arrival_rate", "workers"]].copy()
    frame["error"] = frame.forecast - frame.arrival_rate
    return frame


def forecast_error_figure(frame: pd.DataFrame, title: str = "") -> Figure:
    """Top: the forecast against the real arrival rate, the underestimated stretches shaded,
    the worst one marked. Bottom, same time axis: the workers chosen. A policy that follows a
    forecast down while the load stays up shows as workers falling in a shaded stretch."""
    fig = _figure(9, 5.2)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    top.plot(frame.time, frame.arrival_rate, color="0.3", lw=1.2, label="real arrivals/s")
    top.plot(frame.time, frame.forecast, color="C1", lw=1.2, ls="--", label="forecast given to the planner")
    under = (frame.error < 0).to_numpy()
    top.fill_between(frame.time, frame.forecast, frame.arrival_rate, where=under, color="C3", alpha=0.25, lw=0)
    worst = frame.loc[frame.error.idxmin()]
    note = (
        f"t={worst.time:.0f} s: forecast {worst.forecast:.1f}/s, real {worst.arrival_rate:.1f}/s, "
        f"{worst.workers:.0f} workers"
    )
    top.annotate(note, (worst.time, worst.arrival_rate), xytext=(0.02, 0.92), textcoords="axes fraction",
                 fontsize=8, arrowprops={"arrowstyle": "->", "color": "C3"})  # fmt: skip
    top.set(ylabel="items/s", title=title or "forecast against real load")
    top.legend(fontsize=7, loc="lower right")
    bottom.step(frame.time, frame.workers, where="pre", color="C0")
    bottom.axvline(worst.time, color="C3", lw=0.8, ls=":")
    bottom.set(xlabel="simulated s", ylabel="workers (all stages)")
    return fig


# ---------------------------------------------------------------------------------------------
# The worst episodes


def _window(calendar: float) -> str:
    """A series' calendar second as ``day D HH:MM`` (empty when the load has no calendar)."""
    if not math.isfinite(calendar):
        return ""
    day, second = divmod(calendar, 86_400)
    return f"day {int(day)} {int(second // 3600):02d}:{int(second % 3600 // 60):02d}"


def _calendar_start(metrics: list[dict[str, Any]]) -> float:
    """The load's calendar second at t=0, from two snapshots (``calendar = start + speed * t``:
    a recorded series runs faster than simulated time); NaN when the load has no calendar."""
    calendars = [m.get("calendar") for m in metrics]
    if len(metrics) < 2 or any(c is None for c in calendars):
        return math.nan
    (c0, c1), (t0, t1) = calendars, (metrics[0]["time"], metrics[1]["time"])
    return float(c0 - (c1 - c0) / (t1 - t0) * t0)


def episode_digest(results_dir: str | Path, planner: str, seed: int) -> dict[str, Any]:
    """What happened in one episode, from its event log: the peak arrival rate, the longest
    queue, the forecast's mean absolute error, and for a recorded series the window it ran on
    (the series' calendar second at the episode's start, and as ``day D HH:MM``)."""
    series = episode_series(results_dir, planner, seed)
    path = Path(results_dir) / "episodes" / _label(planner) / f"seed_{seed}.jsonl"
    with path.open() as f:
        start = _calendar_start([json.loads(line)["metrics"] for line, _ in zip(f, range(2), strict=False)])
    return {
        "peak_rate": float(series.arrival_rate.max()),
        "max_queue": int(series.queue.max()),
        "forecast_mae": float((series.forecast - series.arrival_rate).abs().mean()),
        "window_start": start,
        "window": _window(start),
    }


WORST_COLUMNS = ["sla_violation_rate", "p95_latency", "mean_workers", "drops", "takeovers"]


def worst_episodes(results_dir: str | Path, n: int = 5, planners: list[str] | None = None) -> pd.DataFrame:
    """The ``n`` episodes that cost most relative to the best baseline on the same seed
    (``ratio`` = cost / the lowest baseline cost on that seed), worst first, with their key
    metrics and what happened in them (:func:`episode_digest`). ``planners``: whose episodes to
    rank (default: all but the clairvoyant bound)."""
    table = load_results(results_dir)
    baselines = table[table.planner.map(lambda p: p.partition(":")[0] in BASELINES)]
    if baselines.empty:
        raise ValueError(f"{str(results_dir)!r} has no baseline ({', '.join(BASELINES)}) to compare with")
    best = baselines.loc[baselines.groupby("seed")["cost"].idxmin(), ["seed", "planner", "cost"]]
    best = best.rename(columns={"planner": "best_baseline", "cost": "baseline_cost"})
    chosen = planners if planners is not None else [p for p in table.planner.unique() if p not in SEES_THE_FUTURE]
    ranked = table[table.planner.isin(chosen)].merge(best, on="seed")
    ranked["ratio"] = ranked.cost / ranked.baseline_cost
    keep = [
        "planner",
        "seed",
        "cost",
        "best_baseline",
        "baseline_cost",
        "ratio",
        *(c for c in WORST_COLUMNS if c in ranked),
    ]
    worst = ranked.sort_values("ratio", ascending=False, kind="stable").head(n)[keep].reset_index(drop=True)
    digests = [episode_digest(results_dir, row.planner, int(row.seed)) for row in worst.itertuples()]
    return pd.concat([worst, pd.DataFrame(digests, index=worst.index)], axis=1)


# ---------------------------------------------------------------------------------------------
# What if: the planner swapped at a chosen time


class SwappedPlanner(Planner):
    """``first`` decides before ``at`` (simulated seconds), ``second`` from then on. ``second``'s
    own analyzer (``analyzer``; None: it reads ``first``'s insights) reads every snapshot from the
    start, as one running beside the system would, so its forecasts are warm at the swap;
    ``second`` itself starts fresh at the swap, as a planner deployed then would."""

    def __init__(self, first: Planner, second: Planner, at: float, analyzer: StandardAnalyzer | None = None):
        self.first, self.second, self.at, self.analyzer = first, second, at, analyzer
        self.relies_on_clamping = first.relies_on_clamping or second.relies_on_clamping

    def reset(self) -> None:
        self.first.reset()
        self.second.reset()
        if self.analyzer is not None:
            self.analyzer.reset()

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        own = self.analyzer.analyze(snapshot) if self.analyzer is not None else insights
        if snapshot.time < self.at - 1e-9:
            return self.first.plan(snapshot, insights)
        return self.second.plan(snapshot, own)


def _planner_for(spec: str, scenario: Scenario, seed: int, interval: float) -> tuple[Planner, StandardAnalyzer]:
    """A planner as evaluation builds it for this seed (the clairvoyant bound from the episode's
    own scenario), with its analyzer (fitted or carried), as a fresh copy."""
    label = split_label(spec)[0]
    planner, forecaster = make_planner(
        spec, episode_scenario(scenario, seed) if label in SEES_THE_FUTURE else scenario, interval
    )
    fitted = analyzer_for(planner, scenario, interval, forecaster)
    return planner, StandardAnalyzer.from_dict(fitted.to_dict(state=False))


def _logged_run(folder: Path, run: str, seed: int) -> pd.DataFrame:
    """One what-if episode's log as :func:`episode_series` reads it, with each decision's time,
    the workers its plan asked for (``planned``, before the safety envelope) and its cost."""
    series = episode_series(folder, run, seed)
    records = read_event_log(folder / "episodes" / run / f"seed_{seed}.jsonl")
    series.insert(0, "decision_time", [r["decision_time"] for r in records])
    series["planned"] = [sum(r["plan"]["workers"].values()) for r in records]
    series["cost"] = [r["cost"]["total"] for r in records]
    return series.assign(run=run)


def what_if(
    scenario: str | Path | Scenario,
    seed: int,
    first: str,
    second: str,
    at: float,
    interval: float = 30.0,
    weights: CostWeights | dict | None = None,
) -> pd.DataFrame:
    """Run one seed twice: ``first`` throughout (``run`` = "original"), and ``first`` until
    ``at`` then ``second`` (``run`` = "swapped", see :class:`SwappedPlanner`). The same seed
    draws the same arrivals and service times, so the two runs are identical up to the swap and
    differ only by what the swap changed. One row per decision and run: the columns of
    :func:`episode_series`, the decision time, the workers planned, the interval's cost, the run."""
    spec = load_scenario(scenario)
    if not 0 < at < spec.horizon:
        raise ValueError(f"at: {at!r}; expected a time inside the episode, (0, {spec.horizon:g}) s")
    weights = weights if isinstance(weights, CostWeights) else CostWeights(**(weights or {}))
    with tempfile.TemporaryDirectory(prefix="adaptflow-what-if-") as tmp:
        folder = Path(tmp)
        for run in ("original", "swapped"):
            planner, analyzer = _planner_for(first, spec, seed, interval)
            if run == "swapped":
                later, own = _planner_for(second, spec, seed, interval)
                planner = SwappedPlanner(planner, later, at, own)
            log_path = folder / "episodes" / run / f"seed_{seed}.jsonl"
            run_episode(spec, planner, seed, interval, weights, log_path=log_path, analyzer=analyzer)
        return pd.concat([_logged_run(folder, run, seed) for run in ("original", "swapped")], ignore_index=True)


def what_if_figure(frame: pd.DataFrame, at: float, title: str = "") -> Figure:
    """The two runs of :func:`what_if` overlaid: workers, queue and cumulative cost, the swap
    marked; the title gives each run's cost from the swap on."""
    fig = _figure(9, 6.5)
    axes = fig.subplots(3, 1, sharex=True)
    after = {}
    for run, colour in (("original", "0.45"), ("swapped", "C0")):
        part = frame[frame.run == run]
        axes[0].step(part.time, part.workers, where="pre", color=colour, label=run)
        axes[1].plot(part.time, part.queue, color=colour, lw=1)
        axes[2].plot(part.time, part.cost.cumsum(), color=colour)
        after[run] = part.loc[part.decision_time >= at - 1e-9, "cost"].sum()
    for ax, label in zip(axes, ("workers", "queue", "cumulative cost"), strict=True):
        ax.axvline(at, color="C3", ls=":", lw=1)
        ax.set_ylabel(label, fontsize=8)
    axes[0].legend(fontsize=7)
    axes[-1].set_xlabel("simulated s")
    costs = ", ".join(f"{run} {cost:,.0f}" for run, cost in after.items())
    fig.suptitle(title or f"swap at t={at:g} s; cost from the swap on: {costs}", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# The command line: ``adaptflow analyze RESULTS_DIR [--run RUN_DIR]``


def write_analysis(
    results_dir: str | Path, run_dir: str | Path | None = None, out: str | Path | None = None, seed: int | None = None
) -> list[Path]:
    """The notebook's analysis as files in ``out`` (default ``RESULTS_DIR/analysis``): the worst
    episodes (CSV), the worst episode's planners side by side, that planner's forecast error
    against what it did and its policy map; with ``run_dir``, the learning curves. (Feature
    sensitivity needs an exported planner: the notebook exports one, this command reads only.)"""
    from .io import atomic_write_text
    from .plots import _save

    results_dir = Path(results_dir)
    out_dir = Path(out) if out is not None else results_dir / "analysis"
    worst = worst_episodes(results_dir)
    written = [atomic_write_text(out_dir / "worst_episodes.csv", worst.to_csv(index=False))]
    planner, seed = str(worst.planner.iloc[0]), int(worst.seed.iloc[0]) if seed is None else seed
    figures = {
        "side_by_side": side_by_side(results_dir, seed),
        "forecast_error": forecast_error_figure(
            forecast_error(results_dir, planner, seed), title=f"{planner}, seed {seed}"
        ),
        "policy_map": policy_map(decision_table(results_dir, planner)),
    }
    if run_dir is not None:
        figures["learning_curves"] = learning_curves(run_dir)
    for name, figure in figures.items():
        written += _save(figure, out_dir, name)
    return written

"""Several seeds and hyperparameter values of one training config, in parallel: ``adaptflow
sweep``. Trials run as local processes, or as Ray tasks on a Ray cluster (``backend="ray"``,
the optional ``ray`` extra) for users who outgrow one machine. Each trial is a normal run with
its own run directory; the sweep writes one summary table."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from .config import TrainConfig, load_config
from .io import atomic_write


def _trial(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """One training run (in a worker process or a Ray task); returns its headline numbers."""
    from .training import train

    run = train(config, overrides)
    validation = pd.read_csv(run.run_dir / "validation.csv")
    row: dict[str, Any] = {
        "run_dir": str(run.run_dir),
        "timesteps": run.timesteps,
        "best_validation_cost": float(validation.cost.min()),
    }
    if run.evaluation is not None:
        summary = run.evaluation.summary.set_index("planner")
        row["evaluation_cost"] = float(summary.cost_mean.iloc[0])  # the trained model comes first
    return row


def sweep(
    config: str | Path | TrainConfig,
    seeds: int,
    grid: dict[str, list[Any]] | None = None,
    overrides: list[str] | None = None,
    processes: int | None = None,
    backend: str = "process",
    address: str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Train every combination of ``grid`` (dotted config keys -> values) with seeds 0..seeds-1.
    Every trial's config is validated before any trial starts. Returns one row per trial; the
    table, with the mean over seeds per combination, is written beside the runs."""
    if seeds < 1:
        raise ValueError(f"need at least 1 seed, got {seeds}")
    if backend not in ("process", "ray"):
        raise ValueError(f"backend {backend!r}; expected 'process' or 'ray'")
    base = config.model_dump(mode="json") if isinstance(config, TrainConfig) else None
    grid = grid or {}
    keys = list(grid)
    trials: list[tuple[dict[str, Any], list[str]]] = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        for seed in range(seeds):
            extra = [*(overrides or []), *(f"{k}={v}" for k, v in zip(keys, combo, strict=True)), f"seed={seed}"]
            resolved = load_config(base if base is not None else config, extra)  # validates, or raises
            trials.append(({**resolved.model_dump(mode="json")}, []))
    _check_envs([cfg for cfg, _ in trials])
    name = trials[0][0]["name"]
    bar = tqdm(total=len(trials), desc=f"sweep {name}", unit="run", disable=not progress, file=sys.stderr)
    rows: list[dict[str, Any]] = []
    with bar:
        if backend == "ray":
            try:
                import ray
            except ImportError:
                raise ValueError("backend 'ray' needs the ray extra: pip install 'adaptflow[ray]'") from None
            ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
            remote = ray.remote(num_cpus=1)(_trial)
            pending = {remote.remote(cfg, extra): cfg for cfg, extra in trials}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                cfg = pending.pop(done[0])
                rows.append({**_describe(cfg, keys), **ray.get(done[0])})
                bar.update()
        else:
            workers = processes or min(len(trials), os.cpu_count() or 1)
            context = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {pool.submit(_trial, cfg, extra): cfg for cfg, extra in trials}
                for future in as_completed(futures):
                    rows.append({**_describe(futures[future], keys), **future.result()})
                    bar.update()
    table = pd.DataFrame(rows).sort_values([*keys, "seed"]).reset_index(drop=True)
    out = Path(trials[0][0]["output_dir"]) / name / f"sweep_{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"
    atomic_write(out / "sweep.csv", lambda tmp: table.to_csv(tmp, index=False))
    table.attrs["out_dir"] = str(out)
    return table


def _check_envs(configs: list[dict[str, Any]]) -> None:
    """What a config can only be checked against (its env options, the algorithm against the
    action space, the baselines against the scenario), once per distinct env: a bad combination
    fails before any trial starts, not in the middle of the sweep."""
    import json

    from .training import check_config

    seen = set()
    for config in configs:
        key = json.dumps([config["env"], config["algorithm"], config["evaluation"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            check_config(TrainConfig.model_validate(config)).close()


def _describe(config: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"seed": config["seed"]}
    for key in keys:
        node: Any = config
        for part in key.split("."):
            node = node[part]
        row[key] = node
    return row


def summarize_sweep(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and spread over seeds of each combination's headline numbers."""
    metrics = [c for c in ("best_validation_cost", "evaluation_cost") if c in table.columns]
    if not keys:
        return table[metrics].agg(["mean", "std"]).T.reset_index(names="metric")
    return table.groupby(keys)[metrics].agg(["mean", "std"]).reset_index()

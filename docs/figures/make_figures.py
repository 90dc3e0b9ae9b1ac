"""The figures of docs/results.md for rerouting and bursty load, from `adaptflow evaluate` output:

    .venv/bin/python docs/figures/make_figures.py results/reroute_shipped results/bursty_final results/bursty_g09 \
        results/orchestrate2_final

(The autoscale figures are the training run's own evaluation plots, copied.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from adaptflow.scenario import load_scenario

OUT = Path(__file__).resolve().parent


def episode(results: Path, planner: str, seed: int) -> pd.DataFrame:
    rows = []
    with (results / "episodes" / planner / f"seed_{seed}.jsonl").open() as f:
        for line in f:
            r = json.loads(line)
            m = r["metrics"]
            split = r["applied"]["splits"].get("ingest") or m["splits"].get("ingest", {})
            rows.append(
                {
                    "time": r["decision_time"],
                    "share": split.get("thorough_validate", np.nan),
                    "bad_rate": r["insights"]["bad_rate"],
                    "queue": m["stages"]["thorough_validate"]["queue_length"],
                    "workers": m["stages"]["thorough_validate"]["target"],
                    "ready": m["stages"]["thorough_validate"]["active"],
                    "escapes": m["escapes"],
                    "late": m["sla_violations"],
                }
            )
    return pd.DataFrame(rows)


def paired(results: Path, a: str, b: str) -> pd.Series:
    table = pd.read_parquet(results / "results.parquet")
    x = table[table.planner == a].set_index("seed").cost
    y = table[table.planner == b].set_index("seed").cost
    return (x - y).dropna()


def save(fig: Figure, name: str) -> None:
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=110, bbox_inches="tight")


def reroute(results: Path) -> None:
    seed = 1_000_000
    spec = load_scenario("quality_drift")
    t = np.linspace(0, spec.horizon, 721)
    true_bad = spec.sources["records"].quality.bad_rate.at(t)
    ppo, rule = episode(results, "ppo", seed), episode(results, "quality-fixed-tuned", seed)
    fig = Figure(figsize=(8, 6.5))
    FigureCanvasAgg(fig)
    a, b, c = fig.subplots(3, 1, sharex=True)
    a.plot(t, true_bad, color="black", label="true bad-record rate")
    a.plot(ppo.time, ppo.bad_rate, color="0.6", lw=0.8, label="estimated (one interval)")
    a.set_ylabel("bad rate")
    a.legend(fontsize=8)
    b.step(rule.time, rule.share, where="post", color="C1", label="tuned rule (fixed pools)")
    b.step(ppo.time, ppo.share, where="post", color="C0", label="PPO")
    b.set_ylabel("share to thorough")
    b.legend(fontsize=8)
    c.step(rule.time, rule.queue, where="post", color="C1", label="tuned rule")
    c.step(ppo.time, ppo.queue, where="post", color="C0", label="PPO")
    c.set_ylabel("thorough queue")
    c.set_xlabel("simulated s")
    a.set_title(f"quality_drift, Reroute-v0 (pools fixed), held-out seed {seed}", fontsize=10)
    save(fig, "reroute_share_vs_bad_rate")

    d = paired(results, "ppo", "quality-fixed-tuned")
    fig = Figure(figsize=(6, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.bar(range(len(d)), d.to_numpy(), color=["C2" if v < 0 else "C3" for v in d])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("held-out seed (1,000,000 + k)")
    ax.set_ylabel("PPO cost - tuned rule cost")
    ax.set_title("reroute: PPO against the tuned fixed-staffing quality rule, per seed", fontsize=9)
    save(fig, "reroute_paired_diff")


def bursty(earlier: Path, shipped: Path) -> None:
    new = paired(shipped, "ppo-g09", "threshold-tuned")
    old = paired(earlier, "ppo", "threshold-tuned")
    fig = Figure(figsize=(7, 3.4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    k = np.arange(len(new))
    ax.bar(k - 0.2, new.to_numpy(), width=0.4, color="C0", label="ppo_bursty.yaml (gamma 0.9, 200k steps)")
    ax.bar(k + 0.2, old.to_numpy(), width=0.4, color="C7", label="earlier PPO (gamma 0.99, 100k steps)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("held-out seed (1,000,000 + k)")
    ax.set_ylabel("PPO cost - tuned HPA cost")
    ax.set_title("bursty: PPO against the tuned HPA rule, per seed (below 0: PPO cheaper)", fontsize=9)
    ax.legend(fontsize=8)
    save(fig, "bursty_paired_diff")


def orchestrate(results: Path) -> None:
    seed = 1_000_000
    spec = load_scenario("quality_drift")
    t = np.linspace(0, spec.horizon, 721)
    ppo, rule = episode(results, "ppo", seed), episode(results, "quality-planned-tuned", seed)
    fig = Figure(figsize=(8, 6.5))
    FigureCanvasAgg(fig)
    a, b, c = fig.subplots(3, 1, sharex=True)
    a.plot(t, spec.sources["records"].quality.bad_rate.at(t), color="black", label="true bad-record rate")
    a.set_ylabel("bad rate")
    a.legend(fontsize=8)
    b.step(rule.time, rule.share, where="post", color="C1", label="tuned rule, planned staffing")
    b.step(ppo.time, ppo.share, where="post", color="C0", label="PPO")
    b.set_ylabel("share to thorough")
    b.legend(fontsize=8)
    c.step(rule.time, rule.ready, where="post", color="C1", label="tuned rule: ready workers")
    c.step(ppo.time, ppo.ready, where="post", color="C0", label="PPO: ready workers")
    c.set_ylabel("thorough workers")
    c.set_xlabel("simulated s")
    c.legend(fontsize=8)
    a.set_title(f"quality_drift, Orchestrate-v0 (pools and split), held-out seed {seed}", fontsize=10)
    for ax in (a, b, c):
        ax.set_xlim(2000, 6600)
    save(fig, "orchestrate_share_and_workers")


if __name__ == "__main__":
    reroute(Path(sys.argv[1]))
    bursty(Path(sys.argv[2]), Path(sys.argv[3]))
    orchestrate(Path(sys.argv[4]))

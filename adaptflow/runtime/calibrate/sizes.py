"""Item sizes: how much slower than usual each recorded item was, at every stage it visited.

Why: the scenario draws each visit's service time independently, but a recording's are not. An
item whose input is big is slow at every stage, and a machine shared with other work is slow
for seconds at a time, so the items of a slow stretch are slow everywhere. Measured on the
example app (docs/deploy.md): per item, parse's service time correlates with validate's at
0.65; consecutive visits of a stage at 0.57 to 0.69. Independent draws miss both, and with them
the bursts of slow work in which queues build: the simulated waits were 34 to 73 % short of the
recorded ones, the end-to-end p95 79 %. A trace carries a per-item ``size`` that multiplies
every service time of the item (the schema's ``size`` column); this module estimates it from
the recording, so that a replay of the recorded arrivals replays their slowness too.

Model (random effects on log service times): an attempt of item ``i`` at stage ``s`` takes
``log x = c_s + b_i + e``, with ``c_s`` the stage's mean log time, ``b_i`` the item's effect
(variance ``tau2``, the same at every stage: the simulator's size multiplies every service time)
and ``e`` the attempt's own noise, whose variance ``sigma2_s`` differs by stage (a fixed-time
stage has none, an exponential one 1.64). Two attempts of one item share only ``b_i``, so
``tau2`` is the mean product of their centred log times over pairs of attempts of the same item
(per item, then over items), a moment estimate that stays unbiased whatever the stages' own
variances; its standard error over the items gives a one-sided z test of ``tau2 = 0``. (A
one-way ANOVA F test, tried first, assumes one within-item variance and "found" items differing
in a synthetic recording whose items were independent but visited a deterministic and an
exponential stage.) An item's size is ``exp`` of the best linear predictor of ``b_i`` from its
attempts, each weighted by ``1 / sigma2_s``: a fixed-time stage pins it (such a stage says the
item was not slow), and an item seen once is shrunk toward size 1, since its one time says as
much about the visit as about the item. The stages' service distributions are then fitted to
``x / size``, the part the item does not explain.

Only the trace scenario carries sizes (they belong to the recorded items); the rate scenario's
items are new, so its stages keep the distribution of the raw times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from .timeline import Timeline

ALPHA = 0.01
"""Test level: items are given sizes only if they differ at this significance."""
SIGMA2_FLOOR = 1e-4
"""Least variance of a stage's own noise (log-time sd 0.01): a fixed-time stage weighs much, not
infinitely, in an item's size."""
MIN_ITEMS = 20
"""Fewer items seen at two or more attempts than this are too few to tell items apart."""


@dataclass
class ItemSizes:
    """Each item's size (item id -> factor; items not listed have size 1), the attempts' service
    times divided by their item's size, per stage, the moments those must have, and the
    statistics behind them.

    ``moments[stage]`` = (mean, cv) of a service time that, multiplied by the size of an item
    drawn at random (a simulated route does not look at sizes, so every stage sees them all),
    has the recorded times' mean and second moment.
    The divided times themselves do not: an item's size is estimated from its own attempts, so a
    long attempt raises its size and shrinks its own quotient (measured on a synthetic recording:
    the product of their means fell 2.5 % short of the mean service time, its second moment 6 %,
    and the simulated waits 9 to 16 %). The quotients give the distribution's shape; these
    moments its scale and spread."""

    sizes: dict[str, float]
    residuals: dict[str, list[float]]
    report: dict[str, Any] = field(default_factory=dict)
    moments: dict[str, tuple[float, float]] = field(default_factory=dict)
    items: dict[str, str] = field(default_factory=dict)  # task id -> item id

    def of(self, item: str) -> float:
        return self.sizes.get(item, 1.0)

    def of_task(self, task: str) -> float:
        """The size of the item a task (a visit) belongs to; 1 for a task of no known item."""
        return self.sizes.get(self.items.get(task, ""), 1.0)

    def moments_of(self, times: list[float] | np.ndarray) -> tuple[float, float]:
        """(mean, cv) of a per-visit time that, times the size of an item drawn at random, has
        the mean and second moment of ``times`` (as ``moments`` are for the services)."""
        return _moments(list(times), np.asarray(list(self.sizes.values()) or [1.0]))


def fit_sizes(timeline: Timeline) -> ItemSizes:
    """Sizes of the recorded items (see the module docstring); every item size 1, and the raw
    service times, when items do not differ significantly or too few were seen twice."""
    raw = {name: list(obs.services) for name, obs in timeline.stages.items()}
    logs, items, spread = _item_logs(timeline)
    products = [_mean_product(v) for v in logs.values() if len(v) >= 2]
    if len(products) < MIN_ITEMS:
        note = f"{len(products)} items with two or more timed attempts (fewer than {MIN_ITEMS}): no item sizes"
        return ItemSizes({}, raw, {"fitted": False, "note": note, "items_repeated": len(products)})
    tau2 = float(np.mean(products))
    se = float(np.std(products, ddof=1) / math.sqrt(len(products)))
    z = tau2 / se if se > 0 else (math.inf if tau2 > 0 else 0.0)
    pvalue = float(stats.norm.sf(z))
    sigma2 = {name: max(v - tau2, SIGMA2_FLOOR) for name, v in spread.items()}
    report: dict[str, Any] = {
        "items": len(logs),
        "items_repeated": len(products),
        "tau2": tau2,
        "tau2_ci95": [tau2 - 1.96 * se, tau2 + 1.96 * se],
        "z": z,
        "pvalue": pvalue,
        "sigma2": sigma2,
        "item_share": {name: max(tau2, 0.0) / (max(tau2, 0.0) + v) for name, v in sigma2.items()},
    }
    if pvalue >= ALPHA or tau2 <= 0:
        note = f"items do not differ significantly (tau2 = {tau2:.3g}, z = {z:.3g}, p = {pvalue:.2g}): no item sizes"
        return ItemSizes({}, raw, {**report, "fitted": False, "note": note})
    sizes = {item: _size(v, tau2, sigma2) for item, v in logs.items()}
    scale = float(np.mean(list(sizes.values())))  # a size of 1 is the mean item: stage means stay readable
    sizes = {item: size / scale for item, size in sizes.items()}
    residuals = {
        name: [x / sizes.get(items.get(k, ""), 1.0) for x, k in zip(obs.services, obs.tasks, strict=True)]
        for name, obs in timeline.stages.items()
    }
    values = np.asarray(list(sizes.values()))  # a simulated visit's size: any item's, as routes ignore sizes
    moments = {name: _moments(obs.services, values) for name, obs in timeline.stages.items() if obs.services}
    report.update(
        fitted=True,
        size_quantiles={q: float(np.quantile(values, q / 100)) for q in (5, 25, 50, 75, 95)},
        note=(
            f"items differ (tau2 = {tau2:.3g}, z = {z:.3g}, p = {pvalue:.2g}): the trace's sizes carry the item's "
            "part of each service time and the stages' distributions are fitted to the rest"
        ),
    )
    return ItemSizes(sizes, residuals, report, moments, items)


def _moments(services: list[float], sizes: np.ndarray) -> tuple[float, float]:
    """(mean, cv) of a service time that, times an independent draw of ``sizes``, has the mean
    and second moment of ``services``; cv 0 when the sizes alone spread as much."""
    x, s = np.asarray(services, dtype=float), np.asarray(sizes, dtype=float)
    mean = float(x.mean() / s.mean())
    second = float(np.mean(x**2) / np.mean(s**2))
    return mean, math.sqrt(max(second / mean**2 - 1.0, 0.0))


def _item_logs(timeline: Timeline) -> tuple[dict[str, list[tuple[str, float]]], dict[str, str], dict[str, float]]:
    """Per item, (stage, log service time less the stage's mean log time) of its attempts; task
    id -> item; and each stage's variance of log times."""
    items = {k: item for item, obs in timeline.items.items() for _, _, k in obs.visits}
    logs: dict[str, list[tuple[str, float]]] = {}
    spread: dict[str, float] = {}
    for name, obs in timeline.stages.items():
        x = np.log(np.maximum(np.asarray(obs.services, dtype=float), 1e-6))
        if not len(x):
            continue
        spread[name] = float(x.var())
        for value, k in zip(x - x.mean(), obs.tasks, strict=True):
            if k in items:
                logs.setdefault(items[k], []).append((name, float(value)))
    return logs, items, spread


def _mean_product(attempts: list[tuple[str, float]]) -> float:
    """Mean product of the centred log times over the item's pairs of distinct attempts."""
    x = np.asarray([v for _, v in attempts])
    n = len(x)
    return float((x.sum() ** 2 - np.sum(x**2)) / (n * (n - 1)))


def _size(attempts: list[tuple[str, float]], tau2: float, sigma2: dict[str, float]) -> float:
    """exp of the best linear predictor of the item's effect from its attempts."""
    precision = sum(1.0 / sigma2[stage] for stage, _ in attempts)
    weighted = sum(v / sigma2[stage] for stage, v in attempts)
    return math.exp(tau2 * weighted / (1.0 + tau2 * precision))

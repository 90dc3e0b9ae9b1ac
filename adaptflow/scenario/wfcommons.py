"""Scientific workflows from WfCommons as scenarios: a workflow's DAG becomes fork/join routes.

`WfCommons <https://wfcommons.org>`_ (PyPI ``wfcommons``, LGPL-3.0) publishes recipes fitted to
real runs of scientific workflows (Montage, Epigenomics, Blast...) and generates workflow
instances from them: tasks with a type, a measured-like runtime and their parents. This module
turns one instance into a plain scenario dict, so that a planner meets the shapes of real DAGs
(wide scatters, chains inside each part, joins) instead of hand-drawn pipelines.

The mapping, and what it approximates:

* **Levels.** A task's level is the longest chain of parents above it. Tasks of one type at one
  level form one stage; a type found at several levels gets one stage per level (``mapMerge``,
  ``mapMerge_2``), because a stage routes every item the same way.
* **Fork/join.** A level of one stage with ``N > 1`` tasks is a scatter of ``N`` parts; a level
  of several stages is a fork with one part per task (a branch repeats per task). Consecutive
  levels whose tasks pair one to one (each task's only new parent is one task of the level
  before, and no two share it) stay *inside* the parts, as a chain: part ``i`` runs ``a_i``, then
  ``b_i``, with no join in between. Everything else is bulk-synchronous: a level starts when the
  whole level before it is done, where the real DAG lets a task start as soon as its own parents
  are (a Montage ``mDiffFit`` needs two ``mProject`` images, not all of them). Every real
  dependency is kept, since a parent always sits at a lower level; only extra waiting is added.
* **Joins.** The parts of a level meet at the next level when that level is one task (it becomes
  the join stage: ``mapMerge`` waits for every ``map``); before a level that is itself parallel
  they meet at an inserted ``barrier_<k>`` stage with a deterministic 1 ms service on one free
  worker (bookkeeping, not work); after the last level they meet at the exit.
* **Service.** Each stage's service is ``empirical`` over the runtimes of its tasks (seconds),
  drawn with replacement per part: the instance's spread per type, not a replay of its task
  order. A runtime of 0 (below a trace's resolution) becomes 1 ms: a service time is positive.
  Files, data transfer, cores and machines are not modelled: one task is one worker-visit.
* **Load.** Workflow submissions are a Poisson source (``rate`` workflows/s). Each pool starts
  at ``ceil(rate x total runtime of its tasks / utilization)`` workers, so every stage runs at
  about ``utilization`` on average, with room to scale to twice that.

Why the chain and join rules: they keep the structure the workflows are known for (Epigenomics:
one split, a chain of four steps per lane, one merge) and add a barrier only where the DAG has
crossing edges that a fork/join route cannot say.

``wfcommons`` is optional: it is imported only by :func:`recipe_instance`, so reading an instance
dict or file, and every shipped scenario, work without it.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .base import ScenarioError

MIN_RUNTIME = 0.001
"""Seconds: the service time given to a task recorded with runtime 0."""

BARRIER_SERVICE = 0.001
"""Seconds: a barrier's deterministic service, small against any task but positive."""

RECIPES = ("blast", "bwa", "cycles", "epigenomics", "genome", "montage", "rnaseq", "seismology", "soykb", "srasearch")
"""The recipes shipped with wfcommons 1.6 (``wfcommons.wfchef.recipes.<Name>Recipe``)."""

SHIPPED: dict[str, dict[str, Any]] = {
    "epigenomics_dag": {
        "about": (
            "Epigenomics (a USC Epigenome Center pipeline run with Pegasus): fastqSplit, then 9 lanes of\n"
            "filterContams -> sol2sanger -> fast2bfq -> map, joined at mapMerge, then mapMerge_2 -> chr21\n"
            "-> pileup. One workflow per 50 s on average (~1,100 s of critical path, ~1,500 s of work);\n"
            "every pool is sized for a utilization of about 0.6."
        ),
        "args": {
            "recipe": "epigenomics",
            "num_tasks": 43,
            "recipe_seed": 0,
            "rate": 0.02,
            "sla": 1800.0,
            "description": "Epigenomics DAG from a WfCommons recipe: a split, 9 lanes of 4 steps, merges",
        },
    },
}
"""The shipped scenarios this module generated: a note for the header and the arguments of
:func:`recipe_scenario` (``python -m adaptflow.scenario.wfcommons`` writes them again)."""


@dataclass(frozen=True)
class WfTask:
    """One task of a workflow instance: what the conversion needs and nothing else."""

    id: str
    kind: str
    runtime: float
    parents: tuple[str, ...]


@dataclass
class _Lane:
    """Stages run one after another inside each of ``count`` parts (a chain of levels)."""

    stages: list[str]
    count: int
    tasks: list[list[WfTask]]  # per stage, its tasks


# --------------------------------------------------------------------------------------------
# Reading an instance
# --------------------------------------------------------------------------------------------
def read_tasks(instance: Any) -> list[WfTask]:
    """The tasks of a wfcommons ``Workflow``, a WfFormat dict, or a path to a WfFormat JSON file."""
    if isinstance(instance, (str, Path)):
        path = Path(instance)
        try:
            instance = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ScenarioError(f"instance file {str(path)!r}: {exc}; expected a WfFormat JSON file") from None
    if isinstance(instance, Mapping):
        return _tasks_from_json(instance)
    if hasattr(instance, "tasks") and hasattr(instance, "tasks_parents"):
        return _tasks_from_workflow(instance)
    raise ScenarioError(
        f"instance is a {type(instance).__name__}; expected a wfcommons Workflow, a WfFormat dict or a JSON path"
    )


def _tasks_from_workflow(workflow: Any) -> list[WfTask]:
    """A generated ``Workflow``: its task objects carry the type as ``category`` or ``name``."""
    return [
        WfTask(
            tid,
            _kind_of(task.name, task.category),
            _runtime(tid, task.runtime),
            tuple(sorted(workflow.tasks_parents[tid])),
        )
        for tid, task in workflow.tasks.items()
    ]


def _tasks_from_json(doc: Mapping[str, Any]) -> list[WfTask]:
    """WfFormat 1.5 (``workflow.specification`` + ``workflow.execution``) or the older flat
    ``workflow.tasks`` with ``runtimeInSeconds`` (or ``runtime``) on each task."""
    workflow = doc.get("workflow")
    if not isinstance(workflow, Mapping):
        raise ScenarioError(f"instance: workflow is {workflow!r}; expected a mapping with specification or tasks")
    if "specification" in workflow:
        spec_tasks = workflow["specification"].get("tasks", [])
        executed = {t["id"]: t for t in workflow.get("execution", {}).get("tasks", [])}
    else:
        spec_tasks = workflow.get("tasks", [])
        executed = {}
    if not spec_tasks:
        raise ScenarioError("instance: workflow has no tasks; expected at least one")
    return [_task_from_json(spec, executed) for spec in spec_tasks]


def _task_from_json(spec: Mapping[str, Any], executed: Mapping[str, Mapping[str, Any]]) -> WfTask:
    tid = str(spec.get("id", spec.get("name")))
    run = {**spec, **executed.get(tid, {})}
    runtime = run.get("runtimeInSeconds", run.get("runtime"))
    if runtime is None:
        raise ScenarioError(f"instance: task {tid!r} has no runtimeInSeconds; expected its measured runtime (s)")
    return WfTask(
        tid,
        _kind_of(str(spec.get("name", tid)), run.get("category")),
        _runtime(tid, runtime),
        tuple(spec.get("parents", [])),
    )


def _kind_of(name: str, category: str | None) -> str:
    """The task's type: its category, else its name without a numeric suffix (``map_00000012``)."""
    kind = category or re.sub(r"_(ID)?\d+$", "", name)
    kind = re.sub(r"[^A-Za-z0-9_-]", "_", kind)
    return kind if re.match(r"[A-Za-z_]", kind) else f"t_{kind}"


def _runtime(tid: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ScenarioError(f"instance: task {tid!r} has runtime {value!r}; expected seconds >= 0")
    return max(float(value), MIN_RUNTIME)


# --------------------------------------------------------------------------------------------
# Levels and lanes
# --------------------------------------------------------------------------------------------
def task_levels(tasks: list[WfTask]) -> dict[str, int]:
    """Each task's level: the length of the longest chain of parents above it (Kahn's order)."""
    by_id = {t.id: t for t in tasks}
    for task in tasks:
        for parent in task.parents:
            if parent not in by_id:
                raise ScenarioError(f"instance: task {task.id!r} has parent {parent!r}; expected one of the tasks")
    children: dict[str, list[str]] = {t.id: [] for t in tasks}
    waiting = {t.id: len(t.parents) for t in tasks}
    for task in tasks:
        for parent in task.parents:
            children[parent].append(task.id)
    level = {tid: 0 for tid, n in waiting.items() if n == 0}
    ready = list(level)
    while ready:
        tid = ready.pop()
        for child in children[tid]:
            level[child] = max(level.get(child, 0), level[tid] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(level) < len(tasks) or any(waiting.values()):
        stuck = sorted(tid for tid, n in waiting.items() if n)
        raise ScenarioError(f"instance: tasks {stuck[:5]} lie on a cycle; expected a DAG")
    return level


def _levels(tasks: list[WfTask]) -> list[list[list[WfTask]]]:
    """Per level, its groups of tasks of one type (types in name order, tasks in id order)."""
    level = task_levels(tasks)
    grouped: dict[int, dict[str, list[WfTask]]] = {}
    for task in sorted(tasks, key=lambda t: t.id):
        grouped.setdefault(level[task.id], {}).setdefault(task.kind, []).append(task)
    return [[grouped[k][kind] for kind in sorted(grouped[k])] for k in sorted(grouped)]


def _pairs_one_to_one(before: list[WfTask], after: list[WfTask], level: dict[str, int], start: int) -> bool:
    """Whether ``after`` can run inside the parts of ``before``: same count, each task's parents
    are one task of ``before`` (its own) plus tasks from before the chain began (done already)."""
    if len(before) != len(after):
        return False
    ids = {t.id for t in before}
    own = []
    for task in after:
        inside = [p for p in task.parents if level[p] >= start]
        if len(inside) != 1 or inside[0] not in ids:
            return False
        own.append(inside[0])
    return len(set(own)) == len(own)


def _blocks(tasks: list[WfTask]) -> list[list[list[list[WfTask]]]]:
    """Levels merged into blocks: a block is a list of lanes, a lane a chain of task groups."""
    level = task_levels(tasks)
    blocks: list[list[list[list[WfTask]]]] = []
    start = 0
    for groups in _levels(tasks):
        last = blocks[-1] if blocks else None
        if last and len(last) == 1 and len(groups) == 1 and _pairs_one_to_one(last[0][-1], groups[0], level, start):
            last[0].append(groups[0])
            continue
        start = level[groups[0][0].id]
        blocks.append([[group] for group in groups])
    return blocks


def _name_lanes(blocks: list[list[list[list[WfTask]]]]) -> list[list[_Lane]]:
    """Stage names: the task type, with ``_2``, ``_3`` for a type met again at a later level."""
    seen: dict[str, int] = {}
    named = []
    for block in blocks:
        lanes = []
        for chain in block:
            names = []
            for group in chain:
                kind = group[0].kind
                seen[kind] = seen.get(kind, 0) + 1
                names.append(kind if seen[kind] == 1 else f"{kind}_{seen[kind]}")
            lanes.append(_Lane(names, len(chain[0]), chain))
        named.append(lanes)
    return named


# --------------------------------------------------------------------------------------------
# Routes and stages
# --------------------------------------------------------------------------------------------
def _fan_out(lanes: list[_Lane], join: str | None) -> Any:
    """The route into a block: a stage name (one task), a scatter (one lane), or a fork."""
    if _serial(lanes):
        return lanes[0].stages[0]
    if len(lanes) == 1:
        return {"scatter": lanes[0].stages[0], "parts": lanes[0].count, "join": join}
    return {"fork": [lane.stages[0] for lane in lanes for _ in range(lane.count)], "join": join}


def _serial(lanes: list[_Lane]) -> bool:
    """A block of one task: its stage can be the join of the block before."""
    return len(lanes) == 1 and lanes[0].count == 1


def _barriers(blocks: list[list[_Lane]], taken: set[str]) -> dict[int, str]:
    """The barrier after each block whose parts go on into another parallel block, numbered in
    workflow order (``barrier_1`` first)."""
    needs = [i for i in range(len(blocks) - 1) if not _serial(blocks[i]) and not _serial(blocks[i + 1])]
    return {index: _unique(f"barrier_{k}", taken) for k, index in enumerate(needs, start=1)}


def _wire(blocks: list[list[_Lane]], barriers: dict[int, str]) -> tuple[Any, dict[str, Any]]:
    """Every stage's ``next``, walking back from the exit: what follows a block decides where its
    parts join (the next block's stage, a barrier, or the exit). Returns the source's route too."""
    follow: Any = None
    nexts: dict[str, Any] = {}
    for index in range(len(blocks) - 1, -1, -1):
        join = follow
        if index in barriers:
            join = barriers[index]
            nexts[join] = follow
        for lane in blocks[index]:
            for stage, after in zip(lane.stages, [*lane.stages[1:], join], strict=True):
                nexts[stage] = after
        follow = _fan_out(blocks[index], join)
    return follow, nexts


def _unique(name: str, taken: set[str]) -> str:
    while name in taken:
        name = f"{name}_"
    taken.add(name)
    return name


def _pool(load: float, utilization: float, startup_delay: float, cost_per_second: float) -> dict[str, Any]:
    """Workers for ``load`` busy workers on average at the given utilization, up to twice that."""
    initial = max(1, math.ceil(load / utilization - 1e-9))
    return {
        "initial": initial, "min": 1, "max": 2 * initial,
        "startup_delay": float(startup_delay), "cost_per_second": float(cost_per_second),
    }  # fmt: skip


def _barrier(next_route: Any) -> dict[str, Any]:
    """A join point that does no work: one free worker, a 1 ms deterministic service."""
    return {
        "workers": {"initial": 1, "min": 1, "max": 1, "startup_delay": 0.0, "cost_per_second": 0.0},
        "service": {"dist": "deterministic", "mean": BARRIER_SERVICE},
        "next": next_route,
    }


# --------------------------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------------------------
def scenario_from_wfcommons(
    instance_or_path: Any,
    *,
    name: str,
    rate: float,
    horizon: float = 3600.0,
    sla: float | None = None,
    utilization: float = 0.6,
    startup_delay: float = 60.0,
    cost_per_second: float = 1.0,
    source: str = "submissions",
    seed: int = 0,
    description: str | None = None,
) -> dict[str, Any]:
    """A plain scenario dict (for :func:`~adaptflow.scenario.parse_scenario`) of one workflow
    instance submitted as a Poisson stream of ``rate`` workflows/s; see the module docstring for
    the mapping. ``sla`` defaults to twice the instance's critical path, rounded up to a minute:
    room for queueing, tight enough that a starved pool shows. ``seed`` is the scenario's."""
    _check_positive(rate=rate, horizon=horizon, utilization=utilization)
    if utilization > 1:
        raise ScenarioError(f"utilization is {utilization}; expected a target in (0, 1]")
    tasks = read_tasks(instance_or_path)
    lanes = _name_lanes(_blocks(tasks))
    taken = {stage for block in lanes for lane in block for stage in lane.stages} | {source}
    barriers = _barriers(lanes, taken)
    entry, nexts = _wire(lanes, barriers)
    stages: dict[str, Any] = {}
    for index, block in enumerate(lanes):
        for lane in block:
            for stage, group in zip(lane.stages, lane.tasks, strict=True):
                stages[stage] = _task_stage(group, nexts[stage], rate, utilization, startup_delay, cost_per_second)
        if index in barriers:
            stages[barriers[index]] = _barrier(nexts[barriers[index]])
    deadline = sla if sla is not None else 60.0 * math.ceil(2 * critical_path(tasks) / 60.0)
    return {
        "name": name,
        "description": description or f"a {len(tasks)}-task workflow DAG from WfCommons, {len(stages)} stages",
        "horizon": float(horizon), "seed": seed, "sla": {"latency": float(deadline)},
        "sources": {source: {"process": "poisson", "rate": float(rate), "to": entry}},
        "stages": stages,
    }  # fmt: skip


def _task_stage(
    group: list[WfTask], next_route: Any, rate: float, utilization: float, startup_delay: float, cost: float
) -> dict[str, Any]:
    """A stage of one task type: its runtimes (ms resolution, sorted so the file reads well) as
    empirical service times, and a pool sized for them."""
    runtimes = sorted(round(t.runtime, 3) or MIN_RUNTIME for t in group)
    return {
        "workers": _pool(rate * sum(runtimes), utilization, startup_delay, cost),
        "service": {"dist": "empirical", "samples": runtimes},
        "next": next_route,
    }


def _check_positive(**values: float) -> None:
    for field, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ScenarioError(f"{field} is {value!r}; expected a number > 0")


def critical_path(tasks: list[WfTask]) -> float:
    """Seconds from the first task's start to the last one's end with unlimited workers."""
    level = task_levels(tasks)
    finish: dict[str, float] = {}
    for task in sorted(tasks, key=lambda t: level[t.id]):
        finish[task.id] = task.runtime + max((finish[p] for p in task.parents), default=0.0)
    return max(finish.values())


# --------------------------------------------------------------------------------------------
# Generating from a recipe (needs wfcommons)
# --------------------------------------------------------------------------------------------
def recipe_instance(recipe: str, *, num_tasks: int, seed: int) -> Any:
    """A wfcommons ``Workflow`` generated from a shipped recipe, offline.

    Why the global generators are touched: wfcommons draws from Python's ``random`` and numpy's
    legacy global state and takes no generator. They are seeded for this call only and restored
    afterwards, so nothing else in the process sees a different random sequence."""
    if recipe not in RECIPES:
        raise ScenarioError(f"recipe is {recipe!r}; expected one of {', '.join(RECIPES)}")
    try:
        from wfcommons import WorkflowGenerator
        from wfcommons.wfchef import recipes
    except ImportError:
        raise ScenarioError(
            "generating a workflow needs the optional package wfcommons: pip install 'adaptflow[wfcommons]'"
        ) from None
    recipe_class = getattr(recipes, f"{recipe.capitalize()}Recipe")
    saved = random.getstate(), np.random.get_state()
    try:
        random.seed(seed)
        np.random.seed(seed)  # wfcommons reads the legacy global state; restored below
        return WorkflowGenerator(recipe_class.from_num_tasks(num_tasks)).build_workflow()
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def recipe_scenario(
    recipe: str, *, num_tasks: int, recipe_seed: int, name: str, rate: float, **options: Any
) -> dict[str, Any]:
    """:func:`scenario_from_wfcommons` of :func:`recipe_instance`: a scenario from a recipe."""
    instance = recipe_instance(recipe, num_tasks=num_tasks, seed=recipe_seed)
    return scenario_from_wfcommons(instance, name=name, rate=rate, **options)


def scenario_yaml(scenario: dict[str, Any], header: str) -> str:
    """The scenario as YAML under a comment ``header``: short lists and maps in flow style."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + yaml.safe_dump(scenario, sort_keys=False, default_flow_style=None, width=100)


def write_shipped(directory: Path) -> list[Path]:
    """Write every scenario of :data:`SHIPPED` into ``directory``, its provenance in the header."""
    import scipy
    import wfcommons

    written = []
    for name, entry in SHIPPED.items():
        args = entry["args"]
        call = ",\n    ".join(f"{k}={v!r}" for k, v in {"name": name, **args}.items())
        header = (
            f"{entry['about']}\n\n"
            f"Generated (python -m adaptflow.scenario.wfcommons) by\n"
            f"  adaptflow.scenario.wfcommons.recipe_scenario(\n    {call})\n"
            f"with wfcommons {wfcommons.__version__} (LGPL-3.0), scipy {scipy.__version__}, numpy {np.__version__}.\n"
            "Runtimes are drawn from the wfcommons recipe, fitted to real runs published in WfInstances\n"
            "(https://github.com/wfcommons/WfInstances). Loading this file needs no wfcommons.\n"
            "The mapping and its approximations: the docstring of adaptflow/scenario/wfcommons.py."
        )
        path = directory / f"{name}.yaml"
        path.write_text(scenario_yaml(recipe_scenario(name=name, **args), header))
        written.append(path)
    return written


if __name__ == "__main__":
    for written in write_shipped(Path(__file__).resolve().parents[2] / "configs" / "scenarios"):
        print(written)

"""The mapping of a user's Celery app onto a scenario's stages: which queues or task names form
which stage, which root tasks are arrivals of which source, and which task's success ends an
item. It is all adaptflow needs to observe an app it did not write (:mod:`.translate`), record
it and calibrate a scenario from the recording; the app itself is imported, never modified.

A mapping file (YAML)::

    stages:
      parse: {queues: [parse], worker: parse@%h}     # tasks routed to queue "parse"
      validate: {tasks: [etl.validate], worker: validate@%h}   # or by task name
      write: {queues: [write], worker: "write@*"}   # a group: every node named write@...
    sources:
      uploads: {tasks: [etl.parse]}   # a task sent with no parent is an item of this source
    end: {tasks: [etl.write]}         # an item leaves when one of these succeeds
    sla: {latency: 60}                # optional: the deadline (seconds) lateness is counted on

A task matches a stage by its queue first (the ``queue`` / ``routing_key`` of its ``task-sent``
event), then by its name, then by the worker that received it; a task that matches none is not
tracked (counted as unmapped). Celery must send task events: ``worker_send_task_events = True``
(or ``celery worker -E``) and, for queue times, ``task_send_sent_event = True``.

A stage's ``worker`` is one node, or a shell-style pattern naming a group of nodes (the pods of
a Deployment KEDA scales, ``celery worker -n write@$(POD_NAME)``): the monitor and the recorder
read a group as one pool, summed over the nodes it finds at each read; only ``adaptflow keda``
runs over a group, since resizing one node of many is not resizing the stage (:mod:`.nodes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adaptflow._validation import format_problems
from adaptflow._yaml import load_yaml_file
from adaptflow.scenario.schema import Name, Sla

TaskNames = Annotated[list[Annotated[str, Field(min_length=1)]], Field(default_factory=list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageMatch(_Strict):
    """The tasks of one stage: by queue or by task name (at least one), and the worker node
    (``name@host``, ``%h`` for this host) that serves them, for pool reads and control, or a
    pattern naming a group of nodes (``name@*``), for pool reads only (see :mod:`.nodes`)."""

    queues: TaskNames
    tasks: TaskNames
    worker: str | None = None

    @model_validator(mode="after")
    def _something_to_match(self) -> StageMatch:
        if not self.queues and not self.tasks:
            raise ValueError("give the stage's queues or tasks (at least one)")
        return self


class SourceMatch(_Strict):
    """Root tasks (sent with no parent) of these names are arrivals of this source."""

    tasks: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class EndMatch(_Strict):
    """An item leaves when a task of these names, or of these stages, succeeds."""

    tasks: TaskNames
    stages: TaskNames

    @model_validator(mode="after")
    def _something_to_match(self) -> EndMatch:
        if not self.tasks and not self.stages:
            raise ValueError("give the tasks or stages whose success ends an item (at least one)")
        return self


class AppMapping(_Strict):
    """A user's Celery app as stages, sources and an end (see the module docstring)."""

    stages: dict[Name, StageMatch] = Field(min_length=1)
    sources: dict[Name, SourceMatch] = Field(min_length=1)
    end: EndMatch
    sla: Sla | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AppMapping:
        problems = []
        for stage in self.end.stages:
            if stage not in self.stages:
                problems.append(f"end.stages: {stage!r} is not a stage; expected one of {sorted(self.stages)}")
        owners: dict[str, str] = {}
        for name, match in self.stages.items():
            for queue in match.queues:
                if queue in owners:
                    problems.append(f"stages.{name}.queues: {queue!r} is already stage {owners[queue]!r}'s")
                owners[queue] = name
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- what a task means (the one place: the monitor, the recorder and calibrate ask here) -----
    def stage_of(self, queue: str | None, name: str | None, worker: str | None = None) -> str | None:
        """The stage of a task: by its queue, else its name, else the worker that took it."""
        for attribute, value in (("queues", queue), ("tasks", name)):
            if value:
                for stage, match in self.stages.items():
                    if value in getattr(match, attribute):
                        return stage
        if worker:
            for stage, match in self.stages.items():
                if match.worker and _same_node(match.worker, worker):
                    return stage
        return None

    def source_of(self, name: str | None) -> str | None:
        """The source a root task of this name is an arrival of (None: not an arrival)."""
        return next((source for source, match in self.sources.items() if name in match.tasks), None)

    def ends_item(self, name: str | None, stage: str | None) -> bool:
        """Whether this task's success ends its item."""
        return (name is not None and name in self.end.tasks) or (stage is not None and stage in self.end.stages)

    def workers(self) -> dict[str, str]:
        """The worker node of each stage that names one (for pool reads and control)."""
        return {stage: match.worker for stage, match in self.stages.items() if match.worker}

    def require_workers(self, stages: Iterable[str] | None = None) -> None:
        """Refuse a mapping that names no worker for one of ``stages`` (default: its own): a
        loop that reads and resizes pools needs every stage's worker."""
        unnamed = sorted(set(self.stages if stages is None else stages) - set(self.workers()))
        if unnamed:
            raise ValueError(
                f"mapping: stages {unnamed} name no worker; expected stages.<name>.worker (name@host) for every stage"
            )

    def require_named_workers(self, why: str) -> None:
        """Refuse a mapping whose worker of some stage is a group of nodes (``parse@*``): a path
        that resizes pools needs one node per stage (see :mod:`.nodes`); ``why`` says which."""
        from .nodes import refuse_groups

        refuse_groups(self.workers(), why)

    def queues(self) -> dict[str, list[str]]:
        """The broker queues of each stage (whose lengths are the stage's queue)."""
        return {stage: list(match.queues) for stage, match in self.stages.items()}


def _same_node(pattern: str, worker: str) -> bool:
    """Whether a node name (or a group's pattern, see :mod:`.nodes`) from the mapping names
    ``worker``, or has its name part (``parse`` of ``parse@host``)."""
    from .nodes import covers

    return covers(pattern, worker) or pattern.split("@", 1)[0] == worker.split("@", 1)[0]


def load_mapping(source: str | Path | dict[str, Any]) -> AppMapping:
    """A mapping from a YAML file (or an already parsed dict), validated in full: every problem
    is one line naming the field, the value and what was expected."""
    data = source if isinstance(source, dict) else load_yaml_file(source)
    label = "mapping" if isinstance(source, dict) else f"mapping {str(source)!r}"
    if not isinstance(data, dict):
        raise ValueError(f"{label}: expected a mapping with stages, sources and end, got {type(data).__name__}")
    try:
        return AppMapping.model_validate(data)
    except ValidationError as exc:
        raise ValueError(format_problems(exc, data, f"{label} is not valid:")) from None


__all__ = ["AppMapping", "EndMatch", "SourceMatch", "StageMatch", "load_mapping"]

"""A stage's Celery worker nodes, read as one pool.

A mapping names a stage's worker as one node (``parse@%h``) or as a *group* of nodes by a
pattern (``parse@*``, shell-style as :func:`fnmatch.fnmatchcase` reads it): a stage run as many
workers, such as the pods of a Deployment a KEDA ScaledObject scales, each a Celery node of its
own (``celery worker -n parse@$(POD_NAME)``). The monitor and the recorder read a group as one
pool: the processes, running tasks and reserved messages of all its nodes, summed.

Why a pattern and not a list: the pods come and go with the replicas KEDA sets, under names
Kubernetes makes up. A group's members are found at every read, then read with the ``inspect``
calls addressed to them. Found how: by the nodes' heartbeats on the app's event stream (a
``roster``, :meth:`EventStream.alive_nodes`, as Flower knows its workers), which costs nothing;
without one, or while it shows no node of a group (a group scaled to zero, or nodes started
``--without-heartbeat``), by a broadcast ``ping`` (the one control call every node answers,
whatever its options), which waits its whole timeout. A group with no node is a pool of 0, not
a silent worker.

A group is observed, never resized: ``pool_grow`` to one node of many is not the stage's pool,
and a count published to each pod's autoscaler would be applied by every pod. The central
executor and ``adaptflow control`` refuse groups (:func:`refuse_groups`); KEDA sizes them.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from celery import Celery

from ..worker import expand_node

GLOB_CHARACTERS = frozenset("*?[")
Roster = Callable[[], set[str] | None]
"""The nodes alive by their heartbeats, or None when it cannot tell (``EventStream.alive_nodes``)."""
PING_TIMEOUT = 1.0
"""Most seconds a group's discovery waits for pings (a broadcast waits for all of it)."""


def is_group(pattern: str) -> bool:
    """Whether a mapping's worker names a group of nodes (a shell-style pattern)."""
    return any(c in GLOB_CHARACTERS for c in pattern)


def covers(pattern: str, node: str) -> bool:
    """Whether the worker ``pattern`` of a mapping (``%h`` allowed) names ``node``."""
    return fnmatchcase(node, expand_node(pattern)) if is_group(pattern) else expand_node(pattern) == node


class NodeReader:
    """``inspect`` replies of each stage's worker, keyed by the worker's pattern as the mapping
    gives it (``%h`` expanded): a named node's own reply (missing when it does not answer), or a
    group's replies merged (see the module docstring). ``patterns``: stage -> worker;
    ``roster``: the nodes alive by their heartbeats, or None when it cannot tell (the event
    stream's ``alive_nodes``)."""

    def __init__(
        self,
        app: Celery,
        patterns: dict[str, str],
        timeout: float = 2.0,
        roster: Roster | None = None,
    ):
        self.app, self.timeout, self.roster = app, timeout, roster
        self.pings = 0  # broadcast pings sent: what a roster saves
        self.patterns = {stage: expand_node(name) for stage, name in patterns.items()}
        self.members: dict[str, list[str]] = {}  # pattern -> the nodes the last read found
        self._answered: set[str] = set()  # group members that answered the last inspect round

    def discover(self) -> dict[str, list[str]]:
        """The nodes of every worker pattern now: a named node is its own member; a group's
        members are the nodes answering a broadcast ping (only when the mapping has a group),
        and those that answered the last inspect round: a node whose ping reply came late (a
        stalled main loop) is still asked, and is left out only once it stops answering."""
        groups = [p for p in self.patterns.values() if is_group(p)]
        alive: set[str] = set()
        if groups:
            heard = self.roster() if self.roster is not None else None
            if heard is None or not all(any(fnmatchcase(n, p) for n in heard) for p in groups):
                self.pings += 1
                replies = self.app.control.ping(timeout=min(self.timeout, PING_TIMEOUT)) or []
                heard = (heard or set()) | {node for reply in replies for node in reply}
            alive = heard | self._answered
        self.members = {
            p: sorted(n for n in alive if fnmatchcase(n, p)) if is_group(p) else [p] for p in self.patterns.values()
        }
        return self.members

    def read(self, *methods: str, timeout: float | None = None) -> list[dict[str, Any]]:
        """For each ``inspect`` method named (``stats``, ``active``, ``reserved``), its replies by
        pattern, from one discovery and one inspect round addressed to the members found
        (waiting at most ``timeout`` seconds, default the reader's)."""
        members = self.discover()
        destination = sorted({n for nodes in members.values() for n in nodes})
        if not destination:  # an empty destination would broadcast to every node of the broker
            return [{p: _merge(m, []) for p in members if is_group(p)} for m in methods]
        wait = self.timeout if timeout is None else timeout
        inspect = self.app.control.inspect(destination=destination, timeout=wait)
        out, answered = [], set(destination)
        for method in methods:
            replies = getattr(inspect, method)() or {}
            answered &= set(replies)
            by_pattern: dict[str, Any] = {}
            for pattern, nodes in members.items():
                if is_group(pattern):
                    by_pattern[pattern] = _merge(method, [(n, replies[n]) for n in nodes if n in replies], len(nodes))
                elif pattern in replies:
                    by_pattern[pattern] = replies[pattern]
            out.append(by_pattern)
        self._answered = {n for n in answered if any(is_group(p) and fnmatchcase(n, p) for p in members)}
        return out


def refuse_groups(workers: dict[str, str], why: str) -> None:
    """Refuse, in one line, the stages whose worker (stage -> node or pattern) is a group: a path
    that resizes pools (``why`` names it) needs one node per stage."""
    groups = sorted((stage, pattern) for stage, pattern in workers.items() if is_group(pattern))
    if groups:
        named = ", ".join(f"stages.{stage}.worker: {pattern!r}" for stage, pattern in groups)
        raise ValueError(
            f"mapping: {named} names a group of nodes, which is observed, not resized; {why}: "
            "expected one node (name@host), or `adaptflow keda` to scale the group's replicas"
        )


def _merge(method: str, replies: list[tuple[str, Any]], members: int = 0) -> Any:
    """A group's replies as one node's: task lists joined; stats with every node's processes,
    their start-up concurrencies summed, and as ``pid`` the (node, pid) pairs, so a node that
    joins, leaves or restarts reads as a restart (the ledger re-bases the pool on what runs).

    With fewer replies than ``members`` the read is partial: a task list is None (as a silent
    node's: the monitor falls back on the tasks' records, rather than read a member's running
    visits as gone) and the stats say ``partial`` (the ledger keeps the pool, as for a silent
    node, rather than re-base it down and up again)."""
    if method != "stats":
        return None if len(replies) < members else [task for _, tasks in replies for task in tasks or []]
    return {
        "partial": len(replies) < members,
        "pid": tuple((node, s.get("pid")) for node, s in replies),
        "pool": {
            "processes": [p for _, s in replies for p in s.get("pool", {}).get("processes", [])],
            "max-concurrency": sum(s.get("pool", {}).get("max-concurrency") or 0 for _, s in replies),
        },
        "autoscaler": None,  # a group's nodes are sized by KEDA, not by a Celery autoscaler
        "nodes": [node for node, _ in replies],
    }


__all__ = ["GLOB_CHARACTERS", "NodeReader", "Roster", "covers", "is_group", "refuse_groups"]

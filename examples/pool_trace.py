"""Run one Celery worker with its prefork pool's scheduler logged: how the shrink race was found.

Diagnosis only, not part of adaptflow: it wraps private methods of Celery 5.7's
``celery.concurrency.asynpool.AsynPool`` (they may change in any release) and leaves the app and
its tasks as they are. Each line of ``--out`` (JSON) is one change: the pool grew or shrank, a
process came up or was reaped, or the scheduler became unable (``blocked``) or able again to
write a waiting task (the pipes it may write to, ``inq``; those it counts busy, ``busy``; the
processes ``procs`` as ``[pid, pipe, alive]``; tasks waiting in the worker, ``out``)::

    python -m examples.pool_trace --out write.jsonl --app examples.etl_app.app:app -- \\
        -Q write -n write@%h -c 1 -E --without-gossip --without-mingle
    celery -A examples.etl_app.app control -d write@$(hostname) pool_grow 1   # ... pool_shrink 1
    python -m examples.pool_trace --summary write.jsonl

``--summary`` prints, per shrink, the seconds until the pool reaped the retired process (docs:
sim_to_real.md, "The stall after a shrink, found"): 0.3 s or less when it died at once, else at the
pool's next maintenance tick; and every stretch of a second or more in which a task waited in
the worker while the scheduler saw no pipe to write it to."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from typing import Any, TextIO

import celery.concurrency.asynpool as asynpool

LOGGED = ("grow", "shrink", "on_process_alive")


def _state(pool: Any, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "t": time.time(), "kind": kind, "busy": sorted(pool._busy_workers), "inq": sorted(pool._all_inqueues),
        "procs": [[p.pid, p.inqW_fd, p._is_alive()] for p in pool._pool], "out": len(pool.outbound_buffer),
        "processes": pool._processes, **extra,
    }  # fmt: skip


def install(out: TextIO) -> None:
    """Wrap the pool's methods so that each change writes a line to ``out``."""

    def write(pool: Any, kind: str, **extra: Any) -> None:
        out.write(json.dumps(_state(pool, kind, **extra), default=str) + "\n")
        out.flush()

    for name in LOGGED:
        method = getattr(asynpool.AsynPool, name)

        def wrapped(self: Any, *args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            try:
                return _method(self, *args, **kwargs)
            finally:
                write(self, _name)

        setattr(asynpool.AsynPool, name, wrapped)
    _wrap_handlers(write)


def _wrap_handlers(write: Any) -> None:
    """The handlers the pool builds per event loop: process up and down, and the scheduler's
    per-iteration check (logged only when whether it can write changes)."""
    pool_class = asynpool.AsynPool
    build_writers, build_processes = pool_class._create_write_handlers, pool_class._create_process_handlers

    def create_write_handlers(self: Any, hub: Any, *args: Any, **kwargs: Any) -> Any:
        result = build_writers(self, hub, *args, **kwargs)
        inner, last = self.on_poll_start, [None]

        def on_poll_start() -> None:
            inner()
            blocked = bool(self.outbound_buffer) and len(self._busy_workers) >= len(self._all_inqueues)
            if blocked != last[0]:
                last[0] = blocked
                write(self, "blocked" if blocked else "unblocked")

        self.on_poll_start = on_poll_start
        return result

    def create_process_handlers(self: Any, hub: Any, *args: Any, **kwargs: Any) -> Any:
        result = build_processes(self, hub, *args, **kwargs)
        up, down = self.on_process_up, self.on_process_down

        def on_up(proc: Any) -> None:
            up(proc)
            write(self, "process_up", pid=proc.pid)

        def on_down(proc: Any) -> None:
            down(proc)
            write(self, "process_down", pid=proc.pid)

        self.on_process_up, self.on_process_down = on_up, on_down
        return result

    asynpool.AsynPool._create_write_handlers = create_write_handlers
    asynpool.AsynPool._create_process_handlers = create_process_handlers


LATE = 0.6
"""Seconds after a shrink past which its reap was late: the prompt reaps took at most 0.6 s
(the retired process's death message read at once), the late ones waited for a tick, 0.9 s on."""


def summary(path: str) -> list[str]:
    """Per shrink that retired a process, the seconds until it was reaped; each stretch of a
    second or more the scheduler was blocked with a task waiting; and, last, the share of the
    shrinks reaped late (an upper bound on a scenario's ``late_reap``, the share that also held
    a task: not every late window is written to, docs/sim_to_real.md)."""
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    out, blocked_at, delays = [], None, []
    for i, rec in enumerate(lines):
        if rec["kind"] == "shrink" and (i == 0 or rec["processes"] < _processes_before(lines, i)):
            down = next((r for r in lines[i + 1 :] if r["kind"] == "process_down"), None)
            delays += [down["t"] - rec["t"]] if down else []
            reaped = f"reaped {down['t'] - rec['t']:.2f} s later" if down else "not reaped in the log"
            out.append(f"shrink at {rec['t']:.2f}: {reaped} (busy {rec['busy']}, pipes {rec['inq']})")
        elif rec["kind"] == "blocked":
            blocked_at = rec
        elif rec["kind"] == "unblocked" and blocked_at is not None:
            if rec["t"] - blocked_at["t"] >= 1.0:
                out.append(f"blocked at {blocked_at['t']:.2f} for {rec['t'] - blocked_at['t']:.2f} s: {blocked_at}")
            blocked_at = None
    if delays:
        late = sum(d > LATE for d in delays)
        out.append(
            f"{late} of {len(delays)} shrinks reaped more than {LATE} s later: a share of {late / len(delays):.2f}"
        )
    return out


def _processes_before(lines: list[dict[str, Any]], i: int) -> int:
    return next((r["processes"] for r in reversed(lines[:i]) if "processes" in r), lines[i]["processes"] + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON lines of the pool's changes")
    parser.add_argument("--app", help="MODULE:APP of the worker")
    parser.add_argument("--summary", metavar="FILE", help="print the reaps and stalls of a trace, and stop")
    parser.add_argument("worker", nargs="*", help="after --: the celery worker's own arguments")
    args = parser.parse_args(argv)
    if args.summary:
        print("\n".join(summary(args.summary)))
        return 0
    if not (args.out and args.app):
        parser.error("give --out FILE and --app MODULE:APP (or --summary FILE)")
    module, _, name = args.app.partition(":")
    app = getattr(importlib.import_module(module), name or "app")
    install(open(args.out, "a", encoding="utf-8"))  # noqa: SIM115  (open for the worker's life)
    app.worker_main(["worker", *args.worker])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start a stage's Celery worker for a scenario: ``python -m adaptflow.runtime.worker``.

    python -m adaptflow.runtime.worker --scenario quality_drift --broker redis://127.0.0.1:6379/0 \\
        --time-scale 10 --stage ingest --concurrency 3            # managed by CeleryExecutor
    python -m adaptflow.runtime.worker ... --stage ingest --autoscale 8,1   # Celery's autoscaler

A managed worker runs without ``--autoscale`` (Celery refuses ``pool_grow``/``pool_shrink``
while its autoscaler is on). ``--visibility-timeout`` (default: the run's rule,
:func:`~adaptflow.runtime.celery_app.default_visibility_timeout`) is how long a visit delivered to
a worker that died whole waits before it is handed out again; give every worker of a run the
same. :class:`WorkerProcess` starts one as a subprocess and stops it; the tests and
``adaptflow compare-live`` use it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery

from .celery_app import TRANSIENT_ERRORS, make_app


def node_name(stage: str, host: str | None = None) -> str:
    """The Celery node name of a stage's worker: ``<stage>@<host>``."""
    return f"{stage}@{host or socket.gethostname()}"


def expand_node(name: str) -> str:
    """Celery's ``%h`` in a node name is the host name; the destination of a control command
    must be the expanded name."""
    return name.replace("%h", socket.gethostname())


def worker_argv(
    stage: str,
    concurrency: int | None = None,
    autoscale: tuple[int, int] | None = None,
    name: str | None = None,
    loglevel: str = "WARNING",
) -> list[str]:
    """``celery worker`` arguments for a stage's worker: its queue, its node name, a prefork pool
    of ``concurrency`` processes or Celery's autoscaler (``(max, min)``)."""
    if (concurrency is None) == (autoscale is None):
        raise ValueError("give a worker either a fixed concurrency (managed) or autoscale=(max, min)")
    argv = ["worker", "--pool", "prefork", "-Q", stage, "-n", name or node_name(stage), "--loglevel", loglevel]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]  # no chatter between nodes
    if autoscale is not None:
        argv.append(f"--autoscale={autoscale[0]},{autoscale[1]}")
    else:
        argv += ["--concurrency", str(concurrency)]
    return argv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m adaptflow.runtime.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--prefix", default="adaptflow")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stage", required=True, help="the stage (queue) this worker serves")
    parser.add_argument("--name", default=None, help="node name (default: STAGE@HOST)")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--autoscale", default=None, metavar="MAX,MIN")
    parser.add_argument("--loglevel", default="WARNING")
    parser.add_argument(
        "--visibility-timeout", type=float, default=None, metavar="SECONDS",
        help="wall seconds before a dead worker's unacknowledged visits are redelivered "
        "(default: 4 x the longest expected visit at this time scale, at least 10 s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    autoscale = tuple(int(x) for x in args.autoscale.split(",")) if args.autoscale else None
    app = make_app(args.scenario, args.broker, args.time_scale, args.prefix, args.seed, args.visibility_timeout)
    app.worker_main(worker_argv(args.stage, args.concurrency, autoscale, args.name, args.loglevel))  # type: ignore[arg-type]


class WorkerProcess:
    """A stage's Celery worker as a subprocess (its own process group, so that stopping it also
    stops its prefork children)."""

    def __init__(
        self,
        scenario: str | Path,
        broker_url: str,
        stage: str,
        *,
        time_scale: float = 1.0,
        prefix: str = "adaptflow",
        concurrency: int | None = None,
        autoscale: tuple[int, int] | None = None,
        name: str | None = None,
        seed: int | None = None,
        log_path: str | Path | None = None,
        visibility_timeout: float | None = None,
    ):
        self.stage, self.name = stage, expand_node(name or node_name(stage))
        self.argv = [
            sys.executable, "-m", "adaptflow.runtime.worker", "--scenario", str(scenario), "--broker", broker_url,
            "--time-scale", str(time_scale), "--prefix", prefix, "--stage", stage, "--name", self.name,
        ]  # fmt: skip
        if concurrency is not None:
            self.argv += ["--concurrency", str(concurrency)]
        if autoscale is not None:
            self.argv += ["--autoscale", f"{autoscale[0]},{autoscale[1]}"]
        if seed is not None:
            self.argv += ["--seed", str(seed)]
        if visibility_timeout is not None:
            self.argv += ["--visibility-timeout", str(visibility_timeout)]
        worker_argv(stage, concurrency, autoscale)  # validates the pool options now, not in the child
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"worker {self.name} is not started")
        return self.process.pid

    def wait_ready(self, app: Celery, timeout: float = 30.0) -> None:
        """Wait until the worker answers a ping (its consumer is connected and listening). A ping
        through a broker connection that a Redis restart left stale fails once; the next one
        reconnects."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                if app.control.ping(destination=[self.name], timeout=0.5):
                    return
            except TRANSIENT_ERRORS:
                time.sleep(0.1)
        raise TimeoutError(f"worker {self.name} did not answer a ping within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of the whole process group if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)
        except ProcessLookupError:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # orphaned prefork children
                os.killpg(self.process.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()

"""SIGTERM read as Ctrl-C, for commands whose clean stop is their ``finally`` blocks; shared by
every room that runs such a command, and it depends on nothing of theirs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does, so a service
    manager's stop runs the same clean-up (a producer's process group stopped, a run's rows kept)
    instead of ending the process on the spot. The caller's handler is back afterwards (``main``
    also runs inside other processes, a test's among them). Off the main thread, where Python
    takes no signal handler, it changes nothing. Training keeps a handler of its own
    (``experiments/training.py``): it must also ignore a second SIGTERM while its final checkpoint
    is written, which a clean-up of processes does not need."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["sigterm_as_interrupt"]

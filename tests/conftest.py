"""Shared fixtures: the live world's redis-server and Celery workers (tests/live_fixtures.py),
and how `make test` shares the tests between two processes (pytest-xdist, ``--dist loadgroup``).

Every test that needs the real redis-server is marked ``live`` and put in one group, so the live
tests run one at a time in one process, as they would alone: they start real workers, kill
them and restart Redis, and two of them at once would only measure each other. They spend most
of their time waiting on those workers, which leaves a core to the other process. Every other
test is grouped by its module, so a module's expensive fixture (a trained model) is built once,
not once per process.
"""

from __future__ import annotations

import pytest

from .live_fixtures import broker, redis_server, workers

__all__ = ["broker", "redis_server", "workers"]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.live)
            item.add_marker(pytest.mark.xdist_group("live"))
        else:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else item.nodeid))

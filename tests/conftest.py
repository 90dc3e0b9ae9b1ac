"""Shared fixtures: the live world's redis-server and Celery workers (tests/live_fixtures.py),
and how `make test` shares the tests between processes (pytest-xdist, ``--dist loadgroup``).

Every test that needs the real redis-server is marked ``live`` and put in one group. `make test`
runs them in a process of their own, one at a time, as they would alone: they start real
workers, kill them and restart Redis, and two of them at once would only measure each other.
They spend most of their time waiting on those workers, so the rest run beside them in two more
processes at a lower CPU priority (``nice``, the Makefile): those take the cores the live tests
leave idle, and a live test's workers still get the CPU first. Measured on the 2-vCPU VM: the
suite in 324 s against 376 s as two equal processes with the live tests in one (2026-12-07).
Run as ``pytest -n 2 --dist loadgroup`` the group keeps the live tests in one process.

A test that uses a module-scoped fixture (a trained model) is grouped by its module, so that
fixture is built once, not once per process; modules that share one name the same group
(``pytestmark``). Every other test is a unit of its own, so the processes end together: grouped
whole, a module of long independent tests (training, the queueing theory: 2-3 minutes each)
kept one process busy after the other had run out of work.
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
        elif not any(item.iter_markers("xdist_group")) and _uses_a_shared_fixture(item):  # or names its group
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else item.nodeid))


def _uses_a_shared_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` asks for a fixture built once per module or class (by name or through
    another fixture). Unknown (not a plain test function): yes, the safe answer."""
    info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the fixtures an item uses
    if info is None:
        return True
    return any(defs and defs[-1].scope in ("module", "class", "package") for defs in info.name2fixturedefs.values())


def pytest_collection_finish(session: pytest.Session) -> None:
    """Under ``--dist loadgroup`` a lost group fails the run instead of passing it silently with
    the live tests spread over both processes: pytest-xdist marks a group by a suffix of the
    test's id, which pytest 9.2's structured ids drop (pytest-xdist#1386; pyproject pins pytest
    below it)."""
    if not getattr(session.config.option, "loadgroup", False):  # set in an xdist worker only
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("live") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(
            f"--dist loadgroup: {len(lost)} live tests lost their group ({lost[0]}); "
            "this pytest and pytest-xdist do not keep groups (pytest-xdist#1386)"
        )


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_in_the_test_tree(tmp_path_factory: pytest.TempPathFactory):
    """SB3 makes an empty ``SB3-<date>`` folder in the system's temp directory for every
    ``learn()`` that logs nowhere (tests train bare models); point it into pytest's own tree,
    which pytest prunes, instead of leaving one behind per test run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3-logs")))
        yield


@pytest.fixture
def erlang_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The Erlang B recursion steps the staffing rule takes (its whole work), counted in ``[0]``:
    tests bound work by counting it, not by timing it on a shared machine."""
    from adaptflow.policies import staffing

    counted = [0]
    original = staffing.erlang_b_steps

    def counting(offered_load: float, most: int):
        for step in original(offered_load, most):
            counted[0] += 1
            yield step

    monkeypatch.setattr(staffing, "erlang_b_steps", counting)
    return counted

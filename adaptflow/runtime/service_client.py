"""The planner service as a loop's planner: ``--planner service:URL`` for ``adaptflow control``
and ``adaptflow keda``.

A platform team may serve its planner in one place (``adaptflow serve``: one hardened process
holding the model, its guard, its metrics and its token) and run the decision loop beside the
app. :class:`ServicePlanner` is then the loop's planner: every decision's snapshot is POSTed to
``/v1/decide`` and the answer is the plan. Only the snapshot is sent, never the loop's
insights: the service turns the snapshots into insights with its own analyzer, the one saved
with an exported model (its fitted forecaster and normalization), so the model decides on what
it was trained with. That makes the service stateful: **one service serves one decider**, as
its docstring says; two loops sharing one would mix their snapshots in its analyzer. When the
loop starts it resets the service (``POST /v1/reset``), as every loop resets its planner.

Anything that goes wrong (the service unreachable, slow past the timeout, a 4xx or 5xx, an
answer that is not a plan) raises, and the loop's :class:`~.fallback.FallbackPlanner` decides
with its rule for that decision, counted and logged; the service's own fallbacks (its primary
failed, its guard took over) come back as plans and are counted here. The service is checked
when the planner is made: it must answer ``/healthz`` for the loop's scenario and decision
interval, else the loop refuses to start, naming both.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from adaptflow._json import split_from_json
from adaptflow.agents import Insights, MetricsSnapshot, Plan, Planner

if TYPE_CHECKING:
    from adaptflow.scenario import Scenario

log = logging.getLogger(__name__)

PREFIX = "service:"
TOKEN_ENV = "ADAPTFLOW_TOKEN"  # the variable ``adaptflow serve`` reads its token from, by default
MAX_ANSWER = 64 * 1024  # bytes: a plan is a few hundred; a larger answer is not the service's


class ServiceError(RuntimeError):
    """The service did not answer with a plan."""


# What a request meets when no adaptflow serve answers: no listener or a timeout (OSError), a
# server that does not speak HTTP (HTTPException), a body that is not JSON (ValueError), an
# answer that is not the service's (ServiceError).
UNANSWERED = (OSError, http.client.HTTPException, ValueError, ServiceError)


def is_service_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


class ServicePlanner(Planner):
    """Each decision asked of the planner service at ``url`` (see the module docstring).
    ``token``: the bearer token (default: ``$ADAPTFLOW_TOKEN``, as ``adaptflow serve`` reads it);
    ``timeout``: seconds a request may take (default: a fifth of the interval, 1 to 5 s), after
    which the loop's fallback rule decides."""

    def __init__(
        self,
        url: str,
        scenario: Scenario,
        interval: float,
        token: str | None = None,
        timeout: float | None = None,
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"planner 'service:{url}': expected service:http://HOST:PORT (the planner service's URL)")
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout if timeout is not None else min(5.0, max(1.0, interval / 5))
        self.service_fallbacks = 0  # decisions the service's own fallback made (it says why)
        self._check(scenario, interval)

    @classmethod
    def from_spec(cls, spec: str, scenario: Scenario, interval: float) -> ServicePlanner:
        return cls(spec.removeprefix(PREFIX), scenario, interval)

    def _check(self, scenario: Scenario, interval: float) -> None:
        """Refuse a service that is not there, or plans for another scenario or interval."""
        try:
            health = self._call("GET", "/healthz")
        except UNANSWERED as exc:  # nothing there, or something that is not adaptflow serve
            said = " ".join(str(exc).split())  # one line, whatever a stranger answered
            reason = said if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {said}"
            raise ValueError(f"planner service {self.url}: {reason}; expected adaptflow serve answering there") from exc
        problems = []
        if health.get("scenario") != scenario.name:
            problems.append(f"it plans for scenario {health.get('scenario')!r}, the loop runs {scenario.name!r}")
        served = health.get("interval")
        if not isinstance(served, int | float) or not math.isclose(served, interval, rel_tol=1e-9):
            problems.append(f"it decides every {served} s, the loop every {interval:g} s (--interval)")
        if problems:
            raise ValueError(f"planner service {self.url}: " + "; ".join(problems))

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # the URL was checked: http(s) only
                raw = response.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode(errors="replace")
            raise ServiceError(f"{method} {path} answered {exc.code}: {detail}") from exc
        if len(raw) > MAX_ANSWER:
            raise ServiceError(f"{method} {path} answered more than {MAX_ANSWER} bytes")
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise ServiceError(f"{method} {path} answered {type(answer).__name__}, not an object")
        return answer

    def reset(self) -> None:
        """The service forgets the past as the loop starts (``POST /v1/reset``: its analyzer and
        its planners' own state), so a loop started again does not decide on the last one's
        smoothed rates or a recurrent policy's memory. A service that cannot is logged, not fatal:
        its answers still come, and the fallback covers the rest."""
        try:
            self._call("POST", "/v1/reset")
        except UNANSWERED as exc:
            log.warning("the planner service %s was not reset (%s): it decides on what it saw before", self.url, exc)

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        answer = self._call("POST", "/v1/decide", {"metrics": snapshot.to_dict()})
        workers, splits = answer.get("workers"), answer.get("splits", {})
        if not isinstance(workers, dict) or not isinstance(splits, dict):
            raise ServiceError(f"POST /v1/decide answered {sorted(answer)}: expected workers and splits")
        if answer.get("fallback"):
            self.service_fallbacks += 1
            log.info("the planner service's fallback decided: %s", answer.get("reason"))
        return Plan(workers=dict(workers), splits={o: split_from_json(s) for o, s in splits.items()})


__all__ = ["PREFIX", "ServiceError", "ServicePlanner", "is_service_spec"]

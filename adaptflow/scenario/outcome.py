"""The outcome of one stage visit, once its service time is over: the one rule both worlds call.

A served attempt first may fail (``failure.prob``): the item then queues again at the back of the
same stage while it has retries left (:attr:`Outcome.FAILED_RETRY`), else it is given up
(:attr:`Outcome.GAVE_UP`). An attempt that did not fail is done; a validation stage then flags a
bad item with ``detect_prob`` (:attr:`Outcome.DETECTED`) and a good one with
``false_positive_prob`` (:attr:`Outcome.FALSE_ALARM`); otherwise it is :attr:`Outcome.DONE`.

Why it lives here, and not in the simulator: the SimPy model and the live Celery task both decide
visits, and each used to say this in its own words. The copies differed already in when a
uniform is drawn (the live task drew for a stage whose failure probability is 0). Now both call
:func:`outcome_rule`, so a planner trained in one world sees the same failures and flags in the
other.

Speed: the simulator decides every visit, so :func:`outcome_rule` returns the rule as a closure
built once per stage, with its parameters bound, or ``None`` for a stage with neither failure
nor validation (every visit is done, and nothing is drawn). Draws, in order, per visit: one
failure uniform if ``failure.prob > 0``; then, if the attempt did not fail, one validation
uniform if the stage validates. The simulator gives each its own stream; the live task gives one.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from .routing import Draw
from .schema import Stage


class Outcome(Enum):
    """What a visit's attempt came to. Compare members with ``is``."""

    DONE = "done"  # served, not flagged by this stage
    DETECTED = "detected"  # served; a bad item flagged (a catch)
    FALSE_ALARM = "false_alarm"  # served; a good item flagged
    FAILED_RETRY = "failed_retry"  # the attempt failed; the item queues again at this stage
    GAVE_UP = "gave_up"  # the attempt failed and no retry is left: the item leaves

    @property
    def failed(self) -> bool:
        """The attempt failed (a retry or a give-up): the item was not served."""
        return self is Outcome.FAILED_RETRY or self is Outcome.GAVE_UP

    @property
    def flagged(self) -> bool:
        """This stage flagged the item (rightly or not)."""
        return self is Outcome.DETECTED or self is Outcome.FALSE_ALARM


DONE, DETECTED, FALSE_ALARM = Outcome.DONE, Outcome.DETECTED, Outcome.FALSE_ALARM
FAILED_RETRY, GAVE_UP = Outcome.FAILED_RETRY, Outcome.GAVE_UP

Decide = Callable[[bool, int], Outcome]
"""``decide(bad, attempt)``: the outcome of a visit's attempt, for an item that is ``bad`` (the
truth) and has already failed ``attempt`` times at this stage."""


def outcome_rule(stage: Stage, fail_draw: Draw, check_draw: Draw) -> Decide | None:
    """The visit rule of ``stage`` with its parameters bound: ``decide(bad, attempt)``, drawing
    failure uniforms from ``fail_draw`` and validation uniforms from ``check_draw`` (they may be
    the same source). ``None`` when every visit is :attr:`Outcome.DONE` with no draw."""
    fail_prob = stage.failure.prob if stage.failure is not None else 0.0
    max_retries = stage.failure.max_retries if stage.failure is not None else 0
    validates = stage.validation is not None
    detect = stage.validation.detect_prob if stage.validation is not None else 0.0
    false_positive = stage.validation.false_positive_prob if stage.validation is not None else 0.0
    if not fail_prob and not validates:
        return None

    def decide(bad: bool, attempt: int) -> Outcome:
        if fail_prob and fail_draw() < fail_prob:
            return FAILED_RETRY if attempt < max_retries else GAVE_UP
        if validates:
            u = check_draw()
            if bad:
                return DETECTED if u < detect else DONE
            return FALSE_ALARM if u < false_positive else DONE
        return DONE

    return decide


def visit_outcome(stage: Stage, bad: bool, attempt: int, fail_draw: Draw, check_draw: Draw) -> Outcome:
    """The outcome of one attempt at ``stage`` (the one-off form of :func:`outcome_rule`)."""
    decide = outcome_rule(stage, fail_draw, check_draw)
    return DONE if decide is None else decide(bad, attempt)

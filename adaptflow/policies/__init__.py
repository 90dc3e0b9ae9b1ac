"""Planners: rules, queueing-theory staffing, the clairvoyant bound and RL wrappers."""

from .static import StaticPlanner

__all__ = ["StaticPlanner"]

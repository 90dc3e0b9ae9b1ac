"""Shared fixtures: the live world's redis-server and Celery workers (tests/live_fixtures.py)."""

from .live_fixtures import broker, redis_server, workers

__all__ = ["broker", "redis_server", "workers"]

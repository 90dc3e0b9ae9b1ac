"""Celery apps adaptflow did not write, for the tests that observe and control a user's app."""

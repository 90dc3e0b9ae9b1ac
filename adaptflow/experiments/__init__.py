"""Experiments: every command of the CLI is a Python function here first."""

from .simulation import simulate, summary_table, write_timeseries

__all__ = ["simulate", "summary_table", "write_timeseries"]

"""Atomic file writes for the experiments (they live in :mod:`adaptflow._io`, below every room,
since the runtime's export writes atomically too)."""

from adaptflow._io import atomic_write, atomic_write_text

__all__ = ["atomic_write", "atomic_write_text"]

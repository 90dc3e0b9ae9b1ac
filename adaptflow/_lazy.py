"""Names of a package resolved on first use (PEP 562), shared by the packages that need it.

Why: ``import adaptflow.agents`` or ``import adaptflow.policies`` must not load SimPy, SB3 or the
staffing rules for a deployed ONNX planner that uses none of them, while ``from
adaptflow.policies import ErlangPlanner`` keeps working for everyone else."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, table: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` for ``package``: ``table`` maps each lazy name to
    the relative module that defines it. A resolved name is stored in the package's namespace,
    so the lookup runs once per name."""
    namespace = vars(importlib.import_module(package))

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *table])

    return __getattr__, __dir__

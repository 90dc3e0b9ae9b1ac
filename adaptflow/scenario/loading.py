"""Finding, reading and validating scenario files; turning pydantic's errors into one line per problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from adaptflow._io import atomic_write_text
from adaptflow._yaml import load_yaml_file

from .base import ScenarioError
from .schema import Scenario


def shipped_scenarios_dir() -> Path:
    """Where the shipped scenarios live: inside an installed wheel, or the source checkout."""
    packaged = Path(__file__).resolve().parents[1] / "_configs" / "scenarios"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs" / "scenarios"


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in shipped_scenarios_dir().glob("*.yaml"))


def resolve_scenario_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped scenario (``mmc``, ``etl_diurnal``...)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ScenarioError(f"scenario file {str(path)!r} does not exist")
        return path
    candidate = shipped_scenarios_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ScenarioError(
        f"scenario {str(name_or_path)!r} is neither a file nor a shipped scenario; "
        f"expected a path or one of: {', '.join(shipped_scenarios())}"
    )


def save_scenario(scenario: Scenario, path: str | Path) -> Path:
    """``scenario`` written to ``path`` (atomically) so that :func:`load_scenario` reads it back
    the same: every field spelled out, the files it names by the absolute paths it resolved."""
    return atomic_write_text(path, yaml.safe_dump(scenario.model_dump(mode="json", by_alias=True), sort_keys=False))


def load_scenario(name_or_path: str | Path | Scenario, **overrides: Any) -> Scenario:
    """Load, validate and return a scenario; raise :class:`ScenarioError` listing every problem.

    ``overrides`` replace top-level fields (``seed=3``, ``horizon=500``) and are validated too."""
    if isinstance(name_or_path, Scenario):
        if not overrides:
            return name_or_path
        data, label, base = name_or_path.model_dump(mode="json", by_alias=True), name_or_path.name, None
    else:
        path = resolve_scenario_path(name_or_path)
        label, base = str(path), path.resolve().parent
        try:
            data = load_yaml_file(path)
        except ValueError as exc:
            raise ScenarioError(str(exc)) from None
        if not isinstance(data, dict):
            raise ScenarioError(f"{label}: expected a mapping of scenario fields, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_scenario(data, label=label, base_dir=base)


def parse_scenario(data: dict[str, Any], label: str = "scenario", base_dir: Path | None = None) -> Scenario:
    """Validate a scenario given as a dict (relative trace paths resolve against ``base_dir``)."""
    try:
        return Scenario.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, data, label)) from None


_DISCRIMINATORS = ("process", "shape", "kind", "dist")


def _clean_loc(data: Any, loc: tuple[Any, ...]) -> str:
    """Turn pydantic's error location into the path a user wrote.

    Pydantic inserts union tags (``poisson``, ``split``, ``float``) into locations; drop every
    part that does not exist in the user's data, so ``sources.jobs.poisson.rate`` reads
    ``sources.jobs.rate``."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            tag = any(node.get(k) == part for k in _DISCRIMINATORS) and part not in node
            if tag:
                continue
            parts.append(str(part))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            if parts:
                parts[-1] += f"[{part}]"
            node = node[part] if part < len(node) else None
        else:
            continue  # a union label inside a scalar or list: not part of the user's path
    return ".".join(parts)


def format_validation_error(exc: ValidationError, data: Any, label: str) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        where = _clean_loc(data, tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {err['loc'][-1]!r}; check the spelling against configs/scenarios/README.md"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "union_tag_invalid":
            key = str(err["ctx"]["discriminator"]).strip("'")
            where = f"{where}.{key}" if where else key
            msg = f"{err['ctx']['tag']!r} is not known; expected one of {err['ctx']['expected_tags']}"
        elif err["type"] == "union_tag_not_found":
            key = str(err["ctx"]["discriminator"]).strip("'")
            msg = f"needs a {key!r} field; got {err['input']!r}"
        elif err["type"] != "value_error":
            msg = f"{msg} (got {err['input']!r})"
        for line in msg.split("\n"):
            lines.append(f"{where}: {line}" if where else line)
    return f"{label}: invalid scenario\n  " + "\n  ".join(dict.fromkeys(lines))

"""Reading a user's YAML file: safe (no tags that build Python objects), strict about duplicate
keys, and every failure a one-line ``ValueError`` that names the file.

Why duplicate keys matter: PyYAML keeps the last of two equal keys, so a scenario with ``work:``
written twice silently loses its first stage. Why the file name: a binary or UTF-16 file used to
fail with ``'utf-8' codec can't decode byte 0xff`` and no hint of which file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key that a mapping already has."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]}); expected each key once",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, label: str) -> Any:
    """Parse ``text``; raise ``ValueError("<label>: ...")`` on any YAML problem, in one line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds no Python objects
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ValueError(f"{label}: not valid YAML: nested too deeply; expected a few levels of mappings") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"{label}: not valid YAML{where}: {' '.join(str(problem).split())}") from None


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file; a file that is not UTF-8 text is named in the error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not a UTF-8 text file (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "expected a YAML file"
        ) from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return load_yaml_text(text, str(path))

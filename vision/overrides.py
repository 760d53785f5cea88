"""Recipe text helpers that need no schema: ``--set key=value`` overrides and ``${VAR}``
expansion in path fields (`vision.config`)."""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import yaml

from vision.errors import ConfigError


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-parsed value."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    if not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    return key.split("."), yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of a raw recipe dict with dotted ``key=value`` overrides applied."""
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {k!r} is not a section")
        node[path[-1]] = value
    return out


def expand_env(value: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` replaced from the environment.

    Raises:
        ValueError: ``VAR`` is unset and there is no default (pydantic words it as a field error).
    """
    def sub(m: re.Match[str]) -> str:
        if (found := os.environ.get(m.group(1)) or m.group(3)) is None:
            raise ValueError(f"{m.group(0)}: {m.group(1)} is not set (or write ${{{m.group(1)}:-default}})")
        return found

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}", sub, value)

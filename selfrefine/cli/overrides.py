"""`--set FIELD=VALUE`: dotted config overrides, shared by the commands that take them (`run`, `eval`)."""

from __future__ import annotations

import yaml

from selfrefine.errors import ConfigError


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted fields from FIELD=VALUE strings; VALUE is YAML (numbers, booleans, lists...)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. generate.temperature=0.7")
        path, value = item.split("=", 1)
        node = raw
        parts = path.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section of the config")
        node[parts[-1]] = yaml.safe_load(value)
    return raw

"""Write a TOML document from plain data (the subset perpstream's config uses).

The harness derives the daemon's config from ``config/bench.toml`` with a
few overrides and hands it to ``perpstream serve --config``; the standard
library reads TOML but does not write it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dump_toml"]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(name: str, data: dict[str, Any], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_table_array(v)}
    if name:
        lines.append(f"[{name}]")
    lines.extend(f"{k} = {_value(v)}" for k, v in scalars.items())
    lines.append("")
    for key, value in data.items():
        path = f"{name}.{key}" if name else key
        if isinstance(value, dict):
            _table(path, value, lines)
        elif _is_table_array(value):
            for item in value:
                lines.append(f"[[{path}]]")
                # Sub-tables of an array item stay inline: simplest valid form.
                lines.extend(f"{k} = {_value(v)}" for k, v in item.items())
                lines.append("")


def dump_toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    _table("", data, lines)
    return "\n".join(lines).lstrip("\n") + "\n"

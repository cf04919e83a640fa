"""Durations as operators write them: "90s", "30m", "3d", "26w", or a number of days."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(value: object) -> timedelta:
    """Parse a duration; a bare number (or a string without a unit) means days."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "3d", not a boolean')
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(days=value)
    if not isinstance(value, str):
        raise ValueError(f'expected a duration like "3d", got {type(value).__name__}')
    match = _PATTERN.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration: use <n>s, <n>m, <n>h, <n>d or <n>w")
    number, unit = float(match.group(1)), match.group(2) or "d"
    return timedelta(seconds=number * _UNITS[unit])


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

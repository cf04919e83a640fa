"""Durations as operators write them: "90s", "30m", "3d", "26w", or a number of days."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


class DurationTooLong(ValueError):
    """Past LONGEST (or past what timedelta holds)."""


def parse_duration(value: object, *, unit_required: bool = False) -> timedelta:
    """Parse a duration; a bare number (or a string without a unit) means days, or, with
    `unit_required` (timeouts: `30` would mean 30 days), is refused."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "3d", not a boolean')
    if isinstance(value, int | float):
        if unit_required:
            raise _no_unit(value)
        if value != value:  # NaN
            raise ValueError('expected a duration like "3d", got nan')
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(lambda: timedelta(days=value), value)
    if not isinstance(value, str):
        raise ValueError(f'expected a duration like "3d", got {type(value).__name__}')
    match = _PATTERN.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration: use <n>s, <n>m, <n>h, <n>d or <n>w")
    if unit_required and not match.group(2):
        raise _no_unit(value)
    number, unit = float(match.group(1)), match.group(2) or "d"
    return _bounded(lambda: timedelta(seconds=number * _UNITS[unit]), value)


# Longer than any rule needs, and short enough that now + it is always a date (year 9999).
LONGEST = timedelta(days=36525)


def _bounded(make: Callable[[], timedelta], value: object) -> timedelta:
    try:
        delta = make()
    except (OverflowError, ValueError):  # past timedelta's 999,999,999 days, or inf
        delta = LONGEST * 2
    if delta > LONGEST:
        raise DurationTooLong(f"{value!r} is longer than 100 years")
    return delta


def _no_unit(value: object) -> ValueError:
    return ValueError(f'needs a unit, e.g. "{value}s" (a bare number would mean days)')


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

"""Parsers for config values: each takes what TOML gave and returns the typed value, or
raises ValueError with a reason the operator can act on (daemon.config adds file and key)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from settings import SendWindow
from settings.durations import format_duration, parse_duration

Parser = Callable[[Any], Any]


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def nonempty(value: Any) -> str:
    text = string(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def int_in(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return int(value)

    return parse


def choice(*options: str) -> Parser:
    def parse(value: Any) -> str:
        text = string(value).lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return text

    return parse


def str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def url(value: Any) -> str:
    text = string(value).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError(f"expected an http(s) URL, got {value!r}")
    return text


def zone(value: Any) -> str:
    text = string(value)
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {text!r} (use an IANA name like Europe/Paris)"
        ) from None
    return text


def clock_time(value: Any) -> time:
    text = string(value).strip()
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f"expected HH:MM, got {value!r}")
    return time(int(match.group(1)), int(match.group(2)))


def send_window(value: Any) -> SendWindow | None:
    text = string(value).strip()
    if not text:
        return None
    parts = text.split("-")
    if len(parts) != 2:
        raise ValueError(f'expected "HH:MM-HH:MM" or "", got {value!r}')
    start, end = clock_time(parts[0]), clock_time(parts[1])
    if start == end:
        raise ValueError("the window's start and end are the same")
    return SendWindow(start, end)


def rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number between 0 and 1, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"must be between 0 and 1, got {value}")
    return float(value)


def positive_duration(value: Any, *, unit_required: bool = False) -> timedelta:
    delta = parse_duration(value, unit_required=unit_required)
    if delta <= timedelta(0):
        raise ValueError("must be greater than zero")
    return delta


def timeout(value: Any) -> timedelta:
    """A positive duration written with its unit: a bare number means days for the survey
    delays, so `shutdown_timeout = 30` would wait 30 days; here it is refused instead."""
    return positive_duration(value, unit_required=True)


def short_duration(most: timedelta) -> Parser:
    """A positive duration of at most `most` (a bare number means days elsewhere: here a
    `75` would keep connections 75 days, so the bound says what was meant)."""

    def parse(value: Any) -> timedelta:
        delta = timeout(value)
        if delta > most:
            raise ValueError(f"must be at most {format_duration(most)} "
                             f'(write seconds with a unit: "75s")')
        return delta

    return parse


def sender(value: Any) -> str:
    text = nonempty(value)
    if "@" not in text:
        raise ValueError(f'expected an address like "Acme <nps@acme.example>", got {value!r}')
    return text

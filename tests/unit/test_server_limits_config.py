"""server.keepalive_timeout and server.body_timeout: durations with defaults, bounded, and
passed to aiohttp as the server's options."""

from __future__ import annotations

from datetime import timedelta

import pytest

from daemon.config import ConfigError, parse_settings
from daemon.metrics import Metrics
from daemon.request_counts import server_options


def test_defaults_and_values() -> None:
    settings = parse_settings({})
    assert settings.server.keepalive_timeout == timedelta(seconds=75)
    assert settings.server.body_timeout == timedelta(seconds=30)
    settings = parse_settings({"server": {"keepalive_timeout": "5s", "body_timeout": "2m"}})
    assert settings.server.keepalive_timeout == timedelta(seconds=5)
    assert settings.server.body_timeout == timedelta(minutes=2)


@pytest.mark.parametrize(("key", "value", "says"), [
    ("keepalive_timeout", 75, 'needs a unit, e.g. "75s"'),  # a bare number is days
    ("keepalive_timeout", "2h", "at most 1h"),
    ("keepalive_timeout", "0s", "greater than zero"),
    ("body_timeout", "soon", "not a duration"),
])
def test_bad_values_name_the_key(key: str, value: object, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({"server": {key: value}}, "npsd.toml")
    assert caught.value.key == f"server.{key}" and says in caught.value.reason


def test_server_options_take_the_keepalive_and_stop_aiohttp_inflating() -> None:
    settings = parse_settings({"server": {"keepalive_timeout": "9s"}})
    options = server_options(Metrics(), settings.server)
    assert options["keepalive_timeout"] == 9.0
    assert options["auto_decompress"] is False and options["lingering_time"] == 0

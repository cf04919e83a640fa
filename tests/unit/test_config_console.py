"""The [console] section: viewer tokens and the session lifetime, from the file or the
environment; bad values name the key; short viewer tokens are weak secrets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_settings, parse_settings
from daemon.weak_secrets import weak_secrets

ROOT = Path(__file__).resolve().parent.parent.parent


def test_defaults_and_the_sample_file() -> None:
    settings = load_settings(ROOT / "config.toml", environ={})
    assert settings.console.viewer_tokens == ()
    assert settings.console.session_ttl == timedelta(hours=12)


def test_file_and_environment() -> None:
    raw = {"console": {"viewer_tokens": ["a" * 20], "session_ttl": "30m"}}
    settings = parse_settings(raw, "c.toml")
    assert settings.console.viewer_tokens == ("a" * 20,)
    assert settings.console.session_ttl == timedelta(minutes=30)
    assert "a" * 20 in settings.secrets()  # scrubbed from logs
    env = parse_settings(raw, "c.toml", {"NPSD_CONSOLE_VIEWER_TOKENS": "b" * 20 + ", " + "c" * 20})
    assert env.console.viewer_tokens == ("b" * 20, "c" * 20)
    assert env.origin("console.viewer_tokens") == "environment variable NPSD_CONSOLE_VIEWER_TOKENS"


@pytest.mark.parametrize("section, key", [
    ({"viewer_tokens": 5}, "console.viewer_tokens"),
    ({"session_ttl": "0s"}, "console.session_ttl"),
    ({"session_ttl": "365d"}, "console.session_ttl"),
    ({"colour": "blue"}, "console.colour"),
])
def test_bad_values_name_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"console": section}, "c.toml")
    assert err.value.key == key and err.value.path == "c.toml"


def test_a_short_viewer_token_is_weak() -> None:
    settings = parse_settings({"console": {"viewer_tokens": ["short"]},
                               "intake": {"api_keys": ["k" * 20]}, "admin": {"token": "t" * 20}})
    assert [w.key for w in weak_secrets(settings)] == ["console.viewer_tokens"]

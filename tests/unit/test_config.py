"""daemon/config.py and daemon/durations.py, by tables of cases."""

from __future__ import annotations

import dataclasses
from datetime import time, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.config import (
    ConfigError,
    SendWindow,
    Settings,
    load_settings,
    parse_settings,
)
from daemon.paths import resolve_paths
from settings.durations import format_duration, parse_duration

ROOT = Path(__file__).resolve().parent.parent.parent

# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("3d", timedelta(days=3)),
        ("26w", timedelta(weeks=26)),
        (3, timedelta(days=3)),  # a number means days
        ("3", timedelta(days=3)),  # so does a string without a unit
        ("0", timedelta(0)),
        (0, timedelta(0)),
        (1.5, timedelta(hours=36)),
        ("1.5d", timedelta(hours=36)),
        (" 14d ", timedelta(days=14)),
        ("2 h", timedelta(hours=2)),
    ],
)
def test_parse_duration(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("soon", "not a duration"),
        ("3x", "not a duration"),
        ("", "not a duration"),
        ("-1d", "not a duration"),
        ("3 days", "not a duration"),
        (-1, "negative"),
        (True, "boolean"),
        (None, "NoneType"),
        ([3], "list"),
    ],
)
def test_parse_duration_refuses(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(value)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(weeks=26), "26w"),
        (timedelta(days=3), "3d"),
        (timedelta(hours=12), "12h"),
        (timedelta(minutes=30), "30m"),
        (timedelta(seconds=90), "90s"),
        (timedelta(0), "0s"),
    ],
)
def test_format_duration_round_trips(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
    assert parse_duration(text) == delta


# --- settings ---------------------------------------------------------------------------


def test_empty_file_gives_the_documented_defaults() -> None:
    s = parse_settings({}, "c.toml")
    assert s.server.port == 8787 and s.server.shutdown_timeout == timedelta(seconds=30)
    assert s.storage.url == "sqlite+aiosqlite:///var/npsd.db"
    assert s.intake.api_keys == ("change-me",) and s.intake.max_body_bytes == 16 * 1024 * 1024
    assert s.intake.dedup_window == timedelta(days=7)
    assert s.admin.token == "change-me-too"
    assert s.accounts.session_timeout == timedelta(minutes=30)
    assert (s.survey.min_delay, s.survey.max_delay, s.survey.resurvey_interval) == (
        timedelta(days=3),
        timedelta(days=14),
        timedelta(weeks=26),
    )
    assert s.survey.response_window == timedelta(days=30)
    assert s.survey.reminder_after == timedelta(0) and s.survey.send_window is None
    assert s.email.backend == "file" and s.email.smtp.security == "starttls"
    assert not s.segment.enabled and s.segment.sync_at == time(3, 0)
    assert (s.log.format, s.log.level) == ("json", "info")


def test_the_sample_config_is_every_default() -> None:
    sample = load_settings(ROOT / "config.toml", environ={})
    # Loading resolves the relative paths (daemon.paths), against the working directory here.
    assert dataclasses.replace(sample, source=Settings().source) == resolve_paths(
        Settings(), Path.cwd())


def test_settings_are_frozen() -> None:
    s = parse_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"survey": {"max_delay": 0}}, ("survey", "max_delay", timedelta(0))),
        (
            {"survey": {"send_window": "09:00-17:00"}},
            ("survey", "send_window", SendWindow(time(9), time(17))),
        ),
        (
            {"survey": {"send_window": "22:00-06:00"}},
            ("survey", "send_window", SendWindow(time(22), time(6))),
        ),
        (
            {"survey": {"default_timezone": "Europe/Paris"}},
            ("survey", "default_timezone", "Europe/Paris"),
        ),
        ({"intake": {"api_keys": "a, b"}}, ("intake", "api_keys", ("a", "b"))),
        ({"intake": {"api_keys": [], "shared_secrets": ["s"]}}, ("intake", "api_keys", ())),
        (
            {"segment": {"endpoint": "https://events.eu1.segmentapis.com/v1/"}},
            ("segment", "endpoint", "https://events.eu1.segmentapis.com/v1"),
        ),
        (
            {"server": {"shutdown_timeout": "90s"}},
            ("server", "shutdown_timeout", timedelta(seconds=90)),
        ),
        ({"email": {"backend": "SMTP"}}, ("email", "backend", "smtp")),
        ({"log": {"level": "debug", "format": "console"}}, ("log", "level", "debug")),
    ],
)
def test_values(raw: dict[str, Any], expected: tuple[str, str, Any]) -> None:
    section, key, value = expected
    assert getattr(getattr(parse_settings(raw), section), key) == value


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        ({"serverr": {}}, "serverr", "unknown section"),
        ({"server": {"prot": 1}}, "server.prot", "unknown key"),
        ({"email": {"smtp": {"hots": "x"}}}, "email.smtp.hots", "unknown key"),
        ({"server": 1}, "server", "must be a table"),
        ({"server": {"port": 70000}}, "server.port", "between 0 and 65535"),
        ({"server": {"port": "8787"}}, "server.port", "whole number"),
        ({"server": {"public_url": "example.com"}}, "server.public_url", "http(s) URL"),
        ({"server": {"shutdown_timeout": "0s"}}, "server.shutdown_timeout", "greater than zero"),
        # A bare number means days for the survey delays; a timeout must say its unit.
        ({"server": {"shutdown_timeout": 30}}, "server.shutdown_timeout", 'needs a unit, e.g. "30s"'),
        ({"server": {"shutdown_timeout": "30"}}, "server.shutdown_timeout", "needs a unit"),
        ({"email": {"smtp": {"timeout": 30}}}, "email.smtp.timeout", "needs a unit"),
        ({"console": {"session_ttl": 12}}, "console.session_ttl", "needs a unit"),
        ({"accounts": {"session_timeout": 30}}, "accounts.session_timeout", "needs a unit"),
        ({"survey": {"reminder_after": "40d"}}, "survey.reminder_after",
         "shorter than survey.response_window (30d)"),
        # Past what timedelta holds (each was a traceback), or past any rule's need.
        ({"survey": {"min_delay": 1e309}}, "survey.min_delay", "longer than 100 years"),
        ({"survey": {"min_delay": 9223372036854775807}}, "survey.min_delay", "longer than"),
        ({"survey": {"min_delay": "99999999999999999999d"}}, "survey.min_delay", "longer than"),
        ({"survey": {"min_delay": "40000d"}}, "survey.min_delay", "longer than 100 years"),
        ({"survey": {"min_delay": float("nan")}}, "survey.min_delay", "got nan"),
        ({"storage": {"url": "mysql://db/npsd"}}, "storage.url", "must start with"),
        ({"storage": {"url": ""}}, "storage.url", "must not be empty"),
        ({"intake": {"dedup_window": "a week"}}, "intake.dedup_window", "not a duration"),
        ({"intake": {"api_keys": [1]}}, "intake.api_keys", "list of strings"),
        ({"intake": {"api_keys": []}}, "intake.api_keys", "no API key"),
        ({"intake": {"max_body_bytes": 10}}, "intake.max_body_bytes", "between"),
        ({"admin": {"token": ""}}, "admin.token", "must not be empty"),
        (
            {"accounts": {"one_account_per_user": "yes"}},
            "accounts.one_account_per_user",
            "true or false",
        ),
        ({"survey": {"min_delay": "soon"}}, "survey.min_delay", "'soon' is not a duration"),
        ({"survey": {"resurvey_interval": -1}}, "survey.resurvey_interval", "negative"),
        (
            {"survey": {"min_delay": "3d", "max_delay": "1d"}},
            "survey.max_delay",
            "shorter than survey.min_delay",
        ),
        (
            {"survey": {"default_timezone": "Mars/Olympus"}},
            "survey.default_timezone",
            "unknown timezone",
        ),
        ({"survey": {"send_window": "9-5"}}, "survey.send_window", "HH:MM"),
        ({"survey": {"send_window": "09:00-09:00"}}, "survey.send_window", "the same"),
        ({"survey": {"sample_rate": 1.5}}, "survey.sample_rate", "between 0 and 1"),
        ({"email": {"backend": "sendmail"}}, "email.backend", "one of file, smtp"),
        ({"email": {"from": "nobody"}}, "email.from", "an address"),
        ({"email": {"smtp": {"security": "ssl"}}}, "email.smtp.security", "one of"),
        ({"segment": {"sync_at": "25:00"}}, "segment.sync_at", "HH:MM"),
        ({"segment": {"timezone": "Nowhere"}}, "segment.timezone", "unknown timezone"),
        ({"log": {"level": "verbose"}}, "log.level", "one of"),
    ],
)
def test_errors_name_the_file_and_key(raw: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, "/etc/npsd/config.toml")
    error = caught.value
    assert (error.path, error.key) == ("/etc/npsd/config.toml", key)
    assert reason in error.reason
    assert str(error) == f"/etc/npsd/config.toml: {key}: {error.reason}"


def test_load_settings_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    with pytest.raises(ConfigError, match="file not found") as caught:
        load_settings(missing, environ={})
    assert caught.value.path == str(missing) and str(missing) in str(caught.value)

    broken = tmp_path / "broken.toml"
    broken.write_text("[survey\nmin_delay = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_settings(broken, environ={})
    assert str(broken) in str(caught.value) and "line 1" in str(caught.value)

    good = tmp_path / "good.toml"
    good.write_text('[survey]\nmin_delay = "90s"\n')
    settings = load_settings(good, environ={})
    assert settings.survey.min_delay == timedelta(seconds=90)
    assert settings.origin("storage.url") == str(good)


# --- secrets from the environment and systemd credentials -------------------------------

FILE = {
    "intake": {"api_keys": ["file-key"]},
    "admin": {"token": "file-admin"},
    "segment": {"write_key": "file-write-key"},
    "email": {"smtp": {"password": "file-password"}},
}


def secrets_of(s: Settings) -> tuple[tuple[str, ...], str, str, str]:
    return s.intake.api_keys, s.admin.token, s.segment.write_key, s.email.smtp.password


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "intake_api_keys").write_text("cred-key-1,cred-key-2\n")
    (directory / "admin_token").write_text("cred-admin\n")
    (directory / "segment_write_key").write_text("cred-write-key\n")
    (directory / "smtp_password").write_text("cred-password\n")
    return directory


def test_the_file_alone() -> None:
    assert secrets_of(parse_settings(FILE, env={})) == (
        ("file-key",),
        "file-admin",
        "file-write-key",
        "file-password",
    )


def test_environment_overrides_the_file() -> None:
    env = {
        "NPSD_INTAKE_API_KEYS": "env-1, env-2",
        "NPSD_ADMIN_TOKEN": "env-admin",
        "NPSD_SEGMENT_WRITE_KEY": "env-write-key",
        "NPSD_SMTP_PASSWORD": "env-password",
    }
    assert secrets_of(parse_settings(FILE, env=env)) == (
        ("env-1", "env-2"),
        "env-admin",
        "env-write-key",
        "env-password",
    )


def test_an_empty_variable_does_not_override() -> None:
    env = {"NPSD_ADMIN_TOKEN": "", "NPSD_INTAKE_API_KEYS": ""}
    assert secrets_of(parse_settings(FILE, env=env))[:2] == (("file-key",), "file-admin")


def test_systemd_credentials_override_the_file(credentials: Path) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    assert secrets_of(parse_settings(FILE, env=env)) == (
        ("cred-key-1", "cred-key-2"),
        "cred-admin",
        "cred-write-key",
        "cred-password",
    )


def test_environment_wins_over_credentials(credentials: Path) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(credentials), "NPSD_ADMIN_TOKEN": "env-admin"}
    assert secrets_of(parse_settings(FILE, env=env))[:2] == (
        ("cred-key-1", "cred-key-2"),
        "env-admin",
    )


def test_a_missing_credential_leaves_the_file_value(credentials: Path) -> None:
    (credentials / "admin_token").unlink()
    (credentials / "segment_write_key").unlink()
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    keys, admin, write_key, _ = secrets_of(parse_settings(FILE, env=env))
    assert (keys, admin, write_key) == (
        ("cred-key-1", "cred-key-2"),
        "file-admin",
        "file-write-key",
    )


def test_a_secret_enables_sync_back() -> None:
    assert not parse_settings({}, env={}).segment.enabled
    assert parse_settings({}, env={"NPSD_SEGMENT_WRITE_KEY": "wk"}).segment.enabled


def test_load_settings_reads_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[admin]\ntoken = "file-admin"\n')
    assert load_settings(path, environ={"NPSD_ADMIN_TOKEN": "env"}).admin.token == "env"

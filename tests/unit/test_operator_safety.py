"""Operators protected from their defaults: log scrubbing, sample secrets, state paths and
`--version`, by tables of cases (the acceptance tests run the same through `npsd run`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import daemon.logging as npsd_logging
from daemon.cli import main
from daemon.config import load_settings, parse_settings
from daemon.logging import configure_logging
from daemon.paths import base_directory, resolve_storage_url, sqlite_file
from daemon.weak_secrets import is_loopback, weak_secrets

STRONG = "k3y-that-is-long-enough-xyz"


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """capsys, with npsd's logging writing into it (configured by the test itself: the
    stream it captures into is only in place while the test runs)."""
    yield capsys
    root = logging.getLogger()
    if npsd_logging._stdlib_handler is not None:
        root.removeHandler(npsd_logging._stdlib_handler)
        npsd_logging._stdlib_handler = None
    structlog.reset_defaults()


def start_logging() -> None:
    configure_logging("json", "info", secrets=["Sup3r$ecret/admin-token"])


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_npsd_events_are_scrubbed_in_every_string(logs: pytest.CaptureFixture[str]) -> None:
    start_logging()
    log = structlog.get_logger("npsd.survey")
    log.warning("survey.failed", survey_id=1, code=550,
                reason="5.1.1 <ann.smith@example.com>: unknown",
                details={"rcpt": ["bob@example.org"]}, path=Path("/s/Zx9_aB-cD3eF4gH5iJ6kL7mN8"))
    [line] = lines(logs)
    text = json.dumps(line)
    assert "ann.smith" not in text and "bob@" not in text and "Zx9_aB" not in text
    assert line["reason"] == "5.1.1 <[email]>: unknown" and line["code"] == 550


def test_library_records_and_tracebacks_are_scrubbed(logs: pytest.CaptureFixture[str]) -> None:
    start_logging()
    try:
        raise ValueError("b'Authorization: Bearer Sup3r$ecret/admin-token\\x01' from ann@x.io")
    except ValueError:
        logging.getLogger("aiohttp.server").exception(
            "Error handling request GET /u/Zx9_aB-cD3eF4gH5iJ6kL7mN8")
    [line] = lines(logs)
    assert line["logger"] == "aiohttp.server" and "Traceback" in str(line["exception"])
    text = json.dumps(line)
    for leaked in ("Sup3r$ecret", "ann@x.io", "Zx9_aB"):
        assert leaked not in text


def test_a_configured_secret_is_blanked_wherever_it_appears(
        logs: pytest.CaptureFixture[str]) -> None:
    start_logging()
    structlog.get_logger().error("sync.failed", reason='{"key": "Sup3r$ecret/admin-token"}')
    assert "Sup3r$ecret" not in json.dumps(lines(logs))


# --- paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "expected"), [
    ({"STATE_DIRECTORY": "/var/lib/npsd"}, Path("/var/lib/npsd")),
    ({"STATE_DIRECTORY": "/var/lib/npsd:/var/lib/other"}, Path("/var/lib/npsd")),
    ({"STATE_DIRECTORY": ""}, None),
    ({"STATE_DIRECTORY": "relative/dir"}, None),  # systemd always gives absolute paths
    ({}, None),
])
def test_base_directory(env: dict[str, str], expected: Path | None) -> None:
    assert base_directory(env) == (expected or Path.cwd())


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite+aiosqlite:///var/npsd.db", "sqlite+aiosqlite:////state/var/npsd.db"),
    ("sqlite+aiosqlite:///npsd.db?timeout=5", "sqlite+aiosqlite:////state/npsd.db?timeout=5"),
    ("sqlite+aiosqlite:////srv/npsd.db", "sqlite+aiosqlite:////srv/npsd.db"),
    ("sqlite+aiosqlite://", "sqlite+aiosqlite://"),
    ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
    ("postgresql+asyncpg://npsd:pw@db/npsd", "postgresql+asyncpg://npsd:pw@db/npsd"),
])
def test_relative_sqlite_paths_resolve_against_the_base(url: str, expected: str) -> None:
    assert resolve_storage_url(url, Path("/state")) == expected


def test_loading_resolves_storage_and_outbox_against_the_state_directory(
        tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[email]\nfile_dir = "var/outbox"\n')
    s = load_settings(config, environ={"STATE_DIRECTORY": "/var/lib/npsd:/var/lib/npsd-b"})
    assert sqlite_file(s.storage.url) == Path("/var/lib/npsd/var/npsd.db")
    assert s.email.file_dir == Path("/var/lib/npsd/var/outbox")


# --- sample secrets --------------------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST.", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("npsd.internal", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("raw", "weak"), [
    ({}, {("intake.api_keys", "still the sample value"),
          ("admin.token", "still the sample value")}),
    ({"intake": {"api_keys": [STRONG]}, "admin": {"token": STRONG}}, set()),
    ({"intake": {"api_keys": [STRONG, "short"]}, "admin": {"token": STRONG}},
     {("intake.api_keys", "shorter than 16 characters")}),
    ({"intake": {"api_keys": [STRONG]}, "admin": {"token": "change-me"}},
     {("admin.token", "still the sample value")}),
    ({"intake": {"api_keys": [STRONG], "shared_secrets": [STRONG, "short"]},
      "admin": {"token": STRONG}},
     {("intake.shared_secrets", "shorter than 16 characters")}),
])
def test_weak_secrets(raw: dict[str, dict[str, object]], weak: set[tuple[str, str]]) -> None:
    assert {(w.key, w.reason) for w in weak_secrets(parse_settings(raw, "c.toml"))} == weak


def test_a_weak_secret_from_the_environment_names_its_variable_never_its_value() -> None:
    s = parse_settings({"intake": {"api_keys": [STRONG]}, "admin": {"token": STRONG}},
                       "c.toml", {"NPSD_ADMIN_TOKEN": "tiny-t0ken"})
    [weak] = weak_secrets(s)
    assert weak.origin == "environment variable NPSD_ADMIN_TOKEN"
    message = weak.message()
    assert "admin.token" in message and "secrets.token_urlsafe(32)" in message
    assert "tiny-t0ken" not in message


def test_a_credential_names_its_credential(tmp_path: Path) -> None:
    (tmp_path / "intake_api_keys").write_text("change-me\n")
    s = parse_settings({"admin": {"token": STRONG}}, "c.toml",
                       {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    [weak] = weak_secrets(s)
    assert (weak.key, weak.origin) == ("intake.api_keys", "systemd credential intake_api_keys")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("npsd ") and out.split()[1][0].isdigit()

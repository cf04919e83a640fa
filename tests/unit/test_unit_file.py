"""systemd/npsd.service: systemd accepts it, and it asks for what the SPEC promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from daemon.config import ServerSettings
from settings.durations import parse_duration

ROOT = Path(__file__).resolve().parent.parent.parent
UNIT = ROOT / "systemd" / "npsd.service"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → every value (keys such as LoadCredential= repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a setting outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    """A systemd time span as used in the unit: "45", "45s", "1min", "1min 30s"."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    assert key in service, f"{key}= is missing"
    return service[key][-1]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is not installed under CI")
        pytest.skip("systemd-analyze is not installed")
    # ExecStart must name an existing executable for verify to pass; keep its arguments.
    text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", UNIT.read_text(), flags=re.M)
    copy = tmp_path / "npsd.service"
    copy.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings: none may mention our unit.
    complaints = [line for line in result.stderr.splitlines() if "npsd.service" in line]
    assert not complaints, "\n".join(complaints)


def test_it_is_a_notify_service_with_a_watchdog(service: dict[str, list[str]]) -> None:
    assert one(service, "Type") == "notify"
    assert seconds(one(service, "WatchdogSec")) > 0
    exec_start = one(service, "ExecStart")
    assert re.search(r"\bnpsd run\b", exec_start), exec_start
    reload = one(service, "ExecReload")
    assert "kill" in reload and "HUP" in reload and "$MAINPID" in reload, reload
    assert one(service, "Restart") == "on-failure"


def test_stop_timeout_is_above_the_shutdown_grace(service: dict[str, list[str]]) -> None:
    stop_s = seconds(one(service, "TimeoutStopSec"))
    default_grace = ServerSettings().shutdown_timeout.total_seconds()
    assert default_grace == 30
    assert stop_s > default_grace
    sample = tomllib.loads((ROOT / "config.toml").read_text())
    sample_grace = parse_duration(sample["server"]["shutdown_timeout"]).total_seconds()
    assert stop_s > sample_grace


def test_state_config_and_credentials(service: dict[str, list[str]]) -> None:
    assert one(service, "DynamicUser") == "yes"
    assert one(service, "StateDirectory") == "npsd"
    assert one(service, "ConfigurationDirectory") == "npsd"
    # Every credential name the config code reads from $CREDENTIALS_DIRECTORY is loaded:
    # one left out would be ignored in silence (a webhook secret: npsd would not start).
    credentials = {value.partition(":")[0] for value in service["LoadCredential"]}
    read = set()
    for path in (ROOT / "daemon").glob("config*.py"):
        read |= set(re.findall(r'secret[a-z_]*\(env, "NPSD_[A-Z_]+", "([a-z_]+)"\)',
                               path.read_text()))
    assert len(read) == 7 and credentials == read


def test_hardening(service: dict[str, list[str]]) -> None:
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "NoNewPrivileges") == "yes"
    for key in (
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert one(service, key) == "yes", key
    assert "AF_UNIX" in one(service, "RestrictAddressFamilies")  # sd_notify needs it

"""The [alerts] and [webhooks] sections: defaults, the sample file, secrets from the
environment, and bad values refused with the file, the key and the reason."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_settings, parse_settings
from daemon.config_loop import plain_http_receivers

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 24).decode()


def test_defaults_and_the_sample_file() -> None:
    for settings in (load_settings(ROOT / "config.toml", environ={}), parse_settings({})):
        assert settings.alerts.detractor_below == 7
        assert settings.alerts.email_to == () and settings.alerts.slack_webhook_url == ""
        assert not settings.alerts.enabled  # nowhere to send an alert yet
        assert settings.webhooks.urls == () and settings.webhooks.secret == ""
        assert settings.webhooks.timeout == timedelta(seconds=15)
        assert not settings.webhooks.enabled


def test_a_full_configuration() -> None:
    raw = {"alerts": {"detractor_below": 5, "email_to": ["cs@acme.example"],
                      "slack_webhook_url": "https://hooks.slack.com/services/T0/B0/xyz"},
           "webhooks": {"urls": ["https://crm.acme.example/npsd"], "secret": SECRET,
                        "previous_secrets": [OLD], "timeout": "30s"}}
    s = parse_settings(raw, "c.toml")
    assert s.alerts.enabled and s.alerts.detractor_below == 5
    assert s.webhooks.enabled and s.webhooks.previous_secrets == (OLD,)
    assert s.webhooks.timeout == timedelta(seconds=30)
    # Scrubbed from logs wherever they appear: the Slack URL's path is its credential.
    assert {SECRET, OLD, "https://hooks.slack.com/services/T0/B0/xyz"} <= set(s.secrets())
    assert plain_http_receivers(s.alerts, s.webhooks) == []


def test_secrets_from_the_environment_win() -> None:
    raw = {"webhooks": {"urls": ["https://crm.acme.example/npsd"]}}
    s = parse_settings(raw, "c.toml", {"NPSD_WEBHOOK_SECRET": SECRET,
                                      "NPSD_SLACK_WEBHOOK_URL": "https://hooks.example/x"})
    assert s.webhooks.secret == SECRET
    assert s.alerts.slack_webhook_url == "https://hooks.example/x"
    assert s.origin("webhooks.secret") == "environment variable NPSD_WEBHOOK_SECRET"
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, "c.toml", {"NPSD_WEBHOOK_SECRET": "hunter2"})
    assert caught.value.key == "webhooks.secret"
    assert "NPSD_WEBHOOK_SECRET" in caught.value.reason and "hunter2" not in str(caught.value)


@pytest.mark.parametrize(("raw", "key", "why"), [
    ({"alerts": {"detractor_below": 12}}, "alerts.detractor_below", "between 0 and 11"),
    ({"alerts": {"detractor_below": "7"}}, "alerts.detractor_below", "whole number"),
    ({"alerts": {"email_to": ["Ann <ann@acme.example>"]}}, "alerts.email_to", "plain addresses"),
    ({"alerts": {"email_to": ["nobody"]}}, "alerts.email_to", "plain addresses"),
    ({"alerts": {"slack_webhook_url": "hooks.slack.com/x"}}, "alerts.slack_webhook_url",
     "http(s) URL"),
    ({"alerts": {"sms_to": []}}, "alerts.sms_to", "unknown key"),
    ({"webhooks": {"urls": ["https://a.example/x"]}}, "webhooks.secret", "required when"),
    ({"webhooks": {"urls": ["ftp://a.example/x"], "secret": SECRET}}, "webhooks.urls",
     "http(s) URL"),
    ({"webhooks": {"urls": ["https://u:p@a.example/x"], "secret": SECRET}}, "webhooks.urls",
     "user name or password"),
    ({"webhooks": {"urls": ["https://a.example/x", "https://a.example/x"], "secret": SECRET}},
     "webhooks.urls", "twice"),
    ({"webhooks": {"secret": "s3cret"}}, "webhooks.secret", 'start with "whsec_"'),
    ({"webhooks": {"secret": "whsec_!!!"}}, "webhooks.secret", "not base64"),
    ({"webhooks": {"secret": "whsec_" + base64.b64encode(b"short").decode()}},
     "webhooks.secret", "24 to 64 random bytes"),
    ({"webhooks": {"previous_secrets": ["nope"]}}, "webhooks.previous_secrets", "whsec_"),
    ({"webhooks": {"timeout": "10m"}}, "webhooks.timeout", "at most"),
    ({"webhooks": {"url": "https://a.example"}}, "webhooks.url", "unknown key"),
])
def test_bad_values_name_the_file_and_key(raw: dict[str, dict[str, object]], key: str,
                                           why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, "c.toml")
    assert (caught.value.path, caught.value.key) == ("c.toml", key)
    assert why in caught.value.reason


def test_plain_http_off_loopback_is_named() -> None:
    raw = {"webhooks": {"urls": ["http://127.0.0.1:9/x", "http://crm.internal/x",
                                 "https://crm.example/x"], "secret": SECRET},
           "alerts": {"slack_webhook_url": "http://chat.internal/hook"}}
    s = parse_settings(raw, "c.toml")
    assert plain_http_receivers(s.alerts, s.webhooks) == [
        ("webhooks.urls", "crm.internal"), ("alerts.slack_webhook_url", "chat.internal")]


def test_check_config_warns_of_plain_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    from daemon.cli import main

    config = tmp_path / "config.toml"
    config.write_text(f'[webhooks]\nurls = ["http://crm.internal/hook"]\nsecret = "{SECRET}"\n')
    assert main(["--config", str(config), "check-config"]) == 0
    err = capsys.readouterr().err
    assert "webhooks.urls: http://crm.internal is not https" in err and SECRET not in err


@pytest.mark.parametrize(("text", "expected"), [
    ("36h", "2026-11-30T21:00:00+00:00"),
    ("2d", "2026-11-30T09:00:00+00:00"),
    ("2026-11-29", "2026-11-29T00:00:00+00:00"),
    ("2026-11-29T10:30:00Z", "2026-11-29T10:30:00+00:00"),
    ("2026-11-29T10:30:00+02:00", "2026-11-29T08:30:00+00:00"),
])
def test_replay_since(text: str, expected: str) -> None:
    from datetime import UTC, datetime

    from daemon.cli_webhooks import parse_since

    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    assert parse_since(text, now).isoformat() == expected


def test_replay_since_refuses_nonsense() -> None:
    from datetime import UTC, datetime

    from daemon.cli_webhooks import parse_since

    with pytest.raises(ValueError, match="expected an ISO 8601 date or time"):
        parse_since("last tuesday", datetime(2026, 12, 2, tzinfo=UTC))
    with pytest.raises(ValueError, match="longer than 100 years"):
        parse_since("99999999999999999999h", datetime(2026, 12, 2, tzinfo=UTC))
    with pytest.raises(ValueError, match="out of range"):
        parse_since("9999-12-31T23:59:59-14:00", datetime(2026, 12, 2, tzinfo=UTC))

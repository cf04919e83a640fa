"""The `[alerts]` and `[webhooks]` sections: who hears about a low score, and where events
go. Kept apart from daemon/config.py (which holds the other sections) so that file stays
small. The webhook secret and the Slack URL are secrets: NPSD_WEBHOOK_SECRET and
NPSD_SLACK_WEBHOOK_URL (or the credentials webhook_secret, slack_webhook_url) win over the
file, as the other secrets do."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from daemon import config_values as values
from settings import AlertSettings, WebhookSettings


class KeyedError(ValueError):
    """A problem with one key that its own parser cannot see (a rule across keys, a value
    from the environment): daemon.config names the file, this key and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


Secret = Callable[[Mapping[str, str], str, str], "tuple[str, str] | None"]
GENERATE = ("python3 -c 'import base64, secrets; "
            "print(\"whsec_\" + base64.b64encode(secrets.token_bytes(32)).decode())'")


def webhook_secret(value: Any) -> str:
    """A Standard Webhooks symmetric secret: `whsec_` and the base64 of 24 to 64 bytes."""
    text = values.string(value).strip()
    if not text:
        return ""
    if not text.startswith("whsec_"):
        raise ValueError(f'must start with "whsec_" (Standard Webhooks); generate one: {GENERATE}')
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f'the part after "whsec_" is not base64; generate one: {GENERATE}'
                         ) from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"must hold 24 to 64 random bytes, this one holds {len(key)}; "
                         f"generate one: {GENERATE}")
    return text


def secret_list(value: Any) -> tuple[str, ...]:
    return tuple(webhook_secret(v) for v in values.str_list(value))


def receiver_url(value: Any) -> str:
    """An http(s) URL without credentials in it (they would be logged by proxies)."""
    text = values.string(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL, got {value!r}")
    if parts.username or parts.password:
        raise ValueError("must not carry a user name or password; the signature "
                         "authenticates npsd to the receiver")
    return text


def url_list(value: Any) -> tuple[str, ...]:
    urls = tuple(receiver_url(v) for v in values.str_list(value))
    if len(set(urls)) != len(urls):
        raise ValueError("lists the same URL twice (it would get every event twice)")
    return urls


def slack_url(value: Any) -> str:
    text = values.string(value).strip()
    return receiver_url(text) if text else ""


def addresses(value: Any) -> tuple[str, ...]:
    found = values.str_list(value)
    for address in found:
        if "@" not in address or any(c in address for c in " <>,;"):
            raise ValueError(f'expected plain addresses like "success@acme.example", '
                             f"got {address!r}")
    return found


def parse_alerts(section: Any, env: Mapping[str, str], secret: Secret,
                 origins: list[tuple[str, str]]) -> AlertSettings:
    """`section` is config's _Section for "alerts."."""
    d = AlertSettings()
    alerts = AlertSettings(
        detractor_below=section.get("detractor_below", values.int_in(0, 11), d.detractor_below),
        email_to=section.get("email_to", addresses, d.email_to),
        slack_webhook_url=section.get("slack_webhook_url", slack_url, d.slack_webhook_url),
    )
    section.check_unknown()
    url = _from_secret(secret(env, "NPSD_SLACK_WEBHOOK_URL", "slack_webhook_url"),
                       "alerts.slack_webhook_url", slack_url, origins)
    if url is not None:
        alerts = AlertSettings(alerts.detractor_below, alerts.email_to, url)
    return alerts


def _from_secret(found: tuple[str, str] | None, key: str, parse: Callable[[str], str],
                 origins: list[tuple[str, str]]) -> str | None:
    """A value from the environment or a credential (`found`: value, where from), parsed as
    the file's key would be; None when there is none."""
    if found is None:
        return None
    try:
        value = parse(found[0])
    except ValueError as exc:
        raise KeyedError(key, f"{exc} (from {found[1]})") from None
    origins.append((key, found[1]))
    return value


def parse_webhooks(section: Any, env: Mapping[str, str], secret: Secret,
                   origins: list[tuple[str, str]]) -> WebhookSettings:
    """`section` is config's _Section for "webhooks."; raises KeyedError for urls without
    a secret."""
    d = WebhookSettings()
    hooks = WebhookSettings(
        urls=section.get("urls", url_list, d.urls),
        secret=section.get("secret", webhook_secret, d.secret),
        previous_secrets=section.get("previous_secrets", secret_list, d.previous_secrets),
        timeout=section.get("timeout", values.short_duration(timedelta(minutes=2)), d.timeout),
    )
    section.check_unknown()
    key = _from_secret(secret(env, "NPSD_WEBHOOK_SECRET", "webhook_secret"),
                       "webhooks.secret", webhook_secret, origins)
    if key is not None:
        hooks = WebhookSettings(hooks.urls, key, hooks.previous_secrets, hooks.timeout)
    if hooks.urls and not hooks.secret:
        raise KeyedError("webhooks.secret", "required when webhooks.urls is set, so receivers "
                         f"can verify the signature; generate one: {GENERATE}")
    return hooks


def plain_http_receivers(alerts: AlertSettings, webhooks: WebhookSettings
                         ) -> list[tuple[str, str]]:
    """(key, host) of each http:// receiver off loopback: its bodies (comments, emails) and
    the Slack URL's credential would travel in clear. A warning, not an error: a receiver
    on a private network may be meant."""
    found = [("webhooks.urls", u) for u in webhooks.urls]
    if alerts.slack_webhook_url:
        found.append(("alerts.slack_webhook_url", alerts.slack_webhook_url))
    out = []
    for key, url in found:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme == "http" and host not in ("localhost", "127.0.0.1", "::1"):
            out.append((key, host))
    return out

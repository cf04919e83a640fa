"""The typed, frozen settings every floor reads: daemon parses config.toml into them
(daemon/config.py), jobs and storage take them as values. This package imports nothing
of the project, so storage and jobs can use it without reaching up into daemon/."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path


@dataclass(frozen=True)
class SendWindow:
    start: time
    end: time


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8787
    public_url: str = "http://127.0.0.1:8787"
    shutdown_timeout: timedelta = timedelta(seconds=30)
    keepalive_timeout: timedelta = timedelta(seconds=75)  # idle connections close after
    body_timeout: timedelta = timedelta(seconds=30)  # a request body must arrive within


@dataclass(frozen=True)
class StorageSettings:
    url: str = "sqlite+aiosqlite:///var/npsd.db"


@dataclass(frozen=True)
class IntakeSettings:
    api_keys: tuple[str, ...] = ("change-me",)
    shared_secrets: tuple[str, ...] = ()
    max_body_bytes: int = 16 * 1024 * 1024
    dedup_window: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class AdminSettings:
    token: str = "change-me-too"


@dataclass(frozen=True)
class AccountsSettings:
    one_account_per_user: bool = False
    session_timeout: timedelta = timedelta(minutes=30)


@dataclass(frozen=True)
class SurveySettings:
    min_delay: timedelta = timedelta(days=3)
    max_delay: timedelta = timedelta(days=14)
    resurvey_interval: timedelta = timedelta(weeks=26)
    response_window: timedelta = timedelta(days=30)
    reminder_after: timedelta = timedelta(0)
    send_window: SendWindow | None = None
    default_timezone: str = "UTC"
    max_per_account: int = 0
    sample_rate: float = 1.0
    product_name: str = "Acme"
    trigger_events: tuple[str, ...] = ()  # track names that make the user a candidate
    default_locale: str = "en"
    record_on_click: bool = False
    # [survey.texts.<lang>]: ((lang, ((key, text), ...)), ...), validated by jobs.i18n
    texts: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password: str = ""
    timeout: timedelta = timedelta(seconds=30)
    max_connections: int = 4


@dataclass(frozen=True)
class EmailSettings:
    backend: str = "file"
    sender: str = "Acme <nps@acme.example>"
    file_dir: Path = Path("var/outbox")
    smtp: SmtpSettings = field(default_factory=SmtpSettings)


@dataclass(frozen=True)
class SegmentSettings:
    write_key: str = ""
    endpoint: str = "https://api.segment.io/v1"
    sync_at: time = time(3, 0)
    timezone: str = "UTC"
    rating_trait: str = "NPS_rating"
    comment_trait: str = "NPS_comment"
    date_trait: str = "NPS_date"
    unsubscribed_trait: str = "NPS_unsubscribed"
    track_answers: bool = True
    group_nps: bool = True
    sync_unsubscribes: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.write_key)


@dataclass(frozen=True)
class LogSettings:
    format: str = "json"
    level: str = "info"


@dataclass(frozen=True)
class ConsoleSettings:
    # Tokens that may read the console and the read API, never start a sync (admin.token may).
    viewer_tokens: tuple[str, ...] = ()
    session_ttl: timedelta = timedelta(hours=12)


@dataclass(frozen=True)
class AlertSettings:
    """[alerts]: an answer below `detractor_below` (0 = off) raises one alert, by email to
    `email_to` and/or to a Slack-compatible incoming webhook."""

    detractor_below: int = 7
    email_to: tuple[str, ...] = ()
    slack_webhook_url: str = ""  # a secret: the URL's path is Slack's credential

    @property
    def enabled(self) -> bool:
        return self.detractor_below > 0 and bool(self.email_to or self.slack_webhook_url)


@dataclass(frozen=True)
class WebhookSettings:
    """[webhooks]: Standard Webhooks deliveries to each of `urls`, signed with `secret`
    and, during a rotation, with each of `previous_secrets` too (one signature each)."""

    urls: tuple[str, ...] = ()
    secret: str = ""  # "whsec_" + base64 of 24..64 random bytes
    previous_secrets: tuple[str, ...] = ()
    timeout: timedelta = timedelta(seconds=15)  # per delivery attempt, connect to answer

    @property
    def enabled(self) -> bool:
        return bool(self.urls)


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    accounts: AccountsSettings = field(default_factory=AccountsSettings)
    survey: SurveySettings = field(default_factory=SurveySettings)
    email: EmailSettings = field(default_factory=EmailSettings)
    segment: SegmentSettings = field(default_factory=SegmentSettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: str = "<defaults>"
    # Where a secret came from when not from the file: ("admin.token", "NPSD_ADMIN_TOKEN").
    secret_origins: tuple[tuple[str, str], ...] = ()
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    def secrets(self) -> tuple[str, ...]:
        """Every configured secret, for the log scrubber to blank wherever it appears."""
        return (*self.intake.api_keys, *self.intake.shared_secrets, self.admin.token,
                self.segment.write_key, self.email.smtp.password, *self.console.viewer_tokens,
                self.alerts.slack_webhook_url, self.webhooks.secret,
                *self.webhooks.previous_secrets)

    def origin(self, key: str) -> str:
        """Where the value of `key` was read: the file, or for a secret a variable or a
        credential."""
        return dict(self.secret_origins).get(key, self.source)

"""config.toml → typed, frozen settings, validated before anything starts.

Every error names the file, the key and the reason. Secrets may come from NPSD_* environment
variables or from systemd credentials ($CREDENTIALS_DIRECTORY), which win over the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from daemon import config_values as values
from daemon.config_console import parse_console
from daemon.config_loop import KeyedError, parse_alerts, parse_webhooks
from daemon.config_values import Parser as _Parser
from daemon.paths import base_directory, resolve_paths
from settings import (
    AccountsSettings,
    AdminSettings,
    EmailSettings,
    IntakeSettings,
    LogSettings,
    SegmentSettings,
    SendWindow,
    ServerSettings,
    Settings,
    SmtpSettings,
    StorageSettings,
    SurveySettings,
)
from settings.durations import format_duration, parse_duration

# The settings types live in settings/ so jobs and storage need not import daemon;
# they are re-exported here for the parser's callers.
__all__ = [
    "AccountsSettings",
    "AdminSettings",
    "ConfigError",
    "EmailSettings",
    "IntakeSettings",
    "LogSettings",
    "SegmentSettings",
    "SendWindow",
    "ServerSettings",
    "Settings",
    "SmtpSettings",
    "StorageSettings",
    "SurveySettings",
    "config_path",
    "load_settings",
    "parse_settings",
]
from jobs import i18n


class ConfigError(Exception):
    def __init__(self, path: str, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")
        self.path, self.key, self.reason = path, key, reason


def config_path(explicit: str | None) -> Path:
    """--config PATH, else $NPSD_CONFIG, else ./config.toml."""
    return Path(explicit or os.environ.get("NPSD_CONFIG") or "config.toml")


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    name = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(name, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, "", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, "", f"not valid TOML: {exc}") from None
    return resolve_paths(parse_settings(raw, name, env), base_directory(env))


class _Section:
    """Reads one table of the file, remembering which keys were used."""

    def __init__(self, raw: Mapping[str, Any], prefix: str, path: str) -> None:
        self.raw, self.prefix, self.path = raw, prefix, path
        self.used: set[str] = set()

    def get(self, key: str, parse: _Parser, default: Any) -> Any:
        self.used.add(key)
        if key not in self.raw:
            return default
        try:
            return parse(self.raw[key])
        except (ValueError, TypeError) as exc:
            raise ConfigError(self.path, f"{self.prefix}{key}", str(exc)) from None

    def check_unknown(self, nested: tuple[str, ...] = ()) -> None:
        for key in self.raw:
            if key not in self.used and key not in nested:
                raise ConfigError(self.path, f"{self.prefix}{key}", "unknown key")


def _table(raw: Mapping[str, Any], key: str, path: str, prefix: str = "") -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(path, f"{prefix}{key}", "must be a table")
    return value


def _secret(env: Mapping[str, str], variable: str, credential: str) -> str | None:
    """A secret from the environment or a systemd credential (LoadCredential=)."""
    found = _secret_with_origin(env, variable, credential)
    return None if found is None else found[0]


def _secret_with_origin(env: Mapping[str, str], variable: str,
                        credential: str) -> tuple[str, str] | None:
    if env.get(variable):
        return env[variable], f"environment variable {variable}"
    directory = env.get("CREDENTIALS_DIRECTORY")
    if directory:
        try:
            text = (Path(directory) / credential).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return text, f"systemd credential {credential}"
    return None


def parse_settings(
    raw: Mapping[str, Any], path: str = "<config>", env: Mapping[str, str] | None = None
) -> Settings:
    env = {} if env is None else env
    known = {f for f in Settings.__dataclass_fields__ if f not in ("source", "secret_origins")}
    for key in raw:
        if key not in known | {"log"}:
            raise ConfigError(path, key, "unknown section")
    origins: list[tuple[str, str]] = []  # filled by the sections whose secrets came from env
    sections = (_server(raw, path), _storage(raw, path), _intake(raw, path, env, origins),
                _admin(raw, path, env, origins), _accounts(raw, path), _survey(raw, path),
                _email(raw, path, env), _segment(raw, path, env), _log(raw, path))
    console = parse_console(_Section(_table(raw, "console", path), "console.", path), env,
                            _secret_with_origin, origins)
    try:
        alerts = parse_alerts(_Section(_table(raw, "alerts", path), "alerts.", path), env,
                              _secret_with_origin, origins)
        webhooks = parse_webhooks(_Section(_table(raw, "webhooks", path), "webhooks.", path),
                                  env, _secret_with_origin, origins)
    except KeyedError as exc:
        raise ConfigError(path, exc.key, exc.reason) from None
    return Settings(*sections, path, tuple(origins), console, alerts, webhooks)


def _server(raw: Mapping[str, Any], path: str) -> ServerSettings:
    s = _Section(_table(raw, "server", path), "server.", path)
    d = ServerSettings()
    server = ServerSettings(
        host=s.get("host", values.nonempty, d.host),
        port=s.get("port", values.int_in(0, 65535), d.port),
        public_url=s.get("public_url", values.url, d.public_url),
        shutdown_timeout=s.get("shutdown_timeout", values.timeout, d.shutdown_timeout),
        keepalive_timeout=s.get("keepalive_timeout", values.short_duration(timedelta(hours=1)),
                                d.keepalive_timeout),
        body_timeout=s.get("body_timeout", values.short_duration(timedelta(hours=1)),
                           d.body_timeout),
    )
    s.check_unknown()
    return server


def _storage(raw: Mapping[str, Any], path: str) -> StorageSettings:
    s = _Section(_table(raw, "storage", path), "storage.", path)
    url = s.get("url", values.nonempty, StorageSettings().url)
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            path, "storage.url", "must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    storage = StorageSettings(url=url)
    s.check_unknown()
    return storage


def _intake(raw: Mapping[str, Any], path: str, env: Mapping[str, str],
            origins: list[tuple[str, str]]) -> IntakeSettings:
    s = _Section(_table(raw, "intake", path), "intake.", path)
    d_in = IntakeSettings()
    intake = IntakeSettings(
        api_keys=s.get("api_keys", values.str_list, d_in.api_keys),
        shared_secrets=s.get("shared_secrets", values.str_list, d_in.shared_secrets),
        max_body_bytes=s.get("max_body_bytes", values.int_in(1024, 1 << 30), d_in.max_body_bytes),
        dedup_window=s.get("dedup_window", values.positive_duration, d_in.dedup_window),
    )
    s.check_unknown()
    keys = _secret_with_origin(env, "NPSD_INTAKE_API_KEYS", "intake_api_keys")
    if keys is not None:
        intake = _replace(intake, api_keys=values.str_list(keys[0]))
        origins.append(("intake.api_keys", keys[1]))
    if not intake.api_keys and not intake.shared_secrets:
        raise ConfigError(
            path, "intake.api_keys", "no API key and no shared secret: nothing could send events"
        )
    return intake


def _admin(raw: Mapping[str, Any], path: str, env: Mapping[str, str],
           origins: list[tuple[str, str]]) -> AdminSettings:
    s = _Section(_table(raw, "admin", path), "admin.", path)
    admin = AdminSettings(token=s.get("token", values.string, AdminSettings().token))
    s.check_unknown()
    token = _secret_with_origin(env, "NPSD_ADMIN_TOKEN", "admin_token")
    if token is not None:
        admin = AdminSettings(token=token[0])
        origins.append(("admin.token", token[1]))
    if not admin.token:
        raise ConfigError(path, "admin.token", "must not be empty")
    return admin


def _accounts(raw: Mapping[str, Any], path: str) -> AccountsSettings:
    s = _Section(_table(raw, "accounts", path), "accounts.", path)
    d_acc = AccountsSettings()
    accounts = AccountsSettings(
        one_account_per_user=s.get(
            "one_account_per_user", values.boolean, d_acc.one_account_per_user),
        session_timeout=s.get("session_timeout", values.timeout, d_acc.session_timeout),
    )
    s.check_unknown()
    return accounts


def _survey(raw: Mapping[str, Any], path: str) -> SurveySettings:
    s = _Section(_table(raw, "survey", path), "survey.", path)
    d_s = SurveySettings()
    survey = SurveySettings(
        min_delay=s.get("min_delay", parse_duration, d_s.min_delay),
        max_delay=s.get("max_delay", parse_duration, d_s.max_delay),
        resurvey_interval=s.get("resurvey_interval", parse_duration, d_s.resurvey_interval),
        response_window=s.get("response_window", values.positive_duration, d_s.response_window),
        reminder_after=s.get("reminder_after", parse_duration, d_s.reminder_after),
        send_window=s.get("send_window", values.send_window, d_s.send_window),
        default_timezone=s.get("default_timezone", values.zone, d_s.default_timezone),
        max_per_account=s.get("max_per_account", values.int_in(0, 1_000_000), d_s.max_per_account),
        sample_rate=s.get("sample_rate", values.rate, d_s.sample_rate),
        product_name=s.get("product_name", values.nonempty, d_s.product_name),
        trigger_events=s.get("trigger_events", values.str_list, d_s.trigger_events),
        default_locale=s.get("default_locale", values.choice(*i18n.SHIPPED), d_s.default_locale),
        record_on_click=s.get("record_on_click", values.boolean, d_s.record_on_click),
        texts=_texts(_table(s.raw, "texts", path, "survey."), path),
    )
    s.check_unknown(nested=("texts",))
    if survey.max_delay and survey.max_delay < survey.min_delay:
        raise ConfigError(
            path, "survey.max_delay", "is shorter than survey.min_delay (use 0 to survey always)"
        )
    if survey.reminder_after and survey.reminder_after >= survey.response_window:
        raise ConfigError(
            path, "survey.reminder_after",
            f"must be shorter than survey.response_window "
            f"({format_duration(survey.response_window)}): it counts from the survey's email, "
            "and the reminder's link would have expired")
    return survey


def _log(raw: Mapping[str, Any], path: str) -> LogSettings:
    s = _Section(_table(raw, "log", path), "log.", path)
    log = LogSettings(
        format=s.get("format", values.choice("json", "console"), "json"),
        level=s.get("level", values.choice("debug", "info", "warning", "error"), "info"),
    )
    s.check_unknown()
    return log


def _texts(raw: Mapping[str, Any], path: str) -> i18n.Overrides:
    """[survey.texts.<lang>]: each key a known text, with only the placeholders it takes."""
    out = []
    for lang, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(path, f"survey.texts.{lang}", "must be a table")
        for key, text in table.items():
            problem = i18n.override_problem(lang, key, text)
            if problem is not None:
                where = f"survey.texts.{lang}" if lang not in i18n.SHIPPED else (
                    f"survey.texts.{lang}.{key}")
                raise ConfigError(path, where, problem)
        out.append((lang, tuple(sorted(table.items()))))
    return tuple(sorted(out))


def _email(raw: Mapping[str, Any], path: str, env: Mapping[str, str]) -> EmailSettings:
    section = _table(raw, "email", path)
    s = _Section(section, "email.", path)
    d = EmailSettings()
    backend = s.get("backend", values.choice("file", "smtp"), d.backend)
    sender = s.get("from", values.sender, d.sender)
    file_dir = s.get("file_dir", lambda v: Path(values.nonempty(v)), d.file_dir)
    s.check_unknown(nested=("smtp",))
    m = _Section(_table(section, "smtp", path, "email."), "email.smtp.", path)
    ds = SmtpSettings()
    smtp = SmtpSettings(
        host=m.get("host", values.nonempty, ds.host),
        port=m.get("port", values.int_in(1, 65535), ds.port),
        security=m.get("security", values.choice("none", "starttls", "tls"), ds.security),
        username=m.get("username", values.string, ds.username),
        password=m.get("password", values.string, ds.password),
        timeout=m.get("timeout", values.timeout, ds.timeout),
        max_connections=m.get("max_connections", values.int_in(1, 64), ds.max_connections),
    )
    m.check_unknown()
    if (password := _secret(env, "NPSD_SMTP_PASSWORD", "smtp_password")) is not None:
        smtp = _replace(smtp, password=password)
    return EmailSettings(backend=backend, sender=sender, file_dir=file_dir, smtp=smtp)


def _segment(raw: Mapping[str, Any], path: str, env: Mapping[str, str]) -> SegmentSettings:
    s = _Section(_table(raw, "segment", path), "segment.", path)
    d = SegmentSettings()
    trait = values.nonempty
    segment = SegmentSettings(
        write_key=s.get("write_key", values.string, d.write_key),
        endpoint=s.get("endpoint", values.url, d.endpoint),
        sync_at=s.get("sync_at", values.clock_time, d.sync_at),
        timezone=s.get("timezone", values.zone, d.timezone),
        rating_trait=s.get("rating_trait", trait, d.rating_trait),
        comment_trait=s.get("comment_trait", trait, d.comment_trait),
        date_trait=s.get("date_trait", trait, d.date_trait),
        unsubscribed_trait=s.get("unsubscribed_trait", trait, d.unsubscribed_trait),
        track_answers=s.get("track_answers", values.boolean, d.track_answers),
        group_nps=s.get("group_nps", values.boolean, d.group_nps),
        sync_unsubscribes=s.get("sync_unsubscribes", values.boolean, d.sync_unsubscribes),
    )
    s.check_unknown()
    if (key := _secret(env, "NPSD_SEGMENT_WRITE_KEY", "segment_write_key")) is not None:
        segment = _replace(segment, write_key=key)
    return segment


def _replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace
    return replace(obj, **changes)

"""structlog to stderr, one line per event: JSON for journald, or console for humans.

Event names are stable (`intake.accepted`, `survey.sent`, ...): operators grep for them and
tests assert on them. Emails, comments and tokens are never logged: fields that hold them
are blanked by name, and then every string of every line (npsd's own events and the
libraries' records alike, exception texts and tracebacks included) goes through
jobs.redact, so an address inside an SMTP reply or a credential inside a request line that
aiohttp could not parse is scrubbed before it is written. npsd logs one line per committed
intake group, not per request, so scanning each line costs little."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from daemon.log_throttle import BadRequestThrottle
from jobs.redact import SECRET_MARK, redact

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_REDACT = frozenset({"email", "comment", "token", "password", "write_key", "to"})
_PLAIN = (int, float, bool, type(None))
_OURS = frozenset({"timestamp", "level"})  # written by the processors above, never outside text
_MIN_LITERAL = 8  # shorter configured secrets would blank ordinary words


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _REDACT & event.keys():
        event[key] = "[redacted]"
    return event


class _Scrubber:
    """Runs every string value of a line through redact(), and blanks the configured
    secrets literally (a key or token with characters the patterns do not expect)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= _MIN_LITERAL},
                                    key=len, reverse=True))

    def __call__(self, _logger: Any, _name: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if not isinstance(value, _PLAIN) and key not in _OURS:
                event[key] = self._clean(value)
        return event

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            text = redact(value)
            for secret in self.secrets:
                if secret in text:
                    text = text.replace(secret, SECRET_MARK)
            return text
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, dict):
            return {self._clean(str(k)): self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v) for v in value]
        # Anything else would be rendered by its repr(), which may carry the same text.
        return self._clean(str(value))


def configure_logging(fmt: str = "json", level: str = "info",
                      secrets: Iterable[str] = ()) -> None:
    """Set up npsd's and the libraries' logging; `secrets` (the configured keys and
    tokens) are also blanked wherever they appear verbatim."""
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    scrub = _Scrubber(secrets)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # aiohttp's and APScheduler's own loggers, at warning and above, go to stderr in the same
    # shape (one JSON object per line, a traceback inside it), so a journald reader or a log
    # shipper never meets a plain-text line or a bare traceback.
    global _stdlib_handler
    root = logging.getLogger()
    if _stdlib_handler is not None:
        root.removeHandler(_stdlib_handler)  # SIGHUP reloads: replace, do not add
    _stdlib_handler = logging.StreamHandler(sys.stderr)
    _stdlib_handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _redact,
            structlog.processors.format_exc_info,
            scrub,
            renderer,
        ],
    ))
    _stdlib_handler.addFilter(BadRequestThrottle())
    root.addHandler(_stdlib_handler)
    root.setLevel(logging.WARNING)


_stdlib_handler: logging.Handler | None = None

"""structlog to stderr, one line per event: JSON for journald, or console for humans.

Event names are stable (`intake.accepted`, `survey.sent`, ...): operators grep for them and
tests assert on them. Emails, comments and tokens are never logged."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_REDACT = frozenset({"email", "comment", "token", "password", "write_key", "to"})


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _REDACT & event.keys():
        event[key] = "[redacted]"
    return event


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
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
            renderer,
        ],
    ))
    root.addHandler(_stdlib_handler)
    root.setLevel(logging.WARNING)


_stdlib_handler: logging.Handler | None = None

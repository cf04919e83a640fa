"""A cap on aiohttp's report of requests it could not parse.

aiohttp logs every malformed request ("Error handling request …") at error level with a
traceback. The fault is the client's, and anyone can send such requests: at most `limit` of
them per window reach the journal, as warnings; the next line after a quiet spell says how
many were left out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

_SOURCE = "aiohttp.server"
_PREFIX = "Error handling request"


class BadRequestThrottle(logging.Filter):
    def __init__(self, limit: int = 10, window_s: float = 60.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._limit, self._window_s, self._now = limit, window_s, now
        self._started = -window_s
        self._shown = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != _SOURCE or not str(record.msg).startswith(_PREFIX):
            return True
        now = self._now()
        if now - self._started >= self._window_s:
            self._started, self._shown = now, 0
        if self._shown >= self._limit:
            self._suppressed += 1
            return False
        self._shown += 1
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        if self._suppressed:
            record.msg = f"{record.msg} ({self._suppressed} more like it were not logged)"
            self._suppressed = 0
        return True

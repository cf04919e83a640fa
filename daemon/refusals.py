"""`intake.refused`: one log line per request an intake door refuses (400, 401, 408, 413,
415, 501), so an operator sees a wrong key in Segment's settings in the journal, without
letting a flood of bad requests flood the journal too.

At most PER_WINDOW lines per reason per WINDOW (read through the clock object); past that,
refusals are counted, and one `intake.refused_suppressed` line with the count follows once
the window is over (on the next refusal, or from `flush`, which the app calls periodically).
Nothing of the request is logged but its status, our reason code, the door and the peer
address: never the body, the key or the signature."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from jobs.clock import Clock

log = structlog.get_logger("npsd.intake")

PER_WINDOW = 10
WINDOW = timedelta(minutes=1)


@dataclass
class _Window:
    start: datetime
    logged: int = 0
    suppressed: int = 0
    door: str = ""
    status: int = 0


class RefusalLog:
    def __init__(self, clock: Clock, per_window: int = PER_WINDOW,
                 window: timedelta = WINDOW) -> None:
        self._clock, self._per_window, self._window = clock, per_window, window
        self._windows: dict[str, _Window] = {}

    def refused(self, *, status: int, reason: str, door: str, remote: str | None) -> None:
        now = self._clock.now()
        self.flush(now)
        current = self._windows.get(reason)
        if current is None:
            current = self._windows[reason] = _Window(start=now)
        if current.logged < self._per_window:
            current.logged += 1
            log.warning("intake.refused", status=status, reason=reason, door=door,
                        remote=remote or "")
            return
        current.suppressed += 1
        current.door, current.status = door, status

    def flush(self, now: datetime | None = None) -> None:
        """Close the windows that are over: one line for each that suppressed lines."""
        now = now or self._clock.now()
        for reason, window in list(self._windows.items()):
            if now - window.start < self._window:
                continue
            del self._windows[reason]
            if window.suppressed:
                log.warning("intake.refused_suppressed", reason=reason,
                            suppressed=window.suppressed, last_door=window.door,
                            last_status=window.status,
                            window_s=int(self._window.total_seconds()))

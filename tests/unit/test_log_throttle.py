"""aiohttp's malformed-request reports are capped: a flood cannot fill the journal."""

from __future__ import annotations

import logging

from daemon.log_throttle import BadRequestThrottle


def _record(name: str = "aiohttp.server", msg: str = "Error handling request from %s") -> (
        logging.LogRecord):
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("127.0.0.1",), None)


def test_ten_a_minute_as_warnings_then_a_count() -> None:
    t = [0.0]
    throttle = BadRequestThrottle(limit=10, window_s=60, now=lambda: t[0])
    kept = [r for r in (_record() for _ in range(25)) if throttle.filter(r)]
    assert len(kept) == 10
    assert {r.levelname for r in kept} == {"WARNING"}
    t[0] = 61.0
    later = _record()
    assert throttle.filter(later)
    assert "15 more like it were not logged" in later.getMessage()
    again = _record()
    assert throttle.filter(again) and "not logged" not in again.getMessage()


def test_other_records_pass_untouched() -> None:
    throttle = BadRequestThrottle(limit=0)
    other = _record(name="apscheduler.scheduler", msg="Job missed")
    assert throttle.filter(other) and other.levelname == "ERROR"
    assert throttle.filter(_record(msg="Unclosed connection")) is True
    assert throttle.filter(_record()) is False

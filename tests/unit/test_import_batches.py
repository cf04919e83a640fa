"""The import's batch size (jobs/importer._next_size): it follows the time a batch took,
towards BATCH_SECONDS, at most doubling at a step, within BATCH_MIN..BATCH_MAX."""

from __future__ import annotations

import pytest

from jobs.importer import BATCH_MAX, BATCH_MIN, _next_size


@pytest.mark.parametrize(("size", "seconds", "expected"), [
    (2000, 1.0, 2000),  # on target: unchanged
    (2000, 0.25, 4000),  # fast: grows, but at most doubles
    (4000, 0.8, 5000),
    (8000, 0.1, BATCH_MAX),  # capped
    (10_000, 4.0, 2500),  # slow (a busy machine): shrinks at once
    (2000, 30.0, BATCH_MIN),  # floored
    (2000, 0.0, 4000),  # a batch that took no measurable time
])
def test_the_batch_size_follows_the_time_a_batch_took(size: int, seconds: float,
                                                      expected: int) -> None:
    assert _next_size(size, seconds) == expected

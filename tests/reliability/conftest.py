"""Reliability tier: crash loops, injected faults, several processes on one database.

`pytest tests/reliability --soak` (or NPSD_SOAK=1 with any selection: pytest reads this
file's option only when tests/reliability is named on the command line) runs the long
variants: many more kills, more load. The default run is sized for CI on a 2-core machine.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the reliability tests long (also NPSD_SOAK=1)",
    )


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    return (
        bool(request.config.getoption("--soak", default=False))
        or os.environ.get("NPSD_SOAK") == "1"
    )

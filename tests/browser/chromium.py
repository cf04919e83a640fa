"""Debian's Chromium for the browser tests, driven by Playwright (never `playwright install`):
its path, the flags this closed machine needs, and the module-level check that fails under CI
and skips elsewhere when it is missing."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def playwright_or_skip() -> ModuleType:
    """playwright.async_api; called at a test module's import."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{CHROMIUM} is missing under CI (apt-get install -y chromium)")
        pytest.skip(f"browser tests need {CHROMIUM} (apt-get install -y chromium)",
                    allow_module_level=True)
    return pytest.importorskip("playwright.async_api")

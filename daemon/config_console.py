"""The `[console]` section: who may read the console and how long a login lasts. Kept apart
from daemon/config.py (which holds the other sections) so that file stays small."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from daemon import config_values as values
from settings import ConsoleSettings

Secret = Callable[[Mapping[str, str], str, str], "tuple[str, str] | None"]


def parse_console(section: Any, env: Mapping[str, str], secret: Secret,
                  origins: list[tuple[str, str]]) -> ConsoleSettings:
    """`section` is config's _Section for "console."; NPSD_CONSOLE_VIEWER_TOKENS (a TOML list
    or comma-separated) or the credential console_viewer_tokens wins over the file."""
    d = ConsoleSettings()
    tokens = section.get("viewer_tokens", values.str_list, d.viewer_tokens)
    ttl = section.get("session_ttl", values.short_duration(timedelta(days=90)), d.session_ttl)
    section.check_unknown()
    found = secret(env, "NPSD_CONSOLE_VIEWER_TOKENS", "console_viewer_tokens")
    if found is not None:
        tokens = tuple(t.strip().strip('"') for t in found[0].strip("[]").split(",")
                       if t.strip().strip('"'))
        origins.append(("console.viewer_tokens", found[1]))
    return ConsoleSettings(viewer_tokens=tuple(t for t in tokens if t), session_ttl=ttl)

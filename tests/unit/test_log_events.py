"""The log event names: what the code emits, the registry (daemon/log_events.py) and the
README's Logs table are the same set, and every name is `area.event`."""

from __future__ import annotations

import re
from pathlib import Path

from daemon.log_events import ALL, EVENTS

ROOT = Path(__file__).resolve().parent.parent.parent
# log.info("name", …), log.warning(\n "name", …) and log.info("a" if x else "b", …)
_CALL = re.compile(r'\b\w*log\w*\.(?:debug|info|warning|error|exception|critical)\(\s*'
                   r'"([^"]+)"(?:\s+if\s+[^"\n]+\s+else\s+"([^"]+)")?')


def emitted() -> set[str]:
    names: set[str] = set()
    for package in ("daemon", "jobs", "storage", "settings"):
        for path in (ROOT / package).rglob("*.py"):
            for match in _CALL.finditer(path.read_text(encoding="utf-8")):
                names.update(g for g in match.groups() if g)
    return names


def documented() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Logs"):]
    section = section[: section.index("\n## ", 1)]
    first_cells = re.findall(r"^\| ([^|]+) \|", section, re.M)
    return {n for cell in first_cells for n in re.findall(r"`([^`]+)`", cell)}


def test_every_emitted_name_is_registered_and_every_registered_one_emitted() -> None:
    found = emitted()
    assert found - ALL == set(), "emitted but not in daemon/log_events.py"
    assert ALL - found == set(), "registered but never emitted"


def test_the_readme_lists_exactly_the_registered_names() -> None:
    listed = documented()
    assert ALL - listed == set(), "missing from the README's Logs table"
    assert listed - ALL == set(), "in the README's Logs table but not registered"


def test_names_are_area_dot_event_and_filed_under_their_area() -> None:
    for area, names in EVENTS.items():
        for name in names:
            assert re.fullmatch(r"[a-z]+\.[a-z_]+", name), name
            assert name.split(".")[0] == area, name

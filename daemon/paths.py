"""Where npsd keeps its files: relative paths in the config resolve against systemd's
$STATE_DIRECTORY, else the working directory, once, when the config is loaded.

Without this a relative SQLite path followed whatever directory npsd happened to start in
(under the shipped unit, /var/lib/npsd/var/npsd.db), and a backup taken by the path an
operator expected silently copied an empty, newly created file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from daemon.config import Settings


def base_directory(env: Mapping[str, str]) -> Path:
    """The first of $STATE_DIRECTORY's colon-separated paths (systemd's StateDirectory=),
    else the working directory."""
    first = env.get("STATE_DIRECTORY", "").split(":")[0].strip()
    return Path(first) if first and os.path.isabs(first) else Path.cwd()


def resolve_storage_url(url: str, base: Path) -> str:
    """A SQLite URL with a relative file path made absolute; other URLs unchanged."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:") or os.path.isabs(database):
        return url
    return parsed.set(database=str(base / database)).render_as_string(hide_password=False)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for PostgreSQL and in-memory SQLite)."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


def describe_store(url: str) -> str:
    """What to log about the store: the SQLite file, or the URL without its password."""
    path = sqlite_file(url)
    if path is not None:
        return str(path)
    return make_url(url).render_as_string(hide_password=True)


def resolve_paths(settings: Settings, base: Path) -> Settings:
    """The settings with storage.url (SQLite) and email.file_dir made absolute against base."""
    url = resolve_storage_url(settings.storage.url, base)
    file_dir = settings.email.file_dir
    if not file_dir.is_absolute():
        file_dir = base / file_dir
    return replace(settings, storage=replace(settings.storage, url=url),
                   email=replace(settings.email, file_dir=file_dir))

"""The file email backend's outbox (`email.file_dir`) as a place personal data lives.

Each .eml is named after its survey (`…-survey-<id>.eml`, `…-survey-<id>-reminder.eml`), so
an erasure can find and remove the files of the surveys it deleted, once it has committed.
Should npsd stop between that commit and the removal (or a survey be handed to the backend
just before its erasure committed), housekeeping removes the .eml files of surveys that no
longer exist.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable
from pathlib import Path

import structlog

from storage.store import Store

log = structlog.get_logger("npsd.outbox")

_NAME = re.compile(r"-survey-(\d+)(?:-reminder|-alert)?(?:-\d+)?\.eml\Z")
# a survey's own email (not a reminder or an alert), and its reminder
_FIRST = re.compile(r"-survey-(\d+)(?:-\d+)?\.eml\Z")
_REMINDER = re.compile(r"-survey-(\d+)-reminder(?:-\d+)?\.eml\Z")


def survey_stem(survey_id: int | str, reminder: bool = False, alert: bool = False) -> str:
    """The part of an .eml name that says whose it is (jobs.email.FileBackend); a detractor
    alert about a survey is named after it too, so its erasure removes the alert's copy."""
    return f"survey-{survey_id}{'-reminder' if reminder else '-alert' if alert else ''}"


def files_by_survey(directory: Path) -> dict[int, list[Path]]:
    """The outbox's .eml files, by the survey they were written for."""
    found: dict[int, list[Path]] = {}
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        match = _NAME.search(entry.name)
        if match is not None and entry.is_file():
            found.setdefault(int(match.group(1)), []).append(Path(entry.path))
    return found


def emails_written(directory: Path, survey_ids: Iterable[int],
                   reminder_ids: Iterable[int]) -> tuple[set[int], set[int]]:
    """Which of these surveys have their first email, and which of these their reminder, in
    the outbox (one scan). A file is written under a dot-name and renamed when complete
    (jobs.email.FileBackend), so one found here was delivered whole, and one missing was not
    delivered at all."""
    wanted = {False: set(survey_ids), True: set(reminder_ids)}
    found: dict[bool, set[int]] = {False: set(), True: set()}
    if not (wanted[False] or wanted[True]):
        return found[False], found[True]
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return found[False], found[True]
    for entry in entries:
        if entry.name.startswith("."):
            continue
        for reminder, pattern in ((False, _FIRST), (True, _REMINDER)):
            match = pattern.search(entry.name)
            if match is not None and int(match.group(1)) in wanted[reminder]:
                found[reminder].add(int(match.group(1)))
    return found[False], found[True]


def remove_files(directory: Path, survey_ids: Iterable[int]) -> int:
    """Remove the .eml files of these surveys; returns how many went."""
    wanted = set(survey_ids)
    if not wanted:
        return 0
    removed = 0
    for survey_id, paths in files_by_survey(directory).items():
        if survey_id in wanted:
            for path in paths:
                try:
                    path.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("outbox.remove_failed", survey_id=survey_id,
                                reason=exc.strerror or exc.__class__.__name__)
    return removed


async def prune(store: Store, directory: Path) -> int:
    """Remove the .eml files of surveys that no longer exist (erased); returns how many."""
    files = await asyncio.to_thread(files_by_survey, directory)
    if not files:
        return 0
    alive = await store.existing_surveys(set(files))
    gone = [i for i in files if i not in alive]
    return await asyncio.to_thread(remove_files, directory, gone) if gone else 0

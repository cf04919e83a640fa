"""Everything a running npsd shares, reached from handlers and jobs through one app key."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from aiohttp import web

from daemon.config import Settings
from daemon.metrics import Metrics
from daemon.refusals import RefusalLog
from daemon.supervisor import Supervisor
from jobs import outbox
from jobs.book_rules import BookRules
from jobs.clock import Clock
from jobs.loop_events import LoopEvents
from jobs.planning import make_planner
from storage.sql_store import SqlStore
from storage.store import IntakePolicy

log = structlog.get_logger("npsd")


def process_identity() -> str:
    """Names this process in leases, so another can tell whose claims it takes over."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    store: SqlStore
    metrics: Metrics
    config_path: Path | None = None
    owner: str = field(default_factory=process_identity)
    wake_dispatcher: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    refusals: RefusalLog = field(init=False)
    supervisor: Supervisor = field(init=False)
    # Set by a signal or by a background task's death; `npsd run` then stops.
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    died: str | None = None  # the task whose death stopped the daemon
    _policy: tuple[Settings, IntakePolicy] | None = field(default=None, init=False, repr=False)
    unverified_reads: int = 0  # request bodies being read before their signature is checked

    def __post_init__(self) -> None:
        self.refusals = RefusalLog(self.clock)
        self.supervisor = Supervisor(self._task_died)

    def _task_died(self, name: str) -> None:
        self.died = self.died or name
        self.stop_requested.set()

    def book_rules(self) -> BookRules:
        a = self.settings.accounts
        return BookRules(one_account_per_user=a.one_account_per_user,
                         session_timeout=a.session_timeout)

    def intake_policy(self) -> IntakePolicy:
        """What the store applies to the next messages, from the settings as they are now
        (a SIGHUP replaces them; built once per settings object)."""
        made = self._policy
        if made is None or made[0] is not self.settings:
            policy = IntakePolicy(self.book_rules(), make_planner(self.settings.survey),
                                  on_erased=self._remove_outbox_files, loop=self.loop())
            made = self._policy = (self.settings, policy)
        return made[1]

    def loop(self) -> LoopEvents:
        """The alerts and webhooks of an answer, unsubscribe or erasure, as configured now."""
        return LoopEvents(self.settings.alerts, self.settings.webhooks)

    def outbox_dir(self) -> Path | None:
        """email.file_dir when the file backend is on."""
        email = self.settings.email
        return email.file_dir if email.backend == "file" else None

    def _remove_outbox_files(self, survey_ids: list[int]) -> None:
        """After an erasure committed: its surveys' .eml files go too (a directory listing
        and a few unlinks, on the loop so they are gone before the request is answered)."""
        directory = self.outbox_dir()
        if directory is not None:
            removed = outbox.remove_files(directory, survey_ids)
            log.info("privacy.files_removed", files=removed)


RUNTIME = web.AppKey("runtime", Runtime)

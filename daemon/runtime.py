"""Everything a running npsd shares, reached from handlers and jobs through one app key."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from daemon.config import Settings
from daemon.metrics import Metrics
from daemon.refusals import RefusalLog
from jobs.clock import Clock
from storage.book_rules import BookRules
from storage.db import Database
from storage.group_commit import GroupCommitter


def process_identity() -> str:
    """Names this process in leases, so another can tell whose claims it takes over."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    db: Database
    metrics: Metrics
    committer: GroupCommitter
    config_path: Path | None = None
    owner: str = field(default_factory=process_identity)
    wake_dispatcher: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    refusals: RefusalLog = field(init=False)
    unverified_reads: int = 0  # request bodies being read before their signature is checked

    def __post_init__(self) -> None:
        self.refusals = RefusalLog(self.clock)

    def book_rules(self) -> BookRules:
        a = self.settings.accounts
        return BookRules(one_account_per_user=a.one_account_per_user,
                         session_timeout=a.session_timeout)


RUNTIME = web.AppKey("runtime", Runtime)

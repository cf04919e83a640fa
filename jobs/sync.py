"""The daily sync-back: every answer recorded or revised since it was last synced goes to
Segment's Tracking API as an identify with the NPS traits (plus, optionally, a track event,
a group call per account, and the unsubscribed trait).

Progress is checkpointed per batch: an answer's revision is marked synced once every message
it produced has been delivered (or refused by Segment and recorded). A crash re-sends at most
the batch in flight, with the same messageIds, which Segment deduplicates.

Throughput: each message is serialised once (sized, packed and sent as those bytes), the
backlog is read by keyset pagination, and the next batch is read and built while the
current one is on the wire and being checkpointed. Only one batch is ever in flight, and
a batch is checkpointed only after Segment settled it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from json.encoder import encode_basestring
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from jobs.clock import Clock
from jobs.owners import owner_is_dead
from jobs.redact import strings_in, without_quotes
from jobs.segment_client import RetryPolicy, SegmentClient, SegmentSendAborted
from jobs.sync_batching import (
    MAX_MESSAGE_BYTES,
    Encoded,
    Packer,
    dumps,
    encode_fitted,
    fit_encoded,
    id_parts,
    message_id,
    pack,
)
from settings import SegmentSettings
from storage.db import StoreUnavailable
from storage.store import Store
from storage.sync_store import PendingAnswer, PendingChunk
from storage.timeparse import iso

log = structlog.get_logger("npsd.sync")

LEASE = timedelta(minutes=5)
LEASE_RENEWAL = timedelta(minutes=1)  # renewed with a checkpoint once this old
CHUNK_ANSWERS = 2000
BATCHES_AHEAD = 2
LIBRARY = {"name": "npsd", "version": "0.1.0"}


Owner = tuple[int, int, str]  # (survey id, answer revision, user id): each message's tag


def _iso(at: datetime) -> str:
    """``iso`` for an answer time: UTC, naive as SQLite gives it, or aware."""
    if at.tzinfo is not None:
        at = (at if at.tzinfo is UTC else at.astimezone(UTC)).replace(tzinfo=None)
    text = at.isoformat()  # without timespec: the quickest form, then cut to milliseconds
    return (text[:23] if at.microsecond else text + ".000") + "Z"


_IDENTIFY, _TRACK = id_parts("identify"), id_parts("track")


class _Shaper:
    """An answer's messages straight in their wire form, tagged with their owner.

    An identify with the NPS traits when this is the user's newest answer, a track event
    when `track_answers`, and a group call per account when `group_nps`, all with ids
    deterministic per revision. Formatted from pieces serialised once per run, byte for byte
    what ``dumps`` makes of the same messages as dicts (tests/unit/test_sync_fitting.py), so
    no dict is built and walked; a message over the size limit is parsed back and its
    comment truncated (``fit_encoded``)."""

    def __init__(self, s: SegmentSettings) -> None:
        self._track, self._groups = s.track_answers, s.group_nps
        self._truncatable = (("traits", s.comment_trait), ("properties", "comment"))
        self._context = dumps({"library": LIBRARY}).decode()
        self._names = tuple(encode_basestring(n)
                            for n in (s.rating_trait, s.comment_trait, s.date_trait))

    def encode(self, a: PendingAnswer, newest: bool, accounts: list[str],
               figures: dict[str, dict[str, Any]]) -> tuple[list[Encoded], int]:
        """The messages and the sum of their sizes in bytes."""
        survey_id, user_id, score, comment, answered_at, revision = a
        owner: Owner = (survey_id, revision, user_id)
        when = _iso(answered_at)
        head = (f'{{"userId":{encode_basestring(user_id)},"timestamp":"{when}",'
                f'"context":{self._context},')
        text = encode_basestring(comment)
        survey, rev = str(survey_id), str(revision)  # ASCII: as many bytes as characters
        ids = f"{len(survey)}:{survey}{len(rev)}:{rev}".encode()  # id_parts(survey, rev)
        out: list[Encoded] = []
        size = 0
        if newest:
            mid = "npsd-" + sha256(_IDENTIFY + ids).hexdigest()[:32]  # digest_id
            rating, comment_name, date = self._names
            data = (f'{head}"type":"identify","messageId":"{mid}","traits":{{{rating}:{score},'
                    f'{comment_name}:{text},{date}:"{when}"}}}}').encode()
            if len(data) > MAX_MESSAGE_BYTES:
                data = self._fit(data)
            out.append(Encoded(data, mid, owner))
            size = len(data)
        if self._track:
            mid = "npsd-" + sha256(_TRACK + ids).hexdigest()[:32]
            data = (f'{head}"type":"track","event":"NPS Survey Answered","messageId":"{mid}",'
                    f'"properties":{{"rating":{score},"comment":{text},"survey_id":{survey},'
                    f'"revision":{rev}}}}}').encode()
            if len(data) > MAX_MESSAGE_BYTES:
                data = self._fit(data)
            out.append(Encoded(data, mid, owner))
            size += len(data)
        if accounts and self._groups:
            for group_id in accounts:
                mid = message_id("group", group_id, survey, rev)
                f = figures.get(group_id, {})
                traits = dumps({"NPS": f.get("nps"), "NPS_responses": f.get("responses")})
                data = (f'{head}"type":"group","groupId":{encode_basestring(group_id)},'
                        f'"messageId":"{mid}","traits":').encode() + traits + b"}"
                out.append(Encoded(data, mid, owner))
                size += len(data)
        return out, size

    def _fit(self, data: bytes) -> bytes:
        """A message over the size limit, its comment truncated until it fits."""
        return fit_encoded(json.loads(data), truncatable=self._truncatable)[1]


@dataclass
class _Batch:
    items: list[Encoded]
    # Answer revisions that produced no message at all: settled with this batch.
    free: list[Owner] = field(default_factory=list)


class Syncer:
    def __init__(self, store: Store, clock: Clock, owner: str,
                 settings: Callable[[], SegmentSettings], session: aiohttp.ClientSession,
                 *, policy: RetryPolicy | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_batch: Callable[[str, int], None] | None = None) -> None:
        self._store, self._clock, self._owner = store, clock, owner
        self._settings, self._session = settings, session
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._on_batch = on_batch
        self._renewed = datetime.min.replace(tzinfo=UTC)  # when this syncer last took the lease

    async def run(self, trigger: str) -> dict[str, Any]:
        s = self._settings()
        if not s.enabled:
            return {"result": "disabled"}
        if self._lock.locked():
            return {"result": "busy"}
        async with self._lock:
            now = self._clock.now()
            current = await self._store.sync_lease_holder()
            if current is not None and current != self._owner and owner_is_dead(current):
                log.warning("sync.lease_broken", reason="the previous holder died")
                await self._store.break_sync_lease(current)
            if not await self._store.acquire_sync_lease(self._owner, now, LEASE):
                log.info("sync.busy", trigger=trigger)
                return {"result": "busy"}
            self._renewed = now
            log.info("sync.started", trigger=trigger)
            client = SegmentClient(self._session, s.endpoint, s.write_key, self._policy,
                                   self._sleep, clock=self._clock)
            counts = {"sent": 0, "failed": 0, "batches": 0}
            result = "ok"
            try:
                await self._answers(client, s, counts)
                if s.sync_unsubscribes:
                    await self._unsubscribes(client, s, counts)
            except SegmentSendAborted as exc:
                result = exc.result.status
                log.warning("sync.failed", reason=str(exc), **counts)
            except StoreUnavailable as exc:
                result = "store_unavailable"
                log.warning("sync.failed", reason=str(exc), **counts)
            finally:
                await self._store.release_sync_lease(self._owner, self._clock.now(),
                                               result, counts["sent"], counts["failed"])
            if result == "ok":
                log.info("sync.finished", trigger=trigger, **counts)
            return {"result": result, **counts}

    async def _answers(self, client: SegmentClient, s: SegmentSettings,
                       counts: dict[str, int]) -> None:
        remaining: dict[Owner, int] = {}  # per answer revision, its messages not yet settled
        # Batches are built ahead while the current one is sent, then checkpointed.
        queue: asyncio.Queue[_Batch | Exception | None] = asyncio.Queue(BATCHES_AHEAD)

        async def produce() -> None:
            try:
                async for batch in self._build(s, remaining):
                    await queue.put(batch)
                await queue.put(None)
            except Exception as exc:  # handed to the consumer, which raises it
                await queue.put(exc)

        producer = asyncio.create_task(produce())
        # A sync allocates a great many small objects, which sets off full collections: they
        # skip the heap that was there before it (here ~7 ms each instead of ~80 ms). Never
        # unfrozen: that would also thaw what the server froze at start (daemon/server.py).
        gc.freeze()
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                await self._settle(client, item, remaining, counts)
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    async def _build(self, s: SegmentSettings, remaining: dict[Owner, int]
                     ) -> AsyncIterator[_Batch]:
        """The backlog as batches. The next chunk of answers is read while one is shaped."""
        shaper, packer = _Shaper(s), Packer()
        figures: dict[str, dict[str, Any]] = {}  # account NPS, read once per run
        free: list[Owner] = []  # answer revisions with no message: settled with a batch

        def read(after_id: int) -> asyncio.Task[PendingChunk]:
            return asyncio.create_task(self._store.pending_chunk(
                CHUNK_ANSWERS, after_id, with_accounts=s.group_nps))

        reading = read(0)
        try:
            while (chunk := await reading).answers:
                reading = read(chunk.answers[-1].survey_id)
                wanted = {g for gs in chunk.accounts.values() for g in gs} - figures.keys()
                if wanted:
                    figures.update(await self._store.account_figures(sorted(wanted)))
                newest, accounts, encode = chunk.newest, chunk.accounts, shaper.encode
                for n, a in enumerate(chunk.answers, 1):
                    items, size = encode(a, newest.get(a.user_id, a.survey_id) == a.survey_id,
                                         accounts.get(a.user_id, []) if accounts else [],
                                         figures)
                    if not items:
                        free.append((a.survey_id, a.revision, a.user_id))
                        continue
                    remaining[items[0].tag] = len(items)
                    if full := packer.add(items, size):
                        yield _Batch(full[0], free[:])  # a batch per group at most, mostly
                        free.clear()
                        for batch in full[1:]:
                            yield _Batch(batch)
                    if n % 64 == 0:
                        await asyncio.sleep(0)  # let the send and checkpoint in flight go on
            if (last := packer.flush()) or free:
                yield _Batch(last, free[:])
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading

    async def _settle(self, client: SegmentClient, batch: _Batch,
                      remaining: dict[Owner, int], counts: dict[str, int]) -> None:
        """Send one batch, then checkpoint what Segment settled (and only that)."""
        items, done = await self._still_there(batch.items, remaining)
        delivered, rejected = await self._send(client, items) if items else ([], [])
        # Segment's reason may quote the message back (an email address, a comment).
        failures = [{"survey_id": e.tag[0], "user_id": e.tag[2], "message_id": e.message_id,
                     "reason": _scrubbed(e, reason)[:500]} for e, reason in rejected]
        done += [(o[0], o[1]) for o in batch.free]
        for e in [*delivered, *(e for e, _ in rejected)]:
            remaining[e.tag] -= 1
            if not remaining[e.tag]:
                del remaining[e.tag]
                done.append((e.tag[0], e.tag[1]))
        now = self._clock.now()
        renew = now - self._renewed >= LEASE_RENEWAL
        await self._store.checkpoint(done, failures, now,
                                    (self._owner, LEASE) if renew else None)
        if renew:
            self._renewed = now
        counts["sent"] += len(delivered)
        counts["failed"] += len(rejected)
        counts["batches"] += 1 if batch.items else 0

    async def _still_there(self, items: list[Encoded], remaining: dict[Owner, int]
                           ) -> tuple[list[Encoded], list[tuple[int, int]]]:
        """Drop the messages of answers erased since they were read: an erasure that
        committed before the send leaves nothing of the person to go to Segment."""
        if not items:
            return items, []
        alive = await self._store.existing_surveys({e.tag[0] for e in items})
        if len(alive) == len({e.tag[0] for e in items}):
            return items, []
        gone = {e.tag for e in items if e.tag[0] not in alive}
        for tag in gone:
            remaining.pop(tag, None)
        return [e for e in items if e.tag[0] in alive], [(t[0], t[1]) for t in gone]

    async def _unsubscribes(self, client: SegmentClient, s: SegmentSettings,
                            counts: dict[str, int]) -> None:
        while True:
            pending = await self._store.pending_unsubscribes(2000)
            if not pending:
                return
            messages = [{"type": "identify", "userId": user_id, "timestamp": iso(at),
                         "context": {"library": LIBRARY},
                         "messageId": message_id("unsubscribed", user_id, iso(at) or ""),
                         "traits": {s.unsubscribed_trait: True}} for user_id, at in pending]
            for batch in pack([encode_fitted(m)] for m in messages):  # tagged with m
                delivered, rejected = await self._send(client, batch)
                counts["sent"] += len(delivered)
                counts["failed"] += len(rejected)
                counts["batches"] += 1
                settled = [*delivered, *(e for e, _ in rejected)]
                await self._store.mark_unsubscribes_synced(
                    [e.tag["userId"] for e in settled])

    async def _send(self, client: SegmentClient, batch: list[Encoded]
                    ) -> tuple[list[Encoded], list[tuple[Encoded, str]]]:
        try:
            delivered, rejected = await client.send_isolating(
                batch, sent_at=iso(self._clock.now()))
        except SegmentSendAborted:
            if self._on_batch is not None:
                self._on_batch("failed", 0)
            raise
        if self._on_batch is not None:
            self._on_batch("ok", len(delivered))
        log.info("sync.batch_sent", messages=len(delivered), rejected=len(rejected))
        for e, reason in rejected:
            log.warning("sync.message_rejected", message_id=e.message_id,
                        reason=_scrubbed(e, reason)[:200])
        return delivered, rejected


SYNCER = web.AppKey("syncer", Syncer)


def _scrubbed(e: Encoded, reason: str) -> str:
    """Segment's refusal may quote the message back (an address, a comment, a name)."""
    try:
        quoted = strings_in(e.data)
    except ValueError:
        quoted = []
    return without_quotes(reason, quoted)

"""A real HTTP server standing in for Segment's HTTP Tracking API, on 127.0.0.1.

It enforces the documented limits (auth, content type, 500 KB body, 2,500 messages,
32 KB per message, required fields) so a client that passes here respects them, and it
injects faults on demand (status codes, slowness, dropped connections, poison messages,
the whole server going away) so retry and isolation paths run over real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections import Counter, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

MAX_BODY_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2_500
MAX_MESSAGE_BYTES = 32 * 1024
MESSAGE_TYPES = frozenset({"identify", "track", "group", "page", "screen", "alias"})

# aiohttp answers 413 itself above client_max_size; keep it well above Segment's limit so
# oversize bodies reach our handler and get Segment's 400.
_CLIENT_MAX_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Fault:
    kind: Literal["pass", "fail", "slow", "drop"]
    status: int = 0
    retry_after: float | None = None
    seconds: float = 0.0


class _BadRequest(Exception):
    """A request Segment would refuse with 400; the text says which rule it broke."""


def _size(message: Any) -> int:
    return len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())


class FakeSegment:
    """Segment's tracking API on a free loopback port.

    ``requests`` counts every request that reached a handler, faulted ones included, so
    tests can assert how many attempts a client made; ``batches`` and ``messages`` hold
    only what was accepted (a single-message call is recorded as a batch of one).
    Faults queue in the order they are asked for and each request consumes one.
    """

    def __init__(self, write_key: str) -> None:
        self.write_key = write_key
        self.messages: list[dict[str, Any]] = []
        self.batches: list[list[dict[str, Any]]] = []
        self.sent_at: list[Any] = []  # each accepted batch body's sentAt (None if absent)
        self.requests = 0
        self._last_sent_at: Any = None
        self.reject_message_ids: set[str] = set()
        self.reject_reason = "rejected"  # what a refusal says (Segment may quote the message)
        self._faults: deque[_Fault] = deque()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> FakeSegment:
        await self.up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.down()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeSegment has not been started")
        return f"http://127.0.0.1:{self._port}/v1"

    async def up(self) -> None:
        """Listen again, on the same port as before (a free one the first time)."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=_CLIENT_MAX_SIZE)
        app.router.add_post("/v1/batch", self._batch)
        app.router.add_post("/v1/{kind:identify|track|group|page|screen|alias}", self._single)
        # handler_cancellation: a client that times out and hangs up cancels the slow
        # handler, so shutdown never waits on a sleep nobody is listening to.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def down(self) -> None:
        """Stop listening and close open connections; clients see refusals until up()."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- faults -----------------------------------------------------------------------

    def pass_next(self, count: int = 1) -> None:
        """Answer the next ``count`` requests normally: spacing for faults queued after."""
        self._faults.extend([_Fault("pass")] * count)

    def fail_next(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """Answer ``status`` (with Retry-After if given) to the next ``count`` requests."""
        self._faults.extend([_Fault("fail", status=status, retry_after=retry_after)] * count)

    def slow_next(self, seconds: float, count: int = 1) -> None:
        """Accept and record the next ``count`` requests, but answer only after ``seconds``.

        Recording first is deliberate: it is the case where Segment got the batch but
        the client timed out, so a retry shows up in ``duplicates()``.
        """
        self._faults.extend([_Fault("slow", seconds=seconds)] * count)

    def drop_next(self, count: int = 1) -> None:
        """Close the connection without answering the next ``count`` requests."""
        self._faults.extend([_Fault("drop")] * count)

    # -- inspection -------------------------------------------------------------------

    def by_message_id(self) -> dict[str, dict[str, Any]]:
        """Accepted messages by messageId; a later copy replaces an earlier one."""
        return {m["messageId"]: m for m in self.messages}

    def duplicates(self) -> list[str]:
        """messageIds accepted more than once, in order of first arrival."""
        counts = Counter(m["messageId"] for m in self.messages)
        return [mid for mid, n in counts.items() if n > 1]

    # -- handlers ---------------------------------------------------------------------

    async def _batch(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, kind=None)

    async def _single(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, kind=request.match_info["kind"])

    async def _handle(self, request: web.Request, kind: str | None) -> web.StreamResponse:
        self.requests += 1
        # Read the whole body before any fault, so a drop is seen after the send, the
        # way a dying load balancer looks to the client.
        raw = await request.read()
        fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault.kind == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never written: the transport is closed
        if fault is not None and fault.kind == "fail":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _format_seconds(fault.retry_after)
            return _error(fault.status, f"injected {fault.status}", headers)

        if not self._authorized(request.headers.get("Authorization", "")):
            return _error(401, "Invalid write key")
        try:
            batch = self._parse(request, raw, kind)
        except _BadRequest as exc:
            return _error(400, str(exc))

        self.batches.append(batch)
        self.messages.extend(batch)
        self.sent_at.append(self._last_sent_at)
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.seconds)
        return web.json_response({"success": True})

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{self.write_key}:"

    def _parse(self, request: web.Request, raw: bytes, kind: str | None) -> list[dict[str, Any]]:
        # aiohttp has already undone Content-Encoding: gzip, so the limit is on JSON bytes.
        if request.content_type != "application/json":
            raise _BadRequest("Content-Type must be application/json")
        if len(raw) > MAX_BODY_BYTES:
            raise _BadRequest(f"body is {len(raw)} bytes, over {MAX_BODY_BYTES}")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _BadRequest(f"invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest("body must be a JSON object")
        self._last_sent_at = body.get("sentAt")
        if kind is None:
            batch = body.get("batch")
            if not isinstance(batch, list):
                raise _BadRequest("batch must be a list")
            if len(batch) > MAX_BATCH_MESSAGES:
                raise _BadRequest(f"{len(batch)} messages, over {MAX_BATCH_MESSAGES}")
        else:
            body.setdefault("type", kind)
            batch = [body]
        for message in batch:
            self._check_message(message)
        return batch

    def _check_message(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise _BadRequest("each message must be a JSON object")
        if message.get("type") not in MESSAGE_TYPES:
            raise _BadRequest(f"bad type {message.get('type')!r}")
        mid = message.get("messageId")
        if not isinstance(mid, str) or not mid:
            raise _BadRequest("messageId is required")
        if not (message.get("userId") or message.get("anonymousId")):
            raise _BadRequest(f"{mid}: userId or anonymousId is required")
        size = _size(message)
        if size > MAX_MESSAGE_BYTES:
            raise _BadRequest(f"{mid}: message is {size} bytes, over {MAX_MESSAGE_BYTES}")
        if mid in self.reject_message_ids:
            raise _BadRequest(f"{mid}: {self.reject_reason}")


def _error(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"success": False, "message": text}, status=status, headers=headers)


def _format_seconds(seconds: float) -> str:
    # Real servers send whole seconds; keep fractions so fast tests can use small values.
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))

"""Reading request bodies ourselves: within a per-route limit, before a deadline, and
inflating gzip in slices.

The server is told not to inflate bodies (`auto_decompress=False`, daemon/request_counts.py),
so nothing is read or inflated before a handler has seen the route and the credentials and
asks for the body here. Inflation goes through zlib's `max_length`, a slice of output at a
time with a turn of the event loop between slices, and stops as soon as the output passes
the limit: a 0.5 MB gzip bomb costs one limit's worth of inflation, spread over many loop
turns, instead of 512 MiB in one go."""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from daemon.http_util import BodyError

# Output of one inflation step: ~0.3 ms of CPU, so other requests get a turn in between.
INFLATE_SLICE = 256 * 1024
# After a refusal for size (of a request whose credentials passed), the rest of a body
# this small is read and dropped, not inflated, so the client sees the answer: closing on
# unread bytes sends a TCP reset that can destroy the answer before the client reads it.
# Requests refused before their body is read are not drained: they may see the reset.
DRAIN_MAX = 1024 * 1024
DRAIN_TIMEOUT_S = 1.0
ENCODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def content_encoding(request: web.BaseRequest) -> str | None:
    """"gzip", "deflate" or None (identity); anything else is refused with 415."""
    header = request.headers.get("Content-Encoding", "").strip().lower()
    if header in ("", "identity"):
        return None
    if header not in ENCODINGS:
        raise BodyError(415, "Content-Encoding must be gzip, deflate or identity, not "
                        f"{header[:40]}",
                        close=True, reason="unsupported_encoding")
    return ENCODINGS[header]


def check_declared_length(request: web.BaseRequest, limit: int) -> None:
    """A Content-Length over the limit is refused before a byte of the body is read."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyError(413, f"body is larger than {limit} bytes", close=True)


async def read_body(request: web.BaseRequest, limit: int, timeout_s: float,
                    *, inflate: bool = True) -> bytes:
    """The body (inflated when it is gzip or deflate and `inflate`), at most `limit` bytes
    (413 above), read within `timeout_s` (408 after: a client that trickles a body must not
    hold a connection and its buffer for ever)."""
    encoding = content_encoding(request) if inflate else None
    check_declared_length(request, limit)
    content = request.content
    if encoding is None and content.is_eof():
        # The whole body came with the headers (the usual small request): take the bytes
        # as they lie, without a copy or an await.
        body = content.read_nowait()
        if len(body) > limit:
            raise BodyError(413, f"body is larger than {limit} bytes", close=True)
        return body
    try:
        async with asyncio.timeout(timeout_s):
            if encoding is None:
                return await _read_plain(request, limit)
            return await _read_inflated(request, limit, encoding)
    except TimeoutError:
        raise BodyError(408, f"the body did not arrive within {timeout_s:g} s",
                        close=True) from None
    except BodyError as exc:
        if exc.status == 413:
            await _drain_small_rest(request)
        raise


async def _read_plain(request: web.BaseRequest, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while chunk := await _next_chunk(request):
        total += len(chunk)
        if total > limit:
            raise BodyError(413, f"body is larger than {limit} bytes", close=True)
        parts.append(chunk)
    return b"".join(parts)


async def _read_inflated(request: web.BaseRequest, limit: int, encoding: str) -> bytes:
    # gzip: a gzip header; deflate: what HTTP calls deflate (zlib-wrapped) is auto-detected.
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else 32 + zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    parts: list[bytes] = []
    total = 0
    try:
        while chunk := await _next_chunk(request):
            data = chunk
            while True:
                if inflater.eof:  # what follows is another gzip member (concatenated gzip)
                    data = inflater.unused_data + data
                    if not data:
                        break
                    inflater = zlib.decompressobj(wbits)
                piece = inflater.decompress(data, INFLATE_SLICE)
                total += len(piece)
                if total > limit:
                    raise BodyError(413, f"body is larger than {limit} bytes after "
                                         f"decompression", close=True)
                parts.append(piece)
                data = inflater.unconsumed_tail
                more = inflater.eof and inflater.unused_data
                if not data and len(piece) < INFLATE_SLICE and not more:
                    break
                await asyncio.sleep(0)  # a bomb inflates one slice per loop turn
    except zlib.error:
        raise BodyError(400, f"body is not valid {encoding} (Content-Encoding: {encoding})",
                        close=True, reason="bad_compression") from None
    if not inflater.eof:
        raise BodyError(400, f"{encoding} body is truncated", close=True,
                        reason="bad_compression")
    return b"".join(parts)


async def _next_chunk(request: web.BaseRequest) -> bytes:
    """The next piece of the raw body, b"" at its end; a broken transfer is a 400."""
    try:
        return await request.content.readany()
    except (OSError, ValueError, RuntimeError) as exc:
        raise BodyError(400, f"body could not be read: {exc.__class__.__name__}",
                        close=True, reason="unreadable_body") from None
    except Exception as exc:  # aiohttp's payload errors (bad chunked encoding, ...)
        raise BodyError(400, f"body could not be read: {exc.__class__.__name__}",
                        close=True, reason="unreadable_body") from None


async def _drain_small_rest(request: web.BaseRequest) -> None:
    """Read and drop what remains of a body refused for size when that is little."""
    length = request.content_length
    content = request.content
    if length is None or length - content.total_bytes > DRAIN_MAX:
        return
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while await content.readany():
                pass
    except Exception:  # a drain is a courtesy: the connection closes anyway
        return


async def discard_body(request: web.BaseRequest, limit: int, timeout_s: float) -> None:
    """For a route that takes a body and ignores it: within the limit, raw, not inflated."""
    await read_body(request, limit, timeout_s, inflate=False)

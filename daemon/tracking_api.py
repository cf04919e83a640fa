"""Segment's HTTP Tracking API, so analytics-python, analytics-node and friends can send
straight to npsd. The same pipeline as /v1/segment; only the door differs: the write key
(Basic auth or `writeKey` in the body), `sentAt` skew correction, and Segment's limits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from daemon.auth import basic_username, key_matches
from daemon.bodies import check_declared_length, read_body
from daemon.http_util import BodyError, check_json_content_type, parse_json
from daemon.intake import (
    commit,
    continue_expected,
    refuse,
    refuse_body,
    unavailable,
    validate,
)
from daemon.messages import MAX_MESSAGE_BYTES, field
from daemon.runtime import RUNTIME
from storage.db import StoreUnavailable
from storage.events import TYPES
from storage.timeparse import in_range, parse_timestamp

log = structlog.get_logger("npsd.intake")

MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
SINGLE_TYPES = ("identify", "track", "group", "page", "screen", "alias")
DOOR = "tracking_api"
# Write keys ship inside web pages and apps: whoever holds one must not be able to erase.
REFUSED = {"delete": "delete is not accepted on the Tracking API (write keys are public): "
                     "erasure comes through /v1/segment or DELETE /v1/users/{userId}"}


def corrected_timestamp(raw: dict[str, Any], sent_at: datetime | None,
                        received_at: datetime) -> datetime | None:
    """Segment's clock-skew correction: timestamp = receivedAt - (sentAt - originalTimestamp).
    `originalTimestamp` is the device's time of the event (the `timestamp` it sent)."""
    original = parse_timestamp(field(raw, "originalTimestamp", "original_timestamp")) \
        or parse_timestamp(raw.get("timestamp"))
    message_sent = parse_timestamp(field(raw, "sentAt", "sent_at")) or sent_at
    if original is None or message_sent is None:
        return original
    try:
        corrected = received_at - (message_sent - original)
    except OverflowError:  # a device clock thousands of years off: trust the arrival time
        return received_at
    return corrected if in_range(corrected) else received_at


async def _handle(request: web.Request, single_type: str | None) -> web.Response:
    runtime = request.app[RUNTIME]
    arrival = runtime.clock.now()
    limit = MAX_BATCH_BYTES if single_type is None else MAX_MESSAGE_BYTES
    keys = runtime.settings.intake.api_keys
    header_key = basic_username(request.headers.get("Authorization"))
    try:
        check_json_content_type(request)
        if header_key is not None and not key_matches(header_key, keys):
            # Refused before the body is read; a key can only be in the body without one.
            return refuse(request, DOOR, 401, "invalid_write_key", "invalid write key")
        body = await read_body(request, limit,
                               runtime.settings.server.body_timeout.total_seconds())
        payload = parse_json(body)
    except BodyError as exc:  # Segment answers 400 for size
        if header_key is None and exc.reason == "invalid_json":
            return refuse(request, DOOR, 401, "invalid_write_key", "invalid write key")
        return refuse_body(request, DOOR, exc, 400 if exc.status == 413 else None)
    key = header_key
    if key is None and isinstance(payload, dict) and isinstance(payload.get("writeKey"), str):
        key = payload["writeKey"]
    if not key_matches(key, keys):
        return refuse(request, DOOR, 401, "invalid_write_key", "invalid write key")
    if not isinstance(payload, dict):
        return refuse(request, DOOR, 400, "invalid_json", "body must be a JSON object")
    if single_type is None:
        raws = payload.get("batch")
        if not isinstance(raws, list):
            return refuse(request, DOOR, 400, "invalid_batch",
                          "batch must be an array of messages")
        if len(raws) > MAX_BATCH_MESSAGES:
            return refuse(request, DOOR, 400, "batch_too_large",
                          f"a batch holds at most {MAX_BATCH_MESSAGES} messages")
    else:
        raws = [{**payload, "type": single_type}]
    return await _take(request, raws, payload, arrival, single_type, len(body))


async def _take(request: web.Request, raws: list[Any], payload: dict[str, Any],
                arrival: datetime, single_type: str | None, nbytes: int) -> web.Response:
    runtime = request.app[RUNTIME]
    sent_at = parse_timestamp(field(payload, "sentAt", "sent_at"))
    overrides = [corrected_timestamp(r, sent_at, arrival) if isinstance(r, dict) else None
                 for r in raws]
    for raw in raws:
        if isinstance(raw, dict):
            raw.pop("writeKey", None)
            raw.setdefault("receivedAt", arrival.isoformat())
    valid, invalid = validate(raws, arrival, overrides=overrides, refused=REFUSED,
                              check_sizes=single_type is None)
    if single_type is not None and invalid:
        return refuse(request, DOOR, 400, "invalid_message", str(invalid[0][1]))
    deletes = sum(1 for _, exc in invalid if str(exc) == REFUSED["delete"])
    if deletes:
        log.warning("intake.delete_refused", door=DOOR, messages=deletes,
                    remote=request.remote or "")
    try:
        result = await commit(runtime, valid, invalid, door=DOOR, nbytes=nbytes)
    except StoreUnavailable as exc:
        return unavailable(exc)
    body_out: dict[str, Any] = {"success": True}
    if result.rejected:
        body_out["rejected"] = result.rejected
    return web.json_response(body_out)


async def batch(request: web.Request) -> web.Response:
    return await _handle(request, None)


def single(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return await _handle(request, kind)

    return handler


async def expect(request: web.Request) -> web.Response | None:
    """`Expect: 100-continue`: a wrong key in the header, a body declared over the limit or
    not JSON are answered before the client sends the body."""
    keys = request.app[RUNTIME].settings.intake.api_keys
    header_key = basic_username(request.headers.get("Authorization"))
    batch_route = request.path in ("/v1/batch", "/v1/import")
    try:
        check_json_content_type(request)
        if header_key is not None and not key_matches(header_key, keys):
            return refuse(request, DOOR, 401, "invalid_write_key", "invalid write key")
        check_declared_length(request, MAX_BATCH_BYTES if batch_route else MAX_MESSAGE_BYTES)
    except BodyError as exc:
        return refuse_body(request, DOOR, exc, 400 if exc.status == 413 else None)
    await continue_expected(request)
    return None


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/batch", batch, expect_handler=expect)
    # /v1/import: older libraries' name for the batch endpoint
    app.router.add_post("/v1/import", batch, expect_handler=expect)
    for kind in SINGLE_TYPES:
        assert kind in TYPES
        app.router.add_post(f"/v1/{kind}", single(kind), expect_handler=expect)

"""The Segment intake, `POST /v1/segment`, and the pipeline both intake doors share:
validate each message, commit the valid ones (grouped across requests), then answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from daemon.auth import AuthError, check_segment_auth
from daemon.http_util import BodyError, check_json_content_type, json_error, parse_json, read_body
from daemon.messages import (
    MAX_MESSAGE_BYTES,
    InvalidMessage,
    UnknownType,
    clamp_future,
    parse_message,
)
from daemon.runtime import RUNTIME, Runtime
from storage.db import StoreUnavailable
from storage.events import Message

log = structlog.get_logger("npsd.intake")


@dataclass
class IntakeResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "rejected": self.rejected}

    def response(self) -> web.Response:
        if self.rejected:
            return web.json_response(self.body())
        # The usual answer, written without the JSON encoder (a visible share of a request).
        return web.Response(
            body=b'{"accepted":%d,"duplicates":%d,"rejected":[]}' % (self.accepted,
                                                                      self.duplicates),
            content_type="application/json")


def validate(
    raws: list[Any], arrival: datetime, *, check_sizes: bool,
    overrides: list[datetime | None] | None = None,
) -> tuple[list[Message], list[tuple[int, InvalidMessage]]]:
    valid: list[Message] = []
    invalid: list[tuple[int, InvalidMessage]] = []
    future = 0
    for index, raw in enumerate(raws):
        try:
            override = overrides[index] if overrides is not None else None
            message = parse_message(raw, arrival, check_size=check_sizes,
                                    timestamp_override=override)
        except InvalidMessage as exc:
            invalid.append((index, exc))
            continue
        future += clamp_future(message, arrival)
        valid.append(message)
    if future:
        log.warning("intake.future_timestamp", messages=future,
                    reason="timestamp more than 24 h after arrival; arrival time used")
    return valid, invalid


async def commit(
    runtime: Runtime, valid: list[Message], invalid: list[tuple[int, InvalidMessage]],
    door: str,
) -> IntakeResult:
    """Commit the valid messages (grouped with concurrent requests); raises StoreUnavailable
    when they could not be committed, so the sender retries."""
    result = IntakeResult(rejected=[{"index": i, "message": str(e)} for i, e in invalid])
    if invalid:
        runtime.metrics.rejected.inc(len(invalid))
        log.info("intake.rejected", door=door, rejected=len(invalid),
                 first_reason=result.rejected[0]["message"])
    if valid:
        flags = await runtime.committer.submit(valid)
        result.accepted = sum(flags)
        result.duplicates = len(flags) - result.accepted
        if result.accepted and any(m.type == "identify" for m in valid):
            runtime.wake_dispatcher.set()
    return result


UNAVAILABLE = {"message": "the store cannot commit right now; retry later"}


def unwrap(payload: Any) -> tuple[list[Any], bool]:
    """(messages, is_single) from one message, an array, or {"batch": [...]}."""
    if isinstance(payload, list):
        return payload, False
    if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
        return payload["batch"], False
    return [payload], True


async def segment_intake(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    settings = runtime.settings.intake
    arrival = runtime.clock.now()
    try:
        check_json_content_type(request)
        body = await read_body(request, settings.max_body_bytes)
        is_array = body.lstrip()[:1] == b"["
        check_segment_auth(request, body, is_array, settings.api_keys, settings.shared_secrets)
        payload = parse_json(body)
    except BodyError as exc:
        return exc.response()
    except AuthError as exc:
        return json_error(401, str(exc))
    raws, single = unwrap(payload)
    # Every message of a body under 32 KB is under 32 KB: skip re-measuring them.
    valid, invalid = validate(raws, arrival, check_sizes=len(body) > MAX_MESSAGE_BYTES)
    if single and invalid:
        error = invalid[0][1]
        return json_error(501 if isinstance(error, UnknownType) else 400, str(error))
    try:
        result = await commit(runtime, valid, invalid, door="segment")
    except StoreUnavailable as exc:
        log.warning("intake.unavailable", reason=str(exc))
        return web.json_response(UNAVAILABLE, status=503, headers={"Retry-After": "5"})
    return result.response()

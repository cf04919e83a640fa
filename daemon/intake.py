"""The Segment intake, `POST /v1/segment`, and the pipeline both intake doors share:
validate each message, commit the valid ones (grouped across requests), then answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from daemon.auth import AuthError, check_segment_auth, segment_auth_before_body
from daemon.bodies import check_declared_length, read_body
from daemon.http_util import BodyError, check_json_content_type, json_error, parse_json
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
    refused: dict[str, str] | None = None,
) -> tuple[list[Message], list[tuple[int, InvalidMessage]]]:
    """Parse each message; `refused` maps a type this door does not take to the reason."""
    valid: list[Message] = []
    invalid: list[tuple[int, InvalidMessage]] = []
    future = 0
    for index, raw in enumerate(raws):
        try:
            override = overrides[index] if overrides is not None else None
            message = parse_message(raw, arrival, check_size=check_sizes,
                                    timestamp_override=override)
            if refused and message.type in refused:
                raise InvalidMessage(refused[message.type])
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
    door: str, nbytes: int = 0,
) -> IntakeResult:
    """Commit the valid messages (grouped with concurrent requests); raises StoreUnavailable
    when they could not be committed, so the sender retries."""
    result = IntakeResult(rejected=[{"index": i, "message": str(e)} for i, e in invalid])
    if invalid:
        runtime.metrics.rejected.inc(len(invalid))
        log.info("intake.rejected", door=door, rejected=len(invalid),
                 first_reason=result.rejected[0]["message"])
    if valid:
        flags = await runtime.store.record(valid, runtime.intake_policy(), nbytes=nbytes)
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


def refuse(request: web.Request, door: str, status: int, reason: str, message: str, *,
           close: bool = False) -> web.Response:
    """Answer a refusal of an intake door, and log it (rate-limited, daemon/refusals.py)."""
    request.app[RUNTIME].refusals.refused(status=status, reason=reason, door=door,
                                          remote=request.remote)
    response = json_error(status, message)
    if close or not request.content.is_eof():
        response.force_close()  # the unread rest of the body is not drained
    return response


def refuse_body(request: web.Request, door: str, exc: BodyError,
                status: int | None = None) -> web.Response:
    return refuse(request, door, status or exc.status, exc.reason, exc.message,
                  close=exc.close)


def unavailable(exc: StoreUnavailable) -> web.Response:
    log.warning("intake.unavailable", reason=str(exc))
    return web.json_response(UNAVAILABLE, status=503, headers={"Retry-After": "5"})


async def continue_expected(request: web.Request) -> None:
    """What aiohttp does for `Expect: 100-continue`: tell the client to send the body."""
    if request.version >= (1, 1):
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise web.HTTPExpectationFailed(
                text='{"message": "only Expect: 100-continue is understood"}',
                content_type="application/json")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


async def segment_expect(request: web.Request) -> web.Response | None:
    """`Expect: 100-continue` (curl sends it for large bodies): a request its headers already
    refuse is answered before the client sends the body at all."""
    settings = request.app[RUNTIME].settings.intake
    try:
        check_json_content_type(request)
        segment_auth_before_body(request.headers, settings.api_keys, settings.shared_secrets)
        check_declared_length(request, settings.max_body_bytes)
    except BodyError as exc:
        return refuse_body(request, "segment", exc)
    except AuthError as exc:
        return refuse(request, "segment", 401, exc.reason, str(exc))
    await continue_expected(request)
    return None


# Bodies read before their signature is checked, at once: anyone can send a signature
# header, and each such body may be intake.max_body_bytes. More wait their turn with a 503.
MAX_UNVERIFIED_READS = 8


async def _read_signed(request: web.Request, runtime: Runtime) -> bytes:
    """The body of a request that a signature over it is to authenticate (AuthError else)."""
    settings = runtime.settings.intake
    if runtime.unverified_reads >= MAX_UNVERIFIED_READS:
        raise BodyError(503, "too many signed bodies are being checked; retry later",
                        close=True, reason="unverified_reads_full")
    runtime.unverified_reads += 1
    try:
        body = await read_body(request, settings.max_body_bytes,
                               runtime.settings.server.body_timeout.total_seconds())
    finally:
        runtime.unverified_reads -= 1
    is_array = body.lstrip()[:1] == b"["
    check_segment_auth(request, body, is_array, settings.api_keys, settings.shared_secrets)
    return body


async def segment_intake(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    settings = runtime.settings.intake
    arrival = runtime.clock.now()
    try:
        check_json_content_type(request)
        # The headers decide first: a request nothing could authenticate is refused before
        # its body is read; a signature needs the body, read within the limit.
        if segment_auth_before_body(request.headers, settings.api_keys,
                                    settings.shared_secrets):
            body = await read_body(request, settings.max_body_bytes,
                                   runtime.settings.server.body_timeout.total_seconds())
        else:
            body = await _read_signed(request, runtime)
        payload = parse_json(body)
    except BodyError as exc:
        if exc.status == 503:
            response = web.json_response({"message": exc.message}, status=503,
                                         headers={"Retry-After": "5"})
            response.force_close()
            return response
        return refuse_body(request, "segment", exc)
    except AuthError as exc:
        return refuse(request, "segment", 401, exc.reason, str(exc))
    raws, single = unwrap(payload)
    # Every message of a body under 32 KB is under 32 KB: skip re-measuring them.
    valid, invalid = validate(raws, arrival, check_sizes=len(body) > MAX_MESSAGE_BYTES)
    if single and invalid:
        error = invalid[0][1]
        if isinstance(error, UnknownType):
            return refuse(request, "segment", 501, "unknown_type", str(error))
        return refuse(request, "segment", 400, "invalid_message", str(error))
    try:
        result = await commit(runtime, valid, invalid, door="segment", nbytes=len(body))
    except StoreUnavailable as exc:
        return unavailable(exc)
    return result.response()

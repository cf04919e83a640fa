"""Checking and parsing JSON request bodies, and answering errors as JSON. (Reading a body
within its limit is daemon/bodies.py.)"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec
from aiohttp import web

JSON_TYPES = ("application/json", "text/json")


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"message": message, **extra}, status=status)


# The reason an intake refusal is logged under (`intake.refused`), by status.
REASONS = {400: "bad_body", 408: "body_timeout", 413: "body_too_large",
           415: "unsupported_media_type"}


class BodyError(Exception):
    def __init__(self, status: int, message: str, *, close: bool = False,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.close = close  # the connection cannot carry another request
        self.reason = reason or REASONS.get(status, "bad_request")

    def response(self, status: int | None = None) -> web.Response:
        response = json_error(status or self.status, self.message)
        if self.close:
            response.force_close()
        return response


def check_json_content_type(request: web.Request) -> None:
    header = request.headers.get("Content-Type")
    if header is None:
        return  # lenient: some senders omit it; the body must still be JSON
    if header == "application/json":
        return  # what Segment sends: no need to parse it
    content_type = request.content_type.lower()
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        return
    raise BodyError(415, f"Content-Type must be application/json, not {content_type[:60]}",
                    reason="bad_content_type")


# What json.loads lets through that no database column and no JSON reader takes: NUL and
# lone surrogates (escaped, or CESU-encoded bytes, which json.loads decodes), and numbers
# beyond a float (1e999, a 309-digit mantissa, NaN, Infinity). Numbers are handled while
# parsing (hooks below); strings are scrubbed only when the body holds a suspect sequence,
# found with cheap substring tests first (a regex over every body cost ~10% of intake).
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\xed[\xa0-\xbf]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _clean(value: Any, stack: list[Any]) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | dict):
        stack.append(value)
    return value


def scrub(payload: Any) -> Any:
    """NUL and lone surrogates become U+FFFD, non-finite numbers null (iteratively: the
    payload may be nested as deep as json.loads allows)."""
    root = [payload]
    stack: list[Any] = [root]
    while stack:
        container = stack.pop()
        if isinstance(container, list):
            for index, item in enumerate(container):
                container[index] = _clean(item, stack)
        else:
            items = list(container.items())
            container.clear()
            for key, item in items:
                container[_clean(key, stack)] = _clean(item, stack)
    return root[0]


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _no_constant(_text: str) -> None:
    return None  # NaN, Infinity, -Infinity: not JSON, and no reader takes them back


def _suspect(body: bytes) -> bool:
    return (b"\\u" in body or b"\xed" in body) and _SUSPECT.search(body) is not None


# One decoder for every request: json.loads with hooks builds a new one per call.
_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)


# msgspec parses a body in half the CPU time of the json module (a 100-event batch: 124 us
# against 250 us; one message: 1.2 us against 6.6 us). Whatever it gives back equals what
# json.loads with the hooks above gives; whatever it refuses (not JSON, a BOM or UTF-16, a
# lone surrogate, a number beyond a float, NaN, nesting past its depth) goes through the
# json module, so every answer and error message stays exactly the json module's.
_FAST = msgspec.json.Decoder()


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise BodyError(400, "body is empty", reason="invalid_json")
    try:
        payload = _FAST.decode(body)
    except (msgspec.MsgspecError, RecursionError, ValueError):
        return _parse_slowly(body)
    return scrub(payload) if _suspect(body) else payload


def _parse_slowly(body: bytes) -> Any:
    try:
        # What json.loads does with bytes (UTF-8, with or without BOM; UTF-16/32 by BOM).
        payload = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
        return scrub(payload) if _suspect(body) else payload
    except UnicodeDecodeError:
        raise BodyError(400, "body is not UTF-8", reason="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise BodyError(400, f"body is not valid JSON: {exc.msg} at {exc.pos}",
                        reason="invalid_json") from None
    except (RecursionError, ValueError):
        raise BodyError(400, "body is not valid JSON (too deeply nested or too large a number)",
                        reason="invalid_json") from None

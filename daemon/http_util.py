"""Reading request bodies within limits, and answering errors as JSON."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

JSON_TYPES = ("application/json", "text/json")


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"message": message, **extra}, status=status)


class BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> web.Response:
        return json_error(self.status, self.message)


def check_json_content_type(request: web.Request) -> None:
    if "Content-Type" not in request.headers:
        return  # lenient: some senders omit it; the body must still be JSON
    content_type = request.content_type.lower()
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        return
    raise BodyError(415, f"Content-Type must be application/json, not {content_type[:60]}")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body after gzip decompression (aiohttp inflates it as it streams), at most `limit`
    bytes: a larger body, compressed or not, is refused with 413 before it is buffered."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyError(413, f"body is larger than {limit} bytes")
    parts: list[bytes] = []
    total = 0
    try:
        async for chunk in request.content.iter_chunked(1 << 16):
            total += len(chunk)
            if total > limit:
                raise BodyError(413, f"body is larger than {limit} bytes after decompression")
            parts.append(chunk)
    except BodyError:
        raise
    except (OSError, ValueError, EOFError, RuntimeError) as exc:
        raise BodyError(400, f"body could not be read: {exc.__class__.__name__}") from None
    except Exception as exc:
        raise BodyError(400, f"body could not be read or decompressed: "
                             f"{exc.__class__.__name__}") from None
    return b"".join(parts)


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise BodyError(400, "body is empty")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise BodyError(400, "body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BodyError(400, f"body is not valid JSON: {exc.msg} at {exc.pos}") from None
    except (RecursionError, ValueError):
        raise BodyError(400, "body is not valid JSON (too deeply nested or too large a number)"
                        ) from None

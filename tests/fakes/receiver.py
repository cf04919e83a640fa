"""A real HTTP server on loopback playing a webhook receiver or Slack's incoming webhook.

    async with Receiver() as hook:
        hook.answer(500, 500, 500)        # the next three requests get 500, then 200 again
        ...npsd posts to hook.url...
        await hook.wait_for(4)
        hook.requests[0].headers["webhook-id"]

Every request that reaches it is recorded (method, path, headers, raw body, status given),
faulted ones included, so a test counts attempts. `slack=True` checks the body is Slack's
incoming-webhook JSON (an object with a string `text`) and answers 400 "invalid_payload"
otherwise, as Slack does. `redirect_to` answers every request with a 307 to that URL.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

from tests.harness import free_port


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the receiver answered

    def json(self) -> object:
        return json.loads(self.body)


class Receiver:
    def __init__(self, *, slack: bool = False, path: str = "/hook") -> None:
        self.port = free_port()
        self.path = path
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.slack = slack
        self.requests: list[Request] = []
        self.default = 200
        self.redirect_to: str | None = None
        self._script: deque[int] = deque()
        self._runner: web.AppRunner | None = None

    def answer(self, *statuses: int) -> None:
        """Queue statuses for the next requests (then `default` again)."""
        self._script.extend(statuses)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self._script.popleft() if self._script else self.default
        if self.redirect_to is not None and request.path == self.path:
            status = 307
        if status == 200 and self.slack and not _slack_shaped(body):
            status = 400
        self.requests.append(Request(request.method, request.path,
                                     {k.lower(): v for k, v in request.headers.items()},
                                     body, status))
        if status == 307 and self.redirect_to is not None:
            return web.Response(status=307, headers={"Location": self.redirect_to})
        if status == 400 and self.slack:
            return web.Response(status=400, text="invalid_payload")
        return web.Response(status=status, text="ok" if status == 200 else "failed")

    def delivered(self) -> list[Request]:
        return [r for r in self.requests if r.status == 200 and r.path == self.path]

    async def wait_for(self, count: int, timeout: float = 10.0, *,
                       delivered: bool = False) -> list[Request]:
        async with asyncio.timeout(timeout):
            while len(self.delivered() if delivered else self.requests) < count:
                await asyncio.sleep(0.02)
        return self.delivered() if delivered else self.requests

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def _slack_shaped(body: bytes) -> bool:
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get("text"), str) and bool(value["text"])

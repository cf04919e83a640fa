"""A real SMTP server (aiosmtpd) on loopback that records what it receives.

    async with SmtpSink() as sink:           # serves from the test's own event loop
        ...send to sink.host:sink.port...
        await sink.wait_for(1, timeout=5)
        sink.messages[0]["Subject"]

    with SmtpSink() as sink:                 # serves from a thread (for sync code, subprocesses)

Prefer `async with` for throughput tests: a server thread in the same process fights the
client for the GIL and caps delivery at ~100 messages/s.

Faults: `fail_next(451, "Try later")` answers the next message's DATA with 451 (or its RCPT,
with `at="RCPT"`); `delay` slows every message down; `stop()`/`start()` take the server away
(dropping open connections) and bring it back on the same port. State shared with the test
is guarded by a lock, because in thread mode the server runs elsewhere.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class _Fault:
    code: int
    text: str
    at: str


class SmtpSink:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.auth = dict(auth) if auth is not None else None
        self.delay: float = 0.0
        self._lock = threading.Lock()
        self._raw: list[tuple[bytes, str, list[str]]] = []  # (content, mail from, rcpt tos)
        self._messages: list[EmailMessage] = []
        self._arrivals: list[datetime] = []  # wall-clock time each message was accepted
        self._faults: list[_Fault] = []
        self._in_loop = False
        self._controller: Controller | None = None  # thread mode
        self._server: asyncio.Task[asyncio.Server] | None = None  # loop mode
        self._sessions: set[SMTP] = set()  # loop mode

    # -- what arrived ---------------------------------------------------------------------

    @property
    def messages(self) -> list[EmailMessage]:
        """A copy of the parsed messages, oldest first; `msg.rcpt_tos` holds the envelope."""
        with self._lock:
            # Parsed on first read, not on arrival: parsing costs milliseconds a message and
            # would make the sink, not the client, the bottleneck of throughput tests.
            for i in range(len(self._messages), len(self._raw)):
                self._messages.append(_parse(*self._raw[i]))
            return list(self._messages)

    @property
    def arrived_at(self) -> list[datetime]:
        """When each message was accepted (UTC, wall clock), oldest first."""
        with self._lock:
            return list(self._arrivals)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._raw)

    def clear(self) -> None:
        with self._lock:
            self._raw.clear()
            self._messages.clear()
            self._arrivals.clear()

    async def wait_for(
        self,
        n: int,
        timeout: float = 5.0,
    ) -> list[EmailMessage]:
        """Wait until at least n messages have arrived; TimeoutError (with the count) if not."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"SmtpSink: {self.count} of {n} messages after {timeout}s")
            await asyncio.sleep(0.005)
        return self.messages

    # -- faults ---------------------------------------------------------------------------

    def fail_next(self, code: int, text: str, count: int = 1, *, at: str = "DATA") -> None:
        """Answer the next `count` messages with `code text` at DATA (or RCPT)."""
        if at not in ("DATA", "RCPT"):
            raise ValueError("at must be 'DATA' or 'RCPT'")
        with self._lock:
            self._faults.extend(_Fault(code, text, at) for _ in range(count))

    def _take_fault(self, at: str) -> _Fault | None:
        with self._lock:
            if self._faults and self._faults[0].at == at:
                return self._faults.pop(0)
            return None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._controller is not None or self._server is not None

    def start(self) -> None:
        """Listen again (idempotent). In `async with` mode, call it from the event loop."""
        if self.running:
            return
        if self._in_loop:
            # Bind synchronously so the port is taken (and connections queue) at once.
            sock = socket.create_server((self.host, self.port), backlog=128)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            self._server = loop.create_task(loop.create_server(self._session, sock=sock))
        else:
            # aiosmtpd closes its loop on stop, so every start needs a fresh controller.
            controller = _Controller(self, _Handler(self), hostname=self.host, port=self.port)
            controller.start()
            self._controller = controller

    def stop(self) -> None:
        """Take the server down, dropping open client connections (idempotent)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        server, self._server = self._server, None
        if server is not None:
            if server.done() and not server.cancelled() and server.exception() is None:
                server.result().close()
            else:
                server.cancel()
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.close()
            self._sessions.clear()

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> SmtpSink:
        self._in_loop = True
        self.start()
        assert self._server is not None
        await asyncio.wait_for(asyncio.shield(self._server), timeout=5)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server = self._server
        self.stop()
        if server is not None and server.done() and not server.cancelled():
            await asyncio.wait_for(server.result().wait_closed(), timeout=5)
        await asyncio.sleep(0.01)  # let dropped sessions run their connection_lost

    # -- server side ----------------------------------------------------------------------

    def _session(self) -> SMTP:
        session = _Session(
            self,
            _Handler(self),
            hostname="sink.test",  # the default, socket.getfqdn(), can block on DNS
            ident="npsd-test-sink",
            authenticator=self._authenticate if self.auth is not None else None,
            auth_require_tls=False,
            enable_SMTPUTF8=True,
        )
        if self._in_loop:
            self._sessions.add(session)
        return session

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and self.auth is not None:
            user, password = data.login.decode(), data.password.decode()
            if self.auth.get(user) == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    def _record(self, envelope: Envelope) -> None:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        with self._lock:
            self._raw.append((raw, envelope.mail_from or "", list(envelope.rcpt_tos)))
            self._arrivals.append(datetime.now(UTC))


class _Session(SMTP):
    def __init__(self, sink: SmtpSink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink

    def connection_lost(self, error: Exception | None) -> None:
        self._sink._sessions.discard(self)
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, sink: SmtpSink, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink = sink

    def factory(self) -> SMTP:
        return self._sink._session()


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        # AUTH is enforced here rather than with auth_required=True, which warns without TLS
        # (and warnings are errors in our test runs).
        if self.sink.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        fault = self.sink._take_fault("RCPT")
        if fault is not None:
            return f"{fault.code} {fault.text}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        fault = self.sink._take_fault("DATA")
        if fault is not None:
            return f"{fault.code} {fault.text}"
        self.sink._record(envelope)
        return "250 Message accepted for delivery"


def _parse(raw: bytes, mail_from: str, rcpt_tos: list[str]) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    msg.mail_from = mail_from  # type: ignore[attr-defined]
    msg.rcpt_tos = rcpt_tos  # type: ignore[attr-defined]
    return msg


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

"""Email backends: where a built survey message goes (an SMTP server, or .eml files).

Backends only deliver. They turn every failure into TransientEmailError (retry later) or
PermanentEmailError (record and stop), so the dispatcher's retry policy never sees aiosmtplib.
Message building lives in jobs/email_message.py and is re-exported here. A backend sends a
RenderedEmail (the envelope and the exact bytes) as it is: one path, the one npsd uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import aiosmtplib

from jobs.clock import Clock, SystemClock
from jobs.email_message import (
    EmailError,
    HandoffRefused,
    PermanentEmailError,
    RenderedEmail,
    SurveyEmail,
    TransientEmailError,
    render_message,
)
from jobs.outbox import survey_stem
from settings import EmailSettings, SmtpSettings

__all__ = [
    "EmailBackend",
    "EmailError",
    "FileBackend",
    "Handoff",
    "HandoffRefused",
    "PermanentEmailError",
    "RenderedEmail",
    "SmtpBackend",
    "SurveyEmail",
    "TransientEmailError",
    "make_backend",
    "render_message",
]

# Awaited by a backend just before it delivers anything of the message (before SMTP's DATA,
# before the .eml is written): False means do not send it (HandoffRefused). The dispatcher's
# hand-off journal commits the survey's hand-off there (jobs.handoff).
Handoff = Callable[[], Awaitable[bool]]


class EmailBackend(Protocol):
    async def send(self, message: RenderedEmail, handoff: Handoff | None = None) -> None: ...

    async def close(self) -> None: ...


def make_backend(settings: EmailSettings, clock: Clock | None = None) -> EmailBackend:
    if settings.backend == "smtp":
        return SmtpBackend(settings.smtp)
    if settings.backend == "file":
        return FileBackend(settings.file_dir, clock=clock)
    raise ValueError(f"unknown email backend {settings.backend!r}")


# ---------------------------------------------------------------------------------------
# File backend: one .eml per message, for trying npsd out and for acceptance tests.

_SURVEY_ID = re.compile(r"<npsd-survey-(\d+(?:-reminder)?)@")


class FileBackend:
    def __init__(self, directory: Path, *, clock: Clock | None = None) -> None:
        self.directory = Path(directory)
        self._clock = clock or SystemClock()

    async def send(self, message: RenderedEmail, handoff: Handoff | None = None) -> None:
        if handoff is not None and not await handoff():
            raise HandoffRefused()
        mid, data = message.message_id, message.data
        if message.survey_id is not None:
            # Named by survey, so an erasure finds the person's files (jobs.outbox).
            name = survey_stem(message.survey_id, message.reminder, message.alert)
        else:
            match = _SURVEY_ID.search(mid)
            name = f"survey-{match.group(1) if match else 'unknown'}"
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%S.%fZ")
        try:
            await asyncio.to_thread(self._write, f"{stamp}-{name}", data)
        except OSError as exc:
            # A full disk or a permission problem may be fixed by the operator: retry.
            raise TransientEmailError(None, f"cannot write .eml: {exc.strerror or exc}") from exc

    async def close(self) -> None:
        pass

    def _write(self, stem: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{stem}.eml"
        n = 1
        while final.exists():  # same microsecond: never overwrite an earlier message
            final = self.directory / f"{stem}-{n}.eml"
            n += 1
        # Written under a dot-name first so a reader globbing *.eml never sees half a file.
        temp = self.directory / f".{final.name}.tmp"
        try:
            with open(temp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        _fsync_dir(self.directory)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX only; Windows cannot open directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# SMTP backend: a small pool of kept-open connections, reused across messages.


class SmtpBackend:
    # A connection idle longer than this is probed with NOOP before use: servers drop idle
    # clients, and finding out during MAIL FROM would look like a real failure.
    idle_probe_s = 5.0

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._timeout_s = settings.timeout.total_seconds()
        self._slots = asyncio.Semaphore(max(1, settings.max_connections))
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # (connection, last used)
        self._closed = False

    async def send(self, message: RenderedEmail, handoff: Handoff | None = None) -> None:
        if self._closed:
            raise RuntimeError("SmtpBackend is closed")
        async with self._slots:
            smtp = await self._acquire()
            try:
                await self._transaction(smtp, message, handoff)
            except HandoffRefused:
                smtp.close()  # closed in DATA: nothing was delivered
                raise
            except _ANSWERED as exc:
                # The server answered (and aiosmtplib sent RSET): the connection is still good.
                self._release(smtp)
                raise _classify(exc) from exc
            except _FAILURES as exc:
                # Timeouts and drops leave the session in an unknown state: never reuse it.
                smtp.close()
                raise _classify(exc) from exc
            except BaseException:
                smtp.close()  # cancelled mid-transaction
                raise
            self._release(smtp)

    async def _transaction(self, smtp: aiosmtplib.SMTP, m: RenderedEmail,
                           handoff: Handoff | None) -> None:
        """MAIL, RCPT and DATA, as aiosmtplib's sendmail() does but without its four parses
        of addresses the message carries validated, its regular expressions over the whole
        message (already CRLF) and a timer per reply. The hand-off is committed while MAIL,
        RCPT and DATA go out and awaited before the content: nothing is delivered (a server
        takes a message at the content's final dot) before the hand-off is durable."""
        marked = asyncio.ensure_future(handoff()) if handoff is not None else None
        try:
            await self._commands(smtp, self._envelope(smtp, m))
        except BaseException:
            if marked is not None:  # the sender must learn whether the mark committed
                with contextlib.suppress(Exception):
                    await marked
            raise
        if marked is not None and not await marked:
            # A server in DATA takes every line as content: only dropping the connection
            # abandons the message (an incomplete one is never delivered).
            smtp.close()
            raise HandoffRefused()
        await self._commands(smtp, self._content(smtp, m))

    async def _commands(self, smtp: aiosmtplib.SMTP, steps: Awaitable[None]) -> None:
        """Run SMTP commands under one deadline; a refusal resets the envelope."""
        async with asyncio.timeout(self._timeout_s):
            try:
                await steps
            except aiosmtplib.SMTPResponseException:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await smtp.rset(timeout=None)  # reset the envelope, keep the connection
                raise

    async def _envelope(self, smtp: aiosmtplib.SMTP, m: RenderedEmail) -> None:
        options: list[bytes] = []
        if smtp.supports_extension("size"):
            options.append(b"SIZE=%d" % len(m.data))
        if m.smtputf8:
            if not smtp.supports_extension("smtputf8"):
                raise aiosmtplib.SMTPNotSupported(
                    "a non-ASCII address needs SMTPUTF8, which the server does not offer")
            options.append(b"SMTPUTF8")
        encoding = "utf-8" if m.smtputf8 else "ascii"
        reply = await smtp.execute_command(
            b"MAIL", b"FROM:<" + m.sender.encode(encoding) + b">", *options, timeout=None)
        if reply.code != 250:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, m.sender)
        for rcpt in m.recipients:
            reply = await smtp.execute_command(
                b"RCPT", b"TO:<" + rcpt.encode(encoding) + b">", timeout=None)
            if reply.code not in (250, 251):
                raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, rcpt)
        reply = await smtp.execute_command(b"DATA", timeout=None)
        if reply.code != 354:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)

    async def _content(self, smtp: aiosmtplib.SMTP, m: RenderedEmail) -> None:
        # The payload goes straight to the protocol (smtp.data() would normalise line
        # endings again); the pool gives us the connection to ourselves.
        protocol = smtp.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        protocol.write(_dot_stuffed(m.data))
        reply = await protocol.read_response(timeout=None)
        if reply.code != 250:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)

    async def close(self) -> None:
        """Say QUIT on idle connections; idempotent."""
        self._closed = True
        idle, self._idle = self._idle, []
        for smtp, _ in idle:
            try:
                await asyncio.wait_for(smtp.quit(), timeout=min(self._timeout_s, 5.0))
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass
            finally:
                smtp.close()

    async def _acquire(self) -> aiosmtplib.SMTP:
        while self._idle:
            smtp, last_used = self._idle.pop()  # LIFO: the warmest connection first
            if not smtp.is_connected:
                smtp.close()
                continue
            if time.monotonic() - last_used < self.idle_probe_s:
                return smtp
            try:
                await smtp.noop(timeout=self._timeout_s)
                return smtp
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()  # nothing was sent on it yet: just open a fresh one
        return await self._connect()

    def _release(self, smtp: aiosmtplib.SMTP) -> None:
        if self._closed or not smtp.is_connected:
            smtp.close()
        else:
            self._idle.append((smtp, time.monotonic()))

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username or None,
            password=s.password if s.username else None,
            timeout=self._timeout_s,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await smtp.helo()
        except _FAILURES as exc:
            smtp.close()
            raise _classify(exc, connecting=True) from exc
        return smtp


# Failures after which the connection can be reused, and all failures we classify; anything
# else (a bug) propagates unchanged.
_ANSWERED = (
    aiosmtplib.SMTPResponseException,
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPNotSupported,
    ValueError,
)
_FAILURES = (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError)


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload (RFC 5321 4.5.2) of a message that already ends lines with CRLF."""
    body = data.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _classify(exc: Exception, *, connecting: bool = False) -> EmailError:
    """Map an aiosmtplib (or socket) failure onto the retry policy's two kinds."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0] if exc.recipients else None
        code, reply = (first.code, first.message) if first else (None, "recipients refused")
        return _by_code(code, reply)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if connecting or isinstance(
            exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPHeloError
        ):
            # The server or our own configuration is at fault, not this message: failing the
            # survey for good would lose it over a wrong password or a busy greeting.
            return TransientEmailError(exc.code, exc.message)
        return _by_code(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentEmailError(None, exc.message)  # e.g. a UTF-8 address, no SMTPUTF8
    if isinstance(exc, ssl.SSLError):
        # Before ValueError: a refused certificate (SSLCertVerificationError is both) is the
        # server's or the trust store's fault, not this message's: retry, never fail it.
        return TransientEmailError(None, f"TLS failed: {exc}")
    if isinstance(exc, ValueError):
        return PermanentEmailError(None, f"invalid address: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        return TransientEmailError(None, exc.message)
    if isinstance(exc, TimeoutError):
        return TransientEmailError(None, "timed out")
    return TransientEmailError(None, str(exc) or type(exc).__name__)  # OSError


def _by_code(code: int | None, reply: str) -> EmailError:
    if code is not None and 500 <= code < 600:
        return PermanentEmailError(code, reply)
    return TransientEmailError(code, reply)

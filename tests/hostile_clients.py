"""What a hostile client sends, for the tests (and bench/hostile.py): gzip bombs, bodies that
trickle in, connections left idle, and a /healthz probe that times the answers meanwhile.

Everything talks raw HTTP/1.1 over a socket to 127.0.0.1, so nothing in between (a client
library's own limits or retries) hides what the server does. Every wait has a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@functools.cache
def gzip_bomb(inflated_mib: int = 512) -> bytes:
    """One gzip member of `inflated_mib` MiB of spaces: ~1 KB per MiB (512 MiB → ~0.5 MB).
    Built once per process (a few seconds of CPU)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b" " * (1 << 20)
    parts = [compressor.compress(chunk) for _ in range(inflated_mib)]
    parts.append(compressor.flush())
    return b"".join(parts)


def request_head(method: str, path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Answer:
    status: int  # 0: the server closed without answering
    head: bytes = b""
    body: bytes = b""
    closed: bool = False  # the server closed the connection after answering
    seconds: float = 0.0


async def read_answer(reader: asyncio.StreamReader, timeout_s: float) -> Answer:
    """One HTTP answer from the stream (status, head, body by Content-Length)."""
    started = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return Answer(0, seconds=time.perf_counter() - started)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        try:
            body = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            body = b""
    return Answer(status, head, body, b"connection: close" in head.lower(),
                  time.perf_counter() - started)


async def post_raw(host: str, port: int, path: str, body: bytes, headers: dict[str, str],
                   *, timeout_s: float = 30.0, method: str = "POST") -> Answer:
    """Send a whole request (headers and body, as fast as the socket takes it); the answer.
    The server may stop reading and answer early: a write error is then expected."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.perf_counter()
    try:
        writer.write(request_head(method, path, headers, len(body)))
        sender = asyncio.create_task(_send(writer, body))
        answer = await read_answer(reader, timeout_s)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        answer.seconds = time.perf_counter() - started
        return answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _send(writer: asyncio.StreamWriter, body: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        for start in range(0, len(body), 1 << 16):
            writer.write(body[start:start + (1 << 16)])
            await writer.drain()


async def closed_by_server(reader: asyncio.StreamReader, timeout_s: float) -> float | None:
    """Seconds until the server closes the connection (EOF or reset), None if it did not
    within `timeout_s`. Whatever else arrives (an answer) is read and dropped."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return time.perf_counter() - started


@dataclass
class Probe:
    """GET /healthz in a loop on its own connections; the latency of each answer."""
    host: str
    port: int
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    async def run(self, stop: asyncio.Event, pause_s: float = 0.01) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                answer = await post_raw(self.host, self.port, "/healthz", b"", {},
                                        timeout_s=30.0, method="GET")
                if answer.status != 200:
                    self.failures += 1
            except (OSError, TimeoutError):
                self.failures += 1
            self.latencies.append(time.perf_counter() - started)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause_s):
                    await stop.wait()

    def summary(self) -> dict[str, float]:
        values = sorted(self.latencies) or [0.0]
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
        return {"count": len(self.latencies), "p50_ms": round(pick(0.5) * 1000, 1),
                "p99_ms": round(pick(0.99) * 1000, 1), "max_ms": round(values[-1] * 1000, 1),
                "failures": self.failures}


@contextlib.asynccontextmanager
async def probing(host: str, port: int) -> AsyncIterator[Probe]:
    """Time /healthz for as long as the block runs."""
    probe = Probe(host, port)
    stop = asyncio.Event()
    task = asyncio.create_task(probe.run(stop))
    try:
        yield probe
    finally:
        stop.set()
        async with asyncio.timeout(35):
            await task


async def trickle(host: str, port: int, path: str, headers: dict[str, str], length: int,
                  *, byte_every_s: float, timeout_s: float) -> tuple[Answer, float | None]:
    """Headers announcing `length` bytes, then one byte every `byte_every_s`: the answer
    (if any) and when the server closed the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.perf_counter()

    async def drip() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(length):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(byte_every_s)

    writer.write(request_head("POST", path, headers, length))
    dripping = asyncio.create_task(drip())
    try:
        answer = await read_answer(reader, timeout_s)
        closed = await closed_by_server(reader, max(0.1, timeout_s - answer.seconds))
        return answer, (time.perf_counter() - started) if closed is not None else None
    finally:
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await dripping
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0

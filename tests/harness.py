"""Run `npsd run` as a real subprocess, the way an operator does, and talk to it over HTTP.

    async with Daemon(tmp_path, storage_url) as npsd:
        await npsd.post_segment([...])
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tomllib
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import ADMIN, API_KEY, basic, bearer

NPSD = [sys.executable, "-m", "daemon.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    tomllib.loads(path.read_text())  # a harness bug should fail here, not in npsd


class Daemon:
    """One npsd process with its own config, port and log capture."""

    def __init__(self, workdir: Path, storage_url: str, port: int | None = None,
                 env: dict[str, str] | None = None, **sections: dict[str, Any]) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "config.toml"
        self.sections: dict[str, dict[str, Any]] = {
            "server": {"host": "127.0.0.1", "port": self.port, "public_url": self.url,
                       "shutdown_timeout": "10s"},
            "storage": {"url": storage_url},
            "intake": {"api_keys": [API_KEY]},
            "admin": {"token": ADMIN},
            "email": {"backend": "file", "file_dir": str(workdir / "outbox")},
            "log": {"format": "json", "level": "info"},
        }
        for name, values in sections.items():
            self.sections.setdefault(name, {}).update(values)
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.logs: list[dict[str, Any]] = []
        self.raw_log: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self.session: aiohttp.ClientSession | None = None

    def write_config(self) -> None:
        write_config(self.config, self.sections)

    async def start(self, wait: bool = True) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.config.exists():
            self.write_config()
        root = Path(__file__).resolve().parent.parent
        self.proc = await asyncio.create_subprocess_exec(
            *NPSD, "--config", str(self.config), "run", cwd=str(self.workdir),
            env={**self.env, "PYTHONPATH": str(root)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read_logs())
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        if wait:
            await self.wait_ready()

    async def _read_logs(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            self.raw_log.append(text)
            with contextlib.suppress(ValueError):
                self.logs.append(json.loads(text))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("event") == name]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError("npsd exited:\n" + "\n".join(self.raw_log[-20:]))
                try:
                    assert self.session is not None
                    async with self.session.get(self.url + "/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    async def wait_for_event(self, name: str, count: int = 1, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events(name)) < count:
                await asyncio.sleep(0.05)

    async def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        self.proc = None
        return code

    async def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for npsd to exit by itself; its exit code."""
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        self.proc = None
        return code

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await self.stop()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- talking to it -----------------------------------------------------------------
    async def post_segment(self, payload: Any, headers: dict[str, str] | None = None
                           ) -> tuple[int, Any]:
        assert self.session is not None
        async with self.session.post(
            self.url + "/v1/segment", data=json.dumps(payload),
            headers={"Content-Type": "application/json", **(headers or basic())}) as r:
            return r.status, await r.json(content_type=None)

    async def get_admin(self, path: str) -> tuple[int, Any]:
        assert self.session is not None
        async with self.session.get(self.url + path, headers=bearer()) as r:
            return r.status, await r.json(content_type=None)

    async def cli(self, *args: str) -> tuple[int, str, str]:
        root = Path(__file__).resolve().parent.parent
        proc = await asyncio.create_subprocess_exec(
            *NPSD, "--config", str(self.config), *args, cwd=str(self.workdir),
            env={**self.env, "PYTHONPATH": str(root)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()


__all__ = ["API_KEY", "Daemon", "free_port", "write_config"]

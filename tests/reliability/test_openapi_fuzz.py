"""schemathesis against npsd's own OpenAPI description (GET /v1/openapi.yaml), with `npsd run`
as a process: whatever it generates for the intake, Tracking API, admin, survey, unsubscribe
and health routes, npsd never answers 5xx (503 aside: the store may be busy) and keeps serving."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.harness import free_port, write_config

ROOT = Path(__file__).resolve().parent.parent.parent
SCHEMA = schemathesis.openapi.from_path(ROOT / "daemon" / "openapi.yaml")
INTAKE = "Basic " + base64.b64encode(b"fuzz-key:").decode()
ADMIN = "Bearer fuzz-admin"


@pytest.fixture(scope="module")
def npsd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("openapi")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    write_config(workdir / "config.toml", {
        "server": {"port": port, "public_url": url, "shutdown_timeout": "5s"},
        "storage": {"url": f"sqlite+aiosqlite:///{workdir / 'npsd.db'}"},
        "intake": {"api_keys": ["fuzz-key"]},
        "admin": {"token": "fuzz-admin"},
        "email": {"backend": "file", "file_dir": str(workdir / "outbox")},
        "log": {"level": "warning"},
    })
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "--config", str(workdir / "config.toml"), "run"],
        cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("npsd did not start")
        time.sleep(0.05)
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stderr is not None:
            log = proc.stderr.read().decode("utf-8", "replace")
            proc.stderr.close()
            assert "Traceback" not in log, log


@SCHEMA.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, npsd_url: str) -> None:
    headers = {"Authorization": ADMIN if case.path.startswith(("/v1/users", "/v1/accounts",
                                                               "/v1/nps", "/v1/status",
                                                               "/v1/sync")) else INTAKE}
    response = case.call(base_url=npsd_url, headers=headers, timeout=30)
    assert response.status_code < 500 or response.status_code in (501, 503), (
        response.status_code, response.text[:300])
    if response.status_code not in (501, 503):  # 501 and 503 are answers the spec asks for
        case.validate_response(response, checks=[not_a_server_error])
    assert requests.get(npsd_url + "/healthz", timeout=5).status_code == 200

"""schemathesis against npsd's own OpenAPI description (GET /v1/openapi.yaml), with `npsd run`
as a process: whatever it generates for the intake, Tracking API, admin, survey, unsubscribe
and health routes, npsd never answers 5xx (501 and 503 aside: the spec names them), keeps
serving, and every answer is one the description documents: its status code, content type,
headers and body schema. The store is seeded with a user, an account and an answered survey
(the schema's path examples name them), so the admin read models are checked too."""

from __future__ import annotations

import base64
import json
import os
import re
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
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import free_port, write_config

ROOT = Path(__file__).resolve().parent.parent.parent
SCHEMA = schemathesis.openapi.from_path(ROOT / "daemon" / "openapi.yaml")
INTAKE = "Basic " + base64.b64encode(b"fuzz-key:").decode()
ADMIN = "Bearer fuzz-admin"
CONFORMANCE = [status_code_conformance, content_type_conformance,
               response_schema_conformance, response_headers_conformance]


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
    try:
        _seed(url, workdir / "outbox")
    except BaseException:
        proc.kill()  # a failed seed must not leave npsd running after the test session
        proc.wait(timeout=10)
        raise
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


def _seed(url: str, outbox: Path) -> None:
    """The user and account of the schema's examples, with a survey sent and answered."""
    intake = {"Authorization": INTAKE}
    for name in ("identify", "group"):
        payload = json.loads((ROOT / "tests" / "fixtures" / "segment" / f"{name}.json")
                             .read_text())
        assert requests.post(url + "/v1/segment", json=payload, headers=intake,
                             timeout=10).status_code == 200
    deadline = time.monotonic() + 30
    while not list(outbox.glob("*.eml")):  # the dispatcher sends it within a tick
        assert time.monotonic() < deadline, "the seeded survey was never sent"
        time.sleep(0.05)
    mail = next(outbox.glob("*.eml")).read_text()
    match = re.search(r"/s/([A-Za-z0-9_-]+)\?score=", mail)
    assert match is not None, mail[:500]
    answer = requests.post(f"{url}/s/{match.group(1)}", data={"score": "9", "comment": "ok"},
                           timeout=10)
    assert answer.status_code == 200


@SCHEMA.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_answers_conform_to_the_schema(case: schemathesis.Case, npsd_url: str) -> None:
    headers = {"Authorization": ADMIN if case.path.startswith(("/v1/users", "/v1/accounts",
                                                               "/v1/nps", "/v1/status",
                                                               "/v1/sync", "/v1/responses"))
                                 else INTAKE}
    response = case.call(base_url=npsd_url, headers=headers, timeout=30)
    assert response.status_code < 500 or response.status_code in (501, 503), (
        response.status_code, response.text[:300])
    # 501 (a lone message of an unknown type) and 503 (the store is busy) are answers the
    # spec asks for: everything else must not be a server error.
    checks = CONFORMANCE if response.status_code in (501, 503) else [
        not_a_server_error, *CONFORMANCE]
    case.validate_response(response, checks=checks)
    assert requests.get(npsd_url + "/healthz", timeout=5).status_code == 200

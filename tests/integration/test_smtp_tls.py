"""The SMTP backend over STARTTLS and implicit TLS, with a login, against a real aiosmtpd
server whose certificate the test makes (and trusts through SSL_CERT_FILE)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from daemon.config import SmtpSettings
from jobs.email import SmtpBackend, TransientEmailError
from tests.harness import free_port


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this test CA only
    return cert, key


class Recorder:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"npsd" \
        and auth_data.password == b"pw"
    return AuthResult(success=ok)


@pytest.fixture
def server(certificate: tuple[Path, Path], request: pytest.FixtureRequest) -> Iterator[Any]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    implicit = request.param == "tls"
    recorder = Recorder()
    port = free_port()
    kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": port,
                              "authenticator": _authenticator, "auth_required": True,
                              "server_hostname": "localhost"}
    if implicit:
        kwargs["ssl_context"] = context
        kwargs["auth_require_tls"] = False  # aiosmtpd only counts STARTTLS as TLS
    else:
        kwargs["tls_context"] = context
        kwargs["require_starttls"] = True
    controller = Controller(recorder, **kwargs)
    controller.start()
    yield recorder, port, request.param
    controller.stop()


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "nps@acme.example", "ann@example.com", "Hi"
    msg.set_content("hello")
    return msg


@pytest.mark.parametrize("server", ["starttls", "tls"], indirect=True)
@pytest.mark.filterwarnings("ignore::UserWarning")  # aiosmtpd's notes on auth settings
async def test_tls_and_login(server: Any) -> None:
    recorder, port, security = server
    backend = SmtpBackend(SmtpSettings(host="localhost", port=port, security=security,
                                       username="npsd", password="pw",
                                       timeout=timedelta(seconds=2)))
    try:
        await backend.send(_message())
        assert len(recorder.messages) == 1
    finally:
        await backend.close()
    wrong = SmtpBackend(SmtpSettings(host="localhost", port=port, security=security,
                                     username="npsd", password="nope",
                                     timeout=timedelta(seconds=2)))
    try:
        with pytest.raises(TransientEmailError):
            await wrong.send(_message())
    finally:
        await wrong.close()
    await asyncio.sleep(0)

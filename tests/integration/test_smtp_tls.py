"""The SMTP backend over STARTTLS and implicit TLS, with a login, against a real aiosmtpd
server on loopback whose certificate the test makes (trustme). npsd trusts the system's CAs,
which SSL_CERT_FILE points at the test's own CA here, as an operator would for a private CA.

A certificate npsd cannot verify is refused, for both kinds of TLS: one from a CA it does not
trust, and a trusted one for another host name. Nothing is delivered, the password is never
sent, and the survey is kept for a retry (jobs/email.py counts a failed TLS handshake as
transient: the operator can fix the server or the trust store), with the reason recorded."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from daemon.config import SmtpSettings
from daemon.runtime import RUNTIME
from jobs.clock import MovableClock
from jobs.dispatch import Dispatcher
from jobs.email import (
    RenderedEmail,
    SmtpBackend,
    SurveyEmail,
    TransientEmailError,
    make_backend,
    render_message,
)
from tests.conftest import basic, bearer
from tests.harness import free_port

SECURITY = ["starttls", "tls"]
# aiosmtpd's notes on its auth settings, and on a client that drops a failed handshake.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def trusted_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """The one CA npsd trusts in these tests (through SSL_CERT_FILE, as OpenSSL reads it)."""
    ca = trustme.CA()
    bundle = tmp_path / "trusted-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return ca


class Recorder:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.logins: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.logins.append(auth_data.password)
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"npsd" \
            and auth_data.password == b"pw"
        return AuthResult(success=ok)


@contextmanager
def smtp_server(cert: trustme.LeafCert, security: str) -> Iterator[tuple[Recorder, int]]:
    """aiosmtpd on 127.0.0.1 presenting `cert`, with implicit TLS or STARTTLS (required)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    recorder = Recorder()
    port = free_port()
    kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": port,
                              "authenticator": recorder.authenticate, "auth_required": True,
                              "server_hostname": "localhost"}
    if security == "tls":
        kwargs["ssl_context"] = context
        kwargs["auth_require_tls"] = False  # aiosmtpd only counts STARTTLS as TLS
    else:
        kwargs["tls_context"] = context
        kwargs["require_starttls"] = True
    controller = Controller(recorder, **kwargs)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


def _settings(port: int, security: str, password: str = "pw") -> SmtpSettings:
    return SmtpSettings(host="localhost", port=port, security=security, username="npsd",
                        password=password, timeout=timedelta(seconds=5))


def _message() -> RenderedEmail:
    return render_message(SurveyEmail(
        survey_id=1, token="tok1", to="ann@example.com", first_name="Ann", name=None,
        product_name="Acme", public_url="http://127.0.0.1:8787",
        sender="Acme <nps@acme.example>"))


async def _send(settings: SmtpSettings) -> None:
    backend = SmtpBackend(settings)
    try:
        await asyncio.wait_for(backend.send(_message()), timeout=15)
    finally:
        await backend.close()


@pytest.mark.parametrize("security", SECURITY)
async def test_tls_and_login(trusted_ca: trustme.CA, security: str) -> None:
    with smtp_server(trusted_ca.issue_cert("localhost", "127.0.0.1"), security) as (rec, port):
        await _send(_settings(port, security))
        assert len(rec.messages) == 1
        with pytest.raises(TransientEmailError):
            await _send(_settings(port, security, password="nope"))
        assert len(rec.messages) == 1


def _untrusted(trusted: trustme.CA) -> trustme.LeafCert:
    """Right name, but signed by a CA npsd does not trust."""
    return trustme.CA().issue_cert("localhost", "127.0.0.1")


def _other_host(trusted: trustme.CA) -> trustme.LeafCert:
    """Signed by the trusted CA, but for another host name than the one npsd connects to."""
    return trusted.issue_cert("mail.other.example")


BAD_CERTS = [pytest.param(_untrusted, "certificate verify failed", id="untrusted"),
             pytest.param(_other_host, "hostname mismatch", id="hostname-mismatch")]


@pytest.mark.parametrize("security", SECURITY)
@pytest.mark.parametrize(("bad_cert", "reason"), BAD_CERTS)
async def test_certificate_npsd_cannot_verify_is_refused(
    trusted_ca: trustme.CA, security: str, bad_cert: Any, reason: str
) -> None:
    with smtp_server(bad_cert(trusted_ca), security) as (rec, port):
        with pytest.raises(TransientEmailError) as refused:
            await _send(_settings(port, security))
        assert reason in refused.value.reply.lower(), refused.value.reply
        assert rec.messages == [] and rec.logins == []  # nothing, not even the password


@pytest.fixture
async def npsd_on_smtp(make_client: Any, clock: MovableClock) -> AsyncIterator[Any]:
    """npsd's app and a dispatcher sending through SMTP to `port` with `security`."""
    backends: list[Any] = []

    async def start(port: int, security: str) -> tuple[Any, Dispatcher]:
        smtp = {"host": "localhost", "port": port, "security": security,
                "username": "npsd", "password": "pw", "timeout": "5s"}
        client = await make_client(survey={"max_delay": 0},
                                   email={"backend": "smtp", "smtp": smtp})
        runtime = client.server.app[RUNTIME]
        backend = make_backend(runtime.settings.email)
        backends.append(backend)
        return client, Dispatcher(runtime.store, clock, runtime.owner, lambda: runtime.settings,
                                  lambda: backend)

    yield start
    for backend in backends:
        await backend.close()


@pytest.mark.parametrize("security", SECURITY)
@pytest.mark.parametrize(("bad_cert", "reason"), BAD_CERTS)
async def test_survey_to_an_unverifiable_server_is_kept_for_a_retry(
    trusted_ca: trustme.CA, npsd_on_smtp: Any, clock: MovableClock, security: str,
    bad_cert: Any, reason: str,
) -> None:
    with smtp_server(bad_cert(trusted_ca), security) as (rec, port):
        client, dispatcher = await npsd_on_smtp(port, security)
        identify = {"type": "identify", "userId": "tls1", "messageId": "tls-1",
                    "traits": {"email": "tls1@example.com"}}
        assert (await client.post("/v1/segment", json=identify, headers=basic())).status == 200
        assert await asyncio.wait_for(dispatcher.run_once(), timeout=30) == 1
        user = await (await client.get("/v1/users/tls1", headers=bearer())).json()
        [survey] = user["surveys"]
        assert survey["state"] == "pending" and survey["sent_at"] is None
        assert survey["attempts"] == 1 and reason in survey["last_error"].lower()
        assert survey["due_at"] > clock.now().isoformat()[:19]  # retried later, not now
        decisions = await (await client.get("/v1/users/tls1/decisions",
                                             headers=bearer())).json()
        assert decisions["decisions"][-1]["outcome"] == "pending"
        assert decisions["decisions"][-1]["reason"].startswith("retry at ")
        assert rec.messages == [] and rec.logins == []

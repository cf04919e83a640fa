"""Standard Webhooks signatures: npsd's headers against a known vector of the spec's own
libraries, an HMAC computed here by hand, and the `standardwebhooks` package verifying."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from jobs.webhook_signing import headers, signature

# From the standard-webhooks repository's library tests (Go, JavaScript, Python alike).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_AT = datetime.fromtimestamp(1614265330, UTC)
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()


def by_hand(secret: str, msg_id: str, at: datetime, body: str) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{int(at.timestamp())}.{body}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def test_known_vector() -> None:
    assert signature((VECTOR_SECRET,), VECTOR_ID, VECTOR_AT, VECTOR_BODY) == VECTOR_SIGNATURE
    assert by_hand(VECTOR_SECRET, VECTOR_ID, VECTOR_AT, VECTOR_BODY) == VECTOR_SIGNATURE


def test_headers_verify_with_the_standardwebhooks_package() -> None:
    now = datetime.now(UTC)
    body = '{"type":"survey.answered","data":{"comment":"Très bien"}}'
    h = headers((VECTOR_SECRET,), "msg_1", now, body)
    assert h["webhook-id"] == "msg_1" and h["webhook-timestamp"] == str(int(now.timestamp()))
    assert h["webhook-signature"] == by_hand(VECTOR_SECRET, "msg_1", now, body)
    assert Webhook(VECTOR_SECRET).verify(body.encode(), h) == {
        "type": "survey.answered", "data": {"comment": "Très bien"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(body.encode(), h)
    with pytest.raises(WebhookVerificationError):
        Webhook(VECTOR_SECRET).verify(body.replace("bien", "mal").encode(), h)


def test_rotation_signs_with_every_secret_space_separated() -> None:
    now = datetime.now(UTC)
    h = headers((VECTOR_SECRET, OLD), "msg_2", now, "{}")
    first, second = h["webhook-signature"].split(" ")
    assert first == by_hand(VECTOR_SECRET, "msg_2", now, "{}")
    assert second == by_hand(OLD, "msg_2", now, "{}")
    # A receiver still on the old secret, and one already on the new, both accept it.
    for secret in (VECTOR_SECRET, OLD):
        Webhook(secret).verify(b"{}", h)


def test_the_readme_example_verifies() -> None:
    """README "Alerts and webhooks": the request shown is what npsd sends for that secret."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- example: webhook")[1].split("```http\n")[1].split("\n```")[0]
    head, body = block.split("\n\n")
    fields = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    at = datetime.fromtimestamp(int(fields["webhook-timestamp"]), UTC)
    assert fields["webhook-signature"] == by_hand(VECTOR_SECRET, fields["webhook-id"], at, body)
    assert fields["webhook-signature"] == signature((VECTOR_SECRET,), fields["webhook-id"], at,
                                                    body)
    assert f'secret = "{VECTOR_SECRET}"' in readme

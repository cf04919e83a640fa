"""Standard Webhooks signatures (https://www.standardwebhooks.com): the headers a receiver
verifies. The HMAC itself is the `standardwebhooks` package's (`Webhook.sign`: base64
HMAC-SHA256 of "id.timestamp.body" with the base64-decoded `whsec_` secret, "v1,"
prefixed); this module adds what a sender needs around it: one signature per secret during
a rotation, space-separated, and the three headers. tests/unit/test_webhook_signing.py
checks it against a known vector of the spec's libraries and an HMAC computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


def signature(secrets: tuple[str, ...], webhook_id: str, at: datetime, body: str) -> str:
    """`v1,<sig>` for each secret, space-separated (the current secret first)."""
    when = at.astimezone(UTC).replace(microsecond=0)
    return " ".join(Webhook(s).sign(webhook_id, when, body) for s in secrets)


def headers(secrets: tuple[str, ...], webhook_id: str, at: datetime,
            body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt at `at` (the attempt's own time: a
    retry is signed anew, with the same webhook-id)."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature(secrets, webhook_id, at, body),
    }

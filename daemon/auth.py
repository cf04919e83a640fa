"""Who may send events and who may read the book. Everything compares in constant time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from functools import lru_cache

from aiohttp import web


class AuthError(Exception):
    """Refused with 401; the text is shown to the sender, the reason goes to the log."""

    def __init__(self, message: str, reason: str = "invalid_credentials") -> None:
        super().__init__(message)
        self.reason = reason


def presented(value: str) -> bytes:
    """A credential as the client sent it. Headers that are not UTF-8 reach us with their
    bytes escaped as lone surrogates (aiohttp decodes them with surrogateescape): those
    bytes come back, and simply match nothing."""
    return value.encode("utf-8", "surrogateescape")


def basic_username(header: str | None) -> str | None:
    """The user part of `Authorization: Basic base64(user:password)`, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded.partition(":")[0]


def key_matches(candidate: str | None, keys: Iterable[str]) -> bool:
    if candidate is None:
        return False
    given = presented(candidate)
    matched = False
    for key in keys:
        # No early exit: the time taken does not tell which key nearly matched.
        matched |= hmac.compare_digest(given, key.encode("utf-8"))
    return matched


def signature_matches(signature: str | None, body: bytes, secrets: Iterable[str]) -> bool:
    """hex(HMAC-SHA1(secret, raw body)) against every configured secret (rotation)."""
    if not signature:
        return False
    given = signature.strip().lower().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha1).hexdigest().encode()
        matched |= hmac.compare_digest(given, expected)
    return matched


@lru_cache(maxsize=64)
def _basic_key_ok(header: str, keys: tuple[str, ...]) -> bool:
    """Segment sends the same header on every request: decode and compare it once."""
    return key_matches(basic_username(header), keys)


def segment_auth_before_body(
    headers: Mapping[str, str], api_keys: Iterable[str], secrets: tuple[str, ...],
) -> bool:
    """What the headers alone decide, before a byte of the body is read: True when the API
    key authenticates; False when a signature over the body is to be checked; AuthError when
    nothing in the body could authenticate the request (no credentials, a wrong key and no
    signature, or a signature while no shared secret is configured)."""
    authorization = headers.get("Authorization")
    if authorization and _basic_key_ok(authorization, tuple(api_keys)):
        return True
    signed = headers.get("X-Segment-Signature") or headers.get("X-Signature")
    if signed and secrets:
        return False
    raise _refusal(headers)


def _refusal(headers: Mapping[str, str]) -> AuthError:
    if headers.get("Authorization"):
        return AuthError("invalid API key", "invalid_api_key")
    if headers.get("X-Segment-Signature") or headers.get("X-Signature"):
        return AuthError("invalid signature", "invalid_signature")
    return AuthError("missing credentials: send Authorization: Basic base64(API_KEY:)",
                     "missing_credentials")


def check_segment_auth(
    request: web.Request, body: bytes, is_array: bool, api_keys: Iterable[str],
    secrets: tuple[str, ...],
) -> None:
    """The three ways Segment authenticates to /v1/segment (see SPEC "Intake")."""
    authorization = request.headers.get("Authorization")
    if authorization and _basic_key_ok(authorization, tuple(api_keys)):
        return
    if secrets and signature_matches(request.headers.get("X-Segment-Signature"), body, secrets):
        return
    legacy = request.headers.get("X-Signature")
    if secrets and legacy and is_array:
        raise AuthError(
            "X-Signature covers only the first event of a batched array, so it cannot "
            "authenticate this body: switch on X-Segment-Signature in Segment, or send an "
            "Authorization header with an API key", "legacy_signature_on_array"
        )
    if secrets and signature_matches(legacy, body, secrets):
        return
    raise _refusal(request.headers)


def check_admin(request: web.Request, token: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented(value.strip()), token.encode("utf-8")
    ):
        raise AuthError("missing or wrong admin token (Authorization: Bearer <admin.token>)",
                        "invalid_admin_token")


def token_role(token: str, admin_token: str, viewer_tokens: Iterable[str]) -> str | None:
    """"admin", "viewer" or None for a presented token; every candidate is compared (no
    early exit), so the time taken says nothing about which one nearly matched."""
    given = presented(token)
    is_admin = hmac.compare_digest(given, admin_token.encode("utf-8"))
    is_viewer = key_matches(token, viewer_tokens)
    return "admin" if is_admin else "viewer" if is_viewer else None


def bearer_role(request: web.Request, admin_token: str,
                viewer_tokens: Iterable[str]) -> str:
    """The role of `Authorization: Bearer <token>` (admin.token or a console viewer token)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    role = token_role(value.strip(), admin_token, viewer_tokens) \
        if scheme.lower() == "bearer" else None
    if role is None:
        raise AuthError("missing or wrong token (Authorization: Bearer <admin.token> or a "
                        "console.viewer_tokens entry)", "invalid_admin_token")
    return role

"""Scrubbing free text that came from outside (an SMTP reply, a Segment error, a malformed
request line) before it is logged or stored: no email address, credential or survey token
may survive in a log line or in a stored error text.

daemon.logging runs every string of every log line through redact(), so the common case (a
text with nothing to scrub) is answered by one scan for the characters and words the
patterns start from."""

from __future__ import annotations

import json
import re

EMAIL_MARK = "[email]"
SECRET_MARK = "[redacted]"


def _has_needle(low: str) -> bool:
    """Whether a lowercased text holds what some pattern starts from (a text without "@"
    nor any of these cannot match; substring tests are far cheaper than a case-insensitive
    regex alternation)."""
    return ("/s/" in low or "/u/" in low or "basic" in low or "bearer" in low
            or "authorization" in low or "signature" in low or "key" in low)

# A URL's password (a PostgreSQL DSN in a driver error): scheme://user:PASSWORD@host.
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]*@", re.IGNORECASE)
# Deliberately wide: anything shaped like local@domain, with or without <>, quoted or not; a
# domain without a dot (user@localhost) and a cut-off one ("<ann.smith@exam") count too.
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*", re.UNICODE)
_ANGLED = re.compile(r"<[^<>\s@]+@[^<>\s]*>?")
# Credentials in a header or a request line: "Basic xxx", "Bearer xxx", "Authorization: xxx".
# The credential runs to the next blank or quote, whatever characters the secret has.
_AUTH = re.compile(r"(?i)\b(authorization\s*[:=]\s*)?(basic|bearer)\s+[^\s'\"]+")
_AUTH_HEADER = re.compile(r"(?i)(authorization\s*[:=]\s*)(?!(?:basic|bearer)\s)[^\s,;'\"]+")
# Survey and unsubscribe links carry their token in the path: /s/<token>, /u/<token>.
_TOKEN_PATH = re.compile(r"(/[su]/)[A-Za-z0-9_%-]{8,}")
_SIGNATURE = re.compile(r"(?i)(x-(?:segment-)?signature\s*[:=]\s*)(?:sha1=)?[0-9a-z+/=]+")
_WRITE_KEY = re.compile(r'(?i)("?write_?key"?\s*[:=]\s*"?)[^"\s,}]+')


def redact(text: str) -> str:
    """The text with email addresses, credentials, signatures and survey tokens replaced."""
    if not text:
        return text
    if "@" not in text and not _has_needle(text.lower()):
        return text
    text = _USERINFO.sub(lambda m: m.group(1) + SECRET_MARK + "@", text)
    text = _ANGLED.sub("<" + EMAIL_MARK + ">", text)
    text = _EMAIL.sub(EMAIL_MARK, text)
    text = _AUTH.sub(lambda m: (m.group(1) or "") + m.group(2) + " " + SECRET_MARK, text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + SECRET_MARK, text)
    text = _SIGNATURE.sub(lambda m: m.group(1) + SECRET_MARK, text)
    text = _WRITE_KEY.sub(lambda m: m.group(1) + SECRET_MARK, text)
    return _TOKEN_PATH.sub(lambda m: m.group(1) + SECRET_MARK, text)


QUOTED_MARK = "[quoted]"
_QUOTABLE_MIN = 4  # shorter strings (a score, "en") are not worth hiding and match too much


def strings_in(data: bytes) -> list[str]:
    """Every string value (and key) of a JSON document, longest first."""
    found: set[str] = set()
    stack: list[object] = [json.loads(data)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and len(item) >= _QUOTABLE_MIN:
            found.add(item)
    return sorted(found, key=len, reverse=True)


def without_quotes(text: str, quoted: list[str]) -> str:
    """`text` (a server's refusal) redacted, with any of the message's own strings that it
    quotes back (a comment, a name) replaced: such a reply is stored and logged."""
    for value in quoted:
        if value in text:
            text = text.replace(value, QUOTED_MARK)
    return redact(text)

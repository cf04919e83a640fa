"""Scrubbing free text that came from outside (an SMTP reply, a Segment error, a malformed
request line) before it is logged or stored: no email address, credential or survey token
may survive in a log line or in a stored error text."""

from __future__ import annotations

import re

EMAIL_MARK = "[email]"
SECRET_MARK = "[redacted]"

# Deliberately wide: anything shaped like local@domain.tld, with or without <>, quoted or not.
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
# Credentials in a header or a request line: "Basic xxx", "Bearer xxx", "Authorization: xxx".
_AUTH = re.compile(r"(?i)\b(authorization\s*[:=]\s*)?(basic|bearer)\s+[A-Za-z0-9._~+/=-]+")
_AUTH_HEADER = re.compile(r"(?i)(authorization\s*[:=]\s*)[^\s,;'\"]+")
# Survey and unsubscribe links carry their token in the path: /s/<token>, /u/<token>.
_TOKEN_PATH = re.compile(r"(/[su]/)[A-Za-z0-9_-]{8,}")
_SIGNATURE = re.compile(r"(?i)(x-(?:segment-)?signature\s*[:=]\s*)[0-9a-f]+")
_WRITE_KEY = re.compile(r'(?i)("?write_?key"?\s*[:=]\s*"?)[^"\s,}]+')


def redact(text: str) -> str:
    """The text with email addresses, credentials, signatures and survey tokens replaced."""
    if not text:
        return text
    text = _EMAIL.sub(EMAIL_MARK, text)
    text = _AUTH.sub(lambda m: (m.group(1) or "") + m.group(2) + " " + SECRET_MARK, text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + SECRET_MARK
                            if not m.group(0).endswith(SECRET_MARK) else m.group(0), text)
    text = _SIGNATURE.sub(lambda m: m.group(1) + SECRET_MARK, text)
    text = _WRITE_KEY.sub(lambda m: m.group(1) + SECRET_MARK, text)
    return _TOKEN_PATH.sub(lambda m: m.group(1) + SECRET_MARK, text)

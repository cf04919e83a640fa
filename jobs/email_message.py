"""Building the survey email: one pure function from a SurveyEmail to a MIME message.

Sending lives in jobs/email.py; this module does no I/O so it can be tested by value.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, formataddr, parseaddr
from html import escape
from typing import Any
from urllib.parse import quote

from jobs.clock import SystemClock

LOW_LABEL = "Not at all likely"
HIGH_LABEL = "Extremely likely"
SCORES = range(11)
_REMINDER = "A few days ago we asked you one quick question. We'd still love to hear from you."

# Deliberately strict: anything a mail server could read as two addresses or as a header
# break is refused here, before it reaches SMTP, and never retried.
_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+\.[^@\s<>()\[\],;:\"\\]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class _LazyHeaders(EmailPolicy):
    """policy.default with cheaper header storage; reading and serialising are unchanged.

    The stdlib parses every header as it is set (~0.2 ms each), which alone would cap
    dispatch well below 1,000 emails/s. Here, short ASCII headers that nothing reads while
    sending are stored as text and parsed only if read; the MIME headers every message
    shares (and the generator reads repeatedly) are parsed once per process.
    """

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        if isinstance(value, str) and value.isascii() and len(value) < 78:
            if "\r" in value or "\n" in value:
                raise ValueError("Header values may not contain linefeed or carriage return")
            key = name.lower()
            if key in _SHARED:
                return (name, _shared_header(key, value))
            if not key.startswith("content-"):
                return (name, value)
        return super().header_store_parse(name, value)

    def header_max_count(self, name: str) -> int | None:
        # The stdlib builds a fresh header class on every call just to read max_count.
        return _max_count(name.lower())


_SHARED = {"mime-version", "content-transfer-encoding", "content-type"}


@functools.lru_cache(maxsize=64)
def _shared_header(name: str, value: str) -> Any:
    # Header objects are immutable strings, so one can be shared between messages; a
    # multipart Content-Type (unique boundary) just falls out of this small cache.
    return EmailPolicy().header_factory(name, value)


@functools.cache
def _max_count(name: str) -> int | None:
    return EmailPolicy().header_max_count(name)


_POLICY = _LazyHeaders()


class EmailError(Exception):
    """Sending failed. `code` is the SMTP reply code when the server gave one."""

    def __init__(self, code: int | None, reply: str) -> None:
        super().__init__(f"{code} {reply}" if code is not None else reply)
        self.code = code
        self.reply = reply


class TransientEmailError(EmailError):
    """Worth retrying later: 4xx replies, refused or dropped connections, timeouts."""


class PermanentEmailError(EmailError):
    """Retrying cannot help: 5xx replies to this message, rejected or invalid recipients."""


@dataclass(frozen=True)
class SurveyEmail:
    survey_id: int
    token: str
    to: str
    first_name: str | None
    name: str | None
    product_name: str
    public_url: str
    sender: str
    reminder: bool = False


def score_url(e: SurveyEmail, score: int) -> str:
    return f"{_base(e)}/s/{quote(e.token, safe='')}?score={score}"


def unsubscribe_url(e: SurveyEmail) -> str:
    return f"{_base(e)}/u/{quote(e.token, safe='')}"


def greeting(first_name: str | None, name: str | None) -> str:
    """ "Hi Peter," from the first name, else the first word of the full name."""
    for candidate in (first_name, (name or "").strip().split(" ")[0]):
        clean = _one_line(candidate or "")
        if clean:
            return f"Hi {clean},"
    return "Hi there,"


def message_id(e: SurveyEmail) -> str:
    """Stable per survey (and per reminder), so a resent copy is recognisably the same mail."""
    suffix = "-reminder" if e.reminder else ""
    return f"<npsd-survey-{e.survey_id}{suffix}@{sender_domain(e.sender)}>"


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def build_message(e: SurveyEmail, *, now: datetime | None = None) -> EmailMessage:
    """The survey email: multipart/alternative with a plain-text and an HTML part."""
    if not _ADDRESS.fullmatch(e.to):
        raise PermanentEmailError(None, "invalid recipient address")
    product = _one_line(e.product_name)
    question = f"How likely are you to recommend {product}?"
    msg = EmailMessage(policy=_POLICY)
    msg["Subject"] = f"Reminder: {question}" if e.reminder else question
    msg["From"] = e.sender
    display = _one_line(e.name or e.first_name or "")
    msg["To"] = formataddr((display, e.to)) if display else e.to
    msg["Date"] = format_datetime(now or SystemClock().now())
    msg["Message-ID"] = message_id(e)
    msg["List-Unsubscribe"] = f"<{unsubscribe_url(e)}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # RFC 3834: tells auto-responders (vacation replies) not to answer.
    msg["Auto-Submitted"] = "auto-generated"
    # Built by hand rather than with add_alternative(): a boundary set here spares the
    # generator from inventing one (and compiling a regex) every time the message is sent.
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = f'multipart/alternative; boundary="=_npsd_{secrets.token_hex(16)}"'
    msg.attach(_part(_plain(e, product), "plain"))
    msg.attach(_part(_html(e, product), "html"))
    return msg


def _part(body: str, subtype: str) -> EmailMessage:
    part = EmailMessage(policy=_POLICY)
    lines = body.splitlines()
    if max(len(line.encode()) for line in lines) > 998:  # RFC 5322 limit: let stdlib encode
        part.set_content(body, subtype=subtype)
        del part["MIME-Version"]  # only the top level carries it
        return part
    # What set_content() does for short lines, minus its trial encodings and re-parsing of
    # Content-Type, which cost more than building the rest of the message.
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    text = "\n".join(lines) + "\n"
    if text.isascii():
        part["Content-Transfer-Encoding"] = "7bit"
        part.set_payload(text)
    else:
        part["Content-Transfer-Encoding"] = "8bit"
        part.set_payload(text.encode().decode("ascii", "surrogateescape"))
    return part


def _base(e: SurveyEmail) -> str:
    return e.public_url.rstrip("/")


def _one_line(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def _plain(e: SurveyEmail, product: str) -> str:
    lines = [greeting(e.first_name, e.name), ""]
    if e.reminder:
        lines += [_REMINDER, ""]
    lines += [
        f"How likely are you to recommend {product} to a friend or colleague?",
        f"Pick a score from 0 ({LOW_LABEL.lower()}) to 10 ({HIGH_LABEL.lower()}):",
        "",
    ]
    lines += [f"{n:>3}  {score_url(e, n)}" for n in SCORES]
    lines += [
        "",
        "Thank you!",
        "",
        "-- ",
        f"You received this one-question survey because you use {product}.",
        f"Don't want these emails? Unsubscribe: {unsubscribe_url(e)}",
    ]
    return "\n".join(lines) + "\n"


_FONT = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
_BUTTON = (
    "display:block;padding:12px 0;margin:0 1px;border-radius:6px;background:#eef2ff;"
    "border:1px solid #c7d2fe;color:#1e3a8a;font-size:16px;font-weight:bold;"
    f"line-height:20px;text-align:center;text-decoration:none;{_FONT}"
)


def _html(e: SurveyEmail, product: str) -> str:
    h = escape  # every interpolated value goes through this, attributes included
    question = f"How likely are you to recommend {product} to a friend or colleague?"
    buttons = "\n".join(
        f'<td width="9%" style="padding:0;width:9.09%">'
        f'<a href="{h(score_url(e, n))}" style="{_BUTTON}" '
        f'aria-label="{n} out of 10{_edge_label(n)}" title="{n}{_edge_label(n)}">{n}</a></td>'
        for n in SCORES
    )
    reminder = f'<p style="margin:0 0 16px">{h(_REMINDER)}</p>\n' if e.reminder else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{h(question)}</title></head>
<body style="margin:0;padding:0;background:#f6f7f9">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f6f7f9">
<tr><td align="center" style="padding:16px 8px">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"
 style="max-width:560px;background:#ffffff;border-radius:8px;{_FONT};color:#1f2937">
<tr><td style="padding:24px 16px;font-size:16px;line-height:24px">
<p style="margin:0 0 16px">{h(greeting(e.first_name, e.name))}</p>
{reminder}<h1 style="margin:0 0 20px;font-size:20px;line-height:28px">{h(question)}</h1>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"
 style="table-layout:fixed;width:100%"><tr>{buttons}</tr></table>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"
 style="margin-top:8px;font-size:13px;color:#6b7280"><tr>
<td align="left">{h(LOW_LABEL)}</td><td align="right">{h(HIGH_LABEL)}</td>
</tr></table>
<p style="margin:24px 0 0">Thank you!</p>
</td></tr></table>
<p style="max-width:560px;margin:16px auto 0;font-size:12px;line-height:18px;color:#6b7280;{_FONT}">
You received this one-question survey because you use {h(product)}.
<a href="{h(unsubscribe_url(e))}" style="color:#6b7280">Unsubscribe</a></p>
</td></tr></table>
</body></html>
"""


def _edge_label(score: int) -> str:
    if score == 0:
        return f", {LOW_LABEL}"
    if score == 10:
        return f", {HIGH_LABEL}"
    return ""

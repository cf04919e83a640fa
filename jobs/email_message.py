"""Building the survey email: one pure function from a SurveyEmail to the bytes to send.

Sending lives in jobs/email.py; this module does no I/O so it can be tested by value.

The message is rendered straight to bytes (CRLF line endings, headers folded, bodies 7bit or
quoted-printable) rather than built as an EmailMessage and flattened: the stdlib route cost
about 2 ms per email, which alone capped dispatch well below 1,000 emails/s. The bodies are
rendered once per (product, public URL, reminder) with placeholder values and only the
token and the greeting are substituted per email; headers that could need RFC 2047
encoding or folding go through the stdlib header registry, which the common case skips.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import functools
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from email.headerregistry import Address
from email.utils import format_datetime, formataddr, parseaddr
from html import escape
from urllib.parse import quote

from jobs.clock import SystemClock
from jobs.i18n import Overrides, Texts, negotiate, texts_in

SCORES = range(11)

# Deliberately strict: anything a mail server could read as two addresses or as a header
# break is refused here, before it reaches SMTP, and never retried.
_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+\.[^@\s<>()\[\],;:\"\\]+")
_ENVELOPE = re.compile(r"[^@\s<>]+@[^@\s<>]+")  # what MAIL FROM:<…> can carry
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"[^\S\u00a0\u202f]+")
MAX_LINE = 998  # RFC 5322, without the CRLF


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


class HandoffRefused(Exception):
    """The hand-off mark was refused just before DATA (the survey is no longer ours to send:
    erased, unsubscribed, taken over, or the store could not commit): nothing was sent."""


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
    locale: str | None = None  # the recipient's (users.locale): "de-CH" speaks German
    default_locale: str = "en"
    texts: Overrides = ()  # [survey.texts.<lang>]

    @property
    def lang(self) -> str:
        return negotiate(self.locale, self.default_locale)


def score_url(e: SurveyEmail, score: int) -> str:
    return f"{_base(e)}/s/{quote(e.token, safe='')}?score={score}"


def unsubscribe_url(e: SurveyEmail) -> str:
    return f"{_base(e)}/u/{quote(e.token, safe='')}"


def greeting(first_name: str | None, name: str | None, t: Texts | None = None) -> str:
    """ "Hi Peter," from the first name, else the first word of the full name."""
    t = t or texts_in("en")
    first = _first_name(first_name, name)
    return _one_line(t("greeting", first_name=first) if first else t("greeting_anonymous"))


def _first_name(first_name: str | None, name: str | None) -> str:
    for candidate in (first_name, (name or "").strip().split(" ")[0]):
        clean = _one_line(candidate or "")
        if clean:
            return clean
    return ""


def message_id(e: SurveyEmail) -> str:
    """128 random bits at the sender's domain, new for every email (reminders too).

    Nothing in it derives from the survey: a sequential id repeated across installs (Gmail
    drops a message whose id it has seen) and told each recipient how many surveys went out.
    """
    return f"<{secrets.token_hex(16)}@{sender_domain(e.sender)}>"


def sender_domain(sender: str) -> str:
    return _envelope_sender(sender).rpartition("@")[2] or "localhost"


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """A message ready for SMTP: the envelope and the exact bytes (CRLF line endings)."""

    sender: str  # MAIL FROM
    recipients: tuple[str, ...]  # RCPT TO
    message_id: str
    data: bytes
    smtputf8: bool = False  # an address is not ASCII: the server must offer SMTPUTF8
    survey_id: int | None = None  # whose it is (the file backend names files by it)
    reminder: bool = False
    alert: bool = False  # a detractor alert about that survey (jobs/alerts.py)


def render_message(e: SurveyEmail, *, now: datetime | None = None) -> RenderedEmail:
    """The survey email: multipart/alternative with a plain-text and an HTML part."""
    if not _ADDRESS.fullmatch(e.to):
        raise PermanentEmailError(None, "invalid recipient address")
    envelope_from = _envelope_sender(e.sender)
    if not _ENVELOPE.fullmatch(envelope_from):
        raise PermanentEmailError(None, f"invalid sender address {e.sender!r}")
    utf8 = not (e.to.isascii() and envelope_from.isascii())
    display = _one_line(e.name or e.first_name or "")
    if not display:
        to = e.to
    elif utf8:  # formataddr() refuses a non-ASCII address
        local, _, domain = e.to.rpartition("@")
        to = str(Address(display_name=display, username=local, domain=domain))
    else:
        to = formataddr((display, e.to))
    mid = message_id(e)
    token = quote(e.token, safe="")
    t = texts_in(e.lang, e.texts)
    greet = greeting(e.first_name, e.name, t)
    first = _first_name(e.first_name, e.name)
    skeleton = _skeleton(e.product_name, e.public_url, e.reminder, e.lang, e.texts)
    # "=_" never occurs in quoted-printable text, and the random part in no 7bit body; no
    # survey id in it, for the same reason as in the Message-ID.
    boundary = f"=_npsd_{_BOUNDARY}{'_r' if e.reminder else ''}"
    plain_cte, plain = skeleton.plain.fill(token, greet, first)
    html_cte, html = skeleton.html.fill(token, escape(greet), escape(first))
    subject = skeleton.subject
    if _FIRST in subject:  # an operator's subject with {first_name}: this email's own
        subject = _header("Subject", skeleton.subject_text.replace(_FIRST, first))
    head = "".join((
        subject,
        _from_header(e.sender),
        _header("To", to, utf8=utf8),
        "Date: ", _date(now or SystemClock().now()), "\r\n",
        "Message-ID: ", mid, "\r\n",
        # URLs are never folded or encoded: a mail client must read them verbatim.
        "List-Unsubscribe: <", skeleton.base, "/u/", token, ">\r\n",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        # RFC 3834: tells auto-responders (vacation replies) not to answer.
        "Auto-Submitted: auto-generated\r\n",
        "MIME-Version: 1.0\r\n",
        'Content-Type: multipart/alternative;\r\n boundary="', boundary, '"\r\n',
        "\r\n--", boundary, "\r\n",
        'Content-Type: text/plain; charset="utf-8"\r\n',
        "Content-Transfer-Encoding: ", plain_cte, "\r\n\r\n",
    ))
    middle = "".join((
        "\r\n--", boundary, "\r\n",
        'Content-Type: text/html; charset="utf-8"\r\n',
        "Content-Transfer-Encoding: ", html_cte, "\r\n\r\n",
    ))
    tail = f"\r\n--{boundary}--\r\n"
    data = b"".join((head.encode(), plain, middle.encode(), html, tail.encode()))
    return RenderedEmail(envelope_from, (e.to,), mid, data, utf8, survey_id=e.survey_id,
                         reminder=e.reminder)


# Placeholders that pass quote() and escape() unchanged and cannot be guessed, so no user
# value can contain one: the skeleton is rendered with them, then they are replaced.
_MARK = secrets.token_hex(12)
# As long as a real token (secrets.token_urlsafe(24)): quoted-printable soft line breaks depend
# on columns only, so an encoded skeleton line takes the token in place of the marker.
_TOKEN = f"t{secrets.token_hex(16)}"[:32]
_BOUNDARY = secrets.token_hex(12)
_GREETING = f"greet{_MARK}"  # the greeting line, filled per email in its language
_FIRST = f"first{_MARK}"  # {first_name} in any other text (operators' overrides)
_PLACEHOLDERS = re.compile(f"({_TOKEN}|{_GREETING}|{_FIRST})")


@dataclass(frozen=True, slots=True)
class _Body:
    """A body split at its placeholders (the odd parts), plus its CRLF bytes if ASCII, or
    else its quoted-printable lines (None: a line to encode per email, the greeting's)."""

    parts: tuple[str, ...]
    crlf: tuple[bytes, ...] | None
    longest: int  # the longest line, placeholders included
    qp: tuple[tuple[bytes | None, str], ...] | None = None

    @classmethod
    def of(cls, text: str) -> _Body:
        parts = tuple(_PLACEHOLDERS.split(text))
        crlf = (tuple(p.replace("\n", "\r\n").encode() for p in parts)
                if text.isascii() else None)
        qp = None
        if crlf is None and _FIRST not in text:
            # Encoding line by line is what b2a_qp does; only the greeting's line (and one
            # whose marker a soft break would split) is left to encode per email.
            lines = []
            for line in text.split("\n"):
                done = binascii.b2a_qp(line.encode(), istext=True).replace(b"\n", b"\r\n")
                intact = done.count(_TOKEN.encode()) == line.count(_TOKEN)
                lines.append((done if intact and _GREETING not in line else None, line))
            qp = tuple(lines)
        return cls(parts, crlf, max(map(len, text.split("\n"))), qp)

    def fill(self, token: str, greet: str, first: str = "") -> tuple[str, bytes]:
        """(Content-Transfer-Encoding, body) with the token, greeting and first name put in."""
        values = {_TOKEN: token, _GREETING: greet, _FIRST: first}
        if (self.crlf is not None and greet.isascii() and first.isascii()
                and self.longest + 2 * (len(token) + len(greet) + len(first)) <= MAX_LINE):
            encoded = {k: v.encode() for k, v in values.items()}
            out = list(self.crlf)
            for i in range(1, len(out), 2):
                out[i] = encoded[self.parts[i]]
            return "7bit", b"".join(out)
        if self.qp is not None and len(token) == len(_TOKEN):
            mark, real = _TOKEN.encode(), token.encode()
            return "quoted-printable", b"\r\n".join(
                done.replace(mark, real) if done is not None else binascii.b2a_qp(
                    line.replace(_TOKEN, token).replace(_GREETING, greet).encode(),
                    istext=True).replace(b"\n", b"\r\n")
                for done, line in self.qp)
        text = list(self.parts)
        for i in range(1, len(text), 2):
            text[i] = values[self.parts[i]]
        return _body("".join(text))


@dataclass(frozen=True, slots=True)
class _Skeleton:
    subject: str  # the folded header line, CRLF included
    subject_text: str
    base: str
    plain: _Body
    html: _Body


@functools.lru_cache(maxsize=64)
def _skeleton(product_name: str, public_url: str, reminder: bool, lang: str = "en",
              overrides: Overrides = ()) -> _Skeleton:
    e = SurveyEmail(survey_id=0, token=_TOKEN, to="", first_name=None, name=None,
                    product_name=product_name, public_url=public_url, sender="",
                    reminder=reminder)
    t = replace(texts_in(lang, overrides), defaults={"first_name": _FIRST})
    product = _one_line(product_name)
    text = _one_line(t("reminder_subject" if reminder else "subject", product=product))
    return _Skeleton(_header("Subject", text), text, _base(e), _Body.of(_plain(e, product, t)),
                     _Body.of(_html(e, product, t)))


def _date(now: datetime) -> str:
    return _whole_second(now.replace(microsecond=0))


@functools.lru_cache(maxsize=4)
def _whole_second(now: datetime) -> str:
    return format_datetime(now)


@functools.lru_cache(maxsize=8)
def _envelope_sender(sender: str) -> str:
    return parseaddr(sender)[1]


@functools.lru_cache(maxsize=8)
def _from_header(sender: str) -> str:
    return _header("From", sender)


_SMTP = email.policy.SMTP
_SMTPUTF8 = email.policy.SMTPUTF8


def _header(name: str, value: str, *, utf8: bool = False) -> str:
    """One header field, CRLF included; RFC 2047 encoded and folded when it needs to be."""
    value = _one_line(value)
    if value.isascii() and len(name) + len(value) <= 76:
        return f"{name}: {value}\r\n"
    policy = _SMTPUTF8 if utf8 else _SMTP
    return str(policy.fold(name, policy.header_factory(name, value)))


def _body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body with CRLF line endings): 7bit when the text is
    ASCII in short lines, else quoted-printable, which any server accepts."""
    if text.isascii() and max(map(len, text.split("\n"))) <= MAX_LINE:
        return "7bit", text.replace("\n", "\r\n").encode("ascii")
    encoded = binascii.b2a_qp(text.encode(), istext=True)  # soft line breaks at 76
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def _base(e: SurveyEmail) -> str:
    return e.public_url.rstrip("/")


def _one_line(text: str) -> str:
    # No-break spaces stay: French puts one before "?" and ":".
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip(" ")


def _plain(e: SurveyEmail, product: str, t: Texts) -> str:
    lines = [_GREETING, ""]
    if e.reminder:
        lines += [t("reminder", product=product), ""]
    lines += [t("question", product=product), t("pick_score", product=product), ""]
    lines += [f"{n:>3}  {score_url(e, n)}" for n in SCORES]
    lines += [
        "",
        t("email_thanks", product=product),
        "",
        "-- ",
        t("footer", product=product),
        f"{t('unsubscribe_prompt', product=product)} {unsubscribe_url(e)}",
    ]
    return "\n".join(lines) + "\n"


_FONT = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
_BUTTON = (
    "display:block;padding:12px 0;margin:0 1px;border-radius:6px;background:#eef2ff;"
    "border:1px solid #c7d2fe;color:#1e3a8a;font-size:16px;font-weight:bold;"
    f"line-height:20px;text-align:center;text-decoration:none;{_FONT}"
)


def _html(e: SurveyEmail, product: str, t: Texts) -> str:
    h = escape  # every interpolated value goes through this, attributes included
    question = t("question", product=product)
    low, high = t("low_label", product=product), t("high_label", product=product)
    buttons = "\n".join(
        f'<td width="9%" style="padding:0;width:9.09%">'
        f'<a href="{h(score_url(e, n))}" style="{_BUTTON}" '
        f'aria-label="{h(t("score_label", score=n) + _edge_label(n, low, high))}" '
        f'title="{h(str(n) + _edge_label(n, low, high))}">{n}</a></td>'
        for n in SCORES
    )
    reminder = (f'<p style="margin:0 0 16px">{h(t("reminder", product=product))}</p>\n'
                if e.reminder else "")
    return f"""<!DOCTYPE html>
<html lang="{h(t.lang)}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{h(question)}</title></head>
<body style="margin:0;padding:0;background:#f6f7f9">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f6f7f9">
<tr><td align="center" style="padding:16px 8px">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"
 style="max-width:560px;background:#ffffff;border-radius:8px;{_FONT};color:#1f2937">
<tr><td style="padding:24px 16px;font-size:16px;line-height:24px">
<p style="margin:0 0 16px">{_GREETING}</p>
{reminder}<h1 style="margin:0 0 20px;font-size:20px;line-height:28px">{h(question)}</h1>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"
 style="table-layout:fixed;width:100%"><tr>{buttons}</tr></table>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"
 style="margin-top:8px;font-size:13px;color:#6b7280"><tr>
<td align="left">{h(low)}</td><td align="right">{h(high)}</td>
</tr></table>
<p style="margin:24px 0 0">{h(t("email_thanks", product=product))}</p>
</td></tr></table>
<p style="max-width:560px;margin:16px auto 0;font-size:12px;line-height:18px;color:#6b7280;{_FONT}">
{h(t("footer", product=product))}
<a href="{h(unsubscribe_url(e))}" style="color:#6b7280">{h(t("unsubscribe_link"))}</a></p>
</td></tr></table>
</body></html>
"""


def _edge_label(score: int, low: str, high: str) -> str:
    if score == 0:
        return f", {low}"
    if score == 10:
        return f", {high}"
    return ""

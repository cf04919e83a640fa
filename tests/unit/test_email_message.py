from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from jobs.email_message import (
    PermanentEmailError,
    SurveyEmail,
    greeting,
    render_message,
)
from tests.mail import read_mail

NOW = datetime(2025, 3, 12, 14, 30, tzinfo=UTC)


def build_message(e: SurveyEmail, *, now: datetime | None = None) -> EmailMessage:
    """What render_message sends (the one path), parsed as a mail client would."""
    return read_mail(render_message(e, now=now))



def survey(**changes: object) -> SurveyEmail:
    values: dict[str, object] = {
        "survey_id": 42,
        "token": "tok_AbC-123",
        "to": "peter@example.com",
        "first_name": "Peter",
        "name": "Peter Jones",
        "product_name": "Acme",
        "public_url": "https://nps.acme.example",
        "sender": "Acme <nps@acme.example>",
    }
    values.update(changes)
    return SurveyEmail(**values)  # type: ignore[arg-type]


def roundtrip(msg: EmailMessage) -> EmailMessage:
    """What a mail client sees: the message serialised and parsed again."""
    parsed = email.message_from_bytes(
        msg.as_bytes(policy=email.policy.SMTP), policy=email.policy.default
    )
    assert isinstance(parsed, EmailMessage)
    return parsed


def bodies(msg: EmailMessage) -> tuple[str, str]:
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


@pytest.mark.parametrize(
    ("first_name", "name", "expected"),
    [
        ("Peter", "Peter Jones", "Hi Peter,"),
        ("Peter", None, "Hi Peter,"),
        (None, "Mary Ann Smith", "Hi Mary,"),
        ("", "  Mary Smith ", "Hi Mary,"),
        ("  ", None, "Hi there,"),
        (None, None, "Hi there,"),
        (None, "", "Hi there,"),
        ("Zoë", None, "Hi Zoë,"),
        ("Pe\r\nter", None, "Hi Pe ter,"),
    ],
)
def test_greeting(first_name: str | None, name: str | None, expected: str) -> None:
    assert greeting(first_name, name) == expected
    plain, html = bodies(roundtrip(build_message(survey(first_name=first_name, name=name))))
    assert plain.startswith(expected)
    assert f">{expected}<" in html


def test_eleven_score_links_in_both_parts() -> None:
    plain, html = bodies(roundtrip(build_message(survey(public_url="https://nps.acme.example/"))))
    for n in range(11):
        url = f"https://nps.acme.example/s/tok_AbC-123?score={n}"
        assert url in plain
        assert f'href="{url}"' in html
    assert plain.count("/s/tok_AbC-123?score=") == 11
    assert html.count("/s/tok_AbC-123?score=") == 11
    assert "Not at all likely" in html and "Extremely likely" in html
    assert "https://nps.acme.example/u/tok_AbC-123" in plain
    assert 'href="https://nps.acme.example/u/tok_AbC-123"' in html


def test_multipart_alternative_with_plain_then_html() -> None:
    msg = roundtrip(build_message(survey()))
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_headers() -> None:
    msg = roundtrip(build_message(survey(), now=NOW))
    assert msg["Subject"] == "How likely are you to recommend Acme?"
    assert msg["From"] == "Acme <nps@acme.example>"
    assert msg["To"].addresses[0].addr_spec == "peter@example.com"
    assert msg["List-Unsubscribe"] == "<https://nps.acme.example/u/tok_AbC-123>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", msg["Message-ID"])
    assert msg["Date"].datetime == NOW


def test_reminder_subject_and_message_id() -> None:
    msg = roundtrip(build_message(survey(reminder=True)))
    assert msg["Subject"] == "Reminder: How likely are you to recommend Acme?"
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", msg["Message-ID"])


def test_hostile_values_are_escaped() -> None:
    evil = '<script>alert("x")</script>'
    msg = roundtrip(build_message(survey(first_name=evil, name=evil, product_name='Acme <b>"&')))
    _, html = bodies(msg)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<b>" not in html
    assert "Acme &lt;b&gt;&quot;&amp;" in html
    # A display name cannot break out of the To header.
    assert msg["To"].addresses[0].addr_spec == "peter@example.com"


def test_header_injection_in_product_name_is_neutralised() -> None:
    msg = roundtrip(build_message(survey(product_name="Acme\r\nBcc: victim@example.com")))
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"]


@pytest.mark.parametrize(
    "to",
    [
        "",
        "not-an-address",
        "a@b",
        "x@example.com, y@example.com",
        "a b@example.com",
        "a@ex\nample.com",
    ],
)
def test_invalid_recipient_is_a_permanent_error(to: str) -> None:
    with pytest.raises(PermanentEmailError):
        build_message(survey(to=to))


def test_non_ascii_name_and_product_survive_serialisation() -> None:
    msg = roundtrip(
        build_message(survey(first_name="Zoë", name="Zoë Ørsted", product_name="Café Ünï"))
    )
    plain, html = bodies(msg)
    assert plain.startswith("Hi Zoë,")
    assert "Café Ünï" in html
    assert msg["Subject"] == "How likely are you to recommend Café Ünï?"
    assert msg["To"].addresses[0].display_name == "Zoë Ørsted"


# -- the bytes that are sent --------------------------------------------------------


def test_rendered_bytes_are_what_build_message_parses() -> None:
    rendered = render_message(survey(), now=NOW)
    assert rendered.sender == "nps@acme.example"
    assert rendered.recipients == ("peter@example.com",)
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", rendered.message_id)
    assert not rendered.smtputf8
    again = render_message(survey(), now=NOW)  # deterministic but for the random Message-ID
    assert rendered.data.replace(rendered.message_id.encode(), b"") == \
        again.data.replace(again.message_id.encode(), b"")
    built = build_message(survey(), now=NOW)
    assert built.as_bytes().replace(str(built["Message-ID"]).encode(), b"") == \
        read_mail(rendered).as_bytes().replace(rendered.message_id.encode(), b"")
    parsed = read_mail(rendered)
    assert parsed["Date"].datetime == NOW
    assert not parsed.defects
    assert all(not part.defects for part in parsed.walk())


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"first_name": "Zoë", "name": "Zoë Ørsted", "product_name": "Café Ünï"},
        {"first_name": "x" * 3000},
        {"first_name": "<&>" * 400},
        {"product_name": "Acme " * 60},
        {"public_url": "https://nps.acme.example/" + "p" * 150},
        {"name": 'Ann "Q" O\'Neil, Jr.'},
        {"reminder": True},
    ],
)
def test_rendered_bytes_are_valid_smtp_content(changes: dict[str, object]) -> None:
    rendered = render_message(survey(**changes))
    lines = rendered.data.split(b"\r\n")
    assert lines[-1] == b""  # ends with CRLF
    assert all(b"\r" not in line and b"\n" not in line for line in lines)  # CRLF only
    assert max(len(line) for line in lines) <= 998
    head = rendered.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # non-ASCII headers are RFC 2047 encoded
    parsed = roundtrip(read_mail(rendered))
    plain, html = bodies(parsed)
    e = survey(**changes)
    assert plain.startswith(greeting(e.first_name, e.name))
    assert plain.count(f"/s/{e.token}?score=") == 11
    assert html.count(f"/s/{e.token}?score=") == 11
    assert parsed["List-Unsubscribe"] == f"<{e.public_url.rstrip('/')}/u/{e.token}>"
    assert parsed["To"].addresses[0].addr_spec == "peter@example.com"


def test_bodies_are_7bit_when_ascii_and_quoted_printable_otherwise() -> None:
    ascii_parts = [p["Content-Transfer-Encoding"]
                   for p in read_mail(render_message(survey())).iter_parts()]
    assert ascii_parts == ["7bit", "7bit"]
    accented = read_mail(render_message(survey(first_name="Zoë")))
    assert [p["Content-Transfer-Encoding"] for p in accented.iter_parts()] == [
        "quoted-printable", "quoted-printable"]
    assert render_message(survey(first_name="Zoë")).data.isascii()  # 7-bit clean on the wire


def test_non_ascii_address_asks_for_smtputf8() -> None:
    rendered = render_message(survey(to="zoë@exämple.com", name="Zoë"))
    assert rendered.smtputf8
    assert rendered.recipients == ("zoë@exämple.com",)
    assert read_mail(rendered)["To"].addresses[0].addr_spec == "zoë@exämple.com"


def test_invalid_sender_is_a_permanent_error() -> None:
    with pytest.raises(PermanentEmailError):
        render_message(survey(sender="Acme"))

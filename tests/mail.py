"""Reading a rendered survey email as a mail client does (npsd itself sends the bytes)."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from jobs.email_message import RenderedEmail


def read_mail(rendered: RenderedEmail) -> EmailMessage:
    """The message as a mail client parses it."""
    message = (email.message_from_string(rendered.data.decode(), policy=email.policy.default)
               if rendered.smtputf8  # UTF-8 headers: the bytes parser would not decode them
               else email.message_from_bytes(rendered.data, policy=email.policy.default))
    assert isinstance(message, EmailMessage)
    return message

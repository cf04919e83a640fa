"""The recipient's language: which one (Babel's locale negotiation) and every text in it
(gettext catalogs in jobs/locales/<lang>/LC_MESSAGES/npsd.po, overridable per language in
`[survey.texts.<lang>]`).

Each text has a key (the name an operator overrides it by, and the catalog's msgctxt) and an
English msgid with `{placeholder}` fields, filled with str.format. The .po files are the
shipped source: they are compiled in memory on first use (Babel's read_po/write_mo into a
GNUTranslations), so an editable install, a wheel and a fresh clone behave alike and no
writable cache directory is needed (systemd units run with a read-only /usr).
"""

from __future__ import annotations

import functools
import gettext
import io
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files

from babel import Locale, UnknownLocaleError, negotiate_locale
from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

SHIPPED = ("en", "de", "fr", "es", "nl", "pt", "it")
DOMAIN = "npsd"
COMMON = frozenset({"product", "first_name"})

# key → (English text, placeholders beyond {product} and {first_name}).
TEXTS: dict[str, tuple[str, frozenset[str]]] = {k: (v[0], frozenset(v[1])) for k, v in {
    # The email.
    "subject": ("How likely are you to recommend {product}?", ()),
    "reminder_subject": ("Reminder: How likely are you to recommend {product}?", ()),
    "greeting": ("Hi {first_name},", ()),
    "greeting_anonymous": ("Hi there,", ()),
    "reminder": ("A few days ago we asked you one quick question. "
                 "We'd still love to hear from you.", ()),
    "question": ("How likely are you to recommend {product} to a friend or colleague?", ()),
    "pick_score": ("Pick a score from 0 (not at all likely) to 10 (extremely likely):", ()),
    "low_label": ("Not at all likely", ()),
    "high_label": ("Extremely likely", ()),
    "score_label": ("{score} out of 10", ("score",)),
    "email_thanks": ("Thank you!", ()),
    "footer": ("You received this one-question survey because you use {product}.", ()),
    "unsubscribe_prompt": ("Don't want these emails? Unsubscribe:", ()),
    "unsubscribe_link": ("Unsubscribe", ()),
    # The survey page.
    "comment_prompt": ("What is the main reason for your score?", ()),
    "optional": ("(optional)", ()),
    "submit": ("Send my answer", ()),
    "update": ("Update my answer", ()),
    "not_saved": ("Your answer: {score} — press Send to save it.", ("score",)),
    "saved_on_click": ("Your answer {score} is saved. Add a comment if you like, "
                       "then press Send.", ("score",)),
    "answered": ("Thanks, we have your answer: {score}. You can change it until {date}.",
                 ("score", "date")),
    "answered_no_date": ("Thanks, we have your answer: {score}. You can change it at any time.",
                         ("score",)),
    "missing_score": ("Please choose a score from 0 to 10, then press Send.", ()),
    "comment_left": ("{count} characters left", ("count",)),
    "comment_too_long": ("Your comment is {count} characters long. The limit is {limit}.",
                         ("count", "limit")),
    "thanks_title": ("Thank you!", ()),
    "thanks": ("You gave {product} a score of {score} out of 10. Your feedback helps us get "
               "better.",
               ("score",)),
    "change_answer": ("Change your answer", ()),
    "unsubscribe_title": ("Unsubscribe from {product} surveys?", ()),
    "unsubscribe_text": ("You will no longer receive emails asking how likely you are to "
                         "recommend {product}.", ()),
    "unsubscribe_button": ("Unsubscribe", ()),
    "unsubscribed_title": ("You are unsubscribed", ()),
    "unsubscribed_text": ("You will not receive any more surveys from {product}.", ()),
    "not_found_title": ("Survey not found", ()),
    "not_found_text": ("This link is not valid. Check that it was copied whole from the "
                       "email.", ()),
    "closed_title": ("This survey has closed", ()),
    "closed_text": ("Thank you all the same: answers are no longer taken for this survey.", ()),
    "unavailable_title": ("Please try again in a moment", ()),
    "unavailable_text": ("We could not reach our records just now.", ()),
    "error_code": ("Error {status}", ("status",)),
}.items()}

Overrides = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


@functools.lru_cache(maxsize=1024)  # per email: a handful of distinct locales
def negotiate(locale: str | None, default: str = "en") -> str:
    """The shipped language for a Segment locale ("de-CH" → "de", "pt_BR" → "pt"), else
    `default`. Customer data: anything unparseable falls back rather than failing."""
    if not locale or not isinstance(locale, str):
        return default
    tag = locale.strip().replace("_", "-")[:35]
    try:
        found = negotiate_locale([tag.lower()], list(SHIPPED), sep="-")
        if found is None:
            found = Locale.parse(tag, sep="-").language
    except (ValueError, TypeError, UnknownLocaleError):
        return default
    return found if found in SHIPPED else default


def from_accept_language(header: str | None, default: str) -> str:
    """The first shipped language of an Accept-Language header (pages with no recipient)."""
    ranked = []
    for position, part in enumerate((header or "")[:500].split(",")):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            continue
        if tag and tag != "*" and weight > 0:
            ranked.append((-weight, position, tag))
    for _, _, tag in sorted(ranked):
        found = negotiate(tag, "")
        if found:
            return found
    return default


@functools.cache
def catalog(lang: str) -> gettext.NullTranslations:
    """The compiled catalog of a shipped language (English: its msgids)."""
    if lang not in SHIPPED:
        return gettext.NullTranslations()
    source = files("jobs.locales").joinpath(lang, "LC_MESSAGES", f"{DOMAIN}.po")
    with source.open("rb") as handle:
        parsed = read_po(handle, locale=lang, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, parsed)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True)
class Texts:
    """Every text in one language, with the operator's overrides for it."""

    lang: str
    overrides: Mapping[str, str]
    defaults: Mapping[str, str] = field(default_factory=dict)  # placeholder values

    def __call__(self, key: str, **values: object) -> str:
        template = self.overrides.get(key)
        if template is None:
            template = catalog(self.lang).pgettext(key, TEXTS[key][0])
        filled = _Blank(self.defaults)
        filled.update({k: str(v) for k, v in values.items()})
        return template.format_map(filled)

    def date(self, when: datetime) -> str:
        """A date as the recipient writes it: "12. März 2026", "12 mars 2026"."""
        return format_date(when, format="long", locale=self.lang)

    def number(self, n: int) -> str:
        return format_decimal(n, locale=self.lang)


def texts_for(locale: str | None, default: str, overrides: Overrides = ()) -> Texts:
    lang = negotiate(locale, default)
    return Texts(lang, dict(dict(overrides).get(lang, ())))


@functools.cache
def texts_in(lang: str, overrides: Overrides = ()) -> Texts:
    return Texts(lang, dict(dict(overrides).get(lang, ())))


def override_problem(lang: str, key: str, value: object) -> str | None:
    """Why `[survey.texts.<lang>] key = value` cannot be used, or None."""
    if lang not in SHIPPED:
        return f"unknown language {lang!r} (npsd ships {', '.join(SHIPPED)})"
    if key not in TEXTS:
        return f"unknown key (known texts: {', '.join(sorted(TEXTS))})"
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    allowed = COMMON | TEXTS[key][1]
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(value) if f is not None
                  and (f not in allowed or spec or conv)]
    except ValueError as exc:
        return f"not a valid text ({exc}; write a literal brace as {{{{ or }}}})"
    if fields:
        return (f"unknown placeholder {{{fields[0]}}} (use "
                f"{', '.join('{' + a + '}' for a in sorted(allowed))})")
    return None

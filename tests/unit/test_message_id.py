"""Survey emails' Message-IDs: random, at the From domain, never derived from the survey
(a sequential id repeats across installs, so Gmail drops the repeats, and tells every
recipient how many surveys were sent)."""

from __future__ import annotations

import re

from jobs.email_message import SurveyEmail, render_message

WELL_FORMED = re.compile(r"<([0-9a-f]{32})@mail\.acme\.example>")  # 128 random bits


def survey(survey_id: int, reminder: bool = False) -> SurveyEmail:
    return SurveyEmail(survey_id=survey_id, token=f"tok-{survey_id}", to="ann@example.com",
                       first_name="Ann", name=None, product_name="Acme",
                       public_url="https://nps.acme.example",
                       sender="Acme NPS <nps@mail.acme.example>", reminder=reminder)


def test_two_surveys_have_different_well_formed_ids_at_the_from_domain() -> None:
    first, second = render_message(survey(1)), render_message(survey(2))
    assert WELL_FORMED.fullmatch(first.message_id) and WELL_FORMED.fullmatch(second.message_id)
    assert first.message_id != second.message_id
    assert f"Message-ID: {first.message_id}\r\n".encode() in first.data


def test_nothing_in_the_id_derives_from_the_survey() -> None:
    # The same survey rendered twice (the same install, or two installs numbering from 1)
    # gets two unrelated ids; a thousand surveys, a thousand distinct ids.
    assert render_message(survey(7)).message_id != render_message(survey(7)).message_id
    ids = {render_message(survey(n)).message_id for n in range(1000)}
    assert len(ids) == 1000
    assert not any("npsd-survey" in mid for mid in ids)
    # Nor does anything else in the message count the surveys: the MIME boundary is the
    # same whatever the survey id.
    boundary = re.compile(rb'boundary="([^"]+)"')
    assert (boundary.search(render_message(survey(1)).data).group(1)  # type: ignore[union-attr]
            == boundary.search(render_message(survey(99)).data).group(1))  # type: ignore[union-attr]


def test_reminders_are_random_too() -> None:
    first, reminder = render_message(survey(3)), render_message(survey(3, reminder=True))
    assert WELL_FORMED.fullmatch(reminder.message_id)
    assert reminder.message_id != first.message_id and "reminder" not in reminder.message_id

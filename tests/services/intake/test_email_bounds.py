"""Hostile mail bodies: every text pass is bounded and linear, attachment counts are capped."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from app.services.intake.email_inbound import (
    parse_mailgun,
    parse_mime,
    parse_postmark,
    parse_sendgrid,
    split_quote,
    split_signature,
)

T = TypeVar("T")


def _timed(fn: Callable[..., T], *args: object) -> tuple[T, float]:
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def test_ten_thousand_quoted_lines_split_in_linear_time() -> None:
    # Was 5.9 s: each quoted line rescanned the rest for an unquoted one.
    text = "Sounds good.\n" + "> quoted line\n" * 10_000 + "tail"
    (new, quoted), took = _timed(split_quote, text)
    assert new.startswith("Sounds good.") and quoted is not None and quoted.count("\n") == 9_999
    assert took < 0.25


def test_long_intro_like_lines_do_not_backtrack() -> None:
    hostile = [  # each was 0.3-5 s for 200 lines
        "On " + "1" * 2000,
        "Am " + " schrieb" * 250 + "x",
        "1" * 2000 + "写道x",
        "在" + " " * 2000 + "x",
    ]
    for line in hostile:
        _, took = _timed(split_quote, "Hi\n" + "\n".join([line] * 200))
        assert took < 0.25, line[:20]


def test_the_intro_patterns_still_recognise_real_intros() -> None:
    for intro in (
        "On Tue, 20 Nov 2026 at 10:00, Anna <anna@example.com> wrote:",
        "> On Tue, 20 Nov 2026, Anna wrote:",
        "Le mar. 20 nov. 2026 à 10:00, Anna a écrit :",
        "Am 20.11.2026 um 10:00 schrieb Anna:",
        "在 2026年11月20日 10:00，Anna <a@b.cn> 写道：",
    ):
        new, quoted = split_quote(f"Yes please.\n\n{intro}\n> old text")
        assert new == "Yes please." and quoted is not None and quoted.startswith(intro.strip()), intro
    assert split_quote("On reflection, I wrote: nothing")[1] is None


def test_many_delimiters_and_sign_offs_split_in_linear_time() -> None:
    for text in ("Hello\n" + "--\n" * 5000 + "x\n" * 21, "Hello\n" + "Thanks,\n" * 5000 + "x\n" * 13):
        _, took = _timed(split_signature, text)  # each was 0.5 s
        assert took < 0.1


def test_a_huge_body_is_parsed_within_bounds() -> None:
    lines = ["> " + "x" * 5000] * 8_000 + ["Thanks,"] * 1000  # 40 MB of text; only the bounded part is read
    raw = "From: a@b.example\r\nSubject: hi\r\nReferences: " + " ".join(f"<{i}@x>" for i in range(5000))
    raw += "\r\n\r\nHello\n" + "\n".join(lines)
    mail, took = _timed(parse_mime, raw.encode())
    assert took < 5  # generous: the machine may be shared; unbounded, this took minutes
    assert len(mail.references) == 20 and mail.references[-1] == "4999@x"
    assert len(mail.thread_ids()) == 20


def test_attachment_counts_are_capped() -> None:
    cases = [
        (parse_sendgrid, {"from": "a@b.example", "attachments": "9999999999"}),
        (parse_sendgrid, {"from": "a@b.example", "attachments": "9" * 5000}),
        (parse_mailgun, {"from": "a@b.example", "attachment-count": "9999999999"}),
    ]
    for parse, form in cases:
        mail, took = _timed(parse, form)
        assert len(mail.attachments) <= 100 and took < 0.5
    payload = {"From": "a@b.example", "Attachments": [{"Name": "x", "ContentLength": "a"}] * 100_000}
    mail = parse_postmark(payload)
    assert len(mail.attachments) == 100


def test_postmark_fields_of_the_wrong_type_count_as_absent() -> None:
    mail = parse_postmark(
        {
            "From": "a@b.example",
            "Subject": ["x"],
            "TextBody": 5,
            "HtmlBody": {"x": 1},
            "Attachments": [{"ContentLength": {"x": 1}, "Name": 7}],
            "Headers": "nope",
            "FromFull": {"Email": 3},
        }
    )
    assert mail.from_email == "a@b.example" and mail.subject is None and mail.text == ""
    assert mail.attachments[0].size == 0 and mail.attachments[0].filename is None

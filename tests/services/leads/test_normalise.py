"""`normalise_email`'s fast path answers exactly what `validate_email` answers."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.services.leads.normalise import _plain_email, normalise_email


def _by_the_library(text: str) -> str | None:
    try:
        return validate_email(text.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def _ours(text: str) -> str | None:
    try:
        return normalise_email(text)
    except ValueError:
        return None


# Parts that sit at the fast path's edges: dots, hyphens, "--" where IDNA reserves it, digits,
# upper case, special-use and numeric top-level labels, characters it leaves to the library.
_LOCAL = st.text(alphabet="aZ09._+-!#~", min_size=0, max_size=70)
_LABEL = st.text(alphabet="ab-9XK", min_size=0, max_size=66)
_TLD = st.sampled_from(["com", "cn", "TEST", "test", "local", "onion", "c0m", "a", "xn--fiqs8s", "co-uk", ""])


@settings(max_examples=1500, deadline=None)
@given(
    local=_LOCAL, labels=st.lists(_LABEL, min_size=0, max_size=3), tld=_TLD, pad=st.sampled_from(["", " "])
)
@example(local="lead-1", labels=["example"], tld="com", pad="")
@example(local="a", labels=["ab--cd"], tld="com", pad="")
@example(local="a", labels=["abc--d"], tld="com", pad="")
@example(local="a" * 64, labels=["x"], tld="com", pad="")
@example(local="a" * 65, labels=["x"], tld="com", pad="")
@example(local="a", labels=["b" * 63], tld="com", pad="")
@example(local="a", labels=["b" * 64], tld="com", pad="")
@example(local="a", labels=["b" * 63] * 4, tld="com", pad="")
@example(local="a", labels=["sub", "x"], tld="test", pad=" ")
def test_the_fast_path_agrees_with_validate_email(local: str, labels: list[str], tld: str, pad: str) -> None:
    text = pad + local + "@" + ".".join([*labels, tld]) + pad
    assert _ours(text) == _by_the_library(text)


@pytest.mark.parametrize(
    "text",
    ["Lead-7@Example.COM", "first.last+tag@mail.example.co", "zhang_san@qq.com", "x@sub-1.example.cn"],
)
def test_plain_addresses_take_the_fast_path(text: str) -> None:
    assert _plain_email(text) == text.lower() == _by_the_library(text)


@pytest.mark.parametrize(
    "text", ["用户@例子.公司", "a@[127.0.0.1]", '"quoted"@example.com', "a@x.test", "\u212a@example.com"]
)
def test_the_rest_goes_to_the_library(text: str) -> None:
    assert _plain_email(text) is None
    assert _ours(text) == _by_the_library(text)

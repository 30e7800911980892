"""Body text work: HTML to text, quoted-reply and signature stripping, phone and company extraction.

Hand-written rather than quotequail or mail-parser-reply: neither recognises Chinese clients'
markers ("在 … 写道：", "-----原始邮件-----"; mail-parser-reply's zh pattern excludes itself), and
quotequail separates no signatures while mail-parser-reply rewrites every line's whitespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser

import phonenumbers

# --- HTML to text -----------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "template"})


class _TextExtractor(HTMLParser):
    """Collects text, one line per block element; blockquote lines get "> " so quotes strip alike."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []
        self._line_depth = 0
        self._quote_depth = 0
        self._skip_depth = 0
        self._pre_depth = 0

    def _flush(self) -> None:
        text = "".join(self._line).strip()
        self.lines.append(("> " * self._line_depth + text) if text else "")
        self._line = []
        self._line_depth = self._quote_depth

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "blockquote":
                self._quote_depth += 1
                self._line_depth = self._quote_depth
            elif tag == "pre":
                self._pre_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "blockquote":
                self._quote_depth = max(0, self._quote_depth - 1)
                self._line_depth = self._quote_depth
            elif tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            first, *rest = data.split("\n")
            self._line.append(first)
            for line in rest:
                self._flush()
                self._line.append(line)
            return
        if not self._line:
            self._line_depth = self._quote_depth
        self._line.append(re.sub(r"\s+", " ", data.replace("\xa0", " ")))


def html_to_text(html: str) -> str:
    """Plain text of an HTML body: block elements become lines, blockquotes become "> " lines."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    parser._flush()
    return _tidy("\n".join(parser.lines))


def _tidy(text: str) -> str:
    """Unix newlines, no trailing spaces except in the "-- " delimiter, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ").replace("\u200b", "")
    lines = [line if line == "-- " else line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# --- quoted replies -------------------------------------------------------------------------

# Intro lines carry a date or an address; that keeps "On reflection, I wrote:" in the reply.
# Every pattern here runs in linear time on one line: no two unbounded quantifiers can share
# characters ("[^\d@]*[\d@]" finds the first digit once), so a long hostile line cannot backtrack.
_QUOTE_MARKS = r"\s*(?:>\s*)*"
_ON_WROTE = re.compile(rf"^{_QUOTE_MARKS}On\s[^\d@]*[\d@].*\swrote:\s*$", re.I)
_ON_START = re.compile(
    rf"^{_QUOTE_MARKS}On\s[^\d@]*[\d@]", re.I
)  # "On <date>, <name>" wrapped before "wrote:"
_WROTE_END = re.compile(r"^.*\bwrote:\s*$", re.I)
_OTHER_WROTE = re.compile(
    r"^\s*(?=.*:\s*$)"
    r"(?:Am\s.+\sschrieb|Le\s.+\sa\sécrit\s?:\s*$|El\s.+\sescribió:\s*$|Em\s.+\sescreveu:\s*$|Op\s.+\sschreef)",
    re.I,
)
_ZH_WROTE = re.compile(r"写道\s*[:：]\s*$")
_ZH_INTRO = re.compile(
    r"^[^\d@]*[\d@].*写道\s*[:：]\s*$"
)  # "…2026年11月20日…，Anna <a@b> 写道：", not "他写道："
_ZH_START = re.compile(rf"^{_QUOTE_MARKS}在\D*\d")  # "在 2026年11月20日 …" wrapped before "写道："
# Bounds on what the quote and signature passes look at (a longer body is cut; its raw is kept).
MAX_TEXT_CHARS = 200_000
MAX_LINES = 5_000
MAX_LINE_CHARS = 2_000
_MAX_INTRO_CHARS = 500  # no real "On … wrote:" / "From: …" line is longer
_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(Original Message|Forwarded message|原始邮件|转发邮件|Ursprüngliche Nachricht|"
    r"Message d'origine|Mensaje original)\s*-{2,}\s*$",
    re.I,
)
_UNDERSCORES = re.compile(r"^\s*_{20,}\s*$")
_FROM_LINE = re.compile(r"^\s*\*?(From|发件人|寄件者|Von|De)\s*\*?\s*[:：]", re.I)
_HEADER_LINE = re.compile(
    r"^\s*\*?(Sent|Date|To|Subject|Cc|发送时间|日期|时间|收件人|主题|抄送|Gesendet|An|Betreff|Envoyé|À|Objet)"
    r"\s*\*?\s*[:：]",
    re.I,
)


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _intro_at(lines: list[str], i: int) -> bool:
    """Whether a quote header ("On … wrote:", "-----Original Message-----", "From: …") starts at line i."""
    line = lines[i]
    if len(line) > _MAX_INTRO_CHARS:
        return False
    nxt = lines[i + 1] if i + 1 < len(lines) else ""
    if _SEPARATOR.match(line) or _ON_WROTE.match(line) or _OTHER_WROTE.match(line):
        return True
    if _ZH_INTRO.match(line) and not _is_quoted(line):
        return True
    if len(nxt) <= _MAX_INTRO_CHARS:
        if _ON_START.match(line) and _WROTE_END.match(nxt):
            return True
        if _ZH_START.match(line) and _ZH_WROTE.search(nxt):
            return True
    following = [x for x in lines[i + 1 : i + 6] if x.strip()]
    if _UNDERSCORES.match(line) and following and _FROM_LINE.match(following[0]):
        return True
    return bool(_FROM_LINE.match(line) and any(_HEADER_LINE.match(x) for x in lines[i + 1 : i + 6]))


def _quote_start(lines: list[str]) -> int | None:
    """Index of the first line of the quoted part, or None when there is no quote header (one pass)."""
    # A ">" block only counts as the quote when nothing but quoted lines follows it.
    last_unquoted = max((i for i, x in enumerate(lines) if x.strip() and not _is_quoted(x)), default=-1)
    for i, line in enumerate(lines):
        if _intro_at(lines, i):
            return i
        if i > last_unquoted and _is_quoted(line):
            return i
    return None


def bound_text(text: str) -> str:
    """The part of a body the text passes work on: at most MAX_TEXT_CHARS, MAX_LINES lines of at
    most MAX_LINE_CHARS each, so their cost is bounded whatever is posted."""
    lines = text[:MAX_TEXT_CHARS].split("\n", MAX_LINES)[:MAX_LINES]
    return "\n".join(line[:MAX_LINE_CHARS] for line in lines)


def split_quote(text: str) -> tuple[str, str | None]:
    """(new text, quoted part) — the quoted part starts at its intro line ("On … wrote:", "From: … Sent:")."""
    lines = text.split("\n")
    start = _quote_start(lines)
    if start is not None:
        quoted = "\n".join(lines[start:]).strip()
        return "\n".join(lines[:start]).rstrip(), quoted or None
    if any(_is_quoted(line) for line in lines):
        # Inline answers between quoted lines: keep the answers, set the quoted lines aside.
        kept = [line for line in lines if not _is_quoted(line)]
        quoted_lines = [line for line in lines if _is_quoted(line)]
        return _tidy("\n".join(kept)), "\n".join(quoted_lines)
    return text.rstrip(), None


# --- signatures -----------------------------------------------------------------------------

_SIG_DELIMITER = re.compile(r"^--\s?$")  # RFC 3676 "-- "; many clients trim the trailing space
_SIGN_OFF_WORDS = (
    r"best(\s+regards|\s+wishes)?|kind(est)?\s+regards|warm(est)?\s+regards|regards|many\s+thanks|"
    r"thanks(\s+(and|&)\s+(best\s+)?regards|\s+again|\s+a\s+lot|\s+so\s+much)?|thank\s+you|thx|cheers|"
    r"sincerely|yours\s+(sincerely|truly|faithfully)|br|mit\s+freundlichen\s+grüßen|viele\s+grüße|"
    r"cordialement|此致|此致敬礼|谢谢|多谢|感谢|祝好|顺祝商祺|顺颂商祺|祝商祺"
)
_SIGN_OFF = re.compile(rf"^\s*({_SIGN_OFF_WORDS})\s*[,.!，。！、]*\s*$", re.I)
# "Thanks, John" on one line: the name must be capitalised so "Thanks, that helps" stays in the reply.
_SIGN_OFF_WITH_NAME = re.compile(
    rf"^\s*(?i:{_SIGN_OFF_WORDS})\s*[,，]\s*[^\W\d_a-z][\w.'-]*(\s[^\W\d_a-z][\w.'-]*){{0,2}}\s*$"
)
_MOBILE_FOOTER = re.compile(r"^\s*(Sent from my\s|Get Outlook for\s|发自我的|从我的.*发送)", re.I)
_MAX_SIGNATURE_LINES = 12


def _looks_like_signature_block(lines: list[str], *, named: bool) -> bool:
    """Short lines, none a question: a name/title/company/phone block, not more prose."""
    body = [line for line in lines if line.strip()]
    return (
        (0 if named else 1) <= len(body) <= _MAX_SIGNATURE_LINES
        and all(len(line.strip()) <= 80 for line in body)
        and not any(line.rstrip().endswith(("?", "？")) for line in body)
    )


def split_signature(text: str) -> tuple[str, str | None]:
    """(text without signature, signature) — at a "-- " line, else at a sign-off before a short block.

    One backward pass keeps the count of non-blank lines below each line, so no line rescans the rest."""
    lines = text.split("\n")
    below = [0] * (len(lines) + 1)  # non-blank lines after index i
    for i in range(len(lines) - 1, -1, -1):
        below[i] = below[i + 1] + (1 if lines[i].strip() else 0)
    for i in range(len(lines) - 1, -1, -1):
        if below[i + 1] > 20:
            break  # every earlier delimiter has even more lines below it
        if _SIG_DELIMITER.match(lines[i]):
            signature = "\n".join(lines[i + 1 :]).strip()
            return "\n".join(lines[:i]).rstrip(), signature or None
    first_content = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    for i in range(len(lines) - 1, 0, -1):
        if below[i + 1] > _MAX_SIGNATURE_LINES:
            break  # a longer block is no signature, and earlier lines only have longer ones
        if len(lines[i]) > _MAX_INTRO_CHARS or first_content >= i:
            continue
        named = bool(_SIGN_OFF_WITH_NAME.match(lines[i]))
        if (named or _SIGN_OFF.match(lines[i])) and _looks_like_signature_block(lines[i + 1 :], named=named):
            return "\n".join(lines[:i]).rstrip(), "\n".join(lines[i:]).strip()
    content = [i for i, line in enumerate(lines) if line.strip()]
    if len(content) > 1 and _MOBILE_FOOTER.match(lines[content[-1]]):
        return "\n".join(lines[: content[-1]]).rstrip(), lines[content[-1]].strip()
    return text.rstrip(), None


# --- phone ----------------------------------------------------------------------------------

_FAX_LABEL = re.compile(r"(fax|传真|ファックス)\s*[:：.]?\s*$", re.I)


def extract_phone(texts: Iterable[str | None], *, default_region: str | None) -> str | None:
    """First valid phone number (E.164) in the first text that has one; fax numbers are skipped."""
    for text in texts:
        if not text:
            continue
        for match in phonenumbers.PhoneNumberMatcher(text, default_region):
            if _FAX_LABEL.search(text[max(0, match.start - 12) : match.start]):
                continue
            return phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
    return None


# --- company --------------------------------------------------------------------------------

_LEGAL_SUFFIX = re.compile(
    r"(\b(ltd|limited|inc|incorporated|llc|llp|plc|gmbh|ag|s\.?a|sas|sarl|b\.?v|n\.?v|oy|ab|a/s|pty|"
    r"corp|corporation|co|company|k\.?k|s\.?r\.?l|s\.?p\.?a|pte)\.?$)|(有限公司|有限责任公司|公司|集团|株式会社)$",
    re.I,
)
_TITLE_WORDS = re.compile(
    r"\b(manager|director|head|chief|ceo|cto|cfo|coo|cmo|founder|co-founder|president|vp|vice|engineer|"
    r"officer|sales|marketing|procurement|purchasing|lead|specialist|consultant|partner|owner|analyst|"
    r"assistant|coordinator|executive|representative|buyer|account|developer|designer)\b|"
    r"(经理|总监|主管|总裁|董事|工程师|专员|采购|销售|助理|主任|负责人|经理人|主席)",
    re.I,
)
_CONTACT_LINE = re.compile(
    r"@|https?://|www\.|\d{3}|^\s*(tel|phone|mobile|mob|cell|fax|email|e-mail|web|address|电话|手机|"
    r"传真|邮箱|地址|网址)\b",
    re.I,
)
_SEGMENT_SPLIT = re.compile(r"\s*[|•·]\s*|\s+[-–—]\s+")
FREE_MAIL_DOMAINS = frozenset(
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.co.jp",
        "yahoo.com.cn",
        "ymail.com",
        "hotmail.com",
        "hotmail.co.uk",
        "outlook.com",
        "live.com",
        "msn.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.com",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "zoho.com",
        "qq.com",
        "vip.qq.com",
        "163.com",
        "126.com",
        "yeah.net",
        "sina.com",
        "sina.cn",
        "sohu.com",
        "foxmail.com",
        "aliyun.com",
        "139.com",
        "189.cn",
        "naver.com",
        "hanmail.net",
        "fastmail.com",
        "hey.com",
        "tutanota.com",
    ]
)
_SECOND_LEVEL = frozenset(["co", "com", "net", "org", "ac", "gov", "edu"])


def _company_from_lines(lines: list[str], from_name: str | None) -> str | None:
    segments = [seg.strip(" ,") for line in lines for seg in _SEGMENT_SPLIT.split(line) if seg.strip(" ,")]
    for seg in segments:
        if _LEGAL_SUFFIX.search(seg) and not _CONTACT_LINE.search(seg):
            return seg
    # "Head of Procurement at Acme Robotics" / "Head of Procurement, Acme Robotics"
    for seg in segments:
        match = re.match(r"^.+?(?:\s+at\s+|,\s*|\s+@\s+)(.+)$", seg, re.I)
        if match and _TITLE_WORDS.search(seg) and not _TITLE_WORDS.search(match.group(1)):
            return match.group(1).strip()
    name = (from_name or "").casefold()
    after_name = False
    for line in lines:
        text = line.strip()
        if not text or _SIGN_OFF.match(text):
            continue
        if not after_name or text.casefold() == name:
            # The block's first line is the sender's name, even when it is spelt unlike the From header.
            after_name = True
            continue
        if _TITLE_WORDS.search(text) or _CONTACT_LINE.search(text) or len(text) > 60:
            continue
        return text
    return None


def _company_from_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    domain = email.rsplit("@", 1)[1].lower()
    if domain in FREE_MAIL_DOMAINS:
        return None
    labels = domain.split(".")
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL:  # acme.co.uk, acme.com.cn
        labels = labels[:-1]
    if len(labels) < 2:
        return None
    return labels[-2].replace("-", " ").title()


def extract_company(
    signature: str | None, *, from_name: str | None, from_email: str | None
) -> tuple[str | None, str | None]:
    """(company, source). In the signature: a segment with a legal suffix ("Acme Robotics Ltd",
    "…有限公司"), else "Title at/, Company", else the first line after the name that is no title or
    contact line (source "signature"). As a last resort the sender's domain unless it is free mail,
    e.g. "acme-robotics.com" -> "Acme Robotics" (source "domain").
    """
    if signature:
        company = _company_from_lines(signature.split("\n"), from_name)
        if company:
            return company, "signature"
    company = _company_from_domain(from_email)
    return (company, "domain") if company else (None, None)

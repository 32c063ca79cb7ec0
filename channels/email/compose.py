"""The outbound reply as an ``EmailMessage``: thread headers, ``Re:`` subject, text with an
optional HTML alternative, attachments.

Header-injection-proof by construction: every value that reaches a header (an agent's name, a
buyer's subject or display name, an attachment's file name) has CR, LF and every other control
character replaced by a space before the ``email`` package sees it — also inside RFC 2047
encoded words, which the ``email`` header registry decodes on assignment (Python 3.11 writes
a decoded CR LF straight back out: ``=?utf-8?q?x=0D=0ABcc:…?=`` was a header injection);
every header is checked once more after assignment. Addresses must be plain
addr-specs and Message-IDs ``<…>`` of printable ASCII, or they are refused (``ValueError``) or
dropped (a bad id in References). ``policy.SMTP`` then quotes specials, RFC 2047-encodes
non-ASCII names and subjects, folds long headers and ends lines with CRLF; bodies are
7-bit (quoted-printable or base64) so no relay without 8BITMIME mangles them.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol

from channels.attachments import safe_name
from channels.email.mime import decode_header_value

MAX_HEADER_TEXT = 900
"""A subject or display name is cut here (RFC 5322's line limit is 998 with the name)."""
_ADDR_SPEC = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9-]{1,63}"
                        r"(?:\.[A-Za-z0-9-]{1,63}){1,8}")
_MSG_ID = re.compile(r"<[!-;=?-~]{1,250}>")  # printable ASCII without < > or spaces
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_REPLY_PREFIX = re.compile(r"(?:re|aw|sv|vs|antw|res|答复|回复|回覆)[ \t]{0,4}(?:\[\d{1,4}\])?"
                           r"[ \t]{0,4}[:：]", re.IGNORECASE)
_WS = re.compile(r"\s+")
_POLICY = policy.SMTP.clone(cte_type="7bit")


class ReplyAttachment(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def content_type(self) -> str: ...
    @property
    def data(self) -> bytes: ...


def header_text(value: str) -> str:
    """``value`` made safe for a header: encoded words decoded (so what they hide is cleaned
    too), control and line-break characters (CR, LF, NEL, U+2028, bidi controls …) turned into
    spaces, whitespace collapsed, cut to ``MAX_HEADER_TEXT``; any ``=?`` left is broken up so
    the header registry cannot decode it again."""
    value = value[:MAX_HEADER_TEXT * 2]
    for _ in range(3):
        if "=?" not in value:
            break
        value = decode_header_value(_clean(value))
    return _clean(value).replace("=?", "= ?")[:MAX_HEADER_TEXT]


def _clean(value: str) -> str:
    cleaned = "".join(" " if unicodedata.category(ch)[0] in "CZ" and ch != " " else ch
                      for ch in value)
    return _WS.sub(" ", cleaned).strip()


def address(value: str) -> str:
    """A plain addr-spec, or ``ValueError``: nothing that could smuggle a second recipient."""
    candidate = value.strip()
    if not _ADDR_SPEC.fullmatch(candidate):
        raise ValueError(f"not a plain email address: {header_text(value)[:80]!r}")
    return candidate


def reply_subject(subject: str) -> str:
    """``Re: <subject>``, not doubled when the subject already starts with a reply prefix."""
    clean = header_text(subject)
    if _REPLY_PREFIX.match(clean):
        return clean
    return f"Re: {clean}" if clean else "Re:"


def body_text(text: str) -> str:
    """Line endings normalised, control characters other than tab and newline removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch for ch in text
                   if ch in "\t\n" or unicodedata.category(ch) not in ("Cc", "Cs"))


_URL = re.compile(r"https?://[^\s<>\"']{1,2000}[^\s<>\"'.,;:!?)\]]")


def html_body(text: str) -> str:
    """An HTML alternative of the agent's plain text (``html_replies``): every character
    escaped, paragraphs at blank lines, line breaks kept, ``http(s)`` URLs as links, the
    direction left to the reader (``dir="auto"``: Arabic and Hebrew buyers). Built from text,
    never from HTML anyone typed, so nothing a buyer or an agent wrote becomes markup."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", body_text(text).strip()) if p.strip()]
    rendered = []
    for paragraph in paragraphs:
        lines = [_linked(line) for line in paragraph.split("\n")]
        rendered.append("<p>" + "<br>\n".join(lines) + "</p>")
    return ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>'
            '<body><div dir="auto">\n' + "\n".join(rendered) + "\n</div></body></html>\n")


def _linked(line: str) -> str:
    out, last = [], 0
    for found in _URL.finditer(line):
        out.append(html.escape(line[last:found.start()]))
        url = html.escape(found.group(0), quote=True)
        out.append(f'<a href="{url}">{url}</a>')
        last = found.end()
    out.append(html.escape(line[last:]))
    return "".join(out)


def compose_reply(*, from_address: str, to: str, subject: str, message_id: str, text: str,
                  in_reply_to: str | None = None, references: Sequence[str] = (),
                  from_name: str | None = None, to_name: str | None = None,
                  reply_to: str | None = None, html_part: str | None = None,
                  attachments: Sequence[ReplyAttachment] = (),
                  date: float | None = None) -> EmailMessage:
    """The reply ready for SMTP (``message_bytes`` gives its wire form). ``subject`` is the
    parent's: ``Re:`` is added here. ``references`` comes from ``threading.reply_headers``."""
    if not _MSG_ID.fullmatch(message_id):
        raise ValueError("message_id must be <…> of printable ASCII")
    message = EmailMessage(policy=_POLICY)
    message["From"] = Address(display_name=header_text(from_name or ""),
                              addr_spec=address(from_address))
    message["To"] = Address(display_name=header_text(to_name or ""), addr_spec=address(to))
    if reply_to:
        message["Reply-To"] = Address(addr_spec=address(reply_to))
    message["Subject"] = reply_subject(subject)
    message["Date"] = formatdate(date, usegmt=True)
    message["Message-ID"] = message_id
    if in_reply_to and _MSG_ID.fullmatch(in_reply_to):
        message["In-Reply-To"] = in_reply_to
    kept = [ref for ref in references if _MSG_ID.fullmatch(ref)]
    if kept:
        message["References"] = " ".join(kept)
    message.set_content(body_text(text))
    if html_part:
        message.add_alternative(body_text(html_part), subtype="html")
    for attachment in attachments:
        content_type = attachment.content_type.strip().lower()
        if not _CONTENT_TYPE.fullmatch(content_type):
            content_type = "application/octet-stream"
        maintype, subtype = content_type.split("/", 1)
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                               filename=header_text(safe_name(attachment.name)))
    for name, value in message.items():
        if "\r" in str(value) or "\n" in str(value):
            raise ValueError(f"line break in the {name} header")  # defence in depth
    return message


def message_bytes(message: EmailMessage) -> bytes:
    """The wire form (CRLF line endings, folded, RFC 2047 where needed)."""
    return message.as_bytes(policy=_POLICY)

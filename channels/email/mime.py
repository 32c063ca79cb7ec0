"""One raw RFC 5322 message → ``ParsedEmail``: headers decoded, the text to show, the full text,
the HTML, attachments with limits, and whether it is a buyer's message, an auto-reply or a
bounce.

``parse_email`` is synchronous and CPU-bound on purpose: the adapter calls it through
``asyncio.to_thread`` so a 20 MB message never blocks the event loop. It never raises on bad
input except ``MalformedEmail`` when nothing usable is left; everything it had to guess or cut is
listed in ``defects``.

The stdlib parser splits the MIME tree, but the values are decoded here, defensively: header
values are read raw and decoded with ``email.header.decode_header`` (RFC 2047, unknown charsets
and 8-bit bytes survive), payloads with ``get_payload(decode=True)`` and our own charset
fallbacks, and the tree is walked with a depth and a part-count limit instead of
``Message.walk`` (which recurses without bound).

Why ``compat32`` and not ``policy.default``: the modern policy parses structured headers with
``email._header_value_parser``, which on Python 3.11 raises ``RecursionError`` on a
Content-Type of nested comments and takes 20 s on one of 20,000 quoted parameters. The legacy
header code is simple string splitting, and ``_BoundedPolicy`` cuts every header value at
``MAX_HEADER_CHARS`` as the parser reads it, before anything parses it.
"""

from __future__ import annotations

import codecs
import datetime
import hashlib
import mimetypes
import re
from collections.abc import Sequence
from email import policy
from email.header import decode_header
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import Compat32
from email.utils import collapse_rfc2231_value, getaddresses, parseaddr, parsedate_to_datetime
from typing import Final, Literal

import msgspec

from channels.attachments import OCTET_STREAM, safe_name, sniff
from channels.email.html_text import html_to_text
from channels.email.quotes import strip_quotes
from channels.errors import MalformedPayload

MAX_DEPTH = 20
"""MIME nesting followed; deeper parts are skipped with a defect (real mail nests ≤ 6)."""
MAX_PARTS = 500
"""Parts examined per message; more is a hostile or broken message."""
MAX_HEADER_CHARS = 16_384
"""One header value is cut here before it is decoded or parsed."""
MAX_HEADER_SECTION = 262_144
"""A header section longer than this is cut (the body is kept)."""
MAX_TEXT_CHARS = 2_000_000
"""``full_text`` beyond this is cut: display and search text, not an archive (the raw message
is the archive)."""
MAX_IDS = 50
"""References kept (the newest ones; RFC 5322 lets clients drop the middle)."""
FORWARD_SUMMARY_CHARS = 4_000

Kind = Literal["message", "auto_reply", "bounce"]
_MSG_ID = re.compile(r"<([^<>\s]{1,250})>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WS = re.compile(r"\s+")
_SURROGATE = re.compile("[\udc80-\udcff]")  # 8-bit header bytes, as the parser carries them
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_SMTP_CODE = re.compile(r"(?<![\d.])([45]\d\d)(?:[ -]|$)", re.MULTILINE)
# The address forms nearly every mail uses: ``local@domain`` and ``Display Name <local@domain>``
# with dot-atoms and a plain phrase. Read directly, they skip getaddresses' two full parses
# (CPython's strict mode re-checks every value), 17 % of parse_email's time on a backlog;
# tests/channels/email/test_mime_fuzz.py proves the shortcut answers as getaddresses does.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE_ADDRESS = re.compile(rf"(?:([^\W_]+(?: [^\W_]+)*) ?<({_ADDRESS})>|({_ADDRESS}))")
_BODY_MSG_ID = re.compile(r"^[ \t>]{0,8}Message-ID:[ \t]{0,8}(<[^<>\s]{1,250}>)",
                          re.IGNORECASE | re.MULTILINE)
# Declared charsets mail clients get wrong, mapped to the superset that decodes what they meant
# (the WHATWG Encoding Standard's mapping).
_CHARSET_SUPERSETS = {
    "us-ascii": "cp1252", "ascii": "cp1252", "iso-8859-1": "cp1252", "latin1": "cp1252",
    "latin-1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030", "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949", "shift_jis": "cp932", "sjis": "cp932", "big5": "big5hkscs",
    "iso-8859-9": "cp1254", "tis-620": "cp874", "windows-874": "cp874", "utf8": "utf-8",
}
_NOT_TEXT_CODECS = frozenset({"unicode_escape", "raw_unicode_escape", "idna", "punycode"})
_WESTERN = frozenset({"cp1252", "latin_1", "iso8859_15", "ascii"})


class _BoundedPolicy(Compat32):
    """compat32 with every header value cut at ``MAX_HEADER_CHARS`` as it is read."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        return name, value[:MAX_HEADER_CHARS]


_POLICY = _BoundedPolicy()


class MalformedEmail(MalformedPayload):
    """Nothing usable could be read from the message; ``reason`` says why (the adapter
    quarantines the raw message with it and moves on)."""


class EmailAttachment(msgspec.Struct, frozen=True):
    """An attachment as found. ``refused`` is the reason it was not kept (then ``data`` is
    ``None``): over the size or count limit, empty, or unreadable. ``content_type`` is sniffed
    from the bytes (``application/octet-stream`` when not recognised); ``declared_type`` is what
    the sender said. ``content_id`` (without brackets) for inline images referenced by HTML."""

    name: str
    content_type: str
    declared_type: str
    size: int
    data: bytes | None = None
    content_id: str | None = None
    inline: bool = False
    refused: str | None = None
    sha256: str | None = None


class BounceInfo(msgspec.Struct, frozen=True):
    """What a delivery failure report says about our message."""

    original_message_id: str | None = None
    status: str | None = None
    diagnostic: str | None = None
    recipient: str | None = None
    action: str | None = None


class ParsedEmail(msgspec.Struct, frozen=True):
    """A message reduced to what the hub stores and shows. Message-IDs keep their angle
    brackets (``<id@host>``); addresses are lower-cased addr-specs; ``date`` is UNIX seconds."""

    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str
    from_address: str
    from_name: str
    to: tuple[str, ...]
    reply_to: str | None
    date: float | None
    kind: Kind
    auto_submitted: str | None
    bounce: BounceInfo | None
    text: str
    full_text: str
    html: str | None
    attachments: tuple[EmailAttachment, ...]
    content_digest: str
    defects: tuple[str, ...] = ()


class _Collector:
    """Mutable state of one walk: texts, HTML, attachments, defects, counters."""

    def __init__(self, max_attachment_bytes: int, max_attachments: int) -> None:
        self.max_bytes = max_attachment_bytes
        self.max_count = max_attachments
        self.plain: list[str] = []
        self.html: list[str] = []
        self.forwards: list[str] = []
        self.attachments: list[EmailAttachment] = []
        self.defects: list[str] = []
        self.parts = 0
        self.kept = 0
        self.bounce_fields: list[Message] = []
        self.bounce_original: str | None = None

    def defect(self, text: str) -> None:
        if text not in self.defects and len(self.defects) < 50:
            self.defects.append(text)


def parse_email(raw: bytes, *, max_attachment_bytes: int, max_attachments: int) -> ParsedEmail:
    """Parse one message (sync and CPU-bound: call it through ``asyncio.to_thread``).

    Best effort: broken parts are skipped or guessed and listed in ``defects``;
    ``MalformedEmail`` only when the input holds neither a usable header nor any content."""
    if not raw or not raw.strip():
        raise MalformedEmail("empty message")
    collector = _Collector(max_attachment_bytes, max_attachments)
    raw = _bound_header_section(raw, collector)
    message = _parse_tree(raw, collector)
    headers = _Headers(message, collector)
    if not headers.any_known:
        raise MalformedEmail("none of From, To, Subject, Date, Message-ID, Content-Type or "
                             "MIME-Version: not an email")
    _walk(message, 0, collector)

    from_name, from_address = headers.sender()
    subject = headers.text("subject")
    text_body = "\n\n".join(t for t in collector.plain if t.strip())
    if not text_body.strip() and collector.html:
        text_body = "\n\n".join(html_to_text(h) for h in collector.html)
    forwards = "\n\n".join(collector.forwards)
    full_text = text_body + ("\n\n" + forwards if forwards else "")
    if len(full_text) > MAX_TEXT_CHARS:
        collector.defect(f"text cut at {MAX_TEXT_CHARS} characters")
        full_text = full_text[:MAX_TEXT_CHARS]
    display = strip_quotes(text_body) if text_body.strip() else ""
    if forwards:
        display = (display + "\n\n" + forwards).strip()
    html = "\n".join(collector.html) or None
    if not (full_text.strip() or collector.attachments or subject or from_address):
        raise MalformedEmail("no sender, subject, text or attachment could be read")

    bounce = _bounce(message, headers, from_address, subject, full_text, collector)
    auto = headers.text("auto-submitted") or None
    kind: Kind = "bounce" if bounce else ("auto_reply" if _is_auto_reply(headers, subject)
                                          else "message")
    message_id = headers.first_id("message-id")
    if message_id is None:
        collector.defect("no Message-ID")
    to = tuple(addr.lower() for _, addr in headers.addresses("to") if addr)
    reply_to = next((addr.lower() for _, addr in headers.addresses("reply-to") if addr), None)
    date = headers.date()
    attachments = tuple(collector.attachments)
    digest = _digest(from_address, to, subject, headers.text("date"), full_text, attachments)
    return ParsedEmail(
        message_id=message_id, in_reply_to=headers.first_id("in-reply-to"),
        references=headers.ids("references")[-MAX_IDS:], subject=subject,
        from_address=from_address, from_name=from_name, to=to, reply_to=reply_to, date=date,
        kind=kind, auto_submitted=auto, bounce=bounce, text=display, full_text=full_text,
        html=html, attachments=attachments, content_digest=digest,
        defects=tuple(collector.defects))


def parse_many(raws: Sequence[bytes], *, max_attachment_bytes: int,
               max_attachments: int) -> list[ParsedEmail | str]:
    """``parse_email`` over a batch, in order: each result is the ``ParsedEmail`` or, for a
    message that raised ``MalformedEmail``, its reason (str). Any other exception propagates
    and fails the whole batch, as it would have failed the one message.

    The adapter runs it in its parse process (``channels.email.adapter``): one hand-off per
    fetched batch instead of one per message, and the results cross back pickled."""
    out: list[ParsedEmail | str] = []
    for raw in raws:
        try:
            out.append(parse_email(raw, max_attachment_bytes=max_attachment_bytes,
                                   max_attachments=max_attachments))
        except MalformedEmail as exc:
            out.append(str(exc))
    return out


def _bound_header_section(raw: bytes, collector: _Collector) -> bytes:
    """Cut an over-long header section, keeping the body after it."""
    if len(raw) <= MAX_HEADER_SECTION:
        return raw
    ends = [p for p in (raw.find(b"\n\n"), raw.find(b"\r\n\r\n")) if p >= 0]
    end = min(ends) if ends else -1
    if 0 <= end <= MAX_HEADER_SECTION:
        return raw
    collector.defect(f"header section cut at {MAX_HEADER_SECTION} bytes")
    cut = raw.rfind(b"\n", 0, MAX_HEADER_SECTION)
    cut = cut if cut > 0 else MAX_HEADER_SECTION
    head = raw[:cut].rstrip(b"\r\n") + b"\n"
    return head + (b"\n" + raw[end:].lstrip(b"\r\n") if end >= 0 else b"")


def _parse_tree(raw: bytes, collector: _Collector) -> Message:
    try:
        message: Message = BytesParser(policy=_POLICY).parsebytes(raw)
    except RecursionError:
        collector.defect(f"MIME nesting too deep to parse; headers only (limit {MAX_DEPTH})")
        message = BytesHeaderParser(policy=_POLICY).parsebytes(raw)
        message.set_payload("")
        return message
    except Exception as exc:  # the stdlib parser has had IndexError/AttributeError bugs
        collector.defect(f"MIME structure unreadable ({type(exc).__name__}); headers only")
        message = BytesHeaderParser(policy=_POLICY).parsebytes(raw)
        return message
    for found in getattr(message, "defects", ()):
        collector.defect(type(found).__name__)
    return message


class _Headers:
    """Header values read raw (no policy parsing, which raises on some junk), decoded once."""

    _KNOWN = ("from", "to", "subject", "date", "message-id", "content-type", "mime-version",
              "sender")

    def __init__(self, message: Message, collector: _Collector) -> None:
        self._raw: dict[str, str] = {}
        self._text: dict[str, str] = {}  # decoded once: subject, from, date are asked again
        self._addresses: dict[str, list[tuple[str, str]]] = {}
        self._collector = collector
        try:
            items = list(message.raw_items()) if hasattr(message, "raw_items") else []
        except Exception:
            items = []
            collector.defect("headers unreadable")
        for name, value in items[:1000]:
            key = str(name).strip().lower()
            if key not in self._raw:
                if len(value) >= MAX_HEADER_CHARS:  # _BoundedPolicy cut it
                    collector.defect(f"header {key[:40]} cut at {MAX_HEADER_CHARS} characters")
                self._raw[key] = str(value)[:MAX_HEADER_CHARS]
        self.any_known = any(k in self._raw for k in self._KNOWN)

    def has(self, name: str) -> bool:
        return name in self._raw

    def raw(self, name: str) -> str:
        return self._raw.get(name, "")

    def text(self, name: str) -> str:
        """The decoded value: RFC 2047 words decoded, 8-bit bytes read as UTF-8 (else
        Windows-1252), unfolded, control characters removed."""
        found = self._text.get(name)
        if found is not None:
            return found
        value = self._raw.get(name)
        decoded = "" if value is None else decode_header_value(value)
        self._text[name] = decoded
        return decoded

    def addresses(self, name: str) -> list[tuple[str, str]]:
        found = self._addresses.get(name)
        if found is None:
            found = self._addresses[name] = self._parse_addresses(name)
        return list(found)

    def _parse_addresses(self, name: str) -> list[tuple[str, str]]:
        value = self.text(name)
        if not value:
            return []
        simple = simple_address(value)
        if simple is not None:
            return [simple]
        try:
            pairs = getaddresses([value])
        except Exception:
            self._collector.defect(f"unreadable {name} address")
            return []
        return [(n.strip(), a.strip()) for n, a in pairs if "@" in a]

    def sender(self) -> tuple[str, str]:
        for name in ("from", "sender", "return-path"):
            pairs = self.addresses(name)
            if pairs:
                display, address = pairs[0]
                return display, address.lower()
        value = self.text("from")
        if value:
            display, address = parseaddr(value)
            return display, address.lower()
        return "", ""

    def ids(self, name: str) -> tuple[str, ...]:
        value = _unfold(_to_text(self._raw.get(name, "")))
        return tuple(f"<{m}>" for m in _MSG_ID.findall(value))

    def first_id(self, name: str) -> str | None:
        found = self.ids(name)
        if found:
            return found[0]
        bare = _unfold(_to_text(self._raw.get(name, ""))).strip()
        if bare and " " not in bare and "@" in bare and len(bare) <= 250:
            return f"<{bare.strip('<>')}>"  # some mailers forget the brackets
        return None

    def date(self) -> float | None:
        value = self.text("date")
        if not value:
            return None
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            self._collector.defect("unreadable Date")
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        try:
            return parsed.timestamp()
        except (OverflowError, OSError, ValueError):
            return None


def _to_text(value: str) -> str:
    """A raw header value with 8-bit bytes (carried as surrogates by the parser) decoded."""
    if not _SURROGATE.search(value):
        return value
    data = value.encode("ascii", "surrogateescape")
    return decode_bytes(data, None)[0]


def _unfold(value: str) -> str:
    return _WS.sub(" ", value.replace("\r", " ").replace("\n", " ")).strip()


def decode_header_value(value: str) -> str:
    """An RFC 2047 header value as text, whatever charsets its words declare."""
    value = _to_text(value)
    try:
        chunks = decode_header(value)
    except Exception:
        return _CONTROL.sub("", _unfold(value))
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes) and charset is None:
            # decode_header hands the unencoded runs back as raw-unicode-escape bytes
            out.append(chunk.decode("raw-unicode-escape", "replace"))
        elif isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset)[0])
        else:
            out.append(chunk)
    # decode_header leaves plain runs unfolded and drops the space between encoded words.
    joined = "".join(out) if any(c for _, c in chunks) else value
    return _CONTROL.sub("", _unfold(joined))


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    name = _CHARSET_SUPERSETS.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    text_codec = getattr(info, "_is_text_encoding", True)
    if info.name.replace("-", "_") in _NOT_TEXT_CODECS or not text_codec:
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Text of ``data`` and a defect, if it had to be guessed.

    Valid UTF-8 wins over a declared Western single-byte charset (the common mislabel);
    otherwise the declared charset, then UTF-8, then UTF-8 with replacement when only a few
    bytes are bad, else Windows-1252 / Latin-1 (which decodes anything)."""
    codec = _codec(charset)
    if codec is None or codec in _WESTERN:
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            pass
    if codec is not None:
        try:
            return data.decode(codec), None
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("utf-8"), f"charset {charset!r} wrong; read as UTF-8"
    except UnicodeDecodeError:
        pass
    if codec == "utf-8":  # "UTF-8" on Windows-1252 text: the other common mislabel
        return _western(data), f"charset {charset!r} wrong; read as Windows-1252"
    if codec is not None:
        return data.decode(codec, "replace"), f"bytes invalid in {charset!r} replaced"
    guessed = data.decode("utf-8", "replace")
    if guessed.count("\ufffd") * 100 <= len(data):
        return guessed, f"unknown charset {charset!r}; read as UTF-8"
    return _western(data), f"unknown charset {charset!r}; read as Windows-1252"


def _western(data: bytes) -> str:
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # five bytes cp1252 leaves undefined
        return data.decode("latin-1")


def simple_address(value: str) -> tuple[str, str] | None:
    """``(display name, address)`` of a value in one of the common forms, else None (then
    getaddresses reads it)."""
    found = _SIMPLE_ADDRESS.fullmatch(value.strip())
    if found is None:
        return None
    if found.group(3) is not None:
        return "", found.group(3)
    return found.group(1) or "", found.group(2)


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _param(part: Message, name: str) -> str | None:
    try:
        value = part.get_param(name)
    except Exception:
        return None
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
        value = value[2]
    return str(value) if value is not None else None


def _payload(part: Message, collector: _Collector) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        collector.defect("undecodable part payload")
        return b""
    return data if isinstance(data, bytes) else b""


def _walk(part: Message, depth: int, collector: _Collector) -> None:
    collector.parts += 1
    if collector.parts > MAX_PARTS:
        collector.defect(f"more than {MAX_PARTS} MIME parts; the rest skipped")
        return
    if depth > MAX_DEPTH:
        collector.defect(f"MIME nesting deeper than {MAX_DEPTH}; inner parts skipped")
        return
    ctype = _content_type(part)
    if ctype == "message/delivery-status":
        _delivery_status(part, collector)
        return
    if ctype == "message/rfc822" or (ctype.startswith("message/") and _is_wrapped(part)):
        _forwarded(part, depth, collector)  # before is_multipart(), which says True for these
        return
    if part.is_multipart():
        children = part.get_payload()
        if not isinstance(children, list):
            collector.defect("multipart without readable parts")
            return
        if ctype == "multipart/alternative":
            _walk_alternative(children, depth, collector)
            return
        for child in children:
            if isinstance(child, Message):
                _walk(child, depth + 1, collector)
        return
    if ctype in ("text/rfc822-headers", "message/rfc822-headers"):
        headers = BytesHeaderParser(policy=_POLICY).parsebytes(_payload(part, collector))
        found = _MSG_ID.search(str(headers.get("message-id", "")))
        collector.bounce_original = collector.bounce_original or (
            f"<{found.group(1)}>" if found else None)
        return
    disposition = _disposition(part)
    params = _Params(part)
    filename = params.filename()
    if ctype in ("text/plain", "text/html") and disposition != "attachment" and not (
            filename and disposition == "inline"):
        data = _payload(part, collector)
        text, defect = decode_bytes(data, params.get("charset"))
        if defect:
            collector.defect(defect)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        (collector.plain if ctype == "text/plain" else collector.html).append(text)
        return
    _attachment(part, ctype, filename, disposition, collector)


def _is_wrapped(part: Message) -> bool:
    payload = part.get_payload()
    return isinstance(payload, list) and bool(payload) and isinstance(payload[0], Message)


def _walk_alternative(children: Sequence[object], depth: int, collector: _Collector) -> None:
    """Walk every alternative into its own collector; keep the plain text of the first one
    that has text/plain (else the HTML becomes the text), every HTML, and the
    attachments of all (inline images sit in the HTML's multipart/related)."""
    branches: list[_Collector] = []
    for child in children:
        if not isinstance(child, Message):
            continue
        branch = _Collector(collector.max_bytes, collector.max_count - collector.kept)
        branch.parts = collector.parts
        _walk(child, depth + 1, branch)
        collector.parts = branch.parts
        collector.kept += branch.kept
        branches.append(branch)
    with_plain = [b for b in branches if any(t.strip() for t in b.plain)]
    for branch in branches:
        if branch is (with_plain[0] if with_plain else None) or not with_plain:
            collector.plain.extend(branch.plain)
        collector.html.extend(branch.html)
        collector.forwards.extend(branch.forwards)
        collector.attachments.extend(branch.attachments)
        collector.bounce_fields.extend(branch.bounce_fields)
        collector.bounce_original = collector.bounce_original or branch.bounce_original
        for defect in branch.defects:
            collector.defect(defect)


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _filename(part: Message) -> str | None:
    return _Params(part).filename()


_MISSING: Final = object()


class _Params:
    """A leaf part's Content-Type and Content-Disposition parameters, each header parsed
    once: ``Message.get_param`` parses the whole header again on every call, and the charset
    and ``get_filename``'s two look-ups made that five parses a part (a sixth of
    ``parse_email``'s time). The answers are ``get_param``'s and ``get_filename``'s: the first
    parameter of a name, case-insensitive, unquoted; a header that does not parse answers
    nothing, as the ``get_param`` that raised did."""

    def __init__(self, part: Message) -> None:
        self._type = self._read(part, "content-type")
        self._disposition = self._read(part, "content-disposition")

    @staticmethod
    def _read(part: Message, header: str) -> dict[str, object] | BaseException | None:
        """The parameters by lower-cased name; None without the header; the exception
        when parsing it raised (``get_param`` would have)."""
        if header not in part:
            return None
        try:
            found = part.get_params(None, header)
        except Exception as exc:
            return exc
        params: dict[str, object] = {}
        for key, value in found or ():
            params.setdefault(str(key).lower(), value)
        return params

    def get(self, name: str) -> str | None:
        """``_param(part, name)`` of the Content-Type header, from the parse made once."""
        params = self._type
        if not isinstance(params, dict):
            return None
        value = params.get(name)
        if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
            value = value[2]
        return str(value) if value is not None else None

    def filename(self) -> str | None:
        """``get_filename()`` (``filename`` of Content-Disposition, else ``name`` of
        Content-Type, RFC 2231 collapsed), else the raw ``name``; RFC 2047 decoded."""
        try:
            name = self._get_filename()
        except Exception:
            name = self.get("name")
        if not name:
            name = self.get("name")
        return decode_header_value(str(name)) if name else None

    def _get_filename(self) -> str | None:
        found: object = _MISSING
        for params, key in ((self._disposition, "filename"), (self._type, "name")):
            if isinstance(params, BaseException):
                raise params
            if params is not None:
                found = params.get(key, _MISSING)
            if found is not _MISSING:
                break
        if found is _MISSING:
            return None
        return str(collapse_rfc2231_value(found).strip())  # type: ignore[arg-type]


def _attachment(part: Message, ctype: str, filename: str | None, disposition: str | None,
                collector: _Collector) -> None:
    data = _payload(part, collector)
    name = safe_name(filename) if filename else _default_name(ctype)
    cid_raw = str(part.get("content-id", "") or "")
    cid = cid_raw.strip().strip("<>")[:250] or None
    inline = disposition == "inline" or (cid is not None and disposition != "attachment")
    sniffed = sniff(data) if data else OCTET_STREAM
    _attach_bytes(collector, name, ctype, data, content_type=sniffed, content_id=cid,
                  inline=inline)


def _default_name(ctype: str) -> str:
    extension = mimetypes.guess_extension(ctype) or ".bin"
    return "attachment" + extension


def _forwarded(part: Message, depth: int, collector: _Collector) -> None:
    """A forwarded message: kept whole as an ``.eml`` attachment, its sender, subject and text
    summarised into the text."""
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    if not isinstance(inner, Message):
        _attachment(part, "message/rfc822", "forwarded.eml", "attachment", collector)
        return
    try:
        data = inner.as_bytes(policy=policy.compat32)
    except Exception:
        data = b""
        collector.defect("forwarded message could not be re-serialised")
    sub = _Collector(collector.max_bytes, collector.max_count - collector.kept)
    sub.parts = collector.parts
    _walk(inner, depth + 1, sub)
    collector.parts = sub.parts
    collector.kept += sub.kept
    collector.attachments.extend(sub.attachments)
    for defect in sub.defects:
        collector.defect(defect)
    headers = _Headers(inner, collector)
    subject = headers.text("subject")
    text = "\n\n".join(t for t in sub.plain if t.strip())
    if not text.strip() and sub.html:
        text = "\n\n".join(html_to_text(h) for h in sub.html)
    summary = ["---------- Forwarded message ----------"]
    for label, key in (("From", "from"), ("Date", "date"), ("Subject", "subject")):
        value = headers.text(key)
        if value:
            summary.append(f"{label}: {value[:300]}")
    body = text.strip()
    if len(body) > FORWARD_SUMMARY_CHARS:
        body = body[:FORWARD_SUMMARY_CHARS] + " …"
    collector.forwards.append("\n".join(summary) + ("\n\n" + body if body else ""))
    collector.forwards.extend(sub.forwards)
    if sub.bounce_original is None and headers.first_id("message-id"):
        collector.bounce_original = collector.bounce_original or headers.first_id("message-id")
    name = safe_name((subject or "forwarded")[:150] + ".eml")
    _attach_bytes(collector, name, "message/rfc822", data)


def _attach_bytes(collector: _Collector, name: str, ctype: str, data: bytes, *,
                  content_type: str | None = None, content_id: str | None = None,
                  inline: bool = False) -> None:
    """Keep the attachment, or a placeholder saying why not (empty, too big, too many)."""
    refused = None
    if not data:
        refused = "empty attachment"
    elif len(data) > collector.max_bytes:
        refused = (f"{len(data)} bytes, over the limit of {collector.max_bytes} bytes "
                   "per attachment")
    elif collector.kept >= collector.max_count:
        refused = f"over the limit of {collector.max_count} attachments per message"
    if refused:
        collector.attachments.append(EmailAttachment(
            name=name, content_type=content_type or ctype, declared_type=ctype, size=len(data),
            content_id=content_id, inline=inline, refused=refused))
        return
    collector.kept += 1
    collector.attachments.append(EmailAttachment(
        name=name, content_type=content_type or ctype, declared_type=ctype, size=len(data),
        data=data, content_id=content_id, inline=inline,
        sha256=hashlib.sha256(data).hexdigest()))


def _delivery_status(part: Message, collector: _Collector) -> None:
    """RFC 3464 fields: a per-message group, then one group per recipient."""
    payload = part.get_payload()
    groups: list[Message] = []
    if isinstance(payload, list):
        groups = [g for g in payload if isinstance(g, Message)]
    else:
        text = _payload(part, collector).decode("utf-8", "replace")
        for block in re.split(r"\r?\n[ \t]*\r?\n", text)[:100]:
            groups.append(BytesHeaderParser(policy=_POLICY).parsebytes(
                block.strip().encode("utf-8", "replace")))
    collector.bounce_fields.extend(groups)


_BOUNCE_SUBJECTS = (
    "undelivered mail returned to sender", "delivery status notification (failure)",
    "delivery status notification (delay)", "mail delivery failed", "undeliverable:",
    "undeliverable mail", "failure notice", "returned mail:", "delivery failure",
    "mail delivery failure", "message not delivered", "delivery has failed",
    "no se puede entregar", "no se pudo entregar", "error de entrega", "mensaje no entregado",
    "não é possível entregar", "não entregue", "falha na entrega", "mensagem não entregue",
    "无法投递", "退信", "系统退信", "non remis", "unzustellbar",
)
_BOUNCE_SENDERS = ("mailer-daemon@", "postmaster@", "mail-daemon@", "mailerdaemon@")


def _bounce(message: Message, headers: _Headers, from_address: str, subject: str,
            full_text: str, collector: _Collector) -> BounceInfo | None:
    is_report = (_content_type(message) == "multipart/report"
                 and (_param(message, "report-type") or "").lower() == "delivery-status")
    lowered = subject.lower()
    # A subject alone is not enough ("Delivery failure, order 123" from a buyer): it must come
    # with a null sender or an Auto-Submitted header, as every MTA's bounce does.
    machine = headers.raw("return-path").strip() == "<>" or headers.has("auto-submitted")
    non_standard = (from_address.startswith(_BOUNCE_SENDERS) or headers.has("x-failed-recipients")
                    or (machine and any(s in lowered[:80] for s in _BOUNCE_SUBJECTS)))
    if not (is_report or collector.bounce_fields or non_standard):
        return None
    status = diagnostic = recipient = action = None
    for group in collector.bounce_fields:
        group_action = str(group.get("action", "") or "").strip().lower() or None
        if group.get("final-recipient") is None and group.get("original-recipient") is None:
            continue
        if action is not None and group_action != "failed":
            continue
        action = group_action
        status = _first_match(_STATUS, str(group.get("status", "") or "")) or status
        diagnostic = _unfold(str(group.get("diagnostic-code", "") or ""))[:1000] or diagnostic
        final = str(group.get("final-recipient", "") or group.get("original-recipient", ""))
        recipient = final.split(";", 1)[-1].strip().lower()[:320] or None
        if group_action == "failed":
            break
    if action in ("delayed", "delivered", "relayed", "expanded"):
        return None  # a delay warning or a success report is not a failure
    original = collector.bounce_original
    if original is None:
        found = _BODY_MSG_ID.search(full_text[:200_000])
        original = found.group(1) if found else None
    if status is None:
        status = _first_match(_STATUS, full_text[:20_000])
    if diagnostic is None:
        diagnostic = _diagnostic_line(full_text)
    if status is None and diagnostic is not None:
        code = _first_match(_SMTP_CODE, diagnostic)
        status = code
    if recipient is None:
        failed = headers.text("x-failed-recipients")
        recipient = failed.split(",")[0].strip().lower() or None
    return BounceInfo(original_message_id=original, status=status, diagnostic=diagnostic,
                      recipient=recipient, action=action or "failed")


def _first_match(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.search(text)
    return found.group(1) if found else None


def _diagnostic_line(text: str) -> str | None:
    """The first line of a non-standard bounce that looks like the server's reason."""
    lines = [line.strip() for line in text[:20_000].splitlines() if line.strip()]
    for line in lines:
        if _STATUS.search(line) or _SMTP_CODE.match(line):
            return line[:1000]
    return lines[0][:1000] if lines else None


_AUTO_SUBJECTS = (
    "out of office", "out of the office", "automatic reply", "auto reply", "auto-reply",
    "autoreply", "auto response", "autoresponse", "away from the office", "on vacation",
    "vacation reply", "respuesta automática", "respuesta automatica", "fuera de la oficina",
    "fuera de oficina", "ausente:", "de vacaciones", "resposta automática",
    "resposta automatica", "fora do escritório", "fora do escritorio", "ausência temporária",
    "em férias", "de férias", "自动回复", "自動回覆",
)
_AUTO_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk"})


def _is_auto_reply(headers: _Headers, subject: str) -> bool:
    """RFC 3834 ``Auto-Submitted`` other than ``no``, the de-facto headers (X-Autoreply,
    X-Autorespond, Precedence, Exchange's X-Auto-Response-Suppress), or a vacation subject."""
    auto = headers.text("auto-submitted").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if any(headers.has(h) for h in ("x-autoreply", "x-autorespond", "x-autoresponder")):
        return True
    if headers.text("precedence").strip().lower() in _AUTO_PRECEDENCE:
        return True
    suppress = headers.text("x-auto-response-suppress").lower()
    if any(token in suppress for token in ("all", "oof", "autoreply")):
        return True
    lowered = subject.strip().lower()
    return lowered.startswith(_AUTO_SUBJECTS)


def _digest(from_address: str, to: tuple[str, ...], subject: str, date: str, text: str,
            attachments: tuple[EmailAttachment, ...]) -> str:
    """sha256 of what makes two copies the same message when Message-ID is missing or
    reused: sender, recipients, subject, Date header, whitespace-normalised text, attachments."""
    digest = hashlib.sha256()
    for value in (from_address, ",".join(sorted(to)), _unfold(subject), _unfold(date),
                  _unfold(text)):
        digest.update(value.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    for attachment in attachments:
        digest.update(f"{attachment.name}|{attachment.size}|{attachment.sha256}".encode(
            "utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()

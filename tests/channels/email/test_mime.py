"""parse_email: every shape of mail buyers, clients and MTAs send, and hostile input, parsed
or refused with a reason — never an uncaught exception."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest

from channels.email.mime import MAX_DEPTH, MalformedEmail, ParsedEmail, parse_email

FIXTURES = Path(__file__).parent / "fixtures"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


def parse(raw: bytes, *, max_bytes: int = 1_000_000, max_count: int = 10) -> ParsedEmail:
    return parse_email(raw, max_attachment_bytes=max_bytes, max_attachments=max_count)


def message(body: str, *, headers: str = "", ctype: str = "text/plain; charset=utf-8") -> bytes:
    head = ("From: Buyer <buyer@example.org>\r\nTo: shop@example.com\r\nSubject: order\r\n"
            "Date: Mon, 08 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n{headers}\r\n")
    return head.encode() + body.encode("utf-8", "surrogateescape")


def multipart(*parts: str, subtype: str = "mixed", headers: str = "") -> bytes:
    body = "".join(f"--XB\r\n{part}\r\n" for part in parts) + "--XB--\r\n"
    return message(body, headers=headers, ctype=f'multipart/{subtype}; boundary="XB"')


def b64_part(data: bytes, ctype: str, extra: str = "") -> str:
    encoded = base64.encodebytes(data).decode()
    return (f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n{extra}\r\n"
            f"{encoded}")


def test_a_gmail_reply_is_decoded_threaded_and_stripped() -> None:
    parsed = parse((FIXTURES / "gmail_reply_es.eml").read_bytes())
    assert parsed.from_address == "jose.perez@example.es"
    assert parsed.from_name == "José Pérez"
    assert parsed.subject == "Re: ¿Dónde está mi pedido?"
    assert parsed.to == ("shop@example.com", "other@example.com")
    assert parsed.reply_to == "jose@example.es"
    assert parsed.message_id == "<CAB+123@mail.gmail.com>"
    assert parsed.in_reply_to == "<ih.r41.xyz@example.com>"
    assert parsed.references == ("<first@example.com>", "<ih.r41.xyz@example.com>")
    assert parsed.date == datetime.datetime(2024, 1, 8, 9, 0, tzinfo=datetime.UTC).timestamp()
    assert parsed.kind == "message"
    assert parsed.text == "Hola, ¿cuándo llega mi pedido?"
    assert "Gracias por su compra." in parsed.full_text
    assert parsed.html is not None and "gmail_quote" in parsed.html
    assert parsed.attachments == ()


def test_html_only_mail_becomes_text_without_markup() -> None:
    html = ("<html><head><style>p{color:red}</style><script>alert(1)</script></head><body>"
            "<p>Where is <b>my</b> order&nbsp;&amp; invoice?</p><img src=x onerror=alert(1)>"
            "<blockquote>On Mon, Shop wrote:<br>old</blockquote></body></html>")
    parsed = parse(message(html, ctype="text/html; charset=utf-8"))
    assert parsed.text == "Where is my order & invoice?"
    assert "<" not in parsed.full_text and "alert" not in parsed.full_text
    assert parsed.html == html


@pytest.mark.parametrize(("declared", "data", "expected"), [
    ("iso-8859-1", "pedido número 5".encode(), "pedido número 5"),  # UTF-8 labelled Latin-1
    ("utf-8", "pedido número 5".encode("latin-1"), "pedido número 5"),  # the other way round
    ("x-unknown-charset", "pedido número 5".encode(), "pedido número 5"),
    ("gb2312", "我的订单在哪里".encode("gb18030"), "我的订单在哪里"),
    ("windows-1252", "“quoted” €5".encode("cp1252"), "“quoted” €5"),
    ("unicode_escape", b"caf\\xe9", "caf\\xe9"),  # not a text charset: never interpreted
])
def test_charsets_declared_wrongly_or_unknown_still_decode(declared: str, data: bytes,
                                                           expected: str) -> None:
    raw = message("", ctype=f"text/plain; charset={declared}") + data
    assert parse(raw).full_text == expected


def test_rfc2047_with_unknown_charset_and_8bit_headers() -> None:
    raw = ("From: =?x-bogus?Q?Jos=C3=A9?= <a@example.org>\r\nTo: s@example.com\r\n"
           "Subject: Pedido n\u00famero 5\r\nMessage-ID: <x@y>\r\n\r\nhola\r\n").encode("utf-8")
    parsed = parse(raw)
    assert parsed.from_name == "José"
    assert parsed.subject == "Pedido número 5"
    latin = b"From: a@example.org\r\nSubject: Pedido n\xfamero 5\r\n\r\nhola\r\n"
    assert parse(latin).subject == "Pedido número 5"


def test_attachments_are_named_safely_sniffed_and_sized() -> None:
    raw = multipart(
        "Content-Type: text/plain\r\n\r\nsee attached",
        b64_part(PNG, "application/octet-stream",
                 "Content-Disposition: attachment;\r\n"
                 " filename*=utf-8''..%2F..%2Fetc%2Fpa%E2%80%AEsswd.png\r\n"),
        b64_part(PNG, "image/png", "Content-ID: <img1@example.org>\r\n"
                                   "Content-Disposition: inline\r\n"),
    )
    parsed = parse(raw)
    first, inline = parsed.attachments
    assert first.name == "passwd.png"  # no path, no right-to-left override
    assert (first.content_type, first.declared_type, first.size) == (
        "image/png", "application/octet-stream", len(PNG))
    assert first.data == PNG and first.refused is None and first.sha256
    assert inline.inline and inline.content_id == "img1@example.org"
    assert inline.name == "attachment.png"


def test_over_limit_empty_and_over_count_attachments_are_placeholders_with_reasons() -> None:
    def attached(name: str) -> str:
        return f"Content-Disposition: attachment; filename={name}\r\n"

    raw = multipart(
        "Content-Type: text/plain\r\n\r\nthree files",
        b64_part(b"x" * 2000, "application/pdf", attached("big.pdf")),
        b64_part(b"", "application/pdf", attached("zero.pdf")),
        b64_part(PNG, "image/png", attached("a.png")),
        b64_part(PNG, "image/png", attached("b.png")),
    )
    big, zero, kept, extra = parse(raw, max_bytes=1000, max_count=1).attachments
    assert big.data is None and big.size == 2000
    assert "over the limit of 1000 bytes" in (big.refused or "")
    assert zero.data is None and zero.refused == "empty attachment"
    assert kept.data == PNG and kept.refused is None
    assert extra.data is None and "over the limit of 1 attachments" in (extra.refused or "")


def test_a_forwarded_message_is_kept_and_summarised() -> None:
    inner = ("From: Carrier <noreply@carrier.example>\r\nSubject: Your parcel\r\n"
             "Date: Sun, 07 Jan 2024 08:00:00 +0000\r\nMessage-ID: <inner@carrier.example>\r\n"
             "Content-Type: text/plain\r\n\r\nParcel 123 is delayed.\r\n")
    raw = multipart("Content-Type: text/plain\r\n\r\nLook at this:",
                    "Content-Type: message/rfc822\r\n\r\n" + inner)
    parsed = parse(raw)
    assert parsed.text.startswith("Look at this:")
    assert "From: Carrier <noreply@carrier.example>" in parsed.text
    assert "Parcel 123 is delayed." in parsed.text and "Parcel 123" in parsed.full_text
    (eml,) = parsed.attachments
    assert eml.name == "Your parcel.eml" and eml.content_type == "message/rfc822"
    assert eml.data is not None and b"Parcel 123 is delayed." in eml.data
    assert parsed.kind == "message"


def test_a_dsn_is_a_bounce_naming_our_message() -> None:
    parsed = parse((FIXTURES / "dsn_failed.eml").read_bytes())
    assert parsed.kind == "bounce"
    assert parsed.bounce is not None
    assert parsed.bounce.original_message_id == "<ih.r42.abc123@example.com>"
    assert parsed.bounce.status == "5.1.1"
    assert parsed.bounce.recipient == "buyer@example.org"
    assert parsed.bounce.diagnostic is not None and "User unknown" in parsed.bounce.diagnostic


def test_a_delay_report_is_not_a_failure() -> None:
    raw = (FIXTURES / "dsn_failed.eml").read_bytes().replace(b"Action: failed", b"Action: delayed")
    raw = raw.replace(b"Undelivered Mail Returned to Sender", b"Delayed Mail")
    parsed = parse(raw)
    assert parsed.bounce is None and parsed.kind == "auto_reply"


def test_a_non_standard_bounce_is_recognised_from_its_text() -> None:
    raw = (b"From: MAILER-DAEMON@mail.example.net\r\nTo: shop@example.com\r\n"
           b"Subject: failure notice\r\n\r\nHi. This is the qmail-send program.\r\n"
           b"<buyer@example.org>:\r\n550 5.7.1 Message rejected as spam\r\n\r\n"
           b"--- Below this line is a copy of the message.\r\n\r\n"
           b"Message-ID: <ih.r7.zz@example.com>\r\nSubject: Re: order\r\n")
    parsed = parse(raw)
    assert parsed.kind == "bounce" and parsed.bounce is not None
    assert parsed.bounce.original_message_id == "<ih.r7.zz@example.com>"
    assert parsed.bounce.status == "5.7.1"
    assert parsed.bounce.diagnostic == "550 5.7.1 Message rejected as spam"


def test_a_buyer_writing_about_a_delivery_failure_is_a_message() -> None:
    parsed = parse(message("My parcel never came", headers="Subject: Delivery failure\r\n"))
    assert parsed.kind == "message" and parsed.bounce is None


@pytest.mark.parametrize("header", [
    "Auto-Submitted: auto-replied", "X-Autoreply: yes", "X-Autorespond: on",
    "Precedence: auto_reply", "Precedence: bulk", "Precedence: junk",
    "X-Auto-Response-Suppress: All",
])
def test_auto_reply_headers(header: str) -> None:
    parsed = parse(message("I am away", headers=header + "\r\n"))
    assert parsed.kind == "auto_reply"


@pytest.mark.parametrize("subject", [
    "Out of Office: order", "Automatic reply: order", "Respuesta automática: pedido",
    "Fuera de la oficina", "Resposta automática: pedido", "Fora do escritório",
])
def test_vacation_subjects(subject: str) -> None:
    raw = message("away").replace(b"Subject: order", f"Subject: {subject}".encode())
    assert parse(raw).kind == "auto_reply"


def test_auto_submitted_no_is_a_message() -> None:
    assert parse(message("hi", headers="Auto-Submitted: no\r\n")).kind == "message"


def test_content_digest_identifies_copies_without_message_id() -> None:
    one = parse(message("hello  there").replace(b"Message-ID: <m1@example.org>\r\n", b""))
    two = parse(message("hello there\r\n").replace(b"Message-ID: <m1@example.org>\r\n", b""))
    other = parse(message("hello again").replace(b"Message-ID: <m1@example.org>\r\n", b""))
    assert one.message_id is None and "no Message-ID" in one.defects
    assert one.content_digest == two.content_digest != other.content_digest


# Hostile input: each must parse with defects or raise MalformedEmail — nothing else.

def test_broken_boundary_is_best_effort() -> None:
    raw = message("--WRONG\r\nContent-Type: text/plain\r\n\r\nstill here\r\n",
                  ctype='multipart/mixed; boundary="XB"')
    parsed = parse(raw)
    assert parsed.defects and parsed.subject == "order"


def test_a_thousand_nested_multiparts_are_bounded() -> None:
    depth = 1000
    opening = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'
                      for i in range(depth))
    closing = "".join(f"\r\n--b{i}--" for i in reversed(range(depth)))
    raw = message("--top\r\n" + opening + "Content-Type: text/plain\r\n\r\ndeep" + closing
                  + "\r\n--top--", ctype='multipart/mixed; boundary="top"')
    parsed = parse(raw)
    assert any("nesting" in d or "deep" in d for d in parsed.defects), parsed.defects
    assert parsed.subject == "order"


def test_nesting_beyond_the_limit_is_skipped_not_followed() -> None:
    depth = MAX_DEPTH + 5
    opening = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'
                      for i in range(1, depth))
    closing = "".join(f"\r\n--b{i}--" for i in reversed(range(1, depth)))
    raw = message("--b0\r\n" + opening + "Content-Type: text/plain\r\n\r\ndeep" + closing
                  + "\r\n--b0--", ctype='multipart/mixed; boundary="b0"')
    parsed = parse(raw)
    assert "deep" not in parsed.full_text
    assert any(f"deeper than {MAX_DEPTH}" in d for d in parsed.defects)


def test_a_ten_megabyte_single_line_body() -> None:
    parsed = parse(message("a" * 10_000_000))
    assert parsed.full_text.startswith("aaa") and any("cut" in d for d in parsed.defects)


def test_huge_headers_are_cut() -> None:
    raw = message("body", headers="X-Junk: " + "x" * 400_000 + "\r\n"
                  + "References: " + " ".join(f"<r{i}@x>" for i in range(5000)) + "\r\n")
    parsed = parse(raw)
    assert parsed.full_text == "body"
    assert len(parsed.references) <= 50
    assert any("cut" in d for d in parsed.defects)


def test_nested_forwards_and_a_huge_attachment() -> None:
    inner = message("innermost")
    for _ in range(30):
        inner = multipart("Content-Type: text/plain\r\n\r\nfwd",
                          "Content-Type: message/rfc822\r\n\r\n" + inner.decode())
    parsed = parse(inner)
    assert parsed.full_text.startswith("fwd")
    huge = multipart("Content-Type: text/plain\r\n\r\nbig",
                     b64_part(b"\x00" * 3_000_000, "application/zip",
                              "Content-Disposition: attachment; filename=a.zip\r\n"))
    (attachment,) = parse(huge, max_bytes=1_000_000).attachments
    assert attachment.data is None and attachment.size == 3_000_000


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty"),
    (b"   \r\n\r\n", "empty"),
    (b"\x00\x01\x02 binary junk \xff\xfe" * 100, "not an email"),
    (b"X-Only: header\r\n\r\n", "not an email"),
])
def test_nothing_usable_is_malformed_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedEmail) as caught:
        parse(raw)
    assert reason in caught.value.reason


def test_text_has_unix_line_endings() -> None:
    assert parse(message("one\r\ntwo\rthree\r\n")).full_text == "one\ntwo\nthree\n"


@pytest.mark.parametrize(("name", "value"), [
    # policy.default's header parser raised RecursionError on this one ...
    ("Content-Type", b"text/plain; " + b"(" * 20_000),
    # ... and took seconds to minutes on these, on every access
    ("Content-Type", b"text/plain" + b"; a=b" * 20_000),
    ("Content-Type", b"text/plain; a=" + b'"x' * 20_000),
    ("Content-Disposition", b"attachment" + b"; filename*0*=a" * 5_000),
    ("From", b"(" * 20_000 + b"a@example.org"),
    ("To", b"a@example.org, " * 5_000),
])
def test_hostile_structured_headers(name: str, value: bytes) -> None:
    raw = (b"From: a@example.org\r\nSubject: s\r\n" + name.encode() + b": " + value
           + b"\r\n\r\nbody\r\n")
    assert parse(raw).subject == "s"

"""Outbound replies: thread headers, Re: subjects, RFC 2047, attachments — and nothing an agent
or a buyer typed can become a header."""

from __future__ import annotations

import email
import email.policy
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import msgspec
import pytest

from channels.email.compose import compose_reply, message_bytes, reply_subject
from channels.email.mime import parse_email
from channels.email.threading import new_message_id, reply_headers

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
EXPECTED_HEADERS = {"from", "to", "reply-to", "subject", "date", "message-id", "in-reply-to",
                    "references", "mime-version", "content-type", "content-transfer-encoding"}


class File(msgspec.Struct, frozen=True):
    name: str
    content_type: str
    data: bytes


class Parent(msgspec.Struct, frozen=True):
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]


def header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    names = []
    for line in head.split("\r\n"):
        assert len(line) <= 998
        if not line[:1].isspace():
            names.append(line.split(":", 1)[0].lower())
    return names


def test_a_reply_threads_and_round_trips() -> None:
    parent = Parent("<buyer2@mail.example>", "<ih.r1.00aa11bb22cc33dd@shop.example.com>",
                    ("<ih.r1.00aa11bb22cc33dd@shop.example.com>",))
    in_reply_to, references = reply_headers(parent)
    ours = new_message_id("r2", "shop.example.com")
    message = compose_reply(
        from_address="shop@example.com", from_name="Tienda Ñandú", to="buyer@example.org",
        to_name="José Pérez", reply_to="support@example.com", subject="¿Dónde está mi pedido?",
        message_id=ours, in_reply_to=in_reply_to, references=references,
        text="Hola José,\nsale hoy.\n", html_part="<p>Hola José, sale hoy.</p>",
        attachments=[File("factura ñ.png", "image/png", PNG)], date=1_704_700_800.0)
    raw = message_bytes(message)
    assert raw.isascii() and b"\r\n" in raw
    assert set(header_names(raw)) <= EXPECTED_HEADERS
    parsed = parse_email(raw, max_attachment_bytes=10_000, max_attachments=5)
    assert parsed.subject == "Re: ¿Dónde está mi pedido?"
    assert parsed.from_name == "Tienda Ñandú" and parsed.from_address == "shop@example.com"
    assert parsed.to == ("buyer@example.org",) and parsed.reply_to == "support@example.com"
    assert parsed.message_id == ours
    assert parsed.in_reply_to == "<buyer2@mail.example>"
    assert parsed.references == ("<ih.r1.00aa11bb22cc33dd@shop.example.com>",
                                 "<buyer2@mail.example>")
    assert parsed.date == 1_704_700_800.0
    assert parsed.text == "Hola José,\nsale hoy."
    assert parsed.html is not None and "<p>" in parsed.html
    (attachment,) = parsed.attachments
    assert (attachment.name, attachment.content_type, attachment.data) == (
        "factura ñ.png", "image/png", PNG)


@pytest.mark.parametrize(("subject", "expected"), [
    ("Order 5", "Re: Order 5"), ("Re: Order 5", "Re: Order 5"), ("RE: Order 5", "RE: Order 5"),
    ("AW: Bestellung", "AW: Bestellung"), ("回复：订单", "回复：订单"), ("", "Re:"),
    ("Fwd: Order 5", "Re: Fwd: Order 5"), ("[Important] Order", "Re: [Important] Order"),
])
def test_re_is_not_doubled(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


HOSTILE = [
    "Order\r\nBcc: victim@example.net",
    "Order\nBcc: victim@example.net",
    "Order\rBcc: victim@example.net",
    "Order\r\n\r\n<html>body injected</html>",
    "Order\x00\x0b\x0c\u0085Bcc: victim@example.net",
    "Order\u2028Bcc: victim@example.net\u2029",
    "=?utf-8?q?Order=0D=0ABcc:_victim@example.net?=",
    "x" * 5000 + "\r\nBcc: victim@example.net",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_subjects_and_names_never_become_headers(hostile: str) -> None:
    message = compose_reply(
        from_address="shop@example.com", from_name=hostile, to="buyer@example.org",
        to_name=hostile, subject=hostile, message_id="<ih.r1.0011223344556677@example.com>",
        text="hi", attachments=[File(hostile, hostile, b"data")])
    raw = message_bytes(message)
    names = header_names(raw)
    assert "bcc" not in names and set(names) <= EXPECTED_HEADERS
    reparsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert reparsed["Bcc"] is None
    assert [a.addr_spec for a in reparsed["To"].addresses] == ["buyer@example.org"]
    assert [a.addr_spec for a in reparsed["From"].addresses] == ["shop@example.com"]
    assert "\n" not in str(reparsed["Subject"]) and "\r" not in str(reparsed["Subject"])


@pytest.mark.parametrize("bad", [
    "buyer@example.org\r\nBcc: victim@example.net", "buyer@example.org, victim@example.net",
    "Name <buyer@example.org>", "buyer", "buyer@example.org>", "",
])
def test_addresses_that_could_add_recipients_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        compose_reply(from_address="shop@example.com", to=bad, subject="s",
                      message_id="<ih.r1.0011223344556677@example.com>", text="hi")


def test_bad_ids_in_references_are_dropped_and_a_bad_message_id_refused() -> None:
    message = compose_reply(
        from_address="shop@example.com", to="buyer@example.org", subject="s",
        message_id="<ih.r1.0011223344556677@example.com>", text="hi",
        in_reply_to="<a@x>\r\nBcc: victim@example.net",
        references=["<ok@x>", "<a@x>\r\nBcc: victim@example.net", "<sp ace@x>"])
    raw = message_bytes(message)
    assert b"victim" not in raw and message["References"] == "<ok@x>"
    assert message["In-Reply-To"] is None
    with pytest.raises(ValueError):
        compose_reply(from_address="shop@example.com", to="buyer@example.org", subject="s",
                      message_id="<x@y>\r\nBcc: v@example.net", text="hi")


def test_body_control_characters_and_long_lines_are_safe() -> None:
    text = "line\r\n.\r\nnext\x00\x1b[31m" + "a" * 5000
    raw = message_bytes(compose_reply(
        from_address="shop@example.com", to="buyer@example.org", subject="s",
        message_id="<ih.r1.0011223344556677@example.com>", text=text))
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = parse_email(raw, max_attachment_bytes=1, max_attachments=0)
    assert "\x00" not in parsed.full_text and "\x1b" not in parsed.full_text
    assert parsed.full_text.startswith("line\n.\nnext[31maaa")


def test_html_alternative_is_rendered_from_text_and_escapes_everything() -> None:
    from channels.email.compose import html_body

    text = ("Hola <b>Ana</b> & co,\nsu envío: https://track.test/a?b=1&c=\"2\".\n\n"
            "<script>alert(1)</script>\nSaludos")
    rendered = html_body(text)
    assert "<b>" not in rendered and "<script>" not in rendered
    assert "&lt;b&gt;Ana&lt;/b&gt; &amp; co,<br>" in rendered
    assert '<a href="https://track.test/a?b=1&amp;c=">https://track.test/a?b=1&amp;c=</a>' \
        in rendered
    assert rendered.count("<p>") == 2 and 'dir="auto"' in rendered
    message = compose_reply(from_address="ventas@tienda.test", to="ana@buyer.test",
                            subject="Pedido", message_id="<ih.t.0123456789abcdef@tienda.test>",
                            text=text, html_part=rendered)
    parsed = email.message_from_bytes(message_bytes(message), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    html_part = parsed.get_body(("html",))
    plain = parsed.get_body(("plain",))
    assert html_part is not None and plain is not None
    assert "<script>" not in html_part.get_content()
    assert "<script>" in plain.get_content()  # the text part is the agent's text as typed

"""Our Message-IDs carry the reply they belong to; replies carry RFC 5322 thread headers; a
buyer's answer finds its conversation even from clients that drop or rewrite References."""

from __future__ import annotations

import msgspec
import pytest

from channels.email.threading import (
    MAX_REFERENCES,
    new_message_id,
    normalize_subject,
    reply_headers,
    reply_token_of,
    reply_tokens,
    thread_candidates,
)


class Mail(msgspec.Struct, frozen=True):
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    full_text: str = ""
    html: str | None = None


def test_our_message_ids_carry_the_reply_token_and_are_unique() -> None:
    first = new_message_id("r-42_x", "Shop.Example.com")
    second = new_message_id("r-42_x", "shop.example.com")
    assert first != second
    assert first.startswith("<ih.r-42_x.") and first.endswith("@shop.example.com>")
    assert reply_token_of(first) == reply_token_of(second) == "r-42_x"
    assert reply_token_of("<CAB+123@mail.gmail.com>") is None
    assert reply_token_of("<ih.r1.nothex@x.com>") is None


@pytest.mark.parametrize(("token", "domain"), [
    ("", "x.com"), ("a.b", "x.com"), ("a\r\nBcc: x", "x.com"), ("r1", "x.com>\r\nBcc: y"),
    ("r1", "localhost"), ("t" * 65, "x.com"),
])
def test_tokens_and_domains_that_could_break_the_header_are_refused(token: str,
                                                                    domain: str) -> None:
    with pytest.raises(ValueError):
        new_message_id(token, domain)


def test_reply_headers_follow_rfc5322() -> None:
    parent = Mail(message_id="<p@x>", references=("<a@x>", "<b@x>"), in_reply_to="<b@x>")
    assert reply_headers(parent) == ("<p@x>", ("<a@x>", "<b@x>", "<p@x>"))
    no_refs = Mail(message_id="<p@x>", in_reply_to="<b@x>")
    assert reply_headers(no_refs) == ("<p@x>", ("<b@x>", "<p@x>"))
    first = Mail(message_id="<p@x>")
    assert reply_headers(first) == ("<p@x>", ("<p@x>",))


def test_long_reference_chains_keep_the_root_and_the_newest() -> None:
    chain = tuple(f"<m{i}@x>" for i in range(100))
    _, references = reply_headers(Mail(message_id="<p@x>", references=chain))
    assert len(references) == MAX_REFERENCES
    assert references[0] == "<m0@x>" and references[-1] == "<p@x>"
    assert references[-2] == "<m99@x>"


def test_candidates_are_in_reply_to_then_references_newest_first() -> None:
    mail = Mail(message_id="<self@x>", in_reply_to="<c@x>",
                references=("<a@x>", "<b@x>", "<c@x>", "<self@x>"))
    assert thread_candidates(mail) == ["<c@x>", "<b@x>", "<a@x>"]


def test_outlook_without_references_is_found_by_our_id_in_the_quoted_body() -> None:
    ours = new_message_id("r7", "shop.example.com")
    mail = Mail(message_id="<outlook@x>",
                full_text=f"Thanks!\n\nFrom: Shop\nSent: Monday\n> Message-ID: {ours}\n"
                          "> Contact us at <shop@example.com>")
    assert thread_candidates(mail) == [ours]
    assert reply_tokens(thread_candidates(mail)) == ["r7"]


def test_a_rewritten_chain_still_names_our_reply() -> None:
    ours = new_message_id("r9", "shop.example.com")
    mail = Mail(message_id="<n@x>", in_reply_to="<rewritten-by-gateway@x>",
                references=(ours, "<rewritten-by-gateway@x>"))
    assert reply_tokens(thread_candidates(mail)) == ["r9"]


@pytest.mark.parametrize(("subject", "base", "important"), [
    ("Re: Order 123", "Order 123", False),
    ("RE: RE: Fwd: Order 123", "Order 123", False),
    ("Re[2]: Order 123", "Order 123", False),
    ("RV: Pedido 123", "Pedido 123", False),
    ("ENC: RES: Pedido 123", "Pedido 123", False),
    ("AW: WG: Bestellung", "Bestellung", False),
    ("答复: 回复: 转发: 订单", "订单", False),
    ("回复：订单", "订单", False),
    ("[Important] Re: Order  123", "Order 123", True),
    ("Re: [IMPORTANT] Order 123", "Order 123", True),
    ("Regarding my order", "Regarding my order", False),
    ("Fwd:", "", False),
])
def test_subject_normalisation(subject: str, base: str, important: bool) -> None:
    key = normalize_subject(subject)
    assert (key.base, key.important) == (base, important)
    assert key.key == base.casefold()


def test_subject_prefix_floods_are_bounded() -> None:
    assert normalize_subject("Re: " * 100_000 + "x").key != ""

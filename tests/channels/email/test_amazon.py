"""Amazon's relay: aliases recognised, market from the domain, order ids, and replies the
relay would block refused before sending with the rule named."""

from __future__ import annotations

import msgspec
import pytest

from channels.email.amazon import (
    MAX_ATTACHMENT_BYTES,
    AmazonReplyRefused,
    amazon_market,
    check_amazon_reply,
    is_amazon_relay,
    order_ids,
)
from channels.errors import PermanentError


class File(msgspec.Struct, frozen=True):
    name: str
    size: int


@pytest.mark.parametrize(("address", "market"), [
    ("wrmqqxtlynjf6kg@marketplace.amazon.es", "ES"),
    ("5vlhEXAMPLEh9h5@marketplace.amazon.com.br", "BR"),
    ("x@marketplace.amazon.com.mx", "MX"), ("x@marketplace.amazon.com", "US"),
    ("x@marketplace.amazon.co.uk", "GB"), ("x@marketplace.amazon.de", "DE"),
    ("x@marketplace.amazon.fr", "FR"), ("x@marketplace.amazon.it", "IT"),
    ("x@marketplace.amazon.co.jp", "JP"), ("x@marketplace.amazon.ca", "CA"),
    ("x@marketplace.amazon.com.au", "AU"), ("x@marketplace.amazon.pl", "PL"),
    ("x@marketplace.amazon.nl", "NL"), ("x@marketplace.amazon.se", "SE"),
    ("x@marketplace.amazon.com.tr", "TR"), ("x@marketplace.amazon.ae", "AE"),
    ("x@marketplace.amazon.sa", "SA"), ("x@marketplace.amazon.in", "IN"),
    ("x@marketplace.amazon.sg", "SG"), ("x@marketplace.amazon.eg", "EG"),
    ("x@marketplace.amazon.com.be", "BE"), ("X@Marketplace.Amazon.ES ", "ES"),
    ("x@marketplace.amazon.com.ng", None),  # a marketplace opened later: relay, market unknown
])
def test_relay_aliases_and_their_market(address: str, market: str | None) -> None:
    assert is_amazon_relay(address)
    assert amazon_market(address) == market


@pytest.mark.parametrize("address", [
    "buyer@amazon.es", "x@marketplace.amazon.es.evil.com", "x@marketplace-amazon.es",
    "marketplace.amazon.es@evil.com", "x@marketplace.amazon.",
])
def test_other_addresses_are_not_the_relay(address: str) -> None:
    assert not is_amazon_relay(address)
    assert amazon_market(address) is None


def test_order_ids_from_subject_and_body() -> None:
    assert order_ids("Consulta del pedido 405-1234567-7654321",
                     "Pedido 405-1234567-7654321 y 171-0000001-0000002; no 1405-1234567-76543210"
                     ) == ("405-1234567-7654321", "171-0000001-0000002")


def test_plain_text_without_links_passes() -> None:
    check_amazon_reply("Hola, su pedido sale hoy. Gracias.", None,
                       [File("factura.pdf", MAX_ATTACHMENT_BYTES)])


@pytest.mark.parametrize(("text", "html", "rule"), [
    ("hi", "<p>hi</p>", "plain text"),
    ("track it at https://carrier.example/123", None, "links"),
    ("see http://x.example", None, "links"),
    ("see www.example.com/track", None, "links"),
    ("see WWW.EXAMPLE.COM", None, "links"),
])
def test_html_and_links_are_refused_naming_the_rule(text: str, html: str | None,
                                                    rule: str) -> None:
    with pytest.raises(AmazonReplyRefused) as refused:
        check_amazon_reply(text, html)
    assert rule in str(refused.value) and "Amazon" in str(refused.value)
    assert isinstance(refused.value, PermanentError)  # the sender must not retry it


def test_attachments_over_ten_megabytes_are_refused() -> None:
    with pytest.raises(AmazonReplyRefused, match=r"big\.zip"):
        check_amazon_reply("ok", None, [File("a.pdf", 10), File("big.zip",
                                                                MAX_ATTACHMENT_BYTES + 1)])

"""The sender identities that link contacts into a person (storage/identifiers.py): pure."""

from __future__ import annotations

import pytest

from storage.identifiers import e164, email_address, identifiers, shown


@pytest.mark.parametrize("handle", [
    "+1 (415) 555-2671", "14155552671", "+14155552671", "whatsapp:+14155552671",
    "0014155552671", " +1.415.555.2671 ", "tel:+1-415-555-2671",
])
def test_one_number_in_every_format_is_one_e164(handle: str) -> None:
    assert e164(handle) == "+14155552671"


@pytest.mark.parametrize("handle", [
    "4155552671",        # national: which country? not an identity
    "12345", "", "+", "abc", "messenger:1234567890", "+999123456789", "0155552671",
    "+1 415 555 2671 ext 9", "١٢٣٤٥٦٧٨٩٠", "+1234567890123456",
])
def test_what_is_not_an_international_number_is_no_phone(handle: str) -> None:
    assert e164(handle) is None


def test_whatsapp_and_twilio_senders_of_one_number_share_the_phone_identifier() -> None:
    wa = identifiers("whatsapp", "wa-br", "5511987654321")
    sms = identifiers("twilio", "sms-br", "+55 11 98765-4321")
    tw_wa = identifiers("twilio", "sms-br", "whatsapp:+5511987654321")
    assert wa[1] == sms[1] == tw_wa[1] == "phone:+5511987654321"
    assert wa[0] != sms[0]  # the per-instance sender identifiers stay apart
    assert sms[0] != tw_wa[0]


def test_email_sender_is_case_folded_and_comes_after_the_sender_identifier() -> None:
    assert identifiers("email", "support", "Ana.Silva@Example.COM") == (
        "sender:support\x00Ana.Silva@Example.COM", "email:ana.silva@example.com")
    assert email_address("not an address") is None
    assert email_address("a@b") is None
    assert email_address("<a@example.com>") is None


def test_buyer_ids_are_scoped_by_marketplace() -> None:
    ml = identifiers("mercadolibre", "ml-ar", "123")
    shopee = identifiers("shopee", "shopee-sg", "123")
    assert ml[1] == "buyer:mercadolibre:123"
    assert shopee[1] == "buyer:shopee:123"
    assert set(ml).isdisjoint(shopee)
    # Two seller accounts on one marketplace see one buyer id space.
    assert identifiers("mercadolibre", "ml-br", "123")[1] == ml[1]


def test_other_channels_link_only_the_same_sender_on_the_same_instance() -> None:
    assert identifiers("telegram", "tg", "42") == ("sender:tg\x0042",)
    assert identifiers("api", "shop", "buyer@example.com") == ("sender:shop\x00buyer@example.com",)


@pytest.mark.parametrize("handle", ["", "   ", "unknown", "a\x00b", "x" * 400])
def test_no_identity_links_nothing(handle: str) -> None:
    assert identifiers("lazada", "lz", handle) == ()


def test_a_no_reply_sender_links_nothing() -> None:
    """One no-reply notification address speaks for many buyers."""
    assert identifiers("email", "support", "no-reply@amazon.com", no_reply=True) == ()


def test_shown_identifiers() -> None:
    assert shown("email:a@example.com") == ("email", "a@example.com")
    assert shown("buyer:ebay:jo_88") == ("buyer", "ebay:jo_88")
    assert shown("phone:+14155552671") == ("phone", "+14155552671")
    assert shown("sender:tg\x0042") is None
    assert shown("email:") is None

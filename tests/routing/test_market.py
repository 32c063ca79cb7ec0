"""Market classification: precedence, marketplace sites, Amazon relays, phones and ccTLDs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.classify.market import MERCADO_LIBRE_SITES, MarketGuess, classify_market

ML_SITES = [
    ("MLA", "AR", "es"),
    ("MLB", "BR", "pt"),
    ("MLM", "MX", "es"),
    ("MLC", "CL", "es"),
    ("MCO", "CO", "es"),
    ("MLU", "UY", "es"),
    ("MPE", "PE", "es"),
    ("MEC", "EC", "es"),
    ("MLV", "VE", "es"),
    ("MBO", "BO", "es"),
    ("MPY", "PY", "es"),
    ("MRD", "DO", "es"),
    ("MCR", "CR", "es"),
    ("MPA", "PA", "es"),
    ("MGT", "GT", "es"),
    ("MHN", "HN", "es"),
    ("MNI", "NI", "es"),
    ("MSV", "SV", "es"),
    ("MCU", "CU", "es"),
]


def test_every_mercado_libre_site_is_covered() -> None:
    assert {site for site, _, _ in ML_SITES} == set(MERCADO_LIBRE_SITES)


@pytest.mark.parametrize(("site", "country", "language"), ML_SITES)
def test_mercado_libre_sites(site: str, country: str, language: str) -> None:
    assert classify_market(marketplace_site=site) == MarketGuess(
        country, language, "marketplace_site", site
    )
    assert classify_market(marketplace_site=f" {site.lower()} ").market == country


@pytest.mark.parametrize(
    ("site", "country", "language", "evidence"),
    [
        ("amazon.es", "ES", "es", "amazon.es"),
        ("www.amazon.com.mx", "MX", "es", "amazon.com.mx"),
        ("https://www.amazon.com.br/", "BR", "pt", "amazon.com.br"),
        ("Amazon.co.uk", "GB", "en", "amazon.co.uk"),
        ("EBAY_DE", "DE", "de", "EBAY_DE"),
        ("EBAY_FRCA", "CA", "fr", "EBAY_FRCA"),
        ("EBAY_MOTORS_US", "US", "en", "EBAY_MOTORS_US"),
        ("shopee.com.br", "BR", "pt", "shopee.com.br"),
        ("shopee.com.co", "CO", "es", "shopee.com.co"),
        ("mercadolivre.com.br", "BR", "pt", "mercadolivre.com.br"),
        ("MX", "MX", "es", "MX"),
        ("be", "BE", None, "BE"),
    ],
)
def test_other_site_strings(site: str, country: str, language: str | None, evidence: str) -> None:
    assert classify_market(marketplace_site=site) == MarketGuess(
        country, language, "marketplace_site", evidence
    )


@pytest.mark.parametrize(
    ("domain", "country"),
    [
        ("amazon.es", "ES"),
        ("amazon.com.br", "BR"),
        ("amazon.com.mx", "MX"),
        ("amazon.com", "US"),
        ("amazon.co.uk", "GB"),
        ("amazon.co.jp", "JP"),
        ("amazon.de", "DE"),
        ("amazon.fr", "FR"),
        ("amazon.it", "IT"),
        ("amazon.pl", "PL"),
        ("amazon.nl", "NL"),
        ("amazon.se", "SE"),
        ("amazon.com.tr", "TR"),
        ("amazon.ae", "AE"),
        ("amazon.sa", "SA"),
        ("amazon.in", "IN"),
        ("amazon.ca", "CA"),
        ("amazon.com.au", "AU"),
        ("amazon.sg", "SG"),
        ("amazon.com.be", "BE"),
        ("amazon.eg", "EG"),
    ],
)
def test_amazon_relay_addresses(domain: str, country: str) -> None:
    guess = classify_market(sender_email=f"0abc123xyz@marketplace.{domain}")
    assert (guess.market, guess.source, guess.evidence) == (country, "amazon_domain", domain)


def test_amazon_relay_language_follows_the_storefront() -> None:
    assert classify_market(sender_email="x@marketplace.amazon.com.br").language_hint == "pt"
    assert classify_market(sender_email="X@Marketplace.Amazon.CO.JP").language_hint == "ja"


@pytest.mark.parametrize(
    ("phone", "country", "code"),
    [
        ("+52 55 1234 5678", "MX", "+52"),
        ("+52 1 55 1234 5678", "MX", "+52"),
        ("+55 11 91234-5678", "BR", "+55"),
        ("+34 612 345 678", "ES", "+34"),
        ("+54 9 11 2345-6789", "AR", "+54"),
        ("+1 415 555 2671", "US", "+1"),
        ("+1 416 555 0123", "CA", "+1"),
        ("5215512345678", "MX", "+52"),  # WhatsApp wa_id: E.164 without the plus
        ("whatsapp:+5511912345678", "BR", "+55"),  # Twilio's WhatsApp address
    ],
)
def test_phone_numbers(phone: str, country: str, code: str) -> None:
    guess = classify_market(phone=phone)
    assert (guess.market, guess.source, guess.evidence) == (country, "phone", code)


def test_phone_evidence_never_contains_the_number() -> None:
    guess = classify_market(phone="+52 55 1234 5678")
    assert guess.evidence is not None and "1234" not in guess.evidence


def test_explicit_phone_country_is_accepted() -> None:
    assert classify_market(phone_country="CO") == MarketGuess("CO", "es", "phone", "CO")
    # A national number is read in the given country.
    assert classify_market(phone="55 1234 5678", phone_country="MX").market == "MX"
    # An unparseable number still has the gateway's country.
    assert classify_market(phone="n/a", phone_country="br").market == "BR"


@pytest.mark.parametrize(
    ("email", "country", "suffix"),
    [
        ("comprador@empresa.com.mx", "MX", ".com.mx"),
        ("cliente@provedor.com.br", "BR", ".com.br"),
        ("cliente@uol.br", "BR", ".br"),
        ("cliente@telefonica.es", "ES", ".es"),
        ("cliente@fibertel.com.ar", "AR", ".com.ar"),
        ("buyer@example.co.uk", "GB", ".co.uk"),
        ("buyer@empresa.com.co", "CO", ".com.co"),
    ],
)
def test_email_cctld(email: str, country: str, suffix: str) -> None:
    assert classify_market(sender_email=email) == MarketGuess(
        country, classify_market(channel_default=country).language_hint, "email_cctld", suffix
    )


@pytest.mark.parametrize(
    "email",
    ["buyer@gmail.com", "buyer@startup.io", "buyer@brand.co", "buyer@shop.net", "not-an-email"],
)
def test_generic_domains_say_nothing(email: str) -> None:
    assert classify_market(sender_email=email) == MarketGuess(None, None, "none", None)


class TestPrecedence:
    def test_site_beats_everything(self) -> None:
        guess = classify_market(
            marketplace_site="MLB",
            sender_email="x@marketplace.amazon.es",
            phone="+52 55 1234 5678",
            channel_default="AR",
        )
        assert (guess.market, guess.source) == ("BR", "marketplace_site")

    def test_amazon_relay_beats_phone(self) -> None:
        guess = classify_market(sender_email="x@marketplace.amazon.es", phone="+52 55 1234 5678")
        assert (guess.market, guess.source) == ("ES", "amazon_domain")

    def test_phone_beats_email_cctld(self) -> None:
        guess = classify_market(sender_email="a@empresa.com.ar", phone="+55 11 91234-5678")
        assert (guess.market, guess.source) == ("BR", "phone")

    def test_email_cctld_beats_channel_default(self) -> None:
        guess = classify_market(sender_email="a@empresa.com.ar", channel_default="MX")
        assert (guess.market, guess.source) == ("AR", "email_cctld")

    def test_channel_default_is_the_last_resort(self) -> None:
        assert classify_market(sender_email="a@gmail.com", channel_default="mx") == MarketGuess(
            "MX", "es", "channel_default", "MX"
        )
        assert classify_market(channel_default="MLB").market == "BR"

    def test_unusable_evidence_falls_through(self) -> None:
        guess = classify_market(marketplace_site="??", phone="garbage", channel_default="CL")
        assert (guess.market, guess.source) == ("CL", "channel_default")

    def test_nothing_known(self) -> None:
        assert classify_market() == MarketGuess(None, None, "none", None)


optional_text = st.one_of(st.none(), st.text(max_size=60))


@settings(deadline=None)
@given(
    site=optional_text,
    email=optional_text,
    phone=optional_text,
    country=optional_text,
    default=optional_text,
)
def test_any_input_gives_a_well_formed_guess(
    site: str | None,
    email: str | None,
    phone: str | None,
    country: str | None,
    default: str | None,
) -> None:
    guess = classify_market(
        marketplace_site=site,
        sender_email=email,
        phone=phone,
        phone_country=country,
        channel_default=default,
    )
    assert guess.source in {
        "marketplace_site",
        "amazon_domain",
        "phone",
        "email_cctld",
        "channel_default",
        "none",
    }
    assert guess.market is None or (len(guess.market) == 2 and guess.market.isupper())
    assert (guess.market is None) == (guess.source == "none")


@pytest.mark.parametrize(
    "value", ["", "\x00", "😀" * 1000, "+" * 10_000, "@" * 5000, "a@" + "b." * 5000 + "mx"]
)
def test_hostile_input_never_raises(value: str) -> None:
    classify_market(
        marketplace_site=value,
        sender_email=value,
        phone=value,
        phone_country=value,
        channel_default=value,
    )

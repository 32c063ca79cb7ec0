"""Market of a conversation: which country's storefront the buyer came through.

Evidence is ranked by how directly it names the storefront: the marketplace's own site id, the
Amazon relay address, the buyer's phone, the e-mail ccTLD, then the channel's default. Only the
site, domain suffix or country is kept as evidence, never a phone number or an address.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec
import phonenumbers

__all__ = ["MERCADO_LIBRE_SITES", "MarketGuess", "classify_market", "market_language"]


class MarketGuess(msgspec.Struct, frozen=True):
    """The market decision recorded on a conversation and the value that decided it."""

    market: str | None
    language_hint: str | None
    source: str
    evidence: str | None = None


# Mercado Libre site id -> country (language follows from the country).
MERCADO_LIBRE_SITES: Final[dict[str, str]] = {
    "MLA": "AR",
    "MLB": "BR",
    "MLM": "MX",
    "MLC": "CL",
    "MCO": "CO",
    "MLU": "UY",
    "MPE": "PE",
    "MEC": "EC",
    "MLV": "VE",
    "MBO": "BO",
    "MPY": "PY",
    "MRD": "DO",
    "MCR": "CR",
    "MPA": "PA",
    "MGT": "GT",
    "MHN": "HN",
    "MNI": "NI",
    "MSV": "SV",
    "MCU": "CU",
}

# The language a storefront in that country is run in. Countries with no single one (BE, CH,
# LU) are left out on purpose: the text must decide there.
_SPOKEN: Final = (
    ("es", "AR BO CL CO CR CU DO EC ES GQ GT HN MX NI PA PE PR PY SV UY VE"),
    ("pt", "BR PT AO MZ CV GW ST"),
    ("en", "US GB IE AU NZ CA SG IN ZA NG KE GH PH JM TT"),
    ("fr", "FR MC SN CI CM"),
    ("de", "DE AT LI"),
    ("it", "IT SM VA"),
    ("zh", "CN TW HK MO"),
    ("ar", "AE SA EG MA DZ TN JO KW QA BH OM"),
    ("ja", "JP"),
    ("ko", "KR"),
    ("nl", "NL"),
    ("sv", "SE"),
    ("pl", "PL"),
    ("tr", "TR"),
    ("ru", "RU"),
    ("uk", "UA"),
    ("vi", "VN"),
    ("th", "TH"),
    ("id", "ID"),
    ("ms", "MY"),
    ("he", "IL"),
    ("el", "GR"),
    ("cs", "CZ"),
    ("ro", "RO"),
    ("hu", "HU"),
    ("da", "DK"),
    ("nb", "NO"),
    ("fi", "FI"),
)
_LANGUAGE_OF: Final[dict[str, str]] = {
    country: language for language, countries in _SPOKEN for country in countries.split()
}

# Amazon storefront domain (after "amazon.") -> country, where the suffix is not the ccTLD.
_AMAZON: Final[dict[str, str]] = {
    "com": "US",
    "co.uk": "GB",
    "co.jp": "JP",
    "co.za": "ZA",
    "com.au": "AU",
    "com.be": "BE",
    "com.br": "BR",
    "com.mx": "MX",
    "com.tr": "TR",
    "com.ng": "NG",
    "com.sg": "SG",
    "cn": "CN",
}
_RELAY_DOMAIN = "marketplace.amazon."
_RELAY_SUFFIX = re.compile(r"[a-z.]+")
_AMAZON_SITE = re.compile(r"^(?:https?://)?(?:www\.|sellercentral\.)?amazon\.([a-z.]+?)/?$")
_EBAY_SITE = re.compile(r"^EBAY_(?:MOTORS_)?(?:([A-Z]{2})(?=[A-Z]{2}$))?([A-Z]{2})$")
_DOMAIN_SITE = re.compile(r"^(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2})/?$")

# Second-level labels under which a ccTLD still names the country (com.br, com.co).
_SECOND_LEVEL: Final = frozenset({"com", "net", "org", "gob", "gov", "edu", "co", "ac", "mil"})
# ccTLDs sold as generic names (startup.io, brand.co): they say nothing about the buyer.
_GENERIC_CCTLDS: Final = frozenset(
    {"ai", "co", "io", "me", "tv", "fm", "gg", "ly", "to", "ws", "cc", "sh", "so", "st", "vc", "la"}
)
_REGIONS: Final = frozenset(phonenumbers.SUPPORTED_REGIONS)

# Evidence longer than this is not a site id, an address or a phone number (RFC 5321 caps an
# address at 254 characters): it is ignored unread, so a hostile 1 MB "e-mail" costs nothing.
_MAX_SITE: Final = 256
_MAX_EMAIL: Final = 320
_MAX_PHONE: Final = 64


def market_language(market: str | None) -> str | None:
    """The language a storefront in that country runs in, if the country has one."""
    return _LANGUAGE_OF.get(market.upper()) if market else None


def _guess(market: str, source: str, evidence: str, language: str | None = None) -> MarketGuess:
    return MarketGuess(market, language or market_language(market), source, evidence)


def _country(code: str) -> str | None:
    code = "GB" if code.upper() == "UK" else code.upper()
    return code if code in _REGIONS else None


def _amazon_country(suffix: str) -> str | None:
    if suffix in _AMAZON:
        return _AMAZON[suffix]
    last = suffix.rsplit(".", 1)[-1]
    return _country(last) if len(last) == 2 else None


def _from_site(site: str) -> MarketGuess | None:
    raw = site.strip()
    upper, lower = raw.upper(), raw.lower()
    if upper in MERCADO_LIBRE_SITES:
        return _guess(MERCADO_LIBRE_SITES[upper], "marketplace_site", upper)
    if (amazon := _AMAZON_SITE.match(lower)) is not None:
        country = _amazon_country(amazon.group(1))
        return _guess(country, "marketplace_site", f"amazon.{amazon.group(1)}") if country else None
    if (ebay := _EBAY_SITE.match(upper)) is not None:
        country = _country(ebay.group(2))
        language = ebay.group(1).lower() if ebay.group(1) else None
        return _guess(country, "marketplace_site", upper, language) if country else None
    if (domain := _DOMAIN_SITE.match(lower)) is not None:
        found = _cctld_country(domain.group(1))
        return _guess(found[0], "marketplace_site", domain.group(1)) if found else None
    if len(upper) == 2 and upper.isalpha() and (country := _country(upper)) is not None:
        return _guess(country, "marketplace_site", country)
    return None


def _from_amazon_relay(email: str) -> MarketGuess | None:
    _, at, domain = email.strip().lower().rpartition("@")
    if not at or not domain.startswith(_RELAY_DOMAIN):
        return None
    suffix = domain[len(_RELAY_DOMAIN):]
    if not _RELAY_SUFFIX.fullmatch(suffix):
        return None
    country = _amazon_country(suffix)
    return _guess(country, "amazon_domain", f"amazon.{suffix}") if country else None


def _from_phone(phone: str | None, phone_country: str | None) -> MarketGuess | None:
    hint = _country(phone_country.strip()) if phone_country else None
    if phone:
        number = phone.strip().removeprefix("whatsapp:").removeprefix("tel:").strip()
        # WhatsApp ids and some gateways give E.164 without the plus.
        if number.isdigit() and len(number) >= 8:
            number = "+" + number
        try:
            parsed = phonenumbers.parse(number[:40], hint)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is not None and parsed.country_code:
            region = phonenumbers.region_code_for_number(parsed)
            if region in (None, "ZZ", "001"):
                region = phonenumbers.region_code_for_country_code(parsed.country_code)
            if region and region in _REGIONS:
                return _guess(region, "phone", f"+{parsed.country_code}")
    if hint is not None:
        return _guess(hint, "phone", hint)
    return None


def _cctld_country(domain: str) -> tuple[str, str] | None:
    """Country and public suffix (".com.br") named by a domain's ccTLD, if it names one."""
    labels = domain.rstrip(".").split(".")
    if len(labels) < 2 or len(labels[-1]) != 2:
        return None
    tld = labels[-1]
    if len(labels) > 2 and labels[-2] in _SECOND_LEVEL:
        suffix = f".{labels[-2]}.{tld}"
    elif tld in _GENERIC_CCTLDS:
        return None
    else:
        suffix = f".{tld}"
    country = _country(tld)
    return (country, suffix) if country else None


def _from_email(email: str) -> MarketGuess | None:
    if "@" not in email:
        return None
    found = _cctld_country(email.strip().lower().rsplit("@", 1)[-1])
    return _guess(found[0], "email_cctld", found[1]) if found else None


def _bounded(value: str | None, limit: int) -> str | None:
    return value if value is not None and len(value) <= limit else None


def classify_market(
    *,
    marketplace_site: str | None = None,
    sender_email: str | None = None,
    phone: str | None = None,
    phone_country: str | None = None,
    channel_default: str | None = None,
) -> MarketGuess:
    """Decide the market from the strongest evidence present; never raises."""
    marketplace_site = _bounded(marketplace_site, _MAX_SITE)
    sender_email = _bounded(sender_email, _MAX_EMAIL)
    phone = _bounded(phone, _MAX_PHONE)
    phone_country = _bounded(phone_country, _MAX_PHONE)
    channel_default = _bounded(channel_default, _MAX_SITE)
    guess: MarketGuess | None = None
    if marketplace_site:
        guess = _from_site(marketplace_site)
    if guess is None and sender_email:
        guess = _from_amazon_relay(sender_email)
    if guess is None and (phone or phone_country):
        guess = _from_phone(phone, phone_country)
    if guess is None and sender_email:
        guess = _from_email(sender_email)
    if guess is None and channel_default:
        site = _from_site(channel_default)
        if site is not None and site.market is not None:
            guess = MarketGuess(site.market, site.language_hint, "channel_default", site.evidence)
    return guess if guess is not None else MarketGuess(None, None, "none", None)

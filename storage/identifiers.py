"""Which identities of a sender link their per-channel contacts into one person.

A contact (``storage.store``) is one sender on one channel instance in one partition. Two
contacts are the same person when the *sender identity* of their messages says so, never what a
buyer typed in a message (anyone can type anyone's address):

* ``email:<address>``        the From address of an email (case-folded);
* ``phone:<+E.164>``          an SMS or WhatsApp sender (``+55 11 ...``, ``5511...`` as WhatsApp
                              sends it and ``whatsapp:+5511...`` as Twilio does are one number);
* ``buyer:<marketplace>:<id>`` a marketplace's buyer id, scoped by marketplace: Mercado Libre's
                              buyer 123 and Shopee's buyer 123 are strangers;
* ``sender:<instance>\\0<handle>`` the sender on one channel instance, whatever the channel: the
                              same buyer's conversations in different partitions have different
                              contact records, and this joins them.

The sender identifier comes first: linking takes the first identifier that already names a
person (``storage/lua/people.lua``), so once a supervisor split a sender out of a person, that
sender's later contacts follow the split and not an address the person still carries.

A sender the channel cannot answer (a no-reply notification address, ``replies_disabled``)
gets no identifier: one such address speaks for many buyers, so it must never link them.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

# Channel types whose sender handle is a marketplace's own buyer (user) id. The email channel
# is not one: Amazon's buyers write through relay addresses, which are email identities.
MARKETPLACES = frozenset({"mercadolibre", "ebay", "shopee", "lazada", "aliexpress", "dhgate"})
PHONE_CHANNELS = frozenset({"twilio", "whatsapp"})
EMAIL_CHANNELS = frozenset({"email"})

MAX_HANDLE = 320  # the longest email address; no channel's sender id is longer
_EMAIL = re.compile(r"[^\s@<>\"',;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z0-9-]{2,63}")
# Twilio names other senders by prefix (whatsapp:+1..., messenger:123 is not a phone).
_PHONE_PREFIXES = ("whatsapp:", "sms:", "tel:")
_PHONE_CHARS = re.compile(r"\+?[0-9][0-9 ()./-]{6,30}")
_NOT_A_HANDLE = frozenset({"", "unknown"})  # what an adapter writes when the sender is unknown

KINDS = ("email", "phone", "buyer")


def email_address(handle: str) -> str | None:
    """The case-folded address, or None when ``handle`` is not one."""
    address = handle.strip()
    if not _EMAIL.fullmatch(address):
        return None
    return address.lower()


@functools.lru_cache(maxsize=4096)
def e164(handle: str) -> str | None:
    """``handle`` as an E.164 number (``+5511987654321``), or None when it is not a possible
    international number. A number without a ``+`` is taken as international digits (that is
    how WhatsApp sends ``wa_id``); a national number without a country cannot be placed, so it
    is not a phone identity. Cached: parsing is the costly step and one buyer writes often."""
    raw = handle.strip().lower()
    for prefix in _PHONE_PREFIXES:
        if raw.startswith(prefix):
            raw = raw[len(prefix):].strip()
            break
    if not _PHONE_CHARS.fullmatch(raw):
        return None
    digits = re.sub(r"[^0-9]", "", raw)
    if raw.startswith("00"):
        digits = digits[2:]
    if not 8 <= len(digits) <= 15 or digits.startswith("0"):
        return None
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def identifiers(channel_type: str, channel_instance: str, handle: str, *,
                no_reply: bool = False) -> tuple[str, ...]:
    """The identifiers of a sender, most specific first (see the module docstring)."""
    handle = handle.strip()
    if no_reply or handle.lower() in _NOT_A_HANDLE or len(handle) > MAX_HANDLE \
            or "\x00" in handle or "\x00" in channel_instance:
        return ()
    out = [f"sender:{channel_instance}\x00{handle}"]
    if channel_type in EMAIL_CHANNELS:
        address = email_address(handle)
        if address is not None:
            out.append(f"email:{address}")
    elif channel_type in PHONE_CHANNELS:
        number = e164(handle)
        if number is not None:
            out.append(f"phone:{number}")
    elif channel_type in MARKETPLACES:
        out.append(f"buyer:{channel_type}:{handle}")
    return tuple(out)


def shown(identifier: str) -> tuple[str, str] | None:
    """(kind, value) of an identifier as the API shows it; None for the sender identifier,
    which the contact it belongs to already shows (instance and handle)."""
    kind, _, value = identifier.partition(":")
    return (kind, value) if kind in KINDS and value else None

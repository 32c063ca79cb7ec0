"""Amazon's buyer–seller messaging relay, which is email: recognising the relay's aliases, the
market a buyer's alias belongs to, order ids in the text, and the rules a reply must follow
before it is sent (plain text, no links, attachments up to 10 MB).

Facts from CHANNELS.md §1.3: aliases are ``<id>@marketplace.amazon.<tld>``; HTML and hyperlinks
are blocked by the relay, so we refuse them before sending with a message naming the rule
instead of letting the relay drop the mail silently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from channels.errors import ReplyRejected

CHANNEL_LABEL = "Amazon"
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# The fact sheet's ``@marketplace\.amazon\.[a-z.]+$``, narrowed to a country-code shape
# (``es``, ``com``, ``co.uk``, ``com.br``) so ``…@marketplace.amazon.es.evil.com`` is not Amazon;
# a marketplace not in _MARKETS is still the relay, with no market.
_RELAY = re.compile(r"@marketplace\.amazon\.((?:com?\.)?[a-z]{2,3})$")
_ORDER_ID = re.compile(r"(?<![\d-])(\d{3}-\d{7}-\d{7})(?![\d-])")
# Any URL or bare www. host: the relay blocks hyperlinks whether or not they are clickable.
_LINK = re.compile(r"(?:\b(?:https?|ftp)://|\bwww\.)[^\s]{1,2000}", re.IGNORECASE)
_MARKETS = {
    "com": "US", "ca": "CA", "com.mx": "MX", "com.br": "BR", "co.uk": "GB", "de": "DE",
    "fr": "FR", "it": "IT", "es": "ES", "nl": "NL", "se": "SE", "pl": "PL", "com.be": "BE",
    "com.tr": "TR", "ae": "AE", "sa": "SA", "eg": "EG", "in": "IN", "co.jp": "JP", "sg": "SG",
    "com.au": "AU", "ie": "IE", "co.za": "ZA", "cn": "CN",
}
MAX_ORDER_IDS = 20


class AmazonReplyRefused(ReplyRejected):
    """A reply the relay would block; the message names the rule."""


class SizedAttachment(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...


def is_amazon_relay(address: str) -> bool:
    """Whether ``address`` is an Amazon buyer–seller messaging alias."""
    return _RELAY.search(address.strip().lower()) is not None


def amazon_market(address: str) -> str | None:
    """ISO 3166 country of the marketplace the alias belongs to (``…@marketplace.amazon.es``
    → ``ES``), ``None`` for a domain we do not know or a non-relay address."""
    found = _RELAY.search(address.strip().lower())
    return _MARKETS.get(found.group(1)) if found else None


def order_ids(*texts: str) -> tuple[str, ...]:
    """Amazon order ids (``123-1234567-1234567``) in the subject and body, first seen first."""
    seen: dict[str, None] = {}
    for text in texts:
        for match in _ORDER_ID.finditer(text[:1_000_000]):
            seen.setdefault(match.group(1), None)
            if len(seen) >= MAX_ORDER_IDS:
                return tuple(seen)
    return tuple(seen)


def check_amazon_reply(text: str, html: str | None,
                       attachments: Sequence[SizedAttachment] = ()) -> None:
    """Refuse, before sending, what the relay blocks: HTML, links, attachments over 10 MB."""
    if html:
        raise AmazonReplyRefused("Amazon buyer–seller messages must be plain text: remove the "
                                 "HTML part (the relay blocks HTML)")
    link = _LINK.search(text)
    if link is not None:
        raise AmazonReplyRefused(
            "Amazon buyer–seller messages cannot contain links (the relay blocks hyperlinks): "
            f"remove {link.group(0)[:80]!r}")
    for attachment in attachments:
        if attachment.size > MAX_ATTACHMENT_BYTES:
            raise AmazonReplyRefused(
                f"attachment {attachment.name!r} is {attachment.size} bytes; Amazon buyer–seller "
                f"messaging takes at most {MAX_ATTACHMENT_BYTES} bytes (10 MB) per attachment")

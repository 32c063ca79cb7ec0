"""Who a mail is from, beyond the address: sender-domain rules and no-reply senders.

B2B marketplaces (Alibaba, Made-in-China, Global Sources) and many platforms send a buyer's
inquiry as a notification from their own domain, often from an address nobody reads: the
conversation needs the platform's label and market, and an agent must not type a reply into
the void but be shown where to answer. Operators write the rules
(``[[channels.settings.sender_rules]]``); Amazon's relay is built in (``amazon``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Final

import msgspec

from channels.email.amazon import amazon_market, is_amazon_relay

AMAZON_LABEL: Final = "amazon"
Label = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_.-]{1,64}$")]
Domain = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9.-]{1,253}$")]
Market = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]
_NO_REPLY = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply|mailer-daemon|bounces?|"
    r"notifications?|notify|alerts?)(?:[-_.+].*)?$", re.IGNORECASE)


class SenderRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Mail from ``domain`` (or a subdomain of it) gets ``label`` and ``market``;
    ``no_reply`` (or a no-reply-looking address on that domain) disables replying and shows
    ``answer_url``."""

    domain: Domain
    label: Label
    market: Market | None = None
    no_reply: bool = False
    answer_url: str | None = None

    def __post_init__(self) -> None:
        if self.answer_url is not None and not re.fullmatch(r"https://[^\s<>\"']{1,2000}",
                                                            self.answer_url):
            raise ValueError(f"answer_url: expected an https:// URL, got {self.answer_url!r}")

    def matches(self, domain: str) -> bool:
        wanted = self.domain.lower().strip(".")
        return domain == wanted or domain.endswith("." + wanted)


class SenderFacts(msgspec.Struct, frozen=True):
    label: str | None = None
    market: str | None = None
    replies_disabled: str | None = None
    answer_url: str | None = None


def is_no_reply(address: str) -> bool:
    """An address that by its name is not read (``noreply@``, ``do-not-reply@``,
    ``notifications@``…)."""
    local = address.rsplit("@", 1)[0]
    return _NO_REPLY.fullmatch(local) is not None


def sender_facts(address: str, rules: Sequence[SenderRule]) -> SenderFacts:
    """The first rule whose domain matches, else Amazon's relay, else only the no-reply test."""
    address = address.strip().lower()
    domain = address.rsplit("@", 1)[-1]
    for rule in rules:
        if rule.matches(domain):
            disabled = rule.no_reply or is_no_reply(address)
            return SenderFacts(
                label=rule.label, market=rule.market,
                replies_disabled=(f"{address} is a no-reply notification address of "
                                  f"{rule.label}; answer on the platform") if disabled else None,
                answer_url=rule.answer_url if disabled else None)
    if is_amazon_relay(address):
        return SenderFacts(label=AMAZON_LABEL, market=amazon_market(address))
    if is_no_reply(address):
        return SenderFacts(replies_disabled=f"{address} is a no-reply address; mail sent "
                                            "there is not read")
    return SenderFacts()

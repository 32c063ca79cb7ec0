"""Sender rules and no-reply senders (``channels/email/senders.py``)."""

from __future__ import annotations

import msgspec
import pytest

from channels.email.senders import SenderRule, is_no_reply, sender_facts

RULES = (
    SenderRule(domain="alibaba.test", label="alibaba", market="CN",
               answer_url="https://message.alibaba.test/"),
    SenderRule(domain="made-in-china.test", label="mic", no_reply=True),
)


@pytest.mark.parametrize("address", [
    "noreply@x.test", "no-reply@x.test", "No_Reply@x.test", "donotreply@x.test",
    "do-not-reply@x.test", "notifications@x.test", "notification+123@x.test",
    "noreply-inquiry@x.test", "alerts@x.test",
])
def test_no_reply_addresses(address: str) -> None:
    assert is_no_reply(address)


@pytest.mark.parametrize("address", [
    "ana@x.test", "noreplyana@x.test", "replies@x.test", "sales-notify-team@x.test",
])
def test_ordinary_addresses(address: str) -> None:
    assert not is_no_reply(address)


def test_rules_match_the_domain_and_its_subdomains_only() -> None:
    facts = sender_facts("Buyer@Notice.Alibaba.test", RULES)
    assert (facts.label, facts.market, facts.replies_disabled) == ("alibaba", "CN", None)
    assert sender_facts("x@evil-alibaba.test", RULES).label is None
    assert sender_facts("x@alibaba.test.evil.test", RULES).label is None


def test_a_no_reply_sender_disables_replies_and_names_where_to_answer() -> None:
    facts = sender_facts("noreply@alibaba.test", RULES)
    assert facts.replies_disabled and facts.answer_url == "https://message.alibaba.test/"
    ruled = sender_facts("buyer@made-in-china.test", RULES)  # the rule says every sender
    assert ruled.label == "mic" and ruled.replies_disabled and ruled.answer_url is None
    plain = sender_facts("no-reply@shop.test", RULES)
    assert plain.label is None and plain.replies_disabled


def test_amazon_relay_is_built_in_and_a_rule_goes_first() -> None:
    facts = sender_facts("abc123@marketplace.amazon.com.br", ())
    assert (facts.label, facts.market, facts.replies_disabled) == ("amazon", "BR", None)
    assert sender_facts("abc@marketplace.amazon.es.evil.test", ()).label is None


@pytest.mark.parametrize(("rule", "problem"), [
    ({"domain": "x.test", "label": "Ali Baba"}, "label"),
    ({"domain": "x.test", "label": "x", "market": "cn"}, "market"),
    ({"domain": "x y", "label": "x"}, "domain"),
    ({"domain": "x.test", "label": "x", "answer_url": "javascript:alert(1)"}, "answer_url"),
    ({"domain": "x.test", "label": "x", "answr_url": "https://x.test"}, "answr_url"),
])
def test_bad_rules_are_refused_with_the_field(rule: dict[str, str], problem: str) -> None:
    with pytest.raises((msgspec.ValidationError, ValueError), match=problem):
        msgspec.convert(rule, SenderRule)

"""Skill and market classification read a bounded amount of text, in linear time.

The keyword matcher replaced a regex alternation; the property test holds it to the answers
that regex gives, so the speed-up changed no routing decision. Timings are in
``python -m bench.classify_hostile``, never asserted here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from routing.classify.market import classify_market
from routing.classify.skill import SkillClassifier, SkillRule, _fold, _Matcher, _unspaced, _words


def _reference(keywords: Sequence[str]) -> re.Pattern[str]:
    """The pattern the classifier used before: longest keyword first, word-bounded."""
    parts = []
    for keyword in sorted(set(keywords), key=len, reverse=True):
        part = re.escape(keyword)
        if keyword[0].isalnum() and not _unspaced(keyword[0]):
            part = r"(?<!\w)" + part
        if keyword[-1].isalnum() and not _unspaced(keyword[-1]):
            part += r"(?!\w)"
        parts.append(part)
    return re.compile("|".join(parts))


ALPHABET = "ab _-'#1中é"
keyword_text = st.text(alphabet=ALPHABET, min_size=1, max_size=6).filter(lambda k: k.strip())


@settings(max_examples=600, deadline=None)
@given(keywords=st.lists(keyword_text, min_size=1, max_size=8),
       text=st.text(alphabet=ALPHABET, max_size=60))
def test_matcher_gives_the_answers_of_the_regex(keywords: list[str], text: str) -> None:
    expected = _reference(keywords).search(text)
    found = _Matcher(keywords).search(text, _words(text))
    assert found == (expected.group(0) if expected else None)


def _classifier() -> SkillClassifier:
    return SkillClassifier([SkillRule("refund", "refund", None, ("reembolso", "quiero mi dinero"))])


def test_keywords_are_found_at_word_boundaries_only() -> None:
    clf = _classifier()
    assert clf.classify("Quiero mi dinero, ya!", "es").matched == "quiero mi dinero"
    assert clf.classify("sin reembolsos", "es").skill is None
    assert clf.classify("un REEMBOLSO.", None).matched == "reembolso"


def test_only_the_head_of_a_long_message_is_read() -> None:
    clf = _classifier()
    assert clf.classify("x " * 2000 + "reembolso", "es").skill == "refund"
    assert clf.classify("x" * 6000 + " reembolso", "es").skill is None


def test_the_bound_holds_after_unicode_expansion() -> None:
    # U+FDFA decomposes into 18 characters: 4,000 of them are 72,000 folded characters, of
    # which only the first 5,000 are read.
    assert len(_fold("\ufdfa" * 4000)) > 70_000
    clf = _classifier()
    assert clf.classify("\ufdfa " * 10 + "reembolso", "es").skill == "refund"
    assert clf.classify("\ufdfa" * 4000 + " reembolso", "es").skill is None


def test_hostile_messages_classify_without_error() -> None:
    clf = SkillClassifier.default()
    mb = 1024 * 1024
    for text in ("a@" * (mb // 2), "x" * mb, "\ufdfa" * (mb // 3), "a" + "\u0301" * mb):
        assert clf.classify(text, None).skill is None
        assert clf.classify(text, "es").skill is None


def test_oversized_evidence_is_ignored_not_parsed() -> None:
    mb = 1024 * 1024
    huge_relay = "x@marketplace.amazon." + "a." * (mb // 2) + "es"
    assert classify_market(sender_email=huge_relay).market is None
    assert classify_market(marketplace_site="a." * (mb // 2) + "br").market is None
    assert classify_market(phone="+55" + "1" * mb).market is None
    # The next evidence in rank still speaks.
    guess = classify_market(marketplace_site="x" * mb, sender_email="ana@example.com.mx")
    assert (guess.market, guess.source) == ("MX", "email_cctld")


def test_amazon_relay_still_names_the_storefront() -> None:
    guess = classify_market(sender_email="abc123@marketplace.amazon.com.mx")
    assert (guess.market, guess.source, guess.evidence) == ("MX", "amazon_domain",
                                                            "amazon.com.mx")
    assert classify_market(sender_email="a@b@marketplace.amazon.es").market == "ES"
    assert classify_market(sender_email="a@marketplace.amazon.es!").source != "amazon_domain"

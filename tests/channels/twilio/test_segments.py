"""Segment counts as Twilio bills them: GSM-7 (extension characters two septets) or UCS-2
(UTF-16 code units, emoji two), 160/70 alone and 153/67 per part once concatenated, a part
never splitting an escape or a grapheme cluster. Checked against Twilio's own segment
calculator (its answers for 465 texts, ``fixtures/segments_calculator.json``) and the GSM-7
alphabet against an independent GSM 03.38 codec (the ``gsm0338`` package)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.twilio.adapter import segments
from channels.twilio.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    SegmentInfo,
    graphemes,
    utf16_length,
)

CALCULATOR = json.loads((Path(__file__).parent / "fixtures" / "segments_calculator.json")
                        .read_text(encoding="utf-8"))


@pytest.mark.parametrize(("text", "encoding", "count"), CALCULATOR["cases"],
                         ids=[f"{len(c[0])}-{c[1]}" for c in CALCULATOR["cases"]])
def test_twilios_calculator_agrees(text: str, encoding: str, count: int) -> None:
    info = segments(text)
    assert (info.encoding, info.segments) == (encoding, count)


@pytest.mark.parametrize(("text", "clusters"), [
    ("🇪🇸🇧🇷", ["🇪🇸", "🇧🇷"]),
    ("👨\u200d👩\u200d👧!", ["👨\u200d👩\u200d👧", "!"]),
    ("👍🏽ok", ["👍🏽", "o", "k"]),
    ("e\u0301a", ["e\u0301", "a"]),
    ("\r\n", ["\r", "\n"]),
    ("x❤️y", ["x", "❤️", "y"]),
    ("\u1100\u1161\u11a8한", ["\u1100\u1161\u11a8", "한"]),
])
def test_grapheme_clusters(text: str, clusters: list[str]) -> None:
    assert graphemes(text) == clusters


def test_a_flag_moves_whole_to_the_next_part() -> None:
    info = segments("ó" * 66 + "🇪🇸" + "ó")  # 66 + 4 + 1 units; the flag cannot straddle 67
    assert (info.segments, info.units, info.remaining) == (2, 71, 62)
    assert info.unicode_characters == ("ó", "🇪🇸")


@pytest.mark.parametrize(("text", "encoding", "count", "units"), [
    ("", "GSM-7", 0, 0),
    ("a" * 160, "GSM-7", 1, 160),
    ("a" * 161, "GSM-7", 2, 161),
    ("a" * 306, "GSM-7", 2, 306),
    ("a" * 307, "GSM-7", 3, 307),
    ("€" * 80, "GSM-7", 1, 160),            # the euro sign is an escape + a septet
    ("€" * 81, "GSM-7", 2, 162),
    ("[precio] {envío}", "UCS-2", 1, 16),   # í is not GSM-7: the whole text goes UCS-2
    ("¿Dónde está?", "UCS-2", 1, 12),       # Spanish accents other than é/ñ/à are not GSM
    ("¿Llegó? Ñandú", "UCS-2", 1, 13),
    ("Voilà, ça coûte 5 €", "UCS-2", 1, 19),
    ("Hola ¿qué tal? Ñ ü é à", "GSM-7", 1, 22),
    ("x" * 70 + "ó", "UCS-2", 2, 71),
    ("é" * 70 + "ó", "UCS-2", 2, 71),
    ("ó" * 70, "UCS-2", 1, 70),
    ("📦" * 35, "UCS-2", 1, 70),             # each emoji is a surrogate pair
    ("📦" * 36, "UCS-2", 2, 72),
    ("a" * 134 + "ó", "UCS-2", 3, 135),
])
def test_counts(text: str, encoding: str, count: int, units: int) -> None:
    info = segments(text)
    assert (info.encoding, info.segments, info.units) == (encoding, count, units)


def test_an_escape_pair_is_never_split_across_parts() -> None:
    # 152 + 2 + 152 = 306 septets, two parts by arithmetic; the euro cannot straddle 153.
    info = segments("a" * 152 + "€" + "a" * 152)
    assert info == SegmentInfo("GSM-7", 3, 306, 153, 152)


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    info = segments("ó" * 66 + "📦" + "ó" * 66)  # 134 units; the emoji cannot straddle 67
    assert (info.segments, info.units, info.remaining) == (3, 134, 66)


def test_what_forced_ucs2_is_shown_to_the_agent() -> None:
    info = segments("Llegó “hoy” 👍🏽 — ó")
    assert info.unicode_characters == ("ó", "“", "”", "👍🏽", "—")
    assert segments("plain text").unicode_characters == ()


def test_remaining_room_in_the_last_part() -> None:
    assert segments("a" * 10).remaining == 150
    assert segments("a" * 200) == SegmentInfo("GSM-7", 2, 200, 153, 106)


def _gsm_codec() -> None:
    """The ``gsm03.38`` codec of the ``gsm0338`` package (the test extra), registered on
    import."""
    import gsm0338  # noqa: F401


def test_the_gsm_alphabet_is_gsm_03_38() -> None:
    """Every character from U+0000 to U+2FFF: in the basic table iff an independent codec
    encodes it as one septet, in the extension iff as two (ESC itself is not text)."""
    _gsm_codec()
    for code in range(0x3000):
        ch = chr(code)
        try:
            encoded: bytes | None = ch.encode("gsm03.38")
        except UnicodeEncodeError:
            encoded = None
        ours = 1 if ch in GSM7_BASIC else 2 if ch in GSM7_EXTENSION else None
        if ch == "\x1b":
            assert ours is None
            continue
        assert ours == (None if encoded is None else len(encoded)), repr(ch)


@given(st.text(max_size=400))
def test_counts_are_consistent_for_any_text(text: str) -> None:
    _gsm_codec()
    info = segments(text)
    assert info.units == (len(text.encode("gsm03.38")) if info.encoding == "GSM-7"
                          else utf16_length(text))
    if info.units <= (160 if info.encoding == "GSM-7" else 70):
        assert info.segments == (1 if text else 0)
    else:
        room = info.per_segment
        assert -(-info.units // room) <= info.segments  # never fewer than the arithmetic
        assert 0 <= info.remaining < room
        if all(utf16_length(c) == 1 for c in graphemes(text)) and info.encoding == "UCS-2":
            assert info.segments == -(-info.units // room)  # nothing indivisible: exact

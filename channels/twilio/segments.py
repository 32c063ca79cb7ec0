"""How many SMS segments a text costs, counted the way Twilio counts and bills them.

An SMS carries 140 bytes. Text that uses only the GSM-7 alphabet (GSM 03.38) packs 160
seven-bit septets into one message; characters of its extension table (``^{}[]~|\\€`` and form
feed) take two septets each (an escape, then the character). Any other character switches the
whole message to UCS-2, where every UTF-16 code unit takes two bytes: 70 per message, and an
emoji outside the Basic Multilingual Plane is a surrogate pair, two units. A longer message is
sent concatenated: each part gives up room to a header, leaving 153 septets or 67 code units
(CHANNELS.md §3). Like Twilio's own segment calculator (TwilioDevEd/message-segment-calculator),
a part never splits a character: not an escape from its character, and not a user-perceived
character (a grapheme cluster: a flag, an emoji with a skin tone or a ZWJ family, a letter with
combining accents), which moves whole to the next part; CR LF counts as two characters.

Counted without Twilio's Smart Encoding (which may swap curly quotes and the like for GSM
characters when the Messaging Service enables it), so the count is the worst case: what the
agent sees is never less than what is billed.
"""

from __future__ import annotations

import unicodedata
from typing import Final, Literal

import msgspec

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")

SINGLE: Final[dict[Encoding, int]] = {"GSM-7": 160, "UCS-2": 70}
CONCATENATED: Final[dict[Encoding, int]] = {"GSM-7": 153, "UCS-2": 67}
MAX_SHOWN_CHARACTERS: Final = 5


class SegmentInfo(msgspec.Struct, frozen=True):
    """What the reply box shows under a draft.

    ``units``: septets (GSM-7) or UTF-16 code units (UCS-2) the text takes. ``per_segment``:
    the room in each segment at this length (160/70 for one, 153/67 once concatenated).
    ``remaining``: units left in the last segment before another one starts.
    ``unicode_characters``: the first few characters (grapheme clusters) that forced UCS-2,
    so the agent can replace them and halve the cost. An empty text is 0 segments (Twilio
    refuses an empty body; its calculator would say 1).
    """

    encoding: Encoding
    segments: int
    units: int
    per_segment: int
    remaining: int
    unicode_characters: tuple[str, ...] = ()


_ZWJ: Final = "\u200d"


def _extends(ch: str) -> bool:
    """Code points that attach to the one before them (UAX #29 Extend, SpacingMark, ZWJ)."""
    code = ord(ch)
    return (unicodedata.category(ch) in ("Mn", "Me", "Mc") or ch == _ZWJ
            or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF  # variation selectors
            or 0x1F3FB <= code <= 0x1F3FF                              # emoji skin tones
            or 0xE0020 <= code <= 0xE007F)                             # emoji tag sequences


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _hangul(ch: str) -> str | None:
    code = ord(ch)
    if 0x1100 <= code <= 0x115F or 0xA960 <= code <= 0xA97C:
        return "L"
    if 0x1160 <= code <= 0x11A7 or 0xD7B0 <= code <= 0xD7C6:
        return "V"
    if 0x11A8 <= code <= 0x11FF or 0xD7CB <= code <= 0xD7FB:
        return "T"
    if 0xAC00 <= code <= 0xD7A3:
        return "LV" if (code - 0xAC00) % 28 == 0 else "LVT"
    return None


_HANGUL_NEXT: Final = {"L": {"L", "V", "LV", "LVT"}, "V": {"V", "T"}, "LV": {"V", "T"},
                       "T": {"T"}, "LVT": {"T"}}


def graphemes(text: str) -> list[str]:
    """User-perceived characters: UAX #29's extended grapheme clusters for what buyers type
    (combining marks, emoji modifier and ZWJ sequences, flags, Hangul syllables), CR LF as two
    (as Twilio's calculator splits it). Indic conjunct and prepend rules are left out: such a
    cluster is counted as its parts, which can only place a part boundary earlier."""
    clusters: list[str] = []
    for ch in text:
        if clusters:
            last = clusters[-1]
            prev = last[-1]
            prev_jamo, jamo = _hangul(prev), _hangul(ch)
            joined = (
                (_extends(ch) and prev not in "\r\n")
                or (prev == _ZWJ and len(last) > 1)
                or (_regional(ch) and _regional(prev)
                    and sum(1 for c in last if _regional(c)) % 2 == 1)
                or (prev_jamo is not None and jamo is not None
                    and jamo in _HANGUL_NEXT[prev_jamo])
            )
            if joined:
                clusters[-1] = last + ch
                continue
        clusters.append(ch)
    return clusters


def _unit_sizes(text: str, encoding: Encoding) -> list[int]:
    """Per indivisible piece, the units it takes: a GSM-7 character (an escape and its
    character together), or a grapheme cluster's UTF-16 code units."""
    if encoding == "GSM-7":
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [utf16_length(cluster) for cluster in graphemes(text)]


def segments(text: str) -> SegmentInfo:
    """The encoding and segment count Twilio will use for ``text`` (module docstring)."""
    unicode_chars = tuple(dict.fromkeys(
        cluster for cluster in graphemes(text)
        if any(ch not in GSM7_BASIC and ch not in GSM7_EXTENSION for ch in cluster)))
    encoding: Encoding = "UCS-2" if unicode_chars else "GSM-7"
    sizes = _unit_sizes(text, encoding)
    units = sum(sizes)
    single = SINGLE[encoding]
    if units <= single:
        count = 1 if units else 0
        return SegmentInfo(encoding, count, units, single, single - units,
                           unicode_chars[:MAX_SHOWN_CHARACTERS])
    room = CONCATENATED[encoding]
    count, used = 1, 0
    for size in sizes:
        if used + size > room:
            count, used = count + 1, 0
        used += size
    return SegmentInfo(encoding, count, units, room, room - used,
                       unicode_chars[:MAX_SHOWN_CHARACTERS])


def utf16_length(text: str) -> int:
    """UTF-16 code units: the 1600-character body limit is checked in these, conservatively
    (an emoji counts as two), so a reply the check lets through is not refused for length."""
    return len(text.encode("utf-16-le")) // 2

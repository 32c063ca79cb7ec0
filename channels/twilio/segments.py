"""How many SMS segments a text costs, counted the way Twilio counts and bills them.

An SMS carries 140 bytes. Text that uses only the GSM-7 alphabet (GSM 03.38) packs 160
seven-bit septets into one message; characters of its extension table (``^{}[]~|\\€`` and form
feed) take two septets each (an escape, then the character). Any other character switches the
whole message to UCS-2, where every UTF-16 code unit takes two bytes: 70 per message, and an
emoji outside the Basic Multilingual Plane is a surrogate pair, two units. A longer message is
sent concatenated: each part gives up room to a header, leaving 153 septets or 67 code units,
and a part never ends between an escape and its character or between the halves of a surrogate
pair (CHANNELS.md §3; Twilio's segment calculator counts the same way).

Counted without Twilio's Smart Encoding (which may swap curly quotes and the like for GSM
characters when the Messaging Service enables it), so the count is the worst case: what the
agent sees is never less than what is billed.
"""

from __future__ import annotations

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
    ``unicode_characters``: the first few characters that forced UCS-2, so the agent can
    replace them and halve the cost.
    """

    encoding: Encoding
    segments: int
    units: int
    per_segment: int
    remaining: int
    unicode_characters: tuple[str, ...] = ()


def _unit_sizes(text: str, encoding: Encoding) -> list[int]:
    """Per character, the indivisible units it takes (a pair never splits across parts)."""
    if encoding == "GSM-7":
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def segments(text: str) -> SegmentInfo:
    """The encoding and segment count Twilio will use for ``text`` (module docstring)."""
    unicode_chars = tuple(dict.fromkeys(
        ch for ch in text if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION))
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

"""Splitting a long reply into Telegram-sized messages.

``sendMessage`` takes 1-4096 characters; Telegram counts UTF-16 code units (an emoji outside the
Basic Multilingual Plane is two), so lengths here are UTF-16 lengths and a text that Python
counts as 4096 characters can still be too long. A cut goes at the last paragraph break that
fits, else the last line break, else the last space, else hard (never inside a character); the
whitespace at a cut is dropped, so no part is empty or starts with a blank line.
"""

from __future__ import annotations


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int) -> list[str]:
    """``text`` in parts of at most ``limit`` UTF-16 units each (``[text]`` when it fits)."""
    if limit < 1:
        raise ValueError("limit must be positive")
    parts: list[str] = []
    rest = text.strip()
    while utf16_length(rest) > limit:
        fit = _fitting_prefix(rest, limit)
        cut = _boundary(rest, fit)
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if head:
            parts.append(head)
    if rest:
        parts.append(rest)
    return parts


def _fitting_prefix(text: str, limit: int) -> int:
    """The number of characters of ``text`` whose UTF-16 length is at most ``limit``."""
    units = 0
    for i, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def _boundary(text: str, fit: int) -> int:
    """Where to cut within ``text[:fit]``: a boundary in the second half of it if there is one
    (cutting a 4096-unit budget at character 12 would make a flood of tiny messages)."""
    window = text[:fit + 1]  # a break right after the fitting prefix is a clean cut too
    floor = fit // 2
    for separator in ("\n\n", "\n", " "):
        at = window.rfind(separator)
        if at > floor:
            return at
    return fit

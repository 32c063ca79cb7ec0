"""Agents' tags on conversations: normalised here, stored in the record's ``tags`` field and
indexed as ``idx:tag:<tag>`` by the ``tags`` command of lua/conversations.lua (one atomic
read-modify-write, so two agents tagging at once lose nothing). The tag index rides the
record's ``_idx`` memberships, so erasure and retention remove it with the record.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Final

from redis.exceptions import ResponseError

from storage.store import Store, UnknownConversation

MAX_TAG: Final = 32
MAX_TAGS: Final = 20
# Letters and digits of any script, and space - _ . inside; no comma (it separates filter
# values), no newline (it separates stored tags), no control characters.
_TAG = re.compile(r"[^\W_](?:[\w .-]*[^\W_])?")


class TooManyTags(ValueError):
    """The change would leave more than ``MAX_TAGS`` tags on the conversation."""


def normalise_tag(raw: str) -> str:
    """NFKC, case-folded, trimmed, inner whitespace collapsed; ValueError when not a tag."""
    tag = " ".join(unicodedata.normalize("NFKC", raw).casefold().split())
    if not 1 <= len(tag) <= MAX_TAG:
        raise ValueError(f"a tag has 1..{MAX_TAG} characters, got {len(tag)}")
    if not _TAG.fullmatch(tag):
        raise ValueError(f"{tag[:40]!r}: a tag is letters, digits, and space - _ . inside")
    return tag


async def change_tags(store: Store, conversation_id: str, add: Sequence[str],
                      remove: Sequence[str]) -> list[str]:
    """Add and remove (already normalised) tags; returns the conversation's tags after."""
    k = store.keys_for(conversation_id)
    if k is None:
        raise UnknownConversation(conversation_id)
    try:
        result = await store.scripts.conversations(
            keys=[k.conversations],
            args=[k.base, "tags", conversation_id, MAX_TAGS, "\n".join(add), "\n".join(remove)])
    except ResponseError as exc:
        if "NOCONV" in str(exc):
            raise UnknownConversation(conversation_id) from None
        if "TOOMANY" in str(exc):
            raise TooManyTags(conversation_id) from None
        raise
    return [t.decode() if isinstance(t, bytes) else str(t) for t in result]

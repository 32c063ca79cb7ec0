"""The message history with private notes in it (``GET .../messages?include=notes``).

Messages page on their per-conversation sequence, notes on their index in the append-only
note list; a page is the merge of the two by time (``created_at``; a message before a note of
the same instant, the other way round newest first), and its cursor carries both places, so
paging stays exact whichever side a page ends on. Every item says its ``kind``; a note is
only ever read here and by the notes routes, never by the sender or the export.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

import msgspec

from hub import query as q
from hub.errors import ApiError
from storage.history import note_count, notes_slice
from storage.records import MessageView
from storage.store import Store
from storage.workflow import Note

MAX_SEQ = 2**53
INCLUDE_NOTES = q.choice("include", "notes: the private notes too, interleaved by time "
                                    "(items of kind \"note\"; never sent)", ("notes",))


class HistoryMessage(MessageView, frozen=True, omit_defaults=True, tag_field="kind",
                     tag="message"):
    """A message in the history (``kind`` "message")."""


class HistoryNote(msgspec.Struct, frozen=True, tag_field="kind", tag="note"):
    """A private note in the history (``kind`` "note"): seen by agents, never sent."""

    id: str
    conversation_id: str
    author: str
    text: str
    created_at: float


HistoryItem = HistoryMessage | HistoryNote


class HistoryList(msgspec.Struct, frozen=True):
    """Messages (and with include=notes the private notes) in order; pass ``next_cursor``
    as ``cursor`` for more (null: no more)."""

    messages: list[HistoryItem]
    next_cursor: str | None


class HistoryCursor(msgspec.Struct, frozen=True, tag="h", forbid_unknown_fields=True):
    """``q``: the last message sequence passed (None: none yet); ``n``: the index of the next
    note to take (oldest first: counting up; newest first: counting down, -1 = none left)."""

    c: str
    q: int | None
    n: int
    o: Literal["asc", "desc"]


_cursor = msgspec.json.Decoder(HistoryCursor)


def _encode(cursor: HistoryCursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).rstrip(b"=").decode()


def history_position(raw: str, conversation_id: str, order: str) -> HistoryCursor:
    """The cursor a previous page of this conversation's history (with notes) gave."""
    try:
        cursor = _cursor.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise ApiError(400, "cursor: not a message cursor with notes of this conversation "
                            "(a cursor from a page without include=notes does not continue "
                            "one with it)", "invalid_cursor") from None
    if cursor.c != conversation_id:
        raise ApiError(400, "cursor: not a message cursor of this conversation",
                       "invalid_cursor")
    if cursor.o != order:
        raise ApiError(400, f"cursor: issued for order={cursor.o}, not order={order}",
                       "invalid_cursor")
    if (cursor.q is not None and not 0 <= cursor.q < MAX_SEQ) or not -1 <= cursor.n < MAX_SEQ:
        raise ApiError(400, "cursor: out of range", "invalid_cursor")
    return cursor


def as_item(message: MessageView) -> HistoryMessage:
    return HistoryMessage(**msgspec.structs.asdict(message))


def _note(note: Note) -> HistoryNote:
    return HistoryNote(note.id, note.conversation_id, note.author, note.text, note.created_at)


async def history_page(store: Store, conversation_id: str, *, limit: int, order: str,
                       cursor: HistoryCursor | None) -> HistoryList:
    """One page of messages and notes merged by time."""
    descending = order == "desc"
    after = cursor.q if cursor is not None else None
    page = await store.page_messages(conversation_id, limit=limit, after_seq=after,
                                     descending=descending)
    if cursor is not None:
        start = cursor.n
    else:  # newest first starts at the newest note there is now
        start = await note_count(store, conversation_id) - 1 if descending else 0
    if descending:
        notes = list(reversed(await notes_slice(store, conversation_id, start - limit, start)))
    else:
        notes = await notes_slice(store, conversation_id, start, start + limit)
    more_notes = len(notes) > limit
    notes = notes[:limit]

    items: list[HistoryItem] = []
    m = n = 0
    messages = page.messages
    while len(items) < limit and (m < len(messages) or n < len(notes)):
        take_note = m >= len(messages) or (
            n < len(notes) and (notes[n].created_at > messages[m].created_at if descending
                                else notes[n].created_at < messages[m].created_at))
        if take_note:
            items.append(_note(notes[n]))
            n += 1
        else:
            items.append(as_item(messages[m]))
            m += 1
    more = m < len(messages) or page.next_seq is not None or n < len(notes) or more_notes
    if not more:
        return HistoryList(items, None)
    last_seq = messages[m - 1].seq if m else after
    next_note = start - n if descending else start + n
    return HistoryList(items, _encode(HistoryCursor(conversation_id, last_seq, next_note,
                                                    "desc" if descending else "asc")))

"""Opaque cursors for keyset paging.

A cursor is the last row's sort key (base64url JSON), so the next page starts exactly after
it however many rows share a timestamp, and a page costs the same deep in a list as at its
head. Clients must treat it as opaque; a cursor that does not decode into the kind the endpoint
issues is a 400, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Literal

import msgspec

from hub.errors import ApiError
from storage.fetches import is_job_id
from storage.store import Position

_SCORE = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?")
_ID = re.compile(r"[0-9]{1,4}\.[0-9a-f]{1,40}")


class ConversationCursor(msgspec.Struct, frozen=True, tag="c", forbid_unknown_fields=True):
    s: str
    i: str


class MessageCursor(msgspec.Struct, frozen=True, tag="m", forbid_unknown_fields=True):
    c: str
    q: int
    o: Literal["asc", "desc"]


class FetchCursor(msgspec.Struct, frozen=True, tag="f", forbid_unknown_fields=True):
    i: str


class DeadlineCursor(msgspec.Struct, frozen=True, tag="d", forbid_unknown_fields=True):
    """The SLA-ordered list's position (storage/sla.py): a deadline and an id."""

    s: str
    i: str


Cursor = ConversationCursor | MessageCursor | FetchCursor | DeadlineCursor
_decoder = msgspec.json.Decoder(Cursor)


def _encode(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).rstrip(b"=").decode()


def _decode(raw: str) -> Cursor:
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        return _decoder.decode(data)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise ApiError(400, "cursor: not a cursor this API issued", "invalid_cursor") from None


def conversation_cursor(position: Position | None) -> str | None:
    return None if position is None else _encode(ConversationCursor(position.score, position.id))


def conversation_position(raw: str) -> Position:
    cursor = _decode(raw)
    if (not isinstance(cursor, ConversationCursor) or not _SCORE.fullmatch(cursor.s)
            or not math.isfinite(float(cursor.s))
            or (cursor.i and not _ID.fullmatch(cursor.i))):
        raise ApiError(400, "cursor: not a conversation-list cursor", "invalid_cursor")
    return Position(cursor.s, cursor.i)


def deadline_cursor(position: Position | None) -> str | None:
    return None if position is None else _encode(DeadlineCursor(position.score, position.id))


def deadline_position(raw: str) -> Position:
    cursor = _decode(raw)
    if (not isinstance(cursor, DeadlineCursor) or not _SCORE.fullmatch(cursor.s)
            or not math.isfinite(float(cursor.s)) or not _ID.fullmatch(cursor.i)):
        raise ApiError(400, "cursor: not a cursor of the SLA-ordered list (sla or "
                            "sla_due_within)", "invalid_cursor")
    return Position(cursor.s, cursor.i)


def message_cursor(conversation_id: str, seq: int | None, order: str) -> str | None:
    if seq is None:
        return None
    return _encode(MessageCursor(conversation_id, seq, "desc" if order == "desc" else "asc"))


def message_position(raw: str, conversation_id: str, order: str) -> int:
    cursor = _decode(raw)
    if not isinstance(cursor, MessageCursor) or cursor.c != conversation_id:
        raise ApiError(400, "cursor: not a message cursor of this conversation",
                       "invalid_cursor")
    if cursor.o != order:
        raise ApiError(400, f"cursor: issued for order={cursor.o}, not order={order}",
                       "invalid_cursor")
    if not 0 <= cursor.q < 2**53:
        raise ApiError(400, "cursor: out of range", "invalid_cursor")
    return cursor.q


def fetch_cursor(last_id: str | None) -> str | None:
    return None if last_id is None else _encode(FetchCursor(last_id))


def fetch_position(raw: str) -> str:
    """The id of the last fetch entry of the previous page."""
    cursor = _decode(raw)
    if not isinstance(cursor, FetchCursor) or not is_job_id(cursor.i):
        raise ApiError(400, "cursor: not a fetch-list cursor", "invalid_cursor")
    return cursor.i

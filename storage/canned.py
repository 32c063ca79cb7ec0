"""Canned replies: a team's ready answers, one text per language, with variables the inbox
fills from the conversation ({buyer_name}, {order_id}, {tracking_number}, {agent_name}).

Kept in one hash (``ih:{g}:canned``: id -> JSON) beside the rest of the hub's data, so every
hub process serves the same set and a backup of Redis carries them. A template may name only
the known variables: an unknown one is refused when it is saved, never found when an agent
picks it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from redis.asyncio import Redis

from storage import keys
from storage.keys import new_id

VARIABLES = ("buyer_name", "order_id", "tracking_number", "agent_name")
MAX_REPLIES = 2000
TEXT_MAX_CHARS = 10_000
_VARIABLE = re.compile(r"\{([^{}\s]{1,64})\}")

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
Language = Annotated[str, msgspec.Meta(pattern="^[a-z]{2}$")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=TEXT_MAX_CHARS)]
Shortcut = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_.-]{1,32}$")]


class CannedReply(msgspec.Struct, frozen=True):
    """One language's text of a canned reply; ``shortcut`` is what an agent types to pick it
    (unique per language)."""

    id: str
    name: str
    language: str
    text: str
    shortcut: str | None
    updated_at: float
    updated_by: str


class UnknownVariable(ValueError):
    """The text names a variable the inbox cannot fill."""


class ShortcutTaken(ValueError):
    """Another canned reply of the same language has this shortcut."""


class TooMany(ValueError):
    """The hub keeps at most ``MAX_REPLIES`` canned replies."""


def variables_in(text: str) -> list[str]:
    return _VARIABLE.findall(text)


def check_variables(text: str) -> None:
    unknown = [v for v in variables_in(text) if v not in VARIABLES]
    if unknown:
        raise UnknownVariable(f"unknown variable {{{unknown[0]}}}; known: "
                              + ", ".join(f"{{{v}}}" for v in VARIABLES))


def fill(text: str, values: Mapping[str, str | None]) -> tuple[str, list[str]]:
    """The text with its variables filled; a variable with no value is left as a visible
    ``[[name]]`` marker for the agent to complete, and listed as missing."""
    missing: list[str] = []

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values.get(name)
        if value:
            return value
        if name not in missing:
            missing.append(name)
        return f"[[{name}]]"

    return _VARIABLE.sub(one, text), missing


_decoder = msgspec.json.Decoder(CannedReply)


class CannedReplies:
    """The canned replies in Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis: Any = redis

    async def all(self) -> list[CannedReply]:
        raw = await self.redis.hvals(keys.CANNED_REPLIES)
        return sorted((_decoder.decode(r) for r in raw), key=lambda c: (c.name, c.language))

    async def get(self, reply_id: str) -> CannedReply | None:
        raw = await self.redis.hget(keys.CANNED_REPLIES, reply_id)
        return None if raw is None else _decoder.decode(raw)

    async def save(self, *, name: str, language: str, text: str, shortcut: str | None,
                   by: str, reply_id: str | None = None) -> CannedReply:
        """Create (``reply_id`` None) or replace one; checks variables and the shortcut."""
        check_variables(text)
        existing = await self.all()
        if reply_id is None and len(existing) >= MAX_REPLIES:
            raise TooMany(f"at most {MAX_REPLIES} canned replies")
        if shortcut is not None and any(
                c.shortcut == shortcut and c.language == language and c.id != reply_id
                for c in existing):
            raise ShortcutTaken(f"shortcut {shortcut!r} is taken in language {language!r}")
        reply = CannedReply(id=reply_id or new_id(0), name=name, language=language, text=text,
                            shortcut=shortcut, updated_at=time.time(), updated_by=by)
        await self.redis.hset(keys.CANNED_REPLIES, reply.id, msgspec.json.encode(reply))
        return reply

    async def delete(self, reply_id: str) -> bool:
        return bool(await self.redis.hdel(keys.CANNED_REPLIES, reply_id))

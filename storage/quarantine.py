"""The quarantine: authentic input we could not normalize, kept for operators to inspect and
parse again after a fix or an upgrade (``inboxhub quarantine retry ID``).

Bounded by entry count and by bytes (``storage.quarantine_max_entries``,
``storage.quarantine_max_bytes``): the oldest entries go first, in the same atomic step that adds
a new one (``storage/lua/quarantine.lua``), and each eviction is logged. A raw body longer than
``RAW_LIMIT`` is kept cut and flagged ``truncated``: it can be read, never parsed again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from storage import keys
from storage.scripts import load_script

log = logging.getLogger(__name__)

RAW_LIMIT = 64 * 1024
ERROR_LIMIT = 2000
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 512 * 1024 * 1024

_headers_encoder = msgspec.json.Encoder()
_headers_decoder = msgspec.json.Decoder(dict[str, str])


class UnknownEntry(LookupError):
    """No quarantine entry has that id (never had, or already retried or evicted)."""


class StoredInput(msgspec.Struct, frozen=True):
    """One quarantine entry as stored, with what a retry needs."""

    id: str
    channel_instance: str
    error: str
    raw: bytes
    truncated: bool
    received_at: float
    headers: dict[str, str] = {}
    retries: int = 0


class QuarantineLog:
    """The quarantine stream with its bounds; one per ``Store``."""

    def __init__(self, redis: Redis, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 1 or max_bytes < RAW_LIMIT:
            raise ValueError(f"quarantine bounds must be >= 1 entry and >= {RAW_LIMIT} bytes")
        self.redis: Any = redis
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._script = load_script(redis, "quarantine")

    async def add(self, channel_instance: str, raw: bytes, error: str, *,
                  headers: Mapping[str, str] | None = None) -> str:
        kept = raw[:RAW_LIMIT]
        error = error[:ERROR_LIMIT]
        fields: list[Any] = [
            "instance", channel_instance, "error", error, "raw", kept,
            "truncated", int(len(raw) > RAW_LIMIT), "received_at", repr(time.time()),
        ]
        encoded_headers = _headers_encoder.encode(dict(headers)) if headers else b""
        if encoded_headers:
            fields += ["headers", encoded_headers]
        size = len(kept) + len(encoded_headers) + len(error.encode())
        entry, evicted = await self._script(
            keys=[keys.QUARANTINE, keys.QUARANTINE_BYTES],
            args=["add", self.max_entries, self.max_bytes, size, *fields],
        )
        if evicted:
            log.warning("quarantine full (%d entries / %d bytes max): dropped the %d oldest",
                        self.max_entries, self.max_bytes, evicted)
        return _text(entry)

    async def get(self, entry_id: str) -> StoredInput | None:
        if not keys.is_stream_id(entry_id):
            return None
        rows = await self.redis.xrange(keys.QUARANTINE, entry_id, entry_id)
        if not rows:
            return None
        fields: dict[bytes, bytes] = rows[0][1]
        raw_headers = fields.get(b"headers")
        return StoredInput(
            id=entry_id,
            channel_instance=_text(fields.get(b"instance")),
            error=_text(fields.get(b"error")),
            raw=fields.get(b"raw", b""),
            truncated=fields.get(b"truncated") == b"1",
            received_at=float(fields.get(b"received_at") or 0),
            headers=_headers_decoder.decode(raw_headers) if raw_headers else {},
            retries=int(fields.get(b"retries") or 0),
        )

    async def remove(self, entry_id: str) -> bool:
        return bool(await self._script(keys=[keys.QUARANTINE, keys.QUARANTINE_BYTES],
                                       args=["remove", entry_id]))

    async def replace(self, entry: StoredInput, error: str) -> str:
        """A retry failed again: keep the input with the new error; returns the new entry id."""
        error = error[:ERROR_LIMIT]
        encoded_headers = _headers_encoder.encode(entry.headers) if entry.headers else b""
        size = len(entry.raw) + len(encoded_headers) + len(error.encode())
        try:
            new_id, _evicted = await self._script(
                keys=[keys.QUARANTINE, keys.QUARANTINE_BYTES],
                args=["replace", entry.id, error, size, self.max_entries, self.max_bytes],
            )
        except ResponseError as exc:
            if "NOENTRY" in str(exc):
                raise UnknownEntry(entry.id) from None
            raise
        return _text(new_id)

    async def usage(self) -> tuple[int, int]:
        """(entries, bytes) held now."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.QUARANTINE)
            pipe.get(keys.QUARANTINE_BYTES)
            count, size = await pipe.execute()
        return int(count), int(size or 0)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value

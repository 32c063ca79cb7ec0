"""The store's schema version: one key, checked (and upgraded) at start-up.

Version 1 is the first release's layout (commit b90baeb), which wrote no version key.
Version 2 adds the quarantine's byte counter (``storage/lua/quarantine.lua``); upgrading
computes it from the entries present. A store written by a newer release than this one (a
version we do not know) is refused with a clear error: running old code on data it does not
understand could corrupt it. An empty database is simply stamped with the current version.

Each upgrade is idempotent, so hub processes starting together may all run it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from storage import keys

log = logging.getLogger(__name__)

CURRENT = 2


class SchemaTooNew(RuntimeError):
    """The data was written by a newer inboxhub than this one."""


async def _quarantine_byte_counter(redis: Any) -> None:
    total = 0
    start = "-"
    while True:
        rows = await redis.xrange(keys.QUARANTINE, start, "+", count=500)
        for _eid, f in rows:
            total += int(f[b"size"]) if b"size" in f else \
                len(f.get(b"raw", b"")) + len(f.get(b"error", b""))
        if len(rows) < 500:
            break
        start = "(" + rows[-1][0].decode()
    await redis.set(keys.QUARANTINE_BYTES, total)


# UPGRADES[n] takes a store from version n to n + 1.
UPGRADES: dict[int, Callable[[Any], Awaitable[None]]] = {1: _quarantine_byte_counter}


async def stored_version(redis: Redis) -> int | None:
    """The version on record; 1 for data of the first release (no key); None when empty."""
    raw = await redis.get(keys.SCHEMA_VERSION)
    if raw is not None:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        if not text.isascii() or not text.isdigit():
            raise SchemaTooNew(f"{keys.SCHEMA_VERSION} holds {text!r}, not a schema version")
        return int(text)
    async for _key in redis.scan_iter(match=f"{keys.PREFIX}:*", count=1000):
        return 1
    return None


async def ensure_schema(redis: Redis) -> int:
    """Check the stored version and upgrade it to ``CURRENT``; returns the version found."""
    found = await stored_version(redis)
    if found is not None and found > CURRENT:
        raise SchemaTooNew(
            f"this Redis holds inboxhub data of schema version {found}, written by a newer "
            f"release; this release understands versions up to {CURRENT}. Run the newer "
            "release, or restore a backup taken before the upgrade (README: Backup and upgrade)"
        )
    version = found if found is not None else CURRENT
    while version < CURRENT:
        log.info("upgrading stored data from schema version %d to %d", version, version + 1)
        await UPGRADES[version](redis)
        version += 1
        await redis.set(keys.SCHEMA_VERSION, version)
    if found is None:
        await redis.set(keys.SCHEMA_VERSION, CURRENT)
    return found if found is not None else CURRENT

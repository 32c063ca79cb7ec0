"""The store's schema version: one key, checked (and upgraded) at start-up.

Version 1 is the first release's layout (commit b90baeb), which wrote no version key.
Version 2 adds the quarantine's byte counter (``storage/lua/quarantine.lua``); upgrading
computes it from the entries present. Version 3 adds the conversations' filter indexes
(``storage/lua/conversations.lua``); upgrading indexes every record already stored, so
filtered and agent-scoped lists find conversations written by an earlier release. Version 4
adds the search index (``storage/search.py``); upgrading indexes every stored inbound message,
so search finds what an earlier release stored. Version 5 adds the SLA deadline index
(``storage/sla.py``); upgrading derives the running clocks of every open conversation routed by an
earlier release, so the SLA-due list shows them. A store
written by a newer release than this one (a version we do not know) is refused with a clear
error: running old code on data it does not understand could corrupt it. An empty database
is simply stamped with the current version.

Each upgrade is idempotent, so hub processes starting together may all run it.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis

from storage import keys

log = logging.getLogger(__name__)

CURRENT = 5


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


async def _filter_indexes(redis: Any, partitions: int) -> None:
    from storage.store import Store

    seen = await Store(redis, partitions=partitions).backfill_indexes()
    log.info("indexed %d stored conversation(s) for filtered lists", seen)


async def _search_index(redis: Any, partitions: int) -> None:
    from storage import search
    from storage.store import Store

    seen = await search.backfill(redis, Store(redis, partitions=partitions).partition_keys())
    log.info("indexed %d stored message(s) for search", seen)


async def _sla_index(redis: Any) -> None:
    from storage import sla

    listed = await sla.backfill(redis)
    log.info("indexed %d open conversation(s) with a running SLA clock", listed)


async def _upgrade(version: int, redis: Any, partitions: int) -> None:
    """Take a store from ``version`` to ``version + 1``."""
    if version == 1:
        await _quarantine_byte_counter(redis)
    elif version == 2:
        await _filter_indexes(redis, partitions)
    elif version == 3:
        await _search_index(redis, partitions)
    elif version == 4:
        await _sla_index(redis)
    else:  # pragma: no cover - CURRENT and this list move together
        raise AssertionError(f"no upgrade from schema version {version}")


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


async def ensure_schema(redis: Redis, *, partitions: int = 1) -> int:
    """Check the stored version and upgrade it to ``CURRENT``; returns the version found.

    ``partitions`` is the store's (``storage.partitions``): upgrades that walk conversations
    must visit every partition."""
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
        await _upgrade(version, redis, partitions)
        version += 1
        await redis.set(keys.SCHEMA_VERSION, version)
    if found is None:
        await redis.set(keys.SCHEMA_VERSION, CURRENT)
    return found if found is not None else CURRENT

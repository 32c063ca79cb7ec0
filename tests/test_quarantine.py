"""The quarantine is bounded by entry count and by bytes, oldest first, and keeps its byte
count exact through additions, removals and replacements."""

from __future__ import annotations

from redis.asyncio import Redis

from storage import keys
from storage.quarantine import RAW_LIMIT, QuarantineLog


async def _sizes(redis: Redis) -> tuple[int, int]:
    """(entries, sum of their sizes) read from the stream itself."""
    rows = await redis.xrange(keys.QUARANTINE)
    return len(rows), sum(int(f[b"size"]) for _, f in rows)


async def test_bounded_by_count_oldest_first(redis: Redis) -> None:
    log = QuarantineLog(redis, max_entries=3, max_bytes=10 * RAW_LIMIT)
    ids = [await log.add("shop", f"body {i}".encode(), "bad") for i in range(5)]
    rows = await redis.xrange(keys.QUARANTINE)
    assert [r[0].decode() for r in rows] == ids[2:]
    count, size = await log.usage()
    assert (count, size) == await _sizes(redis)


async def test_bounded_by_bytes_oldest_first(redis: Redis) -> None:
    log = QuarantineLog(redis, max_entries=1000, max_bytes=RAW_LIMIT)
    first = await log.add("shop", b"a" * 30_000, "bad")
    second = await log.add("shop", b"b" * 30_000, "bad")
    third = await log.add("shop", b"c" * 30_000, "bad")  # 90 kB > 64 KiB: the first goes
    assert await log.get(first) is None
    assert await log.get(second) is not None and await log.get(third) is not None
    count, size = await log.usage()
    assert (count, size) == await _sizes(redis) and size <= RAW_LIMIT
    # An entry bigger than the whole bound is still kept (cut at RAW_LIMIT), alone.
    big = await log.add("shop", b"d" * (3 * RAW_LIMIT), "huge")
    entry = await log.get(big)
    assert entry is not None and entry.truncated and len(entry.raw) == RAW_LIMIT
    assert [r[0].decode() for r in await redis.xrange(keys.QUARANTINE)] == [big]


async def test_remove_and_replace_keep_the_byte_count(redis: Redis) -> None:
    log = QuarantineLog(redis)
    a = await log.add("shop", b"x" * 100, "first error", headers={"X-Event": "order"})
    b = await log.add("shop", b"y" * 50, "e")
    entry = await log.get(a)
    assert entry is not None and entry.headers == {"X-Event": "order"} and entry.retries == 0
    new = await log.replace(entry, "second error")
    assert new != a and await log.get(a) is None
    again = await log.get(new)
    assert again is not None
    assert (again.raw, again.error, again.retries, again.headers) == (
        b"x" * 100, "second error", 1, {"X-Event": "order"})
    assert again.received_at == entry.received_at
    assert await log.remove(b) and not await log.remove(b)
    assert await log.usage() == await _sizes(redis)
    assert await log.remove(new)
    assert await log.usage() == (0, 0)


async def test_entries_of_the_previous_release_count_when_removed(redis: Redis) -> None:
    """Entries written before sizes existed have none; removing one must not drive the byte
    count negative."""
    old = (await redis.xadd(keys.QUARANTINE, {"instance": "shop", "error": "e", "raw": b"r" * 10,
                                              "truncated": 0, "received_at": "1.0"})).decode()
    log = QuarantineLog(redis)
    assert await log.remove(old)
    assert await log.usage() == (0, 0)


async def test_hostile_entry_ids_are_not_looked_up(redis: Redis) -> None:
    log = QuarantineLog(redis)
    for bad in ["\u00b2-0", "-", "+", "0-0 ", "1-0\x00", ""]:
        assert await log.get(bad) is None

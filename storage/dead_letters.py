"""``dlq retry --all``: queue every dead-lettered reply for sending again.

Each reply goes through the same atomic step as a single retry (``retry_dead.lua``), so two
operators retrying at once, or a retry racing the sender, still send a reply once. Entries
whose reply is no longer in the failed state (already retried, or sent since) are skipped and
counted; the dead-letter streams are walked by id, so entries removed while we walk are
neither missed nor visited twice.
"""

from __future__ import annotations

import msgspec

from storage.store import NotRetryable, Store, UnknownMessage

_BATCH = 500


class RetryAllResult(msgspec.Struct, frozen=True):
    queued: int
    skipped: int


async def retry_all_dead_letters(store: Store) -> RetryAllResult:
    queued = skipped = 0
    redis = store.redis
    for k in store.partition_keys():
        start = "-"
        while True:
            rows = await redis.xrange(k.dlq, start, "+", count=_BATCH)
            for entry_id, fields in rows:
                message_id = fields.get(b"msg", b"").decode()
                try:
                    await store.retry_dead_letter(message_id)
                    queued += 1
                except (NotRetryable, UnknownMessage):
                    skipped += 1
                    # A stale entry (its reply was retried another way): drop it so the
                    # dead-letter view shows only replies that are really failed.
                    await redis.xdel(k.dlq, entry_id)
            if len(rows) < _BATCH:
                break
            start = "(" + rows[-1][0].decode()
    return RetryAllResult(queued=queued, skipped=skipped)

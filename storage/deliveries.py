"""Delivery receipts on the hub's Redis: ``channels.services.receipts.DeliveryIndex``.

The index from provider id to our message id is written by ``Store.mark_sent`` in the step
that records the send (``storage/lua/deliveries.lua``, command "sent"), in the message's own
partition, so the two can never disagree and the step stays on one Cluster slot. A receipt
names only the channel instance and the provider's id, not the partition, so ``apply`` asks
each partition's index (one pipelined round; with one partition, one call). When none knows
the id yet, the receipt is parked in every partition for ``PARKED_TTL_SECONDS``: the one where
the send lands applies it in the same step that writes the index; the other copies expire.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any, Literal

from channels.models import DeliveryUpdate, DeliveryWatermark
from storage import keys
from storage.keys import PartitionKeys

if TYPE_CHECKING:
    from storage.store import Store

# Receipts keep arriving for a long time (WhatsApp reports "read" when the buyer opens the
# chat, days later); after this the index entry expires and a receipt changes nothing.
INDEX_TTL_SECONDS = 30 * 86400
# A receipt that beat the provider's answer to our send waits this long for the send to be
# recorded: longer than any send (outbox.send_timeout_seconds) takes to return.
PARKED_TTL_SECONDS = 900
MAX_PARKED = 16  # per id: a provider reports a handful of states per message

MAX_WATERMARKED = 200
WATERMARK_MARGIN_SECONDS = 2.0
"""A send counts under a watermark only if we recorded it this much earlier: our clock and
the provider's differ, and we record a send after the provider answered."""
"""Sends one watermark applies at most (the newest): a buyer's unread backlog is short."""

Verdict = Literal["applied", "unchanged", "stale", "pending", "parked", "unknown"]
_PREFERENCE: tuple[Verdict, ...] = ("applied", "unchanged", "stale", "pending")


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisDeliveries:
    """Applies receipts to the store's outbound messages (one instance per process)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis: Any = store.redis

    async def apply(self, update: DeliveryUpdate) -> bool:
        return await self.record(update) == "applied"

    # -- watermarks (Messenger, Instagram) -------------------------------------------------

    async def record_sent(self, channel_instance: str, recipient_handle: str,
                          provider_message_id: str, at: float) -> None:
        key = sent_to_key(channel_instance, recipient_handle)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {provider_message_id: at})
            pipe.zremrangebyscore(key, "-inf", at - INDEX_TTL_SECONDS)
            pipe.expire(key, INDEX_TTL_SECONDS)
            await pipe.execute()

    async def apply_watermark(self, watermark: DeliveryWatermark) -> int:
        """Sends recorded at least ``WATERMARK_MARGIN_SECONDS`` before the watermark (our
        clock against the provider's: a late "read" beats a false one); once read, a send
        is dropped from the set, so a chat's watermarks stay cheap."""
        key = sent_to_key(watermark.channel_instance, watermark.recipient_handle)
        bound = repr(float(watermark.at) - WATERMARK_MARGIN_SECONDS)
        ids = await self.redis.zrevrangebyscore(key, bound, "-inf", start=0,
                                                num=MAX_WATERMARKED)
        changed = 0
        for raw in ids:
            changed += await self.apply(DeliveryUpdate(
                channel_instance=watermark.channel_instance, provider_message_id=_s(raw),
                state=watermark.state, at=watermark.at))
        if watermark.state == "read" and ids:
            await self.redis.zrem(key, *ids)
        return changed

    async def record(self, update: DeliveryUpdate) -> Verdict:
        """Apply one receipt; says what became of it (``apply`` reduces it to a bool)."""
        parts = self.store.partition_keys()
        ours = keys.partition_from_id(update.provider_message_id, self.store.partitions)
        if len(parts) == 1:
            return (await self._run([(parts[0], True)], update, ours))[0]
        verdicts = await self._run([(k, False) for k in parts], update, ours)
        for wanted in _PREFERENCE:
            if wanted in verdicts:
                if wanted != "pending":
                    return wanted
                # our reply, not sent yet: keep it where that send will be recorded
                assert ours is not None
                return (await self._run([(parts[ours], True)], update, ours))[0]
        # Nobody knows the id yet; asked again with parking on, the partition where the send
        # was recorded meanwhile applies it, and every other one keeps a copy until it expires.
        verdicts = await self._run([(k, True) for k in parts], update, ours)
        for wanted in _PREFERENCE:
            if wanted in verdicts:
                return wanted
        return "parked"

    async def _run(self, targets: list[tuple[PartitionKeys, bool]], update: DeliveryUpdate,
                   ours: int | None) -> list[Verdict]:
        now = repr(time.time())
        at = "" if update.at is None else repr(float(update.at))
        async with self.redis.pipeline(transaction=False) as pipe:
            for k, park in targets:
                await self.store.scripts.deliveries(
                    keys=[k.delivery_index(update.channel_instance, update.provider_message_id),
                          k.early_receipts(update.channel_instance, update.provider_message_id),
                          k.dlq],
                    args=["apply", k.base, update.channel_instance, update.provider_message_id,
                          update.state, at, update.error or "", now, "1" if park else "0",
                          "1" if ours == k.partition else "0", PARKED_TTL_SECONDS, MAX_PARKED],
                    client=pipe,
                )
            replies = await pipe.execute()
        for verdict, mid in replies:
            if verdict == b"applied" and mid:
                await self.store.delivery_event(_s(mid), update.channel_instance)
        return [_s(verdict) for verdict, _mid in replies]  # type: ignore[misc]


def sent_to_key(channel_instance: str, recipient_handle: str) -> str:
    """Our sends to one recipient (zset provider id -> send time); the handle is hashed, so no
    buyer's id is in a key name."""
    digest = hashlib.sha256(f"{channel_instance}\x00{recipient_handle}".encode()).hexdigest()
    return f"{keys.PREFIX}:sentto:{digest[:40]}"

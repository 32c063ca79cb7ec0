"""The outbound half: outbox stream -> adapter.send -> sent, retried, or dead-lettered.

Exactly one process sends a reply at a time, whatever the number of hub processes: a reply
moves from ``queued`` to ``sending`` under a lease in one atomic step (``claim_send.lua``), an
entry whose reply another process is sending stays pending (``LeavePending``), and one already
settled is acknowledged and skipped. The provider's id is stored before the outbox entry is
acknowledged. The one remaining window is a process that dies after the provider accepted a
reply and before that was recorded: once its lease runs out the reply is sent again, so sends are
at-least-once exactly where the provider cannot deduplicate (the API channel passes
``X-Inboxhub-Reply-Id`` so the receiving end can).

Backoff is exponential with full jitter (spreads a burst of retries after an outage) and honours
the provider's Retry-After when it gives one.

Before the send the reply takes its turn under the channel's declared rate limits
(``channels.services.limits.pace``, one limiter shared by every process). A reply that has to
wait longer than a moment goes to the retry set for exactly that long, still holding its place
in line, and its outbox entry is acknowledged: the sender slot is free for other channels at
once, and the wait is no failed attempt (the claim's attempt is given back).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import msgspec

from channels.errors import ChannelError, PermanentError, RecipientUnreachable, RetryableError
from channels.models import OutboundReply
from channels.services.limits import RateLimiter, pace
from channels.services.receipts import WatermarkIndex
from channels.supervisor import describe
from hub.channel_manager import ChannelManager
from hub.config import OutboxSettings
from hub.metrics import Metrics
from hub.worker import LeavePending
from storage.health import HealthCounters
from storage.store import Store
from storage.streams import Entry

log = logging.getLogger(__name__)

_DONE_STATES = {"sent", "delivered", "read", "failed"}
# A lease outlives the longest send it covers, so it only expires when its holder is gone.
_LEASE_MARGIN_SECONDS = 10.0


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Delay before attempt ``attempt + 1``: full jitter over an exponential ceiling."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


class Sender:
    def __init__(self, store: Store, channels: ChannelManager, settings: OutboxSettings,
                 metrics: Metrics, *, owner: str, limiter: RateLimiter | None = None,
                 health: HealthCounters | None = None) -> None:
        self.store = store
        self.health = health
        self.limiter = limiter
        self.channels = channels
        self.settings = settings
        self.metrics = metrics
        self.owner = owner
        self.lease_seconds = settings.send_timeout_seconds + _LEASE_MARGIN_SECONDS

    async def handle(self, entry: Entry) -> None:
        _stream, _entry_id, fields = entry
        message_id = fields.get(b"msg", b"").decode()
        loaded = await self.store.load_reply(message_id)
        if loaded is None:
            log.warning("outbox entry for unknown reply %s dropped", message_id)
            return
        reply, state = loaded
        if state.get("status") in _DONE_STATES:
            return  # redelivered after a crash: already settled
        verdict, attempts = await self.store.claim_send(
            message_id, lease_seconds=self.lease_seconds, owner=self.owner)
        if verdict == "busy":
            raise LeavePending(message_id)
        if verdict != "send":
            return  # settled, or owned by the retry set until it is due
        adapter = self.channels.get(reply.channel_instance)
        if adapter is None:
            await self._give_up(reply, attempts, PermanentError(
                f"channel instance {reply.channel_instance!r} is not configured"))
            return
        conversation = await self.store.get_conversation(reply.conversation_id)
        if conversation is not None:
            reply = msgspec.structs.replace(reply, last_inbound_at=conversation.last_inbound_at)
        limits = adapter.capabilities.rate_limits
        if self.limiter is not None and limits:
            wait = await pace(self.limiter, reply, limits)
            if wait > 0:
                await self.store.defer_send(message_id, time.time() + wait, attempts - 1)
                self.metrics.rate_limited.labels(reply.channel_instance).inc()
                return
        try:
            provider_id = await asyncio.wait_for(
                adapter.send(reply), timeout=self.settings.send_timeout_seconds
            )
        except TimeoutError:
            await self._retry_or_give_up(reply, attempts, RetryableError("send timed out"))
        except RetryableError as exc:
            await self._retry_or_give_up(reply, attempts, exc)
        except ChannelError as exc:
            await self._give_up(reply, attempts, exc)
        else:
            await self.store.mark_sent(message_id, provider_id,
                                       channel_instance=reply.channel_instance)
            if conversation is not None and conversation.unreachable:
                await self.store.clear_unreachable(reply.conversation_id)
            if adapter.capabilities.watermark_receipts:
                await self._remember_for_watermarks(adapter.context.deliveries, reply,
                                                    provider_id)
            self.metrics.sent.labels(reply.channel_instance).inc()
            if self.health is not None:
                self.health.sent(reply.channel_instance)

    async def _remember_for_watermarks(self, index: object, reply: OutboundReply,
                                       provider_id: str) -> None:
        """Messenger's receipts name no message, only "everything up to T": keep this send
        per recipient so any process can resolve them. Best effort: the send is recorded
        already, and a lost entry only leaves that reply at "sent"."""
        if not isinstance(index, WatermarkIndex):
            return
        try:
            await index.record_sent(reply.channel_instance, reply.recipient_handle,
                                    provider_id, time.time())
        except Exception as exc:
            log.warning("reply %s: not kept for delivery watermarks: %s", reply.reply_id,
                        describe(exc))

    def _failed(self, reply: OutboundReply, exc: ChannelError) -> None:
        self.metrics.send_failures.labels(reply.channel_instance, type(exc).__name__).inc()
        if self.health is not None:  # the channel's "last send error": class and one line
            self.health.send_failed(reply.channel_instance, describe(exc))

    async def _retry_or_give_up(
        self, reply: OutboundReply, attempts: int, exc: RetryableError
    ) -> None:
        self._failed(reply, exc)
        if attempts >= self.settings.max_attempts:
            await self._give_up(reply, attempts, exc)
            return
        delay = backoff_delay(attempts, self.settings.backoff_base_seconds,
                              self.settings.backoff_max_seconds, exc.retry_after)
        await self.store.schedule_retry(reply.reply_id, time.time() + delay, attempts, str(exc))
        log.info("reply %s attempt %d failed (%s); retry in %.2fs",
                 reply.reply_id, attempts, type(exc).__name__, delay)

    async def _give_up(self, reply: OutboundReply, attempts: int, exc: ChannelError) -> None:
        self._failed(reply, exc)
        if isinstance(exc, RecipientUnreachable):
            # Until the buyer writes again (ingest clears it), replies are refused up front;
            # not if they wrote since this send looked (a race with that ingest).
            await self.store.mark_unreachable(reply.conversation_id, str(exc)[:500],
                                              last_inbound_at=reply.last_inbound_at)
        self.metrics.dead_lettered.labels(reply.channel_instance).inc()
        error = f"{type(exc).__name__}: {exc}"
        await self.store.dead_letter(reply, error, attempts)
        log.warning("reply %s failed after %d attempts: %s", reply.reply_id, attempts, error)


class RetryRelease:
    """Moves replies whose backoff has elapsed back to the outbox: a supervised loop's body."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def iteration(self) -> bool:
        return await self.store.release_due_retries(time.time()) > 0

"""The ingest callback handed to every adapter: store durably, count, never log content."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from redis.exceptions import RedisError

from channels.models import InboundMessage
from hub.group_commit import GroupCommit
from hub.metrics import Metrics
from storage.store import IngestResult, Store

log = logging.getLogger(__name__)


class Ingestor:
    """Adapters await this; it returns only once the message is in Redis (invariant 1).

    Concurrent single-message ingests (webhooks) are group-committed: those that arrive while
    a write is in flight go to Redis together in one pipeline (hub/group_commit.py), each
    caller still answered only once its own message is stored."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._commit: GroupCommit[InboundMessage, IngestResult] = GroupCommit(
            store.ingest_many, name="ingest")

    async def close(self, timeout: float = 30.0) -> None:
        """Finish the writes already accepted (their webhooks are waiting for them)."""
        await self._commit.aclose(timeout)

    async def __call__(self, message: InboundMessage) -> IngestResult:
        started = time.perf_counter()
        try:
            result = await self._commit(message)
        except (RedisError, OSError) as exc:
            # An outage fails every webhook in the air at once: one line each, no traceback
            # (the provider retries; the supervised loops report the outage itself).
            self.metrics.ingested.labels(message.channel_instance, "error").inc()
            log.warning("ingest failed for instance %s: %s", message.channel_instance,
                        type(exc).__name__)
            raise
        except Exception:
            self.metrics.ingested.labels(message.channel_instance, "error").inc()
            log.exception("ingest failed for instance %s", message.channel_instance)
            raise
        self.metrics.ingest_seconds.observe(time.perf_counter() - started)
        outcome = "duplicate" if result.duplicate else "stored"
        self.metrics.ingested.labels(message.channel_instance, outcome).inc()
        return result

    async def ingest_many(self, messages: Sequence[InboundMessage]) -> list[IngestResult]:
        """``__call__`` for a run of messages in one Redis round trip (``Store.ingest_many``),
        used by ``ChannelAdapter.store_items`` when an adapter stores several at once (a
        poll's batch). Counted per message like ``__call__``; each message's ingest time is
        the batch's, since that is how long it waited to be durable. Raises the first error
        after counting every message: the caller checkpoints nothing."""
        started = time.perf_counter()
        try:
            answers = await self.store.ingest_many(messages)
        except Exception as exc:
            for message in messages:
                self.metrics.ingested.labels(message.channel_instance, "error").inc()
            instance = messages[0].channel_instance if messages else "-"
            if isinstance(exc, RedisError | OSError):  # an outage: one line, as in __call__
                log.warning("ingest of %d messages failed for instance %s: %s",
                            len(messages), instance, type(exc).__name__)
            else:
                log.exception("ingest of %d messages failed for instance %s", len(messages),
                              instance)
            raise
        elapsed = time.perf_counter() - started
        results: list[IngestResult] = []
        failed: Exception | None = None
        for message, answer in zip(messages, answers, strict=True):
            if isinstance(answer, Exception):
                self.metrics.ingested.labels(message.channel_instance, "error").inc()
                failed = failed or answer
                continue
            self.metrics.ingest_seconds.observe(elapsed)
            outcome = "duplicate" if answer.duplicate else "stored"
            self.metrics.ingested.labels(message.channel_instance, outcome).inc()
            results.append(answer)
        if failed is not None:
            log.error("ingest failed for instance %s: %s", messages[0].channel_instance,
                      type(failed).__name__)
            raise failed
        return results

    async def quarantine(self, channel_instance: str, raw: bytes, error: str, *,
                         headers: Mapping[str, str] | None = None) -> str:
        entry = await self.store.quarantine(channel_instance, raw, error, headers=headers)
        self.metrics.quarantined.labels(channel_instance).inc()
        log.warning("quarantined input from %s as %s: %s", channel_instance, entry, error[:200])
        return entry

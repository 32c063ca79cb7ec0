"""The ingest callback handed to every adapter: store durably, count, never log content."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from channels.models import InboundMessage
from hub.metrics import Metrics
from storage.store import IngestResult, Store

log = logging.getLogger(__name__)


class Ingestor:
    """Adapters await this; it returns only once the message is in Redis (invariant 1)."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics

    async def __call__(self, message: InboundMessage) -> IngestResult:
        started = time.perf_counter()
        try:
            result = await self.store.ingest(message)
        except Exception:
            self.metrics.ingested.labels(message.channel_instance, "error").inc()
            log.exception("ingest failed for instance %s", message.channel_instance)
            raise
        self.metrics.ingest_seconds.observe(time.perf_counter() - started)
        outcome = "duplicate" if result.duplicate else "stored"
        self.metrics.ingested.labels(message.channel_instance, outcome).inc()
        return result

    async def quarantine(self, channel_instance: str, raw: bytes, error: str, *,
                         headers: Mapping[str, str] | None = None) -> str:
        entry = await self.store.quarantine(channel_instance, raw, error, headers=headers)
        self.metrics.quarantined.labels(channel_instance).inc()
        log.warning("quarantined input from %s as %s: %s", channel_instance, entry, error[:200])
        return entry

"""Operators' second chances: parse a quarantined input again after a fix or an upgrade.

The body was verified when it arrived (only authentic input is quarantined), so a retry runs
the adapter's ``parse`` on the stored bytes and the headers kept with them, ingests the
result (deduplicated as always: a retry interrupted after storing is safe to repeat), and only
then removes the entry. A retry that fails again keeps the input with the new error. A body
that was cut when it was kept (over 64 KiB) cannot be parsed again; neither can an entry that
is not a webhook body (a stream entry the workers could not process).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec

from channels.base import ChannelAdapter, IngestCallback, WebhookAdapter
from channels.errors import MalformedPayload
from storage.quarantine import RAW_LIMIT, QuarantineLog, UnknownEntry

log = logging.getLogger(__name__)

__all__ = ["NotRetryable", "RetryResult", "UnknownEntry", "retry_quarantined"]


class NotRetryable(Exception):
    """This entry cannot be parsed again; ``reason`` says why, for the operator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """``stored``: parsed and ingested, entry removed; ``failed``: kept as ``kept_as``."""

    entry_id: str
    outcome: str
    message_ids: list[str] = []
    conversation_ids: list[str] = []
    duplicates: int = 0
    error: str | None = None
    kept_as: str | None = None


async def retry_quarantined(quarantine: QuarantineLog, adapters: Mapping[str, ChannelAdapter],
                            ingest: IngestCallback, entry_id: str) -> RetryResult:
    """Raises ``UnknownEntry`` or ``NotRetryable``; storage errors propagate (entry kept)."""
    entry = await quarantine.get(entry_id)
    if entry is None:
        raise UnknownEntry(entry_id)
    if entry.truncated:
        raise NotRetryable(
            f"the body was over {RAW_LIMIT // 1024} KiB and was kept cut: it cannot be "
            "parsed again; ask the sender to deliver it again"
        )
    adapter = adapters.get(entry.channel_instance)
    if adapter is None:
        raise NotRetryable(f"no configured channel instance {entry.channel_instance!r}: only "
                           "webhook bodies of a configured channel can be parsed again")
    if not isinstance(adapter, WebhookAdapter):
        raise NotRetryable(f"channel instance {entry.channel_instance!r} is not fed by webhooks")
    try:
        parsed = await adapter.reparse(entry.raw, entry.headers)
    except MalformedPayload as exc:
        kept_as = await quarantine.replace(entry, exc.reason)
        log.info("quarantine retry of %s failed again; kept as %s", entry_id, kept_as)
        return RetryResult(entry_id=entry_id, outcome="failed", error=exc.reason,
                           kept_as=kept_as)
    outcomes = await adapter.store_items(parsed, ingest)
    await quarantine.remove(entry_id)
    log.info("quarantine entry %s parsed again: %d message(s) stored", entry_id, len(outcomes))
    return RetryResult(
        entry_id=entry_id, outcome="stored",
        message_ids=[o.message_id for o in outcomes],
        conversation_ids=sorted({o.conversation_id for o in outcomes}),
        duplicates=sum(1 for o in outcomes if o.duplicate),
    )

"""CLI commands of the data lifecycle, kept out of ``hub.cli`` so it stays a dispatcher:
``quarantine retry ID`` and ``dlq retry --all``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import aiohttp

from channels.base import AdapterContext
from hub.channel_manager import ChannelManager
from hub.config import LoadedConfig
from hub.replay import NotRetryable, UnknownEntry, retry_quarantined
from storage.dead_letters import retry_all_dead_letters
from storage.fetches import RedisFetchQueue
from storage.store import Store


def _no_background_tasks(coro: Any, name: str) -> asyncio.Task[None]:
    coro.close()
    raise RuntimeError(f"a CLI command starts no channel tasks ({name})")


async def quarantine_retry(store: Store, loaded: LoadedConfig, args: argparse.Namespace) -> int:
    """Parse one quarantined input again with the configured channel's current code; the
    stored messages are routed by the running hub (they enter the inbound stream)."""
    async with aiohttp.ClientSession() as http:
        context = AdapterContext(http=http, quarantine=store.quarantine,
                                 spawn=_no_background_tasks,
                                 max_body_bytes=loaded.config.hub.max_body_bytes,
                                 fetches=RedisFetchQueue(
                                     store.redis,
                                     dedupe_ttl_seconds=loaded.config.fetches.dedupe_ttl_seconds))
        manager = ChannelManager(loaded, context)
        try:
            result = await retry_quarantined(store.quarantine_log, manager.adapters,
                                             store.ingest, args.entry_id)
        except UnknownEntry:
            print(f"inboxhub: no quarantine entry {args.entry_id}", file=sys.stderr)
            return 1
        except NotRetryable as exc:
            print(f"inboxhub: {args.entry_id} cannot be retried: {exc.reason}", file=sys.stderr)
            return 1
    if result.outcome == "failed":
        print(f"inboxhub: {args.entry_id} still cannot be parsed: {result.error}\n"
              f"kept in quarantine as {result.kept_as}", file=sys.stderr)
        return 1
    new = len(result.message_ids) - result.duplicates
    print(f"{args.entry_id}: {new} message(s) stored, {result.duplicates} already there; "
          f"conversation(s) {', '.join(result.conversation_ids) or '-'}")
    return 0


async def dlq_retry_all(store: Store) -> int:
    result = await retry_all_dead_letters(store)
    line = f"{result.queued} reply(ies) queued for sending again"
    if result.skipped:
        line += f"; {result.skipped} stale dead-letter entry(ies) removed"
    print(line)
    return 0

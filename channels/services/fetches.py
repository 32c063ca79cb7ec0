"""Fetch after notify: a notification that only names a resource (Mercado Libre ``messages``,
Shopee push, eBay) is stored durably and acknowledged at once; a worker fetches the resource
with the account's token and ingests it, retrying with a visible failure state."""

from __future__ import annotations

from typing import Protocol


class FetchQueue(Protocol):
    async def notify(self, instance: str, resource: str, *, dedupe_key: str) -> bool:
        """Queue ``resource`` of a channel instance for fetching; False when ``dedupe_key`` was
        seen before (a repeated notification)."""
        ...

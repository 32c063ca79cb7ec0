"""Where a polling adapter keeps its place: one cursor per account or mailbox, advanced only
after every message before it was stored (invariant 1), and written only by the holder of the
account's lease (a stale poller's write is refused by its fencing token)."""

from __future__ import annotations

from typing import Protocol


class CursorStore(Protocol):
    async def load(self, instance: str, name: str) -> bytes | None:
        """The last checkpoint of cursor ``name`` of a channel instance (None: never polled)."""
        ...

    async def save(self, instance: str, name: str, value: bytes, *, fence: int) -> bool:
        """Checkpoint; False (nothing written) when ``fence`` is older than the lease's."""
        ...

"""One poller per account across every hub process: a renewable Redis lease with a fencing
token. Another process takes over within the lease's TTL when the holder dies."""

from __future__ import annotations

from typing import Protocol


class Lease(Protocol):
    @property
    def fence(self) -> int:
        """Strictly increasing per lease name: writes carrying an older one are refused."""
        ...

    async def renew(self) -> bool:
        """Extend the lease; False when it was lost (expired and taken by another process)."""
        ...

    async def release(self) -> None: ...


class LeaseManager(Protocol):
    async def acquire(self, name: str, ttl_seconds: float) -> Lease | None:
        """Take the lease if nobody holds it; None when another process does."""
        ...

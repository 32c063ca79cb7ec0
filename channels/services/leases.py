"""One poller per account across every hub process: a renewable Redis lease with a fencing
token. Another process takes over within the lease's TTL when the holder dies.

The fence is what makes a lease safe against a holder that *thinks* it still holds it (a
process paused past its TTL, a network partition): every grant of a name gets a strictly
larger fence, and whatever the holder writes under the lease (a poller's cursor checkpoint)
carries it, so a write from an older grant is refused by the store in the same atomic step
that applies it (``channels.services.cursors``).
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class LeaseInfo(msgspec.Struct, frozen=True):
    """Who holds a lease now: its fence, the holder's name (host-pid, for operators) and the
    seconds left before it expires unless renewed."""

    fence: int
    owner: str
    expires_in: float


class Lease(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def fence(self) -> int:
        """Strictly increasing per lease name: writes carrying an older one are refused."""
        ...

    async def renew(self) -> bool:
        """Extend the lease by its TTL; False when it was lost (another grant was made since).
        A lease that expired but was granted to nobody else is taken back with its fence."""
        ...

    async def release(self) -> None:
        """Give it up at once (a clean stop), so a standby takes over without waiting for the
        TTL; releasing a lease that was lost leaves the new holder's alone."""
        ...


class LeaseManager(Protocol):
    async def acquire(self, name: str, ttl_seconds: float) -> Lease | None:
        """Take the lease if nobody holds it; None when another process does."""
        ...

    async def holder(self, name: str) -> LeaseInfo | None:
        """The current holder, or None when the lease is free (a standby uses ``expires_in``
        to try again right when a dead holder's lease runs out)."""
        ...

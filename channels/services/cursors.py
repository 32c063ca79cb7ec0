"""Where a polling adapter keeps its place: one cursor per account or mailbox, advanced only
after every message before it was stored (invariant 1), and written only by the holder of the
account's lease (a stale poller's write is refused by its fencing token).

A cursor is opaque bytes to the hub: IMAP keeps ``(UIDVALIDITY, last UID)``, Telegram the next
``offset``, a marketplace a timestamp or a continuation token. The cursor of
``(instance, account)`` is guarded by the lease named ``cursor_lease_name(instance, account)``:
``save`` succeeds only with that lease's current fence.
"""

from __future__ import annotations

from typing import Final, Protocol

MAX_CURSOR_BYTES: Final = 64 * 1024
MAX_ACCOUNT_LENGTH: Final = 200


def cursor_lease_name(instance: str, account: str) -> str:
    """The lease that guards the cursor of one account (and that its poller holds)."""
    check_account(account)
    return f"poll:{instance}/{account}"


def check_account(account: str) -> None:
    """Account names (a mailbox, a bot, a seller id) become key names and log fields."""
    if not account or len(account) > MAX_ACCOUNT_LENGTH or not account.isprintable():
        raise ValueError(f"account name must be 1-{MAX_ACCOUNT_LENGTH} printable characters, "
                         f"got {account!r}")


def check_cursor(value: bytes) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"a cursor is bytes, got {type(value).__name__}")
    if len(value) > MAX_CURSOR_BYTES:
        raise ValueError(f"cursor of {len(value)} bytes exceeds {MAX_CURSOR_BYTES}")


class CursorStore(Protocol):
    async def load(self, instance: str, name: str) -> bytes | None:
        """The last checkpoint of cursor ``name`` of a channel instance (None: never polled)."""
        ...

    async def save(self, instance: str, name: str, value: bytes, *, fence: int) -> bool:
        """Checkpoint; False (nothing written) unless ``fence`` is the current fence of the
        cursor's lease (``cursor_lease_name``): a newer grant was made, this writer is stale."""
        ...

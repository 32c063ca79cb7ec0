"""What an adapter remembers about its threads between polls, processes and restarts.

Email threads by headers the buyer's client may mangle: a reply's In-Reply-To names the
buyer's own earlier mail (which thread was that in, and from whom?), a mail with no usable
headers at all joins by subject and sender within a time limit, and a reply to a resolved
conversation under a new subject opens a new one. None of that is in the frozen message, and
a second hub process or a restart must decide the same way as the process that saw the
first mail, so the facts live in the hub's store, scoped to the channel instance, with a
time to live (they hold a subject and an address: personal data that must not outlive use).

Values are opaque bytes to the hub (the adapter encodes them); keys are hashed by the store,
so an address in a key never appears in a key name. Every memo belongs to a thread and is
erased with that thread's conversation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final, NamedTuple, Protocol

MAX_MEMO_BYTES: Final = 16 * 1024
MAX_TTL_SECONDS: Final = 400 * 86400


def check_memo(value: bytes, ttl_seconds: float) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"a memo is bytes, got {type(value).__name__}")
    if len(value) > MAX_MEMO_BYTES:
        raise ValueError(f"memo of {len(value)} bytes exceeds {MAX_MEMO_BYTES}")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"memo TTL must be in (0, {MAX_TTL_SECONDS}] seconds")


class MemoWrite(NamedTuple):
    """One ``remember`` of a batch written with ``remember_many``."""

    key: str
    value: bytes
    ttl_seconds: float
    thread_id: str


class ThreadMemory(Protocol):
    async def recall(self, instance: str, key: str) -> bytes | None:
        """What was remembered under ``key`` for this instance (None: never, or expired)."""
        ...

    async def remember(self, instance: str, key: str, value: bytes, *,
                       ttl_seconds: float, thread_id: str) -> None:
        """Keep ``value`` under ``key`` for ``ttl_seconds`` (a later write replaces it).

        The memo belongs to ``thread_id``: erasing that thread's conversation (or its
        retention running out) deletes it with the conversation."""
        ...

    async def recall_many(self, instance: str, keys: Sequence[str]) -> list[bytes | None]:
        """``recall`` of each key, in order, in one round trip: a backlog's thread decisions
        read their memos a batch at a time instead of a mail at a time."""
        ...

    async def remember_many(self, instance: str, writes: Sequence[MemoWrite]) -> None:
        """``remember`` of each write, in order, in one round trip."""
        ...

    async def thread_status(self, instance: str, thread_id: str) -> str | None:
        """The status of the conversation that thread belongs to (``new``, ``queued``,
        ``assigned``, ``resolved``), or None when no conversation has that thread."""
        ...

    async def thread_contact(self, instance: str, thread_id: str) -> str | None:
        """The handle of the buyer whose conversation that thread is, or None."""
        ...


class MemoryThreads:
    """In-process ``ThreadMemory`` for tests and the conformance kit; ``statuses`` is what the
    test says the hub's conversations are."""

    def __init__(self) -> None:
        self.memos: dict[tuple[str, str], tuple[bytes, float]] = {}
        self.statuses: dict[tuple[str, str], str] = {}
        self.contacts: dict[tuple[str, str], str] = {}
        self.owners: dict[tuple[str, str], set[str]] = {}

    async def recall(self, instance: str, key: str) -> bytes | None:
        found = self.memos.get((instance, key))
        if found is None or found[1] < time.time():
            return None
        return found[0]

    async def remember(self, instance: str, key: str, value: bytes, *,
                       ttl_seconds: float, thread_id: str) -> None:
        check_memo(value, ttl_seconds)
        self.memos[(instance, key)] = (value, time.time() + ttl_seconds)
        self.owners.setdefault((instance, thread_id), set()).add(key)

    async def recall_many(self, instance: str, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.recall(instance, key) for key in keys]

    async def remember_many(self, instance: str, writes: Sequence[MemoWrite]) -> None:
        for write in writes:
            check_memo(write.value, write.ttl_seconds)
        for write in writes:
            await self.remember(instance, write.key, write.value,
                                ttl_seconds=write.ttl_seconds, thread_id=write.thread_id)

    def forget_thread(self, instance: str, thread_id: str) -> None:
        for key in self.owners.pop((instance, thread_id), set()):
            self.memos.pop((instance, key), None)

    async def thread_status(self, instance: str, thread_id: str) -> str | None:
        return self.statuses.get((instance, thread_id))

    async def thread_contact(self, instance: str, thread_id: str) -> str | None:
        return self.contacts.get((instance, thread_id))

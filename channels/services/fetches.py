"""Fetch after notify: a notification that only names a resource (Mercado Libre ``messages``,
Shopee push, eBay; a WhatsApp media id) is stored durably and acknowledged at once; a worker
fetches the resource with the account's token and ingests it, retrying with a visible failure
state.

Three sides, one store:

* ``FetchQueue`` is what an adapter's context offers (``AdapterContext.fetches``): ``notify``
  stores a notification, deduplicated by its key, and returns only once it is durable (the
  webhook is answered after that); ``backlog`` is what channel health reads.
* ``FetchSettlement`` is the worker's: a fetch that ran is ``done``, retried later, or failed
  (``channels.fetching.run_fetch`` decides which from the error's class).
* ``FetchAdmin`` is the operators': list entries by instance and state, retry failed ones.

A job moves ``queued`` (waiting, or being fetched now) -> done (deleted), or -> ``retrying``
(waiting for its next attempt) -> ``queued`` ..., or -> ``failed`` (a permanent error, or its
attempts ran out), where it stays, with the last error, until an operator retries it. Entries
carry the resource name and the error, never a fetched body or a token.

Implemented on Redis in ``storage/fetches.py``; ``channels.testing.fetches.MemoryFetchQueue``
is the in-memory one a plugin author's tests use.
"""

from __future__ import annotations

from typing import Final, Literal, Protocol

import msgspec

FetchState = Literal["queued", "retrying", "failed"]
FETCH_STATES: Final[tuple[FetchState, ...]] = ("queued", "retrying", "failed")

MAX_RESOURCE_LENGTH: Final = 2048
MAX_DEDUPE_KEY_LENGTH: Final = 512
# A notification seen within this long is a repeat (Mercado Libre retries for an hour; eBay
# and Shopee for less): acknowledged, not fetched again.
DEFAULT_DEDUPE_TTL_SECONDS: Final = 7 * 86400


class UnknownFetch(Exception):
    """No fetch entry has this id (never queued, or fetched and gone)."""


class NotFailed(Exception):
    """Only a failed fetch can be retried by an operator; this one is queued or retrying."""


def check_notice(resource: str, dedupe_key: str) -> None:
    """Resources and dedupe keys become stored fields, log fields and operator views: short,
    printable, never empty. A resource names data (a message id, a media id), it does not
    carry it."""
    if not resource or len(resource) > MAX_RESOURCE_LENGTH or not resource.isprintable():
        raise ValueError(f"a fetch resource must be 1-{MAX_RESOURCE_LENGTH} printable "
                         f"characters, got {resource[:60]!r}")
    if not dedupe_key or len(dedupe_key) > MAX_DEDUPE_KEY_LENGTH or \
            not dedupe_key.isprintable():
        raise ValueError(f"a fetch dedupe key must be 1-{MAX_DEDUPE_KEY_LENGTH} printable "
                         f"characters, got {dedupe_key[:60]!r}")


class FetchBacklog(msgspec.Struct, frozen=True):
    """What waits to be fetched for one channel instance (channel health reads this).

    ``queued``: notifications waiting for their fetch or being fetched now. ``retrying``: their
    last attempt failed and they wait for the next. ``failed``: given up (a permanent error, or
    the attempts ran out) and kept until an operator retries them. ``oldest_age_seconds``: how
    long the oldest notification not fetched yet (queued or retrying) has waited since it
    arrived; None when nothing waits.
    """

    instance: str
    queued: int = 0
    retrying: int = 0
    failed: int = 0
    oldest_age_seconds: float | None = None


class FetchEntry(msgspec.Struct, frozen=True):
    """One notification's fetch, as the worker runs it and operators see it.

    ``attempts``: failed attempts so far. ``next_attempt_at``: when a retrying entry is tried
    again. ``last_error``: the error class and message of the last failure (no bodies)."""

    id: str
    instance: str
    resource: str
    state: FetchState
    attempts: int
    notified_at: float
    next_attempt_at: float | None = None
    failed_at: float | None = None
    last_error: str | None = None
    # The worker's start that runs this attempt (``RedisFetchQueue.begin``): only the latest
    # start may settle it. None outside a worker (operator views, the kit's memory queue).
    run: int | None = None


class FetchQueue(Protocol):
    async def notify(self, instance: str, resource: str, *, dedupe_key: str) -> bool:
        """Queue ``resource`` of a channel instance for fetching; False when ``dedupe_key`` was
        seen before (a repeated notification). Returns only once the notification is durable
        and raises when it could not be stored, so the webhook is not acknowledged."""
        ...

    async def backlog(self, instance: str) -> FetchBacklog:
        """The instance's queued, retrying and failed counts and the oldest wait."""
        ...


class FetchSettlement(Protocol):
    """How the worker settles a job it ran; each is a no-op on a job no longer queued (another
    process reclaimed and settled it meanwhile)."""

    async def done(self, job: FetchEntry) -> None:
        """Fetched and stored: the entry goes (its dedupe key stays for the TTL)."""
        ...

    async def retry_later(self, job: FetchEntry, *, delay: float, error: str) -> None:
        """Counts a failed attempt; the job is queued again after ``delay`` seconds."""
        ...

    async def fail(self, job: FetchEntry, *, error: str) -> None:
        """Counts a failed attempt and keeps the job as failed, with ``error``."""
        ...


class FetchAdmin(Protocol):
    async def instances(self) -> list[str]:
        """Every channel instance that ever queued a fetch, sorted."""
        ...

    async def entries(self, instance: str | None = None, state: FetchState | None = None, *,
                      limit: int = 50, after: str | None = None) -> list[FetchEntry]:
        """Entries newest first, of one instance (None: all) and one state (None: all);
        ``after`` is the id of the previous page's last entry (keyset paging)."""
        ...

    async def get(self, job_id: str) -> FetchEntry | None: ...

    async def retry(self, job_id: str) -> None:
        """Queue a failed fetch again with its attempts reset; raises ``UnknownFetch`` or
        ``NotFailed``. Two operators retrying at once queue it once."""
        ...

    async def retry_all(self, instance: str) -> int:
        """Queue every failed fetch of the instance again; returns how many."""
        ...


class FetchStore(FetchQueue, FetchSettlement, FetchAdmin, Protocol):
    """All three sides (what the conformance kit needs of a fetch queue)."""

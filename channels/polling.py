"""Polling adapters: IMAP, Telegram getUpdates, marketplace APIs that have no push.

An adapter states which accounts it polls (``accounts()``: mailboxes, one bot, one seller),
how often (``schedule``) and implements one call, ``poll(account, cursor) -> (items,
next_cursor)``. The ``@final`` plumbing here runs one supervised loop per account that:

1. takes the account's lease (``context.leases``) or, while another process holds it, waits
   until that lease could have run out: exactly one process polls an account, and a standby
   takes over within the lease's TTL when the holder dies;
2. loads the account's cursor (``context.cursors``, opaque bytes) when it takes the lease;
3. calls ``poll``, which may long-poll or IDLE; the lease is renewed every third of its TTL
   meanwhile, and a stop cancels the poll at once (nothing it returned is lost: it was never
   acknowledged to the provider);
4. stores every item in order: messages through the ingest callback (consecutive ones in one
   round trip when it has ``ingest_many``), delivery updates through ``apply_delivery``,
   ``Unusable`` items into the quarantine;
5. only then checkpoints ``next_cursor`` with the lease's fence (invariant 1). A refused
   checkpoint or renewal means another process holds the account now: this loop stops polling
   it at once and goes back to step 1. The messages it stored meanwhile are duplicates of what
   the new holder fetches, and the ingest drops them by their idempotency key;
6. polls again at once after a non-empty batch or a long poll, else after the schedule's
   interval.

Every poll that succeeded (its items stored), failed, or took the lease is reported to
``context.health`` (``channels.services.health``) for the channel's health: time since the
last good poll, since the cursor last moved, and the last error.

Errors go through the supervisor (``channels.supervisor``): Redis and network errors and every
``ChannelError`` back off with jitter and show the loop as ``backing_off`` in ``/readyz``;
a ``RetryableError`` waits at least its ``retry_after``; an ``AuthError`` (or any
``PermanentError``) waits the backoff cap each time, so the account keeps being retried without
a tight loop until an operator fixes the credentials. Transport failures escaping ``poll``
(aiohttp errors, timeouts, OSError) are mapped by ``map_error`` first; anything else is a bug and
is reported as a crash with its traceback.

``stop`` ends every loop (in-flight batches are stored and checkpointed first, polls are
cancelled), then releases the leases so a standby takes over at once.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Annotated, Any, Final, TypeVar, final

import aiohttp
import msgspec

from channels.base import AdapterContext, ChannelAdapter, IngestCallback
from channels.errors import ChannelError, RetryableError
from channels.models import DeliveryUpdate, DeliveryWatermark, InboundMessage, MessageEdit
from channels.services.cursors import CursorStore, check_cursor, cursor_lease_name
from channels.services.leases import Lease, LeaseManager
from channels.supervisor import Supervisor, describe

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS: Final = 15.0
_T = TypeVar("_T")


class PollingSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of a polling adapter's ``settings_type``: what every poller lets operators tune.

    ``lease_seconds``: how long a dead process keeps an account before another takes it over
    (renewed every third of it; shorter means faster takeover, more Redis writes).
    """

    lease_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=3600.0)] = DEFAULT_LEASE_SECONDS


class Schedule(msgspec.Struct, frozen=True):
    """How an adapter polls.

    ``interval_seconds``: the wait after a poll that found nothing (0 for a long poll or IDLE,
    whose ``poll`` itself waits for news). ``timeout_seconds``: a poll that takes longer is
    cancelled and counts as a retryable failure; set it above a long poll's own wait.
    """

    interval_seconds: float = 5.0
    timeout_seconds: float = 60.0


class Unusable(msgspec.Struct, frozen=True):
    """An item ``poll`` fetched but cannot normalize: kept raw in the quarantine with the
    reason (invariant 6), so the cursor can move past it without losing it."""

    raw: bytes
    reason: str


PollItem = InboundMessage | DeliveryUpdate | DeliveryWatermark | MessageEdit | Unusable
Polled = tuple[Sequence[PollItem], bytes]
"""What ``poll`` returns: the items in provider order and the cursor just past the last one."""


class _LeaseLost(Exception):
    """Another process was granted the account's lease: stop polling it."""


class _Stopped:
    """Returned by ``_AccountPoller._held`` when a stop interrupted the work."""


_STOPPED: Final = _Stopped()


class PollingAdapter(ChannelAdapter):
    """Base class of adapters that fetch from the provider; see the module docstring.

    Subclasses set ``schedule`` (class attribute, or in ``__init__`` from settings), implement
    ``poll`` (and ``deliver``), and override ``accounts`` when an instance polls more than one
    account and ``close`` when they keep provider connections.
    """

    schedule: Schedule = Schedule()

    def __init__(self, instance: str, settings: Any, context: AdapterContext) -> None:
        super().__init__(instance, settings, context)
        self._loops: Supervisor | None = None
        self._pollers: list[_AccountPoller] = []

    # -- what an adapter implements ----------------------------------------------------------

    def accounts(self) -> Sequence[str]:
        """The accounts this instance polls, one lease and one cursor each (mailbox names for
        IMAP); fixed for the life of the adapter."""
        return ("default",)

    @abc.abstractmethod
    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        """Fetch what came after ``cursor`` (None: never polled; the adapter decides where a
        new account starts). Return the items in provider order and the cursor past them;
        return the same cursor when nothing is new. Raise a ``ChannelError`` for provider
        failures (``map_http_error`` / ``self.map_error`` classify transport ones)."""

    async def close(self) -> None:
        """Close provider connections; called once every loop has stopped."""

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def lease_seconds(self) -> float:
        if isinstance(self.settings, PollingSettings):
            return self.settings.lease_seconds
        return DEFAULT_LEASE_SECONDS

    @final
    async def start(self, ingest: IngestCallback) -> None:
        loops, cursors, leases = self.context.loops, self.context.cursors, self.context.leases
        if loops is None or cursors is None or leases is None:
            raise RuntimeError(f"polling channel {self.instance} needs the hub's loops, cursors "
                               "and leases in its AdapterContext")
        accounts = list(self.accounts())
        if not accounts or len(set(accounts)) != len(accounts):
            raise ValueError(f"channel {self.instance}: accounts() must name each polled "
                             f"account once, got {accounts!r}")
        names = [cursor_lease_name(self.instance, account) for account in accounts]
        await super().start(ingest)
        self._loops = loops.child(f"channel:{self.instance}")
        self._pollers = [_AccountPoller(self, account, name, cursors, leases, self._loops.stop)
                         for account, name in zip(accounts, names, strict=True)]
        for poller in self._pollers:
            self._loops.loop(poller.lease_name, poller.iteration, idle_seconds=0.0)

    @final
    async def start_without_polling(self, ingest: IngestCallback) -> None:
        """Take inbound traffic other than polls (a marketplace's webhooks, fetches another
        process queued) and run no poll loop: the hub's ``serve --role http``, whose pollers
        run in a workers process. ``stop`` then only closes the adapter."""
        await super().start(ingest)  # what start does before its loops

    @final
    async def stop(self) -> None:
        """Store and checkpoint the batch in hand, cancel polls, release the leases."""
        loops, self._loops = self._loops, None
        try:
            if loops is not None:
                loops.stop.set()
                if not await loops.wait(self.lease_seconds):
                    log.warning("channel %s: polls did not stop within %.1f s; cancelling",
                                self.instance, self.lease_seconds)
                await loops.cancel_all()
                for poller in self._pollers:
                    await poller.release()
            await self.close()
        finally:
            await super().stop()

    @final
    async def abandon(self) -> None:
        """What a process killed with SIGKILL leaves behind: loops gone, leases still held
        until they expire. For the conformance kit's takeover test, not for the hub."""
        loops, self._loops = self._loops, None
        if loops is not None:
            await loops.cancel_all()
        await super().stop()

    @final
    async def poll_once(self, account: str, cursor: bytes | None) -> Polled:
        """``poll`` under the schedule's timeout, transport errors classified."""
        timeout = self.schedule.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                items, next_cursor = await self.poll(account, cursor)
        except ChannelError:
            raise
        except TimeoutError:
            raise RetryableError(f"poll of {account!r} took longer than {timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self.map_error(exc) from exc
        check_cursor(next_cursor)
        return items, next_cursor


class _AccountPoller:
    """One account's loop body: lease, cursor, poll, store, checkpoint (module docstring)."""

    def __init__(self, adapter: PollingAdapter, account: str, lease_name: str,
                 cursors: CursorStore, leases: LeaseManager, stop: asyncio.Event) -> None:
        self.adapter = adapter
        self.account = account
        self.lease_name = lease_name
        self.cursors = cursors
        self.leases = leases
        self.stop = stop
        self.ttl = adapter.lease_seconds
        self.renew_every = self.ttl / 3
        self.lease: Lease | None = None
        self.renewed_at = 0.0
        self.cursor: bytes | None = None
        self.cursor_loaded = False
        self.next_poll_at = 0.0
        self.waiting_logged = False
        self.health = adapter.context.health

    async def iteration(self) -> bool:
        if self.stop.is_set():
            return False
        try:
            if self.lease is None and not await self._acquire():
                return True
            await self._renew_if_due()
            if not self.cursor_loaded:
                self.cursor = await self.cursors.load(self.adapter.instance, self.account)
                self.cursor_loaded = True
            wait = self.next_poll_at - time.monotonic()
            if wait > 0:
                await self._held(self._sleep(wait), interruptible=True)
                return True
            try:
                polled = await self._held(self.adapter.poll_once(self.account, self.cursor),
                                          interruptible=True)
                if isinstance(polled, _Stopped):
                    return False
                items, next_cursor = polled
                advanced = next_cursor != self.cursor
                await self._held(self._store(items, next_cursor), interruptible=False)
            except _LeaseLost:
                raise
            except Exception as exc:  # reported, then the supervisor backs off
                if self.health is not None:
                    self.health.poll_failed(self.adapter.instance, self.account, describe(exc))
                raise
            if self.health is not None:
                self.health.polled(self.adapter.instance, self.account, items=len(items),
                                   advanced=advanced)
            interval = 0.0 if items else self.adapter.schedule.interval_seconds
            self.next_poll_at = time.monotonic() + interval
            return True
        except _LeaseLost as exc:
            log.warning("%s: %s; another process polls it now", self.lease_name, exc)
            self.lease = None
            return True

    async def _acquire(self) -> bool:
        started = time.monotonic()
        lease = await self.leases.acquire(self.lease_name, self.ttl)
        if lease is None:
            holder = await self.leases.holder(self.lease_name)
            if not self.waiting_logged:
                log.info("%s is polled by %s; standing by", self.lease_name,
                         holder.owner if holder else "another process")
                self.waiting_logged = True
            # Try again when a dead holder's lease would have run out (a live one renews
            # before that), and at least every third of the TTL, for a release.
            wait = self.renew_every if holder is None else min(self.renew_every,
                                                               holder.expires_in + 0.01)
            await self._sleep(max(wait, 0.01))
            return False
        self.lease, self.renewed_at = lease, started
        self.cursor_loaded = False
        self.next_poll_at = 0.0
        self.waiting_logged = False
        log.info("%s: polling (lease fence %d)", self.lease_name, lease.fence)
        if self.health is not None:
            self.health.poll_held(self.adapter.instance, self.account)
        return True

    async def _renew_if_due(self) -> None:
        if self.lease is None or time.monotonic() - self.renewed_at < self.renew_every:
            return
        started = time.monotonic()
        if not await self.lease.renew():
            raise _LeaseLost("its lease was lost")
        self.renewed_at = started

    async def _held(self, work: Coroutine[Any, Any, _T], *,
                    interruptible: bool) -> _T | _Stopped:
        """Run ``work`` while renewing the lease; a lost lease cancels it (``_LeaseLost``),
        and so does a stop when ``interruptible``."""
        task = asyncio.create_task(work, name=f"{self.lease_name}:work")
        stopped = asyncio.create_task(self.stop.wait(), name=f"{self.lease_name}:stop")
        watched = {task, stopped} if interruptible else {task}
        try:
            while True:
                timeout = max(0.0, self.renewed_at + self.renew_every - time.monotonic())
                done, _ = await asyncio.wait(watched, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if task in done:
                    return task.result()
                if stopped in done:
                    return _STOPPED
                await self._renew_if_due()
        finally:
            for pending in (task, stopped):
                pending.cancel()
            await asyncio.gather(task, stopped, return_exceptions=True)

    async def _store(self, items: Sequence[Any], next_cursor: bytes) -> None:
        adapter = self.adapter
        run: list[InboundMessage | DeliveryUpdate | DeliveryWatermark | MessageEdit] = []
        for item in items:
            if isinstance(item, InboundMessage | DeliveryUpdate | DeliveryWatermark
                          | MessageEdit):
                run.append(item)  # stored together (a run of messages in one round trip)
                continue
            if run:
                await adapter.store_items(run)
                run = []
            if isinstance(item, Unusable):
                await adapter.context.quarantine(adapter.instance, item.raw, item.reason)
            else:
                raise TypeError(f"poll returned a {type(item).__name__}; expected "
                                "InboundMessage, DeliveryUpdate, DeliveryWatermark, MessageEdit "
                                "or Unusable")
        if run:
            await adapter.store_items(run)
        if next_cursor == self.cursor:
            return
        assert self.lease is not None
        if not await self.cursors.save(adapter.instance, self.account, next_cursor,
                                       fence=self.lease.fence):
            raise _LeaseLost("its cursor checkpoint was refused (stale fence)")
        self.cursor = next_cursor

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def release(self) -> None:
        """Give the lease up (a clean stop); a failure only delays takeover until the TTL."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        try:
            await lease.release()
        except Exception as exc:
            log.warning("%s: releasing the lease failed (%s); it expires in %.0f s",
                        self.lease_name, describe(exc), self.ttl)

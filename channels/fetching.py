"""Fetch after notify, the worker's half: run one queued fetch and settle it by the error's
class alone.

The webhook stored the notification (``FetchNotice``) and answered the provider; a worker took
the job from the queue (``channels.services.fetches``) and calls ``run_fetch``:

1. ``adapter.fetch_resource(job.resource)`` under ``FetchPolicy.timeout_seconds``: the adapter
   calls the provider's API with the account's token and returns normalized items;
2. ``adapter.store_items(items)``: messages ingested (deduplicated by their idempotency key, so
   a fetch repeated after a crash stores nothing twice), receipts applied, further notices
   queued;
3. the job is settled: ``done`` once everything is stored; on a ``RetryableError`` (timeouts,
   5xx, 429 with its Retry-After as a floor, a ``TokenExpired``) or a failure to store (Redis
   down, the store refusing), ``retry_later`` with capped exponential backoff and full jitter,
   until ``max_attempts`` attempts have failed; on a ``PermanentError`` (``AuthError``, a
   404, a bug in the adapter), ``fail`` at once. A failed job is kept, with the error, for an
   operator to retry once the cause is fixed.

The hub runs this from a consumer-group worker on Redis (``hub/fetcher.py``); the conformance
kit runs it from an in-memory queue (``channels.testing.fetches``). Both share this decision.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Literal

import msgspec

from channels.base import ChannelAdapter
from channels.errors import ChannelError, PermanentError, RetryableError
from channels.services.fetches import FetchEntry, FetchSettlement
from channels.supervisor import Backoff, describe

log = logging.getLogger(__name__)

FetchOutcome = Literal["fetched", "retrying", "failed"]

DEFAULT_BACKOFF: Final = Backoff(base=1.0, cap=600.0)


class FetchPolicy(msgspec.Struct, frozen=True):
    """How hard the worker tries: ``max_attempts`` failed attempts (the first included) before a
    job is failed, ``backoff`` between them, ``timeout_seconds`` per provider call."""

    max_attempts: int = 10
    backoff: Backoff = DEFAULT_BACKOFF
    timeout_seconds: float = 30.0


async def run_fetch(adapter: ChannelAdapter | None, job: FetchEntry, settle: FetchSettlement,
                    policy: FetchPolicy) -> FetchOutcome:
    """Fetch ``job``'s resource, store the result and settle the job (module docstring).

    Errors of the settlement itself (Redis unreachable) propagate: the job stays claimed and
    another worker takes it over, which is safe because storing is idempotent.
    """
    if adapter is None:
        await settle.fail(job, error=f"channel instance {job.instance!r} is not configured")
        return "failed"
    attempt = job.attempts + 1
    failure: ChannelError
    try:
        try:
            async with asyncio.timeout(policy.timeout_seconds):
                items = await adapter.fetch_resource(job.resource)
        except TimeoutError:
            raise RetryableError(
                f"the fetch took longer than {policy.timeout_seconds:g} s") from None
        try:
            await adapter.store_items(items)
        except Exception as exc:  # the store's trouble, not the provider's: try again later
            raise RetryableError(f"could not store the fetched items: {describe(exc)}") from exc
    except PermanentError as exc:
        failure = exc
    except ChannelError as exc:
        failure = exc if isinstance(exc, RetryableError) else RetryableError(describe(exc))
    else:
        await settle.done(job)
        return "fetched"
    error = describe(failure)
    if isinstance(failure, PermanentError) or attempt >= policy.max_attempts:
        if not isinstance(failure, PermanentError):
            error = f"{error} (gave up after {attempt} attempts)"
        await settle.fail(job, error=error)
        log.warning("fetch %s of %s failed: %s; kept for an operator to retry", job.id,
                    job.instance, error)
        return "failed"
    delay = policy.backoff.after(failure, attempt)
    await settle.retry_later(job, delay=delay, error=error)
    log.info("fetch %s of %s attempt %d failed (%s); retry in %.2f s", job.id, job.instance,
             attempt, error, delay)
    return "retrying"

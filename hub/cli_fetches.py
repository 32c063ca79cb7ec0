"""``inboxhub channels fetches``: the fetch-after-notify backlog and failed fetches, and their
retry, kept out of ``hub.cli`` so it stays a dispatcher.

    inboxhub channels fetches [INSTANCE] [--failed] [--limit N] [--json]
    inboxhub channels fetches retry ID
    inboxhub channels fetches retry --all INSTANCE

Only Redis is needed (no channel secrets): a retry queues the entry and the running hub's
fetch worker fetches it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from channels.services.fetches import FetchBacklog, FetchEntry, NotFailed, UnknownFetch
from hub.cli_redis import stamp, with_redis
from hub.config import LoadedConfig
from storage.fetches import RedisFetchQueue

_INSTANCE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_parser(actions: Any) -> argparse.ArgumentParser:
    """Add ``fetches`` to the ``inboxhub channels`` subcommands."""
    parser: argparse.ArgumentParser = actions.add_parser(
        "fetches", help="fetch-after-notify backlog and failed fetches; retry them",
        usage="inboxhub channels fetches [INSTANCE] [--failed] [--limit N] [--json]\n"
              "       inboxhub channels fetches retry ID | retry --all INSTANCE")
    parser.add_argument("instance", nargs="?", metavar="INSTANCE",
                        help="one channel instance (default: every one that queued fetches)")
    parser.add_argument("target", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--failed", action="store_true", help="also list the failed fetches")
    parser.add_argument("--all", metavar="INSTANCE",
                        help="with retry: every failed fetch of INSTANCE")
    parser.add_argument("--limit", type=_positive, default=50,
                        help="failed fetches listed per instance (default 50)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


class _Usage(Exception):
    pass


def main(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    try:
        action = _action(args)
    except _Usage as exc:
        print(f"inboxhub: channels fetches: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_with_queue(loaded, action))


def _instance(value: str | None, what: str) -> str:
    if value is None:
        raise _Usage(f"{what} needs a channel INSTANCE")
    if not _INSTANCE.fullmatch(value):
        raise _Usage(f"{value[:80]!r} is not a channel instance name (1-64 of A-Z a-z 0-9 _ -)")
    return value


def _action(args: argparse.Namespace) -> Callable[[RedisFetchQueue], Awaitable[int]]:
    if args.instance == "retry":
        if args.failed or args.json:
            raise _Usage("retry takes no --failed or --json")
        if args.all is not None:
            if args.target is not None:
                raise _Usage("retry takes an ID or --all INSTANCE, not both")
            instance = _instance(args.all, "retry --all")
            return lambda queue: _retry_all(queue, instance)
        if not args.target:
            raise _Usage("retry needs an ID, or --all INSTANCE")
        job_id: str = args.target
        return lambda queue: _retry(queue, job_id)
    if args.target is not None:
        raise _Usage(f"unexpected argument {args.target[:80]!r}")
    if args.all is not None:
        raise _Usage("--all goes with retry: inboxhub channels fetches retry --all INSTANCE")
    one = None if args.instance is None else _instance(args.instance, "")
    return lambda queue: _list(queue, one, failed=args.failed, limit=args.limit,
                               as_json=args.json)


async def _with_queue(loaded: LoadedConfig,
                      action: Callable[[RedisFetchQueue], Awaitable[int]]) -> int:
    fetches = loaded.config.fetches
    return await with_redis(loaded, lambda client: action(RedisFetchQueue(
        client, dedupe_ttl_seconds=fetches.dedupe_ttl_seconds,
        failed_retention_seconds=fetches.failed_retention_days * 86400)))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


class _Listing(msgspec.Struct, frozen=True):
    backlog: list[FetchBacklog]
    failed: list[FetchEntry] | None = None


async def _list(queue: RedisFetchQueue, instance: str | None, *, failed: bool, limit: int,
                as_json: bool) -> int:
    instances = [instance] if instance is not None else await queue.instances()
    backlog = [await queue.backlog(i) for i in instances]
    entries: list[FetchEntry] = []
    if failed:
        for i in instances:
            entries += await queue.entries(i, "failed", limit=limit)
    if as_json:
        print(msgspec.json.encode(_Listing(backlog, entries if failed else None)).decode())
        return 0
    if not backlog:
        print("no channel has queued a fetch")
    for b in backlog:
        print(f"{b.instance}  queued={b.queued} retrying={b.retrying} failed={b.failed} "
              f"oldest={_age(b.oldest_age_seconds)}")
        if failed:
            for e in (e for e in entries if e.instance == b.instance):
                print(f"  {e.id}  {stamp(e.failed_at)}  attempts={e.attempts}  "
                      f"resource={e.resource[:80]}  {e.last_error or ''}")
    return 0


async def _retry(queue: RedisFetchQueue, job_id: str) -> int:
    try:
        await queue.retry(job_id)
    except UnknownFetch:
        print(f"inboxhub: no fetch {job_id[:100]}", file=sys.stderr)
        return 1
    except NotFailed:
        print(f"inboxhub: fetch {job_id} is not failed (it is queued or retrying)",
              file=sys.stderr)
        return 1
    print(f"{job_id} queued for fetching again")
    return 0


async def _retry_all(queue: RedisFetchQueue, instance: str) -> int:
    count = await queue.retry_all(instance)
    print(f"{count} failed fetch(es) of {instance} queued again")
    return 0

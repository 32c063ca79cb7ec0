"""Conversation list pages inside Redis: cost against a PING on the same connection.

    python -m bench.listing [--conversations 50000] [--rounds 200]

Seeds N conversations over 2 partitions (most resolved, a few waiting or assigned, one agent
with 20 of them), then times one page (limit 50) for: the head of the unfiltered list, a page
deep in it (via its cursor), a dense filter (status=resolved), a sparse one (assignee with 20
matches: the "driver" plan), a sparse filter across two large groups (the bounded scan, then
intersect), and an agent's scoped view. Each figure is printed as p50/p99 in microseconds
and as a ratio to the PING measured in the same run. Target: a page deep in the list costs what
the head does (keyset paging), and no plan grows with the partition's size beyond its
smallest filter group.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from channels.models import InboundMessage
from storage.embedded import find_redis_server
from storage.store import ConversationFilter, Position, Store, Visibility


async def seed(store: Store, n: int) -> None:
    rng = random.Random(1)
    batch = 50
    for start in range(0, n, batch):
        results = await asyncio.gather(*(store.ingest(InboundMessage(
            channel_type="api", channel_instance="shop" if i % 3 else "outlet",
            provider_message_id=f"m{i}", thread_id=f"t{i}", sender_handle=f"s{i}",
            text="hola")) for i in range(start, min(n, start + batch))))
        for offset, result in enumerate(results):
            i = start + offset
            if i % (n // 20 or 1) == 0:
                fields = {"status": "assigned", "assignee": "lucia", "language": "es"}
            elif i % 50 == 0:
                fields = {"status": "queued", "pool": "es#1", "language": "es"}
            else:
                fields = {"status": "resolved", "language": rng.choice(("es", "pt", "en"))}
            await store.update_conversation(result.conversation_id, fields)
    await store.redis.delete(*store.inbound_streams)


async def timed(call: Callable[[], Awaitable[Any]], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99) - 1] * 1e6


async def main(args: argparse.Namespace, sock: str) -> int:
    redis = Redis(unix_socket_path=sock, socket_timeout=30)
    try:
        store = Store(redis, partitions=2)
        t0 = time.perf_counter()
        await seed(store, args.conversations)
        print(f"seeded {args.conversations} conversations in {time.perf_counter() - t0:.1f} s")
        deep: Position | None = None
        for _ in range(100):
            deep = (await store.page_conversations(limit=50, after=deep)).next
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("PING", redis.ping),
            ("head of the list", lambda: store.page_conversations(limit=50)),
            ("page 101 via cursor", lambda: store.page_conversations(limit=50, after=deep)),
            ("status=resolved (dense)", lambda: store.page_conversations(
                limit=50, filters=ConversationFilter(status=("resolved",)))),
            ("assignee=lucia (20 matches)", lambda: store.page_conversations(
                limit=50, filters=ConversationFilter(assignee=("lucia",)))),
            ("channel=outlet & language=es", lambda: store.page_conversations(
                limit=50, filters=ConversationFilter(channel=("outlet",), language=("es",)))),
            ("agent scope (own + pool)", lambda: store.page_conversations(
                limit=50, visibility=Visibility("lucia", ("es#1",)))),
        ]
        ping = 0.0
        print(f"{'page of 50':32} {'p50 µs':>9} {'p99 µs':>9} {'p50/PING':>9} {'p99/PING':>9}")
        for name, call in cases:
            p50, p99 = await timed(call, args.rounds)
            if name == "PING":
                ping50, ping = p50, p99
            print(f"{name:32} {p50:9.0f} {p99:9.0f} {p50 / ping50:9.1f} {p99 / ping:9.1f}")
    finally:
        await redis.aclose()
    return 0


def cli() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="ih-bench-listing-")
    sock = os.path.join(home, "redis.sock")
    proc = subprocess.Popen([find_redis_server(), "--port", "0", "--unixsocket", sock,
                             "--save", "", "--appendonly", "no", "--dir", home],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        return asyncio.run(main(args, sock))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(cli())

"""Rate-limiter decisions and delivery receipts against a bare Redis PING.

    python -m bench.limiter [--samples 5000] [--seconds 3]

Starts its own redis-server (storage.embedded.EmbeddedRedis: unix socket, AOF everysec) in a
temporary directory, then on one connection, interleaved sample by sample:

* ``PING``;
* a granted limiter decision for a Telegram-like send (per-chat 1/s and per-bot 30/s limits:
  six buckets and the ticket keys, one Lua step), each sample to a fresh chat;
* a limited decision: a ticket that has to wait (its turn is reserved);
* a delivery receipt applied through the index (``RedisDeliveries.apply``: the per-partition
  lookup and the monotone step, 2 partitions, 20,000 indexed messages).

Then it reports decisions per second from 4 concurrent clients for a few seconds, against
PINGs per second from the same 4 clients. Targets (issue #12): a decision costs no more than a
few PINGs, so the limiter never becomes the outbound path's bottleneck (a provider allows tens
of sends per second per account; Redis answers tens of thousands of PINGs).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from redis.asyncio import Redis

from channels.models import DeliveryState, DeliveryUpdate, InboundMessage, OutboundReply
from channels.services.limits import RateLimit
from storage import keys
from storage.deliveries import RedisDeliveries
from storage.embedded import EmbeddedRedis
from storage.limiter import RedisLimiter
from storage.store import Store

TELEGRAM = (RateLimit("recipient", 1.0), RateLimit("account", 30.0, 30))
INDEXED = 20_000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sent_messages(store: Store, n: int) -> list[str]:
    """``n`` replies recorded as sent (provider ids p-0 .. p-n), like the sender leaves them."""
    pids = []
    for i in range(n):
        ingested = await store.ingest(InboundMessage(
            channel_type="api", channel_instance="shop", provider_message_id=f"in-{i}",
            thread_id=f"t-{i}", sender_handle=f"b-{i}", text="hola"))
        p = keys.partition_of("shop", f"t-{i}", store.partitions)
        reply = OutboundReply(reply_id=keys.new_id(p), conversation_id=ingested.conversation_id,
                              channel_type="api", channel_instance="shop", thread_id=f"t-{i}",
                              recipient_handle=f"b-{i}", text="gracias")
        await store.enqueue_reply(reply)
        await store.claim_send(reply.reply_id, lease_seconds=60, owner="bench")
        await store.mark_sent(reply.reply_id, f"p-{i}", channel_instance="shop")
        pids.append(f"p-{i}")
    return pids


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def throughput(make: Callable[[int], Callable[[], Awaitable[object]]], clients: int,
                     seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def run(c: int) -> None:
        nonlocal done
        call = make(c)
        while time.perf_counter() < deadline:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(run(c) for c in range(clients)))
    return done / (time.perf_counter() - start)


async def main(samples: int, seconds: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-limiter-"))
    server = EmbeddedRedis(tmp / "redis", appendfsync="everysec")
    redis: Redis | None = None
    try:
        await server.start()
        redis = Redis(unix_socket_path=str(server.socket_path), socket_timeout=30)
        store = Store(redis, partitions=2)
        limiter = RedisLimiter(redis)
        deliveries = RedisDeliveries(store)
        print(f"indexing {INDEXED:,} sent messages ...", flush=True)
        pids = await sent_messages(store, INDEXED)
        states: tuple[DeliveryState, ...] = ("delivered", "read")
        rows: dict[str, list[float]] = {"PING": [], "granted": [], "limited": [],
                                        "receipt": []}
        for i in range(samples):
            rows["PING"].append(await timed(redis.ping))
            rows["granted"].append(await timed(partial(
                limiter.acquire, "tg", TELEGRAM, recipient=f"chat-{i}", ticket=f"g-{i}")))
            rows["limited"].append(await timed(partial(
                limiter.acquire, "tg", TELEGRAM, recipient="busy-chat", ticket=f"w-{i}")))
            update = DeliveryUpdate("shop", pids[i % INDEXED], states[(i // INDEXED) % 2])
            rows["receipt"].append(await timed(partial(deliveries.apply, update)))
        ping50, ping99 = pct(rows["PING"], 0.5), pct(rows["PING"], 0.99)
        print(f"\n{samples:,} samples each, one connection, interleaved\n")
        print("| call | p50 / p99 | ratio to PING p50 / p99 |")
        print("|---|---|---|")
        for name, values in rows.items():
            p50, p99 = pct(values, 0.5), pct(values, 0.99)
            print(f"| {name} | {p50 * 1e6:.0f} / {p99 * 1e6:.0f} µs | "
                  f"{p50 / ping50:.2f}x / {p99 / ping99:.2f}x |")

        clients = [Redis(unix_socket_path=str(server.socket_path)) for _ in range(4)]
        try:
            pings = await throughput(lambda c: clients[c].ping, 4, seconds)
            limiters = [RedisLimiter(client) for client in clients]
            counter = iter(range(10**9))
            decisions = await throughput(
                lambda c: lambda: limiters[c].acquire("tg", TELEGRAM,
                                                      recipient=f"c-{next(counter)}"),
                4, seconds)
        finally:
            for client in clients:
                await client.aclose()
        print(f"\n4 clients for {seconds:g} s: {pings:,.0f} PING/s, {decisions:,.0f} limiter "
              f"decisions/s ({decisions / pings:.2f} of PING)")
    finally:
        if redis is not None:
            await redis.aclose()
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.seconds))

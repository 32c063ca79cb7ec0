"""The agent's conversation list and search over many conversations, against a PING.

    python -m bench.inbox_lists [--conversations 100000] [--rounds 200] [--partitions 2]

Seeds N conversations through the store's own ingest path in bulk (``Store.ingest_many``:
pipelines of the atomic ingest script, then the pipelined search-index write it does after
each batch, exactly what a webhook does), one buyer message each of 8..30 words of es/pt/en
shop vocabulary (a tenth with a Chinese sentence), a buyer name and an order id; then routing
fields (status, language, market, queue, assignee, pool) and tags are written through the
list script's own ``update``/``tags`` commands, pipelined. Nothing is mocked.

Then it times the first page (limit 50; search 20) of: the plain list, filtered lists
(status, unassigned, tag, language+market, an agent's scope), and search for a common word
(~40 % of conversations), a rare one (~10 conversations), two words (AND), an order id, a
buyer name, a Chinese bigram and an agent's scoped search, each as p50/p99 in microseconds
and as a ratio to a bare PING measured in the same run on the same connection.
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

from channels.models import ChannelHints, InboundMessage
from storage import search
from storage.embedded import find_redis_server
from storage.store import ConversationFilter, Store, Visibility

_VOCABULARY = ("hola pedido envío entrega devolución reembolso talla color producto paquete "
         "semana días llegó todavía quiero cambiar factura garantía roto dañado "
         "olá encomenda chegou ainda troca tamanho nota fiscal defeito prazo rastreio "
         "hello order shipping delivery refund return size colour product parcel week "
         "arrived still want change invoice warranty broken damaged tracking number")
WORDS = _VOCABULARY.split()
COMMON = "pedido"
RARE = "xilofone"
NAMES = ("María José", "João Silva", "Lucía Pérez", "Ana Souza", "Tom Baker", "Chen Wei",
         "Fatima Zahra", "Noa Levi", "Pedro Gómez", "Camila Rocha")
CHINESE = "我的包裹在哪里已经两个星期了"
SEARCH_LIMIT = 20


def message(i: int, rng: random.Random) -> InboundMessage:
    words = rng.choices(WORDS, k=rng.randint(8, 30))
    if rng.random() < 0.4:
        words.append(COMMON)
    if i % 10_000 == 7:
        words.append(RARE)
    text = " ".join(words) + (f" {CHINESE}" if i % 10 == 3 else "")
    return InboundMessage(
        channel_type="api", channel_instance="shop" if i % 3 else "outlet",
        provider_message_id=f"m{i}", thread_id=f"t{i}", sender_handle=f"buyer{i}@example.com",
        sender_name=f"{NAMES[i % len(NAMES)]} {i}", text=text,
        hints=ChannelHints(order_id=f"702-{i:07d}-{(i * 7919) % 10_000_000:07d}"))


def routing_fields(i: int, n: int, rng: random.Random) -> dict[str, str]:
    language = rng.choice(("es", "pt", "en"))
    market = {"es": "MX", "pt": "BR", "en": "US"}[language]
    base = {"language": language, "market": market, "queue": language}
    if i % (n // 20 or 1) == 0:
        return {**base, "status": "assigned", "assignee": "lucia", "language": "es"}
    if i % 50 == 0:
        return {**base, "status": "queued", "pool": "es#1", "language": "es"}
    if i % 7 == 0:
        return {**base, "status": "assigned", "assignee": f"agent{i % 40}"}
    return {**base, "status": "resolved"}


async def seed(store: Store, n: int, batch: int = 500) -> None:
    rng = random.Random(1)
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        results = await store.ingest_many([message(i, rng) for i in range(start, stop)])
        async with store.redis.pipeline(transaction=False) as pipe:
            for i, result in zip(range(start, stop), results, strict=True):
                if isinstance(result, Exception):
                    raise result
                cid = result.conversation_id
                k = store.keys_for(cid)
                assert k is not None
                flat = [x for item in routing_fields(i, n, rng).items() for x in item]
                await store.scripts.conversations(
                    keys=[k.conversations], args=[k.base, "update", cid, *flat], client=pipe)
                if i % 20 == 0:
                    await store.scripts.conversations(
                        keys=[k.conversations],
                        args=[k.base, "tags", cid, 20, "urgent\nvip" if i % 40 else "urgent",
                              ""], client=pipe)
            await pipe.execute()
    await store.redis.delete(*store.inbound_streams)


async def timed(call: Callable[[], Awaitable[Any]], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[max(0, int(len(samples) * 0.99) - 1)] * 1e6


def find(store: Store, q: str, visibility: Visibility | None = None,
         ) -> Callable[[], Awaitable[Any]]:
    terms = [("term", t) for t in search.query_terms(q)]
    return lambda: store.page_conversations(limit=SEARCH_LIMIT, required=terms,
                                            visibility=visibility)


async def main(args: argparse.Namespace, sock: str) -> int:
    redis = Redis(unix_socket_path=sock, socket_timeout=60)
    try:
        store = Store(redis, partitions=args.partitions)
        t0 = time.perf_counter()
        await seed(store, args.conversations)
        took = time.perf_counter() - t0
        info = await redis.info("memory")
        print(f"seeded {args.conversations} conversations in {took:.1f} s "
              f"({args.conversations / took:.0f}/s through Store.ingest_many + index); "
              f"Redis used_memory {info['used_memory'] / 2**20:.0f} MiB")
        lucia = Visibility("lucia", ("es#1",))
        sample = args.conversations // 2
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("PING", redis.ping),
            ("list: plain", lambda: store.page_conversations(limit=50)),
            ("list: status=resolved", lambda: store.page_conversations(
                limit=50, filters=ConversationFilter(status=("resolved",)))),
            ("list: unassigned", lambda: store.page_conversations(
                limit=50, filters=ConversationFilter(status=("new", "queued")))),
            ("list: tag=vip", lambda: store.page_conversations(
                limit=50, filters=ConversationFilter(tag=("vip",)))),
            ("list: language=pt&market=BR", lambda: store.page_conversations(
                limit=50, filters=ConversationFilter(language=("pt",), market=("BR",)))),
            ("list: agent scope", lambda: store.page_conversations(limit=50, visibility=lucia)),
            (f"search: common ({COMMON})", find(store, COMMON)),
            (f"search: rare ({RARE})", find(store, RARE)),
            ("search: two words (AND)", find(store, "reembolso garantía")),
            ("search: order id", find(store, f"702-{sample:07d}-{(sample * 7919) % 10**7:07d}")),
            ("search: buyer name", find(store, f"{NAMES[sample % len(NAMES)]} {sample}")),
            ("search: CJK bigram (包裹)", find(store, "包裹")),
            ("search: common, agent scope", find(store, COMMON, lucia)),
        ]
        print(f"{'first page':34} {'rows':>5} {'p50 µs':>9} {'p99 µs':>9} {'p50/PING':>9} "
              f"{'p99/PING':>9}")
        ping50 = ping99 = 1.0
        for name, call in cases:
            p50, p99 = await timed(call, args.rounds)
            if name == "PING":
                ping50, ping99 = p50, p99
                rows = "-"
            else:
                rows = str(len((await call()).conversations))
            print(f"{name:34} {rows:>5} {p50:9.0f} {p99:9.0f} {p50 / ping50:9.1f} "
                  f"{p99 / ping99:9.1f}")
    finally:
        await redis.aclose()
    return 0


def cli() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inbox_lists", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=2)
    args = parser.parse_args()
    if args.conversations < 1 or args.rounds < 1 or args.partitions < 1:
        parser.error("--conversations, --rounds and --partitions must be positive")
    home = tempfile.mkdtemp(prefix="ih-bench-lists-")
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

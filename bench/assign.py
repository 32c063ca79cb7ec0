"""Assignment decision latency and throughput against a bare Redis PING.

    python -m bench.assign [--samples 3000] [--route-samples 400] [--seconds 5] [--no-throughput]

Starts its own redis-server (storage.embedded.EmbeddedRedis: unix socket, AOF, appendfsync
everysec) in a temporary directory, then:

1. enqueues 100,000 conversations that stay waiting (their queue asks for a language no agent
   speaks), so every decision below runs next to a 100,000-long wait set;
2. with 10, then 1,000, then 10,000 online agents (chat capacity 50, spread over es/pt/en queues
   with markets and skills), measures on one connection, interleaved sample by sample:
   ``PING``; an ``enqueue`` that assigns (the routing script's decision for a new
   conversation); the ``release`` that closes it again (capacity freed: a decision too, it
   drains); an ``enqueue`` that waits (added to the 100,000); and, on fewer samples, the full
   ``RoutingEngine.route`` (classification + decision) for a Spanish buyer;
3. measures time inside Redis per script call in a separate pass: the mean from
   ``INFO commandstats`` (cmdstat_evalsha usec_per_call delta) and p50/p99 from ``SLOWLOG`` with
   a 0 µs threshold (enabled for that pass only, so it does not touch the client figures);
4. with 10,000 agents, runs 3 client processes doing enqueue(assign) + release for a few
   seconds and reports decisions per second.

Targets (docs ROUTING.md): decision p50 <= 2x and p99 <= 5x a PING; <= 1.5x growth of p99 from
10 to 10,000 agents; inside Redis p99 <= 0.5 ms; >= 2,000 decisions/s with 3 router processes.
The run is bounded (about a minute and a half on 2 cores) and removes its directory on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from channels.models import InboundMessage
from routing.classify.skill import SkillClassifier
from routing.config import (
    AgentConfig,
    QueueConfig,
    RoutingConfig,
    RuleConfig,
    StepConfig,
    WhenConfig,
)
from routing.eligibility import agent_pools, pool_id
from routing.engine import RoutingEngine
from storage.embedded import EmbeddedRedis
from storage.store import Store

ROOT = Path(__file__).resolve().parent.parent
SIZES = (10, 1_000, 10_000)
WAITING = 100_000
BATCH = 500
EXPLAIN = json.dumps({
    "event": "classified", "at": 0, "language": "es", "language_confidence": 0.98,
    "language_source": "text", "language_candidates": [["es", 0.98], ["pt", 0.02]],
    "market": "MX", "market_source": "channel_hint", "market_evidence": "MX",
    "skill": "refund", "skill_rule": "es.refund.devolucion", "skill_keyword": "reembolso",
    "rule": "spanish", "queue": "es", "priority": 0,
})
LANGS = ("es", "pt", "en")
MARKETS = ("MX", "BR", "US", "ES")


def routing_config() -> RoutingConfig:
    def queue(lang: str, market: str) -> QueueConfig:
        return QueueConfig(lang, steps=[
            StepConfig(languages={lang: 3}, markets=[market], skills={"refund": 2}),
            StepConfig(after_seconds=60, languages={lang: 3}),
            StepConfig(after_seconds=300)])

    nobody = QueueConfig("nobody", steps=[StepConfig(languages={"zz": 1})])
    return RoutingConfig(languages=list(LANGS), queues=[queue("es", "MX"), queue("pt", "BR"),
                                                        queue("en", "US"), nobody],
                         rules=[RuleConfig(lang, lang, WhenConfig(language=[lang]))
                                for lang in LANGS])


def agent(i: int) -> AgentConfig:
    lang = LANGS[i % 3]
    other = LANGS[(i // 3) % 3]
    return AgentConfig(id=f"agent{i:05d}", languages={lang: 5, other: 3},
                       markets=[MARKETS[(i // 9) % 4]],
                       skills={"refund": 1 + i % 5} if i % 2 else {"shipping": 3},
                       capacity={"chat": 50, "email": 20})


def engine_for(redis: Redis, cfg: RoutingConfig, identifier: Any = None) -> RoutingEngine:
    return RoutingEngine(Store(redis, partitions=2), cfg, identifier=identifier,
                         skills=SkillClassifier.default())


def enqueue_args(cid: str, queue: QueueConfig) -> list[Any]:
    return [cid, queue.name, ",".join(pool_id(queue.name, i) for i in range(len(queue.steps))),
            ",".join(repr(s.after_seconds) for s in queue.steps), "chat", 0, "", EXPLAIN]


async def add_agents(engine: RoutingEngine, start: int, stop: int) -> None:
    for lo in range(start, stop, BATCH):
        async with engine.state.redis.pipeline(transaction=False) as pipe:
            for i in range(lo, min(stop, lo + BATCH)):
                a = agent(i)
                pools = ",".join(f"{p}={r}" for p, r in sorted(agent_pools(a, engine.queues)
                                                                .items()))
                await engine.state.script(keys=[engine.state.base + "events"],
                                    args=[engine.state.base, "agent", repr(time.time()), a.id,
                                          "online", "chat=50,email=20", pools, 1],
                                    client=pipe)
            await pipe.execute()


async def add_waiting(engine: RoutingEngine, n: int) -> None:
    nobody = engine.cfg.queue("nobody")
    for lo in range(0, n, BATCH):
        async with engine.state.redis.pipeline(transaction=False) as pipe:
            for i in range(lo, min(n, lo + BATCH)):
                await engine.state.script(keys=[engine.state.base + "events"],
                                    args=[engine.state.base, "enqueue", repr(time.time()),
                                          *enqueue_args(f"w{i}", nobody)],
                                    client=pipe)
            results = await pipe.execute()
        assert all(r[0] == b"waiting" for r in results), results[:3]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def client_latency(engine: RoutingEngine, tag: str, samples: int
                         ) -> dict[str, list[float]]:
    """PING and the three decisions, interleaved on one connection; 200 warm-up rounds."""
    es, nobody = engine.cfg.queue("es"), engine.cfg.queue("nobody")
    out: dict[str, list[float]] = {"ping": [], "assign": [], "release": [], "wait": []}
    redis = engine.state.redis
    clock = time.perf_counter
    gc.disable()
    try:
        for i in range(samples + 200):
            cid, wid = f"{tag}-a{i}", f"{tag}-w{i}"
            t0 = clock()
            await redis.ping()
            t1 = clock()
            r = await engine.call("enqueue", *enqueue_args(cid, es))
            t2 = clock()
            assert r[0] == b"assigned", r
            await engine.call("release", cid, "closed")
            t3 = clock()
            r = await engine.call("enqueue", *enqueue_args(wid, nobody))
            t4 = clock()
            assert r[0] == b"waiting", r
            await engine.call("release", wid, "closed")
            if i >= 200:
                for name, a, b in (("ping", t0, t1), ("assign", t1, t2), ("release", t2, t3),
                                   ("wait", t3, t4)):
                    out[name].append((b - a) * 1e6)
    finally:
        gc.enable()
    return out


async def route_latency(engine: RoutingEngine, tag: str, samples: int) -> list[float]:
    store = engine.store
    ready = []
    for i in range(samples + 50):
        msg = InboundMessage(channel_type="api", channel_instance="bench-1",
                             provider_message_id=f"{tag}-m{i}", thread_id=f"{tag}-t{i}",
                             sender_handle=f"{tag}-b{i}",
                             text="Hola, quiero un reembolso, el producto llegó roto.")
        result = await store.ingest(msg)
        conversation = await store.get_conversation(result.conversation_id)
        assert conversation is not None
        ready.append((conversation, msg))
    times: list[float] = []
    gc.disable()
    try:
        for i, (conversation, msg) in enumerate(ready):
            t0 = time.perf_counter()
            decision = await engine.route(conversation, msg)
            if i >= 50:
                times.append((time.perf_counter() - t0) * 1e6)
            assert decision.assignee, decision
            await engine.release(conversation.id)
    finally:
        gc.enable()
    return times


async def evalsha_stats(redis: Redis) -> tuple[int, float]:
    info = await redis.info("commandstats")
    row = info.get("cmdstat_evalsha", {})
    return int(row.get("calls", 0)), float(row.get("usec", 0))


async def server_time(engine: RoutingEngine, tag: str, samples: int) -> dict[str, Any]:
    """Time inside Redis per call: commandstats mean, SLOWLOG (0 µs threshold) p50/p99."""
    redis = engine.state.redis
    es, nobody = engine.cfg.queue("es"), engine.cfg.queue("nobody")
    old = await redis.config_get("slowlog-*")
    await redis.config_set("slowlog-max-len", str(4 * samples + 100))
    await redis.slowlog_reset()
    await redis.config_set("slowlog-log-slower-than", "0")
    calls0, usec0 = await evalsha_stats(redis)
    try:
        for i in range(samples):
            await engine.call("enqueue", *enqueue_args(f"{tag}-sa{i}", es))
            await engine.call("release", f"{tag}-sa{i}", "closed")
            await engine.call("enqueue", *enqueue_args(f"{tag}-sw{i}", nobody))
            await engine.call("release", f"{tag}-sw{i}", "closed")
    finally:
        await redis.config_set("slowlog-log-slower-than", old["slowlog-log-slower-than"])
    calls1, usec1 = await evalsha_stats(redis)
    entries = await redis.slowlog_get(4 * samples + 100)
    await redis.config_set("slowlog-max-len", old["slowlog-max-len"])
    await redis.slowlog_reset()
    by: dict[str, list[float]] = {"assign": [], "wait": [], "release": []}
    for e in entries:
        args = [a.decode() if isinstance(a, bytes) else str(a) for a in e["command"].split()] \
            if isinstance(e["command"], (bytes, str)) else []
        if len(args) < 6 or args[0].upper() != "EVALSHA":
            continue
        cmd = args[5]
        if cmd == "enqueue":
            by["assign" if args[8] == "es" else "wait"].append(float(e["duration"]))
        elif cmd == "release":
            by["release"].append(float(e["duration"]))
    mean = (usec1 - usec0) / max(1, calls1 - calls0)
    return {"mean": mean, **{k: (pct(v, 0.5), pct(v, 0.99), len(v)) for k, v in by.items() if v}}


def client_main(socket: str, seconds: float, seed: int) -> None:
    async def run() -> None:
        redis = Redis(unix_socket_path=socket, socket_timeout=10)
        engine = engine_for(redis, routing_config())
        es = engine.cfg.queue("es")
        n = 0
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                cid = f"tp{seed}-{n}"
                await engine.call("enqueue", *enqueue_args(cid, es))
                await engine.call("release", cid, "closed")
                n += 1
        finally:
            await redis.aclose()
        print(json.dumps({"pairs": n, "seconds": seconds}), flush=True)

    asyncio.run(run())


def throughput(socket: str, seconds: float) -> dict[str, float]:
    procs = [subprocess.Popen([sys.executable, "-m", "bench.assign", "--client", socket,
                               str(seconds), str(seed)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
             for seed in range(3)]
    pairs = 0
    try:
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 60)
            pairs += json.loads(out.strip().splitlines()[-1])["pairs"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return {"assign_per_s": pairs / seconds, "script_calls_per_s": 2 * pairs / seconds}


def fmt(us: float) -> str:
    return f"{us:7.1f}"


async def bench(args: argparse.Namespace) -> int:
    from routing.runtime import language_identifier

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="ihbench-"))
    server = EmbeddedRedis(tmp / "redis", appendfsync="everysec")
    redis: Redis | None = None
    try:
        await server.start()
        redis = Redis(unix_socket_path=str(server.socket_path), socket_timeout=30)
        cfg = routing_config()
        identifier = await asyncio.to_thread(language_identifier, tuple(cfg.languages),
                                             cfg.min_language_confidence, None)
        engine = engine_for(redis, cfg, identifier)
        t0 = time.monotonic()
        await add_waiting(engine, WAITING)
        waiting = await redis.zcard(engine.state.base + "pool:nobody#1:wait:chat")
        print(f"setup: {waiting:,} waiting conversations enqueued in "
              f"{time.monotonic() - t0:.1f} s; redis-server {server.pid}, AOF everysec, "
              f"unix socket", flush=True)
        # Rewrite the AOF now so an automatic rewrite (fork) does not land in a measurement.
        await redis.bgrewriteaof()
        for _ in range(600):
            if not (await redis.info("persistence"))["aof_rewrite_in_progress"]:
                break
            await asyncio.sleep(0.1)
        rows = []
        have = 0
        for n in SIZES:
            await add_agents(engine, have, n)
            have = n
            tag = f"n{n}"
            lat = await client_latency(engine, tag, args.samples)
            route = await route_latency(engine, tag, args.route_samples)
            inside = await server_time(engine, tag, min(args.samples, 2000))
            rows.append((n, lat, route, inside))
            p = lat["ping"]
            waiting = await redis.zcard(engine.state.base + "pool:nobody#1:wait:chat")
            print(f"\n{n:,} agents, {waiting:,}"
                  f" waiting; client side, µs (p50 / p99), {args.samples} samples each, ratio "
                  f"to PING:", flush=True)
            print(f"  PING             {fmt(pct(p, .5))} / {fmt(pct(p, .99))}")
            for name, label in (("assign", "enqueue->assign"), ("wait", "enqueue->wait"),
                                ("release", "release(+drain)")):
                v = lat[name]
                print(f"  {label:16} {fmt(pct(v, .5))} / {fmt(pct(v, .99))}   "
                      f"= {pct(v, .5) / pct(p, .5):4.2f}x / {pct(v, .99) / pct(p, .99):4.2f}x PING")
            print(f"  route (full)     {fmt(pct(route, .5))} / {fmt(pct(route, .99))}   "
                  f"= {pct(route, .5) / pct(p, .5):4.2f}x / {pct(route, .99) / pct(p, .99):4.2f}x"
                  f" PING   ({len(route)} samples: language id + decision + bookkeeping)")
            print(f"  inside Redis per script call: mean {inside['mean']:.1f} µs (commandstats);"
                  " SLOWLOG p50 / p99 µs: " + ", ".join(
                      f"{k} {v[0]:.0f} / {v[1]:.0f}" for k, v in inside.items() if k != "mean"))
        print("\nsummary (targets: p50 <= 2x, p99 <= 5x PING; growth 10 -> 10,000 agents "
              "<= 1.5x; inside Redis p99 <= 500 µs)")
        first, last = rows[0], rows[-1]
        for name in ("assign", "wait", "release"):
            g99 = pct(last[1][name], .99) / pct(first[1][name], .99)
            g50 = pct(last[1][name], .5) / pct(first[1][name], .5)
            worst99 = max(pct(r[1][name], .99) / pct(r[1]["ping"], .99) for r in rows)
            worst50 = max(pct(r[1][name], .5) / pct(r[1]["ping"], .5) for r in rows)
            inside99 = max(r[3][name][1] for r in rows if name in r[3])
            print(f"  {name:8} worst p50 {worst50:4.2f}x PING, worst p99 {worst99:4.2f}x PING; "
                  f"growth p50 {g50:4.2f}x, p99 {g99:4.2f}x; inside Redis p99 <= "
                  f"{inside99:.0f} µs")
        if not args.no_throughput:
            tp = await asyncio.to_thread(throughput, str(server.socket_path), args.seconds)
            print(f"\nthroughput, 3 client processes, {SIZES[-1]:,} agents, {WAITING:,} waiting, "
                  f"{args.seconds:.0f} s: {tp['assign_per_s']:,.0f} assigning decisions/s + "
                  f"as many releases = {tp['script_calls_per_s']:,.0f} decisions/s "
                  f"(target >= 2,000; {os.cpu_count()} cores shared with redis-server)")
        print(f"\ntotal bench time {time.monotonic() - started:.0f} s")
        return 0
    finally:
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.assign", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--route-samples", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args.client[0], float(args.client[1]), int(args.client[2]))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(bench(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())

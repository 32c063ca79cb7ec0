"""Shared pieces of the routing property tests, and a router process for the concurrency test.

As a module it provides what both sides need: the buyer texts, a config builder, a snapshot of
the routing state in Redis and the invariant checks over it (``check_state``), plus a replay of
the ``events`` stream that re-derives every agent's load at every assignment (``replay_events``).

As a script it is one "router process" of the concurrency test::

    python -m tests.routing.routing_worker SOCKET CONFIG_JSON SEED SECONDS [--no-queue-transfer]

It builds a RoutingEngine on the shared Redis and performs random arrivals, agent status flips,
releases, transfers and timer firings until SECONDS have passed, then prints a JSON summary.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.asyncio import Redis

from channels.models import ChannelHints, InboundMessage
from routing.config import AgentConfig, QueueConfig, RoutingConfig
from routing.eligibility import agent_pools, pool_id
from routing.engine import RoutingEngine, RoutingError
from routing.runtime import build_engine
from storage.store import Store

LANGUAGES = ("es", "pt", "en")
KINDS = ("chat", "email")
TEXTS: dict[str, tuple[str, ...]] = {
    "es": (
        "Hola, ¿dónde está mi pedido? Lo compré hace dos semanas.",
        "Quiero un reembolso, el producto llegó roto.",
        "Buenas tardes, ¿tienen este modelo en color negro?",
        "Mi paquete no ha llegado todavía, ¿me ayudan por favor?",
    ),
    "pt": (
        "Olá, cadê meu pedido? Comprei faz duas semanas.",
        "O produto chegou quebrado, quero devolver e receber meu dinheiro.",
        "Boa tarde, vocês têm esse modelo na cor preta?",
        "Meu pacote ainda não chegou, podem me ajudar por favor?",
    ),
    "en": (
        "Hi, where is my order? I bought it two weeks ago.",
        "I want a refund, the product arrived broken.",
        "Good afternoon, do you have this model in black?",
        "My parcel has not arrived yet, can you help me please?",
    ),
}


def new_config(agents: list[AgentConfig], queues: list[QueueConfig], **overrides: Any
               ) -> RoutingConfig:
    """Queues named after a language get a rule for that language; the default takes the rest."""
    from routing.config import RuleConfig, WhenConfig, validate_routing

    rules = [RuleConfig(f"lang-{q.name}", q.name, WhenConfig(language=[q.name]))
             for q in queues if q.name in LANGUAGES]
    cfg = RoutingConfig(languages=list(LANGUAGES), queues=queues, rules=rules, agents=agents,
                        **overrides)
    validate_routing(cfg)
    return cfg


def message(n: int, buyer: int, thread: int, lang: str, text: int, *, channel: str = "api",
            hint: int = 0) -> InboundMessage:
    hints = ChannelHints()
    if hint == 1:
        hints = ChannelHints(language=lang)
    elif hint == 2:
        hints = ChannelHints(market={"es": "MX", "pt": "BR", "en": "US"}[lang])
    return InboundMessage(channel_type=channel, channel_instance=f"{channel}-1",
                          provider_message_id=f"m{n}", thread_id=f"t{buyer}-{thread}",
                          sender_handle=f"buyer{buyer}", text=TEXTS[lang][text % 4],
                          hints=hints)


async def arrive(engine: RoutingEngine, store: Store, msg: InboundMessage
                 ) -> tuple[str, str | None, bool]:
    """Ingest and route one buyer message; returns (conversation, language, enqueued)."""
    result = await store.ingest(msg)
    conversation = await store.get_conversation(result.conversation_id)
    assert conversation is not None
    decision = await engine.route(conversation, msg)
    if decision.fields:
        await store.update_conversation(conversation.id, decision.fields)
    return conversation.id, decision.language, decision.queue is not None


# -- state ----------------------------------------------------------------------------------


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class Snapshot:
    """Everything the invariants look at, read in a couple of pipelined round trips."""

    agents: dict[str, dict[str, str]]        # agent:<a> hash
    convs: dict[str, set[str]]               # agent:<a>:convs
    pools: dict[str, dict[str, int]]         # agent:<a>:pools
    profiles: dict[str, AgentConfig]
    rc: dict[str, dict[str, str]]            # rc:<c> (only conversations with a queue)
    wait: dict[tuple[str, str], list[str]]   # (pool, kind) -> waiting conversations
    avail: dict[tuple[str, str], set[str]]
    online: dict[str, set[str]]
    timers: set[str]                         # pending + in-flight timer members
    queue_pools: dict[str, list[str]] = field(default_factory=dict)

    def load(self, agent: str, kind: str) -> int:
        return int(self.agents[agent].get(f"load:{kind}", "0"))

    def cap(self, agent: str, kind: str) -> int:
        return int(self.agents[agent].get(f"cap:{kind}", "0"))


async def snapshot(redis: Redis, engine: RoutingEngine) -> Snapshot:
    base = engine.state.base
    profiles = {a.id: a for a in await engine.agents()}
    ids = sorted(profiles)
    queue_pools = {q.name: [pool_id(q.name, i) for i in range(len(q.steps))]
                   for q in engine.queues}
    all_pools = [p for ps in queue_pools.values() for p in ps]
    rc_ids = []
    async for key in redis.scan_iter(match=base + "rc:*", count=1000):
        rest = _s(key)[len(base) + 3:]
        if ":" not in rest:                       # not rc:<c>:log and the like
            rc_ids.append(rest)
    rc_ids.sort()
    async with redis.pipeline(transaction=True) as pipe:   # MULTI: one consistent view
        for a in ids:
            pipe.hgetall(f"{base}agent:{a}")
            pipe.smembers(f"{base}agent:{a}:convs")
            pipe.hgetall(f"{base}agent:{a}:pools")
        for p in all_pools:
            for k in KINDS:
                pipe.zrange(f"{base}pool:{p}:wait:{k}", 0, -1)
                pipe.zrange(f"{base}pool:{p}:avail:{k}", 0, -1)
            pipe.smembers(f"{base}pool:{p}:online")
        for c in rc_ids:
            pipe.hgetall(f"{base}rc:{c}")
        pipe.zrange(f"{base}timers", 0, -1)
        pipe.zrange(f"{base}timers:inflight", 0, -1)
        rows = list(await pipe.execute())
    it = iter(rows)
    agents: dict[str, dict[str, str]] = {}
    convs: dict[str, set[str]] = {}
    pools: dict[str, dict[str, int]] = {}
    for a in ids:
        agents[a] = {_s(k): _s(v) for k, v in next(it).items()}
        convs[a] = {_s(c) for c in next(it)}
        pools[a] = {_s(k): int(v) for k, v in next(it).items()}
    wait: dict[tuple[str, str], list[str]] = {}
    avail: dict[tuple[str, str], set[str]] = {}
    online: dict[str, set[str]] = {}
    for p in all_pools:
        for k in KINDS:
            wait[(p, k)] = [_s(c) for c in next(it)]
            avail[(p, k)] = {_s(a) for a in next(it)}
        online[p] = {_s(a) for a in next(it)}
    rc = {}
    for c in rc_ids:
        h = {_s(k): _s(v) for k, v in next(it).items()}
        if "queue" in h:
            rc[c] = h
    timers = {_s(m) for m in next(it)} | {_s(m) for m in next(it)}
    return Snapshot(agents, convs, pools, profiles, rc, wait, avail, online, timers,
                    queue_pools)


def check_state(s: Snapshot, queues: list[QueueConfig], *,
                may_exceed: Collection[tuple[str, str]] = ()) -> list[str]:
    """The invariants over one consistent view; returns the violations found (empty = fine).

    ``may_exceed`` lists (agent, kind) whose capacity an operator lowered below the load: those
    may stay above capacity until work is released (no assignment may ever push them higher,
    which ``replay_events`` checks).
    """
    bad: list[str] = []
    owners: dict[str, list[str]] = defaultdict(list)
    for a, cs in s.convs.items():
        for c in cs:
            owners[c].append(a)
    # 1. no double assignment
    for c, owned in owners.items():
        if len(owned) > 1:
            bad.append(f"double assignment: {c} held by {sorted(owned)}")
    # 2. load bookkeeping and capacity
    for a in s.agents:
        for k in KINDS:
            held = sum(1 for c in s.convs[a] if s.rc.get(c, {}).get("kind") == k)
            if s.load(a, k) != held:
                bad.append(f"load mismatch: {a} load:{k}={s.load(a, k)} but holds {held}")
            if s.load(a, k) > s.cap(a, k) and (a, k) not in may_exceed:
                bad.append(f"capacity overrun: {a} {k} load {s.load(a, k)} > cap {s.cap(a, k)}")
        unknown = {c for c in s.convs[a] if c not in s.rc}
        if unknown:
            bad.append(f"{a} holds unrouted conversations {sorted(unknown)}")
    waiting_in: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for (p, k), members in s.wait.items():
        for c in members:
            waiting_in[c].append((p, k))
    # 3. every routed conversation is assigned, waiting or closed: never lost
    for c, h in s.rc.items():
        status = h.get("status")
        if status == "assigned":
            a = h.get("assignee")
            if not a or owners.get(c) != [a]:
                bad.append(f"lost: {c} status assigned to {a!r} but held by {owners.get(c)}")
            if waiting_in.get(c):
                bad.append(f"{c} assigned to {a} and also waiting in {waiting_in[c]}")
        elif status == "waiting":
            where = [(h.get("pool"), h.get("kind"))]
            if waiting_in.get(c) != where:
                bad.append(f"lost: {c} status waiting in {where} but in wait sets "
                           f"{waiting_in.get(c)}")
            if owners.get(c):
                bad.append(f"{c} waiting but held by {owners[c]}")
        elif status == "closed":
            if owners.get(c) or waiting_in.get(c):
                bad.append(f"{c} closed but held by {owners.get(c)} / waiting "
                           f"in {waiting_in.get(c)}")
        else:
            bad.append(f"lost: {c} in status {status!r}: neither assigned, waiting nor closed "
                       f"(held by {owners.get(c)}, waiting in {waiting_in.get(c)})")
    for c in waiting_in:
        if s.rc.get(c, {}).get("status") != "waiting":
            bad.append(f"{c} in a wait set but status {s.rc.get(c, {}).get('status')!r}")
    # 4. the availability index is exactly what the agents' state says
    for a in s.agents:
        expect_pools = agent_pools(s.profiles[a], queues)
        if s.pools[a] != expect_pools:
            bad.append(f"{a} pools {s.pools[a]} but eligibility says {expect_pools}")
    for (p, k), members in s.avail.items():
        expect = {a for a, h in s.agents.items()
                  if h.get("status") == "online" and int(h.get("weight", "1")) > 0
                  and s.load(a, k) < s.cap(a, k) and p in s.pools[a]}
        if members != expect:
            bad.append(f"avail index {p}/{k} = {sorted(members)}, expected {sorted(expect)}")
    for p, members in s.online.items():
        expect = {a for a, h in s.agents.items()
                  if h.get("status") == "online" and p in s.pools[a]}
        if members != expect:
            bad.append(f"online index {p} = {sorted(members)}, expected {sorted(expect)}")
    # 5. work conservation: nothing waits in a pool that has an agent with room
    for (p, k), members in s.wait.items():
        if members and s.avail[(p, k)]:
            bad.append(f"work conservation: {members} wait in {p}/{k} while "
                       f"{sorted(s.avail[(p, k)])} have room")
    return bad


def check_not_stranded(s: Snapshot) -> list[str]:
    """A conversation waiting before its queue's last step must have an escalation armed."""
    bad = []
    armed: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for m in s.timers:
        kind, conv, token = m.split("|", 2)
        if kind == "escalate":
            target, since = token.split("@", 1)
            armed[conv].append((int(target), since))
    for c, h in s.rc.items():
        if h.get("status") != "waiting":
            continue
        steps = s.queue_pools.get(h.get("queue", ""), [])
        step = int(h.get("step", "0"))
        if step >= len(steps):
            continue
        if not any(t > step and since == h.get("enqueued_at") for t, since in armed[c]):
            bad.append(f"stranded: {c} waits at step {step}/{len(steps)} of {h.get('queue')} "
                       f"({h.get('pool')}, online there: {sorted(s.online.get(h['pool'], ()))})"
                       f" with no escalation timer armed")
    return bad


@dataclass
class Replay:
    """Agent loads and owners re-derived from the ``events`` stream, one event at a time."""

    load: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    owner: dict[str, str] = field(default_factory=dict)
    last_id: str = "0-0"

    @classmethod
    def of(cls, s: Snapshot, last_id: str) -> Replay:
        r = cls(last_id=last_id)
        for a, cs in s.convs.items():
            for c in cs:
                r.owner[c] = a
                r.load[(a, s.rc[c]["kind"])] += 1
        return r


async def read_events(redis: Redis, base: str, after: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    start = "-" if after == "0-0" else f"({after}"
    while True:
        rows = await redis.xrange(base + "events", start, "+", count=5000)
        if not rows:
            return out
        for eid, fields in rows:
            out.append((_s(eid), {_s(k): _s(v) for k, v in fields.items()}))
        start = f"({out[-1][0]}"


def replay_events(r: Replay, events: list[tuple[str, dict[str, str]]], kinds: dict[str, str],
                  caps: dict[tuple[str, str], int],
                  on_assign: Any = None, on_event: Any = None) -> list[str]:
    """Apply events to the replayed loads; every assignment must fit the agent's capacity.

    ``kinds`` maps conversation -> capacity kind, ``caps`` (agent, kind) -> capacity in force.
    ``on_assign(conv, agent, fields, load)`` is called before the load is counted;
    ``on_event(event id, fields)`` for every event, in stream (= decision) order.
    """
    bad = []
    for eid, f in events:
        r.last_id = eid
        if on_event is not None:
            bad.extend(on_event(eid, f))
        c, a, t = f.get("conv", ""), f.get("agent", ""), f.get("type")
        if t == "assigned":
            prior = r.owner.get(c)
            if prior is not None and prior != a:          # manual transfer: no event for prior
                r.load[(prior, kinds[c])] -= 1
            if prior == a:
                bad.append(f"event {eid}: {c} assigned again to its holder {a}")
                continue
            if on_assign is not None:
                bad.extend(on_assign(c, a, f, r.load))
            r.owner[c] = a
            r.load[(a, kinds[c])] += 1
            if r.load[(a, kinds[c])] > caps.get((a, kinds[c]), 0):
                bad.append(f"event {eid}: assignment of {c} pushed {a} to "
                           f"{r.load[(a, kinds[c])]} > cap {caps.get((a, kinds[c]), 0)}")
        elif t in ("requeued", "released") and c in r.owner:
            held = r.owner.pop(c)
            r.load[(held, kinds[c])] -= 1
            if a and a != held:
                bad.append(f"event {eid}: {t} {c} from {a} but it was held by {held}")
    return bad


def check_replay(r: Replay, s: Snapshot) -> list[str]:
    bad = []
    owners = {c: a for a, cs in s.convs.items() for c in cs}
    if owners != r.owner:
        diff = {c: (r.owner.get(c), owners.get(c))
                for c in set(owners) | set(r.owner) if r.owner.get(c) != owners.get(c)}
        bad.append(f"events disagree with state (conv: replayed, actual): {diff}")
    for a in s.agents:
        for k in KINDS:
            if r.load[(a, k)] != s.load(a, k):
                bad.append(f"events say {a} load:{k}={r.load[(a, k)]}, state {s.load(a, k)}")
    return bad


# -- the worker process ----------------------------------------------------------------------


async def work(socket: str, cfg: RoutingConfig, seed: int, seconds: float, *,
               queue_transfers: bool = True) -> dict[str, int]:
    rng = random.Random(seed)
    redis = Redis(unix_socket_path=socket, socket_timeout=10)
    store = Store(redis, partitions=2)
    engine = build_engine(store, cfg)
    ids = [a.id for a in cfg.agents]
    counts: dict[str, int] = defaultdict(int)
    mine: list[str] = []
    deadline = time.monotonic() + seconds
    n = 0
    fake = time.time()
    try:
        while time.monotonic() < deadline:
            n += 1
            roll = rng.random()
            if roll < 0.5 or not mine:
                lang = rng.choice(LANGUAGES)
                msg = message(seed * 10_000_000 + n, seed * 1000 + rng.randrange(40),
                              rng.randrange(3), lang, rng.randrange(4),
                              channel=rng.choice(("api", "api", "email")),
                              hint=rng.randrange(3))
                cid, _, _ = await arrive(engine, store, msg)
                mine.append(cid)
                counts["arrivals"] += 1
            elif roll < 0.7:
                await engine.set_status(rng.choice(ids), rng.choice(("online", "online", "away",
                                                                     "offline")))
                counts["status"] += 1
            elif roll < 0.88:
                await engine.release(rng.choice(mine))
                counts["releases"] += 1
            elif roll < 0.94:
                try:
                    await engine.transfer_to_agent(rng.choice(mine), rng.choice(ids))
                    counts["transfers"] += 1
                except RoutingError:
                    counts["transfers_refused"] += 1
            elif roll < 0.97 and queue_transfers:
                conversation = await store.get_conversation(rng.choice(mine))
                if conversation is not None:
                    try:
                        await engine.transfer_to_queue(conversation,
                                                       rng.choice(engine.queues).name)
                        counts["queue_transfers"] += 1
                    except RoutingError:  # resolved meanwhile: a transfer never reopens it
                        counts["transfers_refused"] += 1
            else:
                fake += 3600
                counts["timers"] += await engine.fire_due_timers(now=fake)
    finally:
        await redis.aclose()
    return dict(counts)


def main(argv: list[str]) -> int:
    socket, config_path, seed, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    with open(config_path, "rb") as fh:
        cfg = msgspec.json.decode(fh.read(), type=RoutingConfig)
    print("ready", flush=True)
    counts = asyncio.run(work(socket, cfg, seed, seconds,
                              queue_transfers="--no-queue-transfer" not in argv[4:]))
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Reports: what the KPI aggregator costs the routing path, and a 90-day report's round trips.

    python -m bench.reports [--seconds 10] [--rounds 1] [--messages 1000000]
                            [--skip-overhead] [--skip-report]

Two parts, one after the other:

1. **Overhead.** ``python -m hub serve`` under ``bench.ingest``'s load (the same hub, config,
   signed webhook POSTs and drain, through ``bench.ingest.ingest_run``), once with
   ``[reports] aggregate = false`` and once with the aggregator on (``--rounds`` pairs,
   alternating which goes first). Printed: routed msg/s of both, their ratio (target: the
   aggregator costs at most 5%, on/off >= 0.95), and the hub's CPU per routed message. With
   the aggregator on, the bench then waits until its cursor reaches the end of the event log
   and adds that catch-up's CPU, so work deferred past the drain is not left out.
2. **A 90-day report.** A private redis-server (storage.embedded, AOF everysec as the hub's
   default) gets the events of ``--messages`` buyer messages over 90 days, written through
   ``storage.events.EventLog``'s own script in pipelines (no HTTP): conversations across
   agents, queues, languages, markets and channels with new messages, queueing, assignments,
   transfers, replies, SLA breaches, resolutions, reopenings and satisfaction surveys
   (answered in the chat or on the link page). The conversation records the aggregator reads
   are written beside them. Generation and folding alternate in chunks (the log is trimmed
   behind the folded cursor; a heap holds only the conversations in flight), and the real
   ``hub.kpis.KpiAggregator.step`` folds each chunk until caught up (fold rate: events/s of
   step time). Then the reports the API serves (``hub.reports`` summary, breakdown by agent,
   language and market, timeseries by day) run over the 90 days on a client that counts
   Redis round trips (top-level commands and pipeline executions); target < 50 each. The
   summary's counts are checked against what the generator wrote.

Everything is bounded (ingest_run's drain timeout, a catch-up cap, the generator's fixed
count); the hub, the redis-server and the temporary directories are removed on exit, also on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline as RedisPipeline

from bench import profiling
from bench.ingest import (
    ADMIN,
    CHANNEL,
    SECRET,
    Ingested,
    child_env,
    children,
    hub_config,
    ingest_run,
    run_bench,
    running_hub,
)

CATCH_UP_TIMEOUT = 120.0
TARGET_RATIO = 0.95
TARGET_ROUND_TRIPS = 50
DAYS = 90
END = datetime(2026, 11, 30, tzinfo=UTC).timestamp()  # the report's range ends here
TEAM_ZONE = "America/Mexico_City"
CHUNK_EVENTS = 50_000  # generated, written, then folded before the next
WRITE_PIPELINE = 2_000  # EVALSHAs per pipeline execution

AGENTS = tuple(f"agent{i:02d}" for i in range(40))
# market -> (languages it writes in, channel types it comes through), weights by volume
MARKETS: dict[str, tuple[tuple[str, ...], tuple[str, ...], int]] = {
    "MX": (("es",), ("mercadolibre", "whatsapp", "amazon"), 22),
    "BR": (("pt",), ("mercadolibre", "shopee", "whatsapp"), 20),
    "US": (("en", "es"), ("amazon", "ebay", "email"), 18),
    "ES": (("es",), ("amazon", "email", "whatsapp"), 10),
    "DE": (("de", "en"), ("amazon", "ebay", "email"), 8),
    "CN": (("zh",), ("aliexpress", "email"), 7),
    "CL": (("es",), ("mercadolibre", "whatsapp"), 8),
    "FR": (("fr", "en"), ("amazon", "email"), 7),
}
SKILLS = (("general", 45), ("shipping", 25), ("refund", 15), ("complaint", 10),
          ("invoice", 5))


# -- counting round trips --------------------------------------------------------------------


@dataclass
class RoundTrips:
    """What a client sent: top-level commands (one round trip each) and pipeline executions
    (one round trip each, however many commands they carry)."""

    commands: int = 0
    pipelines: int = 0
    piped_commands: int = 0

    @property
    def total(self) -> int:
        return self.commands + self.pipelines

    def snapshot(self) -> RoundTrips:
        return RoundTrips(self.commands, self.pipelines, self.piped_commands)

    def since(self, before: RoundTrips) -> RoundTrips:
        return RoundTrips(self.commands - before.commands, self.pipelines - before.pipelines,
                          self.piped_commands - before.piped_commands)


class CountingPipeline(RedisPipeline):
    """A redis-py pipeline that counts its executions (and a command it had to send alone:
    WATCH, or redis-py's SCRIPT EXISTS for pipelined Script objects)."""

    counter: RoundTrips

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.command_stack:
            self.counter.pipelines += 1
            self.counter.piped_commands += len(self.command_stack)
        return await super().execute(raise_on_error)

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        self.counter.commands += 1
        return await super().immediate_execute_command(*args, **options)


class CountingRedis(Redis):
    """The asyncio client with every round trip counted: what the reports code is handed in
    place of the hub's client (same class otherwise, so nothing else changes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.round_trips = RoundTrips()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.round_trips.commands += 1
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True,
                 shard_hint: str | None = None) -> CountingPipeline:
        pipe = CountingPipeline(self.connection_pool, self.response_callbacks, transaction,
                                shard_hint)
        pipe.counter = self.round_trips
        return pipe


# -- 1. overhead on the routing path ---------------------------------------------------------


@dataclass
class Mode:
    """One hub run under the ingest load: aggregator on or off."""

    aggregate: bool
    run: Ingested
    catch_up_seconds: float = 0.0
    catch_up_cpu: float = 0.0
    lag_at_drain: int = 0

    @property
    def name(self) -> str:
        return "aggregator on" if self.aggregate else "aggregator off"

    def cpu_per_message_us(self, with_catch_up: bool) -> float | None:
        n = self.run.acked.requests
        if self.run.hub_cpu is None or not n:
            return None
        cpu = self.run.hub_cpu + (self.catch_up_cpu if with_catch_up else 0.0)
        return 1e6 * cpu / n


async def events_behind(redis: Any, count: bool = False) -> int:
    """Whether (1) or, with ``count``, how many entries of the event log are after the KPI
    cursor (0: caught up)."""
    from storage.keys import EVENT_LOG
    from storage.kpis import CURSOR_KEY

    raw = await redis.get(CURSOR_KEY)
    cursor = raw.decode() if raw else "0-0"
    rows = await redis.xrange(EVENT_LOG, f"({cursor}", "+", count=100_000 if count else 1)
    return len(rows)


async def catch_up(redis: Any, pid: int) -> tuple[int, float, float]:
    """(events behind at the start, seconds and hub CPU seconds until none are)."""
    behind = await events_behind(redis, count=True)
    started, cpu = time.perf_counter(), profiling.cpu_seconds(pid)
    while await events_behind(redis):
        if time.perf_counter() - started > CATCH_UP_TIMEOUT:
            raise RuntimeError(f"the aggregator did not catch up within {CATCH_UP_TIMEOUT:g}s")
        await asyncio.sleep(0.05)
    after = profiling.cpu_seconds(pid)
    used = after - cpu if after is not None and cpu is not None else 0.0
    return behind, time.perf_counter() - started, used


async def overhead(args: argparse.Namespace) -> tuple[list[Mode], bool]:
    """``args.rounds`` pairs of hub runs, off/on then on/off; (the runs, all consistent)."""
    workdir = Path(tempfile.mkdtemp(prefix="ihbench-reports-", dir="/tmp"))
    env = child_env(IH_BENCH_SECRET=SECRET, IH_BENCH_ADMIN=ADMIN)
    modes: list[Mode] = []
    consistent = True
    try:
        with children() as started:
            for r in range(args.rounds):
                order = (False, True) if r % 2 == 0 else (True, False)
                for aggregate in order:
                    tag = f"{'on' if aggregate else 'off'}{r}"
                    extra = f"\n[reports]\naggregate = {'true' if aggregate else 'false'}\n"
                    (workdir / tag).mkdir()

                    def config(w: Path, port: int, extra: str = extra) -> Path:
                        return hub_config(w, port, extra)

                    async with running_hub(started, workdir / tag, env, config) as (
                            hub, url, pipeline):
                        run = await ingest_run(pipeline, f"{url}/webhooks/api/{CHANNEL}", tag,
                                               args, hub_pid=hub.proc.pid)
                        mode = Mode(aggregate, run)
                        if aggregate:
                            mode.lag_at_drain, mode.catch_up_seconds, mode.catch_up_cpu = \
                                await catch_up(pipeline.redis, hub.proc.pid)
                        stored, _, _ = await pipeline.verify()
                        consistent &= stored == run.warm.requests + run.acked.requests
                    consistent &= hub.stop() == 0
                    modes.append(mode)
                    print(f"  {mode.name} (round {r + 1}): {run.routed_rate:.0f} routed msg/s, "
                          f"{run.cpu_summary()}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return modes, consistent


def print_overhead(modes: list[Mode]) -> bool:
    """The table and the verdict; True when the aggregator costs at most 5% of the rate."""
    print()
    header = (f"{'target':<18}{'routed':>9}{'seconds':>9}{'msg/s':>9}{'hub CPU/msg':>13}"
              f"{'+catch-up':>11}{'lag':>8}")
    print(header)
    print("-" * len(header))
    totals: dict[bool, list[float]] = {False: [0, 0, 0, 0], True: [0, 0, 0, 0]}
    for m in modes:
        us, us_all = m.cpu_per_message_us(False), m.cpu_per_message_us(True)
        print(f"{m.name:<18}{m.run.acked.requests:>9}{m.run.routed_seconds:>9.2f}"
              f"{m.run.routed_rate:>9.0f}{_us(us):>13}{_us(us_all):>11}{m.lag_at_drain:>8}")
        t = totals[m.aggregate]
        t[0] += m.run.acked.requests
        t[1] += m.run.routed_seconds
        t[2] += m.run.hub_cpu or 0.0
        t[3] += m.catch_up_cpu
    print("-" * len(header))
    off, on = totals[False], totals[True]
    rate_off = off[0] / off[1] if off[1] else 0.0
    rate_on = on[0] / on[1] if on[1] else 0.0
    ratio = rate_on / rate_off if rate_off else 0.0
    cpu_off = 1e6 * off[2] / off[0] if off[0] else 0.0
    cpu_on = 1e6 * (on[2] + on[3]) / on[0] if on[0] else 0.0
    print(f"routed msg/s: off {rate_off:.0f}, on {rate_on:.0f}; ratio on/off = {ratio:.3f} "
          f"(target >= {TARGET_RATIO}: {'meets' if ratio >= TARGET_RATIO else 'BELOW'})")
    print(f"hub CPU per routed message: off {cpu_off:.0f} us, on {cpu_on:.0f} us with the "
          f"catch-up ({cpu_on - cpu_off:+.0f} us, "
          f"{(cpu_on / cpu_off - 1) * 100 if cpu_off else 0:+.1f}%); 'lag': events the "
          "aggregator was behind when the inbound streams had drained")
    return ratio >= TARGET_RATIO


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} us"


# -- 2. the 90-day report --------------------------------------------------------------------


@dataclass
class Tally:
    """What the generator wrote, to check the report against: ``counts`` are what the KPIs
    should count (non-spam conversations, events inside the range: a conversation begun
    near its end runs on past it)."""

    events: int = 0
    messages: int = 0
    conversations: int = 0
    spam: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


# at, order, conversation, kind, fields, what the KPIs should count for it
Pending = tuple[float, int, str, str, tuple[str, ...], tuple[str, ...]]


def _weighted(rng: random.Random, pairs: Any) -> Any:
    items = list(pairs)
    return rng.choices([k for k, _ in items], [w for _, w in items])[0]


def response_seconds(rng: random.Random) -> float:
    """Mostly minutes, a tail of hours (overnight, weekends): what agents' replies look like."""
    if rng.random() < 0.12:
        return rng.uniform(2 * 3600, 30 * 3600)
    return rng.expovariate(1 / 700) + 20


class Generator:
    """Conversations in start order, their events in time order, about ``messages`` buyer
    messages over ``DAYS`` days ending at ``END``."""

    def __init__(self, messages: int, survey_author: str, seed: int = 20) -> None:
        self.target = messages
        self.survey_author = survey_author
        self.rng = random.Random(seed)
        self.start = END - DAYS * 86400
        self.tally = Tally()
        self.heap: list[Pending] = []
        self.order = 0
        self.records: list[tuple[str, dict[str, str]]] = []

    def _push(self, at: float, cid: str, kind: str, *fields: str,
              counts: tuple[str, ...] = ()) -> None:
        self.order += 1
        heapq.heappush(self.heap, (at, self.order, cid, kind, fields, counts))
        self.tally.events += 1

    def _release(self, ready: list[Pending]) -> None:
        event = heapq.heappop(self.heap)
        ready.append(event)
        if event[0] < END:
            for name in event[5]:
                self.tally.add(name)

    def conversation(self, index: int) -> float:
        """One conversation's events onto the heap; returns its first message's time."""
        rng, tally = self.rng, self.tally
        cid = f"0.{index + 1:012x}"
        market = _weighted(rng, ((m, v[2]) for m, v in MARKETS.items()))
        languages, channels, _ = MARKETS[market]
        language, channel = rng.choice(languages), rng.choice(channels)
        skill = _weighted(rng, SKILLS)
        queue = f"{language}-{'care' if skill in ('refund', 'complaint') else 'sales'}"
        agent = rng.choice(AGENTS)
        spam = rng.random() < 0.01
        progress = tally.messages / self.target
        t0 = self.start + progress * DAYS * 86400  # never before an earlier one's start
        self.records.append((cid, {
            "id": cid, "channel": channel, "channel_instance": f"{channel}-1",
            "thread_id": f"t{index}", "queue": queue, "language": language, "market": market,
            "skill": skill, "assignee": agent, "status": "resolved",
            "spam": "1" if spam else "0", "created_at": repr(t0)}))
        tally.conversations += not spam
        tally.spam += spam

        def message(at: float, new: bool = False) -> None:
            counts = () if spam else ("messages_in", "conversations") if new else (
                "messages_in",)
            self._push(at, cid, "new_message", "msg", f"{cid}.{tally.messages}",
                       "channel", f"{channel}-1", "new", "1" if new else "0", counts=counts)
            tally.messages += 1

        def reply(at: float, who: str) -> None:
            self._push(at, cid, "reply", "agent", who, counts=("replies",))

        def assign(at: float, who: str, action: str = "assigned") -> None:
            self._push(at, cid, "assignment", "action", action, "agent", who, "queue", queue,
                       counts=("transfers",) if action == "transferred" else ())

        message(t0, new=True)
        if spam:
            return t0
        self._push(t0 + 0.2, cid, "assignment", "action", "queued", "queue", queue)
        t = t0 + rng.expovariate(1 / 240) + 1
        assign(t, agent)
        episodes = 1 + (rng.random() < 0.07)  # a reopening: a second episode
        for episode in range(episodes):
            if episode:  # the buyer writes again after the resolution: reopened
                t += rng.uniform(3600, 3 * 86400)
                message(t)
                self._push(t + 0.01, cid, "status", "action", "reopened", counts=("reopened",))
                self._push(t + 0.2, cid, "assignment", "action", "queued", "queue", queue)
                t += rng.expovariate(1 / 300) + 1
                assign(t, agent)
            for turn in range(rng.choice((1, 1, 1, 2, 2, 2, 3, 3, 4, 5))):
                if turn:
                    t += rng.expovariate(1 / 1200) + 30
                    message(t)
                if rng.random() < 0.2:  # a second buyer message before the answer
                    t += rng.uniform(20, 300)
                    message(t)
                wait = response_seconds(rng)
                if turn == 0 and episode == 0 and wait > 3600:
                    self._push(t + 3600, cid, "sla_breach", "clock", "first_response")
                if rng.random() < 0.04:
                    other = rng.choice(AGENTS)
                    if other != agent:
                        assign(t + wait / 2, other, "transferred")
                        agent = other
                t += wait
                reply(t, agent)
            t += rng.expovariate(1 / 900) + 10
            self._push(t, cid, "status", "action", "resolved", counts=("resolved",))
        if rng.random() < 0.4:  # a satisfaction survey after the last resolution
            score = str(_weighted(rng, (("5", 50), ("4", 20), ("3", 10), ("2", 8), ("1", 12))))
            by_link = rng.random() < 0.15
            t += 2
            if by_link:
                self._push(t, cid, "status", "action", "survey_link", counts=("csat_sent",))
            else:
                self._push(t, cid, "reply", "agent", self.survey_author, counts=("csat_sent",))
            if rng.random() < 0.45:
                t += rng.expovariate(1 / 3600) + 30
                if by_link:
                    self._push(t, cid, "status", "action", "rated", "reason", score,
                               "agent", agent, "via", "link", counts=("csat_answered",))
                else:  # the answer is a chat message, which reopened the conversation
                    message(t)
                    self._push(t + 0.01, cid, "status", "action", "reopened")
                    self._push(t + 0.05, cid, "status", "action", "rated", "reason", score,
                               "agent", agent, counts=("csat_answered",))
        return t0

    def chunks(self, size: int) -> Iterator[tuple[list[tuple[str, dict[str, str]]],
                                                  list[Pending]]]:
        """(conversation records, events in time order) about ``size`` events at a time.
        An event is released once no later conversation can have one before it (every
        later conversation starts after the one just generated)."""
        ready: list[Pending] = []
        index = 0
        while self.tally.messages < self.target:
            t0 = self.conversation(index)
            index += 1
            while self.heap and self.heap[0][0] <= t0:
                self._release(ready)
            if len(ready) >= size:
                records, self.records = self.records, []
                yield records, ready
                ready = []
        while self.heap:
            self._release(ready)
        records, self.records = self.records, []
        yield records, ready


@dataclass
class Timed:
    name: str
    seconds: float
    trips: RoundTrips
    rows: int


async def write_chunk(redis: Any, log: Any, records: list[tuple[str, dict[str, str]]],
                      events: list[Pending]) -> None:
    """The records first (the aggregator reads them), then the events through the event
    log's own script, ``WRITE_PIPELINE`` to a pipeline."""
    from storage.keys import PartitionKeys
    from storage.scripts import run_pipelined

    keys = PartitionKeys(0)
    for start in range(0, len(records), WRITE_PIPELINE):
        async with redis.pipeline(transaction=False) as pipe:
            for cid, record in records[start:start + WRITE_PIPELINE]:
                pipe.hset(keys.conversation(cid), mapping=record)
            await pipe.execute()
    for start in range(0, len(events), WRITE_PIPELINE):
        # EventLog's own arguments for its script: the entries the hub writes, byte for byte
        calls = [log._args(kind, cid, "rc", list(fields), at=at)
                 for at, _, cid, kind, fields, _ in events[start:start + WRITE_PIPELINE]]
        answers = await run_pipelined(redis, log._script, calls)
        errors = [a for a in answers if isinstance(a, Exception)]
        if errors:
            raise RuntimeError(f"{len(errors)} event log writes failed: {errors[0]!r}")


async def report(args: argparse.Namespace) -> bool:
    """Part 2; True when every report answered in under ``TARGET_ROUND_TRIPS`` and the
    summary agrees with what was generated."""
    from hub import reports
    from hub.kpis import SURVEY_AUTHOR, KpiAggregator
    from routing.business_hours import BusinessHours, Calendar
    from storage.embedded import EmbeddedRedis
    from storage.events import EventLog
    from storage.kpis import KpiStore, bucket_key
    from storage.leases import RedisLeaseManager
    from storage.schema import ensure_schema
    from storage.store import Store

    workdir = Path(tempfile.mkdtemp(prefix="ihbench-reports-", dir="/tmp"))
    embedded = EmbeddedRedis(workdir / "redis")
    redis: CountingRedis | None = None
    try:
        await embedded.start()
        redis = counting = CountingRedis(unix_socket_path=str(embedded.socket_path),
                                         socket_timeout=60)
        await ensure_schema(redis, partitions=1)
        store = Store(redis, partitions=1)
        log = EventLog(redis, retention=3 * CHUNK_EVENTS)
        kpis = KpiStore(redis)
        calendar = Calendar(BusinessHours(
            weekly={d: [("08:00", "20:00")] for d in ("mon", "tue", "wed", "thu", "fri",
                                                        "sat")},
            timezone=TEAM_ZONE))
        aggregator = KpiAggregator(store, log, kpis, calendar,
                                   RedisLeaseManager(redis, owner=f"bench-{os.getpid()}"))
        generator = Generator(args.messages, SURVEY_AUTHOR)
        write_seconds = fold_seconds = 0.0
        steps = folded = 0
        fold_trips = RoundTrips()
        started = time.perf_counter()
        for records, events in generator.chunks(CHUNK_EVENTS):
            t = time.perf_counter()
            await write_chunk(redis, log, records, events)
            write_seconds += time.perf_counter() - t
            before = redis.round_trips.snapshot()
            t = time.perf_counter()
            while await aggregator.step():
                steps += 1
            fold_seconds += time.perf_counter() - t
            trips = redis.round_trips.since(before)
            fold_trips = RoundTrips(fold_trips.commands + trips.commands,
                                    fold_trips.pipelines + trips.pipelines,
                                    fold_trips.piped_commands + trips.piped_commands)
            folded += len(events)
            if folded % (10 * CHUNK_EVENTS) < len(events):
                print(f"  {generator.tally.messages} messages, {folded} events written and "
                      f"folded ({time.perf_counter() - started:.0f} s)", flush=True)
        tally = generator.tally
        memory = (await redis.info("memory"))["used_memory_human"]
        print(f"\n{tally.messages} messages in {tally.conversations + tally.spam} conversations "
              f"({tally.spam} spam) over {DAYS} days: {tally.events} events")
        print(f"written through the event log's script: {write_seconds:.1f} s, "
              f"{tally.events / write_seconds:.0f} events/s (pipelines of {WRITE_PIPELINE})")
        print(f"folded by KpiAggregator.step: {fold_seconds:.1f} s, "
              f"{tally.events / fold_seconds:.0f} events/s ({steps} steps of up to "
              f"{aggregator.batch} events, {fold_trips.total / max(1, steps):.1f} round trips "
              f"each); Redis used_memory {memory}")

        span = reports.ReportRange(END - DAYS * 86400, END, TEAM_ZONE)
        async with redis.pipeline(transaction=False) as pipe:
            hours = range(int(span.start // 3600), int(span.end // 3600))
            for hour in hours:
                pipe.hlen(bucket_key(hour))
            fields = sum(await pipe.execute())
        print(f"report range: {DAYS} days, {len(hours)} hour buckets holding {fields} fields")

        async def timed(name: str, call: Callable[[], Awaitable[Any]],
                        rows: Callable[[Any], int]) -> tuple[Timed, Any]:
            before = counting.round_trips.snapshot()
            t = time.perf_counter()
            result = await call()
            seconds = time.perf_counter() - t
            return Timed(name, seconds, counting.round_trips.since(before), rows(result)), result

        results: list[Timed] = []
        done, overall = await timed("summary", lambda: reports.summary(kpis, span),
                                    lambda _r: 1)
        results.append(done)
        for by in ("agent", "language", "market"):
            done, _ = await timed(f"breakdown by {by}",
                                  lambda by=by: reports.breakdown(kpis, span, by),
                                  lambda r: len(r.rows))
            results.append(done)
        done, _ = await timed("timeseries by day", lambda: reports.timeseries(kpis, span, "day"),
                              lambda r: len(r.points))
        results.append(done)
    finally:
        if redis is not None:
            await redis.aclose()
        await embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    header = f"{'report (90 days)':<24}{'rows':>6}{'round trips':>13}{'commands':>10}" \
             f"{'pipelines':>11}{'piped':>8}{'seconds':>9}"
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.name:<24}{r.rows:>6}{r.trips.total:>13}{r.trips.commands:>10}"
              f"{r.trips.pipelines:>11}{r.trips.piped_commands:>8}{r.seconds:>9.2f}")
    print("-" * len(header))
    worst = max(r.trips.total for r in results)
    meets = worst < TARGET_ROUND_TRIPS
    print(f"most round trips for one report: {worst} (target < {TARGET_ROUND_TRIPS}: "
          f"{'meets' if meets else 'ABOVE'})")

    expected = tally.counts
    got = dict(overall.counts, csat_answered=overall.csat.answered)
    wrong = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
    print(f"summary check against the generator: "
          f"{'consistent' if not wrong else 'INCONSISTENT (report, generated): ' + str(wrong)}"
          f" ({', '.join(f'{k} {v}' for k, v in sorted(expected.items()))})")
    return meets and not wrong


# -- the run ---------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    # SIGTERM (a ``timeout``) ends the run through the clean-ups, as Ctrl-C does.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    print(f"inboxhub reports benchmark: {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}", flush=True)
    ok = True
    if not args.skip_overhead:
        print(f"1. aggregator overhead: bench.ingest's load, {args.seconds:g} s per run after "
              f"{args.warmup:g} s warm-up, concurrency {args.concurrency}, {args.rounds} "
              "round(s) of off+on", flush=True)
        modes, consistent = await overhead(args)
        ok &= print_overhead(modes) and consistent
        if not consistent:
            print("pipeline check: INCONSISTENT (stored != acknowledged, or a hub exit code)")
    if not args.skip_report:
        print(f"\n2. a {DAYS}-day report over {args.messages} messages' events", flush=True)
        ok &= await report(args)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured ingest load per hub run (part 1)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured load first")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--max-requests", type=int, default=500_000,
                        help="cap per phase (warm-up and measured)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="pairs of runs, aggregator off and on (order alternates)")
    parser.add_argument("--messages", type=int, default=1_000_000,
                        help="buyer messages whose events the 90-day report covers (part 2)")
    parser.add_argument("--skip-overhead", action="store_true", help="only part 2")
    parser.add_argument("--skip-report", action="store_true", help="only part 1")
    args = parser.parse_args(argv)
    if (args.seconds <= 0 or args.concurrency < 1 or args.max_requests < 1
            or args.rounds < 1 or args.messages < 1):
        parser.error("--seconds, --concurrency, --max-requests, --rounds and --messages must "
                     "be positive")
    return run_bench(bench, args)


if __name__ == "__main__":
    sys.exit(main())

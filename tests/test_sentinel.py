"""The hub on a real Redis Sentinel setup (tests/redis_sentinel.py: a master, a replica, three
sentinels on local ports, started once per session when the first of these tests runs).

A few of the pipeline's own tests run here a second time with the ``redis_server`` and
``redis`` fixtures pointing at the Sentinel master (the hub connects with the
``redis+sentinel://`` URL; one of them runs ``inboxhub serve`` processes), then what only
Sentinel has: the durability check reading the master, and a failover under load — the master
killed with SIGKILL while webhooks keep coming, the replica promoted, the hub finding the new
master by itself. Marked ``sentinel``: ``pytest -m "not sentinel"`` leaves them out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel

from hub.config import LoadedConfig, load_config
from hub.keys import REDIS, STORE
from hub.redis_connection import durability_warnings, open_redis
from storage.scripts import _source
from storage.sentinel import DISCOVERY_GRACE, HubSentinel, parse_sentinel_url
from tests import test_crash_recovery, test_pipeline, test_routing_api, test_take
from tests.conftest import need_service, write_config
from tests.helpers import eventually, running_hub, signed_post_args
from tests.redis_sentinel import MASTER_NAME, RedisSentinelServer, SentinelUnavailable

pytestmark = pytest.mark.sentinel


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelServer]:
    """One master + replica + three sentinels for the session (about 5 s to agree)."""
    try:
        setup = RedisSentinelServer()
    except SentinelUnavailable as exc:
        need_service(str(exc))
        raise
    yield setup
    setup.stop()


@pytest.fixture
def redis_server(redis_sentinel: RedisSentinelServer) -> RedisSentinelServer:
    """Overrides conftest's: ``redis_server.url`` is the ``redis+sentinel://`` URL."""
    return redis_sentinel


@pytest_asyncio.fixture
async def redis(redis_sentinel: RedisSentinelServer) -> AsyncIterator[Redis]:
    """Overrides conftest's: a client of whichever server the sentinels call master, on an
    emptied database (the replica follows the FLUSHALL)."""
    target = parse_sentinel_url(redis_sentinel.url)
    sentinel = Sentinel(target.sentinels, socket_timeout=10)
    client = sentinel.master_for(MASTER_NAME, socket_timeout=10)
    await client.flushall()
    yield client
    await client.aclose()
    await sentinel.aclose()


@pytest.fixture
def make_config(tmp_path: Path, redis_server: RedisSentinelServer, redis: Redis,
                hub_env: None) -> Callable[..., LoadedConfig]:
    """Overrides conftest's: the Sentinel URL."""

    def build(**kwargs: Any) -> LoadedConfig:
        redis_url = kwargs.pop("redis_url", redis_server.url)
        return load_config(write_config(tmp_path, redis_url, **kwargs))

    return build


# -- the pipeline: webhook -> stored -> routed -> reply sent, through the Sentinel URL --------
test_round_trip = test_pipeline.test_message_to_reply_round_trip
test_redelivery = test_pipeline.test_concurrent_redelivery_stores_one_message
test_assignment = test_routing_api.test_assignment_visible_through_api
test_take_once = test_take.test_an_agent_takes_a_waiting_conversation_once
# -- inboxhub serve processes on the Sentinel URL: one SIGKILLed before its ack -------------
test_router_crash = test_crash_recovery.test_router_killed_before_ack_is_reclaimed_and_finished


async def test_durability_warnings_read_the_master(
        tmp_path: Path, hub_env: None, redis: Redis,
        redis_sentinel: RedisSentinelServer) -> None:
    """The hub's client reaches the master through the sentinels; the start-up check reads
    that server's settings, not a replica's or a sentinel's: AOF on at the master alone
    silences the AOF warning (the replica keeps AOF off)."""
    master = redis_sentinel.master_port()
    assert master is not None
    loaded = load_config(write_config(tmp_path, redis_sentinel.url))
    async with open_redis(loaded.config) as (client, owned):
        assert owned is None
        assert int((await client.info("server"))["tcp_port"]) == master
        assert any("appendonly no" in w for w in await durability_warnings(client))
        assert redis_sentinel.cli_call(master, "config", "set", "appendonly", "yes").strip() == "OK"
        try:
            warnings = await durability_warnings(client)
        finally:
            redis_sentinel.cli_call(master, "config", "set", "appendonly", "no")
        assert warnings == [], warnings


async def test_discovery_waits_little_for_a_hung_sentinel(
        redis_sentinel: RedisSentinelServer) -> None:
    """Every sentinel is asked at once: a hung one (SIGSTOP: connects, never answers) costs
    the one-second grace on a connect, not the 10 s socket timeout. (That a stale sentinel
    cannot win over a newer configuration epoch is tests/test_sentinel_config.py's.)"""
    setup = redis_sentinel
    master = await asyncio.to_thread(setup.heal)
    sentinel = HubSentinel([("127.0.0.1", p) for p in setup.sentinel_ports], socket_timeout=10)
    loop = asyncio.get_running_loop()
    hung = setup.sentinel_ports[0]
    setup.pause(hung)
    try:
        started = loop.time()
        assert await sentinel.discover_master(MASTER_NAME) == ("127.0.0.1", master)
        assert loop.time() - started < DISCOVERY_GRACE + 1.0
    finally:
        setup.resume(hung)
    replies = await sentinel._ask_all(MASTER_NAME)
    assert len({int(r["config-epoch"]) for r in replies}) == 1  # all agree: nothing stale
    with pytest.raises(MasterNotFoundError):
        await sentinel.discover_master("no-such-master")
    await sentinel.aclose()


MASTER_PASSWORD = "master-password-0123456789"
SENTINEL_PASSWORD = "sentinel-password-0123456789"


@contextlib.contextmanager
def _passwords(setup: RedisSentinelServer) -> Iterator[None]:
    """The setup with requirepass on master and replica and an ACL password on every sentinel,
    set at runtime (sentinels first told the master's, so none loses it) and taken off again
    for the tests after this one."""
    master = setup.master_port()
    assert master is not None
    data = setup.live_data_ports()
    try:
        for port in setup.sentinel_ports:
            setup.cli_call(port, "sentinel", "set", MASTER_NAME, "auth-pass", MASTER_PASSWORD)
        for port in data:
            setup.cli_call(port, "config", "set", "masterauth", MASTER_PASSWORD)
            setup.cli_call(port, "config", "set", "requirepass", MASTER_PASSWORD)
        for port in setup.sentinel_ports:
            setup.cli_call(port, "acl", "setuser", "default", "on", f">{SENTINEL_PASSWORD}")
        yield
    finally:
        for port in setup.sentinel_ports:
            setup.cli_call(port, "acl", "setuser", "default", "resetpass", "nopass",
                           password=SENTINEL_PASSWORD)  # in this order: resetpass drops nopass
        for port in data:
            setup.cli_call(port, "config", "set", "requirepass", "", password=MASTER_PASSWORD)
            setup.cli_call(port, "config", "set", "masterauth", "")
        for port in setup.sentinel_ports:
            setup.cli_call(port, "sentinel", "set", MASTER_NAME, "auth-pass", "")
        for port in setup.sentinel_ports + data:
            assert setup.cli_call(port, "ping").strip() == "PONG", f"{port} still wants a password"


async def test_passwords_reach_the_master_and_the_sentinels(
        tmp_path: Path, hub_env: None, redis: Redis, monkeypatch: pytest.MonkeyPatch,
        redis_sentinel: RedisSentinelServer) -> None:
    """redis_password goes to the master, sentinel_password to the sentinels, both from the
    environment; a hub given only the master's cannot ask the sentinels and says so at once
    (a MasterNotFoundError naming the sentinels' refusal), not after a timeout."""
    setup = redis_sentinel
    await asyncio.to_thread(setup.heal)
    monkeypatch.setenv("IH_TEST_REDIS_PASSWORD", MASTER_PASSWORD)
    monkeypatch.setenv("IH_TEST_SENTINEL_PASSWORD", SENTINEL_PASSWORD)
    storage = {"redis_password": "env:IH_TEST_REDIS_PASSWORD",
               "sentinel_password": "env:IH_TEST_SENTINEL_PASSWORD"}
    with _passwords(setup):
        loaded = load_config(write_config(tmp_path, setup.url, overrides={"storage": storage}))
        async with running_hub(loaded) as client:
            r = await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": "pw-1", "sender": "pw-buyer", "text": "hola"}))
            assert r.status == 200, await r.text()
            message_id = (await r.json())["stored"][0]
            assert await client.app[STORE].get_message(message_id) is not None
        del storage["sentinel_password"]
        half = load_config(write_config(tmp_path, setup.url, overrides={"storage": storage}))
        with pytest.raises(MasterNotFoundError, match=r"ResponseError|AuthenticationError"):
            async with open_redis(half.config) as (bare, _owned):
                await bare.ping()


# -- failovers: a switchover, then a kill under load (these two last: they move the master) --


async def test_a_switchover_demotes_the_master_and_the_hub_follows(
        tmp_path: Path, hub_env: None, redis: Redis,
        redis_sentinel: RedisSentinelServer) -> None:
    """``SENTINEL FAILOVER``, as an operator runs it for maintenance: the replica is promoted
    while the old master stays up and writable until Sentinel demotes it (8 s or more later),
    and whatever it took meanwhile is discarded when it resyncs from the new master. The hub's
    master watch moves its connections within about a second of the sentinels' switch: what
    it acknowledged before the switchover and after the move is stored; the window between is
    measured (closing it is ``storage.replica_acks``' job)."""
    setup = redis_sentinel
    old_master = await asyncio.to_thread(setup.heal)
    loaded = load_config(write_config(tmp_path, setup.url))
    async with running_hub(loaded) as client:
        loop = asyncio.get_running_loop()
        run = await _switch_over_under_load(client, setup, old_master, "sw")
        acked, refused, switch, moved_at = run.acked, run.refused, run.switch, run.moved_at
        new_master = await asyncio.to_thread(setup.wait_ready)  # old master replicates now
        assert new_master != old_master
        assert int((await client.app[REDIS].info("server"))["tcp_port"]) == new_master
        store = client.app[STORE]
        lost = [at for at, m in acked if await store.get_message(m) is None]
        late = [round(at - moved_at, 3) for at in lost if not switch <= at <= moved_at + 0.5]
        assert late == [], (late, len(lost), round(switch - moved_at, 3))
        await _or_explain(eventually(lambda: _drained(client), timeout=60), client)
        await _or_explain(eventually(lambda: _ready_at(client, loop), timeout=60), client)
    print(f"\nsentinel switchover: the hub moved {moved_at - switch:.2f} s after SENTINEL "
          f"FAILOVER; {len(acked)} acknowledged, {refused} refused meanwhile (503, retried), "
          f"{len(lost)} acknowledged on the old master after the promotion and lost")


async def test_with_replica_acks_a_switchover_loses_nothing_acknowledged(
        tmp_path: Path, hub_env: None, redis: Redis,
        redis_sentinel: RedisSentinelServer) -> None:
    """The switchover above with ``storage.replica_acks = 1``: once the replica is promoted
    the old master has no replica left to confirm a write, so what it takes in the window is
    refused (503, retried by the provider, stored on the new master) instead of acknowledged
    and then discarded. Every acknowledged message must be stored, with no window. The price:
    the new master has no replica either until the demoted one resyncs from it, so ingest
    waits (503s) for that long; the gap is printed."""
    setup = redis_sentinel
    old_master = await asyncio.to_thread(setup.heal)
    loaded = load_config(write_config(tmp_path, setup.url, overrides={
        "storage": {"replica_acks": 1, "replica_ack_timeout_ms": 300}}))
    async with running_hub(loaded) as client:
        run = await _switch_over_under_load(client, setup, old_master, "ra")
        acked, refused = run.acked, run.refused
        new_master = await asyncio.to_thread(setup.wait_ready)  # old master replicates now
        assert new_master != old_master
        store = client.app[STORE]
        lost = [m for _, m in acked if await store.get_message(m) is None]
        assert lost == []
        await _or_explain(eventually(lambda: _drained(client), timeout=60), client)
    times = [at for at, _ in acked]
    gap = max(b - a for a, b in itertools.pairwise(times))
    print(f"\nsentinel switchover with replica_acks=1: no webhook acknowledged for {gap:.2f} s "
          "(until the old master, demoted, resynced as the new one's replica); "
          f"{len(acked)} acknowledged, {refused} refused meanwhile, 0 lost")


@dataclass
class SwitchoverRun:
    acked: list[tuple[float, str]]  # (acknowledged at, message id), in order
    refused: int  # 503s answered meanwhile (each retried until acknowledged)
    switch: float  # loop time SENTINEL FAILOVER was sent
    moved_at: float  # loop time the hub's pool pointed at the new master


async def _switch_over_under_load(client: Any, setup: RedisSentinelServer, old_master: int,
                                  prefix: str) -> SwitchoverRun:
    """Twenty webhooks, then ``SENTINEL FAILOVER`` while webhooks go on one after another
    (each retried on 503) until a second after the hub's pool has moved to the new master."""
    loop = asyncio.get_running_loop()
    pool: Any = client.app[REDIS].connection_pool
    acked: list[tuple[float, str]] = []
    refused = 0

    async def deliver(i: int) -> None:
        nonlocal refused
        args = signed_post_args({"id": f"{prefix}-{i}", "sender": f"{prefix}-buyer-{i % 10}",
                                 "text": f"hola {i}"})
        for _ in range(400):
            r = await client.post("/webhooks/api/shop", **args)
            if r.status == 200:
                acked.append((loop.time(), (await r.json())["stored"][0]))
                return
            assert r.status == 503, await r.text()
            refused += 1
            await asyncio.sleep(0.05)
        pytest.fail(f"webhook {i} not acknowledged after the switchover")

    for i in range(20):
        await deliver(i)
    switch = loop.time()
    switching = asyncio.create_task(asyncio.to_thread(_switch_over, setup))
    moved_at: float | None = None
    i = 20
    while moved_at is None or loop.time() < moved_at + 1.0:
        assert loop.time() - switch < 30, "the hub never moved to a new master"
        await deliver(i)
        i += 1
        if moved_at is None and pool.master_address not in (None, ("127.0.0.1", old_master)):
            moved_at = loop.time()
    await switching
    assert moved_at is not None
    return SwitchoverRun(acked, refused, switch, moved_at)


WORKERS = 8
TOTAL = 400
KILL_AFTER = 100


async def test_a_killed_master_is_replaced_and_ingest_goes_on(
        tmp_path: Path, hub_env: None, redis: Redis,
        redis_sentinel: RedisSentinelServer) -> None:
    """SIGKILL the master while eight providers deliver webhooks at full speed: the sentinels
    promote the replica, the hub's pool asks them again on its next connect and ingest goes
    on; the router's blocking reads, the supervised loops and the Lua scripts (EVALSHA on a
    server whose script cache is empty: NOSCRIPT, then loaded) follow. Measured: time from
    the kill to the first webhook acknowledged again, and acknowledged messages lost
    (replication is asynchronous: only those acknowledged just before the kill can be)."""
    setup = redis_sentinel
    old_master = await asyncio.to_thread(setup.heal)
    loaded = load_config(write_config(tmp_path, setup.url))
    loop = asyncio.get_running_loop()
    acked: dict[int, tuple[float, float, str]] = {}  # i -> (sent, acknowledged, message id)
    refused = 0
    killed_at: float | None = None
    kill_now = asyncio.Event()
    next_index = iter(range(TOTAL))

    async with running_hub(loaded) as client:
        async def provider() -> None:
            """Delivers webhooks one after another, each retried until acknowledged."""
            nonlocal refused
            for i in next_index:
                args = signed_post_args({"id": f"so-{i}", "sender": f"so-buyer-{i % 50}",
                                         "text": f"hola {i}"})
                while True:
                    sent = loop.time()
                    r = await client.post("/webhooks/api/shop", **args)
                    body = await r.json()
                    if r.status == 200:
                        acked[i] = (sent, loop.time(), body["stored"][0])
                        if len(acked) == KILL_AFTER:
                            kill_now.set()
                        break
                    assert r.status == 503, (r.status, body)
                    refused += 1
                    await asyncio.sleep(0.1)

        async def killer() -> None:
            nonlocal killed_at
            await kill_now.wait()
            setup.kill(old_master)
            killed_at = loop.time()

        await asyncio.wait_for(asyncio.gather(killer(), *(provider() for _ in range(WORKERS))),
                               timeout=60)
        assert killed_at is not None
        new_master = await asyncio.to_thread(setup.wait_new_master, old_master)
        after = [ack for sent, ack, _ in acked.values() if sent > killed_at]
        assert len(after) >= TOTAL - KILL_AFTER - WORKERS, "ingest did not go on"
        recovered = min(after) - killed_at

        hub_redis = client.app[REDIS]
        assert int((await hub_redis.info("server"))["tcp_port"]) == new_master
        # Script caches are not replicated: the promoted replica answered the hub's first
        # EVALSHA with NOSCRIPT, and the hub loaded the script there and went on.
        sha = hub_redis.register_script(_source("ingest")).sha
        assert setup.cli_call(new_master, "script", "exists", sha).strip() == "1"
        assert "errorstat_NOSCRIPT:count=" in setup.cli_call(new_master, "info", "errorstats")
        warnings = await durability_warnings(hub_redis)
        assert any("no replica connected" in w for w in warnings), warnings

        store = client.app[STORE]
        lost = [i for i, (_, _, message_id) in acked.items()
                if await store.get_message(message_id) is None]
        window = [i for i in lost if killed_at - 1.0 <= acked[i][1] <= killed_at]
        assert lost == window, (lost, killed_at)

        async def all_routed() -> bool:
            rows = await test_pipeline._conversations(client, limit=100)
            return len(rows) == 50 and all(c["status"] == "queued" for c in rows)

        await _or_explain(eventually(all_routed, timeout=60), client)
        # Every loop (router, sender, health, events...) is out of its backoff: /readyz.
        ready_at = await _or_explain(eventually(lambda: _ready_at(client, loop), timeout=60),
                                     client)
        await _or_explain(eventually(lambda: _drained(client), timeout=60), client)
    print(f"\nsentinel failover: {len(acked)} webhooks acknowledged, the first after the kill "
          f"{recovered:.2f} s after it; {refused} refused meanwhile (503, retried); "
          f"{len(lost)} acknowledged message(s) lost with the master; /readyz ready again "
          f"{ready_at - killed_at:.2f} s after the kill")
    # The killed server stays down: a test after this one that needs a replica calls heal().


async def _ready_at(client: Any, loop: asyncio.AbstractEventLoop) -> float | None:
    r = await client.get("/readyz")
    return loop.time() if r.status == 200 else None


async def _or_explain(waiting: Awaitable[Any], client: Any) -> Any:
    """``waiting``, or on a timeout the hub's state that explains it: conversation statuses,
    streams not drained, /readyz's problems (a loaded CI machine must say why, not only that)."""
    try:
        return await waiting
    except AssertionError as exc:
        rows = await test_pipeline._conversations(client, limit=100)
        store = client.app[STORE]
        streams = {s: (await store.redis.xlen(s),
                       (await store.redis.xpending(s, "router"))["pending"])
                   for s in store.inbound_streams}
        ready = await (await client.get("/readyz")).json()
        raise AssertionError(
            f"{exc}; {len(rows)} conversations "
            f"{dict(collections.Counter(c['status'] for c in rows))}; inbound (length, "
            f"pending) {streams}; readyz {ready}") from None


async def _drained(client: Any) -> bool:
    """Every inbound entry routed and acknowledged by the router."""
    store = client.app[STORE]
    for stream in store.inbound_streams:
        if await store.redis.xlen(stream) or (
                await store.redis.xpending(stream, "router"))["pending"]:
            return False
    return True


def _switch_over(setup: RedisSentinelServer) -> None:
    """SENTINEL FAILOVER, retried while the sentinel does not yet rate the replica good (its
    INFO not refreshed since it came back)."""
    reply = ""
    for _ in range(100):
        reply = setup.cli_call(setup.sentinel_ports[0], "sentinel", "failover", MASTER_NAME)
        if reply.strip() == "OK":
            return
        time.sleep(0.2)
    raise AssertionError(f"SENTINEL FAILOVER refused: {reply}")

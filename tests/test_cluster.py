"""The hub on a real Redis Cluster (tests/redis_cluster.py: three primaries on local ports).

The modules' own tests run here a second time with the ``redis_server`` and ``redis`` fixtures
pointing at the cluster: the same assertions, on a store whose partitions live on different
nodes, so any command that names keys of two slots fails here (CROSSSLOT) and not in
production. Marked ``cluster``: ``pytest -m "not cluster"`` leaves them out.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import RedisClusterException, RedisError

from hub.cli import _routing_reload
from hub.config import LoadedConfig, load_config
from hub.keys import STORE
from hub.redis_connection import durability_warnings
from storage.cluster import ClusterTopologyError, HubRedisCluster
from storage.keys import ROUTING_RELOAD_CHANNEL, PartitionKeys, partition_from_id, partition_of
from storage.store import Store
from storage.streams import Entry, StreamGroup
from tests import (
    test_crash_recovery,
    test_erasure,
    test_events,
    test_lifecycle,
    test_pipeline,
    test_routing_api,
    test_search_api,
    test_sla_filter_api,
    test_take,
)
from tests.conftest import ADMIN_TOKEN, need_service, write_config
from tests.helpers import auth, eventually, running_hub, signed_post_args
from tests.redis_cluster import ClusterUnavailable, RedisClusterServer

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """One three-primary cluster for the test session (about 2 s to form)."""
    try:
        cluster = RedisClusterServer(masters=3)
    except ClusterUnavailable as exc:
        need_service(str(exc))
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_server(redis_cluster: RedisClusterServer) -> RedisClusterServer:
    """Overrides conftest's: ``redis_server.url`` is the cluster's ``redis+cluster://`` URL."""
    return redis_cluster


@pytest_asyncio.fixture
async def redis(redis_cluster: RedisClusterServer) -> AsyncIterator[Redis]:
    """Overrides conftest's: a cluster client on an emptied cluster (every primary flushed)."""
    client = HubRedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", p) for p in redis_cluster.ports],
        socket_timeout=10)
    await client.flushall()
    yield client  # type: ignore[misc]
    await client.aclose()


PARTITIONS = 4  # ih:{p0}..{p3}: slots on all three primaries (p0, p1 share one)
# Tests whose data must land in one partition as with write_config's 2 (a buyer's threads
# sharing one contact): p0 and p1 are on one node, their deletes still reach {r}, {pp}, {kpi}.
TWO_PARTITIONS = {"test_retention", "test_erasure_resumed"}


@pytest.fixture
def partitions(request: pytest.FixtureRequest) -> int:
    return 2 if request.node.name in TWO_PARTITIONS else PARTITIONS


@pytest.fixture
def make_config(tmp_path: Path, redis_server: RedisClusterServer, redis: Redis,
                hub_env: None, partitions: int) -> Callable[..., LoadedConfig]:
    """Overrides conftest's: the cluster's URL, and partitions spread over every node."""

    def build(**kwargs: Any) -> LoadedConfig:
        kwargs.setdefault("partitions", partitions)
        redis_url = kwargs.pop("redis_url", redis_server.url)
        return load_config(write_config(tmp_path, redis_url, **kwargs))

    return build


@pytest_asyncio.fixture
async def store(redis: Redis, partitions: int) -> Store:
    """Overrides conftest's: the same partitions as the hubs of make_config."""
    return Store(redis, partitions=partitions)


# -- the pipeline: webhook -> stored -> routed -> reply sent -------------------------------
test_round_trip = test_pipeline.test_message_to_reply_round_trip
test_redelivery = test_pipeline.test_concurrent_redelivery_stores_one_message
test_sequence = test_pipeline.test_messages_keep_sequence_order
test_dead_letter_retry = test_pipeline.test_operator_down_retries_then_dead_letters_then_retry_sends
# -- crash: a hub SIGKILLed before its ack, another one reclaims ---------------------------
test_router_crash = test_crash_recovery.test_router_killed_before_ack_is_reclaimed_and_finished
test_sender_crash = test_crash_recovery.test_sender_killed_before_ack_does_not_send_twice
# -- the live events stream ----------------------------------------------------------------
test_events_reach = test_events.test_every_kind_reaches_whoever_may_see_it
test_events_resume = test_events.test_resume_with_last_event_id_loses_and_repeats_nothing


# -- routing: assignment, taking a conversation -------------------------------------------
test_assignment = test_routing_api.test_assignment_visible_through_api
test_take_once = test_take.test_an_agent_takes_a_waiting_conversation_once
# -- lists and search merged across partitions (one script per partition, per-node pipeline)
test_sla_list = test_sla_filter_api.test_sla_list_by_role_scope_filters_and_paging
test_search = test_search_api.test_search_text_names_orders_and_scope
# -- deletes spanning slots: erasure, retention -------------------------------------------
test_erasure_resumed = test_erasure.test_an_interrupted_erasure_is_finished_by_the_next
test_retention = test_lifecycle.test_retention_deletes_old_resolved_conversations_only


# -- what only a cluster has ---------------------------------------------------------------


async def test_every_partition_stream_wakes_the_consumer(redis: Redis,
                                                         redis_cluster: RedisClusterServer
                                                         ) -> None:
    """Streams on three nodes, one consumer: an entry in any of them is read at once (not
    after the other streams' block times out), and nothing is read twice or lost."""
    streams = [PartitionKeys(p).inbound for p in range(PARTITIONS)]
    nodes = {redis.get_node_from_key(s).name for s in streams}  # type: ignore[attr-defined]
    assert len(nodes) == 3, nodes
    group = StreamGroup(redis, streams, "router", "c1", claim_idle_ms=60_000)
    await group.ensure()
    try:
        assert await group.read(10, 50) == []
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, str]] = []  # ids are unique per stream, not across nodes
        for i, stream in enumerate(streams * 2):
            await redis.xadd(stream, {"n": str(i)})
            started = loop.time()
            got: list[Entry] = []
            while not got:
                got = await group.read(10, 2000)
                assert loop.time() - started < 1.0, "woken by the block timeout, not the entry"
            assert [(s, f[b"n"]) for s, _, f in got] == [(stream, str(i).encode())]
            seen.append((stream, got[0][1]))
            await group.done(stream, got[0][1])
        assert len(set(seen)) == len(streams) * 2
        assert await group.pending_count() == 0 and await group.backlog() == 0
    finally:
        await group.close()
    assert not group._reads


async def test_partitions_on_every_node_list_and_page_as_one(
        make_config: Any, redis: Redis, redis_cluster: RedisClusterServer) -> None:
    """Thirty buyers spread over four partitions on three primaries: every message stored
    and routed, and the merged list pages through all of them exactly once."""
    buyers = [f"buyer-{i}" for i in range(30)]
    used = {partition_of("shop", b, PARTITIONS) for b in buyers}
    assert used == set(range(PARTITIONS))
    async with running_hub(make_config()) as client:
        for i, buyer in enumerate(buyers):
            r = await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": f"m-{i}", "sender": buyer, "text": f"hola {i}"}))
            assert r.status == 200, await r.text()

        async def all_queued() -> bool:
            rows = await test_pipeline._conversations(client, limit=100)
            return len(rows) == 30 and all(c["status"] == "queued" for c in rows)

        await eventually(all_queued, timeout=20)
        ids: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
            r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN),
                                 params=params)
            assert r.status == 200
            body = await r.json()
            ids += [c["id"] for c in body["conversations"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert len(ids) == 30 and len(set(ids)) == 30
        assert {partition_from_id(i, PARTITIONS) for i in ids} == set(range(PARTITIONS))
    for port in redis_cluster.masters():  # every primary holds some of the store
        assert int(redis_cluster.cli_call(port, "dbsize").strip()) > 0


async def test_routing_reload_reaches_the_running_hub(make_config: Any, redis: Redis,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """``inboxhub routing reload`` publishes on the node the hub subscribed on (the routing
    tag's), so the count it prints is the hubs that got it."""
    async with running_hub(make_config()) as client:
        store = client.app[STORE]
        assert await eventually(lambda: _receivers(redis)) == 1
        assert await _routing_reload(store) == 0
        assert "1 hub process(es) reloading routing" in capsys.readouterr().out


async def _receivers(redis: Redis) -> int:
    return await redis.publish(ROUTING_RELOAD_CHANNEL, b"ping")  # type: ignore[no-any-return]


async def test_scripts_flushed_on_every_node_are_loaded_again(
        make_config: Any, redis: Redis, redis_cluster: RedisClusterServer) -> None:
    """A promoted replica has no script cache (scripts are not replicated): SCRIPT FLUSH on
    every primary stands in for that. Ingest (EVALSHA, reloaded on NOSCRIPT) and the list
    (pipelined scripts, sent as EVAL) keep working."""
    async with running_hub(make_config()) as client:
        for i in range(6):
            if i == 3:
                for port in redis_cluster.masters():
                    assert redis_cluster.cli_call(port, "script", "flush").strip() == "OK"
            r = await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": f"f-{i}", "sender": f"flush-{i}", "text": "hola"}))
            assert r.status == 200, await r.text()
        rows = await eventually(lambda: _queued(client, 6), timeout=20)
        assert len(rows) == 6


async def _queued(client: Any, count: int) -> list[dict[str, Any]] | None:
    rows = await test_pipeline._conversations(client, limit=100)
    return rows if len(rows) == count and all(c["status"] == "queued" for c in rows) else None


async def test_a_burst_waits_for_connections_instead_of_failing(
        redis: Redis, redis_cluster: RedisClusterServer) -> None:
    """Two connections per node, forty commands at once: they queue for a permit (as with
    the single-Redis BlockingConnectionPool) rather than fail with MaxConnectionsError."""
    client = HubRedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", p) for p in redis_cluster.ports],
        max_connections=2, pool_timeout=5.0)
    try:
        await client.initialize()
        replies = await asyncio.gather(*(client.incr(PartitionKeys(i % PARTITIONS).base + "n")
                                         for i in range(40)))
        assert sorted(replies)[-1] == 10 and len(replies) == 40
    finally:
        await client.aclose()


async def test_topology_errors_are_outages_and_cross_slot_stays_a_bug(redis: Redis) -> None:
    """redis-py raises both as RedisClusterException (not a RedisError); the hub's loops
    back off on a RedisError and log a crash otherwise, so an unreachable or changing
    cluster becomes a ConnectionError while a command naming two slots stays an error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])
    unreachable = HubRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", closed)])
    with pytest.raises(ClusterTopologyError, match="cannot be connected"):
        await unreachable.initialize()
    assert issubclass(ClusterTopologyError, RedisError)
    await unreachable.aclose()
    with pytest.raises(RedisClusterException, match="same key slot") as caught:
        await redis.mget(PartitionKeys(0).inbound, PartitionKeys(2).inbound)
    assert not isinstance(caught.value, RedisError)


async def test_durability_warnings_name_each_primary(redis: Redis) -> None:
    """Each primary holds its own share of the messages: its AOF settings are read on their
    own, and the warning names the node (the test cluster runs with AOF off)."""
    cluster: Any = redis
    primaries = cluster.get_primaries()
    careful = primaries[0]
    await cluster.config_set("appendonly", "yes", target_nodes=careful)
    try:
        warnings = await durability_warnings(redis)
    finally:
        await cluster.config_set("appendonly", "no", target_nodes=careful)
    named = {w.split(": ", 1)[0] for w in warnings}
    assert named == {f"Redis Cluster node {n.name}" for n in primaries[1:]}, warnings
    assert all("appendonly no" in w for w in warnings)

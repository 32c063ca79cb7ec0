"""Failover on a real Redis Cluster: three primaries with a replica each (started for this
module only), a primary killed with SIGKILL while webhooks keep coming. The replica is
promoted, the hub finds the new primary by itself (redis-py follows MOVED and refreshes its
slot map) and keeps ingesting and routing; a webhook refused meanwhile is retried by the
provider, as providers do.

Replication is asynchronous: what the killed primary acknowledged in its last moments may
not have reached the replica. The test measures that window instead of pretending it is empty:
every message acknowledged more than a second before the kill, and every one acknowledged
after it, must be stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode

from channels.models import InboundMessage
from hub.config import load_config
from hub.keys import STORE
from hub.redis_connection import replica_shortfalls
from storage.cluster import HubRedisCluster
from storage.keys import PartitionKeys, partition_of
from storage.replication import ReplicaAcks, ReplicaAckTimeout
from storage.store import IngestResult, Store
from tests.conftest import ADMIN_TOKEN, need_service, write_config
from tests.helpers import auth, eventually, running_hub, signed_post_args
from tests.redis_cluster import ClusterUnavailable, RedisClusterServer

pytestmark = pytest.mark.cluster
PARTITIONS = 4
TOTAL = 80
KILL_AFTER = 25


@pytest.fixture(scope="module")
def replicated_cluster() -> Iterator[RedisClusterServer]:
    """Six nodes: each primary has a replica to promote."""
    try:
        cluster = RedisClusterServer(masters=3, replicas=1)
    except ClusterUnavailable as exc:
        need_service(str(exc))
        raise
    yield cluster
    cluster.stop()


async def test_a_killed_primary_is_replaced_and_ingest_goes_on(
        tmp_path: Path, hub_env: None, replicated_cluster: RedisClusterServer) -> None:
    cluster = replicated_cluster
    probe = HubRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
    await probe.initialize()
    victim_key = PartitionKeys(0).inbound
    victim = int(probe.get_node_from_key(victim_key).port)
    await probe.aclose()
    buyers = [f"fo-buyer-{i}" for i in range(TOTAL)]
    on_victim = [b for b in buyers if partition_of("shop", b, PARTITIONS) == 0]
    assert len(on_victim) >= 10  # the killed primary's partition is under load

    loaded = load_config(write_config(tmp_path, cluster.url, partitions=PARTITIONS))
    loop = asyncio.get_running_loop()
    acked: dict[str, tuple[float, str]] = {}  # provider id -> (when, our message id)
    refused = 0
    killed_at: float | None = None
    async with running_hub(loaded) as client:

        async def deliver(i: int) -> None:
            """One provider delivery, retried until acknowledged (what providers do)."""
            nonlocal refused
            args = signed_post_args({"id": f"fo-{i}", "sender": buyers[i], "text": f"hola {i}"})
            while True:
                r = await client.post("/webhooks/api/shop", **args)
                body = await r.json()
                if r.status == 200:
                    acked[f"fo-{i}"] = (loop.time(), body["stored"][0])
                    return
                refused += 1
                await asyncio.sleep(0.2)

        for i in range(TOTAL):
            if i == KILL_AFTER:
                cluster.kill(victim)
                killed_at = loop.time()
            try:
                await asyncio.wait_for(deliver(i), timeout=30)
            except TimeoutError:
                live = [p for p in cluster.ports if p != victim]
                pytest.fail(f"delivery {i} not acknowledged within 30 s of retries; "
                            f"killed {victim}; cluster nodes:\n"
                            + cluster.cli_call(live[0], "cluster", "nodes"))
        assert killed_at is not None
        recovered_at = min(acked[f"fo-{i}"][0] for i in range(KILL_AFTER, TOTAL)
                           if buyers[i] in on_victim)
        await asyncio.to_thread(cluster.wait_ok)
        assert victim not in cluster.masters()  # its replica took over

        store = client.app[STORE]
        missing = [provider_id for provider_id, (_, message_id) in acked.items()
                   if await store.get_message(message_id) is None]
        window = [p for p in missing if killed_at - 1.0 <= acked[p][0] <= killed_at]
        assert missing == window, (missing, killed_at)

        async def all_routed() -> bool:
            r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN),
                                 params={"limit": "200"})
            rows = (await r.json())["conversations"]
            return len(rows) >= TOTAL - len(missing) and \
                all(c["status"] == "queued" for c in rows)

        await eventually(all_routed, timeout=30)
    print(f"failover: partition 0 acknowledged again {recovered_at - killed_at:.2f} s after "
          f"the kill; {refused} deliveries refused meanwhile; {len(missing)} acknowledged "
          f"message(s) lost with the primary")


ACKED_TOTAL = 160
CONCURRENCY = 8
ACKED_KILL_AFTER = 40


async def test_with_replica_acks_no_acknowledged_message_is_lost_across_a_failover(
        tmp_path: Path, hub_env: None, replicated_cluster: RedisClusterServer) -> None:
    """storage.replica_acks = 1, eight deliveries in flight at a time, the primary of
    partition 0 killed with SIGKILL mid-run, half a second after its replica fell behind (link
    dropped, replica stalled: without replica acks what the primary acknowledged meanwhile is
    lost, bench/cluster.py counts it). Its replica is promoted, and the killed node is
    then started again (empty) and rejoins as the new primary's replica, as an orchestrator
    restarts a pod: until then the promoted primary has no replica, so its partition's
    webhooks get a 503 (nothing is acknowledged that a second failure could lose). Every
    message acknowledged, before or after the kill, must be stored."""
    cluster = replicated_cluster
    await asyncio.to_thread(cluster.heal)  # the test above killed a primary
    probe = HubRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
    await probe.initialize()
    victim = int(probe.get_node_from_key(PartitionKeys(0).inbound).port)
    await probe.aclose()
    buyers = [f"ra-buyer-{i}" for i in range(ACKED_TOTAL)]
    on_victim = {b for b in buyers if partition_of("shop", b, PARTITIONS) == 0}
    assert len(on_victim) >= 20

    path = write_config(tmp_path, cluster.url, partitions=PARTITIONS, overrides={
        "storage": {"replica_acks": 1, "replica_ack_timeout_ms": 500}})
    loop = asyncio.get_running_loop()
    acked: dict[str, tuple[float, str]] = {}  # provider id -> (its last attempt began, our id)
    refused = 0
    killed = asyncio.Event()
    lagging: list[bool] = []
    timeline: dict[str, float] = {}
    async with running_hub(load_config(path)) as client:

        async def deliver(i: int) -> None:
            nonlocal refused
            args = signed_post_args({"id": f"ra-{i}", "sender": buyers[i], "text": f"oi {i}"})
            while True:
                began = loop.time()
                r = await client.post("/webhooks/api/shop", **args)
                body = await r.json()
                if r.status == 200:
                    acked[f"ra-{i}"] = (began, body["stored"][0])
                    if len(acked) == ACKED_KILL_AFTER and not lagging:
                        lagging.append(True)
                        await lag_then_kill()
                    return
                refused += 1
                await asyncio.sleep(0.1)

        async def lag_then_kill() -> None:
            replica = await asyncio.to_thread(cluster.replica_of, victim)
            cluster.pause(replica)
            await asyncio.to_thread(cluster.cli_call, victim, "client", "kill", "type",
                                    "replica")
            await asyncio.sleep(0.5)
            cluster.kill(victim)
            cluster.resume(replica)
            timeline["killed"] = loop.time()
            killed.set()

        async def replace_the_victim() -> None:
            """Once the replica is promoted, restart the killed node as its replica."""
            await killed.wait()
            await asyncio.to_thread(cluster.wait_promoted, victim)
            timeline["promoted"] = loop.time()
            await asyncio.to_thread(cluster.restart, victim)
            await asyncio.to_thread(cluster.heal)
            timeline["replica back"] = loop.time()

        queue = iter(range(ACKED_TOTAL))

        async def worker() -> None:
            for i in queue:
                await asyncio.wait_for(deliver(i), timeout=60)

        healer = asyncio.create_task(replace_the_victim())
        try:
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            await asyncio.wait_for(healer, timeout=60)
        finally:
            healer.cancel()
            await asyncio.gather(healer, return_exceptions=True)
        assert victim not in cluster.masters()

        store = client.app[STORE]
        missing = [provider_id for provider_id, (_, message_id) in acked.items()
                   if await store.get_message(message_id) is None]
        assert len(acked) == ACKED_TOTAL
        assert missing == []  # the claim replica_acks makes, with no window
        after_kill = [began for p, (began, _) in acked.items()
                      if began > timeline["killed"] and buyers[int(p[3:])] in on_victim]
        assert after_kill  # the killed primary's partition took messages again
        first_after = min(after_kill)
    print(f"replica_acks=1 failover: promoted {timeline['promoted'] - timeline['killed']:.2f} s "
          f"after the kill, replica back {timeline['replica back'] - timeline['killed']:.2f} s, "
          f"partition 0 acknowledged a delivery begun {first_after - timeline['killed']:.2f} s "
          "after; "
          f"{refused} deliveries refused meanwhile; 0 of {len(acked)} acknowledged lost")


async def test_a_stalled_replica_fails_only_the_messages_on_its_primary(
        replicated_cluster: RedisClusterServer) -> None:
    """One batch over every partition: each primary's share waits on its own connection, so
    a stalled replica fails the batch's messages on its primary (naming it), the others are
    acknowledged, and the retry after it resumes finds everything stored once."""
    cluster = replicated_cluster
    await asyncio.to_thread(cluster.heal)
    client = HubRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
    await client.initialize()
    store = Store(cast(Redis, client), partitions=PARTITIONS, replica_acks=ReplicaAcks(1, 300))
    messages = [InboundMessage(channel_type="api", channel_instance="shop",
                               provider_message_id=f"st-{i}", thread_id=f"st-buyer-{i}",
                               sender_handle=f"st-buyer-{i}", text="hola") for i in range(24)]
    assert {partition_of("shop", m.thread_id, PARTITIONS) for m in messages} == \
        set(range(PARTITIONS))
    primary = int(client.get_node_from_key(PartitionKeys(1).inbound).port)
    on_primary = [int(client.get_node_from_key(PartitionKeys(
        partition_of("shop", m.thread_id, PARTITIONS)).inbound).port) == primary
        for m in messages]
    assert any(on_primary) and not all(on_primary)
    stalled = cluster.replica_of(primary)
    assert await replica_shortfalls(cast(Redis, client), 1) == []
    problems = await replica_shortfalls(cast(Redis, client), 2)  # one replica each
    assert len(problems) == cluster.master_count
    assert all("has 1 connected replica" in p for p in problems)
    try:
        cluster.pause(stalled)
        try:
            first = await store.ingest_many(messages)
        finally:
            cluster.resume(stalled)
        for answer, stalled_primary in zip(first, on_primary, strict=True):
            if stalled_primary:
                assert isinstance(answer, ReplicaAckTimeout)
                assert f":{primary} in time" in str(answer)
            else:
                assert isinstance(answer, IngestResult) and not answer.duplicate
        again = await store.ingest_many(messages)
        assert all(isinstance(r, IngestResult) and r.duplicate for r in again)
        assert [r.message_id for r, short in zip(first, on_primary, strict=True)
                if not short and isinstance(r, IngestResult)] == \
            [r.message_id for r, short in zip(again, on_primary, strict=True)
             if not short and isinstance(r, IngestResult)]
    finally:
        cluster.resume(stalled)
        await client.aclose()


async def test_a_slot_migrating_under_a_batch_is_followed(
        replicated_cluster: RedisClusterServer) -> None:
    """A partition's slot moves to another primary while a batch is being written: the source
    answers TRYAGAIN or ASK (MOVED once the move is final); the batch is sent again where the
    slot now lives, and that primary's WAIT confirms it."""
    cluster = replicated_cluster
    await asyncio.to_thread(cluster.heal)
    client = HubRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
    await client.initialize()
    store = Store(cast(Redis, client), partitions=PARTITIONS, replica_acks=ReplicaAcks(1, 1000))
    base = PartitionKeys(2).inbound
    slot = client.keyslot(base)
    source = int(client.get_node_from_key(base).port)
    target = next(p for p in cluster.masters() if p != source)
    nodes = {p: Redis(host="127.0.0.1", port=p, socket_timeout=5) for p in (source, target)}
    ids = {p: (await r.execute_command("CLUSTER", "MYID")).decode() for p, r in nodes.items()}
    thread = next(f"mv-{i}" for i in range(1000)
                  if partition_of("shop", f"mv-{i}", PARTITIONS) == 2)

    def message(n: int) -> InboundMessage:
        return InboundMessage(channel_type="api", channel_instance="shop", thread_id=thread,
                              sender_handle=thread, provider_message_id=f"mv-{n}", text="hola")

    try:
        [before] = await store.ingest_many([message(0)])
        assert isinstance(before, IngestResult)
        await nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING",
                                            ids[source])
        await nodes[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING",
                                            ids[target])
        batch = asyncio.create_task(store.ingest_many([message(1), message(2)]))
        await asyncio.sleep(0.2)
        assert not batch.done()  # held back by the move
        keys = await nodes[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        await nodes[source].execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000,
                                            "KEYS", *keys)
        for port in cluster.masters():
            async with Redis(host="127.0.0.1", port=port, socket_timeout=5) as node:
                await node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        answers = await asyncio.wait_for(batch, 10)
        assert all(isinstance(a, IngestResult) and not a.duplicate for a in answers), answers
        replica = Redis(host="127.0.0.1", port=cluster.replica_of(target), socket_timeout=5)
        try:
            for answer in answers:
                assert isinstance(answer, IngestResult)
                assert answer.conversation_id == before.conversation_id
                key = PartitionKeys(2).message(answer.message_id)
                assert await nodes[target].exists(key) == 1  # written where the slot lives
                await replica.execute_command("READONLY")
                assert await replica.exists(key) == 1  # and confirmed by its replica
        finally:
            await replica.aclose()
    finally:
        for node in nodes.values():
            await node.aclose()
        await client.aclose()

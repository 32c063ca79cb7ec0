"""Opens the Redis the config points at: an external URL, or the embedded server.

Used by ``serve`` (which owns the embedded server for its lifetime) and by CLI commands (which
reuse a running hub's server, or start one just for the command when no hub is running).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import RedisError

from channels.secrets import Secret
from hub.config import Config
from storage.cluster import HubRedisCluster, is_cluster, is_cluster_url, parse_cluster_url
from storage.embedded import EmbeddedRedis
from storage.replication import ReplicaAcks
from storage.sentinel import (
    BlockingSentinelPool,
    HubSentinel,
    MasterWatch,
    is_sentinel,
    is_sentinel_url,
    parse_sentinel_url,
)


@contextlib.asynccontextmanager
async def open_redis(config: Config) -> AsyncIterator[tuple[Redis, EmbeddedRedis | None]]:
    """Yield a client plus the embedded server we started (None if we did not start one)."""
    storage = config.storage
    owned: EmbeddedRedis | None = None
    # A blocking pool makes a burst of requests wait for a connection (bounded by
    # pool_timeout) instead of failing with "Too many connections".
    common: dict[str, Any] = {
        "socket_timeout": storage.socket_timeout_seconds,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
        "max_connections": storage.max_connections,
        "timeout": storage.pool_timeout_seconds,
    }
    if storage.redis_url and is_cluster_url(storage.redis_url):
        async with _open_cluster(config) as cluster:
            yield cluster, None
        return
    if storage.redis_url and storage.redis_password:
        common["password"] = storage.redis_password.reveal()
    if storage.redis_url and is_sentinel_url(storage.redis_url):
        async with _open_sentinel(storage.redis_url, common,
                                  storage.sentinel_password) as sentinel_client:
            yield sentinel_client, None
        return
    if storage.redis_url:
        pool = BlockingConnectionPool.from_url(storage.redis_url, **common)
    else:
        embedded = EmbeddedRedis(config.data_dir, appendfsync=storage.appendfsync)
        if not await embedded.already_running():
            await embedded.start()
            owned = embedded
        pool = BlockingConnectionPool.from_url(embedded.url, **common)
    client = Redis(connection_pool=pool)
    try:
        yield client, owned
    finally:
        await client.aclose()
        await pool.disconnect()
        if owned is not None:
            await owned.stop()


@contextlib.asynccontextmanager
async def _open_cluster(config: Config) -> AsyncIterator[Redis]:
    """redis-py's cluster client over the URL's seed nodes. It follows MOVED/ASK, refreshes
    the slot map after a failover and retries on a connection error by itself. At most
    ``max_connections`` commands are in flight per process (one connection per node each); past
    that a command waits up to ``pool_timeout_seconds``, as with a single Redis."""
    storage = config.storage
    assert storage.redis_url is not None
    seeds, tls = parse_cluster_url(storage.redis_url)
    client = HubRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in seeds],
        password=storage.redis_password.reveal() if storage.redis_password else None,
        ssl=tls,
        socket_timeout=storage.socket_timeout_seconds,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        max_connections=storage.max_connections,
        pool_timeout=storage.pool_timeout_seconds,
    )
    try:
        await client.initialize()  # the slot map, before a pubsub needs it
        # The cluster client offers the same command methods as Redis (its class is not a
        # subclass); the storage code that must differ asks storage.cluster.is_cluster.
        yield cast(Redis, client)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _open_sentinel(url: str, common: dict[str, Any],
                         sentinel_password: Secret | None) -> AsyncIterator[Redis]:
    """A client of the master the sentinels name, with the single-Redis path's timeouts,
    health checks and blocking pool. Its pool asks the sentinels for the master's address on
    every new connection and, through the master watch, twice a second, so after a failover
    or a switchover the hub moves to the new master by itself (storage/sentinel.py)."""
    target = parse_sentinel_url(url)
    # The sentinels get the master's socket timeouts and TLS, and their own password. They
    # are asked all at once (storage.sentinel.HubSentinel): a hung one costs DISCOVERY_GRACE.
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": common["socket_timeout"],
        "socket_connect_timeout": common["socket_connect_timeout"],
    }
    if target.tls:
        sentinel_kwargs["ssl"] = True
    if sentinel_password is not None:
        sentinel_kwargs["password"] = sentinel_password.reveal()
    sentinel = HubSentinel(target.sentinels, sentinel_kwargs=sentinel_kwargs)
    client: Redis = sentinel.master_for(
        target.master, connection_pool_class=BlockingSentinelPool, db=target.db,
        ssl=target.tls, **common)
    # Owned here and cancelled on the way out, like the client it serves.
    watch = asyncio.create_task(MasterWatch(client.connection_pool).run(),
                                name="sentinel-master-watch")
    try:
        yield client
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await client.aclose()
        await sentinel.aclose()


async def durability_warnings(client: Redis) -> list[str]:
    """What an external Redis's configuration means for acknowledged messages, for the log at
    start-up (``serve`` logs each line as a warning). Empty when AOF is on with fsync and no
    eviction can drop keys. Reads INFO, which managed services allow where CONFIG is renamed.
    On a cluster every primary is read (each holds its own share of the messages).
    """
    if is_cluster(client):
        cluster: Any = client
        out: list[str] = []
        for node in cluster.get_primaries():
            view = cast(Redis, _OnNode(cluster, node))
            out += [f"Redis Cluster node {node.name}: {w}" for w in await durability_warnings(view)]
        return out
    try:
        persistence = await client.info("persistence")
        memory = await client.info("memory")
    except RedisError as exc:
        return [f"could not read the Redis configuration ({type(exc).__name__}); check that "
                "AOF is on and maxmemory-policy is noeviction"]
    warnings: list[str] = []
    if is_sentinel(client):
        warnings += await _sentinel_warnings(client)
    if str(persistence.get("aof_enabled", "0")) != "1":
        warnings.append(
            "Redis has AOF off (appendonly no): an acknowledged message lives only in memory "
            "until the next RDB snapshot, and a Redis restart loses it; set appendonly yes")
    else:
        fsync = await _config_value(client, "appendfsync")
        if fsync == "no":
            warnings.append(
                "Redis has appendfsync no: the OS decides when the AOF reaches the disk (often "
                "30 s); acknowledged messages from that window are lost on power loss; use "
                "everysec (about 1 s) or always")
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    limit = int(memory.get("maxmemory", 0) or 0)
    if policy != "noeviction" and limit > 0:
        warnings.append(
            f"Redis maxmemory-policy is {policy} with maxmemory {limit}: when memory is full "
            "Redis deletes keys (messages, conversations, dedupe markers) instead of refusing "
            "writes; set maxmemory-policy noeviction")
    return warnings


async def _sentinel_warnings(client: Redis) -> list[str]:
    """A Sentinel master with no replica connected has nothing to promote: a failover cannot
    happen and the messages live on one server."""
    try:
        replication = await client.info("replication")
    except RedisError:
        return []  # the persistence read just before succeeded; nothing more to say
    if int(replication.get("connected_slaves", 0) or 0) == 0:
        return ["the Sentinel master has no replica connected: Sentinel has nothing to "
                "promote if it fails, and every message lives on that one server"]
    return []


def replica_acks(config: Config) -> ReplicaAcks | None:
    """``storage.replica_acks`` for the Store, None when off."""
    storage = config.storage
    if storage.replica_acks <= 0:
        return None
    return ReplicaAcks(storage.replica_acks, storage.replica_ack_timeout_ms)


async def replica_shortfalls(client: Redis, wanted: int) -> list[str]:
    """With ``storage.replica_acks = wanted``: each primary with fewer connected replicas
    (INFO replication, ``connected_slaves``, those whose link is up), for the log at start-up.
    Every ingest on such a primary fails (503) until its replicas are back, so this is said
    loudly; it does not stop the hub, because a replica re-syncing after a restart comes back
    by itself."""
    if wanted <= 0:
        return []
    if is_cluster(client):
        cluster: Any = client
        out: list[str] = []
        for node in cluster.get_primaries():
            view = cast(Redis, _OnNode(cluster, node))
            out += [f"Redis Cluster node {node.name}: {w}"
                    for w in await replica_shortfalls(view, wanted)]
        return out
    try:
        info = await client.info("replication")
    except RedisError as exc:
        return [f"could not read INFO replication ({type(exc).__name__}): cannot tell whether "
                f"the {wanted} replica(s) storage.replica_acks waits for are there"]
    connected = int(info.get("connected_slaves", 0) or 0)
    if str(info.get("role", "master")) != "master":
        return ["storage.redis_url names a replica, not the primary"]
    if connected >= wanted:
        return []
    return [f"storage.replica_acks = {wanted} but Redis has {connected} connected replica(s): "
            "every ingest will wait storage.replica_ack_timeout_ms and fail (webhooks answer "
            "503, providers retry) until enough replicas are connected"]


class _OnNode:
    """The two reads durability_warnings makes, sent to one node of a cluster."""

    def __init__(self, cluster: Any, node: Any) -> None:
        self.cluster = cluster
        self.node = node

    async def info(self, section: str) -> Any:
        return await self.cluster.info(section, target_nodes=self.node)

    async def config_get(self, name: str) -> Any:
        return await self.cluster.config_get(name, target_nodes=self.node)


async def _config_value(client: Redis, name: str) -> str | None:
    try:
        reply = await client.config_get(name)
    except RedisError:
        return None  # CONFIG is often renamed on managed Redis: nothing more to say
    value = reply.get(name) if isinstance(reply, dict) else None
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)

"""Nothing stops for good after a Redis hiccup: a stalled Redis (SIGSTOP for longer than every
client timeout), a full one (maxmemory), a failover (READONLY, then an empty promoted replica),
and streams deleted under a running hub. Each scenario runs the real app against a real
redis-server of its own, then checks that the work that was due is done afterwards, without a
restart: a reply waiting for its retry is delivered, an escalation timer fires, a new webhook is
routed, and ``/readyz`` tells the truth on the way.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from hub import keys as K
from hub.config import load_config
from tests.conftest import ADMIN_TOKEN, RedisServer, write_config
from tests.helpers import OperatorEndpoint, auth, eventually, running_hub, signed_post_args

ROUTING = """
[routing]
languages = ["es", "en"]

[[routing.queues]]
name = "es"
[[routing.queues.steps]]
languages = { es = 3 }
[[routing.queues.steps]]
after_seconds = 3

[[routing.rules]]
name = "spanish"
queue = "es"
when = { language = ["es"] }

[[routing.agents]]
id = "lucia"
languages = { es = 5 }
capacity = { chat = 1 }
"""

# Shorter than the outage: every Redis call made during it times out.
CLIENT_TIMEOUTS = {"socket_timeout_seconds": 1, "pool_timeout_seconds": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for this test alone: the test stalls, fills or demotes it."""
    server = RedisServer(port=free_port())
    try:
        yield server
    finally:
        server.stop()


async def post_message(client: Any, message_id: str, sender: str,
                       text: str = "Hola, ¿dónde está mi pedido?") -> Any:
    payload = {"id": message_id, "sender": sender, "text": text, "language": "es"}
    return await client.post("/webhooks/api/shop", **signed_post_args(payload))


async def conversation_of(client: Any, sender: str) -> dict[str, Any] | None:
    r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
    if r.status != 200:
        return None
    for conv in (await r.json())["conversations"]:
        if conv["contact_handle"] == sender:
            return conv  # type: ignore[no-any-return]
    return None


async def routed(client: Any, sender: str) -> dict[str, Any] | None:
    conv = await conversation_of(client, sender)
    return conv if conv is not None and conv["status"] in ("queued", "assigned") else None


async def routing_log(client: Any, conversation_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"/api/v1/conversations/{conversation_id}/routing",
                         headers=auth(ADMIN_TOKEN))
    assert r.status == 200, await r.text()
    return (await r.json())["log"]  # type: ignore[no-any-return]


async def ready(client: Any) -> bool:
    r = await client.get("/readyz")
    await r.read()
    return r.status == 200


async def test_stalled_redis_then_every_due_timer_and_retry_runs(
        tmp_path: Path, own_redis: RedisServer, hub_env: None) -> None:
    async with OperatorEndpoint() as operator:
        operator.fail_with = [(503, {})]  # the reply's first attempt fails: a retry is due
        path = write_config(tmp_path, own_redis.url, outbound_url=operator.url, extra=ROUTING,
                            overrides={"storage": CLIENT_TIMEOUTS,
                                       "outbox": {"backoff_base_seconds": 1.5,
                                                  "backoff_max_seconds": 1.5,
                                                  "max_attempts": 5}})
        async with running_hub(load_config(path)) as client:
            r = await client.post("/api/v1/agents/lucia/status", json={"status": "online"},
                                  headers=auth(ADMIN_TOKEN))
            assert r.status == 200, await r.text()
            assert (await post_message(client, "a-1", "buyer-a")).status == 200
            first = await eventually(lambda: routed(client, "buyer-a"))
            assert first["assignee"] == "lucia"
            # Lucía is full: the second buyer waits in step 1, escalating after 3 s.
            assert (await post_message(client, "b-1", "buyer-b")).status == 200
            waiting = await eventually(lambda: routed(client, "buyer-b"))
            assert waiting["status"] == "queued"

            r = await client.post(f"/api/v1/conversations/{first['id']}/replies",
                                  json={"text": "Sale hoy."}, headers=auth(ADMIN_TOKEN))
            assert r.status == 202, await r.text()
            await eventually(lambda: _value(operator.fail_with == []))

            own_redis.pause()
            try:
                await asyncio.sleep(1.0)
                r = await client.get("/readyz")
                assert r.status == 503 and (await r.json())["redis"]
                # The retry (1.5 s) and the escalation (3 s) fall due while Redis is stalled.
                await asyncio.sleep(3.0)
            finally:
                own_redis.resume()

            await eventually(lambda: _value(len(operator.received) == 1), timeout=20)
            assert operator.received[0]["text"] == "Sale hoy."

            async def escalated() -> bool:
                log = await routing_log(client, waiting["id"])
                return any(entry.get("event") == "escalated" for entry in log)

            await eventually(escalated, timeout=20)
            assert (await post_message(client, "c-1", "buyer-c")).status == 200
            await eventually(lambda: routed(client, "buyer-c"), timeout=20)
            await eventually(lambda: ready(client), timeout=20)

            health = {s.name: s for s in client.server.app[K.HEALTH].snapshot()}
            for name in ("routing-timers", "retry-release", "router", "sender"):
                assert health[name].status == "running", health[name]
            assert health["routing-timers"].restarts >= 1
            assert health["retry-release"].restarts >= 1
            r = await client.get("/metrics")
            assert 'inboxhub_task_restarts_total{reason="redis",task="retry-release"}' in \
                await r.text()


async def test_full_redis_leaves_the_entry_pending_and_routes_it_later(
        tmp_path: Path, own_redis: RedisServer, hub_env: None) -> None:
    """maxmemory reached between reading and routing: OOM is an outage, not a poison entry."""
    path = write_config(tmp_path, own_redis.url, extra=ROUTING,
                        overrides={"storage": CLIENT_TIMEOUTS})
    admin = sync_redis.Redis(unix_socket_path=own_redis.socket)
    try:
        async with running_hub(load_config(path)) as client:
            engine = client.server.app[K.ROUTING]
            classify = engine._classify
            filled = asyncio.Event()
            loop = asyncio.get_running_loop()

            def classify_then_fill(*args: Any) -> Any:
                result = classify(*args)
                if not filled.is_set():
                    admin.config_set("maxmemory", 1)  # noeviction: every write is refused
                    loop.call_soon_threadsafe(filled.set)
                return result

            engine._classify = classify_then_fill  # type: ignore[method-assign]
            assert (await post_message(client, "m-1", "buyer-oom")).status == 200
            await asyncio.wait_for(filled.wait(), 10)
            await asyncio.sleep(1.5)  # the enqueue failed with OOM, and so would a retry
            conv = await conversation_of(client, "buyer-oom")
            assert conv is not None and conv["status"] == "new"
            admin.config_set("maxmemory", 0)

            conv = await eventually(lambda: routed(client, "buyer-oom"), timeout=20)
            log = await routing_log(client, conv["id"])
            assert [e["event"] for e in log].count("classified") == 1
            r = await client.get("/api/v1/quarantine", headers=auth(ADMIN_TOKEN))
            assert (await r.json())["entries"] == [], "an outage must not quarantine work"
            await eventually(lambda: ready(client), timeout=20)
    finally:
        admin.close()


async def test_failover_readonly_then_empty_primary_recovers_without_restart(
        tmp_path: Path, own_redis: RedisServer, hub_env: None) -> None:
    """The hub's Redis becomes a replica (every write: READONLY), then is promoted with the new
    primary's empty data set (every consumer group gone: NOGROUP)."""
    primary = RedisServer(port=free_port())
    admin = Redis(unix_socket_path=own_redis.socket, socket_timeout=5)
    try:
        path = write_config(tmp_path, own_redis.url, extra=ROUTING,
                            overrides={"storage": CLIENT_TIMEOUTS})
        async with running_hub(load_config(path)) as client:
            assert (await post_message(client, "m-1", "buyer-1")).status == 200
            await eventually(lambda: routed(client, "buyer-1"))

            await admin.replicaof("127.0.0.1", primary.port)

            async def synced() -> bool:
                info = await admin.info("replication")
                return info.get("master_link_status") == "up"

            await eventually(synced, timeout=20)
            r = await post_message(client, "m-2", "buyer-2")
            assert r.status == 503, "not stored, so not acknowledged: the provider retries"

            async def degraded() -> dict[str, Any] | None:
                r = await client.get("/readyz")
                body = await r.json()
                return body if r.status == 503 and "router" in body["problems"] else None

            body = await eventually(degraded, timeout=20)
            assert "READONLY" in body["problems"]["router"] or \
                "ReadOnly" in body["problems"]["router"]

            await admin.replicaof("NO", "ONE")
            r = await eventually(lambda: _accepted(client, "m-2", "buyer-2"), timeout=20)
            await eventually(lambda: routed(client, "buyer-2"), timeout=20)
            await eventually(lambda: ready(client), timeout=20)
            r = await client.get("/metrics")
            assert 'reason="nogroup",task="router"' in await r.text()
    finally:
        await admin.aclose()
        primary.stop()


async def test_deleted_streams_are_recreated_and_work_goes_on(make_config: Any) -> None:
    async with OperatorEndpoint() as operator, \
            running_hub(make_config(outbound_url=operator.url)) as client:
        store = client.server.app[K.STORE]
        assert (await post_message(client, "m-1", "buyer-1")).status == 200
        conv = await eventually(lambda: routed(client, "buyer-1"))
        for k in store.partition_keys():
            await store.redis.delete(k.outbox, k.inbound)

        r = await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                              json={"text": "Sale hoy."}, headers=auth(ADMIN_TOKEN))
        assert r.status == 202
        await eventually(lambda: _value(len(operator.received) == 1), timeout=20)
        assert (await post_message(client, "m-2", "buyer-2")).status == 200
        await eventually(lambda: routed(client, "buyer-2"), timeout=20)
        await eventually(lambda: ready(client))


async def _accepted(client: Any, message_id: str, sender: str) -> bool:
    r = await post_message(client, message_id, sender)
    await r.read()
    return r.status == 200


async def _value(value: Any) -> Any:
    return value

"""A conversation can never be left unrouted: a router killed (``kill -9``) or cut off from Redis
at any point of its handler leaves the entry to another router, which routes the conversation
exactly once.

The "already routed" marker used to be set by the first Lua call, before classification and the
separate enqueue call: a crash in between made the redelivered entry look like a repeat, and the
conversation stayed ``new`` for ever. Now the step that enqueues sets it.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub import keys as K
from storage import keys as storage_keys
from storage.keys import PartitionKeys, partition_of
from tests.conftest import ADMIN_TOKEN, RedisServer
from tests.helpers import auth, eventually, running_hub, signed_post_args
from tests.test_crash_recovery import CRASH_ENV, get_json, hub_processes, make_hub

PARTITIONS = 2
POINTS = ["router:after-inbound", "router:after-classify", "router:after-enqueue",
          "router:before-ack"]


async def routing_of(http: aiohttp.ClientSession, base: str, cid: str) -> dict[str, Any]:
    return await get_json(http, f"{base}/api/v1/conversations/{cid}/routing")  # type: ignore[no-any-return]


@pytest.mark.parametrize("point", POINTS)
async def test_router_killed_at_any_point_routes_the_conversation_once(
        point: str, tmp_path: Path, redis_server: RedisServer, redis: Redis,
        hub_env: None) -> None:
    buyer = f"buyer-{point.split(':')[1]}"
    inbound = PartitionKeys(partition_of("shop", buyer, PARTITIONS)).inbound
    payload = {"id": "m-1", "sender": buyer, "text": "Olá, meu pedido não chegou",
               "language": "pt"}
    async with hub_processes() as hubs, aiohttp.ClientSession() as http:
        a = make_hub(tmp_path, "a", redis_server.url, env={CRASH_ENV: point})
        hubs.append(a)
        a.start()
        await a.wait_ready(http)
        message_id: str | None = None
        try:
            async with http.post(a.base + "/webhooks/api/shop",
                                 **signed_post_args(payload)) as resp:
                assert resp.status == 200, await resp.text()
                [message_id] = (await resp.json())["stored"]
        except aiohttp.ServerDisconnectedError:
            # The router saw the stored entry and died before the answer left (the webhook
            # still writes the search index and the event after the ingest script): the
            # provider would deliver again. The message is stored all the same.
            pass
        assert await a.wait_exit(15) == -signal.SIGKILL, a.log_tail()

        b = make_hub(tmp_path, "b", redis_server.url)
        hubs.append(b)
        b.start()
        await b.wait_ready(http)

        async def queued() -> dict[str, Any] | None:
            data = await get_json(http, b.base + "/api/v1/conversations")
            [conv] = data["conversations"]
            return conv if conv["status"] == "queued" and conv["language"] == "pt" else None

        conv = await eventually(queued, timeout=20)

        async def drained() -> bool:
            return (await redis.xpending(inbound, "router"))["pending"] == 0 and \
                await redis.xlen(inbound) == 0

        await eventually(drained, timeout=20)
        routing = await routing_of(http, b.base, conv["id"])
        events = [entry["event"] for entry in routing["log"]]
        assert events.count("classified") == 1, routing["log"]
        assert events.count("waiting") == 1, routing["log"]
        assert routing["state"]["status"] == "waiting"
        pool = routing["state"]["pool"]
        wait_key = f"{storage_keys.ROUTING_BASE}pool:{pool}:wait:chat"
        assert await redis.zscore(wait_key, conv["id"]) is not None
        assert await redis.exists(
            f"{storage_keys.ROUTING_BASE}rc:{conv['id']}:routed:{payload['id']}")
        detail = await get_json(http, f"{b.base}/api/v1/conversations/{conv['id']}")
        stored = [m["id"] for m in detail["messages"]]
        assert len(stored) == 1 and message_id in (None, stored[0]), stored
        assert b.proc is not None and b.proc.poll() is None, b.log_tail()


async def test_redis_timeout_between_classification_and_enqueue_is_routed_on_redelivery(
        make_config: Any) -> None:
    loaded = make_config()
    async with running_hub(loaded) as client:
        engine = client.server.app[K.ROUTING]
        enqueue = engine._enqueue
        failed: list[str] = []

        async def enqueue_times_out_once(*args: Any, **kwargs: Any) -> Any:
            if not failed:
                failed.append("enqueue")
                raise RedisTimeoutError("Timeout reading from socket")
            return await enqueue(*args, **kwargs)

        engine._enqueue = enqueue_times_out_once  # type: ignore[method-assign]
        r = await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "t-1", "sender": "buyer-t", "text": "Hola, ¿dónde está mi pedido?"}))
        assert r.status == 200

        async def queued() -> dict[str, Any] | None:
            r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            [conv] = (await r.json())["conversations"]
            return conv if conv["status"] == "queued" else None

        # Redelivered once the entry has been idle for claim_idle_seconds (1 s in tests).
        conv = await eventually(queued, timeout=15)
        assert failed == ["enqueue"]
        r = await client.get(f"/api/v1/conversations/{conv['id']}/routing",
                             headers=auth(ADMIN_TOKEN))
        log = (await r.json())["log"]
        assert [e["event"] for e in log].count("classified") == 1
        assert conv["language"] == "es"

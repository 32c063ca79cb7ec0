"""The supervisors' view (GET /api/v1/supervision): waiting counts and oldest wait per queue
step, presence, load and capacity per agent; agents are refused."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from storage.supervision import BAND, oldest_enqueued, wait_set
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import running_hub
from tests.test_api_scope import SUPERVISOR_TOKEN, Hub, routing_config


async def test_queues_and_agents_for_supervisors(make_config: Any) -> None:
    async with running_hub(make_config(extra=routing_config("pools"))) as client:
        hub = Hub(client)
        await hub.online("ana.agent")
        status, body = await hub.call("POST", "/api/v1/agents/ana.agent/heartbeat",
                                      AGENT_TOKEN)
        assert status == 200, body
        mine = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        before = time.time()
        await hub.buyer("pt", expect="queued")  # bruno is offline: it waits
        await asyncio.sleep(0.3)
        for token in (SUPERVISOR_TOKEN, ADMIN_TOKEN):
            status, body = await hub.call("GET", "/api/v1/supervision", token)
            assert status == 200, body
            pools = {q["pool"]: q for q in body["queues"]}
            pt = next(q for q in body["queues"] if q["queue"] == "pt")
            es = next(q for q in body["queues"] if q["queue"] == "es")
            assert pt["waiting"] == 1 and pt["waiting_by_kind"]["chat"] == 1
            assert 0.25 <= pt["oldest_wait_seconds"] <= time.time() - before + 0.1
            assert es["waiting"] == 0 and es["oldest_wait_seconds"] is None
            assert len(pools) == len(body["queues"])
            agents = {a["id"]: a for a in body["agents"]}
            ana = agents["ana.agent"]
            assert ana["status"] == "online" and ana["load"]["chat"] == 1
            assert ana["capacity"]["chat"] == 1 and ana["last_heartbeat_at"] >= before - 5
            assert agents["bruno"]["status"] == "offline"
            assert agents["bruno"]["load"].get("chat", 0) == 0
        assert mine
        status, body = await hub.call("GET", "/api/v1/supervision", AGENT_TOKEN)
        assert status == 403
        r = await client.get("/api/v1/supervision")
        assert r.status == 401
        r = await client.get("/api/v1/supervision?x=1",
                             headers={"Authorization": f"Bearer {SUPERVISOR_TOKEN}"})
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_parameter"


async def test_oldest_wait_looks_past_priority(redis: Redis) -> None:
    """A boosted newcomer heads the set; the oldest is still found, in every band."""
    key = wait_set("q#1", "chat")
    assert await oldest_enqueued(redis, "q#1", ["chat"]) is None
    await redis.zadd(key, {"urgent-new": -9 * BAND + 1_700_000_900.5,
                           "normal-old": -1 * BAND + 1_700_000_100.25,
                           "normal-new": -1 * BAND + 1_700_000_500.0,
                           "low-older": 0 * BAND + 1_700_000_050.0})
    assert await oldest_enqueued(redis, "q#1", ["chat", "email"]) == 1_700_000_050.0
    await redis.zrem(key, "low-older")
    assert await oldest_enqueued(redis, "q#1", ["chat"]) == 1_700_000_100.25

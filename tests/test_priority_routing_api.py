"""``POST /api/v1/conversations/{id}/priority`` (and bulk) moves a waiting conversation in its
queue, against the running hub: by role and scope, bad input changing nothing, and the urgent
one assigned first when the agent's capacity frees up."""

from __future__ import annotations

from typing import Any

from hub import keys as K
from storage import keys, supervision
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, eventually, running_hub
from tests.test_api_scope import BRUNO_TOKEN, SUPERVISOR_TOKEN, Hub, routing_config


async def test_priority_by_role_and_scope_moves_the_queue(make_config: Any) -> None:
    async with running_hub(make_config(extra=routing_config("pools"))) as client:
        hub = Hub(client)
        redis = client.server.app[K.STORE].redis
        await hub.online("ana.agent")
        await hub.online("bruno")
        mine = await hub.buyer("es", expect="assigned", assignee="ana.agent")
        early = await hub.buyer("es", expect="queued")
        late = await hub.buyer("es", expect="queued")
        theirs = await hub.buyer("pt", expect="assigned", assignee="bruno")

        async def score(cid: str) -> float | None:
            state = await hub.state(cid)
            value = await redis.zscore(supervision.wait_set(state["pool"], "chat"), cid)
            return None if value is None else float(value)

        async def level(cid: str) -> str:
            return str((await hub.conv(cid))["priority"])

        async def post(cid: str, body: bytes, token: str = AGENT_TOKEN) -> tuple[int, Any]:
            r = await client.post(f"/api/v1/conversations/{cid}/priority", data=body,
                                  headers=auth(token))
            return r.status, await r.json()

        late_score = await score(late)
        assert late_score is not None and late_score > (await score(early) or 0)

        # -- refused: out of scope (403), unknown (404), unauthenticated, bad bodies (400) ---
        status, body = await post(late, b'{"priority": "urgent"}', BRUNO_TOKEN)
        assert status == 403 and body["error"]["code"] == "out_of_scope", body
        status, body = await post("0.00ff00ff", b'{"priority": "urgent"}')
        assert status == 404
        r = await client.post(f"/api/v1/conversations/{late}/priority",
                              json={"priority": "urgent"})
        assert r.status == 401
        for bad in (b"{", b"[]", b"{}", b'{"priority": "URGENT"}', b'{"priority": 10}',
                    b'{"priority": null}', b'{"priority": "urgent", "extra": 1}',
                    b'{"priority": "' + b"u" * 10_000 + b'"}'):
            status, body = await post(late, bad)
            assert status == 400 and body["error"]["code"] == "invalid_body", (bad, body)
        assert await score(late) == late_score and await level(late) == "normal"
        assert await redis.hget(keys.routing_state(late), "wp") == b"0"  # normal

        # -- in her scope (waiting in her pool): urgent moves it ahead at once ---------------
        status, body = await post(late, b'{"priority": "urgent"}')
        assert status == 200 and body["conversation"]["priority"] == "urgent", body
        assert await score(late) == late_score - 10 * 1e10
        assert (await score(late) or 0) < (await score(early) or 0)

        # her capacity frees up: the urgent one is hers, though it came later
        await hub.resolve(mine)
        await eventually(lambda: _assignee_is(hub, late, "ana.agent"))
        assert (await hub.conv(early))["status"] == "queued"

        # -- supervisors: any conversation, single and bulk -----------------------------------
        for token in (SUPERVISOR_TOKEN, ADMIN_TOKEN):
            status, body = await post(theirs, b'{"priority": "high"}', token)
            assert status == 200, body
        assert await redis.hget(keys.routing_state(theirs), "wp") == b"2"
        status, body = await hub.call("POST", "/api/v1/conversations/bulk", SUPERVISOR_TOKEN,
                                      json={"action": "priority", "priority": "low",
                                            "ids": [early, "0.00ff00ff"]})
        assert status == 200 and body["succeeded"] == 1 and body["failed"] == 1, body
        assert await redis.hget(keys.routing_state(early), "wp") == b"-2"
        state = await hub.state(early)
        assert await score(early) == -(int(state["priority"] or 0) - 2) * 1e10 \
            + state["enqueued_at"]


async def _assignee_is(hub: Hub, cid: str, agent: str) -> bool:
    return (await hub.conv(cid))["assignee"] == agent

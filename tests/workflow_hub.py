"""A running hub for the workflow, export and canned-reply tests: the scope suite's routing
(agents, queues, tokens) and its five conversations in every relation to the agent Ana, plus a
buyer who writes again into the same conversation and a wait for the router to go idle."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from tests.conftest import ADMIN_TOKEN
from tests.helpers import eventually, signed_post_args
from tests.test_api_scope import BRUNO_TOKEN, SUPERVISOR_TOKEN, Hub, routing_config

__all__ = ["BRUNO_TOKEN", "SUPERVISOR_TOKEN", "WorkflowHub", "config"]


def config(scope: str = "pools") -> str:
    """The scope suite's routing with a display name for Ana (canned replies' {agent_name})."""
    return routing_config(scope).replace('id = "ana.agent"\n',
                                         'id = "ana.agent"\nname = "Ana Souza"\n', 1)


class WorkflowHub(Hub):
    """``Hub`` plus the calls these suites make."""

    def __init__(self, client: Any, redis: Redis) -> None:
        super().__init__(client)
        self.redis = redis
        self.extra = 0

    async def write(self, sender: str, text: str, **fields: Any) -> None:
        """``sender`` writes (again; in their own thread unless ``thread`` says another);
        the webhook answers once the message is stored."""
        self.extra += 1
        body = {"id": f"again-{self.extra}", "sender": sender, "text": text, **fields}
        r = await self.client.post("/webhooks/api/shop", **signed_post_args(body))
        assert r.status == 200, await r.text()

    async def router_idle(self) -> None:
        """Every inbound entry written so far is read and acknowledged by the router."""

        async def idle() -> bool:
            for stream in await self.redis.keys("ih:{p*}:inbound"):
                info = await self.redis.xinfo_stream(stream)
                groups = {g["name"]: g for g in await self.redis.xinfo_groups(stream)}
                group = groups.get(b"router") or groups.get("router")
                if group is None or group["pending"] or \
                        group["last-delivered-id"] != info["last-generated-id"]:
                    return False
            return True

        await eventually(idle)

    async def post(self, path: str, token: str, payload: Any = None, *,
                   raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (None if payload is None
                                            else json.dumps(payload).encode())
        r = await self.client.post(path, data=data, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        return r.status, await r.json()

    async def thread_of(self, cid: str) -> str:
        return str((await self.conv(cid))["thread_id"])

    async def admin_get(self, path: str) -> Any:
        status, body = await self.call("GET", path, ADMIN_TOKEN)
        assert status == 200, body
        return body

"""Routing through the running hub: agents from config, presence and transfer over the API,
the conversation record mirroring assignments, and the explain record."""

from __future__ import annotations

from typing import Any

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import auth, eventually, running_hub, signed_post_args

ROUTING = """
[routing]
languages = ["es", "pt", "en"]
reassign_after_no_reply_minutes = 0

[[routing.queues]]
name = "pt"
[[routing.queues.steps]]
languages = { pt = 3 }
[[routing.queues.steps]]
after_seconds = 600

[[routing.rules]]
name = "portuguese"
queue = "pt"
when = { language = ["pt"] }

[[routing.agents]]
id = "ana.agent"
name = "Ana"
languages = { es = 5, pt = 4 }
capacity = { chat = 2 }

[[routing.agents]]
id = "bruno"
languages = { pt = 5 }
capacity = { chat = 2 }
"""


async def _conv(client: Any, cid: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/conversations/{cid}", headers=auth(ADMIN_TOKEN))
    return (await r.json())["conversation"]  # type: ignore[no-any-return]


async def test_assignment_visible_through_api(make_config: Any) -> None:
    async with running_hub(make_config(extra=ROUTING)) as client:
        r = await client.post("/api/v1/agents/ana.agent/status", json={"status": "online"},
                              headers=auth(AGENT_TOKEN))
        assert r.status == 200
        r = await client.post("/api/v1/agents/bruno/status", json={"status": "online"},
                              headers=auth(AGENT_TOKEN))
        assert r.status == 403, "an agent may only change their own status"
        r = await client.post("/api/v1/agents/bruno/status", json={"status": "busy"},
                              headers=auth(ADMIN_TOKEN))
        assert r.status == 400
        r = await client.post("/api/v1/agents/nobody/status", json={"status": "online"},
                              headers=auth(ADMIN_TOKEN))
        assert r.status == 404

        await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "1", "sender": "joao", "text": "Olá, cadê meu pedido? Já faz duas semanas"}))

        async def assigned() -> dict[str, Any] | None:
            r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            convs = (await r.json())["conversations"]
            return convs[0] if convs and convs[0]["status"] == "assigned" else None

        conv = await eventually(assigned)
        assert conv["assignee"] == "ana.agent" and conv["language"] == "pt"
        assert conv["queue"] == "pt"

        r = await client.get(f"/api/v1/conversations/{conv['id']}/routing",
                             headers=auth(AGENT_TOKEN))
        body = await r.json()
        events = [e["event"] for e in body["log"]]
        assert events[0] == "classified" and "assigned" in events
        classified = body["log"][0]
        assert classified["language_source"] in ("text", "text+hint")
        assert classified["rule"] == "portuguese" and classified["skill"] == "shipping"

        # supervisor moves it to the better Portuguese speaker once they are online
        await client.post("/api/v1/agents/bruno/status", json={"status": "online"},
                          headers=auth(ADMIN_TOKEN))
        r = await client.post(f"/api/v1/conversations/{conv['id']}/transfer",
                              json={"agent": "bruno"}, headers=auth(ADMIN_TOKEN))
        assert r.status == 200, await r.text()
        await eventually(lambda: _assignee_is(client, conv["id"], "bruno"))
        for bad in ({}, {"agent": "a", "queue": "b"}, {"queue": "missing"}):
            r = await client.post(f"/api/v1/conversations/{conv['id']}/transfer", json=bad,
                                  headers=auth(ADMIN_TOKEN))
            assert r.status in (400, 422), bad

        r = await client.post(f"/api/v1/conversations/{conv['id']}/resolve",
                              headers=auth(AGENT_TOKEN))
        assert r.status == 403, "it is bruno's now: ana may not resolve it"
        r = await client.post(f"/api/v1/conversations/{conv['id']}/resolve",
                              headers=auth(ADMIN_TOKEN))
        assert r.status == 200
        assert (await _conv(client, conv["id"]))["status"] == "resolved"
        r = await client.get("/api/v1/agents", headers=auth(ADMIN_TOKEN))
        agents = {a["profile"]["id"]: a["state"] for a in (await r.json())["agents"]}
        assert agents["bruno"]["conversations"] == []
        r = await client.get("/api/v1/queues", headers=auth(ADMIN_TOKEN))
        assert {p["pool"] for p in (await r.json())["pools"]} >= {"pt#1", "pt#2", "default#1"}


async def _assignee_is(client: Any, cid: str, agent: str) -> bool:
    return (await _conv(client, cid))["assignee"] == agent


async def test_put_agent_validates(make_config: Any) -> None:
    async with running_hub(make_config(extra=ROUTING)) as client:
        r = await client.put("/api/v1/agents/new.one", json={"languages": {"es": 4},
                                                            "capacity": {"chat": 3}},
                             headers=auth(ADMIN_TOKEN))
        assert r.status == 200, await r.text()
        for bad in ({"languages": {"es": 9}}, {"capacity": {"chat": -1}}, {"weight": "x"},
                    {"unknown": 1}, [1]):
            r = await client.put("/api/v1/agents/x", json=bad, headers=auth(ADMIN_TOKEN))
            assert r.status == 400, bad
        r = await client.put("/api/v1/agents/x", json={}, headers=auth(AGENT_TOKEN))
        assert r.status == 403

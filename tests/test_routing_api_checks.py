"""What the routing API refuses (unknown languages, markets, kinds, time zones) and what a
reload does to agents created through the API versus agents from the file."""

from __future__ import annotations

import asyncio
from typing import Any

from hub.cli import main
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub, signed_post_args

ROUTING = """
[routing]
languages = ["es", "pt", "en"]

[[routing.agents]]
id = "lucia"
languages = { es = 5 }
capacity = { chat = 2 }

[[routing.agents]]
id = "marta"
languages = { es = 4 }
capacity = { chat = 2 }
"""


async def test_language_correction_refuses_unknown_codes(make_config: Any) -> None:
    async with running_hub(make_config(extra=ROUTING)) as client:
        r = await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "1", "sender": "b", "text": "Hola, ¿dónde está mi pedido?"}))
        assert r.status == 200

        async def routed() -> str | None:
            r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            convs = (await r.json())["conversations"]
            return convs[0]["id"] if convs and convs[0]["status"] == "queued" else None

        cid = await eventually(routed)
        url = f"/api/v1/conversations/{cid}/language"
        for bad in ("xx", "qq", "ES", "spanish"):
            r = await client.post(url, json={"language": bad}, headers=auth(ADMIN_TOKEN))
            assert r.status == 400, bad
        r = await client.post(url, json={"language": "xx"}, headers=auth(ADMIN_TOKEN))
        assert "unknown language 'xx'" in (await r.json())["error"]["message"]
        # A real language the team does not route is recorded and goes to the default queue.
        r = await client.post(url, json={"language": "ja"}, headers=auth(ADMIN_TOKEN))
        assert r.status == 200, await r.text()
        assert (await r.json())["state"]["queue"] == "default"


async def test_put_agent_refuses_what_routing_cannot_use(make_config: Any) -> None:
    async with running_hub(make_config(extra=ROUTING)) as client:
        cases = [
            ({"languages": {"xx": 3}}, "languages.xx: unknown language 'xx'"),
            ({"capacity": {"chta": 4}}, "capacity.chta: unknown capacity kind 'chta'"),
            ({"timezone": "Mars/Olympus"}, "timezone: unknown IANA time zone 'Mars/Olympus'"),
            ({"markets": ["UK"]}, "unknown market 'UK'"),
        ]
        for body, fragment in cases:
            r = await client.put("/api/v1/agents/x", json=body, headers=auth(ADMIN_TOKEN))
            assert r.status == 400, body
            assert fragment in (await r.json())["error"]["message"], body


async def test_reload_removes_file_agents_only(make_config: Any) -> None:
    loaded = make_config(extra=ROUTING)
    async with running_hub(loaded) as client:
        r = await client.put("/api/v1/agents/zoe", json={"languages": {"es": 5},
                                                        "capacity": {"chat": 2}},
                             headers=auth(ADMIN_TOKEN))
        assert r.status == 200

        async def ids() -> set[str]:
            r = await client.get("/api/v1/agents", headers=auth(ADMIN_TOKEN))
            return {a["profile"]["id"] for a in (await r.json())["agents"]}

        assert await ids() == {"lucia", "marta", "zoe"}
        text = loaded.path.read_text()
        start = text.index('[[routing.agents]]\nid = "lucia"')
        end = text.index('[[routing.agents]]\nid = "marta"')
        loaded.path.write_text(text[:start] + text[end:])
        await asyncio.sleep(0.2)  # let the hub's subscription settle
        args = ["--config", str(loaded.path), "routing", "reload"]
        assert await asyncio.to_thread(main, args) == 0

        async def lucia_gone() -> bool:
            return await ids() == {"marta", "zoe"}

        await eventually(lucia_gone)

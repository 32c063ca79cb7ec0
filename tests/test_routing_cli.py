"""``inboxhub routing explain`` and ``routing reload`` (pub/sub to running hubs)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hub.cli import main
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub, signed_post_args

QUEUE = """
[[routing.queues]]
name = "vip"
[[routing.queues.steps]]
languages = { en = 4 }
"""


async def test_explain_prints_the_decision(make_config: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    loaded = make_config()
    async with running_hub(loaded) as client:
        await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "1", "sender": "b", "text": "Hola, quiero devolver el producto, llegó roto"}))

        async def routed() -> str | None:
            r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            convs = (await r.json())["conversations"]
            return convs[0]["id"] if convs and convs[0]["status"] == "queued" else None

        cid = await eventually(routed)
        args = ["--config", str(loaded.path), "routing", "explain", cid]
        assert await asyncio.to_thread(main, args) == 0
        out = capsys.readouterr().out
        assert "classified" in out and "language es" in out and "skill refund" in out
        assert 'no rule matched: default queue "default"' in out
        assert 'now: waiting in step 1 of queue "default"' in out
        assert "the last step (the overflow)" in out
        assert await asyncio.to_thread(main, [*args, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["state"]["queue"] == "default"
        assert data["summary"].startswith('waiting in step 1 of queue "default"')
        assert all(entry["text"] for entry in data["log"])
        assert await asyncio.to_thread(main, ["--config", str(loaded.path), "routing",
                                              "explain", "0.00ff"]) == 1


SPANISH_TEAM = """
[routing]
languages = ["es", "en"]
[[routing.queues]]
name = "es"
[[routing.queues.steps]]
languages = { es = 3 }
[[routing.queues.steps]]
after_seconds = 300
[[routing.rules]]
name = "spanish"
queue = "es"
when = { language = ["es"] }
[[routing.agents]]
id = "lucia"
languages = { es = 5 }
capacity = { chat = 2 }
[[routing.agents]]
id = "emma"
languages = { en = 5 }
capacity = { chat = 2 }
"""


async def test_explain_says_which_step_assigned_and_why(
        make_config: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Lucía is away: step 1 holds the buyer (no skip_when_unstaffed) rather than handing them
    to Emma; when Lucía comes online she gets the conversation, and both the CLI and the API
    say it was step 1 of queue "es" and why."""
    loaded = make_config(extra=SPANISH_TEAM)
    async with running_hub(loaded) as client:
        for agent, status in (("emma", "online"), ("lucia", "away")):
            r = await client.post(f"/api/v1/agents/{agent}/status", json={"status": status},
                                  headers=auth(ADMIN_TOKEN))
            assert r.status == 200
        await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "1", "sender": "b", "text": "Hola, ¿dónde está mi pedido?"}))

        async def queued() -> str | None:
            r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            convs = (await r.json())["conversations"]
            return convs[0]["id"] if convs and convs[0]["status"] == "queued" else None

        cid = await eventually(queued)
        args = ["--config", str(loaded.path), "routing", "explain", cid]
        assert await asyncio.to_thread(main, args) == 0
        out = capsys.readouterr().out
        assert 'step 1 of queue "es": nobody online can serve it, but the step is not skipped' \
            in out
        assert "moves on to step 2 300 s after entering the queue" in out
        r = await client.post("/api/v1/agents/lucia/status", json={"status": "online"},
                              headers=auth(ADMIN_TOKEN))
        assert r.status == 200
        assert await asyncio.to_thread(main, args) == 0
        out = capsys.readouterr().out
        assert 'now: assigned to lucia by step 1 of queue "es": the agent came online' in out
        r = await client.get(f"/api/v1/conversations/{cid}/routing", headers=auth(ADMIN_TOKEN))
        log = (await r.json())["log"]
        assert log[-1]["event"] == "assigned"
        assert log[-1]["text"].startswith('assigned to lucia by step 1 of queue "es"')


async def test_reload_reaches_running_hub(make_config: Any,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    loaded = make_config()
    reload_args = ["--config", str(loaded.path), "routing", "reload"]
    assert await asyncio.to_thread(main, reload_args) == 1  # no hub running
    assert "no running hub" in capsys.readouterr().out
    async with running_hub(loaded) as client:
        async def pools() -> set[str]:
            r = await client.get("/api/v1/queues", headers=auth(ADMIN_TOKEN))
            return {p["pool"] for p in (await r.json())["pools"]}

        assert "vip#1" not in await pools()
        loaded.path.write_text(loaded.path.read_text() + QUEUE)
        await asyncio.sleep(0.2)  # let the hub's subscription settle
        assert await asyncio.to_thread(main, reload_args) == 0
        await eventually(lambda: _has(pools, "vip#1"))
        # a broken file is refused by the CLI and the hub keeps its rules
        loaded.path.write_text(loaded.path.read_text() + "\n[routing]\nbogus = 1\n")
        assert await asyncio.to_thread(main, reload_args) == 2
        assert "vip#1" in await pools()


async def _has(pools: Any, name: str) -> bool:
    return name in await pools()

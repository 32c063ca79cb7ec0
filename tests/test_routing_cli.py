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
        assert "classified" in out and "language=es" in out and "skill=refund" in out
        assert "waiting" in out and "queue=default" in out
        assert await asyncio.to_thread(main, [*args, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["state"]["queue"] == "default"
        assert await asyncio.to_thread(main, ["--config", str(loaded.path), "routing",
                                              "explain", "0.00ff"]) == 1


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

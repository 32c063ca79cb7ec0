"""Messenger in the running hub: a buyer's message stored, the agent's reply sent through the
outbox to the Graph API, and Meta's read watermark (which names no message) marking the
reply read, even when the process that handles the watermark is not the one that sent it
(its in-memory log is empty): the sender kept the send per recipient in Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hub import keys as K
from tests.channels.messenger import payloads as p
from tests.channels.messenger.provider import GraphFake
from tests.channels.messenger.test_conformance import APP_SECRET, BUYER, TOKEN
from tests.conftest import ADMIN_TOKEN
from tests.helpers import auth, eventually, running_hub

VERIFY = "verify-token-0123456789"


@pytest.fixture
def meta_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IH_FB_TOKEN", TOKEN)
    monkeypatch.setenv("IH_META_SECRET", APP_SECRET)
    monkeypatch.setenv("IH_META_VERIFY", VERIFY)


def channel_toml(graph: GraphFake) -> str:
    return f"""
[[channels]]
name = "fb"
type = "messenger"
[channels.settings]
page_access_token = "env:IH_FB_TOKEN"
app_secret = "env:IH_META_SECRET"
verify_token = "env:IH_META_VERIFY"
api_base_url = "{graph.url}"
timeout_seconds = 5
"""


async def test_a_read_watermark_reaches_replies_another_process_sent(
    make_config: Any, meta_env: None
) -> None:
    async with GraphFake(TOKEN, APP_SECRET) as graph, \
            running_hub(make_config(extra=channel_toml(graph))) as client:
        async def post(payload: dict[str, Any]) -> None:
            body = p.encode(payload)
            resp = await client.post("/webhooks/messenger/fb", data=body,
                                     headers=graph.sign(body))
            assert resp.status == 200, await resp.text()

        now_ms = int(time.time() * 1000)
        await post(p.envelope([p.message("m_in1", BUYER, "Hola, ¿hay stock?",
                                         at=now_ms)]))

        async def conversation() -> dict[str, Any] | None:
            resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
            found = [c for c in (await resp.json())["conversations"]
                     if c["channel_instance"] == "fb"]
            return found[0] if found else None

        conv = await eventually(conversation)
        resp = await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                                 json={"text": "Sí, hay stock."},
                                 headers=auth(ADMIN_TOKEN))
        assert resp.status == 202, await resp.text()
        reply_id = (await resp.json())["message"]["id"]

        async def status() -> str:
            resp = await client.get(f"/api/v1/conversations/{conv['id']}/messages",
                                    headers=auth(ADMIN_TOKEN))
            [mine] = [m for m in (await resp.json())["messages"] if m["id"] == reply_id]
            return str(mine["status"])

        await eventually(lambda: _is(status, "sent"))
        adapter = client.server.app[K.CHANNELS].get("fb")
        adapter.sent_log.__init__()  # type: ignore[misc]  # as if another process
        # A watermark just after the send does not count it (the clocks differ: a late
        # "read" beats a false one)...
        soon = int(time.time() * 1000) + 500
        await post(p.envelope([p.read(BUYER, watermark=soon, at=soon)]))
        assert await status() == "sent"
        # ...the buyer reading it a few seconds later does
        later = int(time.time() * 1000) + 3000
        await post(p.envelope([p.read(BUYER, watermark=later, at=later)]))
        await eventually(lambda: _is(status, "read"))


async def _is(check: Any, wanted: str) -> bool:
    return bool(await check() == wanted)

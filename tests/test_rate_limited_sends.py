"""Provider rate limits on the outbound path, end to end (issue #12 §5).

A Telegram-like channel (``tests/plugins/paced.py``: 2 sends/s per chat, here) and the plain API
channel share one hub. Many replies to one chat leave paced, in order, each once, none counted as
a failed attempt, while the other channel's replies go straight through even with a single
sender slot; two hub processes (real ``python -m hub serve`` children) share the buckets.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from channels.services.limits import RateLimit
from channels.testing.limits import assert_paced
from storage.store import Store
from tests.conftest import ADMIN_TOKEN, RedisServer
from tests.helpers import auth, eventually, running_hub, signed_post_args
from tests.plugins import paced
from tests.test_crash_recovery import get_json, hub_processes, make_hub

ROOT = Path(__file__).resolve().parents[1]
PER_CHAT = RateLimit("recipient", 2.0)


def tg_channel(outbound_url: str, **settings: Any) -> str:
    lines = "\n".join(f"{k} = {v!r}" for k, v in settings.items())
    return f"""
[[channels]]
name = "tg"
type = "paced-api"
[channels.settings]
secret = "env:IH_TEST_SECRET"
outbound_url = "{outbound_url}"
timeout_seconds = 2
{lines}
"""


class Provider:
    """Both channels' far end: records when each reply arrived, per channel instance."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, str, str, float]] = []  # instance, thread, reply, when
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrivals.append((body["channel_instance"], body["thread"], body["reply_id"],
                              time.monotonic()))
        return web.json_response({"id": f"p-{body['reply_id']}"})

    def of(self, instance: str) -> list[tuple[str, str, str, float]]:
        return [a for a in self.arrivals if a[0] == instance]

    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/send"))

    async def __aenter__(self) -> Provider:
        app = web.Application()
        app.router.add_post("/send", self.handle)
        self.server = TestServer(app)
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()


async def _conversations(get: Any, n: int) -> dict[str, str] | None:
    convs = (await get("/api/v1/conversations?limit=200"))["conversations"]
    if len(convs) < n or any(c["status"] != "queued" for c in convs):
        return None
    return {c["contact_handle"]: c["id"] for c in convs}


async def test_a_busy_chat_is_paced_while_other_channels_go_straight_through(
        make_config: Any, monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    paced.register(monkeypatch)
    async with Provider() as provider:
        loaded = make_config(outbound_url=provider.url(), extra=tg_channel(provider.url()),
                             overrides={"outbox": {"concurrency": 1}})
        async with running_hub(loaded) as client:

            async def get(path: str) -> Any:
                r = await client.get(path, headers=auth(ADMIN_TOKEN))
                assert r.status == 200
                return await r.json()

            r = await client.post("/webhooks/paced-api/tg", **signed_post_args(
                {"id": "tg-1", "sender": "chat-1", "text": "hola"}))
            assert r.status == 200
            for buyer in ("b1", "b2", "b3"):
                r = await client.post("/webhooks/api/shop", **signed_post_args(
                    {"id": f"m-{buyer}", "sender": buyer, "text": "hi"}))
                assert r.status == 200
            convs = await eventually(lambda: _conversations(get, 4))

            async def reply(conversation: str, text: str) -> str:
                r = await client.post(f"/api/v1/conversations/{conversation}/replies",
                                      json={"text": text}, headers=auth(ADMIN_TOKEN))
                assert r.status == 202, await r.text()
                return str((await r.json())["message"]["id"])

            chat = [await reply(convs["chat-1"], f"tg {i}") for i in range(8)]
            others = [await reply(convs[b], f"shop {b}") for b in ("b1", "b2", "b3")]

            async def shop_done() -> bool:
                return len(provider.of("shop")) == len(others)

            await eventually(shop_done, timeout=10)
            # With one sender slot, a limited reply waiting in it would have held the others
            # until the chat's queue drained (8 replies at 2/s take 3.5 s at least).
            assert len(provider.of("tg")) < len(chat), "the other channel waited for the chat"

            async def chat_done() -> bool:
                return len(provider.of("tg")) == len(chat)

            await eventually(chat_done, timeout=20)
            arrivals = provider.of("tg")
            assert [a[2] for a in arrivals] == chat, "dropped, repeated or out of order"
            assert_paced([a[3] for a in arrivals], [PER_CHAT])
            for rid in chat:
                view = await store.get_message(rid)
                assert view is not None and view.status == "sent"
                assert view.attempts == 1, "a wait for the rate limit counted as an attempt"
                assert view.error is None
            metrics = await (await client.get("/metrics")).text()
            assert 'inboxhub_outbound_rate_limited_total{instance="tg"}' in metrics
            assert 'inboxhub_outbound_rate_limited_total{instance="shop"}' not in metrics


async def test_two_hub_processes_share_the_buckets(tmp_path: Path, redis_server: RedisServer,
                                                   redis: Redis, hub_env: None) -> None:
    plugin_path = paced.entry_point_dir(tmp_path / "plugins")
    env = {"PYTHONPATH": os.pathsep.join(
        [str(plugin_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    per_account = RateLimit("account", 5.0)
    chats, per_chat = ["chat-a", "chat-b", "chat-c"], 4
    async with Provider() as provider, hub_processes() as hubs, \
            aiohttp.ClientSession() as http:
        for name in ("hub0", "hub1"):
            hub = make_hub(tmp_path, name, redis_server.url, env=env,
                           outbound_url=provider.url(),
                           extra=tg_channel(provider.url(), per_account_rate=5.0))
            hubs.append(hub)
            hub.start()
        await asyncio.gather(*(hub.wait_ready(http) for hub in hubs))

        async def get(path: str) -> Any:
            return await get_json(http, hubs[0].base + path)

        for chat in chats:
            async with http.post(hubs[0].base + "/webhooks/paced-api/tg", **signed_post_args(
                    {"id": f"in-{chat}", "sender": chat, "text": "hola"})) as resp:
                assert resp.status == 200, await resp.text()
        convs = await eventually(lambda: _conversations(get, len(chats)), timeout=30)
        posted: dict[str, list[str]] = {chat: [] for chat in chats}
        for i in range(per_chat):
            for n, chat in enumerate(chats):
                hub = hubs[(i + n) % 2]  # both processes queue (and so send) replies
                async with http.post(f"{hub.base}/api/v1/conversations/{convs[chat]}/replies",
                                     json={"text": f"{chat} {i}"},
                                     headers=auth(ADMIN_TOKEN)) as resp:
                    assert resp.status == 202, await resp.text()
                    posted[chat].append((await resp.json())["message"]["id"])

        async def delivered() -> bool:
            return len(provider.of("tg")) >= len(chats) * per_chat

        await eventually(delivered, timeout=30)
        await asyncio.sleep(1.5)  # beyond claim_idle_seconds: a duplicate would show now
        arrivals = provider.of("tg")
        assert sorted(a[2] for a in arrivals) == sorted(r for rs in posted.values() for r in rs)
        assert_paced([a[3] for a in arrivals], [per_account])
        for chat in chats:
            # (Order within a chat is kept per process, by the sender's per-conversation lanes;
            # two processes reading one outbox may present a chat's replies in either order,
            # with or without a limiter.)
            mine = [a for a in arrivals if a[1] == chat]
            assert_paced([a[3] for a in mine], [PER_CHAT, per_account])
        sent_by = []
        for hub in hubs:
            async with http.get(hub.base + "/metrics") as resp:
                text = await resp.text()
            sent_by.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                               if line.startswith('inboxhub_outbound_sent_total{instance="tg"}')))
        assert all(n > 0 for n in sent_by), f"one process sent everything: {sent_by}"
        assert sum(sent_by) == len(chats) * per_chat
        store = Store(redis, partitions=2)
        for rid in (r for rs in posted.values() for r in rs):
            view = await store.get_message(rid)
            assert view is not None and view.status == "sent" and view.attempts == 1

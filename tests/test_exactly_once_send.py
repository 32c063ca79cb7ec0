"""A reply reaches the buyer once, with any number of hub processes.

Three mechanisms, each tested on its own and then together: the outbox entry is acknowledged the
moment its send finishes (a slow provider holds only its own slot) and its claim is renewed while
it is in flight; a reply moves from ``queued`` to ``sending`` under a lease in one Lua step, so a
second process skips it; the retry set re-queues only a reply still waiting for that retry.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from channels.models import InboundMessage, OutboundReply
from storage import keys
from storage.store import Store
from tests.conftest import ADMIN_TOKEN, RedisServer
from tests.helpers import auth, eventually, running_hub, signed_post_args
from tests.test_crash_recovery import HubProcess, get_json, hub_processes, make_hub


async def a_reply(store: Store, text: str = "answer") -> OutboundReply:
    ingested = await store.ingest(InboundMessage(
        channel_type="api", channel_instance="shop", provider_message_id=f"m-{text}",
        thread_id=f"t-{text}", sender_handle="buyer", text="hi"))
    p = int(ingested.conversation_id.split(".", 1)[0])
    reply = OutboundReply(reply_id=keys.new_id(p), conversation_id=ingested.conversation_id,
                          channel_type="api", channel_instance="shop", thread_id=f"t-{text}",
                          recipient_handle="buyer", text=text)
    await store.enqueue_reply(reply)
    return reply


async def test_one_process_holds_a_send_at_a_time_under_a_lease(store: Store) -> None:
    reply = await a_reply(store)
    rid = reply.reply_id
    assert await store.claim_send(rid, lease_seconds=0.3, owner="a") == ("send", 1)
    assert await store.claim_send(rid, lease_seconds=0.3, owner="b") == ("busy", 1)
    await asyncio.sleep(0.4)  # the holder died mid-send: its lease ran out
    assert await store.claim_send(rid, lease_seconds=30, owner="b") == ("send", 2)
    await store.mark_sent(rid, "p-1")
    assert await store.claim_send(rid, lease_seconds=30, owner="c") == ("done", 2)
    view = await store.get_message(rid)
    assert view is not None and view.status == "sent" and view.provider_message_id == "p-1"
    assert await store.claim_send("0.00ff", lease_seconds=1, owner="a") == ("missing", 0)


async def test_a_reply_waiting_for_its_retry_is_owned_by_the_retry_set(store: Store,
                                                                       redis: Redis) -> None:
    reply = await a_reply(store)
    rid = reply.reply_id
    k = store.keys_for(rid)
    assert k is not None
    assert (await store.claim_send(rid, lease_seconds=30, owner="a"))[0] == "send"
    await store.schedule_retry(rid, time.time() - 1, 1, "HTTP 503")
    # A stale outbox entry for it (redelivered, reclaimed) must not send it early.
    assert (await store.claim_send(rid, lease_seconds=30, owner="b"))[0] == "scheduled"
    before = await redis.xlen(k.outbox)
    assert await store.release_due_retries(time.time()) == 1
    assert await redis.xlen(k.outbox) == before + 1
    assert await store.claim_send(rid, lease_seconds=30, owner="b") == ("send", 2)


async def test_retry_release_never_requeues_a_reply_settled_meanwhile(store: Store,
                                                                      redis: Redis) -> None:
    reply = await a_reply(store)
    rid = reply.reply_id
    k = store.keys_for(rid)
    assert k is not None
    await store.claim_send(rid, lease_seconds=30, owner="a")
    await store.schedule_retry(rid, time.time() - 1, 1, "HTTP 503")
    await store.mark_sent(rid, "p-1")  # e.g. another process's delivery finished meanwhile
    before = await redis.xlen(k.outbox)
    assert await store.release_due_retries(time.time()) == 1  # taken out of the set ...
    assert await redis.xlen(k.outbox) == before  # ... but not queued again
    view = await store.get_message(rid)
    assert view is not None and view.status == "sent"


class SlowFirstDelivery:
    """The operator's endpoint: each reply's first delivery takes ``delay`` seconds, then 200.

    ``deliveries`` counts every request per ``X-Inboxhub-Reply-Id``, finished or not, so a resend
    while the first one is still being answered shows up as 2.
    """

    def __init__(self, delay: float, slow_only: set[str] | None = None) -> None:
        self.delay = delay
        self.slow_only = slow_only
        self.deliveries: collections.Counter[str] = collections.Counter()
        self.texts: dict[str, str] = {}
        self.finished: set[str] = set()
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        rid = request.headers.get("X-Inboxhub-Reply-Id", "")
        self.deliveries[rid] += 1
        self.texts[rid] = body["text"]
        slow = self.slow_only is None or body["text"] in self.slow_only
        if self.deliveries[rid] == 1 and slow:
            await asyncio.sleep(self.delay)
        self.finished.add(rid)
        return web.json_response({"id": f"op-{rid}"})

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/replies"))

    async def __aenter__(self) -> SlowFirstDelivery:
        app = web.Application()
        app.router.add_post("/replies", self.handle)
        self.server = TestServer(app)
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()


async def _routed_conversations(client: Any, n: int) -> list[dict[str, Any]] | None:
    r = await client.get("/api/v1/conversations?limit=200", headers=auth(ADMIN_TOKEN))
    convs = (await r.json())["conversations"]
    return convs if len(convs) == n and all(c["status"] == "queued" for c in convs) else None


async def test_a_slow_provider_call_holds_only_its_own_reply(make_config: Any) -> None:
    async with SlowFirstDelivery(delay=5.0, slow_only={"slow"}) as operator:
        loaded = make_config(outbound_url=operator.url,
                             overrides={"channel": {"timeout_seconds": 10}})
        async with running_hub(loaded) as client:
            for buyer in ("buyer-1", "buyer-2"):
                r = await client.post("/webhooks/api/shop", **signed_post_args(
                    {"id": f"m-{buyer}", "sender": buyer, "text": "hi"}))
                assert r.status == 200
            convs = await eventually(lambda: _routed_conversations(client, 2))
            url = "/api/v1/conversations/{}/replies"
            r = await client.post(url.format(convs[0]["id"]), json={"text": "slow"},
                                  headers=auth(ADMIN_TOKEN))
            slow_id = (await r.json())["message"]["id"]
            await eventually(lambda: _value(slow_id in operator.deliveries))
            r = await client.post(url.format(convs[1]["id"]), json={"text": "fast"},
                                  headers=auth(ADMIN_TOKEN))
            fast_id = (await r.json())["message"]["id"]
            await eventually(lambda: _value(fast_id in operator.finished), timeout=3)
            assert slow_id not in operator.finished, "the fast reply waited for the slow one"
            await eventually(lambda: _value(slow_id in operator.finished), timeout=10)


@pytest.mark.parametrize("processes", [2, 3])
async def test_each_reply_is_delivered_once_with_several_hub_processes(
        processes: int, tmp_path: Path, redis_server: RedisServer, redis: Redis,
        hub_env: None) -> None:
    n = 50
    async with SlowFirstDelivery(delay=8.0) as operator, hub_processes() as hubs, \
            aiohttp.ClientSession() as http:
        for i in range(processes):
            hub = make_hub(tmp_path, f"hub{i}", redis_server.url, outbound_url=operator.url,
                           overrides={"outbox": {"send_timeout_seconds": 20,
                                                 "concurrency": 32},
                                      "channel": {"timeout_seconds": 15}})
            hubs.append(hub)
            hub.start()
        await asyncio.gather(*(hub.wait_ready(http) for hub in hubs))
        first: HubProcess = hubs[0]

        async def post(i: int) -> None:
            async with http.post(first.base + "/webhooks/api/shop", **signed_post_args(
                    {"id": f"m-{i}", "sender": f"buyer-{i}", "text": "hi"})) as resp:
                assert resp.status == 200, await resp.text()

        await asyncio.gather(*(post(i) for i in range(n)))

        async def routed() -> list[dict[str, Any]] | None:
            data = await get_json(http, first.base + "/api/v1/conversations?limit=200")
            convs = data["conversations"]
            ok = len(convs) == n and all(c["status"] == "queued" for c in convs)
            return convs if ok else None

        convs = await eventually(routed, timeout=30)
        reply_ids = []
        for i, conv in enumerate(convs):
            hub = hubs[i % processes]
            async with http.post(f"{hub.base}/api/v1/conversations/{conv['id']}/replies",
                                 json={"text": f"reply {i}"}, headers=auth(ADMIN_TOKEN)) as resp:
                assert resp.status == 202, await resp.text()
                reply_ids.append((await resp.json())["message"]["id"])

        async def all_delivered() -> bool:
            return set(reply_ids) <= operator.finished

        await eventually(all_delivered, timeout=60)
        outboxes = [keys.PartitionKeys(p).outbox for p in range(2)]

        async def drained() -> bool:
            for stream in outboxes:
                if await redis.xlen(stream) or (await redis.xpending(stream, "sender"))["pending"]:
                    return False
            return True

        await eventually(drained, timeout=30)
        await asyncio.sleep(2.5)  # beyond claim_idle_seconds: any reclaimed resend is visible
        twice = {rid: c for rid, c in operator.deliveries.items() if c != 1}
        assert twice == {}, f"{len(twice)} of {n} replies delivered more than once"
        assert sorted(operator.deliveries) == sorted(reply_ids)
        for hub in hubs:
            assert hub.proc is not None and hub.proc.poll() is None, hub.log_tail()
        store = Store(redis, partitions=2)
        for rid in reply_ids:
            view = await store.get_message(rid)
            assert view is not None and view.status == "sent"
            assert view.provider_message_id == f"op-{rid}"


async def _value(value: Any) -> Any:
    return value

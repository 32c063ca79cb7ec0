"""The webhook base class of contract v2: ``verify`` and ``parse`` may be coroutines, ``parse``
may return delivery receipts beside messages, and the provider is answered only once both are
recorded (a receipt the hub cannot record is a 503, so the provider delivers it again)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.base import AdapterContext, Capabilities, Parsed, WebhookAdapter
from channels.errors import InvalidSignature
from channels.models import DeliveryUpdate, FetchNotice, InboundMessage, OutboundReply
from channels.testing import MemoryKitStore
from channels.testing.fetches import MemoryFetchQueue


class Echo(msgspec.Struct):
    pass


class AsyncAdapter(WebhookAdapter):
    """Verifies and parses asynchronously (as an adapter that fetches a public key would)."""

    type_name: ClassVar[str] = "async-test"
    settings_type: ClassVar[type[Echo]] = Echo
    capabilities = Capabilities(max_text_length=100, delivery_receipts=True,
                                fetch_after_notify=True)

    async def verify(self, request: web.Request, body: bytes) -> None:
        await asyncio.sleep(0)
        if request.headers.get("X-Key") != "good":
            raise InvalidSignature("bad key")

    async def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        await asyncio.sleep(0)
        kind, _, value = body.decode().partition(":")
        if kind == "receipt":
            return [DeliveryUpdate(self.instance, value, "delivered")]
        if kind == "notice":
            return [FetchNotice(value, dedupe_key=f"n-{len(value)}")]
        return [InboundMessage(channel_type=self.type_name, channel_instance=self.instance,
                               provider_message_id=value, thread_id="t", sender_handle="b",
                               text="hola")]

    async def deliver(self, reply: OutboundReply) -> str:
        return reply.reply_id


class Receipts:
    def __init__(self) -> None:
        self.applied: list[DeliveryUpdate] = []

    async def apply(self, update: DeliveryUpdate) -> bool:
        self.applied.append(update)
        return True


kept: list[tuple[bytes, str]] = []


@pytest.fixture
async def served() -> AsyncIterator[tuple[Any, Receipts, MemoryKitStore, AsyncAdapter]]:
    receipts, store = Receipts(), MemoryKitStore()
    kept.clear()
    async with aiohttp.ClientSession() as http:

        async def quarantine(instance: str, raw: bytes, error: str, **_: Any) -> str:
            kept.append((raw, error))
            return "q"

        def spawn(coro: Any, name: str) -> Any:
            raise AssertionError("no background tasks")

        adapter = AsyncAdapter("shop", Echo(), AdapterContext(
            http=http, quarantine=quarantine, spawn=spawn, deliveries=receipts,
            fetches=MemoryFetchQueue()))
        await adapter.start(store.ingest)
        app = web.Application()
        app.router.add_post("/hook", adapter.handle_webhook)
        server = TestServer(app)
        await server.start_server()
        try:
            yield (http, server), receipts, store, adapter
        finally:
            await server.close()


async def test_async_hooks_messages_and_receipts(served: Any) -> None:
    (http, server), receipts, store, _adapter = served
    url = server.make_url("/hook")
    async with http.post(url, data=b"message:m-1", headers={"X-Key": "bad"}) as r:
        assert r.status == 401
    async with http.post(url, data=b"message:m-1", headers={"X-Key": "good"}) as r:
        assert r.status == 200
        [stored] = (await r.json())["stored"]
    assert (await store.inbound(stored)) is not None
    async with http.post(url, data=b"receipt:p-9", headers={"X-Key": "good"}) as r:
        assert r.status == 200
    assert receipts.applied == [DeliveryUpdate("shop", "p-9", "delivered")]


async def test_a_receipt_the_hub_cannot_record_is_not_acknowledged(served: Any) -> None:
    (http, server), _receipts, _store, adapter = served
    adapter.context.deliveries = None
    async with http.post(server.make_url("/hook"), data=b"receipt:p-9",
                         headers={"X-Key": "good"}) as r:
        assert r.status == 503  # the provider will post it again


async def test_a_notice_naming_no_usable_resource_is_quarantined_not_a_503(
        served: Any) -> None:
    """The fetch queue refuses a resource that is too long or not printable; that is the
    provider's malformed input (400 and kept), never "try again" (a 503 the provider would
    retry for an hour and then drop)."""
    (http, server), _receipts, _store, adapter = served
    url = server.make_url("/hook")
    for bad in (b"notice:" + b"x" * 3000, b"notice:m-1\x07bell"):
        async with http.post(url, data=bad, headers={"X-Key": "good"}) as r:
            assert r.status == 400, await r.text()
            assert "no usable resource" in (await r.json())["error"]["message"]
    assert [raw for raw, _ in kept] == [b"notice:" + b"x" * 3000, b"notice:m-1\x07bell"]
    async with http.post(url, data=b"notice:m-1", headers={"X-Key": "good"}) as r:
        assert r.status == 200
    backlog = await adapter.context.fetches.backlog("shop")  # type: ignore[union-attr]
    assert backlog.queued == 1

"""Shopee adapter against the local fake (provider.py): push signature over raw bytes, push
→ fetch, the signed chat calls, token refresh with rotation, reconciliation poll with a
cursor across restarts, 429s, reply rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from channels.base import AdapterContext, ChannelAdapter, serve_webhook
from channels.errors import AuthError, RateLimited, ReplyRejected
from channels.models import FetchNotice, InboundMessage, OutboundReply
from channels.secrets import Secret
from channels.services.attachments import AttachmentStore
from channels.services.tokens import OAuthTokens, TokenStore
from channels.shopee.adapter import ShopeeChannel, ShopeeSettings
from channels.testing.fetches import MemoryFetchQueue
from channels.testing.tokens import MemoryTokenStore
from tests.channels.shopee.provider import ShopeeFake

PARTNER_ID, SHOP_ID, BUYER = 2001234, 55501, 777
KEY = "shopee-partner-key-0123456789abcdef"


class Rig:
    def __init__(self, fake: ShopeeFake, session: aiohttp.ClientSession,
                 tokens: TokenStore, public_url: str | None = None,
                 attachments: AttachmentStore | None = None) -> None:
        self.fake, self.session, self.tokens = fake, session, tokens
        self.attachments = attachments
        self.fetches = MemoryFetchQueue()
        self.quarantined: list[str] = []
        self.public_url = public_url
        self.adapter = self.make()
        self.hook_url = ""

    def make(self, **over: Any) -> ShopeeChannel:
        settings = ShopeeSettings(api_base_url=self.fake.url, partner_id=PARTNER_ID,
                                  partner_key=Secret(KEY, "test"), shop_id=SHOP_ID,
                                  region="BR", timeout_seconds=5, **over)

        async def quarantine(channel_instance: str, raw: bytes, error: str, *,
                             headers: Mapping[str, str] | None = None) -> str:
            self.quarantined.append(error)
            return "q"

        context = AdapterContext(http=self.session, quarantine=quarantine,
                                 spawn=lambda coro, name: asyncio.create_task(coro, name=name),
                                 tokens=self.tokens, fetches=self.fetches,
                                 public_url=self.public_url, attachments=self.attachments)
        return ShopeeChannel("shop", settings, context)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with ShopeeFake(partner_id=PARTNER_ID, partner_key=KEY, shop_id=SHOP_ID) as fake, \
            aiohttp.ClientSession() as session:
        tokens = MemoryTokenStore()
        await tokens.put("shop", OAuthTokens(access_token="at-0", refresh_token="rt-0",
                                             expires_at=time.time() + 4 * 3600))
        r = Rig(fake, session, tokens)
        app = web.Application()

        async def hook(request: web.Request) -> web.StreamResponse:
            return await serve_webhook(r.adapter, request)

        app.router.add_post("/webhooks/shopee/{instance}", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        r.hook_url = f"http://127.0.0.1:{port}/webhooks/shopee/shop"
        try:
            yield r
        finally:
            await runner.cleanup()


async def _no_ingest(message: InboundMessage) -> Any:
    raise AssertionError("a push is only a fetch hint: nothing is ingested from its body")


async def push(rig: Rig, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    # The webhook half only: ChannelAdapter.start without the poller (which needs the hub's
    # loops, cursors and leases; the poll itself is tested by calling ``poll``).
    await ChannelAdapter.start(rig.adapter, _no_ingest)
    async with rig.session.post(rig.hook_url, data=body, headers=headers) as resp:
        return resp.status, await resp.read()


async def test_signed_push_is_stored_as_a_fetch_notice_with_an_empty_answer(rig: Rig) -> None:
    body = rig.fake.push_body("9001", "m-1")
    status, answer = await push(rig, body, rig.fake.push_headers(rig.hook_url, body))
    assert (status, answer) == (200, b"")
    backlog = await rig.fetches.backlog("shop")
    assert backlog.queued == 1


async def test_duplicate_push_is_queued_once(rig: Rig) -> None:
    body = rig.fake.push_body("9001", "m-1")
    for _ in range(3):
        status, _ = await push(rig, body, rig.fake.push_headers(rig.hook_url, body))
        assert status == 200
    assert (await rig.fetches.backlog("shop")).queued == 1


@pytest.mark.parametrize("case", ["tampered", "wrong key", "missing", "other url"])
async def test_badly_signed_push_is_refused(rig: Rig, case: str) -> None:
    body = rig.fake.push_body("9001", "m-1")
    headers = rig.fake.push_headers(rig.hook_url, body)
    if case == "tampered":
        body = body.replace(b"9001", b"9002")
    elif case == "wrong key":
        from channels.shopee.signing import push_signature
        headers["Authorization"] = push_signature(b"other-key", rig.hook_url, body)
    elif case == "missing":
        del headers["Authorization"]
    else:
        headers = rig.fake.push_headers("https://elsewhere.example/webhooks/shopee/shop", body)
    status, _ = await push(rig, body, headers)
    assert status == 401
    assert (await rig.fetches.backlog("shop")).queued == 0


async def test_signature_uses_the_public_url_behind_a_proxy(rig: Rig) -> None:
    rig.public_url = "https://hub.example.com"
    rig.adapter = rig.make()
    body = rig.fake.push_body("9001", "m-1")
    signed_for = "https://hub.example.com/webhooks/shopee/shop"
    status, _ = await push(rig, body, rig.fake.push_headers(signed_for, body))
    assert status == 200
    status, _ = await push(rig, body, rig.fake.push_headers(rig.hook_url, body))
    assert status == 401


async def test_push_naming_another_shop_is_rejected(rig: Rig) -> None:
    body = rig.fake.push_body("9001", "m-1", shop_id=SHOP_ID + 1)
    status, _ = await push(rig, body, rig.fake.push_headers(rig.hook_url, body))
    assert status == 400
    assert (await rig.fetches.backlog("shop")).queued == 0


async def test_other_push_codes_are_acknowledged_and_ignored(rig: Rig) -> None:
    body = rig.fake.push_body("9001", "m-1", code=3)
    status, answer = await push(rig, body, rig.fake.push_headers(rig.hook_url, body))
    assert (status, answer) == (200, b"")
    assert (await rig.fetches.backlog("shop")).queued == 0


async def test_fetch_reads_buyer_messages_with_market_and_order(rig: Rig) -> None:
    rig.fake.buyer_writes("9001", BUYER, "", order_sn="240101ABC", ts=1767225600)
    mid = rig.fake.buyer_writes("9001", BUYER, "Olá, cadê meu pedido?", ts=1767225601)
    # our own reply in the conversation is skipped
    rig.fake.messages["9001"].append({"message_id": "own", "from_id": SHOP_ID, "to_id": BUYER,
                                      "conversation_id": "9001", "message_type": "text",
                                      "created_timestamp": 1767225602,
                                      "content": {"text": "Olá!"}})
    items = await rig.adapter.fetch("9001")
    assert all(isinstance(i, InboundMessage) for i in items)
    msgs = [i for i in items if isinstance(i, InboundMessage)]
    assert [m.provider_message_id for m in msgs][-1] == mid
    assert "own" not in [m.provider_message_id for m in msgs]
    last = msgs[-1]
    assert (last.thread_id, last.sender_handle, last.sent_at) == ("9001", str(BUYER),
                                                                   1767225601.0)
    assert (last.hints.market, last.hints.language, last.hints.label,
            last.hints.order_id) == ("BR", "pt", "shopee", "240101ABC")
    assert rig.fake.bad_signs == 0


async def test_expired_token_is_refreshed_and_the_old_refresh_token_is_dead(rig: Rig) -> None:
    rig.fake.buyer_writes("9001", BUYER, "oi")
    rig.fake.expire_tokens()
    assert len(await rig.adapter.fetch("9001")) == 1
    assert rig.fake.refreshes == 1
    stored = await rig.tokens.current("shop")
    assert stored.refresh_token == "rt-1"
    assert "rt-0" in rig.fake.used_refresh_tokens


async def test_two_processes_share_one_rotation(rig: Rig) -> None:
    rig.fake.buyer_writes("9001", BUYER, "oi")
    rig.fake.expire_tokens()
    other = rig.make()
    results = await asyncio.gather(rig.adapter.fetch("9001"), other.fetch("9001"))
    assert all(len(r) == 1 for r in results)
    assert rig.fake.refreshes == 1  # one refresh; the reused old token would have failed


async def test_refused_refresh_means_needs_reauth(rig: Rig) -> None:
    rig.fake.buyer_writes("9001", BUYER, "oi")
    rig.fake.expire_tokens()
    rig.fake.refresh_token = "rotated-elsewhere"
    with pytest.raises(AuthError):
        await rig.adapter.fetch("9001")
    assert (await rig.tokens.state("shop")).status == "needs_reauth"
    assert rig.fake.requests[-1] == "/api/v2/auth/access_token/get"


async def test_rate_limit_error_is_rate_limited_with_retry_after(rig: Rig) -> None:
    rig.fake.rate_limited = 5
    with pytest.raises(RateLimited) as err:
        await rig.adapter.fetch("9001")
    assert err.value.retry_after == 1.0
    assert "echo of data" not in str(err.value)


async def test_poll_cursor_across_restarts_no_loss_no_duplicates(rig: Rig) -> None:
    base = int(time.time()) - 100
    for n in range(7):
        rig.fake.buyer_writes(f"{9000 + n}", BUYER + n, f"msg {n}", ts=base + n // 2)
    items, cursor = await rig.adapter.poll("default", None)
    assert len(items) == 7
    again, cursor2 = await rig.make(page_size=2).poll("default", cursor)  # a "restart"
    assert again == [] and cursor2 == cursor
    rig.fake.buyer_writes("9003", BUYER + 3, "later", ts=base + 50)
    rig.fake.buyer_writes("9100", BUYER + 9, "new one", ts=base + 50)
    items, _ = await rig.make(page_size=2).poll("default", cursor)
    new = {m.text for m in items if isinstance(m, InboundMessage)}
    assert {"later", "new one"} <= new


async def test_reply_goes_out_signed(rig: Rig) -> None:
    reply = OutboundReply(reply_id="r1", conversation_id="c", channel_type="shopee",
                          channel_instance="shop", thread_id="9001",
                          recipient_handle=str(BUYER), text="Obrigado!",
                          last_inbound_at=time.time())
    sent = await rig.adapter.send(reply)
    assert sent.startswith("s-")
    assert rig.fake.sent == [{"to_id": BUYER, "message_type": "text",
                              "content": {"text": "Obrigado!"}}]


async def test_over_length_reply_refused_before_any_request(rig: Rig) -> None:
    reply = OutboundReply(reply_id="r1", conversation_id="c", channel_type="shopee",
                          channel_instance="shop", thread_id="9001",
                          recipient_handle=str(BUYER), text="x" * 601,
                          last_inbound_at=time.time())
    with pytest.raises(ReplyRejected):
        await rig.adapter.send(reply)
    assert rig.fake.requests == []


def test_fetch_notice_names_the_conversation() -> None:
    assert FetchNotice(resource="9001", dedupe_key="m:1").resource == "9001"


async def test_429_storm_keeps_the_cursor_and_recovers(rig: Rig) -> None:
    rig.fake.buyer_writes("9001", BUYER, "oi", ts=int(time.time()) - 10)
    _, cursor = await rig.adapter.poll("default", None)
    rig.fake.buyer_writes("9002", BUYER + 1, "depois", ts=int(time.time()))
    rig.fake.rate_limited = 20
    for _ in range(3):
        with pytest.raises(RateLimited):
            await rig.adapter.poll("default", cursor)
    rig.fake.rate_limited = 0
    items, _ = await rig.adapter.poll("default", cursor)
    assert [m.text for m in items if isinstance(m, InboundMessage)] == ["depois"]

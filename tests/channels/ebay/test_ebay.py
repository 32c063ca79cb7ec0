"""eBay against its local fake (``provider.py``): signed notifications and the fetch they lead
to, another seller's resources, the reconciliation poll across restarts and pages, tokens that
die mid-run, 429 storms and the shared limiter, and the reply rules checked before sending."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from channels.base import AdapterContext
from channels.ebay.adapter import EBAY_SITES, EbayChannel, html_in
from channels.ebay.soap import UnsafeXml, parse_xml, read_notification
from channels.errors import (
    AuthError,
    InvalidSignature,
    MalformedPayload,
    PermanentError,
    RateLimited,
    ReplyRejected,
    RetryableError,
)
from channels.models import FetchNotice, InboundMessage, OutboundReply
from channels.polling import Unusable
from channels.services.tokens import TokenStore
from channels.testing.fetches import MemoryFetchQueue
from channels.testing.limits import MemoryLimiter
from channels.testing.tokens import MemoryTokenStore
from channels.testing.webhooks import MemoryQuarantine
from tests.channels.ebay.provider import BUYER, SCOPE, SELLER, EbayFake, iso
from tests.channels.ebay.test_conformance import settings

REQ = cast(web.Request, None)
ITEM = "110164967546"


@pytest.fixture
async def fake() -> AsyncIterator[EbayFake]:
    async with EbayFake() as running:
        yield running


@contextlib.asynccontextmanager
async def adapter(fake: EbayFake, *, tokens: TokenStore | None = None, load: bool = True,
                  limiter: Any = None, **extra: Any) -> AsyncIterator[EbayChannel]:
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        return task

    store = tokens if tokens is not None else MemoryTokenStore()
    if load:
        await store.put("shop", fake.grant())
    async with aiohttp.ClientSession() as http:
        context = AdapterContext(http=http, quarantine=MemoryQuarantine(), spawn=spawn,
                                 tokens=store, fetches=MemoryFetchQueue(), limiter=limiter)
        yield EbayChannel("shop", settings(fake, **extra), context)
        for task in tasks:
            task.cancel()


def messages(items: Any) -> list[InboundMessage]:
    return [m for m in items if isinstance(m, InboundMessage)]


def reply(text: str, *, inbound: float | None = None, thread: str = "C-1") -> OutboundReply:
    return OutboundReply(reply_id=f"r-{time.time_ns()}", conversation_id="c-1",
                         channel_type="ebay", channel_instance="shop", thread_id=thread,
                         recipient_handle=BUYER, text=text,
                         last_inbound_at=time.time() - 3600 if inbound is None else inbound)


def our_reply(fake: EbayFake, cid: str, text: str, at: float) -> None:
    fake.add(cid, {"messageId": f"s-{at}", "createdDate": iso(at), "messageBody": text,
                   "readStatus": True, "recipientUsername": BUYER, "senderUsername": SELLER,
                   "subject": "re"})


# -- notifications, then the fetch ------------------------------------------------------------

async def test_a_signed_notification_is_a_hint_and_the_fetch_stores_the_conversation(
        fake: EbayFake) -> None:
    now = time.time()
    first = fake.buyer_writes("C-1", "Hi, where is my parcel?", at=now - 120)
    our_reply(fake, "C-1", "Shipped yesterday", now - 60)
    second = fake.buyer_writes("C-1", "Tracking number please", at=now - 30)
    body = fake.soap_notification(BUYER, ITEM, "5882110", text="forged text is never stored")
    async with adapter(fake) as ebay:
        ebay.verify(REQ, body)
        [notice] = ebay.parse(REQ, body)
        assert isinstance(notice, FetchNotice)
        assert notice.resource == f"{BUYER}|{ITEM}"
        assert notice.dedupe_key.startswith("5882110@")
        stored = messages(await ebay.fetch(notice.resource))
    assert [m.provider_message_id for m in stored] == [first["messageId"],
                                                       second["messageId"]]
    assert [m.text for m in stored] == ["Hi, where is my parcel?", "Tracking number please"]
    one = stored[0]
    assert (one.thread_id, one.sender_handle, one.sender_name) == ("C-1", BUYER, BUYER)
    assert one.sent_at == pytest.approx(now - 120, abs=0.01)
    assert (one.hints.market, one.hints.language, one.hints.marketplace_site) == \
        ("GB", "en", "EBAY_GB")
    assert (one.hints.label, one.hints.order_id) == ("ebay", f"listing:{ITEM}")
    lookups = [q for m, p, q in fake.requests if p.endswith("/conversation")]
    assert lookups == [{"conversation_type": "FROM_MEMBERS", "other_party_username": BUYER,
                        "reference_id": ITEM, "reference_type": "LISTING", "limit": "5",
                        "offset": "0"}]


async def test_other_events_are_acknowledged_and_ignored(fake: EbayFake) -> None:
    async with adapter(fake) as ebay:
        assert ebay.parse(REQ, fake.soap_notification(event="MyMessagesAlert")) == []


@pytest.mark.parametrize(("name", "claims"), [
    ("wrong signature", {"signature": "dw6CaxfcizXKA/XR3PvigQ=="}),
    ("signed with another CertID", {"cert_id": "PRD-someone-else"}),
    ("missing signature", {"signature": ""}),
    # Offsets, not stamps: a stamp taken at collection is minutes stale when the test runs.
    ("eleven minutes old", {"timestamp": -660}),
    ("eleven minutes ahead", {"timestamp": +660}),
    ("not a time", {"timestamp": "yesterday"}),
])
async def test_forged_badly_signed_or_stale_notifications_are_refused(
        fake: EbayFake, name: str, claims: dict[str, Any]) -> None:
    async with adapter(fake) as ebay:
        ebay.verify(REQ, fake.soap_notification())  # the genuine one passes
        if isinstance(claims.get("timestamp"), int):
            claims = {"timestamp": iso(time.time() + claims["timestamp"])}
        with pytest.raises(InvalidSignature):
            ebay.verify(REQ, fake.soap_notification(**claims))


async def test_the_replay_window_is_a_setting(fake: EbayFake) -> None:
    old = fake.soap_notification(timestamp=iso(time.time() - 1200))
    async with adapter(fake, notification_max_age_seconds=1800) as ebay:
        ebay.verify(REQ, old)
    async with adapter(fake) as ebay:
        with pytest.raises(InvalidSignature, match="600 s"):
            ebay.verify(REQ, old)


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
    b'"&lol;&lol;&lol;&lol;">]><soapenv:Envelope>&lol2;</soapenv:Envelope>',
    b'<!doctype x SYSTEM "file:///etc/passwd"><x/>',
    # UTF-16 hides the bytes from the raw check: expat's doctype handler refuses it.
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'
    .encode("utf-16"),
    b"<a>" * 40 + b"</a>" * 40,
    b"<x>" + b"y" * (300 * 1024) + b"</x>",
])
def test_the_soap_parser_refuses_entities_depth_and_size(body: bytes) -> None:
    with pytest.raises(UnsafeXml):
        parse_xml(body)


def test_the_soap_parser_reads_the_notification_fields(fake: EbayFake) -> None:
    note = read_notification(fake.soap_notification(BUYER, ITEM, "42"))
    assert (note.event, note.recipient, note.sender, note.item_id, note.message_id) == \
        ("MyMessagesM2MMessage", SELLER, BUYER, ITEM, "42")
    assert note.signature and note.timestamp


async def test_a_notification_for_another_seller_is_refused(fake: EbayFake) -> None:
    async with adapter(fake) as ebay:
        with pytest.raises(MalformedPayload, match="another seller"):
            ebay.parse(REQ, fake.soap_notification(recipient="someone_else"))


async def test_a_conversation_of_another_seller_is_rejected_and_nothing_stored(
        fake: EbayFake) -> None:
    """A notification that names a buyer and a listing of another seller: the lookup (here on
    an API that wrongly serves other sellers' conversations) finds one that is not ours."""
    fake.leak_foreign = True
    fake.buyer_writes("C-9", "a message to someone else", owner="other_seller")
    async with adapter(fake) as ebay:
        [notice] = ebay.parse(REQ, fake.soap_notification(BUYER, ITEM))
        assert isinstance(notice, FetchNotice)
        with pytest.raises(PermanentError, match="not seller shop_seller_uk's"):
            await ebay.fetch(notice.resource)
        fake.leak_foreign = False  # the real API: not listed for us at all
        with pytest.raises(RetryableError, match="listed yet"):
            await ebay.fetch(notice.resource)


async def test_a_resource_that_is_not_a_buyer_and_listing_is_refused(fake: EbayFake) -> None:
    async with adapter(fake) as ebay:
        for bad in ("../x|1", "buyer|12ab", "a b|1"):
            with pytest.raises(PermanentError):
                await ebay.fetch(bad)
    assert fake.requests == []


# -- reconciliation ------------------------------------------------------------------------

async def test_the_poll_pages_and_resumes_across_restarts_without_loss_or_duplicate(
        fake: EbayFake) -> None:
    now = time.time()
    for n in range(7):  # seven conversations: three pages of three
        fake.buyer_writes(f"C-{n}", f"first {n}", at=now - 500 + n)
    our_reply(fake, "C-0", "our answer is not inbound", now - 400)
    fake.buyer_writes("C-old", "from last year", at=now - 400 * 86400)
    async with adapter(fake, page_limit=3) as ebay:
        items, cursor = await ebay.poll("default", None)
        assert [m.text for m in messages(items)] == [f"first {n}" for n in range(7)]
        offsets = [q["offset"] for _, p, q in fake.requests if p.endswith("/conversation")]
        assert offsets == ["0", "3", "6"]
        again, same = await ebay.poll("default", cursor)
        assert again == [] and same == cursor
    # A restart: a new adapter, the saved cursor; meanwhile two buyers wrote.
    fake.buyer_writes("C-2", "second 2", at=now - 10)
    fake.buyer_writes("C-new", "a new conversation", at=now - 5)
    async with adapter(fake, page_limit=3) as restarted:
        items, cursor = await restarted.poll("default", cursor)
        assert [m.text for m in messages(items)] == ["second 2", "a new conversation"]
        items, _ = await restarted.poll("default", cursor)
        assert items == []


async def test_the_poll_keeps_another_sellers_conversation_out_and_moves_on(
        fake: EbayFake) -> None:
    fake.leak_foreign = True
    fake.buyer_writes("C-9", "to someone else", owner="other_seller", at=time.time() - 90)
    fake.buyer_writes("C-1", "to us", at=time.time() - 60)
    async with adapter(fake) as ebay:
        items, cursor = await ebay.poll("default", None)
        assert [m.text for m in messages(items)] == ["to us"]
        [refused] = [i for i in items if isinstance(i, Unusable)]
        assert refused.raw == b"ebay conversation C-9" and "not seller" in refused.reason
        assert b"someone else" not in refused.raw
        assert (await ebay.poll("default", cursor))[0] == []


async def test_a_large_backfill_is_read_over_several_polls_oldest_first(
        fake: EbayFake) -> None:
    now = time.time()
    for n in range(25):
        fake.buyer_writes(f"C-{n:02d}", f"m {n}", at=now - 1000 + n)
    async with adapter(fake) as ebay:
        first, cursor = await ebay.poll("default", None)
        assert [m.text for m in messages(first)] == [f"m {n}" for n in range(20)]
        second, cursor = await ebay.poll("default", cursor)
        assert [m.text for m in messages(second)] == [f"m {n}" for n in range(20, 25)]
        assert (await ebay.poll("default", cursor))[0] == []


async def test_a_poll_cursor_survives_a_message_at_the_same_instant(fake: EbayFake) -> None:
    at = time.time() - 60
    fake.buyer_writes("C-1", "one", at=at, message_id="m-1")
    async with adapter(fake) as ebay:
        items, cursor = await ebay.poll("default", None)
        assert [m.text for m in messages(items)] == ["one"]
        fake.buyer_writes("C-1", "two, same millisecond", at=at, message_id="m-2")
        items, cursor = await ebay.poll("default", cursor)
        assert [m.text for m in messages(items)] == ["two, same millisecond"]
        assert (await ebay.poll("default", cursor))[0] == []


# -- tokens, limits ------------------------------------------------------------------------

async def test_a_token_that_dies_mid_run_is_refreshed_once_with_its_scope(
        fake: EbayFake) -> None:
    fake.buyer_writes("C-1", "hello", at=time.time() - 60)
    tokens = MemoryTokenStore()
    granted = fake.grant()
    await tokens.put("shop", granted)
    async with adapter(fake, tokens=tokens, load=False) as ebay:
        assert messages(await ebay.fetch(f"{BUYER}|{ITEM}"))
        fake.revoke_access()  # expired at eBay before our clock says so
        results = await asyncio.gather(*(ebay.fetch(f"{BUYER}|{ITEM}") for _ in range(3)))
        assert all(messages(r) for r in results)
        assert await ebay.send(reply("Tracking: 1Z999"))
    assert fake.refresh_calls == 1
    stored = await tokens.get("shop")
    assert stored is not None
    # eBay does not rotate the refresh token: the old one is kept, with its scope.
    assert (stored.refresh_token, stored.scope) == (granted.refresh_token, SCOPE)
    assert stored.access_token == fake.newest_access_token() != granted.access_token


async def test_a_429_storm_is_rate_limited_with_retry_after_not_lost(fake: EbayFake) -> None:
    fake.calls_per_minute = 4
    for n in range(6):
        fake.buyer_writes(f"C-{n}", f"m {n}", buyer=f"buyer{n}", at=time.time() - 60 + n)
    async with adapter(fake) as ebay:
        outcomes = await asyncio.gather(*(ebay.fetch(f"buyer{n}|{ITEM}") for n in range(6)),
                                        return_exceptions=True)
        limited = [o for o in outcomes if isinstance(o, RateLimited)]
        assert limited, "the fake's limit was never hit"
        assert all(o.retry_after and o.retry_after > 0 for o in limited)
        assert all(isinstance(o, RateLimited | list) for o in outcomes), outcomes
        with pytest.raises(RateLimited) as info:
            await ebay.send(reply("hello"))
        assert info.value.retry_after and info.value.retry_after > 0
    assert fake.sent == []


async def test_reads_wait_their_turn_in_the_shared_limiter(fake: EbayFake) -> None:
    fake.buyer_writes("C-1", "hello", at=time.time() - 60)
    limiter = MemoryLimiter()
    async with adapter(fake, limiter=limiter, calls_per_minute=6) as ebay:
        assert ebay.read_limits == ebay.capabilities.rate_limits  # one bucket, reads and sends
        with pytest.raises(RateLimited) as info:
            for _ in range(10):
                await ebay.fetch(f"{BUYER}|{ITEM}")
        assert info.value.retry_after and info.value.retry_after > 1
    # A burst of five, then the limiter stopped us before eBay had to.
    assert len(fake.requests) == 5


# -- reply rules ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "why"), [
    ("x" * 2001, "2001 characters; ebay allows 2000"),
    ("Thanks! <b>Shipped</b> today", "HTML"),
    ('See <a href="https://example.com">here</a>', "HTML"),
    ("line one<br/>line two", "HTML"),
    ("<!-- hidden -->", "HTML"),
])
async def test_over_length_and_html_replies_are_refused_before_sending(
        fake: EbayFake, text: str, why: str) -> None:
    fake.buyer_writes("C-1", "hello", at=time.time() - 60)
    async with adapter(fake) as ebay:
        with pytest.raises(ReplyRejected, match=why):
            await ebay.send(reply(text))
        draft = ebay.check_draft(reply(text), now=time.time())
        assert not draft.fits and draft.problem and why in draft.problem
    assert fake.sent == [] and fake.requests == []


async def test_a_reply_outside_the_90_day_window_is_refused_before_sending(
        fake: EbayFake) -> None:
    fake.buyer_writes("C-1", "hello", at=time.time() - 91 * 86400)
    async with adapter(fake) as ebay:
        with pytest.raises(ReplyRejected, match="90 days"):
            await ebay.send(reply("Sorry for the delay", inbound=time.time() - 91 * 86400))
        assert ebay.reply_window(time.time() - 89 * 86400, time.time()).open
    assert fake.sent == [] and fake.requests == []


async def test_plain_text_with_angle_brackets_and_exactly_2000_characters_goes(
        fake: EbayFake) -> None:
    fake.buyer_writes("C-1", "hello", at=time.time() - 60)
    async with adapter(fake) as ebay:
        assert html_in("Arrives in < 5 days, 3 > 2, <3") is None
        assert await ebay.send(reply("Arrives in < 5 days, 3 > 2"))
        assert await ebay.send(reply("y" * 2000))
    assert [s["conversationId"] for s in fake.sent] == ["C-1", "C-1"]
    assert fake.sent[0]["messageText"] == "Arrives in < 5 days, 3 > 2"


async def test_error_bodies_are_reduced_to_their_error_id(fake: EbayFake) -> None:
    """eBay's ``message`` may echo what was sent (the buyer's words): never repeated."""
    body = b'{"errors": [{"errorId": 355099, "message": "echo: my address is 1 Main St"}]}'
    async with adapter(fake) as ebay:
        refused = ebay.api_error(400, body, {})
        forbidden = ebay.api_error(403, body, {})
    assert type(refused) is PermanentError and "355099" in str(refused)
    assert isinstance(forbidden, AuthError) and "355099" in str(forbidden)
    assert "Main St" not in str(refused) + str(forbidden)


def test_sites_map_to_market_and_language(fake: EbayFake) -> None:
    assert (EBAY_SITES["EBAY_DE"].country, EBAY_SITES["EBAY_DE"].language) == ("DE", "de")
    assert (EBAY_SITES["EBAY_ES"].country, EBAY_SITES["EBAY_ES"].language) == ("ES", "es")
    assert (EBAY_SITES["EBAY_FRCA"].country, EBAY_SITES["EBAY_FRCA"].language) == ("CA", "fr")
    with pytest.raises(ValueError, match="not an eBay marketplace id"):
        settings(fake, site="EBAY_XX")

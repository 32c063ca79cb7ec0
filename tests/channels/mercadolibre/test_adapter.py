"""Mercado Libre against a local fake of its API (``provider.py``): notifications, fetch,
reconciliation, replies and the marketplace's rules."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import cast

import msgspec
import pytest
from aiohttp import web

from channels.errors import AuthError, MalformedPayload, PermanentError, ReplyRejected
from channels.models import FetchNotice, InboundMessage, OutboundReply
from channels.testing.tokens import MemoryTokenStore
from tests.channels.mercadolibre.harness import adapter, load_tokens
from tests.channels.mercadolibre.provider import BUYER, SELLER, MercadoLibreFake

PACK = "2000000089077943"
REQ = cast(web.Request, None)


@pytest.fixture
async def fake() -> AsyncIterator[MercadoLibreFake]:
    async with MercadoLibreFake() as running:
        yield running


def reply(text: str, *, thread: str = PACK, inbound: float | None = 1.0) -> OutboundReply:
    return OutboundReply(reply_id="r-1", conversation_id="c-1", channel_type="mercadolibre",
                         channel_instance="shop", thread_id=thread, recipient_handle=BUYER,
                         text=text, last_inbound_at=inbound)


def messages(items: object) -> list[InboundMessage]:
    return [m for m in items if isinstance(m, InboundMessage)]  # type: ignore[attr-defined]


async def test_notification_is_a_fetch_notice_deduplicated_by_id_and_resource(
        fake: MercadoLibreFake) -> None:
    async with adapter(fake) as meli:
        body = fake.notification("3f6da1e35ac84f70a24af7360d24c7bc", 7, text="forged")
        [notice] = meli.parse(REQ, body)
        assert notice == FetchNotice(resource="3f6da1e35ac84f70a24af7360d24c7bc",
                                     dedupe_key="n7-3f6da1e3:3f6da1e35ac84f70a24af7360d24c7bc")
        assert meli.parse(REQ, fake.notification("x1", topic="orders_v2")) == []
        for bad, why in [(fake.notification("x1", user_id=1), "another seller"),
                         (fake.notification("x1", application_id=5), "another application"),
                         (fake.notification("../../users/1"), "not a message id")]:
            with pytest.raises(MalformedPayload, match=why):
                meli.parse(REQ, bad)


async def test_fetch_reads_the_whole_pack_without_marking_it_read(
        fake: MercadoLibreFake) -> None:
    first = fake.buyer_message(PACK, 1, "Olá, cadê meu pedido?")
    fake.publish(PACK, {**fake.buyer_message(PACK, 2, "obrigado"),
                        "from": {"user_id": SELLER}, "to": {"user_id": BUYER}})
    third = fake.buyer_message(PACK, 3, "Ainda não chegou",
                               message_moderation={"status": "rejected",
                                                   "reason": "PERSONAL_DATA"})
    async with adapter(fake) as meli:
        stored = messages(await meli.fetch(first["id"]))
    assert [m.provider_message_id for m in stored] == [first["id"], third["id"]]
    one = stored[0]
    assert (one.thread_id, one.sender_handle, one.sender_name) == (PACK, BUYER, "COMPRADOR_ANA")
    assert (one.hints.market, one.hints.language, one.hints.marketplace_site,
            one.hints.order_id, one.hints.label) == ("BR", "pt", "MLB", PACK, "mercadolibre")
    assert one.moderation is None and stored[1].moderation == "rejected: PERSONAL_DATA"
    assert fake.marked_read == [], "a read marked the buyer's messages read"
    assert sum(1 for _, path, _ in fake.requests if path.startswith("/users/")) == 1


async def test_a_message_of_another_seller_is_refused(fake: MercadoLibreFake) -> None:
    other = fake.buyer_message(PACK, 1, to="999")
    async with adapter(fake) as meli:
        with pytest.raises(PermanentError, match="does not involve seller"):
            await meli.fetch(other["id"])


async def test_poll_cursor_across_restarts_gives_no_loss_and_no_duplicates(
        fake: MercadoLibreFake) -> None:
    for n in range(1, 121):  # three pages of 50 on one pack, one on another
        fake.buyer_message(PACK, n)
    fake.buyer_message("2000000000000001", 500, site="MLM")
    async with adapter(fake) as meli:
        items, cursor = await meli.poll("default", None)
    assert len(items) == 121
    async with adapter(fake) as restarted:
        again, cursor2 = await restarted.poll("default", cursor)
        assert again == []
        new = fake.buyer_message(PACK, 200)
        later, _ = await restarted.poll("default", cursor2)
    assert [m.provider_message_id for m in messages(later)] == [new["id"]]
    assert fake.marked_read == []


async def test_reply_goes_to_the_country_agent(fake: MercadoLibreFake) -> None:
    first = fake.buyer_message(PACK, 1)
    async with adapter(fake) as meli:
        await meli.fetch(first["id"])
        sent_id = await meli.send(reply("Olá! Já foi enviado, código BR123."))
    [sent] = fake.sent
    assert sent == {"from": {"user_id": SELLER}, "to": {"user_id": "3037675074"},
                    "text": "Olá! Já foi enviado, código BR123.", "pack": PACK}
    assert sent_id.startswith("s")


async def test_other_sites_reply_to_the_buyer(fake: MercadoLibreFake) -> None:
    first = fake.buyer_message(PACK, 1, site="MPE")
    async with adapter(fake) as meli:
        [m] = messages(await meli.fetch(first["id"]))
        assert m.hints.market == "PE"
        await meli.send(reply("Hola"))
    assert fake.sent[0]["to"] == {"user_id": BUYER}


async def test_over_length_wrong_charset_and_seller_first_are_refused_before_sending(
        fake: MercadoLibreFake) -> None:
    async with adapter(fake) as meli:
        before = len(fake.requests)
        with pytest.raises(ReplyRejected, match="351 characters"):
            await meli.send(reply("a" * 351))
        with pytest.raises(ReplyRejected, match=r"U\+1F600"):
            await meli.send(reply("Obrigado 😀"))
        with pytest.raises(ReplyRejected, match="cannot start"):
            await meli.send(reply("Oi", inbound=None))
        check = meli.check_draft(reply("Olá — 😀"), now=time.time())
        assert not check.fits and check.max_length == 350 and "U+2014" in (check.problem or "")
        assert meli.check_draft(reply("Olá, ação!"), now=time.time()).fits
        assert len(fake.requests) == before, "a refused reply reached Mercado Libre"


@pytest.mark.parametrize("substatus", ["blocked_by_buyer", "bloqued_by_mediation"])
async def test_blocked_conversation_is_shown_and_replies_refused(
        fake: MercadoLibreFake, substatus: str) -> None:
    first = fake.buyer_message(PACK, 1)
    fake.status[PACK] = {"status": "blocked", "substatus": substatus}
    async with adapter(fake) as meli:
        [m] = messages(await meli.fetch(first["id"]))
        assert m.hints.replies_disabled and substatus in m.hints.replies_disabled
        before = len(fake.requests)
        with pytest.raises(ReplyRejected, match=substatus):
            await meli.send(reply("Olá"))
        assert len(fake.requests) == before
    # A process that never read the pack learns it from the 403, by code only.
    async with adapter(fake) as other:
        with pytest.raises(ReplyRejected) as refused:
            await other.send(reply("Olá"))
    assert "blocked_conversation_send_message_forbidden" in str(refused.value)
    assert "echo" not in str(refused.value)
    assert fake.sent == []


async def test_token_expiry_mid_run_and_rotation_under_two_processes(
        fake: MercadoLibreFake) -> None:
    first = fake.buyer_message(PACK, 1)
    tokens = MemoryTokenStore()
    await load_tokens(fake, tokens)
    async with adapter(fake, tokens=tokens, load=False) as one, \
            adapter(fake, tokens=tokens, load=False) as two:
        await one.fetch(first["id"])
        fake.revoke_access()  # expired mid-run
        import asyncio
        results = await asyncio.gather(one.fetch(first["id"]), two.fetch(first["id"]))
        assert all(len(r) == 1 for r in results)
    assert fake.refresh_refused == 0, "a spent refresh token was used again"


async def test_refused_refresh_needs_reauth(fake: MercadoLibreFake) -> None:
    first = fake.buyer_message(PACK, 1)
    tokens = MemoryTokenStore()
    await load_tokens(fake, tokens)
    fake.refresh_live.clear()
    fake.revoke_access()
    async with adapter(fake, tokens=tokens, load=False) as meli:
        with pytest.raises(AuthError):
            await meli.fetch(first["id"])
    assert (await tokens.state("shop")).status == "needs_reauth"


async def test_429_is_rate_limited_with_retry_after(fake: MercadoLibreFake) -> None:
    from channels.errors import RateLimited
    first = fake.buyer_message(PACK, 1)
    fake.failures.append((429, "too_many_requests", {"Retry-After": "7"}))
    async with adapter(fake) as meli:
        with pytest.raises(RateLimited) as limited:
            await meli.fetch(first["id"])
        assert limited.value.retry_after == 7
        assert len(messages(await meli.fetch(first["id"]))) == 1


async def test_attachments_are_downloaded_and_uploaded(fake: MercadoLibreFake) -> None:
    fake.attachments["f1.png"] = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    first = fake.buyer_message(PACK, 1, message_attachments=[
        {"filename": "f1.png", "original_filename": "foto.png", "type": "image/png",
         "size": 72}])
    async with adapter(fake) as meli:
        [m] = messages(await meli.fetch(first["id"]))
        [att] = m.attachments
        assert att.storage_ref and att.content_type == "image/png"
        await meli.send(msgspec.structs.replace(reply("Veja"), attachments=(att,)))
    assert len(fake.sent[0]["attachments"]) == 1
    assert fake.sent[0]["attachments"][0] in fake.attachments
    async with adapter(fake, attachments=False) as bare:
        [m] = messages(await bare.fetch(first["id"]))
        assert m.attachments[0].refused and m.attachments[0].storage_ref is None


async def test_the_read_budget_follows_the_applications_quota(fake: MercadoLibreFake) -> None:
    """500 GETs a minute is Mercado Libre's default quota; an app granted more sets
    ``reads_per_minute`` and the shared limiter paces reads by it."""
    from channels.services.limits import RateLimit

    async with adapter(fake) as default, adapter(fake, reads_per_minute=6000) as larger:
        assert default.read_limits == (RateLimit.within(500, 60, burst=10),)
        assert larger.read_limits == (RateLimit.within(6000, 60, burst=10),)

"""Lazada against a local fake of the IM Open API (``provider.py``): signing, the poll's cursor,
push hints, another seller's sessions, tokens, 429 storms, moderation and the reply rules."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import msgspec
import pytest
from aiohttp import web

from channels.errors import (
    AuthError,
    MalformedPayload,
    PermanentError,
    RateLimited,
    ReplyRejected,
)
from channels.lazada.adapter import (
    COUNTRIES,
    MAX_TEXT_LENGTH,
    LazadaChannel,
    LazadaSettings,
    country_base_url,
)
from channels.lazada.signing import sign, sign_base, signed_params
from channels.models import Attachment, FetchNotice, InboundMessage, OutboundReply, TemplateRef
from channels.polling import Unusable
from channels.secrets import Secret
from channels.testing.tokens import MemoryTokenStore
from channels.windows import WindowClosed
from tests.channels.lazada.harness import adapter, load_tokens
from tests.channels.lazada.provider import (
    APP_KEY,
    APP_SECRET,
    BUYER,
    BUYER_NAME,
    OTHER_SELLER,
    LazadaFake,
)

REQ = cast(web.Request, None)
SESSION = "1000000042"


@pytest.fixture
async def fake() -> AsyncIterator[LazadaFake]:
    async with LazadaFake() as running:
        yield running


def messages(items: object) -> list[InboundMessage]:
    return [m for m in items if isinstance(m, InboundMessage)]  # type: ignore[attr-defined]


def reply(text: str, *, thread: str = SESSION, inbound: float | None = 1.0,
          **extra: object) -> OutboundReply:
    base = OutboundReply(reply_id="r-1", conversation_id="c-1", channel_type="lazada",
                         channel_instance="shop", thread_id=thread, recipient_handle=BUYER,
                         text=text, last_inbound_at=inbound)
    return msgspec.structs.replace(base, **extra) if extra else base


# -- signing -------------------------------------------------------------------------------------


def test_the_sign_of_a_known_call_computed_by_hand() -> None:
    """CHANNELS.md §6.6: upper(hex(HMAC-SHA256(secret, path + sorted key+value pairs))). The
    string below is written out by hand, in sorted key order; the hex was computed once from
    it and is pinned."""
    params = {"session_id": "100", "template_id": "1", "txt": "Hello", "app_key": "123456",
              "timestamp": "1700000000000", "sign_method": "sha256", "access_token": "tok-1"}
    by_hand = ("/im/message/send" "access_tokentok-1" "app_key123456" "session_id100"
               "sign_methodsha256" "template_id1" "timestamp1700000000000" "txtHello")
    assert sign_base("/im/message/send", params) == by_hand.encode()
    assert sign(b"helloworld", "/im/message/send", params) == \
        "39C839E3FC9FEB93681DC936D677383F7975D4B019C5F1CC30A4754E05728D30"
    # ``sign`` itself is never part of what is signed; the system parameters are added.
    again = signed_params(b"helloworld", "/im/message/send",
                          {"session_id": "100", "template_id": "1", "txt": "Hello"},
                          app_key="123456", timestamp_ms=1700000000000, access_token="tok-1")
    assert again["sign"] == sign(b"helloworld", "/im/message/send", again)
    assert again["sign"] == "39C839E3FC9FEB93681DC936D677383F7975D4B019C5F1CC30A4754E05728D30"


async def test_the_fake_refuses_missing_and_wrong_signatures(fake: LazadaFake) -> None:
    token = fake.grant().access_token
    good = signed_params(APP_SECRET.encode(), "/im/session/get", {"session_id": SESSION},
                         app_key=APP_KEY, timestamp_ms=int(time.time() * 1000),
                         access_token=token)
    fake.add_session(SESSION)
    async with aiohttp.ClientSession() as http:
        async def post(params: dict[str, str]) -> dict[str, object]:
            async with http.post(fake.url + "/im/session/get",
                                 data=urllib.parse.urlencode(params),
                                 headers={"Content-Type":
                                          "application/x-www-form-urlencoded"}) as resp:
                return dict(await resp.json())
        assert (await post(good))["code"] == "0"
        assert (await post({k: v for k, v in good.items() if k != "sign"}))["code"] == \
            "IncompleteSignature"
        refused = await post({**good, "session_id": "1000000043"})  # signed for other values
        assert refused["code"] == "InvalidSignature"
        assert set(refused) == {"code", "type", "message", "request_id"}
    # The adapter with the wrong secret: refused, and an operator's problem (not retried).
    async with adapter(fake) as good_one:
        wrong = msgspec.structs.replace(good_one.settings, app_secret=Secret("nope", "test"))
        bad = LazadaChannel("shop", wrong, good_one.context)
        with pytest.raises(AuthError, match="InvalidSignature"):
            await bad.fetch(SESSION)
    assert fake.bad_signatures == 3


# -- settings and markets ------------------------------------------------------------------------


def test_country_picks_host_market_and_language() -> None:
    plain = LazadaSettings(app_key=APP_KEY, app_secret=Secret("x", "t"), country="TH",
                           seller_id="1")
    assert plain.base_url == "https://api.lazada.co.th/rest" == country_base_url("TH")
    assert {c: (COUNTRIES[c].market.country, COUNTRIES[c].market.language)
            for c in COUNTRIES} == {"MY": ("MY", "ms"), "SG": ("SG", "en"), "TH": ("TH", "th"),
                                    "PH": ("PH", "en"), "VN": ("VN", "vi"), "ID": ("ID", "id")}
    assert COUNTRIES["MY"].also == ("en",) and COUNTRIES["PH"].also == ("fil",)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"app_key": APP_KEY, "app_secret": "x", "country": "JP",
                         "seller_id": "1"}, LazadaSettings,
                        dec_hook=lambda t, v: Secret(v, "t"))
    with pytest.raises(ValueError, match="https"):
        LazadaSettings(app_key=APP_KEY, app_secret=Secret("x", "t"), country="MY",
                       seller_id="1", api_base_url="http://lazada.example/rest")


# -- inbound: poll -------------------------------------------------------------------------------


async def test_poll_across_restarts_gives_no_loss_and_no_duplicates(fake: LazadaFake) -> None:
    for n in range(1, 46):  # three pages of 20 in one session
        fake.buyer_message(SESSION, n, f"hello {n}")
    fake.seller_message(SESSION, 46)
    for s in range(30):  # two pages of sessions
        fake.buyer_message(f"20000000{s:02d}", 100 + s, "another chat")
    async with adapter(fake) as lazada:
        items, cursor = await lazada.poll("default", None)
    got = messages(items)
    assert len(got) == 75 and len({m.provider_message_id for m in got}) == 75
    assert all(m.sender_handle == BUYER for m in got)
    async with adapter(fake) as restarted:
        again, cursor2 = await restarted.poll("default", cursor)
        assert again == [] and cursor2 == cursor
        new = fake.buyer_message(SESSION, 200, "still there?")
        tied = fake.buyer_message("2000000099", 201, "same ms", send_time=new["send_time"])
        later, cursor3 = await restarted.poll("default", cursor2)
    assert sorted(m.provider_message_id for m in messages(later)) == \
        sorted([new["message_id"], tied["message_id"]])
    async with adapter(fake) as third:
        assert (await third.poll("default", cursor3))[0] == []
    sizes = {p.get("page_size") for path, p in fake.requests if path.startswith("/im/")}
    assert sizes == {"20"}, "a page over Lazada's 20 was asked for"


async def test_a_message_blocked_by_moderation_is_stored_and_shown_blocked(
        fake: LazadaFake) -> None:
    fake.buyer_message(SESSION, 1, "call me on 012-3456789",
                       process_msg="Message blocked: contains contact information")
    fake.buyer_message(SESSION, 2, "ok")
    async with adapter(fake) as lazada:
        polled = messages((await lazada.poll("default", None))[0])
        fetched = messages(await lazada.fetch(SESSION))
    for found in (polled, fetched):
        blocked, fine = found
        assert blocked.text == "call me on 012-3456789"
        assert blocked.moderation == ("blocked by Lazada moderation: Message blocked: contains "
                                      "contact information")
        assert fine.moderation is None


async def test_every_message_carries_marketplace_market_order_and_buyer(
        fake: LazadaFake) -> None:
    fake.buyer_message(SESSION, 1, template_id=10007, content={"orderId": "3300112233"})
    fake.buyer_message(SESSION, 2, "is it shipped?")
    fake.buyer_message(SESSION, 3, template_id=3, content={"imgUrl": "https://img/x.jpg"})
    async with adapter(fake) as lazada:
        card, text, image = messages(await lazada.fetch(SESSION))
    assert (card.text, text.text, image.text) == ("[order] 3300112233", "is it shipped?",
                                                  "[image] https://img/x.jpg")
    for m in (card, text, image):
        assert (m.channel_type, m.thread_id, m.sender_handle, m.sender_name) == \
            ("lazada", SESSION, BUYER, BUYER_NAME)
        assert (m.hints.label, m.hints.market, m.hints.language, m.hints.marketplace_site,
                m.hints.order_id) == ("lazada", "MY", "ms", "MY", "3300112233")


async def test_an_unreadable_message_is_kept_not_dropped(fake: LazadaFake) -> None:
    fake.buyer_message(SESSION, 1, "fine")
    fake.add_message(SESSION, {"message_id": "7999", "session_id": SESSION,
                               "template_id": "not a number", "send_time": 1})
    async with adapter(fake) as lazada:
        items, cursor = await lazada.poll("default", None)
        assert [type(i).__name__ for i in items] == ["InboundMessage"]  # 7999: long ago
        fake.add_message(SESSION, {"message_id": "7998", "session_id": SESSION,
                                   "template_id": "x", "send_time": int(time.time() * 1000)})
        items, cursor = await lazada.poll("default", cursor)
        [bad] = items
        assert isinstance(bad, Unusable)
        assert b"7998" in bad.raw and "unreadable" in bad.reason
        # Quarantined once: the cursor moved past it.
        assert (await lazada.poll("default", cursor))[0] == []


# -- inbound: push hint, then fetch --------------------------------------------------------------


async def test_a_push_is_a_hint_fetched_with_our_token(fake: LazadaFake) -> None:
    message = fake.buyer_message(SESSION, 1, "Hi, where is my parcel?")
    forged = fake.push_body(SESSION, message["message_id"], content='{"txt": "pay here"}',
                            from_account_id="666")
    async with adapter(fake) as lazada:
        [notice] = lazada.parse(REQ, forged)
        assert notice == FetchNotice(resource=SESSION, dedupe_key=f"m:{SESSION}:"
                                     f"{message['message_id']}:{json.loads(forged)['timestamp']}")
        [stored] = messages(await lazada.fetch(notice.resource))
    assert (stored.text, stored.sender_handle) == ("Hi, where is my parcel?", BUYER)
    update = fake.push_body(SESSION, number=9)  # SESSION_UPDATE-like: no message id
    async with adapter(fake) as lazada:
        [hint] = lazada.parse(REQ, update)
        assert isinstance(hint, FetchNotice) and hint.resource == SESSION
        assert hint.dedupe_key.startswith("s:")
        for bad, why in [(fake.push_body(SESSION, seller=OTHER_SELLER), "another seller"),
                         (fake.push_body("../x"), "session id"), (b"[]", "not a Lazada push")]:
            with pytest.raises(MalformedPayload, match=why):
                lazada.parse(REQ, bad)


async def test_a_session_of_another_seller_is_refused(fake: LazadaFake) -> None:
    fake.add_session("3000000001", seller=OTHER_SELLER)
    fake.buyer_message("3000000001", 1, "not yours")
    async with adapter(fake) as lazada:
        with pytest.raises(PermanentError, match="is not seller"):
            await lazada.fetch("3000000001")
        with pytest.raises(PermanentError, match="not a Lazada id"):
            await lazada.fetch("../order/get")
        assert (await lazada.poll("default", None))[0] == []


# -- tokens and limits ---------------------------------------------------------------------------


async def test_token_expiry_mid_run_refreshes_once_for_two_processes(fake: LazadaFake) -> None:
    fake.buyer_message(SESSION, 1)
    tokens = MemoryTokenStore()
    await load_tokens(fake, tokens)
    async with adapter(fake, tokens=tokens, load=False) as one, \
            adapter(fake, tokens=tokens, load=False) as two:
        await one.fetch(SESSION)
        for _ in range(2):
            fake.revoke_access()  # IllegalAccessToken from now on, mid-run
            results = await asyncio.gather(one.fetch(SESSION), two.fetch(SESSION),
                                           one.poll("default", None))
            assert len(results[0]) == len(results[1]) == 1
    assert fake.refresh_calls == 2, "one refresh per expiry across both processes"
    refreshes = [p for path, p in fake.requests if path == "/auth/token/refresh"]
    assert all("access_token" not in p and p["sign_method"] == "sha256" for p in refreshes)
    fake.refuse_refresh = True
    fake.revoke_access()
    async with adapter(fake, tokens=tokens, load=False) as three:
        with pytest.raises(AuthError, match="IllegalRefreshToken"):
            await three.fetch(SESSION)
    assert (await tokens.state("shop")).status == "needs_reauth"


async def test_a_429_storm_is_rate_limited_not_lost(fake: LazadaFake) -> None:
    fake.rate_per_minute = 6
    sessions = [f"40000000{n:02d}" for n in range(8)]
    for n, sid in enumerate(sessions):
        fake.buyer_message(sid, n)
    async with adapter(fake) as lazada:
        outcomes = await asyncio.gather(*(lazada.fetch(s) for s in sessions),
                                        return_exceptions=True)
    limited = [o for o in outcomes if isinstance(o, RateLimited)]
    assert limited, "the fake's limit was never hit"
    assert all(o.retry_after and o.retry_after >= 1 for o in limited)
    assert all(isinstance(o, RateLimited | list) for o in outcomes), outcomes


async def test_api_call_limit_without_a_header_waits_what_lazada_says(
        fake: LazadaFake) -> None:
    fake.fetch_failures.append(("ApiCallLimit", "ISV", 200, {}))
    fake.add_session(SESSION)
    async with adapter(fake) as lazada:
        with pytest.raises(RateLimited) as limited:
            await lazada.fetch(SESSION)
    assert limited.value.retry_after == 1.0
    async with adapter(fake) as lazada:
        error = lazada.api_error(200, json.dumps({
            "code": "ApiCallLimit", "type": "ISV", "request_id": "x",
            "message": "This ban will last 12 more seconds"}).encode(), {})
    assert isinstance(error, RateLimited) and error.retry_after == 12.0


# -- replies -------------------------------------------------------------------------------------


async def test_a_text_reply_goes_to_the_session(fake: LazadaFake) -> None:
    fake.buyer_message(SESSION, 1)
    async with adapter(fake) as lazada:
        sent = await lazada.send(reply("Terima kasih! Sudah dihantar."))
    assert fake.sent == [{"session_id": SESSION, "template_id": 1, "recipient": BUYER,
                          "txt": "Terima kasih! Sudah dihantar."}]
    assert sent.startswith("9")


async def test_over_length_and_attachments_are_refused_before_sending(
        fake: LazadaFake) -> None:
    async with adapter(fake) as lazada:
        before = len(fake.requests)
        with pytest.raises(ReplyRejected, match=f"allows {MAX_TEXT_LENGTH}"):
            await lazada.send(reply("a" * (MAX_TEXT_LENGTH + 1)))
        image = Attachment(name="a.png", content_type="image/png", size=10,
                           storage_ref="att-1")
        with pytest.raises(ReplyRejected, match="documents no upload"):
            await lazada.send(reply("see photo", attachments=(image,)))
        with pytest.raises(ReplyRejected, match="cannot start a conversation"):
            await lazada.send(reply("Hello first", inbound=None))
        assert len(fake.requests) == before, "a refused reply reached Lazada"


async def test_opening_a_chat_only_within_7_days_of_the_order(fake: LazadaFake) -> None:
    fake.add_order("50001", age_seconds=8 * 86400)
    fake.add_order("50002", age_seconds=6 * 86400)
    old = reply("", inbound=None, template=TemplateRef("order_card", None, ("50001",)))
    async with adapter(fake) as lazada:
        with pytest.raises(WindowClosed, match="within 7 days after the order") as closed:
            await lazada.send(old)
        assert "50001" in str(closed.value) and "closed at" in str(closed.value)
        looked_up = len(fake.requests)
        # Now the order's age is known: refused by the check itself, no request at all.
        with pytest.raises(WindowClosed):
            lazada.check_reply(old, now=time.time())
        with pytest.raises(WindowClosed):
            await lazada.send(old)
        assert len(fake.requests) == looked_up
        assert fake.opened == [] and fake.sent == []
        fresh = msgspec.structs.replace(old, template=TemplateRef("order_card", None,
                                                                  ("50002",)))
        await lazada.send(fresh)
        with pytest.raises(ReplyRejected, match="digits"):
            await lazada.send(msgspec.structs.replace(
                old, template=TemplateRef("order_card", None, ("12; DROP",))))
    assert fake.opened == ["50002"]
    assert fake.sent == [{"session_id": "order-50002", "template_id": 10007,
                          "recipient": BUYER, "orderId": "50002"}]


async def test_a_session_walk_cut_short_resumes_where_it_stopped(
        fake: LazadaFake, monkeypatch: pytest.MonkeyPatch) -> None:
    """More changed sessions than one poll reads: the next poll walks on from the last session
    read before the cursor moves, so the older ones are not skipped."""
    from channels.lazada import adapter as module

    monkeypatch.setattr(module, "MAX_SESSION_PAGES", 1)
    for s in range(45):
        fake.buyer_message(f"50000000{s:02d}", 300 + s, f"chat {s}")
    seen: list[str] = []
    async with adapter(fake) as lazada:
        cursor = None
        for _ in range(3):
            items, cursor = await lazada.poll("default", cursor)
            seen += [m.provider_message_id for m in messages(items)]
        assert len(seen) == 45 and len(set(seen)) == 45
        late = fake.buyer_message("5000000001", 400, "one more")
        items, cursor = await lazada.poll("default", cursor)
        assert [m.provider_message_id for m in messages(items)] == [late["message_id"]]
        assert (await lazada.poll("default", cursor))[0] == []

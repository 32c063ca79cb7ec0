"""AliExpress against the local fake (provider.py): the legacy signature (a vector worked out
by hand), the experimental gate, the poll's cursor across restarts and same-time ties,
another seller's data, token expiry mid-run, a call-limit storm, and the reply rules checked
before sending."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.aliexpress.adapter import AliExpressChannel, AliExpressSettings
from channels.aliexpress.signing import sign, string_to_sign, verify
from channels.errors import AuthError, PermanentError, RateLimited, ReplyRejected
from channels.models import InboundMessage, OutboundReply
from channels.secrets import Secret
from channels.testing import IngestGate, MemoryKitStore
from channels.testing.tokens import MemoryTokenStore
from hub.config import ConfigError, convert
from tests.channels.aliexpress.harness import PollDriver, context, load_tokens, settings
from tests.channels.aliexpress.provider import (
    APP_KEY,
    BUYER,
    OTHER_SELLER,
    SELLER,
    SELLER_ID,
    AliExpressFake,
)

# The vector, by hand: the path, then key+value in key order, sign left out.
VECTOR_PARAMS = {"method": "aliexpress.message.redefining.addmsg", "app_key": "12345678",
                 "session": "tok-1", "timestamp": "2026-01-01 08:00:00", "format": "json",
                 "v": "2.0", "sign_method": "hmac-sha1", "sign": "ignored"}
VECTOR_STRING = ("/router/rest" "app_key12345678" "formatjson"
                 "methodaliexpress.message.redefining.addmsg" "sessiontok-1"
                 "sign_methodhmac-sha1" "timestamp2026-01-01 08:00:00" "v2.0")
VECTOR_SIGN = "002759E9639CE2A675B74BECC70C1875BEE8ADA3"


def test_signature_matches_the_hand_worked_vector() -> None:
    assert string_to_sign("/router/rest", VECTOR_PARAMS) == VECTOR_STRING.encode()
    assert hmac.new(b"app-secret-0123", VECTOR_STRING.encode(),
                    hashlib.sha1).hexdigest().upper() == VECTOR_SIGN
    assert sign(b"app-secret-0123", "/router/rest", VECTOR_PARAMS) == VECTOR_SIGN
    assert verify(b"app-secret-0123", "/router/rest", {**VECTOR_PARAMS, "sign": VECTOR_SIGN})
    assert not verify(b"app-secret-0123", "/sync", {**VECTOR_PARAMS, "sign": VECTOR_SIGN})
    assert not verify(b"other", "/router/rest", {**VECTOR_PARAMS, "sign": VECTOR_SIGN})
    assert not verify(b"app-secret-0123", "/router/rest",
                      {**VECTOR_PARAMS, "session": "tok-2", "sign": VECTOR_SIGN})


def test_settings_without_experimental_are_refused_with_the_reason() -> None:
    raw = {"app_key": APP_KEY, "app_secret": "s3cret", "seller_login_id": SELLER}
    with pytest.raises(ConfigError) as info:
        convert(raw, AliExpressSettings, "channels[0].settings",
                lambda t, v: Secret(v, "test"))
    text = str(info.value)
    assert "EXPERIMENTAL" in text and "experimental = true" in text
    assert "no official AliExpress message API documentation" in text and "§6.3" in text


class Rig:
    def __init__(self, fake: AliExpressFake, session: aiohttp.ClientSession) -> None:
        self.fake, self.session = fake, session
        self.tokens = MemoryTokenStore()
        self.gate = IngestGate(MemoryKitStore())
        self.cursor: bytes | None = None

    def driver(self, **extra: Any) -> PollDriver:
        adapter = AliExpressChannel("ae", settings(self.fake, **extra),
                                    context(self.session, self.tokens))
        driver = PollDriver(adapter, self.fake, self.gate)
        driver.cursor = self.cursor
        return driver

    async def poll(self, **extra: Any) -> tuple[list[str], PollDriver]:
        driver = self.driver(**extra)
        stored = await driver.poll()
        self.cursor = driver.cursor
        return stored, driver

    async def messages(self) -> list[InboundMessage]:
        found = [await self.gate.store.inbound(r.message_id) for r in self.gate.results]
        return [m for m in found if m is not None]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with AliExpressFake() as fake, aiohttp.ClientSession() as session:
        r = Rig(fake, session)
        await load_tokens(fake, r.tokens)
        yield r
    assert fake.bad_signs == 0


def reply(text: str, thread: str = "3000000001", to: str = BUYER) -> OutboundReply:
    return OutboundReply(reply_id=f"r-{time.time_ns()}", conversation_id="c",
                         channel_type="aliexpress", channel_instance="ae", thread_id=thread,
                         recipient_handle=to, text=text, last_inbound_at=time.time())


async def test_a_wrong_secret_is_refused_by_the_gateway(rig: Rig) -> None:
    adapter = AliExpressChannel("ae", settings(rig.fake, app_secret=Secret("wrong", "t")),
                                context(rig.session, rig.tokens))
    with pytest.raises(PermanentError, match="error 25"):
        await adapter.poll("default", None)
    rig.fake.bad_signs = 0


async def test_poll_across_restarts_no_loss_no_duplicates_with_ties(rig: Rig) -> None:
    base = time.time() - 600
    for n in range(5):  # five relations, pairs of them at the same millisecond
        rig.fake.write(f"300000000{n}", f"hola {n}", at=base + n // 2)
    await rig.poll(page_size=2)
    assert sorted(m.text for m in await rig.messages()) == [f"hola {n}" for n in range(5)]
    assert (await rig.poll(page_size=2))[0] == []  # a restart, nothing new
    rig.fake.write("3000000004", "one more", at=base + 2)
    rig.fake.write("3000000009", "new relation, same time", at=base + 2)
    rig.fake.write("3000000001", "later", at=base + 30)
    stored, _ = await rig.poll(page_size=2)
    assert len(stored) == 3
    newer = [m.text for m in await rig.messages()][5:]
    assert sorted(newer[:2]) == ["new relation, same time", "one more"] and newer[2] == "later"
    assert not any(r.duplicate for r in rig.gate.results)
    assert (await rig.poll(page_size=3))[0] == []


async def test_many_messages_in_one_relation_page_back_to_the_cursor(rig: Rig) -> None:
    rig.fake.write("3000000001", "first")
    await rig.poll()
    for n in range(7):
        rig.fake.write("3000000001", f"burst {n}")
    stored, _ = await rig.poll(page_size=3)
    assert [m.text for m in await rig.messages()] == ["first", *(f"burst {n}" for n in range(7))]
    assert len(stored) == 7


async def test_order_relation_carries_the_order_and_replies_as_order_msg(rig: Rig) -> None:
    rig.fake.write("8123456789", "Cadê meu pedido?", order=True, name="Ana B.")
    _, driver = await rig.poll(market="BR", language="pt")
    [message] = await rig.messages()
    assert (message.thread_id, message.sender_handle, message.sender_name) == (
        "order-8123456789", BUYER, "Ana B.")
    assert (message.hints.label, message.hints.order_id, message.hints.market,
            message.hints.language) == ("aliexpress", "8123456789", "BR", "pt")
    assert await driver.adapter.send(reply("Já enviamos!", thread="order-8123456789"))
    assert rig.fake.sent == [{"buyer_id": BUYER, "channel_id": "8123456789",
                              "content": "Já enviamos!", "msg_sources": "order_msg",
                              "seller_id": SELLER_ID}]
    assert (await rig.poll())[0] == []  # our own reply is not a buyer message


async def test_site_mail_reply_is_message_center_and_no_market_by_default(rig: Rig) -> None:
    rig.fake.write("3000000001", "Do you ship to Chile?")
    _, driver = await rig.poll()
    [message] = await rig.messages()
    assert message.hints.market is None and message.hints.order_id is None
    await driver.adapter.send(reply("Yes."))
    assert rig.fake.sent[0]["msg_sources"] == "message_center"


async def test_another_sellers_message_is_quarantined_not_stored(rig: Rig) -> None:
    rig.fake.write("3000000001", "for someone else", receiver=OTHER_SELLER)
    rig.fake.write("3000000001", "for us")
    _, driver = await rig.poll()
    assert [m.text for m in await rig.messages()] == ["for us"]
    assert len(driver.quarantined) == 1 and "another seller" in driver.quarantined[0]


async def test_token_expiry_mid_run_refreshes_once_and_keeps_the_rotation(rig: Rig) -> None:
    rig.fake.write("3000000001", "before")
    await rig.poll()
    old = await rig.tokens.current("ae")
    rig.fake.expire_tokens()
    rig.fake.write("3000000001", "after expiry")
    stored, _ = await rig.poll()
    assert len(stored) == 1 and rig.fake.refreshes == 1
    new = await rig.tokens.current("ae")
    assert new.refresh_token != old.refresh_token
    assert old.refresh_token not in rig.fake.refresh_tokens


async def test_refused_refresh_is_needs_reauth(rig: Rig) -> None:
    rig.fake.expire_tokens()
    rig.fake.refresh_tokens.clear()  # the seller revoked the app
    with pytest.raises(AuthError):
        await rig.poll()
    assert (await rig.tokens.state("ae")).status == "needs_reauth"


async def test_call_limit_storm_keeps_the_cursor_and_loses_nothing(rig: Rig) -> None:
    rig.fake.write("3000000001", "first")
    await rig.poll()
    cursor = rig.cursor
    rig.fake.write("3000000002", "during the storm")
    rig.fake.rate_limited = 30
    for _ in range(3):
        with pytest.raises(RateLimited) as info:
            await rig.poll()
        assert "echo" not in str(info.value)  # the gateway's free text is never repeated
        assert rig.cursor == cursor
    rig.fake.rate_limited = 0
    stored, _ = await rig.poll()
    assert [m.text for m in await rig.messages()] == ["first", "during the storm"]
    assert len(stored) == 1


@pytest.mark.parametrize("text", ["x" * 1001, "<p>Olá</p>", "click <a href=x>here</a>",
                                  "a<br>b", "<!DOCTYPE html>"])
async def test_over_length_and_html_replies_are_refused_before_sending(rig: Rig,
                                                                       text: str) -> None:
    with pytest.raises(ReplyRejected) as info:
        await rig.driver().adapter.send(reply(text))
    assert ("1000" in str(info.value)) or ("HTML" in str(info.value))
    assert rig.fake.calls == []


async def test_the_webhook_path_takes_nothing(rig: Rig) -> None:
    from aiohttp.test_utils import make_mocked_request

    from channels.base import serve_webhook
    request = make_mocked_request("POST", "/webhooks/aliexpress/ae",
                                  match_info={"type": "aliexpress", "instance": "ae"})
    assert (await serve_webhook(rig.driver().adapter, request)).status == 405


async def test_the_new_platform_path_is_signed_for_that_path(rig: Rig) -> None:
    async with AliExpressFake(path="/sync") as other:
        tokens = MemoryTokenStore()
        await load_tokens(other, tokens)
        other.write("3000000001", "via /sync")
        adapter = AliExpressChannel("ae", settings(other, api_path="/sync"),
                                    context(rig.session, tokens))
        items, _ = await adapter.poll("default", None)
        assert [getattr(i, "text", None) for i in items] == ["via /sync"]
        assert other.bad_signs == 0

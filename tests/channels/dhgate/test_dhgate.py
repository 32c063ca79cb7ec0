"""DHgate against the local fake (provider.py): the experimental gate, the poll's cursor across
restarts and same-second ties, message types that are not buyer messages, another seller's
data, token expiry mid-run, a 429 storm, and the reply rules checked before sending."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from channels.dhgate.adapter import DHgateChannel, DHgateSettings, millis
from channels.errors import RateLimited, ReplyRejected
from channels.models import InboundMessage, OutboundReply
from channels.testing import IngestGate, MemoryKitStore
from channels.testing.tokens import MemoryTokenStore
from hub.config import ConfigError, convert
from tests.channels.dhgate.harness import PollDriver, context, load_tokens, settings
from tests.channels.dhgate.provider import BUYER, CLIENT_ID, OTHER_SELLER, SELLER, DHgateFake


class Rig:
    def __init__(self, fake: DHgateFake, session: aiohttp.ClientSession) -> None:
        self.fake, self.session = fake, session
        self.tokens = MemoryTokenStore()
        self.gate = IngestGate(MemoryKitStore())
        self.cursor: bytes | None = None

    def driver(self, **extra: Any) -> PollDriver:
        """A new adapter (a restarted process) resuming from the last stored cursor."""
        adapter = DHgateChannel("dh", settings(self.fake, **extra),
                                context(self.session, self.tokens))
        driver = PollDriver(adapter, self.fake, self.gate)
        driver.cursor = self.cursor
        return driver

    async def poll(self, **extra: Any) -> tuple[list[str], PollDriver]:
        driver = self.driver(**extra)
        stored = await driver.poll()
        self.cursor = driver.cursor
        return stored, driver

    async def stored_texts(self) -> list[str]:
        out = []
        for result in self.gate.results:
            message = await self.gate.store.inbound(result.message_id)
            assert message is not None
            out.append(message.text)
        return out


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with DHgateFake() as fake, aiohttp.ClientSession() as session:
        r = Rig(fake, session)
        await load_tokens(fake, r.tokens)
        yield r


def reply(text: str, thread: str = "40000001", to: str = BUYER) -> OutboundReply:
    return OutboundReply(reply_id=f"r-{time.time_ns()}", conversation_id="c",
                         channel_type="dhgate", channel_instance="dh", thread_id=thread,
                         recipient_handle=to, text=text, last_inbound_at=time.time())


def test_settings_without_experimental_are_refused_with_the_reason() -> None:
    raw = {"api_base_url": "https://api.dhgate.com", "client_id": CLIENT_ID,
           "client_secret": "s3cret", "seller_id": SELLER}
    with pytest.raises(ConfigError) as info:
        convert(raw, DHgateSettings, "channels[0].settings",
                lambda t, v: __import__("channels.secrets").secrets.Secret(v, "test"))
    text = str(info.value)
    assert "EXPERIMENTAL" in text and "experimental = true" in text
    assert "no message API documentation" in text and "§6.5" in text
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**raw, "experimental": False}, DHgateSettings,
                        dec_hook=lambda t, v: __import__("channels.secrets").secrets.Secret(
                            v, "test"))


def test_times_are_read_as_beijing_time_or_epoch() -> None:
    assert millis("2026-01-01 08:00:00") == 1767225600000
    assert millis(1767225600) == millis(1767225600000) == 1767225600000
    assert millis("yesterday") is None and millis(None) is None


async def test_poll_across_restarts_no_loss_no_duplicates_with_ties(rig: Rig) -> None:
    base = time.time() - 600
    for n in range(5):  # five topics, pairs of them in the same second
        rig.fake.write(f"4000{n}", f"hello {n}", at=base + n // 2)
    stored, _ = await rig.poll(page_size=2)
    assert sorted(await rig.stored_texts()) == [f"hello {n}" for n in range(5)]
    again, _ = await rig.poll(page_size=2)  # a restart, nothing new
    assert again == []
    # Same second as the cursor: a new reply in a topic handled then, and a new topic.
    rig.fake.write("40004", "and one more thing", at=base + 2)
    rig.fake.write("40009", "new topic, same second", at=base + 2)
    rig.fake.write("40001", "later", at=base + 30)
    stored, _ = await rig.poll(page_size=2)
    assert len(stored) == 3
    newer = (await rig.stored_texts())[5:]
    assert sorted(newer[:2]) == ["and one more thing", "new topic, same second"]
    assert newer[2] == "later"
    assert not any(r.duplicate for r in rig.gate.results)
    assert (await rig.poll(page_size=3))[0] == []


async def test_own_replies_are_skipped_and_buyer_fields_carried(rig: Rig) -> None:
    rig.fake.write("40000001", "Where is order 778?", msg_type="002", order="778123456",
                   nickname="Bob B.")
    _, driver = await rig.poll()
    assert await driver.adapter.send(reply("It ships today."))
    rig.fake.write("40000001", "Thanks!", nickname="Bob B.")
    await rig.poll()
    messages = [await rig.gate.store.inbound(r.message_id) for r in rig.gate.results]
    assert [m.text for m in messages if m] == ["Where is order 778?", "Thanks!"]
    first = messages[0]
    assert isinstance(first, InboundMessage)
    assert (first.thread_id, first.sender_handle, first.sender_name) == ("40000001", BUYER,
                                                                         "Bob B.")
    assert (first.hints.label, first.hints.order_id, first.hints.market,
            first.hints.language) == ("dhgate", "778123456", None, None)


async def test_market_setting_is_the_hint(rig: Rig) -> None:
    rig.fake.write("40000001", "Hola")
    await rig.poll(market="ES", language="es")
    message = await rig.gate.store.inbound(rig.gate.results[0].message_id)
    assert message is not None and (message.hints.market, message.hints.language) == ("ES",
                                                                                      "es")


@pytest.mark.parametrize("msg_type", ["004", "009", "010", "013"])
async def test_system_messages_and_announcements_are_passed_by(rig: Rig, msg_type: str) -> None:
    rig.fake.write("50000001", "Platform notice: new fees", msg_type=msg_type, sender="system")
    stored, driver = await rig.poll()
    assert stored == [] and rig.gate.results == [] and driver.quarantined == []
    assert "dh.message.get" not in rig.fake.calls  # never read as a conversation
    moved = rig.cursor
    assert moved is not None  # acknowledged: the cursor is past it
    rig.fake.write("40000001", "a real buyer", msg_type="003")
    stored, _ = await rig.poll()
    assert len(stored) == 1 and rig.cursor != moved
    assert await rig.stored_texts() == ["a real buyer"]


async def test_another_sellers_reply_is_quarantined_not_stored(rig: Rig) -> None:
    rig.fake.write("40000001", "for someone else", receiver=OTHER_SELLER)
    rig.fake.write("40000001", "for us")
    _, driver = await rig.poll()
    assert await rig.stored_texts() == ["for us"]
    assert len(driver.quarantined) == 1 and "another seller" in driver.quarantined[0]


async def test_token_expiry_mid_run_refreshes_once_and_keeps_the_rotation(rig: Rig) -> None:
    rig.fake.write("40000001", "before")
    await rig.poll()
    old = await rig.tokens.current("dh")
    rig.fake.expire_tokens()
    rig.fake.write("40000001", "after expiry")
    stored, _ = await rig.poll()
    assert len(stored) == 1 and rig.fake.refreshes == 1
    new = await rig.tokens.current("dh")
    assert new.refresh_token != old.refresh_token
    assert old.refresh_token not in rig.fake.refresh_tokens  # rotated: the old one is dead
    assert await rig.stored_texts() == ["before", "after expiry"]


async def test_429_storm_keeps_the_cursor_and_loses_nothing(rig: Rig) -> None:
    rig.fake.write("40000001", "first")
    await rig.poll()
    cursor = rig.cursor
    rig.fake.write("40000002", "during the storm")
    rig.fake.rate_limited = 30
    for _ in range(3):
        with pytest.raises(RateLimited) as info:
            await rig.poll()
        assert info.value.retry_after == 1.0
        assert rig.cursor == cursor
    rig.fake.rate_limited = 0
    stored, _ = await rig.poll()
    assert await rig.stored_texts() == ["first", "during the storm"] and len(stored) == 1


async def test_reads_are_paced_through_the_limiter(rig: Rig) -> None:
    from channels.testing.limits import MemoryLimiter
    adapter = DHgateChannel("dh", settings(rig.fake, reads_per_second=10),
                            context(rig.session, rig.tokens, limiter=MemoryLimiter()))
    for n in range(4):
        rig.fake.write(f"4000000{n}", f"m{n}")
    started = time.monotonic()
    items, _ = await adapter.poll("default", None)  # one list and four gets: five reads
    assert len(items) == 4
    assert time.monotonic() - started >= 4 / 9 - 0.05  # at most 10 in any second


@pytest.mark.parametrize("text", ["x" * 1001, "<b>Hi</b> there", "see <a href='x'>this</a>",
                                  "ok <br/> ok", "<!-- hidden -->"])
async def test_over_length_and_html_replies_are_refused_before_sending(rig: Rig,
                                                                       text: str) -> None:
    adapter = rig.driver().adapter
    with pytest.raises(ReplyRejected) as info:
        await adapter.send(reply(text))
    assert ("1000" in str(info.value)) or ("HTML" in str(info.value))
    assert rig.fake.calls == []


async def test_text_with_angle_brackets_that_is_not_html_is_sent(rig: Rig) -> None:
    rig.fake.write("40000001", "hi")
    adapter = rig.driver().adapter
    assert await adapter.send(reply("2 < 3 and 5 > 4, price <= $10"))
    assert rig.fake.sent[-1]["content"] == "2 < 3 and 5 > 4, price <= $10"


@pytest.mark.parametrize("method", ["dh.message.info.reply", "dh.msg.info.reply"])
async def test_reply_goes_to_the_topic_and_buyer(rig: Rig, method: str) -> None:
    rig.fake.write("40000001", "hi")
    adapter = rig.driver(reply_method=method).adapter
    sent = await adapter.send(reply("Shipped!"))
    assert sent.isdigit()
    assert rig.fake.sent == [{"msgId": "40000001", "content": "Shipped!", "receiverId": BUYER}]
    assert rig.fake.calls == [method]


async def test_the_webhook_path_takes_nothing(rig: Rig) -> None:
    from aiohttp.test_utils import make_mocked_request

    from channels.base import serve_webhook
    adapter = rig.driver().adapter
    request = make_mocked_request("POST", "/webhooks/dhgate/dh",
                                  match_info={"type": "dhgate", "instance": "dh"})
    answer = await serve_webhook(adapter, request)
    assert answer.status == 405

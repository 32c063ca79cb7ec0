"""Sending: reply threading, splitting or refusing long replies, Telegram's error answers
(429 with retry_after, 5xx, 4xx with the description, 403 for a blocked bot), and split parts
that are paced and never sent twice."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from channels.base import AdapterContext
from channels.errors import (
    AuthError,
    PermanentError,
    RateLimited,
    ReplyRejected,
    RetryableError,
)
from channels.models import OutboundReply
from channels.services.attachments import AttachmentStore
from channels.services.limits import RateLimiter
from channels.services.threads import ThreadMemory
from channels.telegram.adapter import TelegramChannel
from channels.telegram.api import RecipientUnreachable
from channels.telegram.split import utf16_length
from channels.testing.attachments import PNG, MemoryAttachmentStore
from channels.testing.limits import MemoryLimiter
from storage.store import Store
from storage.threads import RedisThreads
from tests.channels.telegram.bot_api import FakeBotApi, error
from tests.channels.telegram.test_conformance import TOKEN, settings

CHAT = "234140659"


class Outbox:
    def __init__(self, api: FakeBotApi, session: aiohttp.ClientSession) -> None:
        self.api = api
        self.session = session

    def adapter(self, limiter: RateLimiter | None = None, files: AttachmentStore | None = None,
                threads: ThreadMemory | None = None, **overrides: Any) -> TelegramChannel:
        async def quarantine(*args: Any, **kwargs: Any) -> str:
            raise AssertionError("nothing is quarantined when sending")

        def spawn(coro: Any, name: str) -> Any:
            raise AssertionError("sending spawns nothing")

        context = AdapterContext(http=self.session, quarantine=quarantine, spawn=spawn,
                                 limiter=limiter, attachments=files, threads=threads)
        return TelegramChannel("shop", settings(self.api, **overrides), context)


@pytest.fixture
async def outbox() -> AsyncIterator[Outbox]:
    async with FakeBotApi(TOKEN) as api, aiohttp.ClientSession() as session:
        yield Outbox(api, session)


def reply(text: str, *, in_reply_to: str | None = f"{CHAT}:698", reply_id: str = "r-1",
          thread: str = CHAT) -> OutboundReply:
    return OutboundReply(reply_id=reply_id, conversation_id="c-1", channel_type="telegram",
                         channel_instance="shop", thread_id=thread, recipient_handle=thread,
                         text=text, in_reply_to=in_reply_to, last_inbound_at=time.time())


async def test_a_reply_answers_the_buyers_message(outbox: Outbox) -> None:
    adapter = outbox.adapter()
    provider_id = await adapter.send(reply("Sale hoy 📦"))
    (sent,) = outbox.api.sends
    assert sent["chat_id"] == CHAT and sent["text"] == "Sale hoy 📦"
    assert sent["reply_parameters"] == {"message_id": 698, "allow_sending_without_reply": True}
    assert "parse_mode" not in sent, "agent text must not be parsed as markup"
    assert provider_id == f"{CHAT}:9000"


@pytest.mark.parametrize("in_reply_to", [None, "999:698", "garbage", f"{CHAT}:x"])
async def test_no_reply_parameters_without_a_message_of_this_chat(
        outbox: Outbox, in_reply_to: str | None) -> None:
    await outbox.adapter().send(reply("hola", in_reply_to=in_reply_to))
    assert "reply_parameters" not in outbox.api.sends[0]


async def test_a_reply_to_an_edit_answers_the_original_message(outbox: Outbox) -> None:
    await outbox.adapter().send(reply("ok", in_reply_to=f"{CHAT}:698:edit:1650209999"))
    assert outbox.api.sends[0]["reply_parameters"]["message_id"] == 698


async def test_a_long_reply_is_split_on_paragraphs_and_words(outbox: Outbox) -> None:
    adapter = outbox.adapter(long_messages="split")
    first = "Primer párrafo. " * 200  # 3200 characters
    second = "palabra " * 700  # 5600 characters: needs a cut between words
    text = f"{first.strip()}\n\n{second.strip()}"
    await adapter.send(reply(text))
    parts = [s["text"] for s in outbox.api.sends]
    assert len(parts) == 3
    assert parts[0] == first.strip(), "the first cut is at the paragraph break"
    assert all(0 < utf16_length(p) <= 4096 for p in parts)
    assert all(p == p.strip() for p in parts)
    assert " ".join(parts[1:]).split(" ") == second.split(), "no word was cut or lost"
    assert "reply_parameters" in outbox.api.sends[0]
    assert all("reply_parameters" not in s for s in outbox.api.sends[1:])


async def test_emoji_count_twice_toward_the_limit(outbox: Outbox) -> None:
    """4096 Python characters of astral-plane emoji are 8192 UTF-16 units for Telegram."""
    await outbox.adapter(long_messages="split").send(reply("😀" * 4096))
    assert [len(s["text"]) for s in outbox.api.sends] == [2048, 2048]
    with pytest.raises(ReplyRejected, match="4096"):
        await outbox.adapter(long_messages="refuse").send(reply("😀" * 2049, reply_id="r-2"))
    assert len(outbox.api.sends) == 2


async def test_refuse_mode_sends_nothing_over_the_limit(outbox: Outbox) -> None:
    adapter = outbox.adapter(long_messages="refuse")
    assert adapter.capabilities.max_text_length == 4096
    with pytest.raises(ReplyRejected):
        await adapter.send(reply("a" * 4097))
    assert outbox.api.sends == []


async def test_split_mode_still_has_a_ceiling(outbox: Outbox) -> None:
    adapter = outbox.adapter(long_messages="split")
    with pytest.raises(ReplyRejected):
        await adapter.send(reply("a" * (adapter.capabilities.max_text_length + 1)))
    assert outbox.api.sends == []


async def test_429_is_rate_limited_with_telegrams_retry_after(outbox: Outbox) -> None:
    outbox.api.fail_next("sendMessage", error(429, retry_after=3))
    with pytest.raises(RateLimited) as info:
        await outbox.adapter().send(reply("hola"))
    assert info.value.retry_after == 3.0
    assert "Too Many Requests: retry after 3" in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_5xx_is_retryable(outbox: Outbox, status: int) -> None:
    outbox.api.fail_next("sendMessage", error(status))
    with pytest.raises(RetryableError) as info:
        await outbox.adapter().send(reply("hola"))
    assert not isinstance(info.value, PermanentError)
    await outbox.adapter().send(reply("hola"))
    assert len(outbox.api.sends) == 1


async def test_a_4xx_is_permanent_with_telegrams_description(outbox: Outbox) -> None:
    outbox.api.fail_next("sendMessage", error(400, description="Bad Request: chat not found"))
    with pytest.raises(PermanentError, match="Bad Request: chat not found") as info:
        await outbox.adapter().send(reply("hola"))
    assert not isinstance(info.value, RetryableError | AuthError)


async def test_a_blocked_bot_is_a_permanent_unreachable_recipient(outbox: Outbox) -> None:
    outbox.api.fail_next("sendMessage", error(403))
    with pytest.raises(RecipientUnreachable, match="bot was blocked by the user") as info:
        await outbox.adapter().send(reply("hola"))
    assert isinstance(info.value, PermanentError) and not isinstance(info.value, AuthError)
    assert info.value.code == "recipient_unreachable"


async def test_a_refused_token_is_an_auth_error_without_the_token(outbox: Outbox) -> None:
    outbox.api.fail_next("sendMessage", error(401))
    with pytest.raises(AuthError) as info:
        await outbox.adapter().send(reply("hola"))
    assert TOKEN not in str(info.value) and TOKEN.split(":")[1] not in repr(info.value)


async def test_connection_errors_never_show_the_token(outbox: Outbox) -> None:
    adapter = outbox.adapter(api_base_url="http://127.0.0.1:1/bot{token}")
    with pytest.raises(RetryableError) as info:
        await adapter.send(reply("hola"))
    assert TOKEN.split(":")[1] not in str(info.value)


async def test_a_failed_part_is_retried_without_resending_the_parts_before(
        outbox: Outbox) -> None:
    adapter = outbox.adapter(long_messages="split")
    text = "\n\n".join(f"{n} " + "x" * 4000 for n in range(3))
    outbox.api.sends.clear()
    original = outbox.api.api_sendMessage
    calls = 0

    async def third_fails(params: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            return error(429, retry_after=1)
        return await original(params)

    outbox.api.api_sendMessage = third_fails  # type: ignore[method-assign]
    with pytest.raises(RateLimited):
        await adapter.send(reply(text))
    assert [s["text"][:1] for s in outbox.api.sends] == ["0", "1"]
    provider_id = await adapter.send(reply(text))  # the hub's retry of the same reply
    assert [s["text"][:1] for s in outbox.api.sends] == ["0", "1", "2"]
    assert provider_id == f"{CHAT}:9000", "the reply is known by its first message"
    await adapter.send(reply(text, reply_id="r-new"))  # another reply starts from the top
    assert len(outbox.api.sends) == 6


async def test_split_parts_take_their_own_turn_under_the_chat_limit(outbox: Outbox) -> None:
    limiter = MemoryLimiter()
    adapter = outbox.adapter(limiter, long_messages="split")
    arrivals: list[float] = []
    original = outbox.api.api_sendMessage

    async def timed(params: dict[str, Any]) -> Any:
        arrivals.append(time.monotonic())
        return await original(params)

    outbox.api.api_sendMessage = timed  # type: ignore[method-assign]
    first = reply("a " * 3000)  # two parts
    # The hub takes the first part's turn before deliver, as its sender does.
    granted = time.monotonic()
    assert await limiter.acquire("shop", adapter.capabilities.rate_limits, recipient=CHAT,
                                 ticket=first.reply_id) == 0
    await adapter.send(first)
    assert len(arrivals) == 2
    assert arrivals[1] - granted >= 0.95, "the second part went out within a second"


async def test_a_long_wait_for_a_part_hands_the_reply_back(outbox: Outbox) -> None:
    limiter = MemoryLimiter()
    adapter = outbox.adapter(limiter, long_messages="split")
    limits = adapter.capabilities.rate_limits
    for n in range(8):  # the chat is busy for the next ~8 s
        await limiter.acquire("shop", limits, recipient=CHAT, ticket=f"busy-{n}")
    with pytest.raises(RateLimited) as info:
        await adapter.send(reply("a " * 3000))
    assert info.value.retry_after is not None and info.value.retry_after > 5
    assert len(outbox.api.sends) == 1, "the first part went; the second waits its turn"


async def test_files_follow_the_text_and_a_missing_file_is_permanent(outbox: Outbox) -> None:
    files = MemoryAttachmentStore()
    stored = await files.put(PNG, name="etiqueta.png", content_type="image/png")
    adapter = outbox.adapter(files=files)
    with_file = msgspec.structs.replace(reply("Adjunto la etiqueta"), attachments=(stored,))
    provider_id = await adapter.send(with_file)
    assert [s.get("document") for s in outbox.api.sends] == [None, "etiqueta.png"]
    assert outbox.api.documents == [("etiqueta.png", "image/png", PNG)]
    assert outbox.api.sends[0]["reply_parameters"]["message_id"] == 698
    assert outbox.api.sends[1]["reply_parameters"] is None
    assert provider_id == f"{CHAT}:9000"
    only_file = msgspec.structs.replace(reply("", reply_id="r-2"), attachments=(stored,))
    await adapter.send(only_file)
    assert outbox.api.sends[-1]["document"] == "etiqueta.png"
    assert outbox.api.sends[-1]["reply_parameters"] == {
        "message_id": 698, "allow_sending_without_reply": True}
    await files.delete(stored.storage_ref or "")
    gone = msgspec.structs.replace(reply("otra", reply_id="r-3"), attachments=(stored,))
    with pytest.raises(PermanentError, match="no longer stored"):
        await adapter.send(gone)


async def test_a_split_reply_resumes_after_a_restart_without_resending_parts(
        outbox: Outbox, store: Store) -> None:
    """The progress of a split reply is in the hub's store: a new process (a restart, or the
    other hub process that claims the retry) sends only the parts not yet sent."""
    memory = RedisThreads(store)
    first = outbox.adapter(threads=memory, long_messages="split")
    text = "\n\n".join(f"{n} " + "x" * 4000 for n in range(3))
    original = outbox.api.api_sendMessage
    calls = 0

    async def third_fails(params: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            return error(502)
        return await original(params)

    outbox.api.api_sendMessage = third_fails  # type: ignore[method-assign]
    with pytest.raises(RetryableError):
        await first.send(reply(text))
    assert [s["text"][:1] for s in outbox.api.sends] == ["0", "1"]
    restarted = outbox.adapter(threads=memory, long_messages="split")
    provider_id = await restarted.send(reply(text))
    assert [s["text"][:1] for s in outbox.api.sends] == ["0", "1", "2"]
    assert provider_id == f"{CHAT}:9000"

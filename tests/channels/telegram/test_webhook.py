"""Webhook mode beyond the kit: setWebhook on start, what Telegram sends besides private text
messages (files, edits, blocks, groups, unknown kinds) and what an attacker or a broken proxy
sends (wrong Content-Type, redelivery storms, giant and odd payloads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from channels.models import InboundMessage
from channels.telegram.adapter import DEFER_DOWNLOAD_SECONDS, SECRET_HEADER, TelegramChannel
from channels.telegram.inbound import EDIT_MARKER
from channels.testing import IngestGate, MemoryKitStore
from channels.testing.attachments import EXECUTABLE, PNG, MemoryAttachmentStore
from channels.testing.webhooks import MemoryQuarantine, ServedWebhook, WebhookKit
from tests.channels.telegram import updates
from tests.channels.telegram.bot_api import FakeBotApi, error
from tests.channels.telegram.test_conformance import SECRET, TOKEN, settings, signed

PUBLIC_URL = "https://hub.example.com"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8


class Hub:
    """The adapter served as the hub serves it, with the kit's store, quarantine and files."""

    def __init__(self, served: ServedWebhook, api: FakeBotApi, gate: IngestGate,
                 quarantine: MemoryQuarantine, files: MemoryAttachmentStore) -> None:
        self.served = served
        self.api = api
        self.gate = gate
        self.quarantine = quarantine
        self.files = files

    @property
    def adapter(self) -> TelegramChannel:
        assert isinstance(self.served.adapter, TelegramChannel)
        return self.served.adapter

    async def post(self, payload: Any, headers: dict[str, str] | None = None) -> int:
        body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        answer = await self.served.request("POST", "", body,
                                           signed(body) if headers is None else headers)
        return answer.status

    async def stored(self) -> list[InboundMessage]:
        found = [await self.gate.store.inbound(r.message_id) for r in self.gate.results
                 if not r.duplicate]
        return [m for m in found if m is not None]


@pytest.fixture
async def hub_factory() -> AsyncIterator[Callable[..., Any]]:
    stack: list[Any] = []

    async def make(*, public_url: str | None = PUBLIC_URL, **overrides: Any) -> Hub:
        api = FakeBotApi(TOKEN)
        await api.__aenter__()
        stack.append(api)
        gate, quarantine, files = IngestGate(MemoryKitStore()), MemoryQuarantine(), \
            MemoryAttachmentStore()
        run = WebhookKit(gate, quarantine).run(
            api, lambda context: TelegramChannel("shop", settings(api, **overrides), context),
            sign=signed, attachments=files, public_url=public_url, max_body_bytes=256 * 1024)
        served = await run.__aenter__()
        stack.append(run)
        return Hub(served, api, gate, quarantine, files)

    yield make
    for item in reversed(stack):
        await item.__aexit__(None, None, None)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_start_registers_the_webhook_with_the_secret(hub_factory: Any) -> None:
    hub = await hub_factory()
    await eventually(lambda: hub.api.webhook is not None)
    assert hub.api.webhook is not None
    assert hub.api.webhook["url"] == f"{PUBLIC_URL}/webhooks/telegram/shop"
    assert hub.api.webhook["secret_token"] == SECRET
    assert set(hub.api.webhook["allowed_updates"]) >= {"message", "edited_message",
                                                        "my_chat_member"}


async def test_without_a_public_url_no_webhook_is_registered(hub_factory: Any) -> None:
    hub = await hub_factory(public_url=None)
    await asyncio.sleep(0.05)
    assert hub.api.webhook is None and "setWebhook" not in hub.api.calls
    assert await hub.post(updates.case(1).payload) == 200  # registered by hand, it works


async def test_set_webhook_retries_a_5xx_at_boot(hub_factory: Any, monkeypatch: Any) -> None:
    from channels.telegram import adapter as module
    monkeypatch.setattr(module, "_REGISTER_BACKOFF", module.Backoff(base=0.01, cap=0.02))
    api_failures = [error(502), error(500)]
    original = FakeBotApi.__aenter__

    async def failing_enter(self: FakeBotApi) -> FakeBotApi:
        entered = await original(self)
        for failure in api_failures:
            self.fail_next("setWebhook", failure)
        return entered

    monkeypatch.setattr(FakeBotApi, "__aenter__", failing_enter)
    hub = await hub_factory()
    await eventually(lambda: hub.api.webhook is not None)
    assert hub.api.calls.count("setWebhook") == 3


async def test_wrong_content_type_is_refused_and_nothing_kept(hub_factory: Any) -> None:
    hub = await hub_factory()
    body = msgspec.json.encode(updates.case(1).payload)
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "application/jsonp", ""):
        headers = {SECRET_HEADER: SECRET, "Content-Type": content_type}
        assert await hub.post(body, headers) == 415, content_type
    assert await hub.post(body, {SECRET_HEADER: SECRET,
                                 "Content-Type": "application/json; charset=utf-8"}) == 200
    assert len(hub.gate.results) == 1
    assert hub.quarantine.kept == []


async def test_wrong_secret_is_403_before_the_content_type_is_judged(hub_factory: Any) -> None:
    hub = await hub_factory()
    body = msgspec.json.encode(updates.case(1).payload)
    assert await hub.post(body, {SECRET_HEADER: "nope", "Content-Type": "text/plain"}) == 403


async def test_a_redelivery_storm_stores_one_message(hub_factory: Any) -> None:
    hub = await hub_factory()
    payload = updates.case(1).payload
    statuses = await asyncio.gather(*(hub.post(payload) for _ in range(50)))
    assert statuses == [200] * 50, "every redelivery must be acknowledged"
    assert len(hub.gate.results) == 50
    assert sum(not r.duplicate for r in hub.gate.results) == 1
    assert {r.message_id for r in hub.gate.results} == {hub.gate.results[0].message_id}


async def test_the_answer_is_an_empty_200(hub_factory: Any) -> None:
    """A JSON answer with a "method" field would be executed by Telegram as a Bot API call."""
    hub = await hub_factory()
    body = msgspec.json.encode(updates.case(1).payload)
    answer = await hub.served.request("POST", "", body, signed(body))
    assert answer.status == 200 and answer.body == b""


async def test_language_code_is_the_language_hint(hub_factory: Any) -> None:
    hub = await hub_factory()
    user = updates.buyer(42, "Maria", None, "pt-br")
    assert await hub.post(updates.text_update(1, 5, "Oi", user=user)) == 200
    (stored,) = await hub.stored()
    assert stored.hints.language == "pt-br"
    assert stored.sent_at == updates.SENT_AT + 5
    no_language = updates.buyer(43, "Kim", None, None)
    assert await hub.post(updates.text_update(2, 6, "hi", user=no_language)) == 200
    assert (await hub.stored())[1].hints.language is None


@pytest.mark.parametrize("payload", [
    updates.update(10, callback_query={"id": "1", "from": updates.buyer().to_dict(),
                                       "chat_instance": "x", "data": "yes"}),
    {"update_id": 11, "message_reaction": {"chat": {"id": 1, "type": "private"}}},
    {"update_id": 12, "some_future_kind": {"anything": [1, 2, 3]}},
    {"update_id": 13},
    updates.update(14, channel_post=updates.message(
        3, "news", chat=updates.Chat(id=-100123, type="channel", title="Shop news"))),
    updates.update(15, message=updates.message(
        4, "hola grupo", chat=updates.Chat(id=-4005, type="group", title="Buyers"))),
    updates.update(16, edited_message=updates.message(
        5, "x", chat=updates.Chat(id=-100777, type="supergroup", title="Big"),
        edit_date=updates.when())),
], ids=["callback_query", "reaction", "unknown kind", "empty", "channel_post", "group",
        "supergroup edit"])
async def test_other_updates_are_acknowledged_not_routed(hub_factory: Any,
                                                         payload: Any) -> None:
    hub = await hub_factory()
    assert await hub.post(payload) == 200
    assert hub.gate.results == [] and hub.quarantine.kept == []
    assert sum(hub.adapter.skipped.values()) == 1


async def test_a_blocked_bot_is_noted_for_the_chat(hub_factory: Any) -> None:
    hub = await hub_factory()
    assert await hub.post(updates.blocked_update(20)) == 200
    assert hub.gate.results == []
    assert list(hub.adapter.blocked_chats) == [str(updates.buyer().id)]


async def test_an_edit_is_stored_as_a_marked_new_message(hub_factory: Any) -> None:
    hub = await hub_factory()
    assert await hub.post(updates.text_update(1, 30, "quiero 2")) == 200
    edit = updates.edited_update(2, 30, "quiero 3", updates.SENT_AT + 100)
    for _ in range(3):  # a redelivered edit is still one
        assert await hub.post(edit) == 200
    original, edited = await hub.stored()
    assert original.text == "quiero 2"
    assert edited.text == EDIT_MARKER + "quiero 3"
    assert edited.thread_id == original.thread_id
    assert edited.provider_message_id == f"{original.provider_message_id}:edit:" \
        f"{updates.SENT_AT + 100}"
    later = updates.edited_update(3, 30, "quiero 4", updates.SENT_AT + 200)
    assert await hub.post(later) == 200
    assert [m.text for m in await hub.stored()][-1] == EDIT_MARKER + "quiero 4"


async def test_the_largest_photo_is_stored_with_the_caption(hub_factory: Any) -> None:
    hub = await hub_factory()
    hub.api.files["small"] = ("photos/file_0.jpg", b"\xff\xd8\xff small")
    hub.api.files["large"] = ("photos/file_1.jpg", JPEG)
    payload = updates.photo_update(1, 40, "¿Llegó roto así?",
                                   [("small", 90, 20), ("large", 1280, len(JPEG))])
    assert await hub.post(payload) == 200
    (stored,) = await hub.stored()
    assert stored.text == "¿Llegó roto así?"
    (attachment,) = stored.attachments
    assert attachment.content_type == "image/jpeg" and attachment.refused is None
    assert attachment.storage_ref is not None
    assert await hub.files.get(attachment.storage_ref) == JPEG
    assert hub.api.calls.count("getFile") == 1


async def test_a_document_is_stored_by_its_sniffed_type(hub_factory: Any) -> None:
    hub = await hub_factory()
    hub.api.files["doc"] = ("documents/file_2.png", PNG)
    assert await hub.post(updates.document_update(1, 41, "doc", "../../factura.png",
                                                  "image/png", len(PNG))) == 200
    (stored,) = await hub.stored()
    (attachment,) = stored.attachments
    assert attachment.name == "factura.png" and attachment.content_type == "image/png"
    assert stored.text == ""


async def test_a_file_over_the_limit_is_a_placeholder_not_a_download(
        hub_factory: Any) -> None:
    hub = await hub_factory(max_attachment_bytes=1000)
    hub.api.files["big"] = ("documents/big.pdf", b"%PDF-" + bytes(5000))
    assert await hub.post(updates.document_update(1, 42, "big", "manual.pdf",
                                                  "application/pdf", 5005)) == 200
    (stored,) = await hub.stored()
    (attachment,) = stored.attachments
    assert attachment.storage_ref is None and attachment.refused
    assert "1000" in attachment.refused
    assert "getFile" not in hub.api.calls, "a file known to be too big was fetched"


async def test_a_file_whose_size_was_not_declared_is_cut_at_the_limit(
        hub_factory: Any) -> None:
    hub = await hub_factory(max_attachment_bytes=1000)
    hub.api.files["big"] = ("documents/big.pdf", b"%PDF-" + bytes(5000))
    payload = updates.document_update(1, 42, "big", "manual.pdf", "application/pdf", 1)
    del payload["message"]["document"]["file_size"]
    assert await hub.post(payload) == 200
    (stored,) = await hub.stored()
    assert stored.attachments[0].refused and hub.files.files == {}


async def test_an_executable_is_kept_out_even_when_declared_an_image(
        hub_factory: Any, monkeypatch: Any) -> None:
    hub = await hub_factory()
    monkeypatch.setattr(type(hub.adapter), "attachment_policy", property(
        lambda self: TelegramChannel.attachment_policy.fget(self).narrowed(  # type: ignore
            types=("image/*",))))
    hub.api.files["exe"] = ("documents/x.png", EXECUTABLE)
    assert await hub.post(updates.document_update(1, 43, "exe", "cat.png", "image/png",
                                                  len(EXECUTABLE))) == 200
    (stored,) = await hub.stored()
    assert stored.attachments[0].refused and hub.files.files == {}


async def test_a_file_server_outage_defers_then_keeps_the_words(
        hub_factory: Any, monkeypatch: Any) -> None:
    hub = await hub_factory()
    hub.api.files["p"] = ("photos/file_9.jpg", JPEG)
    payload = updates.photo_update(1, 44, "mira", [("p", 800, len(JPEG))])
    hub.api.file_failures = [502, 503]
    assert await hub.post(payload) == 503, "Telegram must deliver it again"
    assert hub.gate.results == [] and hub.quarantine.kept == []
    assert await hub.post(payload) == 503
    assert await hub.post(payload) == 200  # the file server is back
    (stored,) = await hub.stored()
    assert stored.attachments[0].storage_ref is not None
    # An outage longer than the deferral: the message is kept with a placeholder.
    hub.api.file_failures = [502] * 3
    second = updates.photo_update(2, 45, "y esto", [("p", 800, len(JPEG))])
    assert await hub.post(second) == 503
    hub.adapter._deferred[2] -= DEFER_DOWNLOAD_SECONDS + 1
    assert await hub.post(second) == 200
    stored = (await hub.stored())[-1]
    assert stored.text == "y esto"
    assert stored.attachments[0].refused and "502" in stored.attachments[0].refused


async def test_a_giant_update_is_413_and_not_kept(hub_factory: Any) -> None:
    hub = await hub_factory()
    giant = updates.text_update(1, 50, "a" * (300 * 1024))
    assert await hub.post(giant) == 413
    assert hub.gate.results == [] and hub.quarantine.kept == []


async def test_a_long_text_under_the_body_limit_is_stored_whole(hub_factory: Any) -> None:
    hub = await hub_factory()
    text = "ñ" * 50_000
    assert await hub.post(updates.text_update(1, 51, text)) == 200
    assert (await hub.stored())[0].text == text


@pytest.mark.parametrize("payload", [
    {"update_id": 1, "message": {"message_id": 1, "date": 1, "text": 5,
                                 "chat": {"id": 1, "type": "private"}}},
    {"update_id": 1, "message": {"message_id": "1", "date": 1,
                                 "chat": {"id": 1, "type": "private"}}},
    {"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": 2**70,
                                                                     "type": "private"}}},
    {"update_id": -5, "message": {}},
    {"update_id": True},
], ids=["text is a number", "message_id is text", "chat id overflows", "negative id",
        "boolean id"])
async def test_wrongly_typed_updates_are_quarantined(hub_factory: Any, payload: Any) -> None:
    hub = await hub_factory()
    assert await hub.post(payload) == 400
    assert hub.gate.results == []
    (kept,) = hub.quarantine.kept
    assert kept.raw == msgspec.json.encode(payload) and kept.error

"""A minimal polling channel to copy when you write one: it polls ``GET /messages``.

The provider (``provider.py`` is a local fake of it) keeps each buyer message as an *update*
with a position, as Telegram's getUpdates does::

    GET /messages?after=<seq>&limit=100      Authorization: Bearer <token>
    200 [{"seq": 8, "message": {"id": "m-8", "from": "ana", "name": "Ana", "chat": "c-1",
                                "text": "hola", "sent_at": 1767225600}}]
    POST /send {"chat": "c-1", "to": "ana", "text": "..."}   ->   200 {"id": "s-1"}

The cursor is the last ``seq`` stored, as ASCII digits. The base class (``PollingAdapter``)
holds the lease, loads and checkpoints the cursor, stores what ``poll`` returns and retries
failures; this module only speaks the provider's API.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from channels.base import AdapterContext, Capabilities
from channels.errors import RetryableError
from channels.http import post, read_capped
from channels.models import InboundMessage, OutboundReply
from channels.polling import Polled, PollingAdapter, PollingSettings, PollItem, Schedule, Unusable
from channels.secrets import Secret

MAX_PAGE_BYTES = 1024 * 1024


class ExampleSettings(PollingSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    token: Secret
    poll_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0


class Update(msgspec.Struct, frozen=True):
    seq: int
    message: msgspec.Raw  # decoded on its own: one bad message must not block the rest


class Message(msgspec.Struct, frozen=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    sender: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] = msgspec.field(
        name="from")
    text: str
    chat: str | None = None
    name: str | None = None
    sent_at: float | None = None


_updates = msgspec.json.Decoder(list[Update])
_message = msgspec.json.Decoder(Message)


class ExampleChannel(PollingAdapter):
    type_name: ClassVar[str] = "example-poll"
    settings_type: ClassVar[type[ExampleSettings]] = ExampleSettings
    settings: ExampleSettings
    capabilities = Capabilities(max_text_length=2000, threading=True)

    def __init__(self, instance: str, settings: ExampleSettings, context: AdapterContext):
        super().__init__(instance, settings, context)
        self.schedule = Schedule(interval_seconds=settings.poll_interval_seconds,
                                 timeout_seconds=settings.timeout_seconds)
        self._headers = {"Authorization": f"Bearer {settings.token.reveal()}"}

    async def poll(self, account: str, cursor: bytes | None) -> Polled:
        after = int(cursor or b"0")
        async with self.context.http.get(
            f"{self.settings.url}/messages", params={"after": str(after), "limit": "100"},
            headers=self._headers, allow_redirects=False,
        ) as resp:
            resp.raise_for_status()  # 401 -> AuthError, 429 -> RateLimited, 5xx -> Retryable
            body, truncated = await read_capped(resp, MAX_PAGE_BYTES)
        if truncated:
            raise RetryableError(f"page larger than {MAX_PAGE_BYTES} bytes")
        try:
            updates = _updates.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise RetryableError(f"provider answered an unreadable page: {exc}") from None
        items: list[PollItem] = []
        for update in updates:
            if update.seq <= after:
                continue
            try:
                items.append(self._normalize(_message.decode(update.message)))
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                items.append(Unusable(bytes(update.message), f"update {update.seq}: {exc}"))
            after = update.seq
        return items, str(after).encode()

    def _normalize(self, message: Message) -> InboundMessage:
        return InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=message.id, thread_id=message.chat or message.sender,
            sender_handle=message.sender, sender_name=message.name, text=message.text,
            sent_at=message.sent_at,
        )

    async def deliver(self, reply: OutboundReply) -> str:
        body = msgspec.json.encode({"chat": reply.thread_id, "to": reply.recipient_handle,
                                    "text": reply.text})
        answer = await post(self.context.http, f"{self.settings.url}/send", data=body,
                            headers={**self._headers, "Content-Type": "application/json"},
                            timeout=self.settings.timeout_seconds)
        sent = msgspec.json.decode(answer.body)
        return str(sent["id"]) if isinstance(sent, dict) and "id" in sent else reply.reply_id


"""A minimal webhook channel to copy when you write one: the provider POSTs buyer messages.

The provider (``provider.py`` is a local fake of it) speaks::

    POST /webhooks/example-hook/{instance}       X-Example-Signature: <hex HMAC-SHA256(body)>
    {"id": "m-1", "from": "ana", "name": "Ana", "chat": "c-1", "text": "hola",
     "sent_at": 1767225600}

    POST {send_url}  {"chat": "c-1", "to": "ana", "text": "..."}   ->   200 {"id": "s-1"}

The base class (``WebhookAdapter``) reads the body under the size limit, calls ``verify``
before anything is parsed, quarantines what ``parse`` refuses, stores, and only then answers
the provider; ``send`` checks length and window and maps failures. This module only knows the
provider's signature and shapes.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Annotated, ClassVar

import msgspec
from aiohttp import web

from channels.base import Capabilities, Parsed, WebhookAdapter
from channels.errors import InvalidSignature, MalformedPayload
from channels.http import post
from channels.models import InboundMessage, OutboundReply
from channels.secrets import Secret
from channels.signing import hmac_sha256_hex

SIGNATURE_HEADER = "X-Example-Signature"
Handle = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class ExampleHookSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    secret: Secret
    send_url: str
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0


class Message(msgspec.Struct, frozen=True):
    id: Handle
    sender: Handle = msgspec.field(name="from")
    text: Annotated[str, msgspec.Meta(max_length=100_000)]
    chat: Handle | None = None
    name: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    sent_at: float | None = None


_message = msgspec.json.Decoder(Message)


class ExampleHookChannel(WebhookAdapter):
    type_name: ClassVar[str] = "example-hook"
    settings_type: ClassVar[type[ExampleHookSettings]] = ExampleHookSettings
    settings: ExampleHookSettings
    capabilities = Capabilities(max_text_length=2000, threading=True)

    def verify(self, request: web.Request, body: bytes) -> None:
        given = request.headers.get(SIGNATURE_HEADER, "").lower().encode("ascii", "replace")
        expected = hmac_sha256_hex(self.settings.secret.reveal().encode(), body).encode()
        if not hmac.compare_digest(given, expected):  # constant time, on the raw bytes
            raise InvalidSignature(f"missing or wrong {SIGNATURE_HEADER}")

    def parse(self, request: web.Request, body: bytes) -> Sequence[Parsed]:
        try:
            message = _message.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MalformedPayload(f"not a message: {exc}") from None
        return [InboundMessage(
            channel_type=self.type_name, channel_instance=self.instance,
            provider_message_id=message.id, thread_id=message.chat or message.sender,
            sender_handle=message.sender, sender_name=message.name, text=message.text,
            sent_at=message.sent_at,
        )]

    async def deliver(self, reply: OutboundReply) -> str:
        body = msgspec.json.encode({"chat": reply.thread_id, "to": reply.recipient_handle,
                                    "text": reply.text})
        answer = await post(self.context.http, self.settings.send_url, data=body,
                            headers={"Content-Type": "application/json"},
                            timeout=self.settings.timeout_seconds)
        sent = msgspec.json.decode(answer.body)
        return str(sent["id"]) if isinstance(sent, dict) and "id" in sent else reply.reply_id
